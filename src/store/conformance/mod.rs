//! The behaviour every [`Store`] backend must show, as one suite: the
//! history and its views (which must equal the fold of the history),
//! leases (fencing, takeovers, proof of death, expiry, races), signals
//! and logs. A backend's tests call [`run`] with a factory of empty
//! stores; each check panics with what went wrong.
//!
//! ```
//! # fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let mut n = 0;
//! orch::store::conformance::run(&mut || {
//!     n += 1;
//!     Box::new(orch::store::SqliteStore::open(dir.path().join(format!("{n}.db"))).unwrap())
//! });
//! # }
//! ```

use std::sync::Arc;

use super::{Lease, LogLine, Owner, Registration, Store};
use crate::error::Error;
use crate::history::{Event, EventKind, RunState};
use crate::model::{Mutation, NodeState, Origin, RunConfig, Task};

mod access;
mod history;
mod owners;
mod queue;
mod schedules;
mod signals;

use access::{runs_page_by_filter_and_cursor, users_and_tokens_are_kept};
use history::{
    a_refused_registration_leaves_nothing, a_runs_tail_is_its_newest_events,
    history_and_views_agree, runs_resolve_by_prefix_and_latest,
    task_durations_are_successful_attempts,
};
use owners::{
    a_stale_lease_writes_nothing, a_takeover_race_has_one_winner,
    renewal_reports_lost_runs_and_release_frees, takeovers_follow_the_owners_liveness,
};
pub(crate) use queue::runners_keep_their_queues_and_runs;
use queue::{
    a_claim_race_hands_each_attempt_out_once, a_heartbeat_renews_only_the_claims_it_lists,
    a_queued_attempt_is_handed_to_a_runner_that_would_claim_it,
    a_runners_own_attempts_are_found_behind_a_deep_queue,
    expired_claims_are_lost_and_their_reports_refused, queues_are_listed_and_cleared,
    runners_claim_by_capability_and_are_fenced,
};
use schedules::{events_and_timers_are_kept, fire_times_are_claimed_once};
use signals::signals_are_stored_listed_and_taken;

/// Runs every check, each on a fresh store from `new`.
pub fn run(new: &mut dyn FnMut() -> Box<dyn Store>) {
    history_and_views_agree(new().as_ref());
    a_refused_registration_leaves_nothing(new().as_ref());
    a_stale_lease_writes_nothing(new().as_ref());
    takeovers_follow_the_owners_liveness(new().as_ref());
    a_takeover_race_has_one_winner(Arc::from(new()));
    renewal_reports_lost_runs_and_release_frees(new().as_ref());
    signals_are_stored_listed_and_taken(new().as_ref());
    runs_resolve_by_prefix_and_latest(new().as_ref());
    fire_times_are_claimed_once(Arc::from(new()));
    events_and_timers_are_kept(new().as_ref());
    runs_page_by_filter_and_cursor(new().as_ref());
    a_runs_tail_is_its_newest_events(new().as_ref());
    users_and_tokens_are_kept(new().as_ref());
    task_durations_are_successful_attempts(new().as_ref());
    runners_claim_by_capability_and_are_fenced(new().as_ref());
    expired_claims_are_lost_and_their_reports_refused(new().as_ref());
    queues_are_listed_and_cleared(new().as_ref());
    a_heartbeat_renews_only_the_claims_it_lists(new().as_ref());
    a_claim_race_hands_each_attempt_out_once(Arc::from(new()));
    runners_keep_their_queues_and_runs(new().as_ref());
    a_runners_own_attempts_are_found_behind_a_deep_queue(new().as_ref());
    a_queued_attempt_is_handed_to_a_runner_that_would_claim_it(new().as_ref());
}

/// A run with an input node `ask` and a command node `work` after it.
pub(crate) struct Fixture {
    pub(crate) lease: Lease,
    pub(crate) state: RunState,
}

pub(crate) fn owner(id: &str) -> Owner {
    let mut o = Owner::this_process();
    o.id = id.to_string();
    o
}

pub(crate) fn register(store: &dyn Store, run: &str, by: &Owner) -> Fixture {
    let started = Event {
        seq: 1,
        at: crate::time::now(),
        kind: EventKind::RunStarted {
            workflow: "conformance".into(),
            orchestrator_pid: by.pid,
            config: RunConfig::new("/tmp", "python3"),
        },
    };
    let mutations = vec![
        Mutation::add_node("ask", Task::input().named("ask")),
        Mutation::add_node("work", Task::command(["true"]).named("work")),
        Mutation::add_edge("ask", "work"),
    ];
    let at = crate::time::now();
    let lease = store
        .register(
            by,
            Registration {
                run,
                started: &started,
                batch: (2, &at),
                mutations: &mutations,
            },
            &mut || true,
        )
        .expect("register")
        .expect("a registration that `go` accepts is kept");
    assert_eq!((lease.run.as_str(), lease.epoch), (run, 1));
    let mut state = RunState::new(run);
    state.apply(&started);
    state.apply(&Event {
        seq: 2,
        at,
        kind: EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations,
        },
    });
    Fixture { lease, state }
}

impl Fixture {
    /// Applies `kinds` to the state and commits them under `lease`.
    pub(crate) fn commit(
        &mut self,
        store: &dyn Store,
        lease: &Lease,
        kinds: Vec<EventKind>,
    ) -> Result<(), Error> {
        self.commit_with(store, lease, kinds, &[])
    }

    /// [`Fixture::commit`] with log lines.
    pub(super) fn commit_with(
        &mut self,
        store: &dyn Store,
        lease: &Lease,
        kinds: Vec<EventKind>,
        logs: &[LogLine],
    ) -> Result<(), Error> {
        let mut events = Vec::new();
        let mut state = self.state.clone();
        for kind in kinds {
            let e = Event {
                seq: state.last_seq + 1,
                at: crate::time::now(),
                kind,
            };
            state.apply(&e);
            events.push(e);
        }
        store.commit(lease, &state, &events, logs, &[])?;
        self.state = state;
        Ok(())
    }
}

pub(crate) fn node_state(node: &str, state: NodeState) -> EventKind {
    EventKind::NodeState {
        node: node.into(),
        state,
    }
}
