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
use std::time::Duration;

use serde_json::json;

use super::{Lease, LogLine, Owner, Registration, Signal, Store};
use crate::error::Error;
use crate::history::{Event, EventKind, RunState};
use crate::model::{AttemptOutcome, Mutation, NodeState, Origin, RunConfig, RunStatus, Task};

/// A pid no process can have (above the kernel's largest `pid_max`).
const NO_PID: u32 = 1 << 30;

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

fn offer(cpu: f64, labels: &[&str]) -> crate::exec::resources::Offer {
    crate::exec::resources::Offer {
        cpu,
        memory: Some(8 << 30),
        gpu: 0,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

fn queued(run: &str, node: &str, attempt: u32, labels: &[&str]) -> super::queue::QueuedAttempt {
    let need = crate::model::Resources {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    };
    super::queue::QueuedAttempt::new(
        crate::exec::AttemptId::new(run, node, attempt),
        need,
        format!("{{\"node\": \"{node}\"}}"),
    )
}

fn runners_claim_by_capability_and_are_fenced(store: &dyn Store) {
    use super::queue::RunnerSpec;
    use crate::exec::AttemptId;
    let plain = store
        .register_runner(
            &RunnerSpec::new("r-plain", "plain", offer(2.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(
        plain.alive && !plain.draining && plain.running == 0,
        "{plain:?}"
    );
    store
        .register_runner(
            &RunnerSpec::new("r-gpu", "gpu", offer(2.0, &["gpu"]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(matches!(
        store.claim("nobody", 1, 1000),
        Err(Error::UnknownRunner(_))
    ));
    assert!(matches!(
        store.heartbeat("nobody", &[], 1000),
        Err(Error::UnknownRunner(_))
    ));

    store.enqueue(&queued("run1", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run1", "g", 1, &["gpu"])).unwrap();
    store.enqueue(&queued("run1", "b", 1, &[])).unwrap();
    store.enqueue(&queued("run1", "c", 1, &[])).unwrap();

    // The plain runner cannot serve `gpu`; it takes its two slots' worth,
    // oldest first.
    let got = store.claim("r-plain", 10, 60_000).unwrap();
    let nodes: Vec<&str> = got.iter().map(|a| a.id.node.as_str()).collect();
    assert_eq!(nodes, ["a", "b"], "{got:?}");
    assert_eq!(got[0].payload, "{\"node\": \"a\"}");
    assert!(
        store.claim("r-plain", 10, 60_000).unwrap().is_empty(),
        "no free slot"
    );
    let got = store.claim("r-gpu", 10, 60_000).unwrap();
    let nodes: Vec<&str> = got.iter().map(|a| a.id.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["g"],
        "the labelled runner takes the labelled queue first (it is older)"
    );

    // Fences: the holder passes, anyone else and any other attempt fail.
    let a1 = AttemptId::new("run1", "a", 1);
    store.claim_holds(&a1, "r-plain").unwrap();
    let e = store.claim_holds(&a1, "r-gpu").unwrap_err();
    assert!(
        matches!(e, Error::AttemptFenced { .. }) && e.to_string().contains("r-plain"),
        "{e}"
    );
    let e = store
        .claim_holds(&AttemptId::new("run1", "a", 2), "r-plain")
        .unwrap_err();
    assert!(matches!(e, Error::AttemptFenced { .. }), "{e}");
    let beat = store
        .heartbeat(
            "r-plain",
            &[a1.clone(), AttemptId::new("run1", "zz", 1)],
            60_000,
        )
        .unwrap();
    assert_eq!(beat.lost, vec![AttemptId::new("run1", "zz", 1)]);
    assert!(!beat.draining);

    // A finished claim frees its slot; a second report is refused.
    store.finish_claim(&a1, "r-plain").unwrap();
    assert!(matches!(
        store.finish_claim(&a1, "r-plain"),
        Err(Error::AttemptFenced { .. })
    ));
    let got = store.claim("r-plain", 10, 60_000).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id.node, "c");

    // A re-queued node (next attempt) supersedes its claimed attempt.
    store.enqueue(&queued("run1", "b", 2, &[])).unwrap();
    let e = store
        .finish_claim(&AttemptId::new("run1", "b", 1), "r-plain")
        .unwrap_err();
    assert!(e.to_string().contains("attempt 2"), "{e}");

    // Draining: nothing new, and the heartbeat says so.
    assert!(store.drain_runner("r-plain").unwrap());
    assert!(!store.drain_runner("nobody").unwrap());
    assert!(store.heartbeat("r-plain", &[], 60_000).unwrap().draining);
    assert!(store.claim("r-plain", 10, 60_000).unwrap().is_empty());

    let (runners, _) = store.runners().unwrap();
    let names: Vec<&str> = runners.iter().map(|r| r.spec.name.as_str()).collect();
    assert_eq!(names, ["gpu", "plain"]);
    assert_eq!(runners[0].running, 1);
    assert_eq!(runners[1].spec.capabilities, offer(2.0, &[]));
    assert!(runners[1].draining);
    // Registering again under the same id clears the drain.
    let again = store
        .register_runner(
            &RunnerSpec::new("r-plain", "plain", offer(2.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(!again.draining);
    assert!(store.dequeue(&AttemptId::new("run1", "b", 2)).unwrap());
    assert!(!store.dequeue(&AttemptId::new("run1", "b", 2)).unwrap());
}

fn expired_claims_are_lost_and_their_reports_refused(store: &dyn Store) {
    use super::queue::RunnerSpec;
    use crate::exec::AttemptId;
    store
        .register_runner(
            &RunnerSpec::new("r1", "one", offer(1.0, &[]), 4, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run2", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run2", "b", 1, &[])).unwrap();
    // A claim under a lease that is over at once (the runner died).
    let got = store.claim("r1", 1, -1).unwrap();
    assert_eq!(got.len(), 1);
    let a1 = AttemptId::new("run2", "a", 1);
    let b1 = AttemptId::new("run2", "b", 1);
    let lost = store.lost_claims(&[a1.clone(), b1.clone()]).unwrap();
    assert_eq!(lost, vec![a1.clone()], "b still waits; a's claim expired");
    let e = store.finish_claim(&a1, "r1").unwrap_err();
    assert!(matches!(e, Error::AttemptFenced { .. }), "{e}");
    // Its next attempt is queued and claimed afresh.
    store.enqueue(&queued("run2", "a", 2, &[])).unwrap();
    let got = store.claim("r1", 4, 60_000).unwrap();
    let ids: Vec<String> = got.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, ["run2/b#1", "run2/a#2"]);
    assert!(store
        .lost_claims(&[AttemptId::new("run2", "a", 2)])
        .unwrap()
        .is_empty());
    store
        .finish_claim(&AttemptId::new("run2", "a", 2), "r1")
        .unwrap();
    assert!(matches!(
        store.finish_claim(&a1, "r1"),
        Err(Error::AttemptFenced { .. })
    ));
    // A runner whose own lease is over shows as not alive.
    store
        .register_runner(
            &RunnerSpec::new("r0", "zero", offer(1.0, &["zero"]), 1, "0.1.0"),
            -1,
        )
        .unwrap();
    let (runners, _) = store.runners().unwrap();
    let zero = runners.iter().find(|r| r.spec.id == "r0").unwrap();
    assert!(!zero.alive, "{zero:?}");
    // It claims nothing until a heartbeat renews its lease (an attempt
    // only it can serve: r1 serves run2 and would keep the others).
    store.enqueue(&queued("run2", "c", 1, &["zero"])).unwrap();
    assert!(store.claim("r0", 1, 60_000).unwrap().is_empty());
    store.heartbeat("r0", &[], 60_000).unwrap();
    assert_eq!(store.claim("r0", 1, 60_000).unwrap().len(), 1);
}

fn a_heartbeat_renews_only_the_claims_it_lists(store: &dyn Store) {
    use super::queue::RunnerSpec;
    use crate::exec::AttemptId;
    store
        .register_runner(
            &RunnerSpec::new("r9", "nine", offer(1.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run9", "kept", 1, &[])).unwrap();
    store.enqueue(&queued("run9", "dropped", 1, &[])).unwrap();
    assert_eq!(store.claim("r9", 2, 60_000).unwrap().len(), 2);
    let kept = AttemptId::new("run9", "kept", 1);
    let dropped = AttemptId::new("run9", "dropped", 1);
    // A beat that sets a lease already over (the clock cannot be moved
    // here): only the claim it lists gets it.
    let beat = store
        .heartbeat("r9", std::slice::from_ref(&kept), -1)
        .unwrap();
    assert!(beat.lost.is_empty(), "{beat:?}");
    let lost = store.lost_claims(&[kept.clone(), dropped.clone()]).unwrap();
    assert_eq!(
        lost,
        vec![kept],
        "a heartbeat renews only the claims it lists"
    );
    store.claim_holds(&dropped, "r9").unwrap();
}

fn queues_are_listed_and_cleared(store: &dyn Store) {
    use super::queue::{statuses, RunnerSpec};
    store
        .register_runner(
            &RunnerSpec::new("r1", "one", offer(1.0, &[]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run3", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run3", "b", 1, &[])).unwrap();
    store
        .enqueue(&queued("run3", "s", 1, &["exec=slurm"]))
        .unwrap();
    assert_eq!(store.claim("r1", 1, 60_000).unwrap().len(), 1);
    // The claim is listed with its runner; waiting attempts are not.
    let claims = store.claims(10).unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].runner, "r1");
    assert_eq!(claims[0].attempt.run, "run3");
    assert!(claims[0].claimed_ms > 0, "{claims:?}");
    assert!(store.claims(0).unwrap().is_empty());
    let (rows, now) = store.queue_rows().unwrap();
    let (runners, _) = store.runners().unwrap();
    let st = statuses(rows, &runners, now);
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!(st[0].key, "default");
    assert_eq!((st[0].depth, st[0].running), (1, 1));
    assert_eq!(st[0].serving, ["one"]);
    assert!(!st[0].unservable);
    assert!(st[0].oldest_wait_ms.is_some_and(|w| w >= 0));
    assert_eq!(st[1].key, "labels=exec=slurm");
    assert_eq!(st[1].requires.labels, ["exec=slurm"]);
    assert!(st[1].unservable && st[1].serving.is_empty(), "{:?}", st[1]);
    let cleared = store.clear_queue("labels=exec=slurm").unwrap();
    assert_eq!(cleared, vec![crate::exec::AttemptId::new("run3", "s", 1)]);
    // Clearing leaves claimed attempts alone.
    let cleared = store.clear_queue("default").unwrap();
    assert_eq!(cleared.len(), 1);
    let (rows, _) = store.queue_rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].depth, rows[0].running), (0, 1));
}

/// The same requirements go to the same runner while it has slots, and a
/// run's attempts prefer the runner already serving it.
pub(crate) fn runners_keep_their_queues_and_runs(store: &dyn Store) {
    use super::queue::RunnerSpec;
    for (id, slots) in [("r-a", 2), ("r-b", 3)] {
        store
            .register_runner(
                &RunnerSpec::new(id, id, offer(2.0, &["ssd"]), slots, "0.1.0"),
                60_000,
            )
            .unwrap();
    }
    let nodes = |got: Vec<super::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    store.enqueue(&queued("ra", "a1", 1, &[])).unwrap();
    assert_eq!(nodes(store.claim("r-a", 1, 60_000).unwrap()), ["ra/a1"]);
    // r-a serves `default` now, with a free slot: the oldest `default`
    // attempt waits for it; r-b takes the labelled one and the rest.
    store.enqueue(&queued("rb", "b1", 1, &[])).unwrap();
    store.enqueue(&queued("rc", "c1", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("rd", "d1", 1, &[])).unwrap();
    assert_eq!(
        nodes(store.claim("r-b", 3, 60_000).unwrap()),
        ["rc/c1", "rd/d1"]
    );
    assert_eq!(nodes(store.claim("r-a", 3, 60_000).unwrap()), ["rb/b1"]);
    // r-a is full: `default` no longer waits for it.
    store.enqueue(&queued("re", "e1", 1, &[])).unwrap();
    assert_eq!(nodes(store.claim("r-b", 3, 60_000).unwrap()), ["re/e1"]);
    // A slot of each frees. Run `rc` is r-b's: its next attempt waits for
    // r-b although r-a claims first, and r-a takes its own run's.
    store
        .finish_claim(&crate::exec::AttemptId::new("ra", "a1", 1), "r-a")
        .unwrap();
    store
        .finish_claim(&crate::exec::AttemptId::new("rd", "d1", 1), "r-b")
        .unwrap();
    store.enqueue(&queued("rc", "c2", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("ra", "a2", 1, &[])).unwrap();
    assert_eq!(
        nodes(store.claim("r-a", 3, 60_000).unwrap()),
        ["ra/a2"],
        "r-a takes its own run's attempt and leaves r-b's run to r-b"
    );
    assert_eq!(nodes(store.claim("r-b", 3, 60_000).unwrap()), ["rc/c2"]);
}

/// A queued attempt handed at once to a runner that a claim of one
/// would give it to (`enqueue_for`), and such a claim put back
/// (`release_claim`).
fn a_queued_attempt_is_handed_to_a_runner_that_would_claim_it(store: &dyn Store) {
    use super::queue::RunnerSpec;
    use crate::exec::AttemptId;
    store
        .register_runner(
            &RunnerSpec::new("r-a", "a", offer(2.0, &["ssd"]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    store
        .register_runner(
            &RunnerSpec::new("r-b", "b", offer(2.0, &[]), 3, "0.1.0"),
            60_000,
        )
        .unwrap();
    let nodes = |got: Vec<super::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    let id = |run: &str, node: &str| AttemptId::new(run, node, 1);
    // No such runner: queued, waiting.
    assert!(!store
        .enqueue_for(&queued("h", "a", 1, &[]), "nobody", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-b", 1, 60_000).unwrap()), ["h/a"]);
    // Its capabilities do not satisfy it.
    assert!(!store
        .enqueue_for(&queued("h", "s", 1, &["ssd"]), "r-b", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 1, 60_000).unwrap()), ["h/s"]);
    // It fits, a slot is free, nothing else waits: claimed for it, as a
    // claim would (fenced, counted, no longer waiting).
    assert!(store
        .enqueue_for(&queued("h", "b", 1, &[]), "r-b", 60_000)
        .unwrap());
    store.claim_holds(&id("h", "b"), "r-b").unwrap();
    assert!(store.claim_holds(&id("h", "b"), "r-a").is_err());
    let (runners, _) = store.runners().unwrap();
    assert_eq!(
        runners.iter().map(|r| r.running).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(store.claim("r-b", 4, 60_000).unwrap().is_empty());
    let (rows, _) = store.queue_rows().unwrap();
    assert_eq!((rows[0].depth, rows[0].running), (0, 2), "{rows:?}");
    // No free slot.
    assert!(!store
        .enqueue_for(&queued("h", "w", 1, &[]), "r-a", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-b", 4, 60_000).unwrap()), ["h/w"]);
    // Another attempt waits (a claim might take that one first).
    store.enqueue(&queued("h2", "x", 1, &[])).unwrap();
    store.finish_claim(&id("h", "s"), "r-a").unwrap();
    assert!(!store
        .enqueue_for(&queued("h2", "y", 1, &[]), "r-a", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/x"]);
    assert_eq!(
        nodes(store.claim("r-b", 4, 60_000).unwrap()),
        Vec::<String>::new()
    );
    for node in ["a", "b", "w"] {
        store.finish_claim(&id("h", node), "r-b").unwrap();
    }
    store.finish_claim(&id("h2", "x"), "r-a").unwrap();
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/y"]);
    store.finish_claim(&id("h2", "y"), "r-a").unwrap();
    // A rival with a free slot serves the attempt's run, `r-b` only its
    // queue: the attempt waits for the rival, as a claim would leave it.
    assert!(!store
        .enqueue_for(&queued("h2", "z", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/z"]);
    // The rival full, it goes to `r-b`; put back, it waits again, and only
    // its holder's claim of exactly that attempt is put back.
    assert!(store
        .enqueue_for(&queued("h2", "r", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-a").unwrap());
    assert!(!store
        .release_claim(&AttemptId::new("h2", "r", 2), "r-b")
        .unwrap());
    assert!(store.release_claim(&id("h2", "r"), "r-b").unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-b").unwrap());
    let e = store.claim_holds(&id("h2", "r"), "r-b").unwrap_err();
    assert!(e.to_string().contains("waits in its queue"), "{e}");
    assert_eq!(nodes(store.claim("r-b", 4, 60_000).unwrap()), ["h2/r"]);
    // A withdrawn attempt is not put back.
    assert!(store.dequeue(&id("h2", "r")).unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-b").unwrap());
    assert!(store.queue_rows().unwrap().0.iter().all(|q| q.depth == 0));
    // Draining, or its lease run out: no hand-off.
    assert!(store.drain_runner("r-b").unwrap());
    assert!(!store
        .enqueue_for(&queued("h3", "d", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert!(store.dequeue(&id("h3", "d")).unwrap());
    store
        .register_runner(&RunnerSpec::new("r-c", "c", offer(2.0, &[]), 1, "0.1.0"), 1)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!store
        .enqueue_for(&queued("h3", "e", 1, &[]), "r-c", 60_000)
        .unwrap());
    assert!(store.claim_holds(&id("h3", "e"), "r-c").is_err());
}

/// A claim ranks every waiting attempt it may take, not only the oldest
/// few: the runner's own run, then its queue, come first however many
/// older attempts wait before them.
fn a_runners_own_attempts_are_found_behind_a_deep_queue(store: &dyn Store) {
    use super::queue::RunnerSpec;
    use crate::exec::AttemptId;
    store
        .register_runner(
            &RunnerSpec::new("deep", "deep", offer(2.0, &["ssd"]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    let nodes = |got: Vec<super::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    // It serves run `mine` and the `ssd` queue now.
    store.enqueue(&queued("mine", "m1", 1, &["ssd"])).unwrap();
    assert_eq!(nodes(store.claim("deep", 1, 60_000).unwrap()), ["mine/m1"]);
    for i in 0..40 {
        store
            .enqueue(&queued("old", &format!("o{i:02}"), 1, &[]))
            .unwrap();
    }
    store.enqueue(&queued("new", "s1", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("mine", "m2", 1, &["ssd"])).unwrap();
    assert_eq!(
        nodes(store.claim("deep", 1, 60_000).unwrap()),
        ["mine/m2"],
        "its own run's attempt first, behind 41 older ones (one of its queue)"
    );
    store
        .finish_claim(&AttemptId::new("mine", "m1", 1), "deep")
        .unwrap();
    assert_eq!(
        nodes(store.claim("deep", 1, 60_000).unwrap()),
        ["new/s1"],
        "then its queue's, behind 40 older ones"
    );
    store
        .finish_claim(&AttemptId::new("mine", "m2", 1), "deep")
        .unwrap();
    assert_eq!(nodes(store.claim("deep", 1, 60_000).unwrap()), ["old/o00"]);
}

fn a_claim_race_hands_each_attempt_out_once(store: Arc<dyn Store>) {
    use super::queue::RunnerSpec;
    for i in 0..40 {
        store
            .enqueue(&queued("run4", &format!("n{i:02}"), 1, &[]))
            .unwrap();
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = format!("racer{t}");
                store
                    .register_runner(
                        &RunnerSpec::new(&id, &id, offer(1.0, &[]), 1000, "0.1.0"),
                        60_000,
                    )
                    .unwrap();
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(&id, 3, 60_000).unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|a| a.id));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an attempt was claimed twice");
    assert_eq!(all.len(), 40);
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
    fn commit_with(
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

fn history_and_views_agree(store: &dyn Store) {
    let me = owner("engine-a");
    let mut f = register(store, "run-views", &me);
    let lease = f.lease.clone();
    f.commit(
        store,
        &lease,
        vec![
            node_state("ask", NodeState::Waiting),
            EventKind::AttemptStarted {
                node: "ask".into(),
                attempt: 1,
                pid: None,
            },
            EventKind::Output {
                node: "ask".into(),
                value: json!({"n": 3}),
            },
            EventKind::AttemptFinished {
                files: Vec::new(),
                runner: None,
                node: "ask".into(),
                attempt: 1,
                outcome: AttemptOutcome::Succeeded,
                exit_code: None,
                error: None,
            },
            node_state("ask", NodeState::Succeeded),
            node_state("work", NodeState::Ready),
        ],
    )
    .expect("commit");
    let logs: Vec<LogLine> = (1..=3)
        .map(|line| LogLine {
            node: "work".into(),
            attempt: 1,
            line,
            stream: "stdout".into(),
            text: format!("hello {line}"),
        })
        .collect();
    let kinds = vec![
        node_state("work", NodeState::Running),
        EventKind::AttemptStarted {
            node: "work".into(),
            attempt: 1,
            pid: Some(42),
        },
        EventKind::AttemptFinished {
            files: vec![crate::history::ProducedFile {
                path: "out/report.csv".into(),
                bytes: 12,
            }],
            runner: Some("gpu-box-1".into()),
            node: "work".into(),
            attempt: 1,
            outcome: AttemptOutcome::Succeeded,
            exit_code: Some(0),
            error: None,
        },
        node_state("work", NodeState::Succeeded),
        EventKind::RunStatus {
            status: RunStatus::Succeeded,
            reason: None,
        },
    ];
    f.commit_with(store, &lease, kinds, &logs)
        .expect("commit with logs");
    let state = &f.state;
    let export = store.export("run-views").expect("export");
    let replayed = store.replay("run-views", None).expect("replay").export();
    assert_eq!(
        export, replayed,
        "the views must equal the fold of the history"
    );
    assert_eq!(export, state.export(), "and the engine's own fold");
    assert_eq!(export.status, RunStatus::Succeeded);
    assert!(export.finished_at.is_some());
    // Where each attempt ran: a runner's name, or `local`.
    let ran = |node: &str| {
        let n = export.nodes.iter().find(|n| n.id == node).expect("node");
        n.attempts[0].runner.clone()
    };
    assert_eq!(ran("work").as_deref(), Some("gpu-box-1"));
    assert_eq!(ran("ask").as_deref(), Some(crate::history::LOCAL));
    let at_4 = store.replay("run-views", Some(4)).expect("replay up to 4");
    assert_eq!(at_4.last_seq, 4);
    assert_eq!(store.logs("run-views", "work", None).expect("logs"), logs);
    assert!(store
        .logs("run-views", "work", Some(2))
        .expect("logs")
        .is_empty());
    let after = |at, limit| {
        store
            .logs_after("run-views", "work", at, limit)
            .expect("logs")
    };
    assert_eq!(
        after((0, 0), 10),
        logs,
        "a follower starts at the first line"
    );
    assert_eq!(
        after((1, 1), 1),
        logs[1..2],
        "then reads on, a page at a time"
    );
    assert!(after((1, 3), 10).is_empty(), "nothing after the last line");
    assert!(matches!(
        store.logs("run-views", "nope", None),
        Err(Error::UnknownNode { .. })
    ));
    assert!(matches!(store.export("nope"), Err(Error::UnknownRun(_))));
    store.integrity_check().expect("integrity");
}

fn a_refused_registration_leaves_nothing(store: &dyn Store) {
    let started = Event {
        seq: 1,
        at: crate::time::now(),
        kind: EventKind::RunStarted {
            workflow: "w".into(),
            orchestrator_pid: 1,
            config: RunConfig::new("/tmp", "python3"),
        },
    };
    let kept = store
        .register(
            &owner("engine-a"),
            Registration {
                run: "refused",
                started: &started,
                batch: (2, "t"),
                mutations: &[Mutation::add_node("a", Task::input())],
            },
            &mut || false,
        )
        .expect("register");
    assert!(kept.is_none());
    assert!(store.runs().expect("runs").is_empty());
    assert!(store.events("refused", None).expect("events").is_empty());
}

fn a_stale_lease_writes_nothing(store: &dyn Store) {
    let mut f = register(store, "run-fence", &owner("engine-a"));
    let stale = Lease::new("run-fence", "engine-a", 7);
    let before = store.events("run-fence", None).expect("events");
    let err = f
        .commit(store, &stale, vec![node_state("ask", NodeState::Waiting)])
        .expect_err("a wrong epoch is fenced");
    assert!(matches!(err, Error::Fenced { epoch: 7, .. }), "{err}");
    assert!(
        err.to_string().contains("engine-a"),
        "names the holder: {err}"
    );
    let other = Lease::new("run-fence", "engine-b", 1);
    assert!(matches!(
        f.commit(store, &other, vec![node_state("ask", NodeState::Waiting)]),
        Err(Error::Fenced { .. })
    ));
    assert_eq!(store.events("run-fence", None).expect("events"), before);
}

fn takeovers_follow_the_owners_liveness(store: &dyn Store) {
    // A live owner on this host (this very process) holds its run.
    let mut live = register(store, "run-live", &owner("engine-a"));
    let b = owner("engine-b");
    let err = store
        .take_over("run-live", &b, false)
        .expect_err("a live owner holds");
    assert!(
        matches!(&err, Error::Owned { owner, .. } if owner.contains("engine-a")),
        "{err}"
    );
    // Forced: epoch 2, and the old owner is fenced off.
    let lease = store.take_over("run-live", &b, true).expect("forced");
    assert_eq!(lease.epoch, 2);
    let old = live.lease.clone();
    assert!(matches!(
        live.commit(store, &old, vec![node_state("ask", NodeState::Waiting)]),
        Err(Error::Fenced { .. })
    ));
    live.commit(store, &lease, vec![node_state("ask", NodeState::Waiting)])
        .expect("the new owner writes");
    assert_eq!(store.owner("run-live").expect("owner").epoch, 2);

    // A dead owner: no such process on this host.
    let mut gone = owner("engine-gone");
    gone.pid = NO_PID;
    register(store, "run-dead", &gone);
    assert_eq!(
        store.take_over("run-dead", &b, false).expect("dead").epoch,
        2
    );

    // A recycled pid: the pid runs, but started at another time.
    let mut recycled = owner("engine-recycled");
    recycled.started = recycled.started.map(|s| s + 1).or(Some(1));
    register(store, "run-recycled", &recycled);
    assert_eq!(
        store
            .take_over("run-recycled", &b, false)
            .expect("a recycled pid is no owner")
            .epoch,
        2
    );

    // Another host: its pid says nothing; only the lease's expiry does.
    let mut far = owner("engine-far");
    far.host = "elsewhere/boot".into();
    far.pid = NO_PID;
    register(store, "run-far", &far);
    assert!(matches!(
        store.take_over("run-far", &b, false),
        Err(Error::Owned { .. })
    ));
    let far_now = far.with_ttl(Duration::ZERO);
    register(store, "run-far-expired", &far_now);
    assert_eq!(
        store
            .take_over("run-far-expired", &b, false)
            .expect("an expired lease")
            .epoch,
        2
    );
    assert!(matches!(
        store.take_over("nope", &b, false),
        Err(Error::UnknownRun(_))
    ));
}

fn a_takeover_race_has_one_winner(store: Arc<dyn Store>) {
    let mut gone = owner("engine-gone");
    gone.pid = NO_PID;
    register(store.as_ref(), "run-race", &gone);
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.take_over("run-race", &owner(&format!("racer-{i}")), false)
            })
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|r| r.join().expect("racer"))
        .collect();
    let winners: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one takeover wins: {results:?}");
    let winner = &winners[0].owner;
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::Owned { owner, .. } if owner.contains(winner.as_str())),
                "a loser is told who won: {e}"
            );
        }
    }
    assert_eq!(store.owner("run-race").expect("owner").epoch, 2);
}

fn renewal_reports_lost_runs_and_release_frees(store: &dyn Store) {
    let a = owner("engine-a");
    let one = register(store, "run-1", &a).lease;
    let two = register(store, "run-2", &a).lease;
    assert!(store
        .renew(&a, &[one.clone(), two.clone()])
        .expect("renew")
        .is_empty());
    store
        .take_over("run-2", &owner("engine-b"), true)
        .expect("forced");
    assert_eq!(
        store.renew(&a, &[one.clone(), two]).expect("renew"),
        vec!["run-2".to_string()]
    );
    store.release(&one).expect("release");
    assert!(store.owner("run-1").expect("owner").owner.is_none());
    let c = owner("engine-c");
    assert_eq!(store.take_over("run-1", &c, false).expect("free").epoch, 2);
}

fn signals_are_stored_listed_and_taken(store: &dyn Store) {
    let a = owner("engine-a");
    let mut f = register(store, "run-sig", &a);
    let pause = store.request("run-sig", &Signal::Pause).expect("pause");
    let input = store
        .request(
            "run-sig",
            &Signal::Input {
                node: "ask".into(),
                value: json!([1, 2]),
            },
        )
        .expect("input");
    let pending = store.pending().expect("pending");
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.id, p.run.as_str(), p.signal.clone()))
            .collect::<Vec<_>>(),
        vec![
            (pause, "run-sig", Signal::Pause),
            (
                input,
                "run-sig",
                Signal::Input {
                    node: "ask".into(),
                    value: json!([1, 2])
                }
            ),
        ]
    );
    let e = Event {
        seq: f.state.last_seq + 1,
        at: crate::time::now(),
        kind: EventKind::RunStatus {
            status: RunStatus::Paused,
            reason: None,
        },
    };
    f.state.apply(&e);
    store
        .commit(&f.lease, &f.state, &[e], &[], &[pause])
        .expect("commit taking the pause");
    assert_eq!(store.pending().expect("pending").len(), 1);
    assert!(matches!(
        store.request(
            "run-sig",
            &Signal::Input {
                node: "work".into(),
                value: json!(1)
            }
        ),
        Err(Error::NotInput { .. })
    ));
    assert!(matches!(
        store.request("nope", &Signal::Cancel),
        Err(Error::UnknownRun(_))
    ));
    let lease = f.lease.clone();
    f.commit(
        store,
        &lease,
        vec![EventKind::RunStatus {
            status: RunStatus::Cancelled,
            reason: None,
        }],
    )
    .expect("end");
    assert!(matches!(
        store.request("run-sig", &Signal::Cancel),
        Err(Error::RunEnded { .. })
    ));
    assert!(
        store.pending().expect("pending").is_empty(),
        "an ended run's signals are not pending"
    );
}

fn runs_resolve_by_prefix_and_latest(store: &dyn Store) {
    let a = owner("engine-a");
    register(store, "run-20260101-aaa", &a);
    register(store, "run-20260101-aab", &a);
    register(store, "run-20260102-bbb", &a);
    assert_eq!(
        store.resolve_run("latest").expect("latest"),
        "run-20260102-bbb"
    );
    assert_eq!(
        store.resolve_run("run-20260102").expect("prefix"),
        "run-20260102-bbb"
    );
    assert!(matches!(
        store.resolve_run("run-20260101-aa"),
        Err(Error::AmbiguousRun { .. })
    ));
    assert!(matches!(
        store.resolve_run("zzz"),
        Err(Error::UnknownRun(_))
    ));
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].id, "run-20260102-bbb");
    assert_eq!(runs[0].nodes, 2);
}

/// A fire time has one run: of many claims racing, one wins; a backfill
/// replaces it; listings join the runs' statuses.
fn fire_times_are_claimed_once(store: Arc<dyn Store>) {
    let wins: Vec<bool> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .claim_fire("nightly", 1_000, &format!("run-{i}"), "schedule")
                    .expect("claim")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("a claimer"))
        .collect();
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "one winner: {wins:?}"
    );
    assert!(store
        .claim_fire("nightly", 2_000, "run-b", "schedule")
        .expect("claim"));
    assert!(store
        .claim_fire("other", 1_000, "run-o", "schedule")
        .expect("another workflow"));
    assert_eq!(store.last_fire("nightly").expect("last"), Some(2_000));
    assert_eq!(store.last_fire("never").expect("last"), None);
    let fires = store.fires("nightly", 0, 1_500).expect("fires");
    assert_eq!(fires.len(), 1);
    assert_eq!(
        (fires[0].at_ms, fires[0].kind.as_str()),
        (1_000, "schedule")
    );
    assert_eq!(fires[0].status, None, "no run registered under that id");
    let now = crate::time::unix_millis() as i64;
    let orphans = store
        .orphaned_fires(now - 60_000, now + 60_000)
        .expect("orphans");
    assert_eq!(
        orphans.len(),
        3,
        "no run registered for any claim yet: {orphans:?}"
    );
    assert!(store
        .orphaned_fires(0, now - 60_000)
        .expect("orphans")
        .is_empty());
    store
        .refire("nightly", 1_000, "run-again", "backfill")
        .expect("refire");
    let fires = store.fires("nightly", 1_000, 1_000).expect("fires");
    assert_eq!(
        (fires[0].run.as_str(), fires[0].kind.as_str()),
        ("run-again", "backfill")
    );
    register(store.as_ref(), "run-b", &owner("e1"));
    let fires = store.fires("nightly", 2_000, 2_000).expect("fires");
    assert_eq!(
        fires[0].status,
        Some(RunStatus::Running),
        "the run's status joined"
    );
    assert_eq!(store.active_runs("conformance").expect("active"), 1);
    assert_eq!(store.active_runs("nightly").expect("active"), 0);
}

/// Events are kept in order and claimed once per workflow; timers start,
/// list and stop once.
fn events_and_timers_are_kept(store: &dyn Store) {
    let (first, delivered) = store
        .push_event("orders.new", &serde_json::json!({"id": 7}))
        .expect("push");
    assert!(delivered.is_empty(), "nothing listens yet");
    let (second, _) = store
        .push_event("other", &serde_json::json!(1))
        .expect("push");
    assert!(second > first);
    let all = store.events_after(0, 0, 10).expect("events");
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(all[0].payload, serde_json::json!({"id": 7}));
    assert_eq!(store.events_after(first, 0, 10).expect("events").len(), 1);
    let tomorrow = crate::time::unix_millis() as i64 + 86_400_000;
    assert!(
        store
            .events_after(0, tomorrow, 10)
            .expect("events")
            .is_empty(),
        "older than since"
    );
    assert!(store.claim_event_run(first, "w", "r1").expect("claim"));
    assert!(
        !store.claim_event_run(first, "w", "r2").expect("claim"),
        "once per workflow"
    );
    assert!(store.claim_event_run(first, "v", "r3").expect("claim"));
    let now = crate::time::unix_millis() as i64;
    let orphans = store
        .orphaned_event_runs(now - 60_000, now + 60_000)
        .expect("orphans");
    assert_eq!(
        orphans
            .iter()
            .map(|(e, w, r)| (e.id, w.as_str(), r.as_str()))
            .collect::<Vec<_>>(),
        [(first, "v", "r3"), (first, "w", "r1")],
        "claimed runs that never registered"
    );
    assert!(store
        .orphaned_event_runs(0, now - 60_000)
        .expect("orphans")
        .is_empty());
    let once = store
        .add_timer("w", Some(5_000), None, None)
        .expect("timer");
    let every = store
        .add_timer("w", None, Some("0 0 * * * *"), Some("Europe/Berlin"))
        .expect("timer");
    let timers = store.timers().expect("timers");
    assert_eq!(timers.len(), 2);
    assert_eq!((timers[0].id, timers[0].at_ms), (once, Some(5_000)));
    assert_eq!(timers[1].cron.as_deref(), Some("0 0 * * * *"));
    assert_eq!(timers[1].fire_key(), format!("timer:{every}"));
    assert!(store.stop_timer(every).expect("stop"));
    assert!(!store.stop_timer(every).expect("stop"), "stopped once");
    assert!(!store.stop_timer(999).expect("stop"), "no such timer");
    assert!(store.timers().expect("timers")[1].stopped_ms.is_some());
}

/// A run's tail: the events after a number, with its status and last
/// number, as the full history has them.
fn a_runs_tail_is_its_newest_events(store: &dyn Store) {
    let a = owner("engine-tail");
    register(store, "run-tail", &a);
    let all = store.events("run-tail", None).expect("events");
    let last = all.last().expect("an event").seq;
    let tail = store.run_tail("run-tail", 0, 1000).expect("tail");
    assert_eq!(tail.events, all);
    assert_eq!((tail.last, tail.status), (last, RunStatus::Running));
    let tail = store.run_tail("run-tail", 1, 1).expect("tail");
    assert_eq!(tail.events, all[1..2].to_vec(), "after 1, one");
    let tail = store.run_tail("run-tail", last, 10).expect("tail");
    assert!(tail.events.is_empty());
    assert_eq!(tail.last, last);
    assert!(store
        .run_tail("run-tail", 0, 0)
        .expect("tail")
        .events
        .is_empty());
    assert!(matches!(
        store.run_tail("no-such-run", 0, 10),
        Err(Error::UnknownRun(_))
    ));
}

/// Pages of runs follow the list's order, filters and cursor.
fn runs_page_by_filter_and_cursor(store: &dyn Store) {
    let a = owner("engine-a");
    for i in 0..5 {
        register(store, &format!("run-2026010{i}-x"), &a);
    }
    let all = store.runs().expect("runs");
    let first = store.runs_page(&super::RunFilter::newest(2)).expect("page");
    assert_eq!(first, all[..2].to_vec());
    let mut next = super::RunFilter::newest(2);
    next.before = Some(first[1].id.clone());
    let second = store.runs_page(&next).expect("page 2");
    assert_eq!(second, all[2..4].to_vec());
    let mut f = super::RunFilter::newest(10);
    f.status = Some(RunStatus::Succeeded);
    assert!(store.runs_page(&f).expect("by status").is_empty());
    f.status = Some(RunStatus::Running);
    assert_eq!(store.runs_page(&f).expect("by status").len(), 5);
    f.workflow = Some("nope".into());
    assert!(store.runs_page(&f).expect("by workflow").is_empty());
    // A range of creation times: at or after the first, before the second.
    let at: Vec<u64> = all
        .iter()
        .map(|r| crate::time::parse_millis(&r.created_at).expect("a stored time"))
        .collect();
    let (newest, oldest) = (at[0], at[at.len() - 1]);
    let range = |after: Option<u64>, before: Option<u64>| {
        let mut f = super::RunFilter::newest(10);
        f.created_after = after;
        f.created_before = before;
        let got = store.runs_page(&f).expect("by time");
        let want: Vec<_> = all
            .iter()
            .zip(&at)
            .filter(|(_, t)| after.is_none_or(|a| **t >= a) && before.is_none_or(|b| **t < b))
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(got, want, "after {after:?}, before {before:?}");
        got.len()
    };
    assert!(range(Some(newest), None) >= 1, "inclusive");
    assert_eq!(range(Some(oldest), Some(newest + 1)), 5);
    assert_eq!(range(Some(newest + 1), None), 0);
    assert_eq!(range(None, Some(oldest)), 0, "exclusive");
    range(None, Some(newest));
    assert_eq!(
        range(Some(0), Some(u64::MAX)),
        5,
        "clamped to the year 9999"
    );
    let mut f = super::RunFilter::newest(10);
    f.created_after = Some(oldest);
    f.workflow = Some(all[0].workflow.clone());
    f.status = Some(RunStatus::Running);
    assert_eq!(store.runs_page(&f).expect("all three").len(), 5);
    assert_eq!(
        store.run_counts().expect("counts"),
        vec![("running".to_string(), 5)]
    );
}

/// Users are unique by name; tokens are found by id, listed, revoked,
/// and revoked with their user.
fn users_and_tokens_are_kept(store: &dyn Store) {
    use super::{TokenRecord, UserRecord};
    use crate::access::{Permission, Role};
    let ada = UserRecord::new("ada", Role::Admin, "$argon2id$x", 1);
    assert!(store.add_user(&ada).expect("add"));
    assert!(!store
        .add_user(&UserRecord::new("ada", Role::Viewer, "h", 2))
        .expect("again"));
    assert_eq!(store.user("ada").expect("user"), Some(ada.clone()));
    assert!(store
        .add_user(&UserRecord::new("bob", Role::Viewer, "h", 3))
        .expect("bob"));
    assert_eq!(store.users().expect("users").len(), 2);
    assert!(store
        .update_user("bob", Some(Role::Operator), None)
        .expect("update"));
    assert_eq!(
        store.user("bob").expect("bob").map(|u| u.role),
        Some(Role::Operator)
    );
    assert!(!store
        .update_user("carol", Some(Role::Admin), None)
        .expect("nobody"));

    let mut t = TokenRecord::new("AAAAAAAAAAAA", "bob", "ci", "ab12", 10);
    t.scopes = vec![Permission::Read, Permission::Operate];
    t.expires_ms = Some(99);
    store.add_token(&t).expect("token");
    assert!(store.add_token(&t).is_err(), "a token id is unique");
    assert_eq!(store.token("AAAAAAAAAAAA").expect("read"), Some(t.clone()));
    let mut r = TokenRecord::new("BBBBBBBBBBBB", "ada", "runner", "cd34", 11);
    r.runner = true;
    store.add_token(&r).expect("runner token");
    assert_eq!(store.tokens(None).expect("all").len(), 2);
    assert_eq!(store.tokens(Some("ada")).expect("ada's"), vec![r]);
    assert!(store.revoke_token("BBBBBBBBBBBB").expect("revoke"));
    assert!(!store.revoke_token("BBBBBBBBBBBB").expect("twice"));
    assert!(store
        .token("BBBBBBBBBBBB")
        .expect("read")
        .unwrap()
        .revoked_ms
        .is_some());
    assert!(store.remove_user("bob").expect("remove"));
    assert!(store.user("bob").expect("gone").is_none());
    assert!(store
        .token("AAAAAAAAAAAA")
        .expect("read")
        .unwrap()
        .revoked_ms
        .is_some());
}

impl Fixture {
    /// Commits one event of `kind` stamped `at_ms` (milliseconds since the
    /// epoch) under the fixture's lease.
    fn commit_at(&mut self, store: &dyn Store, at_ms: i64, kind: EventKind) {
        let e = Event {
            seq: self.state.last_seq + 1,
            at: crate::time::format_millis(at_ms as u64),
            kind,
        };
        let mut state = self.state.clone();
        state.apply(&e);
        store
            .commit(&self.lease, &state, &[e], &[], &[])
            .expect("commit");
        self.state = state;
    }

    /// Attempt `attempt` of `node` from `from_ms` to `to_ms`, ending
    /// `outcome`.
    fn attempt(
        &mut self,
        store: &dyn Store,
        node: &str,
        attempt: u32,
        (from_ms, to_ms): (i64, i64),
        outcome: AttemptOutcome,
    ) {
        let started = EventKind::AttemptStarted {
            node: node.into(),
            attempt,
            pid: None,
        };
        self.commit_at(store, from_ms, started);
        let finished = EventKind::AttemptFinished {
            node: node.into(),
            attempt,
            outcome,
            exit_code: None,
            error: None,
            files: Vec::new(),
            runner: None,
        };
        self.commit_at(store, to_ms, finished);
    }
}

/// The samples of expected times: each successful attempt of a
/// workflow's tasks with its times, newest first per task, bounded per
/// task and by runs; succeeded runs with theirs.
fn task_durations_are_successful_attempts(store: &dyn Store) {
    let me = owner("engine-a");
    let t = crate::time::unix_millis() as i64 + 1_000;
    let mut a = register(store, "est-a", &me);
    a.attempt(store, "ask", 1, (t, t + 100), AttemptOutcome::Succeeded);
    a.attempt(store, "work", 1, (t + 100, t + 150), AttemptOutcome::Failed);
    a.attempt(
        store,
        "work",
        2,
        (t + 200, t + 500),
        AttemptOutcome::Succeeded,
    );
    let done = EventKind::RunStatus {
        status: RunStatus::Succeeded,
        reason: None,
    };
    a.commit_at(store, t + 600, done);
    let mut b = register(store, "est-b", &me);
    b.attempt(
        store,
        "work",
        1,
        (t + 1_000, t + 1_700),
        AttemptOutcome::Succeeded,
    );

    let got = |runs, per_task| -> Vec<(String, String, u32, i64)> {
        store
            .task_durations("conformance", runs, per_task)
            .expect("task durations")
            .into_iter()
            .map(|s| {
                assert_eq!(s.commit, None, "runs record no commit yet");
                (s.run.clone(), s.task.clone(), s.attempt, s.duration_ms())
            })
            .collect()
    };
    let row = |run: &str, task: &str, attempt, ms| (run.to_string(), task.to_string(), attempt, ms);
    assert_eq!(
        got(10, 10),
        [
            row("est-a", "ask", 1, 100),
            row("est-b", "work", 1, 700),
            row("est-a", "work", 2, 300),
        ],
        "successful attempts only, by task, newest first"
    );
    assert_eq!(
        got(10, 1),
        [row("est-a", "ask", 1, 100), row("est-b", "work", 1, 700)],
        "at most `per_task` of each task"
    );
    assert_eq!(
        got(1, 10),
        [row("est-b", "work", 1, 700)],
        "only the most recent runs"
    );
    let first = &store
        .task_durations("conformance", 10, 10)
        .expect("samples")[0];
    assert_eq!((first.node.as_str(), first.started_ms), ("ask", t));
    assert!(store
        .task_durations("another", 10, 10)
        .expect("samples")
        .is_empty());

    let runs = store
        .run_durations("conformance", 10)
        .expect("run durations");
    let created = store
        .export("est-a")
        .expect("export")
        .created_at
        .expect("created");
    let created = crate::time::parse_millis(&created).expect("a stored time") as i64;
    assert_eq!(
        runs,
        [crate::store::RunSample::new("est-a", created, t + 600)],
        "succeeded runs only"
    );
    assert!(store
        .run_durations("conformance", 0)
        .expect("runs")
        .is_empty());
}
