//! How an attempt ends: when its process exits, even if a descendant that
//! left the process group still holds its pipes or runs on with its stdio
//! redirected; such a descendant is found, killed and named in the
//! attempt's log. The timeout bounds the whole attempt. Lines that are not
//! UTF-8: a log line is kept with `\xNN` (and a note), a protocol line
//! breaks the attempt.
//!
//! The tasks start their escapee, wait until it says (in a file) that it
//! left the group, then exit; `sleep 1000` stands for "would run forever".

use std::process::Command;
use std::time::Duration;

use orch::{AttemptOutcome, RunExport, RunStatus, Store as _, Task};

use crate::util::*;

/// A shell line that starts `inner` in a session of its own (`setsid`),
/// with `redirect` applied, and waits until it wrote its pid to `pid`.
/// `inner` is single-quoted: it must hold no `'`.
fn escaping(inner: &str, redirect: &str) -> String {
    format!(
        "setsid sh -c 'echo $$ > pid.tmp; mv pid.tmp pid; {inner}' {redirect} & \
         while [ ! -s pid ]; do sleep 0.01; done; echo parent exits"
    )
}

/// The pid the escapee wrote.
fn escapee(space: &Space) -> u32 {
    read_pid(space, "pid")
}

fn read_pid(space: &Space, file: &str) -> u32 {
    std::fs::read_to_string(space.path().join(file))
        .expect("the escapee wrote its pid")
        .trim()
        .parse()
        .expect("a pid")
}

/// Kills a process the orchestrator was not meant to find, when the test
/// ends either way.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(self.0 as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Runs one command task `n` and returns the run and its log text.
fn run_one(space: &Space, script: &str, timeout: Option<Duration>) -> (RunExport, String) {
    let mut wf = space.workflow("escape");
    let mut task = Task::command(["sh", "-c", script]);
    if let Some(t) = timeout {
        task = task.timeout(t);
    }
    wf.node("n", task);
    let (outcome, ex) = space.run(&wf);
    let logs = logs_text(space, &outcome.run, "n");
    (ex, logs)
}

/// The attempt of `n` succeeded with exit code 0.
fn succeeded(ex: &RunExport, logs: &str) {
    assert_eq!(ex.status, RunStatus::Succeeded, "{logs}");
    let a = &ex.node("n").unwrap().attempts[0];
    assert_eq!(a.outcome, Some(AttemptOutcome::Succeeded), "{logs}");
    assert_eq!(a.exit_code, Some(0), "{logs}");
}

fn escape_line(pid: u32, command: &str) -> String {
    format!(
        "orch: process {pid} ({command}) had left the attempt's process group and still ran at its end: killed\n"
    )
}

/// Whether the logs say that `pid` was killed as an escapee. Its command
/// line is the one it had when the sweep saw it: the shell that forked it
/// has not always reached its `exec` by then, so either is right.
fn escape_logged(logs: &str, pid: u32, command: &str) -> bool {
    logs.contains(&escape_line(pid, command))
        || logs.lines().any(|l| {
            l.starts_with(&format!("orch: process {pid} (sh -c "))
                && l.ends_with(
                    ") had left the attempt's process group and still ran at its end: killed",
                )
        })
}

#[test]
fn a_child_that_left_the_group_holding_stdout_is_killed_when_the_task_exits() {
    let space = Space::new();
    let (ex, logs) = run_one(&space, &escaping("exec sleep 1000", ""), None);
    succeeded(&ex, &logs);
    let pid = escapee(&space);
    assert!(gone_within(pid, 10), "the escaped sleeper was killed");
    assert!(escape_logged(&logs, pid, "sleep 1000"), "{logs}");
    assert!(logs.contains("stdout: parent exits\n"), "{logs}");
    assert!(!logs.contains("still open"), "the pipes closed: {logs}");
}

#[test]
fn a_daemon_with_its_stdio_redirected_is_killed_and_logged() {
    let space = Space::new();
    let script = escaping("exec sleep 1000", "< /dev/null > /dev/null 2>&1");
    let (ex, logs) = run_one(&space, &script, None);
    succeeded(&ex, &logs);
    let pid = escapee(&space);
    assert!(gone_within(pid, 10), "the daemon was killed");
    assert!(escape_logged(&logs, pid, "sleep 1000"), "{logs}");
}

#[test]
fn an_escapee_that_keeps_writing_does_not_keep_the_attempt_open() {
    let space = Space::new();
    let inner = "while :; do echo spam; done";
    let script = escaping(inner, "");
    // The timeout is far off: the exit ends the attempt, not the timeout.
    let (ex, logs) = run_one(&space, &script, Some(Duration::from_secs(600)));
    succeeded(&ex, &logs);
    let pid = escapee(&space);
    assert!(gone_within(pid, 10), "the writer was killed");
    let command = format!("sh -c echo $$ > pid.tmp; mv pid.tmp pid; {inner}");
    assert!(logs.contains(&escape_line(pid, &command)), "{logs}");
}

#[test]
fn pipes_held_by_a_process_that_cannot_be_found_are_read_for_a_bounded_time() {
    // `env -i` drops the attempt's mark, and the escapee's parent (the
    // task) is gone: nothing ties it to the attempt but the pipe it holds.
    let space = Space::new();
    let script = "setsid env -i sh -c 'echo $$ > pid.tmp; mv pid.tmp pid; exec sleep 1000' & \
                  while [ ! -s pid ]; do sleep 0.01; done; echo parent exits";
    let (ex, logs) = run_one(&space, script, None);
    let _reap = Reap(escapee(&space));
    succeeded(&ex, &logs);
    assert!(
        logs.contains(&format!(
            "orch: stdout and stderr were still open {:.3}s after the process exited (held by a process that could not be found): stopped reading\n",
            orch::exec::DRAIN_AFTER_EXIT.as_secs_f64()
        )),
        "{logs}"
    );
    assert!(logs.contains("stdout: parent exits\n"), "{logs}");
}

/// Set in the process that runs [`timeout_after_exit_in_its_own_process`].
const CHILD: &str = "ORCH_E2E_ESCAPE_CHILD";

#[test]
fn the_timeout_still_counts_after_the_process_exited() {
    // The drain bound is set far beyond the timeout, through the
    // environment, so this runs in a process of its own.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "escape::timeout_after_exit_in_its_own_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("ORCH_TEST_DRAIN_AFTER_EXIT_MS", "600000")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
    assert!(text.contains("cut by the timeout"), "it ran: {text}");
}

/// The body of [`the_timeout_still_counts_after_the_process_exited`]; does
/// nothing unless that test runs it.
#[test]
fn timeout_after_exit_in_its_own_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let space = Space::new();
    let script = "setsid env -i sh -c 'echo $$ > pid.tmp; mv pid.tmp pid; exec sleep 1000' & \
                  while [ ! -s pid ]; do sleep 0.01; done";
    let (ex, logs) = run_one(&space, script, Some(Duration::from_secs(3)));
    let _reap = Reap(escapee(&space));
    // It exited 0 within its timeout: judged by its exit. The timeout
    // ended the reading of the pipes the escapee held.
    succeeded(&ex, &logs);
    assert!(
        logs.contains(
            "orch: stdout and stderr were still open at its timeout of 3.000s, after the process exited: stopped reading\n"
        ),
        "{logs}"
    );
    println!("cut by the timeout");
}

#[test]
fn escapes_from_python_attempts_are_found_forked_or_fresh() {
    // A child that leaves the group and execs (it inherits the mark
    // through os.environ) and a forked copy of the task that leaves it
    // without exec (forked from the server, its kernel environment is the
    // server's: it is known by the marker file it holds).
    let script = r#"
import os, subprocess, time, orch
ctx = orch.start()
subprocess.Popen(["setsid", "sh", "-c", "echo $$ > exec.tmp; mv exec.tmp exec; exec sleep 1000"])
pid = os.fork()
if pid == 0:
    os.setsid()
    with open("fork.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename("fork.tmp", "fork")
    time.sleep(1000)
    os._exit(0)
while not (os.path.exists("exec") and os.path.exists("fork")):
    time.sleep(0.01)
with open("parent", "w") as f:
    f.write(str(os.getppid()))
ctx.output("done")
"#;
    for fork in [true, false] {
        let space = Space::new();
        space.write("escape.py", script);
        let mut wf = space.workflow("escape-python");
        wf.python_fork(fork);
        wf.node("n", Task::python("escape.py"));
        let (outcome, ex) = space.run(&wf);
        let logs = logs_text(&space, &outcome.run, "n");
        succeeded(&ex, &logs);
        assert_eq!(
            read_pid(&space, "parent") != std::process::id(),
            fork,
            "forked from the server iff fork is on"
        );
        let (exec, forked) = (read_pid(&space, "exec"), read_pid(&space, "fork"));
        assert!(
            gone_within(exec, 10),
            "exec'd escapee killed (fork: {fork})"
        );
        assert!(
            gone_within(forked, 10),
            "forked escapee killed (fork: {fork})"
        );
        assert!(escape_logged(&logs, exec, "sleep 1000"), "{logs}");
        assert!(
            logs.contains(&format!("orch: process {forked} (")),
            "fork: {fork}: {logs}"
        );
    }
}

#[test]
fn a_log_line_that_is_not_utf8_is_kept_with_hex_escapes_and_a_note() {
    let space = Space::new();
    let script = r"printf 'fine\n' >&2; printf 'caf\303\251 \377\376 \\x41\n' >&2";
    let (ex, logs) = run_one(&space, script, None);
    succeeded(&ex, &logs);
    assert_eq!(
        logs,
        "stderr: fine\n\
         stderr: café \\xff\\xfe \\x41\n\
         orch: line 2 of stderr had 2 bytes that are not UTF-8, shown as \\xNN\n",
    );
}

#[test]
fn a_protocol_line_that_is_not_utf8_breaks_the_attempt_naming_the_byte() {
    let space = Space::new();
    let head = r#"{"orch": 1, "seq": 1, "type": "output", "value": "ok"#;
    let script = format!("printf '%s\\377\"}}\\n' '{head}'");
    let (ex, logs) = run_one(&space, &script, None);
    assert_eq!(ex.status, RunStatus::Failed, "{logs}");
    let a = &ex.node("n").unwrap().attempts[0];
    let err = a.error.clone().unwrap();
    assert!(
        err.contains(&format!(
            "protocol line is not UTF-8 (byte {} is the first that is not",
            head.len()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(r#"{head}\xff"}}"#)),
        "quotes it: {err}"
    );
}

/// A task that stops its fork server cannot hold the run: once the
/// attempt is killed (its timeout here), the wait for the server's report
/// of its end is bounded.
#[test]
fn a_task_that_stops_its_fork_server_cannot_hold_the_run() {
    let space = Space::new();
    space.write(
        "stopper.py",
        "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n",
    );
    space.write(
        "stop.yaml",
        "name: stop\ntasks:\n  - {id: stopper, python: stopper.py, timeout: 1}\n",
    );
    let mut run = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "stop.yaml"])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run hung on a stopped fork server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let id = space.store().resolve_run("latest").unwrap();
    let logs = logs_text(&space, &id, "stopper");
    assert!(logs.contains("no word of the process's end"), "{logs}");
}
