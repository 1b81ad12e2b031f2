//! Logs are written to the store while their attempt runs: `orch logs`
//! shows them before it ends, `orch logs --follow` prints them as they
//! come, and an attempt that a crash interrupts keeps them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::{RunStatus, SqliteStore, Store, Task};

use crate::util::{kill9, running_pid, start_chain_with, Space};

/// Prints a line (the Python helper sends what a task prints to stderr:
/// stdout carries the protocol), waits for the file `go`, prints another,
/// succeeds.
const WAITS: &str = r#"
import os, sys, time, orch
orch.start()
print("before go", flush=True)
print("to stderr too", file=sys.stderr, flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
print("after go", flush=True)
orch.output(1)
"#;

/// Polls the store (60 s at most) until the latest run's `node` has a
/// stored log line with `text`; returns every stored line's text.
fn wait_for_line(space: &Space, node: &str, text: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines: Vec<String> = SqliteStore::open_read_only(space.db())
            .ok()
            .and_then(|s| {
                let run = s.resolve_run("latest").ok()?;
                s.logs(&run, node, None).ok()
            })
            .map(|l| l.into_iter().map(|l| l.text).collect())
            .unwrap_or_default();
        if lines.iter().any(|l| l == text) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no stored line {text:?} for {node}: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_are_stored_while_the_attempt_runs_and_follow_prints_them_as_they_come() {
    let space = Space::new();
    space.write("waits.py", WAITS);
    let mut wf = space.workflow("follow");
    wf.node("work", Task::python("waits.py"));
    let run = std::thread::scope(|s| {
        let running = s.spawn(|| space.run(&wf));
        let stored = wait_for_line(&space, "work", "before go");
        assert!(!stored.contains(&"after go".to_string()));
        // `orch logs` shows them already, under a running attempt.
        let now = space.cli(&["logs", "latest", "work"]);
        let text = String::from_utf8_lossy(&now.stdout);
        assert!(
            text.contains("(pid ") && text.contains("running)"),
            "{text}"
        );
        assert!(
            text.contains("[stderr] before go\n[stderr] to stderr too"),
            "{text}"
        );

        let mut follower = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["logs", "latest", "work", "--follow"])
            .env("ORCH_DB", space.db())
            .stdout(Stdio::piped())
            .spawn()
            .expect("orch logs --follow starts");
        let mut out = BufReader::new(follower.stdout.take().unwrap());
        let mut seen = Vec::new();
        // What is stored comes at once; the follower is still following.
        while !seen.iter().any(|l: &String| l.contains("to stderr too")) {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "follower ended early: {seen:?}"
            );
            seen.push(line.trim_end().to_string());
        }
        assert!(follower.try_wait().unwrap().is_none(), "still following");
        std::fs::write(space.path().join("go"), "").unwrap();
        let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
        assert!(follower.wait().unwrap().success());
        seen.extend(rest);
        assert_eq!(
            seen,
            [
                "--- work attempt 1",
                "[stderr] before go",
                "[stderr] to stderr too",
                "[stderr] after go",
                &seen[4],
                "--- work succeeded",
            ],
            "{seen:#?}"
        );
        assert!(
            seen[4].starts_with("--- work attempt 1 (pid ") && seen[4].ends_with(", succeeded)")
        );
        let (outcome, ex) = running.join().unwrap();
        assert_eq!(outcome.status, RunStatus::Succeeded);
        ex.run
    });
    // Each line stored once, numbered in order.
    let lines = space.store().logs(&run, "work", None).unwrap();
    let numbers: Vec<u32> = lines.iter().map(|l| l.line).collect();
    assert_eq!(numbers, [1, 2, 3]);
}

#[test]
fn the_logs_of_an_attempt_a_crash_interrupted_are_kept() {
    let space = Space::new();
    space.write("sleep.py", WAITS);
    let mut orchestrator = start_chain_with(&space, 1, 0, &[], &[]);
    let task = running_pid(&space, "t000");
    wait_for_line(&space, "t000", "to stderr too");
    kill9(&mut orchestrator);
    // The task is on its own now: let it end.
    std::fs::write(space.path().join("go"), "").unwrap();
    let shown = space.cli(&["logs", "latest", "t000"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!(
            "--- t000 attempt 1 (pid {task}, running)\n[stderr] before go\n[stderr] to stderr too"
        )),
        "{text}"
    );
    // A follower does not wait for an engine that is gone.
    let follow = space.cli(&["logs", "latest", "t000", "--follow"]);
    let text = String::from_utf8_lossy(&follow.stdout);
    assert!(follow.status.success());
    assert!(
        text.contains("--- t000 running: no engine drives the run now (its last owner, pid "),
        "{text}"
    );
}
