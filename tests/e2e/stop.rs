//! SIGTERM and Ctrl-C stop an orchestrator gracefully: nothing new
//! starts, running tasks are asked to stop (SIGTERM to their process
//! group) and killed after a grace period, the run stays `running` with
//! the stopped attempts recorded as interrupted and its lease released, so
//! `orch resume` continues it at once. A second signal kills at once.

use std::process::{Child, ExitStatus};

use orch::{AttemptOutcome, EventKind, NodeState, RunExport, RunStatus, Store};

use crate::util::*;

/// A task script like the durable chain's that ignores SIGTERM; it says
/// so (a file `ready-<node>`) once it does.
const STUBBORN: &str = "import signal, time, orch\n\
signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
ctx = orch.start()\n\
open('ready-' + ctx.node, 'w').close()\n\
time.sleep(ctx.inputs.get('sleep_ms', 100) / 1000)\n\
ctx.output({'node': ctx.node, 'attempt': ctx.attempt})\n";

/// Waits until the task of `node` says it handles SIGTERM its own way
/// (before that, SIGTERM would end it as any process).
fn handling_sigterm(space: &Space, node: &str) {
    let ready = space.path().join(format!("ready-{node}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "`{node}` never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Waits for the orchestrator to exit (fails after 60 s).
fn exits(child: &mut Child) -> ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orchestrator did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The run after a stop: still `running`, `node`'s attempt recorded as
/// interrupted and the node ready again, the lease released.
fn stopped(space: &Space, node: &str) -> RunExport {
    let store = space.store();
    let run = store.resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Running, "the run stays resumable");
    let n = ex.node(node).unwrap();
    assert_eq!(n.state, NodeState::Ready, "{node} runs again on resume");
    let last = n.attempts.last().unwrap();
    assert_eq!(last.outcome, Some(AttemptOutcome::Killed));
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .contains("interrupted: the engine stopped"),
        "{:?}",
        last.error
    );
    assert!(
        store.owner(&run).unwrap().owner.is_none(),
        "the lease is released"
    );
    ex
}

#[test]
fn sigterm_stops_gracefully_and_the_run_resumes_without_force() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 2, 2000, &[("ORCH_STOP_GRACE", "30")], &[]);
    let task = running_pid(&space, "t000");
    signal(&child, libc::SIGTERM);
    let status = exits(&mut child);
    assert_eq!(status.code(), Some(1), "a run left running is no success");
    assert!(gone_within(task, 10), "the task was stopped with the run");
    let ex = stopped(&space, "t000");
    assert!(
        !logs_text(&space, &ex.run, "t000").contains("grace period"),
        "the task ended on SIGTERM, not on the kill after the grace period"
    );
    assert_eq!(
        ex.node("t001").unwrap().state,
        NodeState::Pending,
        "nothing new started"
    );

    let out = space.cli(&["resume", "latest"]);
    assert!(
        out.status.success(),
        "no --force needed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&ex.run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let t000 = ex.node("t000").unwrap();
    let outcomes: Vec<_> = t000.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(AttemptOutcome::Killed),
            Some(AttemptOutcome::Succeeded)
        ]
    );
    assert_eq!(ex.node("t001").unwrap().attempts.len(), 1);
    let resumed = space
        .store()
        .events(&ex.run, None)
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RunResumed { .. }))
        .count();
    assert_eq!(resumed, 1);
}

#[test]
fn a_task_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let space = Space::new();
    space.write("sleep.py", STUBBORN);
    let mut child = start_chain_with(&space, 2, 60_000, &[("ORCH_STOP_GRACE", "0.5")], &[]);
    let task = running_pid(&space, "t000");
    handling_sigterm(&space, "t000");
    signal(&child, libc::SIGTERM);
    exits(&mut child);
    assert!(gone_within(task, 10));
    let ex = stopped(&space, "t000");
    assert!(
        logs_text(&space, &ex.run, "t000")
            .contains("still running after the grace period of its stop: killed"),
        "{}",
        logs_text(&space, &ex.run, "t000")
    );
}

#[test]
fn a_second_signal_kills_at_once() {
    let space = Space::new();
    space.write("sleep.py", STUBBORN);
    // A grace far longer than the test may wait: only the second signal
    // can end the task in time.
    let mut child = start_chain_with(&space, 2, 600_000, &[("ORCH_STOP_GRACE", "3600")], &[]);
    let task = running_pid(&space, "t000");
    handling_sigterm(&space, "t000");
    signal(&child, libc::SIGTERM);
    signal(&child, libc::SIGINT);
    exits(&mut child);
    assert!(gone_within(task, 10));
    let ex = stopped(&space, "t000");
    assert!(!logs_text(&space, &ex.run, "t000").contains("grace period"));
}

/// A task that finishes its work when asked to stop, within the grace
/// period, commits: its node succeeded and does not run again on resume.
#[test]
fn a_task_that_finishes_within_the_grace_period_commits() {
    let space = Space::new();
    space.write(
        "sleep.py",
        "import signal, time, orch\n\
         asked = []\n\
         signal.signal(signal.SIGTERM, lambda *_: asked.append(1))\n\
         ctx = orch.start()\n\
         open('ready-' + ctx.node, 'w').close()\n\
         deadline = time.time() + 60\n\
         while not asked and time.time() < deadline:\n    time.sleep(0.01)\n\
         ctx.output({'node': ctx.node, 'asked': bool(asked)})\n",
    );
    let mut child = start_chain_with(&space, 2, 0, &[("ORCH_STOP_GRACE", "30")], &[]);
    running_pid(&space, "t000");
    handling_sigterm(&space, "t000");
    signal(&child, libc::SIGTERM);
    exits(&mut child);
    let store = space.store();
    let run = store.resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Running);
    let t000 = ex.node("t000").unwrap();
    assert_eq!(t000.state, NodeState::Succeeded, "{:?}", t000.attempts);
    assert_eq!(
        t000.output,
        Some(serde_json::json!({"node": "t000", "asked": true}))
    );
    let t001 = ex.node("t001").unwrap();
    assert_eq!(
        t001.state,
        NodeState::Ready,
        "ready, but nothing new started"
    );
    assert!(t001.attempts.is_empty());

    // The resume runs only what is left (t001 would wait 60 s for a stop
    // nobody asks: its own deadline ends it).
    space.write(
        "sleep.py",
        "import orch\nctx = orch.start()\nctx.output({'node': ctx.node})\n",
    );
    let out = space.cli(&["resume", "latest", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.node("t000").unwrap().attempts.len(), 1, "not run again");
}
