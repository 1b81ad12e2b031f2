//! Expected times from history, end to end: a workflow run twice for real,
//! the second run's estimate built from the attempts the first recorded.

use orch::estimate::{self, Basis};
use orch::{Promise, RunExport, Store, Task};

use crate::util::*;

/// How long each attempt of the export took, by node, from its recorded
/// times.
fn recorded(ex: &RunExport, node: &str) -> i64 {
    let n = ex.node(node).expect("node");
    assert_eq!(n.attempts.len(), 1, "{node} ran once");
    let a = &n.attempts[0];
    let ms = |t: &str| orch::time::parse_millis(t).expect("a stored time") as i64;
    ms(a.finished_at.as_deref().expect("finished")) - ms(&a.started_at)
}

#[test]
fn the_second_run_is_estimated_from_the_first_runs_attempts() {
    let space = Space::new();
    let mut wf = space.workflow("estimated");
    for id in ["fetch", "parse", "load"] {
        wf.node(id, Task::command(["sh", "-c", "sleep 0.05"]));
    }
    wf.edge("fetch", "parse");
    wf.edge("parse", "load");
    wf.promise(Promise::Static {});
    let (first, one) = space.run(&wf);
    let (second, two) = space.run(&wf);
    assert!(first.succeeded() && second.succeeded());
    let store = space.store();

    // The samples are exactly the recorded attempts of both runs.
    let samples = store.task_durations("estimated", 10, 10).expect("samples");
    assert_eq!(samples.len(), 6);
    for s in &samples {
        let ex = if s.run == first.run { &one } else { &two };
        assert!(s.run == first.run || s.run == second.run, "{s:?}");
        assert_eq!(s.task, s.node, "a task is named after its node");
        assert_eq!(s.duration_ms(), recorded(ex, &s.node), "{s:?}");
    }
    let runs = store.run_durations("estimated", 10).expect("runs");
    assert_eq!(
        runs.iter().map(|r| r.run.as_str()).collect::<Vec<_>>(),
        [second.run.as_str(), first.run.as_str()],
        "newest first"
    );

    // The second run as it was at its registration: the estimate knows
    // only the first run.
    let registered = store.replay(&second.run, Some(2)).expect("replay");
    assert!(registered
        .graph
        .nodes()
        .iter()
        .all(|n| n.state.not_started()));
    let start = orch::time::parse_millis(two.created_at.as_deref().expect("created"))
        .expect("a stored time") as i64;
    let e = estimate::for_state(&store, &registered, start).expect("estimate");
    assert!(!e.partial, "every task has history: {e:?}");
    assert!(e.open.is_empty(), "a static run cannot grow");
    assert_eq!(
        e.past_runs.map(|r| r.samples),
        Some(1),
        "the first run only"
    );
    let mut at = start;
    for (n, id) in e.nodes.iter().zip(["fetch", "parse", "load"]) {
        let took = recorded(&one, id);
        assert_eq!(n.node, id);
        assert_eq!(
            (n.basis, n.samples, n.median_ms, n.p80_ms),
            (Basis::Task, 1, Some(took), Some(took)),
            "{id} from the first run's attempt"
        );
        assert_eq!(
            n.expected_start_ms,
            Some(at),
            "{id} starts when its upstream ends"
        );
        at += took;
        assert_eq!(n.expected_end_ms, Some(at));
    }
    assert_eq!(e.expected_end_ms, Some(at), "the chain's sum");

    // Once ended, a run is expected to end when it ended.
    let ended = estimate::for_run(&store, &second.run, start).expect("estimate");
    let finished = orch::time::parse_millis(two.finished_at.as_deref().expect("finished"))
        .expect("a stored time") as i64;
    assert_eq!(ended.expected_end_ms, Some(finished));
    assert!(ended.nodes.is_empty());
}
