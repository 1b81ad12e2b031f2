//! The warm Python fork server: forked attempts behave like fresh
//! interpreters (logs, outputs, mutations, exit codes, tracebacks,
//! timeouts, cancel, resume), preloaded modules are warm, no state leaks
//! between attempts, and the fresh-interpreter fallback works.

use orch::Store as _;
use std::time::Duration;

use orch::{AttemptOutcome, NodeState, RunExport, RunStatus, Task};
use serde_json::{json, Value};

use crate::util::*;

/// Reports how the attempt was started: `forked` is true when its parent
/// is not the orchestrator (this test process) but the fork server.
const WHO: &str = r#"
import os, sys, orch
ctx = orch.start()
orch.output({
    "ppid": os.getppid(),
    "pgid_is_pid": os.getpgid(0) == os.getpid(),
    "name": __name__,
    "argv": sys.argv,
    "file": __file__,
    "path0": sys.path[0],
    "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in ("ORCH_RUN", "ORCH_NODE", "ORCH_ATTEMPT", "ORCH_DB")},
    "stdin_tty": sys.stdin.isatty(),
})
"#;

fn forked(ex: &RunExport, node: &str) -> bool {
    let out = ex.node(node).unwrap().output.clone().unwrap();
    out["ppid"].as_u64().unwrap() != u64::from(std::process::id())
}

/// Scripts covering what a task can do; run with fork on and off, their
/// results must be the same.
fn behaviours(space: &Space) -> Vec<orch::Workflow> {
    space.write("who.py", WHO);
    space.write(
        "chatty.py",
        r#"
import os, sys, orch
print("before start")
ctx = orch.start()
print("hello from print")
sys.stderr.write("to stderr\n")
os.system("echo from a child process")
ctx.log("structured", level="warning")
ctx.add_node("grown", script="who.py", inputs={"from": ctx.node})
ctx.add_edge(ctx.node, "grown")
try:
    ctx.add_edge("grown", "nowhere")
except orch.OrchError as e:
    print("rejected:", e)
ctx.output({"fine": True})
"#,
    );
    space.write(
        "exit3.py",
        "import orch\norch.start()\nprint('leaving with 3')\nraise SystemExit(3)\n",
    );
    space.write(
        "sysexit3.py",
        "import sys, orch\norch.start()\nsys.exit(3)\n",
    );
    space.write(
        "bye.py",
        "import sys, orch\norch.start()\nsys.exit('bye: not a number')\n",
    );
    space.write(
        "boom.py",
        "import orch\norch.start()\n\ndef f():\n    raise ValueError('boom')\n\nf()\n",
    );
    space.write("syntax.py", "import orch\ndef (:\n");
    space.write(
        "term.py",
        "import os, signal, orch\norch.start()\nos.kill(os.getpid(), signal.SIGTERM)\n",
    );
    space.write(
        "threads.py",
        r#"
import threading, time, orch
ctx = orch.start()
done = []
def later():
    time.sleep(0.2)
    done.append(1)
    ctx.output({"thread_finished": True})
threading.Thread(target=later).start()
"#,
    );
    space.write(
        "atexit_.py",
        "import atexit, orch\nctx = orch.start()\natexit.register(lambda: ctx.output('from atexit'))\n",
    );
    space.write(
        "funcs.py",
        "def double(x):\n    return {'double': x * 2}\n\ndef broken():\n    raise KeyError('nope')\n",
    );
    // One run per task: a failing one ends its run.
    let mut runs = Vec::new();
    let mut add = |name: &str, task: Task, x: Option<i64>| {
        let mut wf = space.workflow(name);
        let n = wf.node(name, task);
        if let Some(x) = x {
            n.input("x", x);
        }
        runs.push(wf);
    };
    add("who", Task::python("who.py"), None);
    add("chatty", Task::python("chatty.py"), None);
    for s in [
        "exit3", "sysexit3", "bye", "boom", "syntax", "term", "threads", "atexit_",
    ] {
        add(s, Task::python(format!("{s}.py")), None);
    }
    add("double", Task::python_fn("funcs:double"), Some(21));
    add("broken", Task::python_fn("funcs:broken"), None);
    add("missing_fn", Task::python_fn("funcs:absent"), None);
    runs
}

/// Runs every workflow; the exports merged into one (nodes of all runs).
fn run_all(space: &Space, runs: &mut [orch::Workflow], fork: bool) -> Vec<RunExport> {
    runs.iter_mut()
        .map(|wf| {
            wf.python_fork(fork);
            space.run(wf).1
        })
        .collect()
}

/// What must be the same with and without fork, per node: state, outputs
/// (minus pids and the run id), attempt outcome, exit code, error, logs.
fn summary(space: &Space, exports: &[RunExport]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ex, n) in exports
        .iter()
        .flat_map(|ex| ex.nodes.iter().map(move |n| (ex, n)))
    {
        let mut output = n.output.clone().unwrap_or(Value::Null);
        if let Some(o) = output.as_object_mut() {
            o.remove("ppid");
            if let Some(env) = o.get_mut("env").and_then(Value::as_object_mut) {
                env.remove("ORCH_RUN");
            }
        }
        let a = n.attempts.last().unwrap();
        // Each stream is its own pipe: lines keep their order within a
        // stream, but how two streams interleave is up to the scheduler.
        let text = logs_text(space, &ex.run, &n.id);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_by_key(|l| l.split_once(": ").map_or(*l, |(stream, _)| stream));
        let logs = lines.join("\n");
        out.push((
            n.id.clone(),
            format!(
                "state {:?} output {output} outcome {:?} exit {:?} error {:?}\n{logs}",
                n.state, a.outcome, a.exit_code, a.error
            ),
        ));
    }
    out
}

#[test]
fn forked_attempts_behave_like_fresh_interpreters() {
    let space = Space::new();
    let mut runs = behaviours(&space);
    let fork_runs = run_all(&space, &mut runs, true);
    let fresh_runs = run_all(&space, &mut runs, false);
    let (fork_ex, fresh_ex) = (&fork_runs[0], &fresh_runs[0]);
    assert!(forked(fork_ex, "who"), "fork on: the server is the parent");
    assert!(
        forked(&fork_runs[1], "grown"),
        "dynamically added nodes fork too"
    );
    assert!(!forked(fresh_ex, "who"), "fork off: the orchestrator is");

    let (f, r) = (summary(&space, &fork_runs), summary(&space, &fresh_runs));
    assert_eq!(f.len(), r.len());
    for ((node, forked), (_, fresh)) in f.iter().zip(&r) {
        assert_eq!(forked, fresh, "node `{node}` differs with fork");
    }

    // And what they are, so that both are right rather than equally wrong.
    let who = fork_ex.node("who").unwrap().output.clone().unwrap();
    let script = space.path().canonicalize().unwrap().join("who.py");
    assert_eq!(who["name"], "__main__");
    assert_eq!(who["argv"], json!([script.to_str().unwrap()]));
    assert_eq!(who["file"], script.to_str().unwrap());
    assert_eq!(
        who["path0"],
        space.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(who["cwd"], who["path0"]);
    assert_eq!(who["pgid_is_pid"], true, "its own process group");
    assert_eq!(who["stdin_tty"], false);
    assert_eq!(who["env"]["ORCH_NODE"], "who");
    assert_eq!(who["env"]["ORCH_ATTEMPT"], "1");
    assert_eq!(who["env"]["ORCH_RUN"], fork_ex.run.as_str());
    let find = |node: &str| {
        fork_runs
            .iter()
            .find_map(|ex| Some((ex.run.clone(), ex.node(node)?.clone())))
            .unwrap()
    };
    assert_eq!(find("grown").1.output.unwrap()["env"]["ORCH_NODE"], "grown");
    let attempt = |node: &str| find(node).1.attempts[0].clone();
    let logs = |node: &str| logs_text(&space, &find(node).0, node);
    assert_eq!(attempt("exit3").exit_code, Some(3));
    assert_eq!(
        attempt("sysexit3").error.as_deref(),
        Some("exited with code 3")
    );
    assert_eq!(attempt("bye").exit_code, Some(1));
    assert!(logs("bye").contains("stderr: bye: not a number"));
    assert_eq!(
        attempt("term").error.as_deref(),
        Some("killed by signal 15")
    );
    assert_eq!(
        find("threads").1.output,
        Some(json!({"thread_finished": true})),
        "non-daemon threads are joined before exit"
    );
    assert_eq!(find("atexit_").1.output, Some(json!("from atexit")));
    assert_eq!(find("double").1.output, Some(json!({"double": 42})));
    assert_eq!(attempt("missing_fn").exit_code, Some(2));
    let boom = logs("boom");
    assert!(
        boom.contains("Traceback (most recent call last):"),
        "{boom}"
    );
    assert!(boom.contains("boom.py\", line 7, in <module>"), "{boom}");
    assert!(boom.contains("stderr: ValueError: boom"), "{boom}");
    assert!(!boom.contains("_forkserver"), "no server frames: {boom}");
    let syntax = logs("syntax");
    assert!(syntax.contains("SyntaxError"), "{syntax}");
    let chatty = logs("chatty");
    for want in [
        "before start",
        "hello from print",
        "to stderr",
        "from a child process",
        "log: [warning] structured",
        "rejected:",
    ] {
        assert!(chatty.contains(want), "missing {want:?} in:\n{chatty}");
    }
}

#[test]
fn preloaded_modules_are_warm_and_no_state_leaks_between_attempts() {
    let space = Space::new();
    space.write(
        "warm.py",
        r#"
# Imported once, by the fork server: the file gets one line per import.
import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports.log"), "a") as f:
    f.write(f"{os.getpid()}\n")
seen = []

def touch(tag):
    seen.append(tag)
    return {"seen": list(seen)}
"#,
    );
    space.write(
        "use.py",
        r#"
import sys
was_loaded = "warm" in sys.modules
import warm, orch
ctx = orch.start()
globals_leak = getattr(sys, "leak_from_earlier_task", None)
sys.leak_from_earlier_task = ctx.node
orch.output({"was_loaded": was_loaded, "leak": globals_leak, **warm.touch(ctx.node)})
"#,
    );
    let mut wf = space.workflow("preload");
    wf.python_preload(["warm"]);
    for i in 0..4 {
        wf.node(format!("u{i}"), Task::python("use.py"));
        if i > 0 {
            wf.edge(format!("u{}", i - 1), format!("u{i}"));
        }
    }
    wf.node("f", Task::python_fn("warm:touch"))
        .input("tag", "f");
    wf.edge("u3", "f");
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    for i in 0..4 {
        let node = format!("u{i}");
        assert_eq!(
            ex.node(&node).unwrap().output,
            Some(json!({"was_loaded": true, "leak": null, "seen": [node]})),
            "each attempt starts from the warm state"
        );
    }
    assert_eq!(ex.node("f").unwrap().output, Some(json!({"seen": ["f"]})));
    let imports = std::fs::read_to_string(space.path().join("imports.log")).unwrap();
    assert_eq!(imports.lines().count(), 1, "imported once: {imports}");

    // Resume rebuilds the run with the same preload: the config records it.
    let state = space.store().replay(&ex.run, None).unwrap();
    let config = state.config.as_ref().expect("recorded");
    assert_eq!(config.python_preload, ["warm"]);
    assert!(config.python_fork);
}

#[test]
fn an_unusable_server_falls_back_to_fresh_interpreters() {
    for (why, module, text) in [
        ("a preload that fails", "broken_mod", "raise ImportError('no luck')\n"),
        (
            "a preload that starts a thread",
            "threaded_mod",
            "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n",
        ),
    ] {
        let space = Space::new();
        space.write(&format!("{module}.py"), text);
        space.write("who.py", WHO);
        let mut wf = space.workflow("fallback");
        wf.python_preload([module]);
        wf.node("a", Task::python("who.py"));
        wf.node("b", Task::python("who.py"));
        wf.edge("a", "b");
        let (outcome, ex) = space.run(&wf);
        assert!(outcome.succeeded(), "{why}: {:?}", outcome.reason);
        assert!(!forked(&ex, "a") && !forked(&ex, "b"), "{why}: fresh");
    }
}

#[test]
fn cancel_kills_a_forked_task() {
    let space = Space::new();
    space.write(
        "nap.py",
        "import os, time, orch\norch.start()\nopen('ppid', 'w').write(str(os.getppid()))\ntime.sleep(60)\n",
    );
    let mut wf = space.workflow("cancel");
    wf.node("nap", Task::python("nap.py"));
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    let ex = wait_for(&space, "nap to run", |ex| {
        ex.node("nap")
            .is_some_and(|n| n.attempts.first().is_some_and(|a| a.pid.is_some()))
            && space.path().join("ppid").exists()
    });
    let pid = ex.node("nap").unwrap().attempts[0].pid.unwrap();
    let ppid = std::fs::read_to_string(space.path().join("ppid")).unwrap();
    assert_ne!(ppid, std::process::id().to_string(), "it was forked");
    assert!(space.cli(&["cancel", &ex.run]).status.success());
    let outcome = runner.join().unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    let n = space.export(&outcome.run);
    let nap = n.node("nap").unwrap();
    assert_eq!(nap.state, NodeState::Cancelled);
    assert_eq!(nap.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert!(!alive(pid), "the forked task was killed");
}

/// The environment the kernel shows for a process: a forked attempt's is
/// the server's, without the task's `ORCH_NODE`.
fn environ_names_node(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .any(|v| v.starts_with(b"ORCH_NODE="))
}

#[test]
fn resume_kills_a_forked_leftover_and_runs_the_node_again() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 4, 30000, &[], &[]);
    let ex = wait_for(&space, "t000 to run", |ex| {
        ex.node("t000")
            .is_some_and(|n| n.state == NodeState::Running && n.attempts[0].pid.is_some())
    });
    let pid = ex.node("t000").unwrap().attempts[0].pid.unwrap();
    assert!(
        alive(pid) && !environ_names_node(pid),
        "a forked task: its environ is the server's"
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    child.wait().unwrap();
    // The server ends with its orchestrator; the task lives on, orphaned.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the leftover outlived its orchestrator");

    // Resuming kills the leftover before it runs t000 again.
    let resumer = std::thread::spawn({
        let db = space.db();
        move || orch::resume(db, "latest", false)
    });
    assert!(gone_within(pid, 20), "resume killed the forked leftover");
    let ex = wait_for(&space, "t000 to run again", |ex| {
        ex.node("t000")
            .is_some_and(|n| n.attempts.len() == 2 && n.attempts[1].pid.is_some())
    });
    let t0 = ex.node("t000").unwrap();
    assert_eq!(t0.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert!(t0.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("interrupted"));
    // Stop the resumed run; it has proven the point.
    assert!(space.cli(&["cancel", &ex.run]).status.success());
    let outcome = resumer.join().unwrap().expect("resume");
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

#[test]
fn orch_python_fork_0_starts_fresh_interpreters() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 1, 3000, &[("ORCH_PYTHON_FORK", "0")], &[]);
    let ex = wait_for(&space, "t000 to run", |ex| {
        ex.node("t000")
            .is_some_and(|n| n.state == NodeState::Running && n.attempts[0].pid.is_some())
    });
    let pid = ex.node("t000").unwrap().attempts[0].pid.unwrap();
    assert!(
        environ_names_node(pid),
        "a fresh interpreter: its own environ"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_server_that_dies_mid_run_fails_the_attempt_and_fresh_interpreters_take_over() {
    let space = Space::new();
    space.write(
        "killer.py",
        r#"
import os, signal, time, orch
ctx = orch.start()
if ctx.attempt == 1:
    os.kill(os.getppid(), signal.SIGKILL)  # the fork server
    time.sleep(60)
orch.output({"ppid": os.getppid()})
"#,
    );
    space.write("who.py", WHO);
    let mut wf = space.workflow("server_dies");
    wf.node("killer", Task::python("killer.py").retries(1));
    wf.node("after", Task::python("who.py"));
    wf.edge("killer", "after");
    let started = std::time::Instant::now();
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert!(started.elapsed() < Duration::from_secs(30), "no wait");
    let killer = ex.node("killer").unwrap();
    assert_eq!(killer.attempts.len(), 2);
    let first = &killer.attempts[0];
    assert!(
        first
            .error
            .as_deref()
            .unwrap()
            .contains("fork server stopped"),
        "{first:?}"
    );
    assert!(
        !alive(first.pid.unwrap()),
        "the orphaned attempt was killed"
    );
    assert!(
        !forked(&ex, "killer") && !forked(&ex, "after"),
        "fresh from then on"
    );
}

/// Position of the first event of `run` that `pick` accepts.
fn event_seq(space: &Space, run: &str, what: &str, pick: impl Fn(&orch::EventKind) -> bool) -> u64 {
    space
        .store()
        .events(run, None)
        .unwrap()
        .iter()
        .find(|e| pick(&e.kind))
        .unwrap_or_else(|| panic!("no event: {what}"))
        .seq
}

#[test]
fn a_slow_preload_does_not_hold_up_the_rest_of_the_run() {
    let space = Space::new();
    // The server's import of this takes seconds.
    space.write("slowmod.py", "import time\ntime.sleep(5)\nSLOW = True\n");
    space.write(
        "py.py",
        r#"
import os, sys, orch
was_loaded = "slowmod" in sys.modules
orch.start()
orch.output({"was_loaded": was_loaded, "ppid": os.getppid()})
"#,
    );
    let mut wf = space.workflow("slow_preload");
    wf.python_preload(["slowmod"]);
    wf.max_parallel(2);
    // The Python node comes first, so the old code blocked on the server
    // before the command even started.
    wf.node("py", Task::python("py.py"));
    // Its first attempt sleeps past its 1 s timeout; its retry succeeds.
    wf.node(
        "slow",
        Task::command([
            "sh",
            "-c",
            "[ -e once ] && exit 0; touch once; exec sleep 30",
        ])
        .timeout(Duration::from_secs(1))
        .retries(1),
    );
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let slow = ex.node("slow").unwrap();
    assert_eq!(slow.attempts.len(), 2);
    assert_eq!(slow.attempts[0].outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(slow.attempts[1].outcome, Some(AttemptOutcome::Succeeded));

    // The timeout fired, and the retry ran, while the server was still
    // importing: both before the Python node (which waits for the server)
    // started.
    let retried = event_seq(
        &space,
        &ex.run,
        "slow's retry ended",
        |k| matches!(k, orch::EventKind::AttemptFinished { node, attempt: 2, .. } if node == "slow"),
    );
    let py_started = event_seq(
        &space,
        &ex.run,
        "py started",
        |k| matches!(k, orch::EventKind::AttemptStarted { node, .. } if node == "py"),
    );
    assert!(
        retried < py_started,
        "the run went on while the server preloaded ({retried} < {py_started})"
    );
    // And the Python node still forked from the preloaded server.
    assert!(forked(&ex, "py"), "it waited for the server, then forked");
    assert_eq!(
        ex.node("py").unwrap().output.clone().unwrap()["was_loaded"],
        true
    );
}

#[test]
fn a_server_that_stalls_on_a_fork_is_given_up_on_quickly() {
    let space = Space::new();
    // The server takes 3 s per fork (a healthy one takes milliseconds).
    space.write(
        "stall.py",
        "import os, time\n_fork = os.fork\n\ndef slow_fork():\n    time.sleep(3)\n    return _fork()\n\nos.fork = slow_fork\n",
    );
    space.write(
        "once.py",
        r#"
import os, orch
with open("pids", "a") as f:
    f.write(f"{os.getpid()}\n")
ctx = orch.start()
with open("ran", "a") as f:
    f.write(f"{ctx.node} {os.getppid()}\n")
"#,
    );
    let mut wf = space.workflow("stall");
    wf.python_preload(["stall"]);
    wf.node("a", Task::python("once.py"));
    // Long enough for the stalled fork to answer while the run goes on.
    wf.node("wait", Task::command(["sleep", "5"]));
    wf.node("b", Task::python("once.py"));
    wf.edge("a", "wait");
    wf.edge("wait", "b");
    let (outcome, _) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    // Each node ran once, in a fresh interpreter: `a` after its fork went
    // unanswered for a second, `b` because the server was given up on.
    let me = std::process::id().to_string();
    let ran = std::fs::read_to_string(space.path().join("ran")).unwrap();
    assert_eq!(ran, format!("a {me}\nb {me}\n"));
    // The fork that answered late was killed, whatever it had reached.
    let pids = std::fs::read_to_string(space.path().join("pids")).unwrap();
    for pid in pids.lines() {
        assert!(!alive(pid.parse().unwrap()), "{pid} still runs");
    }
}
