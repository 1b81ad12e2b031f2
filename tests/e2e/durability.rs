//! Killing the orchestrator with SIGKILL loses nothing: `orch resume`
//! continues the run, completed nodes never run again, no batch is applied
//! twice.

use std::process::{Child, Command};

use orch::{AttemptOutcome, NodeState, RunStatus, SqliteStore, Store};

use crate::util::*;

fn start_chain(space: &Space, tasks: u32, sleep_ms: u32) -> Child {
    start_chain_with(space, tasks, sleep_ms, &[], &[])
}

#[test]
fn kill_dash_nine_then_resume_runs_every_node_exactly_once() {
    let space = chain_space();
    let mut child = start_chain(&space, 6, 300);
    let task_pid = running_pid(&space, "t002");
    kill9(&mut child);
    let store = SqliteStore::open_existing(space.db()).unwrap();
    let run = store.resolve_run("latest").unwrap();
    assert_eq!(
        store.export(&run).unwrap().status,
        RunStatus::Running,
        "the dead run is still marked running"
    );
    drop(store);

    let out = space.cli(&["resume", "latest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(task_pid), "the orphaned attempt was stopped");
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_ne!(
        ex.orchestrator_pid,
        Some(child.id()),
        "a new orchestrator took over"
    );
    assert_each_succeeded_once(&ex, "after the resume");
    let t2 = ex.node("t002").unwrap();
    assert_eq!(t2.attempts.len(), 2);
    assert_eq!(t2.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert!(t2.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("interrupted"));
    for done in ["t000", "t001"] {
        assert_eq!(
            ex.node(done).unwrap().attempts.len(),
            1,
            "`{done}` never ran again"
        );
    }
    // One registration batch, no batch applied twice.
    let events = SqliteStore::open_existing(space.db())
        .unwrap()
        .events(&run, None)
        .unwrap();
    let resumed = events
        .iter()
        .filter(|e| matches!(e.kind, orch::EventKind::RunResumed { .. }))
        .count();
    assert_eq!(resumed, 1);

    // A finished run cannot be resumed.
    let again = space.cli(&["resume", &run]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended (succeeded)"));
}

#[test]
fn a_changed_workflow_is_refused_unless_forced() {
    let space = Space::new();
    space.write(
        "sleep.py",
        "import time, orch\nctx = orch.start()\ntime.sleep(ctx.inputs['sleep_ms'] / 1000)\nctx.output(1)\n",
    );
    let mut child = start_chain(&space, 3, 400);
    running_pid(&space, "t001");
    kill9(&mut child);
    space.write(
        "sleep.py",
        "import orch\nctx = orch.start()\nctx.output('changed')\n",
    );
    let refused = space.cli(&["resume", "latest"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("the workflow changed since the run started") && err.contains("sleep.py"),
        "{err}"
    );
    let forced = space.cli(&["resume", "latest", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let store = SqliteStore::open_existing(space.db()).unwrap();
    let run = store.resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(
        ex.node("t002").unwrap().output,
        Some(serde_json::json!("changed"))
    );
}

#[test]
fn dying_at_each_fault_point_then_resuming_equals_a_clean_run() {
    for (point, t1_attempts) in [
        ("after_spawn", 2),
        ("after_exit", 2),
        ("before_commit", 2),
        ("after_commit", 1),
    ] {
        let space = chain_space();
        let fault = format!("{point}:t001");
        let mut child = start_chain_with(&space, 4, 50, &[("ORCH_FAULT", &fault)], &[]);
        let ex = resume_killed(&space, child.wait().unwrap(), point);
        assert_eq!(ex.status, RunStatus::Succeeded, "{point}");
        let ids: Vec<&str> = ex.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["t000", "t001", "t002", "t003"], "{point}");
        assert_eq!(
            edge_set(&ex),
            edges(&[("t000", "t001"), ("t001", "t002"), ("t002", "t003")]),
            "{point}"
        );
        assert_each_succeeded_once(&ex, point);
        for n in &ex.nodes {
            assert_eq!(n.output.as_ref().unwrap()["node"], n.id.as_str(), "{point}");
        }
        assert_eq!(
            ex.node("t000").unwrap().attempts.len(),
            1,
            "{point}: t000 never ran again"
        );
        assert_eq!(
            ex.node("t001").unwrap().attempts.len(),
            t1_attempts,
            "{point}"
        );
    }
}

#[test]
fn a_full_disk_is_a_clean_error_and_the_run_resumes_once_space_is_back() {
    let space = chain_space();
    // SQLite's max_page_count stands in for a full disk: a new database
    // is 45 pages (a root page per table and index; schema v5's runners
    // and queue added 6), and 51 fill up about halfway through this
    // chain. A schema that grows moves this number.
    let out = Command::new(example_path("durable_chain"))
        .args([
            "--tasks",
            "30",
            "--sleep-ms",
            "1",
            "--dir",
            space.path().to_str().unwrap(),
        ])
        .env("ORCH_DB", space.db())
        .env("ORCH_TEST_MAX_PAGES", "51")
        .current_dir(space.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database or disk is full"), "{err}");
    let store = SqliteStore::open_existing(space.db()).unwrap();
    store
        .integrity_check()
        .expect("nothing committed was damaged");
    let run = store.resolve_run("latest").unwrap();
    let before = store.export(&run).unwrap();
    let done = before
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Succeeded)
        .count();
    assert!(done > 0 && done < 30, "stopped partway: {done}");
    drop(store);
    let resumed = space.cli(&["resume", "latest"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    for n in &before.nodes {
        if n.state == NodeState::Succeeded {
            assert_eq!(
                ex.node(&n.id).unwrap().attempts.len(),
                1,
                "`{}` never ran again",
                n.id
            );
        }
    }
}

#[test]
fn restart_retracts_what_the_node_added_and_runs_a_new_generation() {
    let space = Space::new();
    let out = space.example("random_map", &[("ORCH_EXAMPLE_K", "3")]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let first = space.export(&run);
    assert_eq!(first.nodes.len(), 5);

    let restarted = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["restart", &run, "A"])
        .env("ORCH_DB", space.db())
        .env("ORCH_EXAMPLE_K", "5")
        .current_dir(space.path())
        .output()
        .unwrap();
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.reason, None);
    let ms: Vec<&str> = ex
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .filter(|id| id.starts_with("M_"))
        .collect();
    assert_eq!(
        ms,
        ["M_0", "M_1", "M_2", "M_3", "M_4"],
        "the new generation has 5 copies"
    );
    assert_eq!(ex.node("B").unwrap().output.as_ref().unwrap()["sum"], 30);
    assert_eq!(ex.node("A").unwrap().attempts.len(), 2);
    assert_eq!(ex.node("B").unwrap().attempts.len(), 2);
    assert_eq!(
        ex.node("M_0").unwrap().attempts.len(),
        1,
        "retracted nodes start afresh"
    );
    assert_eq!(
        ex.promises.len(),
        1,
        "the registered promise stays and was checked again"
    );
    // The old generation stays in history.
    let events = SqliteStore::open_existing(space.db())
        .unwrap()
        .events(&run, None)
        .unwrap();
    let restart_at = events
        .iter()
        .find(|e| matches!(e.kind, orch::EventKind::Restarted { .. }))
        .unwrap()
        .seq;
    let before = space.cli(&["export", &run, "--at", &(restart_at - 1).to_string()]);
    let before: orch::RunExport = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(before.nodes.len(), 5);
    assert_eq!(before.node("B").unwrap().output.as_ref().unwrap()["sum"], 5);
}

#[test]
fn an_orchestrator_may_stop_while_a_run_waits_for_input() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 2, 1, &[], &["--wait-for-input"]);
    wait_for(&space, "approve to wait", |ex| {
        ex.node("approve")
            .is_some_and(|n| n.state == NodeState::Waiting)
    });
    kill9(&mut child);
    let given = space.cli(&["input", "latest", "approve", r#""ok""#]);
    assert!(
        given.status.success(),
        "{}",
        String::from_utf8_lossy(&given.stderr)
    );
    let resumed = space.cli(&["resume", "latest"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let run = SqliteStore::open_existing(space.db())
        .unwrap()
        .resolve_run("latest")
        .unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(
        ex.node("approve").unwrap().output,
        Some(serde_json::json!("ok"))
    );
    assert_eq!(ex.node("t000").unwrap().attempts.len(), 1);
}

/// `Takeover`: a resumed run's attempts go to the executor the new
/// orchestrator chose; what committed before stays as it was.
#[test]
fn a_takeover_resumes_a_run_with_another_executor() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 4, 50, &[("ORCH_FAULT", "after_commit:t001")], &[]);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the orchestrator died"
    );

    let echo = std::sync::Arc::new(Echo::default());
    let outcome = orch::Takeover::new(space.db(), "latest")
        .executor(echo.clone())
        .resume()
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.reason);
    assert_eq!(*echo.launched.lock().unwrap(), ["t002", "t003"]);
    let ex = space.export(&outcome.run);
    for (id, by_python) in [
        ("t000", true),
        ("t001", true),
        ("t002", false),
        ("t003", false),
    ] {
        let n = ex.node(id).unwrap();
        assert_eq!(n.attempts.len(), 1, "{id} ran once");
        let out = n.output.clone().unwrap();
        assert_eq!(out["node"], id);
        // sleep.py outputs its attempt; the echo outputs its `n` input.
        assert_eq!(out.get("attempt").is_some(), by_python, "{id}: {out}");
    }

    // A restart takes the executor the same way.
    let echo = std::sync::Arc::new(Echo::default());
    let outcome = orch::Takeover::new(space.db(), "latest")
        .executor(echo.clone())
        .restart("t001")
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.reason);
    assert_eq!(*echo.launched.lock().unwrap(), ["t001", "t002", "t003"]);
}

#[test]
fn an_attempt_whose_start_was_not_written_is_killed_by_the_resume() {
    // A started attempt may wait up to `START_DELAY` for the next commit;
    // the orchestrator dies in that window, so the history holds no trace
    // of it, and its process lives on (it already has its start line).
    let space = Space::new();
    space.write(
        "sleep.py",
        "import os, time, orch\nctx = orch.start()\nopen(f'{ctx.node}.{ctx.attempt}.pid', 'w').write(str(os.getpid()))\ntime.sleep(ctx.inputs['sleep_ms'] / 1000)\nctx.output({'node': ctx.node, 'attempt': ctx.attempt})\n",
    );
    let mut child = start_chain_with(
        &space,
        2,
        3000,
        &[("ORCH_FAULT", "start_unwritten:t001")],
        &[],
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    let ex = space.export(&space.store().resolve_run("latest").unwrap());
    let t1 = ex.node("t001").unwrap();
    assert_eq!(t1.state, NodeState::Ready, "the start was not written");
    assert!(t1.attempts.is_empty());
    let pid_file = space.path().join("t001.1.pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(std::time::Instant::now() < deadline, "t001 never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let orphan: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        alive(orphan),
        "the unrecorded attempt outlived its orchestrator"
    );
    std::fs::remove_file(&pid_file).unwrap();

    let mut resume = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["resume", "latest"])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed before the node runs again (its own sleep is far from over).
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2000);
    while alive(orphan) {
        assert!(
            std::time::Instant::now() < deadline,
            "the resume did not kill the unrecorded attempt"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(resume.wait().unwrap().success());
    let ex = space.export(&space.store().resolve_run("latest").unwrap());
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_each_succeeded_once(&ex, "after the resume");
    assert_eq!(ex.node("t000").unwrap().attempts.len(), 1);
    assert_eq!(ex.node("t001").unwrap().attempts.len(), 1);
}
