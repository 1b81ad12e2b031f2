//! Pausing, unpausing and cancelling a live run from another process (the
//! CLI), coordinated through SQLite.

use std::time::{Duration, Instant};

use orch::{AttemptOutcome, NodeState, RunStatus, Task};

use crate::util::*;

fn chain(space: &Space, nap: &str) -> orch::Workflow {
    space.write(
        "nap.py",
        &format!("import time, orch\norch.start()\ntime.sleep({nap})\norch.output(1)\n"),
    );
    let mut wf = space.workflow("controlled");
    for i in 0..3 {
        wf.node(format!("n{i}"), Task::python("nap.py"));
        if i > 0 {
            wf.edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    wf
}

#[test]
fn pause_holds_new_starts_and_unpause_resumes() {
    let space = Space::new();
    let wf = chain(&space, "1.0");
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    wait_for(&space, "n0 to run", |ex| {
        ex.node("n0").is_some_and(|n| n.state == NodeState::Running)
    });
    let out = space.cli(&["pause", "latest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = wait_for(&space, "the pause", |ex| {
        ex.status == RunStatus::Paused
            && ex
                .node("n0")
                .is_some_and(|n| n.state == NodeState::Succeeded)
    });
    // Running attempts finish; nothing new starts while paused.
    std::thread::sleep(Duration::from_millis(600));
    let held = space.export(&ex.run);
    assert_eq!(held.status, RunStatus::Paused);
    assert!(
        held.node("n1").unwrap().attempts.is_empty(),
        "n1 did not start while paused"
    );
    let out = space.cli(&["unpause", "latest"]);
    assert!(out.status.success());
    let outcome = runner.join().unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let fin = space.export(&outcome.run);
    assert!(fin.nodes.iter().all(|n| n.attempts.len() == 1));
}

#[test]
fn cancel_kills_running_tasks_and_ends_the_run() {
    let space = Space::new();
    let wf = chain(&space, "60");
    let started = Instant::now();
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    let ex = wait_for(&space, "n0 to run", |ex| {
        ex.node("n0")
            .is_some_and(|n| n.attempts.first().is_some_and(|a| a.pid.is_some()))
    });
    let pid = ex.node("n0").unwrap().attempts[0].pid.unwrap();
    let out = space.cli(&["cancel", &ex.run]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome = runner.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the sleeping task was killed"
    );
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(outcome.exit_code(), 1);
    assert!(!alive(pid));
    let fin = space.export(&outcome.run);
    let n0 = fin.node("n0").unwrap();
    assert_eq!(n0.state, NodeState::Cancelled);
    assert_eq!(n0.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert_eq!(fin.node("n2").unwrap().state, NodeState::Cancelled);
    assert!(fin.node("n2").unwrap().attempts.is_empty());

    // A run that ended cannot be controlled.
    let again = space.cli(&["cancel", &fin.run]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended (cancelled)"));
}

#[test]
fn a_waiting_node_holds_no_process_and_takes_delivered_input() {
    let space = Space::new();
    space.write(
        "use.py",
        "import orch\nctx = orch.start()\norch.output(ctx.upstream)\n",
    );
    let mut wf = space.workflow("approval");
    wf.node("approve", Task::input());
    wf.node("after", Task::python("use.py"));
    wf.edge("approve", "after");
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    let ex = wait_for(&space, "approve to wait", |ex| {
        ex.node("approve")
            .is_some_and(|n| n.state == NodeState::Waiting)
    });
    assert_eq!(
        ex.node("approve").unwrap().attempts[0].pid,
        None,
        "no process"
    );
    let bad = space.cli(&["input", "latest", "approve", "{not json"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not JSON"));
    let wrong = space.cli(&["input", "latest", "after", "1"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not an input task"));
    let out = space.cli(&["input", "latest", "approve", r#"{"approved": true}"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome = runner.join().unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let fin = space.export(&outcome.run);
    assert_eq!(
        fin.node("approve").unwrap().output,
        Some(serde_json::json!({"approved": true}))
    );
    assert_eq!(
        fin.node("after").unwrap().output,
        Some(serde_json::json!({"approve": {"approved": true}}))
    );
}

#[test]
fn a_run_that_fails_stops_waiting_for_input() {
    let space = Space::new();
    space.write(
        "boom.py",
        "import orch\norch.start()\nraise SystemExit(2)\n",
    );
    let mut wf = space.workflow("fail_while_waiting");
    wf.max_parallel(2);
    wf.node("approve", Task::input());
    wf.node("boom", Task::python("boom.py"));
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let approve = ex.node("approve").unwrap();
    assert_eq!(approve.state, NodeState::Cancelled);
    assert_eq!(approve.attempts[0].outcome, Some(AttemptOutcome::Killed));
}
