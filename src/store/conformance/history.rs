//! The checks of the history and its views: they equal the fold, a
//! refused registration leaves nothing, runs resolve, tails, and the
//! durations of past runs.

use serde_json::json;

use super::{node_state, owner, register, Fixture};
use crate::error::Error;
use crate::history::{Event, EventKind};
use crate::model::{AttemptOutcome, Mutation, NodeState, RunConfig, RunStatus, Task};
use crate::store::{LogLine, Registration, Store};

pub(super) fn history_and_views_agree(store: &dyn Store) {
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

pub(super) fn a_refused_registration_leaves_nothing(store: &dyn Store) {
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

pub(super) fn runs_resolve_by_prefix_and_latest(store: &dyn Store) {
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

/// A run's tail: the events after a number, with its status and last
/// number, as the full history has them.
pub(super) fn a_runs_tail_is_its_newest_events(store: &dyn Store) {
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
pub(super) fn task_durations_are_successful_attempts(store: &dyn Store) {
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
