//! Running tasks: protocol errors, stray prints, exit codes, timeouts,
//! retries, task kinds, references, parallelism.

use orch::Store as _;
use std::time::Duration;

use orch::{AttemptOutcome, NodeState, RunStatus, Task};
use serde_json::json;

use crate::util::*;

const NOOP: &str = "import orch\norch.start()\norch.output('ok')\n";

#[test]
fn a_malformed_protocol_line_fails_the_attempt_quoting_it() {
    let space = Space::new();
    space.write(
        "bad.py",
        "import sys\nsys.stdin.readline()\nprint('{\"orch\": 1, \"type\": \"add_node\", \"id\"', flush=True)\n",
    );
    space.write("noop.py", NOOP);
    let mut wf = space.workflow("malformed");
    wf.node("bad", Task::python("bad.py"));
    wf.node("after", Task::python("noop.py"));
    wf.edge("bad", "after");
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let err = ex.node("bad").unwrap().attempts[0].error.clone().unwrap();
    assert!(err.starts_with("malformed protocol line"), "{err}");
    assert!(
        err.contains(r#"{"orch": 1, "type": "add_node", "id""#),
        "quotes the line: {err}"
    );
    assert!(ex.node("after").unwrap().attempts.is_empty());

    // A valid JSON line with an invalid message is malformed too.
    space.write(
        "bad2.py",
        "import sys\nsys.stdin.readline()\nprint('{\"orch\":1,\"seq\":1,\"type\":\"add_edge\",\"from\":\"x\"}', flush=True)\n",
    );
    let mut wf = space.workflow("malformed2");
    wf.node("bad2", Task::python("bad2.py"));
    let (_, ex) = space.run(&wf);
    let err = ex.node("bad2").unwrap().attempts[0].error.clone().unwrap();
    assert!(err.contains("missing field `to`"), "{err}");
}

#[test]
fn stray_prints_are_logs_and_do_not_break_the_run() {
    let space = Space::new();
    space.write(
        "chatty.py",
        r#"
import os, sys, orch
print("before start")
ctx = orch.start()
print("hello from print")
print('{"not": "protocol"}')
print("{broken json")
sys.stderr.write("to stderr\n")
os.system("echo from a child process")
ctx.log("structured", level="warning")
ctx.output({"fine": True})
"#,
    );
    let mut wf = space.workflow("chatty");
    wf.node("chatty", Task::python("chatty.py"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node("chatty").unwrap().output,
        Some(json!({"fine": true}))
    );
    let logs = logs_text(&space, &ex.run, "chatty");
    for want in [
        "before start",
        "hello from print",
        r#"{"not": "protocol"}"#,
        "{broken json",
        "to stderr",
        "from a child process",
        "log: [warning] structured",
    ] {
        assert!(logs.contains(want), "missing {want:?} in logs:\n{logs}");
    }
    let cli = space.cli(&["logs", "latest", "chatty"]);
    assert!(String::from_utf8_lossy(&cli.stdout).contains("hello from print"));
}

#[test]
fn a_non_zero_exit_fails_the_node_and_the_run() {
    let space = Space::new();
    space
        .write(
            "boom.py",
            "import orch, sys\norch.start()\nprint('about to fail')\nsys.exit(3)\n",
        )
        .write("noop.py", NOOP);
    let mut wf = space.workflow("boom");
    wf.node("boom", Task::python("boom.py"));
    wf.node("after", Task::python("noop.py"));
    wf.node("independent", Task::python("noop.py"));
    wf.edge("boom", "after");
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.exit_code(), 1);
    let boom = ex.node("boom").unwrap();
    assert_eq!(boom.state, NodeState::Failed);
    assert_eq!(boom.attempts[0].exit_code, Some(3));
    assert_eq!(
        boom.attempts[0].error.as_deref(),
        Some("exited with code 3")
    );
    assert_eq!(ex.node("after").unwrap().state, NodeState::Pending);
    assert!(ex.node("after").unwrap().attempts.is_empty());
    assert!(ex.reason.unwrap().contains("exited with code 3"));
    let show = space.cli(&["show", "latest"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("boom attempt 1: exited with code 3"),
        "{text}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    // The same for a forked attempt (the default) and a fresh interpreter.
    for fork in [true, false] {
        let space = Space::new();
        space.write(
            "hang.py",
            r#"
import os, subprocess, time, orch
ctx = orch.start()
child = subprocess.Popen(["sleep", "60"])
with open("ids", "w") as f:
    f.write(f"{os.getppid()} {child.pid}")
time.sleep(60)
"#,
        );
        let mut wf = space.workflow("hang");
        wf.python_fork(fork);
        wf.node(
            "hang",
            Task::python("hang.py").timeout(Duration::from_millis(700)),
        );
        let started = std::time::Instant::now();
        let (outcome, ex) = space.run(&wf);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "did not wait for the task"
        );
        assert_eq!(outcome.status, RunStatus::Failed);
        let a = &ex.node("hang").unwrap().attempts[0];
        assert_eq!(a.outcome, Some(AttemptOutcome::TimedOut));
        assert!(!alive(a.pid.unwrap()), "task process killed");
        let ids = std::fs::read_to_string(space.path().join("ids")).unwrap();
        let (ppid, grandchild) = ids.split_once(' ').unwrap();
        assert_eq!(
            ppid != std::process::id().to_string(),
            fork,
            "forked from the server iff fork is on"
        );
        // The grandchild is reparented to init, which reaps it shortly.
        let grandchild: u32 = grandchild.parse().unwrap();
        assert!(
            gone_within(grandchild, 10),
            "grandchild killed with the group (fork: {fork})"
        );
    }
}

#[test]
fn retries_run_a_failed_task_again() {
    let space = Space::new();
    space.write(
        "flaky.py",
        r#"
import os, orch
ctx = orch.start()
if ctx.attempt < 3:
    ctx.add_node(f"ghost_{ctx.attempt}", script="flaky.py")
    raise SystemExit(f"flaky attempt {ctx.attempt}")
ctx.output({"attempt": ctx.attempt})
"#,
    );
    let mut wf = space.workflow("flaky");
    wf.node("flaky", Task::python("flaky.py").retries(2));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded());
    let n = ex.node("flaky").unwrap();
    let outcomes: Vec<_> = n.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(AttemptOutcome::Failed),
            Some(AttemptOutcome::Failed),
            Some(AttemptOutcome::Succeeded)
        ]
    );
    assert_eq!(n.output, Some(json!({"attempt": 3})));
    assert_eq!(ex.nodes.len(), 1, "failed attempts added nothing");

    // A terminal failure is not retried.
    space.write(
        "give_up.py",
        "import orch\norch.start()\norch.fail('no point', retry=False)\n",
    );
    let mut wf = space.workflow("give_up");
    wf.node("give_up", Task::python("give_up.py").retries(5));
    let (_, ex) = space.run(&wf);
    let n = ex.node("give_up").unwrap();
    assert_eq!(n.attempts.len(), 1);
    assert_eq!(
        n.attempts[0].error.as_deref(),
        Some("the task failed: no point")
    );
}

#[test]
fn python_functions_commands_and_references() {
    let space = Space::new();
    space.write(
        "mathy.py",
        "def add(a, b):\n    return {'sum': a + b, 'parts': [a, b]}\n",
    );
    space.write(
        "echo.py",
        "import orch\nctx = orch.start()\norch.output(ctx.inputs)\n",
    );
    let mut wf = space.workflow("kinds");
    wf.node("add", Task::python_fn("mathy:add"))
        .input("a", 2)
        .input("b", 3);
    wf.node(
        "shell",
        Task::command(["sh", "-c", "head -n 1 > start.json; echo shell ran"]),
    );
    wf.node("use", Task::python("echo.py"))
        .input("total", orch::output_at("add", "/sum"))
        .input("all", orch::output("add"))
        .input("second", orch::output_at("add", "/parts/1"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(
        ex.node("add").unwrap().output,
        Some(json!({"sum": 5, "parts": [2, 3]}))
    );
    assert_eq!(
        ex.node("use").unwrap().output,
        Some(json!({"total": 5, "all": {"sum": 5, "parts": [2, 3]}, "second": 3}))
    );
    assert!(
        edge_set(&ex).contains(&("add".to_string(), "use".to_string())),
        "reference implies the edge"
    );
    // The command task got the start message on stdin.
    let start: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(space.path().join("start.json")).unwrap())
            .unwrap();
    assert_eq!(start["type"], "start");
    assert_eq!(start["node"], "shell");
    assert_eq!(start["attempt"], 1);
    assert!(logs_text(&space, &ex.run, "shell").contains("shell ran"));
}

#[test]
fn a_missing_script_fails_with_its_path() {
    let space = Space::new();
    let mut wf = space.workflow("missing");
    wf.node("m", Task::python("does_not_exist.py"));
    let (_, ex) = space.run(&wf);
    let err = ex.node("m").unwrap().attempts[0].error.clone().unwrap();
    assert!(err.contains("does_not_exist.py not found"), "{err}");
}

#[test]
fn max_parallel_runs_attempts_side_by_side_and_keeps_edges() {
    let space = Space::new();
    space.write(
        "nap.py",
        "import time, orch\norch.start()\ntime.sleep(1.0)\norch.output(1)\n",
    );
    let mut wf = space.workflow("parallel");
    wf.max_parallel(4);
    for i in 0..4 {
        wf.node(format!("w{i}"), Task::python("nap.py"));
    }
    wf.node("join", Task::python("nap.py"));
    for i in 0..4 {
        wf.edge(format!("w{i}"), "join");
    }
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded());
    let span = |id: &str| {
        let a = &ex.node(id).unwrap().attempts[0];
        (a.started_at.clone(), a.finished_at.clone().unwrap())
    };
    // All four workers were started before the first of them finished.
    let first_end = (0..4).map(|i| span(&format!("w{i}")).1).min().unwrap();
    for i in 0..4 {
        assert!(
            span(&format!("w{i}")).0 < first_end,
            "w{i} ran beside the others"
        );
    }
    let join = span("join");
    for i in 0..4 {
        assert!(span(&format!("w{i}")).1 <= join.0, "join starts after w{i}");
    }
}

#[test]
fn retries_wait_out_an_exponential_backoff() {
    let space = Space::new();
    space.write(
        "flaky.py",
        "import orch\nctx = orch.start()\nif ctx.attempt < 3:\n    raise SystemExit(1)\nctx.output(ctx.attempt)\n",
    );
    let mut wf = space.workflow("backoff");
    wf.node(
        "flaky",
        Task::python("flaky.py")
            .retries(2)
            .retry_delay(Duration::from_millis(300)),
    );
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let a = &ex.node("flaky").unwrap().attempts;
    assert_eq!(a.len(), 3);
    let ms = |t: &str| orch::time::parse_millis(t).expect("orch timestamp") as i64;
    let gap1 = ms(&a[1].started_at) - ms(a[0].finished_at.as_ref().unwrap());
    let gap2 = ms(&a[2].started_at) - ms(a[1].finished_at.as_ref().unwrap());
    assert!(gap1 >= 300, "first retry waited {gap1} ms");
    assert!(gap2 >= 600, "second retry waited {gap2} ms (doubled)");
}

#[test]
fn a_task_killed_by_a_signal_fails_with_the_signal() {
    let space = Space::new();
    space.write(
        "die.py",
        "import os, signal, orch\norch.start()\nos.kill(os.getpid(), signal.SIGKILL)\n",
    );
    let mut wf = space.workflow("signal");
    wf.node("die", Task::python("die.py"));
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let a = &ex.node("die").unwrap().attempts[0];
    assert_eq!(a.error.as_deref(), Some("killed by signal 9"));
    assert_eq!(a.exit_code, None);
}

#[test]
fn a_100_mb_protocol_line_fails_with_a_clear_error_in_bounded_memory() {
    let space = Space::new();
    space.write(
        "huge.py",
        r#"
import os, sys
sys.stdin.readline()
out = os.fdopen(1, "wb", buffering=0)
out.write(b'{"orch":1,"seq":1,"type":"output","value":"')
chunk = b"x" * (1 << 20)
for _ in range(100):
    out.write(chunk)
out.write(b'"}\n')
"#,
    );
    let mut wf = space.workflow("huge");
    wf.node("huge", Task::python("huge.py"));
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let err = ex.node("huge").unwrap().attempts[0].error.clone().unwrap();
    assert!(err.starts_with("protocol line longer than"), "{err}");
    assert!(
        err.len() < 2_000,
        "the error quotes only the start of the line"
    );
    // Bounded memory: this test process (which ran the orchestrator) never
    // held the whole line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kb < 600 * 1024, "peak memory {hwm_kb} kB");
}

#[test]
fn exiting_0_without_a_declared_output_fails() {
    let space = Space::new();
    space.write("quiet.py", "import orch\norch.start()\n");
    let mut wf = space.workflow("quiet");
    wf.node("fine", Task::python("quiet.py"));
    wf.node("quiet", Task::python("quiet.py").requires_output());
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let err = ex.node("quiet").unwrap().attempts[0].error.clone().unwrap();
    assert_eq!(err, "exited 0 without the output its task declares");
    assert_eq!(
        ex.node("fine").unwrap().state,
        NodeState::Succeeded,
        "no output needed there"
    );
}

/// `Workflow::executor`: attempts go to the given executor, which sees
/// resolved inputs and reports the end; the runtime keeps the rest.
#[test]
fn a_workflow_runs_with_another_executor() {
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let echo = Arc::new(Echo::default());
    let mut wf = orch::Workflow::new("echo");
    wf.node("a", Task::command(["false"])).input("n", 1);
    wf.node("b", Task::command(["false"]))
        .input("n", orch::output("a"));
    wf.db(dir.path().join("orch.db"))
        .live_picture(false)
        .executor(echo.clone());
    let outcome = wf.run().unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}");
    assert_eq!(*echo.launched.lock().unwrap(), ["a", "b"]);
    let ex = orch::SqliteStore::open(&outcome.db)
        .unwrap()
        .export(&outcome.run)
        .unwrap();
    let b = ex.node("b").unwrap();
    assert_eq!(b.state, NodeState::Succeeded);
    assert_eq!(
        b.output,
        Some(json!({"node": "b", "n": {"node": "a", "n": 1}}))
    );
    assert_eq!(b.attempts.len(), 1);
    assert_eq!(b.attempts[0].outcome, Some(AttemptOutcome::Succeeded));
}

/// Every line counts toward an attempt's log cap, empty ones too: a flood
/// of empty lines keeps at most `MAX_LOG_BYTES / LOG_LINE_COST` lines and
/// says how many more it dropped (empty lines used to be free, so memory
/// grew with the flood).
#[test]
fn a_flood_of_empty_log_lines_is_capped_and_counted() {
    let space = Space::new();
    let kept = orch::exec::MAX_LOG_BYTES / orch::exec::LOG_LINE_COST;
    let printed = kept + 1000;
    space.write(
        "flood.py",
        &format!(
            "import sys, orch\nctx = orch.start()\nsys.stdout.write('\\n' * {printed})\nsys.stdout.flush()\nctx.output(1)\n"
        ),
    );
    let mut wf = space.workflow("flood");
    wf.node("flood", Task::python("flood.py"));
    wf.live_picture(false);
    let (outcome, _) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let lines = space.store().logs(&outcome.run, "flood", None).unwrap();
    // The cap's lines, and the note about the rest.
    assert!(lines.len() <= kept + 1, "{} lines kept", lines.len());
    let last = lines.last().unwrap();
    assert_eq!(last.stream, "orch");
    let dropped: usize = last.text.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        lines.len() - 1 + dropped,
        printed,
        "every line printed is kept or counted: {}",
        last.text
    );
}
