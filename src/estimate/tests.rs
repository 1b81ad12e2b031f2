use super::*;
use crate::history::{Event, EventKind};
use crate::model::{Mutation, Origin, RunConfig, RunStatus, Task};
use crate::promise::shape::Shape;
use crate::store::RunSample;

/// The moment the test runs start.
const T0: i64 = 1_800_000_000_000;

/// A run of workflow `w` registered at [`T0`] with `mutations`, running
/// at most `max_parallel` attempts at once.
fn run(mutations: Vec<Mutation>, max_parallel: usize) -> RunState {
    let mut config = RunConfig::new("/tmp", "python3");
    config.max_parallel = max_parallel;
    let mut s = RunState::new("now");
    for kind in [
        EventKind::RunStarted {
            workflow: "w".into(),
            orchestrator_pid: 1,
            config,
        },
        EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations,
        },
    ] {
        apply(&mut s, T0, kind);
    }
    s
}

fn apply(s: &mut RunState, at_ms: i64, kind: EventKind) {
    let e = Event {
        seq: s.last_seq + 1,
        at: crate::time::format_millis(at_ms as u64),
        kind,
    };
    s.apply(&e);
}

/// Node `node` starts its first attempt at `at_ms`.
fn start(s: &mut RunState, node: &str, at_ms: i64) {
    let state = EventKind::NodeState {
        node: node.into(),
        state: NodeState::Running,
    };
    apply(s, at_ms, state);
    let attempt = EventKind::AttemptStarted {
        node: node.into(),
        attempt: 1,
        pid: None,
    };
    apply(s, at_ms, attempt);
}

/// Node `node`'s attempt succeeds at `at_ms`.
fn succeed(s: &mut RunState, node: &str, at_ms: i64) {
    let finished = EventKind::AttemptFinished {
        node: node.into(),
        attempt: 1,
        outcome: AttemptOutcome::Succeeded,
        exit_code: Some(0),
        error: None,
        files: Vec::new(),
        runner: None,
    };
    apply(s, at_ms, finished);
    let state = EventKind::NodeState {
        node: node.into(),
        state: NodeState::Succeeded,
    };
    apply(s, at_ms, state);
}

fn node(id: &str, task: &str) -> Mutation {
    Mutation::add_node(id, Task::command(["true"]).named(task))
}

fn fixed() -> Mutation {
    Mutation::AddPromise {
        promise: Promise::Static {},
    }
}

/// One past sample of `task` per duration, each from its own past run.
fn samples(task: &str, durations: &[i64]) -> Vec<TaskSample> {
    durations
        .iter()
        .enumerate()
        .map(|(k, d)| TaskSample::new(&format!("old{k}"), task, task, 1, 0, *d))
        .collect()
}

fn history(tasks: &[(&str, &[i64])]) -> History {
    let all: Vec<TaskSample> = tasks.iter().flat_map(|(t, d)| samples(t, d)).collect();
    History::new(&all, &[], None)
}

/// (node, start, end) relative to `now`.
fn times(e: &RunEstimate, now: i64) -> Vec<(String, i64, i64)> {
    e.nodes
        .iter()
        .map(|n| {
            (
                n.node.clone(),
                n.expected_start_ms.expect("a start") - now,
                n.expected_end_ms.expect("an end") - now,
            )
        })
        .collect()
}

fn row(node: &str, start: i64, end: i64) -> (String, i64, i64) {
    (node.to_string(), start, end)
}

#[test]
fn percentiles_interpolate_between_ranks() {
    assert_eq!(percentile(&[7], 0.5), Some(7));
    assert_eq!(percentile(&[7], 0.8), Some(7));
    assert_eq!(percentile(&[1, 2, 3], 0.5), Some(2));
    assert_eq!(percentile(&[100, 200, 300, 400], 0.5), Some(250));
    assert_eq!(percentile(&[100, 200, 300, 400], 0.8), Some(340));
    assert_eq!(percentile(&[0, 1000], 1.0), Some(1000));
    let s = Stats::from_durations(vec![500, 100, 300, 200, 400]).unwrap();
    assert_eq!((s.median_ms, s.p80_ms, s.samples), (300, 420, 5));
    assert!(!s.same_commit);
}

#[test]
fn samples_of_the_same_commit_win_once_there_are_enough() {
    let with = |commits: &[(&str, i64)]| -> Vec<TaskSample> {
        commits
            .iter()
            .map(|(c, d)| TaskSample::new("r", "a", "t", 1, 0, *d).with_commit(Some(c)))
            .collect()
    };
    let three = with(&[("new", 10), ("new", 20), ("new", 30), ("old", 1000)]);
    let s = *History::new(&three, &[], Some("new")).task("t").unwrap();
    assert_eq!((s.median_ms, s.samples, s.same_commit), (20, 3, true));
    let two = with(&[("new", 10), ("new", 20), ("old", 1000)]);
    let s = *History::new(&two, &[], Some("new")).task("t").unwrap();
    assert_eq!(
        (s.median_ms, s.samples, s.same_commit),
        (20, 3, false),
        "too few of the commit: every sample"
    );
    let s = *History::new(&three, &[], None).task("t").unwrap();
    assert_eq!(s.samples, 4, "no commit: no preference");
}

#[test]
fn a_chain_adds_up() {
    let s = run(
        vec![
            node("a", "fetch"),
            node("b", "parse"),
            node("c", "load"),
            Mutation::add_edge("a", "b"),
            Mutation::add_edge("b", "c"),
            fixed(),
        ],
        1,
    );
    let h = history(&[
        ("fetch", &[100, 100, 400]),
        ("parse", &[200]),
        ("load", &[300]),
    ]);
    let e = estimate(&s, &h, T0);
    assert_eq!(
        times(&e, T0),
        [row("a", 0, 100), row("b", 100, 300), row("c", 300, 600)]
    );
    assert_eq!(e.expected_end_ms, Some(T0 + 600));
    assert_eq!(
        e.expected_end_p80_ms,
        Some(T0 + 280 + 200 + 300),
        "p80 of fetch is 280"
    );
    assert_eq!(e.started_ms, Some(T0));
    assert!(!e.partial);
    assert!(e.open.is_empty(), "a static run cannot grow");
    let a = &e.nodes[0];
    assert_eq!(
        (a.median_ms, a.p80_ms, a.samples, a.basis),
        (Some(100), Some(280), 3, Basis::Task)
    );
}

/// `a -> {b, c} -> d`.
fn diamond(max_parallel: usize) -> RunState {
    run(
        vec![
            node("a", "a"),
            node("b", "b"),
            node("c", "c"),
            node("d", "d"),
            Mutation::add_edge("a", "b"),
            Mutation::add_edge("a", "c"),
            Mutation::add_edge("b", "d"),
            Mutation::add_edge("c", "d"),
            fixed(),
        ],
        max_parallel,
    )
}

#[test]
fn a_diamond_is_its_longest_path_without_a_limit_and_queues_with_one_slot() {
    let h = history(&[("a", &[100]), ("b", &[200]), ("c", &[300]), ("d", &[50])]);
    let free = estimate(&diamond(usize::MAX), &h, T0);
    assert_eq!(
        times(&free, T0),
        [
            row("a", 0, 100),
            row("b", 100, 300),
            row("c", 100, 400),
            row("d", 400, 450)
        ],
        "the longest path a -> c -> d"
    );
    let one = estimate(&diamond(1), &h, T0);
    assert_eq!(
        times(&one, T0),
        [
            row("a", 0, 100),
            row("b", 100, 300),
            row("c", 300, 600),
            row("d", 600, 650)
        ],
        "c waits in the queue for b's slot"
    );
    let two = estimate(&diamond(2), &h, T0);
    assert_eq!(two.expected_end_ms, free.expected_end_ms);
}

#[test]
fn running_nodes_count_their_elapsed_time() {
    let mut s = diamond(usize::MAX);
    start(&mut s, "a", T0);
    succeed(&mut s, "a", T0 + 100);
    start(&mut s, "b", T0 + 100);
    start(&mut s, "c", T0 + 100);
    let h = history(&[("a", &[100]), ("b", &[200]), ("c", &[300]), ("d", &[50])]);
    let now = T0 + 350;
    let e = estimate(&s, &h, now);
    assert_eq!(
        times(&e, now),
        [row("b", -250, 0), row("c", -250, 50), row("d", 50, 100)],
        "b overran its median: it ends now at the earliest; c has 50 ms left"
    );
    assert_eq!(e.nodes[0].state, NodeState::Running);
    assert_eq!(e.expected_end_ms, Some(now + 100));
}

#[test]
fn tasks_without_history_take_the_workflows_median_and_make_it_partial() {
    let s = diamond(usize::MAX);
    let h = history(&[("a", &[100]), ("b", &[200]), ("d", &[300])]);
    let e = estimate(&s, &h, T0);
    assert!(e.partial);
    let c = &e.nodes[2];
    assert_eq!(
        (c.basis, c.median_ms, c.samples),
        (Basis::Workflow, Some(200), 3)
    );
    assert_eq!(e.expected_end_ms, Some(T0 + 100 + 200 + 300));

    let none = estimate(&s, &History::default(), T0);
    assert!(none.partial);
    assert_eq!(none.expected_end_ms, None, "no history: no time invented");
    assert_eq!(none.nodes.len(), 4, "the structure is still there");
    assert!(none
        .nodes
        .iter()
        .all(|n| n.basis == Basis::None && n.expected_end_ms.is_none()));
}

#[test]
fn a_run_that_may_grow_lasts_at_least_as_long_as_its_past_runs() {
    // No promise: every unfinished node may still add nodes.
    let s = run(vec![node("a", "a")], 1);
    let tasks = samples("a", &[100]);
    let past = [
        RunSample::new("old0", 0, 1_000),
        RunSample::new("old1", 0, 3_000),
    ];
    let e = estimate(&s, &History::new(&tasks, &past, None), T0);
    assert_eq!(
        e.open,
        [OpenPart {
            kind: OpenKind::Growth,
            node: "a".into(),
            to: None,
            expected_ms: None,
            samples: 0,
        }]
    );
    assert_eq!(e.past_runs.map(|r| r.median_ms), Some(2_000));
    assert_eq!(
        e.expected_end_ms,
        Some(T0 + 2_000),
        "the floor of past runs"
    );
    assert_eq!(e.expected_end_p80_ms, Some(T0 + 2_600));
    assert_eq!(e.nodes[0].expected_end_ms, Some(T0 + 100));
    assert!(!e.partial);

    let unknown = estimate(&s, &History::new(&tasks, &[], None), T0);
    assert!(unknown.partial, "growth and no past run to bound it");
    assert_eq!(unknown.expected_end_ms, Some(T0 + 100));
}

#[test]
fn an_unfilled_region_waits_as_long_as_it_took_before() {
    let map = Promise::shape("split", "join", Shape::repeat(Shape::task("work"), 0, None));
    let s = run(
        vec![
            node("split", "split"),
            node("join", "join"),
            Mutation::AddPromise { promise: map },
            Mutation::AddPromise {
                promise: Promise::OnlyNodes {
                    pattern: "work".into(),
                },
            },
        ],
        1,
    );
    // In the past run, `join` started 500 ms after `split` ended.
    let past = vec![
        TaskSample::new("old", "split", "split", 1, 0, 100),
        TaskSample::new("old", "work1", "work", 1, 100, 400),
        TaskSample::new("old", "join", "join", 1, 600, 650),
    ];
    let e = estimate(&s, &History::new(&past, &[], None), T0);
    assert_eq!(
        times(&e, T0),
        [row("split", 0, 100), row("join", 600, 650)],
        "join waits for split and for the region"
    );
    let region = &e.open[0];
    assert_eq!(
        (region.kind, region.node.as_str(), region.to.as_deref()),
        (OpenKind::Region, "split", Some("join"))
    );
    assert_eq!((region.expected_ms, region.samples), (Some(500), 1));

    // Once split ended 200 ms ago, 300 ms of the region are left.
    let mut s = s;
    start(&mut s, "split", T0);
    succeed(&mut s, "split", T0 + 100);
    let now = T0 + 300;
    let e = estimate(&s, &History::new(&past, &[], None), now);
    assert_eq!(times(&e, now), [row("join", 300, 350)]);
}

#[test]
fn an_ended_run_ends_when_it_ended() {
    let mut s = diamond(1);
    let done = EventKind::RunStatus {
        status: RunStatus::Cancelled,
        reason: None,
    };
    apply(&mut s, T0 + 42, done);
    let e = estimate(&s, &History::default(), T0 + 1_000);
    assert_eq!(e.expected_end_ms, Some(T0 + 42));
    assert!(e.nodes.is_empty() && !e.partial);
}

#[test]
fn estimates_serialise_as_json() {
    let h = history(&[("a", &[100]), ("b", &[200]), ("c", &[300]), ("d", &[50])]);
    let e = estimate(&diamond(1), &h, T0);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["expected_end_ms"], serde_json::json!(T0 + 650));
    assert_eq!(v["nodes"][0]["basis"], "task");
    assert_eq!(v["nodes"][0]["state"], "pending");
}
