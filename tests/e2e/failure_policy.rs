//! Failure policies: fail-fast (the default, covered in execution.rs) and
//! keep-going, where independent branches run to the end, what depends on
//! a failed node becomes `upstream_failed`, and a restart of the failed
//! node runs the run on.

use orch::{AttemptOutcome, NodeState, RunStatus, Task};

use crate::util::Space;

const NOOP: &str = "import orch\norch.start()\norch.output('ok')\n";
/// Fails (exit 3) until a file named `fixed-<node>` exists.
const FLAKY: &str = r#"
import os, sys, orch
ctx = orch.start()
if not os.path.exists("fixed-" + ctx.node):
    print("not fixed yet")
    sys.exit(3)
orch.output("fixed")
"#;
/// Adds three map nodes (the second fails) and a node gathering them.
const FAN_OUT: &str = r#"
import orch
ctx = orch.start()
ctx.add_node("gather", script="noop.py")
for i in range(1, 4):
    ctx.add_node(f"m{i}", script="flaky.py" if i == 2 else "noop.py")
    ctx.add_edge(f"m{i}", "gather")
orch.output(3)
"#;

fn keep_going_space() -> Space {
    let space = Space::new();
    space
        .write("noop.py", NOOP)
        .write("flaky.py", FLAKY)
        .write("fan_out.py", FAN_OUT);
    space
}

#[test]
fn keep_going_runs_independent_branches_and_holds_back_what_depends_on_a_failure() {
    let space = keep_going_space();
    let mut wf = space.workflow("keep-going");
    wf.keep_going(true).max_parallel(2);
    // a fails; b and c depend on it; x -> y is independent; z fails too;
    // the fan-out's second item fails, holding back only its gather.
    wf.node("a", Task::python("flaky.py"));
    wf.node("b", Task::python("noop.py"));
    wf.node("c", Task::python("noop.py"));
    wf.node("x", Task::python("noop.py"));
    wf.node("y", Task::python("noop.py"));
    wf.node("z", Task::python("flaky.py"));
    wf.node("fan_out", Task::python("fan_out.py"));
    wf.edge("a", "b");
    wf.edge("b", "c");
    wf.edge("x", "y");
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let state = |id: &str| ex.node(id).unwrap_or_else(|| panic!("node {id}")).state;
    for id in ["a", "z", "m2"] {
        assert_eq!(state(id), NodeState::Failed, "{id}");
    }
    for id in ["x", "y", "fan_out", "m1", "m3"] {
        assert_eq!(state(id), NodeState::Succeeded, "{id} ran to the end");
    }
    for id in ["b", "c", "gather"] {
        assert_eq!(state(id), NodeState::UpstreamFailed, "{id}");
        assert!(ex.node(id).unwrap().attempts.is_empty(), "{id} never ran");
    }
    let reason = ex.reason.clone().unwrap();
    assert!(reason.starts_with("3 nodes failed: "), "{reason}");
    for id in ["`a`", "`z`", "`m2`"] {
        assert!(reason.contains(id), "{id} named in: {reason}");
    }
    assert!(reason.contains("(3 nodes upstream_failed)"), "{reason}");
    // The CLI shows the new state by name.
    let show = space.cli(&["show", "latest"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("upstream_failed"), "{text}");
}

#[test]
fn restarting_the_failed_nodes_of_a_keep_going_run_runs_it_on() {
    let space = keep_going_space();
    let mut wf = space.workflow("keep-going-restart");
    wf.keep_going(true);
    wf.node("a", Task::python("flaky.py"));
    wf.node("b", Task::python("noop.py"));
    wf.node("z", Task::python("flaky.py"));
    wf.node("w", Task::python("noop.py"));
    wf.edge("a", "b");
    wf.edge("z", "w");
    let (first, ex) = space.run(&wf);
    assert_eq!(first.status, RunStatus::Failed);
    assert_eq!(ex.node("b").unwrap().state, NodeState::UpstreamFailed);
    let run = ex.run.clone();

    // Fix a only: its branch runs; z is still failed from the first
    // session, so the run ends failed naming it.
    space.write("fixed-a", "");
    let second = orch::restart(space.db(), &run, "a", false).expect("restart a");
    assert_eq!(second.status, RunStatus::Failed);
    let ex = space.export(&run);
    assert_eq!(ex.node("a").unwrap().state, NodeState::Succeeded);
    assert_eq!(ex.node("b").unwrap().state, NodeState::Succeeded);
    assert_eq!(ex.node("z").unwrap().state, NodeState::Failed);
    assert_eq!(ex.node("w").unwrap().state, NodeState::UpstreamFailed);
    let reason = ex.reason.clone().unwrap();
    assert!(reason.contains("failed earlier: z"), "{reason}");
    assert!(reason.contains("1 node upstream_failed"), "{reason}");

    // Fix z: the run succeeds, keeping the policy it was started with.
    space.write("fixed-z", "");
    let third = orch::restart(space.db(), &run, "z", false).expect("restart z");
    assert_eq!(third.status, RunStatus::Succeeded, "{:?}", third.reason);
    let ex = space.export(&run);
    let z = &ex.node("z").unwrap().attempts;
    assert_eq!(z.first().unwrap().outcome, Some(AttemptOutcome::Failed));
    assert_eq!(z.last().unwrap().outcome, Some(AttemptOutcome::Succeeded));
    assert_eq!(ex.node("w").unwrap().state, NodeState::Succeeded);
}

#[test]
fn fail_fast_stays_the_default_and_starts_nothing_after_a_failure() {
    let space = keep_going_space();
    let mut wf = space.workflow("fail-fast");
    // One at a time, a first: nothing else starts after it fails.
    wf.node("a", Task::python("flaky.py"));
    wf.node("b", Task::python("noop.py"));
    wf.node("x", Task::python("noop.py"));
    wf.edge("a", "b");
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(ex.node("a").unwrap().state, NodeState::Failed);
    for id in ["b", "x"] {
        let n = ex.node(id).unwrap();
        assert!(n.state.not_started(), "{id} never started: {}", n.state);
        assert!(n.attempts.is_empty());
    }
}
