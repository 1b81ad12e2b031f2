//! The engine end to end: one engine drives a hundred runs at once in one
//! process, each ending exactly as it ends alone; and the leases that
//! decide who drives a run when orchestrators die, race for it, stall, or
//! leave a recycled pid behind.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::engine::{Engine, Observer};
use orch::store::Signal;
use orch::{
    AttemptOutcome, Event, EventKind, Failure, NodeState, RunExport, RunOutcome, RunState,
    RunStatus, SqliteStore, Store, Task, Workflow,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::util::*;

#[orch::task]
fn engine_triple(x: u64) -> u64 {
    x * 3
}

#[orch::task]
fn engine_describe(n: u64, label: String) -> String {
    format!("{label}: {n}")
}

#[orch::task(retries = 1)]
fn engine_refuse(n: u64) -> Result<u64, Failure> {
    Err(Failure::retryable(format!("refusing {n}")))
}

/// How many runs one engine drives at once.
const RUNS: usize = 100;

/// The kinds of workflow mixed in the concurrent test.
const KINDS: usize = 6;

fn write_scripts(space: &Space) {
    space.write(
        "double.py",
        "import orch\nctx = orch.start()\norch.output({'x': ctx.inputs['x'] * 2})\n",
    );
    space.write(
        "gather.py",
        "import orch\nctx = orch.start()\nprint('gathering', sorted(ctx.upstream))\norch.output({'i': ctx.inputs['i'], 'upstream': ctx.upstream})\n",
    );
    space.write(
        "broken.py",
        "import sys, orch\norch.start()\nprint('breaking', file=sys.stderr)\nraise SystemExit(3)\n",
    );
}

/// Workflow `i` of the mix, with its scripts in `space`: Python tasks,
/// native tasks, commands that fail (with and without retries), and input
/// nodes. Each run takes one attempt at a time, so its history is the same
/// whenever it runs.
fn mixed(space: &Space, i: usize) -> Workflow {
    let mut wf = space.workflow(&format!("mix-{i:03}"));
    wf.live_picture(false);
    let n = i as u64;
    let odd = (i / KINDS) % 2 == 1;
    match i % KINDS {
        // Python: a chain that passes an output on.
        0 => {
            wf.node("double", Task::python("double.py")).input("x", n);
            wf.node("gather", Task::python("gather.py")).input("i", n);
            wf.edge("double", "gather");
        }
        // Native tasks defined in this test binary.
        1 => {
            let t = wf.add_as("triple", engine_triple::call(n));
            wf.add_as(
                "describe",
                engine_describe::call(t.output(), format!("run {i}")),
            );
        }
        // A failure without retries: what follows never starts.
        2 => {
            wf.node("prepare", Task::command(["sh", "-c", "echo prepared"]));
            if odd {
                wf.node("boom", Task::python("broken.py"));
            } else {
                wf.node(
                    "boom",
                    Task::command(["sh", "-c", "echo about to fail >&2; exit 1"]),
                );
            }
            wf.node("never", Task::command(["true"]));
            wf.edge("prepare", "boom");
            wf.edge("boom", "never");
        }
        // Retries: one node succeeds at its second attempt, the next fails
        // every attempt.
        3 => {
            wf.node(
                "flaky",
                Task::command(["sh", "-c", "test \"$ORCH_ATTEMPT\" -ge 2"])
                    .retries(2)
                    .retry_delay(Duration::from_millis(5)),
            );
            if odd {
                wf.add_as("doomed", engine_refuse::call(n));
            } else {
                wf.node(
                    "doomed",
                    Task::command(["sh", "-c", "exit 1"])
                        .retries(1)
                        .retry_delay(Duration::from_millis(5)),
                );
            }
            wf.edge("flaky", "doomed");
        }
        // One input between two tasks.
        4 => {
            wf.add_as("prepare", engine_triple::call(n));
            wf.node("approve", Task::input());
            wf.node("gather", Task::python("gather.py")).input("i", n);
            wf.edge("prepare", "approve");
            wf.edge("approve", "gather");
        }
        // Two inputs in a row.
        _ => {
            wf.node("first", Task::input());
            wf.node("between", Task::command(["true"]));
            wf.node("second", Task::input());
            wf.node("gather", Task::python("gather.py")).input("i", n);
            wf.edge("first", "between");
            wf.edge("between", "second");
            wf.edge("second", "gather");
        }
    }
    wf
}

/// The input nodes of workflow `i` of the mix.
fn inputs_of(i: usize) -> usize {
    match i % KINDS {
        4 => 1,
        5 => 2,
        _ => 0,
    }
}

/// The value delivered to an input node: the same for a run whenever it
/// runs.
fn answer(workflow: &str, node: &str) -> Value {
    json!({"workflow": workflow, "node": node})
}

/// Sees input nodes start waiting and hands them to the task that answers.
struct Waiting(mpsc::UnboundedSender<(String, String, Value)>);

impl Observer for Waiting {
    fn committed(&self, state: &RunState, events: &[Event]) {
        for e in events {
            if let EventKind::NodeState {
                node,
                state: NodeState::Waiting,
            } = &e.kind
            {
                let value = answer(&state.workflow, node);
                let _ = self.0.send((state.run.clone(), node.clone(), value));
            }
        }
    }
}

/// Starts every workflow on `engine`; once all are started, `ready` is
/// called with the run ids, and then every input node is answered (with
/// [`Engine::signal`]) as it is recorded waiting. Waits for every run;
/// returns the outcomes in order and how many inputs were delivered.
async fn drive(
    engine: &Engine,
    wfs: &[Workflow],
    ready: impl FnOnce(&[String]),
) -> (Vec<RunOutcome>, usize) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    engine.observe(Arc::new(Waiting(tx)));
    let (open, gate) = oneshot::channel::<()>();
    let delivered = Arc::new(AtomicUsize::new(0));
    let answers = {
        let engine = engine.clone();
        let delivered = delivered.clone();
        tokio::spawn(async move {
            gate.await.expect("the gate opens");
            while let Some((run, node, value)) = rx.recv().await {
                engine
                    .signal(&run, Signal::Input { node, value })
                    .await
                    .expect("the input is delivered");
                delivered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut handles = Vec::new();
    for wf in wfs {
        handles.push(
            engine
                .start(wf.definition(), wf.options())
                .await
                .expect("the run starts"),
        );
    }
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
    ready(&ids);
    open.send(()).expect("the answering task waits");
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(
            h.wait()
                .await
                .expect("the engine drives the run to its end"),
        );
    }
    answers.abort();
    (outcomes, delivered.load(Ordering::SeqCst))
}

/// An export without what differs from run to run: ids, times, pids.
fn comparable(ex: &RunExport) -> RunExport {
    let mut ex = ex.clone();
    ex.run.clear();
    ex.created_at = None;
    ex.finished_at = None;
    ex.orchestrator_pid = None;
    for n in &mut ex.nodes {
        n.started_at = None;
        n.finished_at = None;
        for a in &mut n.attempts {
            a.pid = a.pid.map(|_| 0);
            a.started_at.clear();
            a.finished_at = a.finished_at.as_ref().map(|_| String::new());
        }
    }
    ex
}

/// A history without times, pids and the run's folder: what happened, in
/// order.
fn comparable_events(events: &[Event]) -> Vec<(u64, EventKind)> {
    events
        .iter()
        .map(|e| {
            let mut kind = e.kind.clone();
            match &mut kind {
                EventKind::RunStarted {
                    orchestrator_pid,
                    config,
                    ..
                } => {
                    *orchestrator_pid = 0;
                    *config = orch::model::RunConfig::new("", "");
                }
                EventKind::RunResumed { orchestrator_pid } => *orchestrator_pid = 0,
                EventKind::AttemptStarted { pid, .. } => *pid = pid.map(|_| 0),
                _ => {}
            }
            (e.seq, kind)
        })
        .collect()
}

fn events(space: &Space, run: &str) -> Vec<Event> {
    space.store().events(run, None).expect("events")
}

/// 100 runs of mixed workflows on one engine in one process, each compared
/// with the same workflow run alone on a fresh engine and database: same
/// status, nodes, outputs, edges and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_drives_a_hundred_runs_each_as_it_runs_alone() {
    let space = Space::new();
    write_scripts(&space);
    let wfs: Vec<Workflow> = (0..RUNS).map(|i| mixed(&space, i)).collect();
    let engine = Engine::open(space.db()).expect("engine");
    let (outcomes, delivered) = drive(&engine, &wfs, |ids| {
        // The runs waiting for input cannot end before the answers start:
        // all of them are driven at once here.
        let hosted: BTreeSet<String> = engine.hosted().into_iter().collect();
        for (i, id) in ids.iter().enumerate() {
            if inputs_of(i) > 0 {
                assert!(hosted.contains(id), "run {i} ({id}) is hosted");
            }
        }
    })
    .await;
    let want_inputs: usize = (0..RUNS).map(inputs_of).sum();
    assert_eq!(delivered, want_inputs, "every input node was answered once");
    assert!(engine.hosted().is_empty(), "every run was let go");

    let ids: BTreeSet<&str> = outcomes.iter().map(|o| o.run.as_str()).collect();
    assert_eq!(ids.len(), RUNS, "one run each");
    for (i, outcome) in outcomes.iter().enumerate() {
        let want = match i % KINDS {
            2 | 3 => RunStatus::Failed,
            _ => RunStatus::Succeeded,
        };
        assert_eq!(outcome.status, want, "run {i}: {:?}", outcome.reason);
        let owner = space.store().owner(&outcome.run).expect("owner");
        assert_eq!(owner.owner, None, "run {i} was released");
    }

    // What each kind did, as recorded.
    for (i, outcome) in outcomes.iter().enumerate() {
        let ex = space.export(&outcome.run);
        let out = |node: &str| ex.node(node).and_then(|n| n.output.clone());
        let attempts = |node: &str| ex.node(node).map_or(0, |n| n.attempts.len());
        let (n, wf) = (i as u64, format!("mix-{i:03}"));
        match i % KINDS {
            0 => {
                assert_eq!(out("double"), Some(json!({"x": n * 2})), "run {i}");
                assert_eq!(
                    out("gather"),
                    Some(json!({"i": n, "upstream": {"double": {"x": n * 2}}})),
                    "run {i}"
                );
            }
            1 => assert_eq!(
                out("describe"),
                Some(json!(format!("run {i}: {}", n * 3))),
                "run {i}"
            ),
            2 => {
                assert_eq!(attempts("boom"), 1, "run {i}");
                assert_eq!(attempts("never"), 0, "run {i}");
            }
            3 => {
                assert_eq!(out("flaky"), Some(Value::Null), "run {i}");
                assert_eq!(attempts("flaky"), 2, "run {i}");
                assert_eq!(attempts("doomed"), 2, "run {i}");
                assert_eq!(
                    ex.node("doomed").unwrap().state,
                    NodeState::Failed,
                    "run {i}"
                );
            }
            4 => {
                assert_eq!(out("approve"), Some(answer(&wf, "approve")), "run {i}");
                assert_eq!(
                    out("gather").unwrap()["upstream"]["approve"],
                    answer(&wf, "approve"),
                    "run {i}"
                );
            }
            _ => {
                assert_eq!(out("first"), Some(answer(&wf, "first")), "run {i}");
                assert_eq!(out("second"), Some(answer(&wf, "second")), "run {i}");
            }
        }
    }

    // Each workflow alone, on a fresh engine and database.
    for (i, together) in outcomes.iter().enumerate() {
        let alone_space = Space::new();
        write_scripts(&alone_space);
        let wf = mixed(&alone_space, i);
        let alone_engine = Engine::open(alone_space.db()).expect("engine");
        let (alone, delivered) = drive(&alone_engine, &[wf], |_| {}).await;
        assert_eq!(delivered, inputs_of(i), "run {i} alone");
        let alone = &alone[0];
        assert_eq!(alone.status, together.status, "run {i}");
        assert_eq!(alone.reason, together.reason, "run {i}");
        let (ex_together, ex_alone) = (space.export(&together.run), alone_space.export(&alone.run));
        assert_eq!(
            comparable(&ex_together),
            comparable(&ex_alone),
            "run {i}: the run driven among {RUNS} ends as it ends alone"
        );
        assert_eq!(
            comparable_events(&events(&space, &together.run)),
            comparable_events(&events(&alone_space, &alone.run)),
            "run {i}: the same history"
        );
    }
}

/// Waits up to 60 s for one of the children to exit; returns its index.
fn first_to_exit(children: &mut [Child]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if c.try_wait().expect("try_wait").is_some() {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for an exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `orch` with this space's database, started (stdout and stderr piped).
fn spawn_cli(space: &Space, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orch starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn attempts_started(events: &[Event], node: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptStarted { node: n, .. } if n == node))
        .count()
}

fn resumed_by(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RunResumed { orchestrator_pid } => Some(orchestrator_pid),
            _ => None,
        })
        .collect()
}

/// Two `orch resume` of a run whose orchestrator died, started together:
/// one takes the run and ends it, the other is refused, naming it.
#[test]
fn two_resumes_race_and_exactly_one_takes_the_run() {
    let space = chain_space();
    let mut dead = start_chain_with(
        &space,
        3,
        20,
        &[("ORCH_FAULT", "after_commit:t001")],
        &["--wait-for-input"],
    );
    let status = dead.wait().expect("the orchestrator ends");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the orchestrator died"
    );
    let run = space.store().resolve_run("latest").unwrap();

    let mut racers = vec![
        spawn_cli(&space, &["resume", &run]),
        spawn_cli(&space, &["resume", &run]),
    ];
    // The winner waits for `approve`, so the loser is the first to exit.
    let loser = first_to_exit(&mut racers);
    let winner = racers.remove(1 - loser);
    let lost = racers.pop().unwrap().wait_with_output().unwrap();
    assert_eq!(lost.status.code(), Some(1), "{}", stderr(&lost));
    let why = stderr(&lost);
    assert!(
        why.contains("is owned elsewhere") && why.contains(&format!("pid {}", winner.id())),
        "the refusal names the owner (pid {}): {why}",
        winner.id()
    );

    wait_for(&space, "approve to wait", |ex| {
        ex.node("approve")
            .is_some_and(|n| n.state == NodeState::Waiting)
    });
    let given = space.cli(&["input", &run, "approve", r#""ok""#]);
    assert!(given.status.success(), "{}", stderr(&given));
    let winner_pid = winner.id();
    let won = winner.wait_with_output().unwrap();
    assert!(won.status.success(), "{}", stderr(&won));

    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.orchestrator_pid, Some(winner_pid));
    let history = events(&space, &run);
    assert_eq!(
        resumed_by(&history),
        [winner_pid],
        "one takeover, the winner's"
    );
    for node in ["t000", "t001", "t002", "approve"] {
        assert_eq!(
            attempts_started(&history, node),
            1,
            "`{node}` ran exactly once"
        );
        assert_eq!(ex.node(node).unwrap().state, NodeState::Succeeded);
    }
    assert_eq!(ex.node("approve").unwrap().output, Some(json!("ok")));
}

/// Sends `signal` to a child process.
fn send(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "signal {signal} sent");
}

/// An orchestrator stopped with SIGSTOP loses its run to `orch resume
/// --force`; continued, it finds the run taken over, writes nothing more
/// and exits with an error saying so.
#[test]
fn a_stale_owner_is_fenced_after_a_forced_takeover() {
    let space = chain_space();
    let a_err = space.path().join("a.stderr");
    let mut a = Command::new(example_path("durable_chain"))
        .args(["--tasks", "3", "--sleep-ms", "1500"])
        .args(["--dir", space.path().to_str().unwrap()])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&a_err).unwrap())
        .spawn()
        .expect("durable_chain starts");
    let task = running_pid(&space, "t000");
    let run = space.store().resolve_run("latest").unwrap();
    let owner = space.store().owner(&run).unwrap();
    assert_eq!(owner.owner.as_ref().map(|o| o.pid), Some(a.id()));
    assert_eq!(owner.epoch, 1);
    send(&a, libc::SIGSTOP);

    // Alive and holding its lease: refused without force.
    let refused = space.cli(&["resume", &run]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is owned elsewhere")
            && stderr(&refused).contains(&format!("pid {}", a.id())),
        "{}",
        stderr(&refused)
    );
    let b = spawn_cli(&space, &["resume", &run, "--force"]);
    let b_pid = b.id();
    let b_out = b.wait_with_output().unwrap();
    assert!(b_out.status.success(), "{}", stderr(&b_out));
    assert!(!alive(task), "the takeover stopped A's attempt");
    let after_b = events(&space, &run);
    let logs = |space: &Space| -> Vec<String> {
        ["t000", "t001", "t002"]
            .iter()
            .map(|node| logs_text(space, &run, node))
            .collect()
    };
    let logs_after_b = logs(&space);

    send(&a, libc::SIGCONT);
    let a_status = a.wait().expect("A ends");
    let a_said = std::fs::read_to_string(&a_err).unwrap();
    assert_eq!(a_status.code(), Some(1), "A fails: {a_said}");
    assert!(
        a_said.contains("was taken over while this engine drove it"),
        "A says why: {a_said}"
    );

    // A wrote nothing after B took the run over.
    let history = events(&space, &run);
    assert_eq!(history, after_b, "nothing written after B ended");
    assert_eq!(logs(&space), logs_after_b, "no log line either");
    assert_eq!(resumed_by(&history), [b_pid]);
    let resumed_at = history
        .iter()
        .position(|e| matches!(e.kind, EventKind::RunResumed { .. }))
        .unwrap();
    let statuses: Vec<RunStatus> = history[resumed_at..]
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RunStatus { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [RunStatus::Succeeded],
        "one status after the takeover"
    );
    assert!(matches!(
        history.last().unwrap().kind,
        EventKind::RunStatus {
            status: RunStatus::Succeeded,
            ..
        }
    ));
    // B ended the attempt A had running and ran the node again.
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.orchestrator_pid, Some(b_pid));
    let t0 = ex.node("t000").unwrap();
    assert_eq!(t0.attempts.len(), 2, "{:?}", t0.attempts);
    assert_eq!(t0.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert!(t0.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("interrupted"));
    assert_each_succeeded_once(&ex, "after the forced takeover");
    let owner = space.store().owner(&run).unwrap();
    assert_eq!(owner.owner, None, "B released the run");
    assert_eq!(owner.epoch, 2, "one takeover");
}

/// A `sleep` child, killed and reaped when dropped.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rewrites the recorded owner of `run` (its JSON, through `edit`) and
/// makes its lease hold ten more minutes.
fn rewrite_owner(space: &Space, run: &str, edit: impl FnOnce(&mut Value)) {
    let db = rusqlite::Connection::open(space.db()).unwrap();
    let text: String = db
        .query_row("SELECT owner FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .unwrap();
    let mut owner: Value = serde_json::from_str(&text).unwrap();
    edit(&mut owner);
    let changed = db
        .execute(
            "UPDATE runs SET owner = ?2,
             lease_until = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + 600000
             WHERE id = ?1",
            rusqlite::params![run, owner.to_string()],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// An owner's pid now held by another process (started at another time)
/// proves the owner dead: the resume goes ahead without force. The same
/// pid with that process's own start time is a live owner: refused.
#[test]
fn a_recycled_pid_does_not_block_a_resume() {
    let space = chain_space();
    let mut dead = start_chain_with(&space, 4, 20, &[("ORCH_FAULT", "after_commit:t001")], &[]);
    let status = dead.wait().expect("the orchestrator ends");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the orchestrator died"
    );
    let run = space.store().resolve_run("latest").unwrap();
    let recorded = space.store().owner(&run).unwrap().owner.expect("owned");
    assert_eq!(recorded.pid, dead.id());
    let old_start = recorded.started.expect("a start time was recorded");

    let sleeper = Sleeper(
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts"),
    );
    let pid = sleeper.0.id();
    let live_start = orch::host::process_start(pid).expect("sleep runs");
    assert_ne!(live_start, old_start);
    let before = events(&space, &run);

    // The pid with its own start time: a live owner, refused.
    rewrite_owner(&space, &run, |o| {
        o["pid"] = json!(pid);
        o["started"] = json!(live_start);
    });
    let refused = space.cli(&["resume", "latest"]);
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(
        why.contains("is owned elsewhere") && why.contains(&format!("pid {pid}")),
        "{why}"
    );
    assert_eq!(events(&space, &run), before, "the refusal wrote nothing");

    // The pid with the dead orchestrator's start time: recycled.
    rewrite_owner(&space, &run, |o| {
        o["pid"] = json!(pid);
        o["started"] = json!(old_start);
    });
    let resumed = space.cli(&["resume", "latest"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(alive(pid), "the process holding the pid was left alone");
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let history = events(&space, &run);
    assert_eq!(resumed_by(&history).len(), 1);
    for n in &ex.nodes {
        assert_eq!(n.attempts.len(), 1, "`{}` ran once", n.id);
    }
    drop(sleeper);
}

/// Polls `run`'s export in `space` until `done` holds (fails after 60 s).
fn wait_run(space: &Space, run: &str, what: &str, done: impl Fn(&RunExport) -> bool) -> RunExport {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ex) = SqliteStore::open_existing(space.db())
            .ok()
            .and_then(|s| s.export(run).ok())
        {
            if done(&ex) {
                return ex;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `orch pause`, `orch input` and `orch unpause` from other processes
/// reach the right one of the runs an engine drives, through the store.
#[test]
fn the_cli_steers_each_run_of_an_engine_through_the_store() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let space = Space::new();
    let engine = Engine::open(space.db()).expect("engine");
    let mut handles = Vec::new();
    for name in ["one", "two"] {
        let mut wf = space.workflow(name);
        wf.live_picture(false);
        wf.node("approve", Task::input());
        wf.node("after", Task::command(["true"]));
        wf.edge("approve", "after");
        let started = rt.block_on(engine.start(wf.definition(), wf.options()));
        handles.push(started.expect("the run starts"));
    }
    let two = handles.pop().unwrap();
    let one = handles.pop().unwrap();
    let (r1, r2) = (one.id().to_string(), two.id().to_string());
    let cli = |args: &[&str]| {
        let out = space.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for run in [&r1, &r2] {
        wait_run(&space, run, "approve to wait", |ex| {
            ex.node("approve")
                .is_some_and(|n| n.state == NodeState::Waiting)
        });
    }

    let said = cli(&["pause", &r1]);
    assert!(
        !said.contains("no engine drives it"),
        "the engine is alive: {said}"
    );
    wait_run(&space, &r1, "the pause", |ex| {
        ex.status == RunStatus::Paused
    });
    cli(&["input", &r2, "approve", r#""for two""#]);
    cli(&["input", &r1, "approve", r#""for one""#]);
    let done = rt.block_on(two.wait()).expect("two ends");
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.reason);
    let ex2 = space.export(&r2);
    assert_eq!(ex2.node("approve").unwrap().output, Some(json!("for two")));

    // The paused run took its input but starts nothing.
    let held = wait_run(&space, &r1, "one's input", |ex| {
        ex.node("approve")
            .is_some_and(|n| n.state == NodeState::Succeeded)
    });
    assert_eq!(held.status, RunStatus::Paused);
    assert_eq!(held.node("approve").unwrap().output, Some(json!("for one")));
    assert!(held.node("after").unwrap().attempts.is_empty());
    cli(&["unpause", &r1]);
    let done = rt.block_on(one.wait()).expect("one ends");
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.reason);

    // In order: paused, the input, running again, then `after` started.
    let history = events(&space, &r1);
    let at = |what: &dyn Fn(&EventKind) -> bool| {
        history
            .iter()
            .position(|e| what(&e.kind))
            .expect("recorded")
    };
    let paused = at(&|k| {
        matches!(
            k,
            EventKind::RunStatus {
                status: RunStatus::Paused,
                ..
            }
        )
    });
    let input = at(&|k| matches!(k, EventKind::Output { node, .. } if node == "approve"));
    let unpaused = at(&|k| {
        matches!(
            k,
            EventKind::RunStatus {
                status: RunStatus::Running,
                ..
            }
        )
    });
    let after = at(&|k| matches!(k, EventKind::AttemptStarted { node, .. } if node == "after"));
    assert!(
        paused < input && input < unpaused && unpaused < after,
        "{paused} < {input} < {unpaused} < {after}"
    );
}

/// Follows the logs of every run: each line as its task writes it, before
/// its attempt ends; creates `release` when it sees the line `ready`.
struct Follower {
    lines: std::sync::Mutex<Vec<(String, String)>>,
    release: std::path::PathBuf,
}

impl Observer for Follower {
    fn committed(&self, _state: &RunState, _events: &[Event]) {}

    fn log(&self, run: &str, line: &orch::history::LogLine) {
        self.lines
            .lock()
            .unwrap()
            .push((run.to_string(), line.text.clone()));
        if line.text == "ready" {
            std::fs::write(&self.release, "go").unwrap();
        }
    }
}

/// A task's log lines reach an observer while the task still runs: the
/// task prints `ready`, then waits for a file that only the observer,
/// on seeing that line, creates (the task gives up after 60 s, which
/// would fail the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_reach_an_observer_while_the_task_runs() {
    let space = Space::new();
    let release = space.path().join("release");
    space.write(
        "wait.py",
        &format!(
            "import os, time, orch\nctx = orch.start()\nprint('ready', flush=True)\n\
             deadline = time.time() + 60\n\
             while not os.path.exists({release:?}):\n    \
                 if time.time() > deadline:\n        raise SystemExit('nobody followed the log')\n    \
                 time.sleep(0.01)\n\
             print('released')\norch.output('done')\n",
            release = release.display().to_string()
        ),
    );
    let engine = Engine::open(space.db()).unwrap();
    let follower = Arc::new(Follower {
        lines: Default::default(),
        release: release.clone(),
    });
    engine.observe(follower.clone());
    let mut wf = space.workflow("follow");
    wf.node("wait", Task::python("wait.py"));
    let outcome = engine
        .start(wf.definition(), wf.options())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let lines = follower.lines.lock().unwrap().clone();
    let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["ready", "released"], "in order, each once");
    assert!(lines.iter().all(|(run, _)| *run == outcome.run));
    // And the history keeps them, as before.
    let logs = space.store().logs(&outcome.run, "wait", None).unwrap();
    let stored: Vec<&str> = logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(stored, ["ready", "released"]);
}

/// A value for input node `node`.
fn input(node: &str, value: Value) -> Signal {
    Signal::Input {
        node: node.into(),
        value,
    }
}

/// Waits for `node` of `run` to be in `state`, by the store's export.
async fn until_state(space: &Space, run: &str, node: &str, state: NodeState) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = space.store().export(run).unwrap();
        if now.node(node).is_some_and(|n| n.state == state) {
            return;
        }
        assert!(Instant::now() < deadline, "`{node}` never became {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restarting a node of a cancelled run runs the whole run on: the nodes
/// the cancel stopped go back to `pending` with it (they stayed
/// `cancelled`, and the run failed with "no node can start").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_a_cancelled_run_runs_the_nodes_the_cancel_stopped() {
    let space = Space::new();
    let mut wf = space.workflow("cancelled");
    wf.node("c", Task::command(["true"]));
    wf.node("ask", Task::input());
    wf.node("b", Task::command(["true"]))
        .input("got", orch::output("ask"));
    wf.live_picture(false);
    let engine = Engine::open(space.db()).unwrap();
    let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
    let run = handle.id().to_string();
    until_state(&space, &run, "ask", NodeState::Waiting).await;
    engine.signal(&run, Signal::Cancel).await.unwrap();
    let cancelled = handle.wait().await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let ex = space.export(&run);
    assert_eq!(ex.node("ask").unwrap().state, NodeState::Cancelled);
    assert_eq!(ex.node("b").unwrap().state, NodeState::Cancelled);

    let handle = engine
        .take_over(
            &run,
            orch::engine::TakeoverKind::Restart("c".into()),
            false,
            None,
        )
        .await
        .unwrap();
    until_state(&space, &run, "ask", NodeState::Waiting).await;
    engine
        .signal(&run, input("ask", json!("yes")))
        .await
        .unwrap();
    let outcome = handle.wait().await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ex = space.export(&run);
    assert_eq!(ex.node("b").unwrap().state, NodeState::Succeeded);
    assert_eq!(ex.node("c").unwrap().attempts.len(), 2, "c ran again");
}

/// The live picture of a run that waits for input shows the run as it
/// waits: the last committed event, not an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_picture_of_a_waiting_run_shows_its_last_event() {
    let space = Space::new();
    let mut wf = space.workflow("waits");
    for i in 0..20 {
        let node = format!("n{i:02}");
        wf.node(&node, Task::command(["true"]));
        if i > 0 {
            wf.edge(format!("n{:02}", i - 1), &node);
        }
    }
    wf.node("ask", Task::input());
    wf.edge("n19", "ask");
    let engine = Engine::open(space.db()).unwrap();
    let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
    let run = handle.id().to_string();
    until_state(&space, &run, "ask", NodeState::Waiting).await;
    let last = space.store().export(&run).unwrap().event;
    let picture = space.path().join("runs").join(&run).join("live.svg");
    let want = format!("· event {last}<");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let svg = std::fs::read_to_string(&picture).unwrap_or_default();
        if svg.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the picture stayed at an older event than {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.signal(&run, input("ask", json!(1))).await.unwrap();
    assert!(handle.wait().await.unwrap().succeeded());
}

/// An input that does not fit the type its node declares is refused at
/// delivery, not left to fail a later task: through the engine with the
/// type error; stored by another process (`orch input`), when the run
/// takes it, with the error in the node's log; the node waits on for a
/// value that fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_do_not_fit_the_declared_type_are_refused_at_delivery() {
    let space = Space::new();
    let mut wf = space.workflow("typed_input");
    let _: orch::Node<u64> = wf.node("ask", Task::input()).returns::<u64>();
    wf.node("after", Task::command(["true"]))
        .input("n", orch::output("ask"));
    wf.live_picture(false);
    let engine = Engine::open(space.db()).unwrap();
    let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
    let run = handle.id().to_string();
    until_state(&space, &run, "ask", NodeState::Waiting).await;

    let err = engine
        .signal(&run, input("ask", json!("seven")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not a `u64`") && err.contains("ask"),
        "{err}"
    );
    // Nor one nested past the limits (it could not be read back).
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let err = engine
        .signal(&run, input("ask", deep))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("64"), "the limit is named: {err}");

    // As `orch input` does: stored, checked when the run takes it.
    space
        .store()
        .request(&run, &input("ask", json!(-8)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs_text(&space, &run, "ask").contains("input refused") {
        assert!(
            Instant::now() < deadline,
            "the stored misfit was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logs_text(&space, &run, "ask").contains("is not a `u64`"));
    assert_eq!(
        space
            .store()
            .export(&run)
            .unwrap()
            .node("ask")
            .unwrap()
            .state,
        NodeState::Waiting,
        "the node waits on"
    );

    engine.signal(&run, input("ask", json!(8))).await.unwrap();
    let outcome = handle.wait().await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ex = space.export(&run);
    assert_eq!(ex.node("ask").unwrap().output, Some(json!(8)));
}

/// An engine does not take over a run it drives itself: the run goes on
/// untouched (a takeover used to fence the running loop off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_refuses_to_take_over_a_run_it_drives() {
    let space = Space::new();
    let mut wf = space.workflow("driven");
    wf.node("ask", Task::input());
    wf.live_picture(false);
    let engine = Engine::open(space.db()).unwrap();
    let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
    let run = handle.id().to_string();
    until_state(&space, &run, "ask", NodeState::Waiting).await;
    let before = space.store().owner(&run).unwrap();
    for kind in [
        orch::engine::TakeoverKind::Resume,
        orch::engine::TakeoverKind::Restart("ask".into()),
        orch::engine::TakeoverKind::Restart("no_such_node".into()),
    ] {
        let err = engine.take_over(&run, kind, true, None).await.unwrap_err();
        assert!(err.to_string().contains("drives the run now"), "{err}");
    }
    assert_eq!(
        space.store().owner(&run).unwrap(),
        before,
        "the lease is untouched"
    );
    engine.signal(&run, input("ask", json!(1))).await.unwrap();
    assert!(handle.wait().await.unwrap().succeeded());
}

/// The most events an observer was told of in one commit that ended an
/// attempt, and how many such commits it saw. (The registration's own
/// commit, every node made ready, is as large as the workflow.)
#[derive(Default)]
struct Commits {
    largest: AtomicUsize,
    count: AtomicUsize,
}

impl Observer for Commits {
    fn committed(&self, _state: &RunState, events: &[Event]) {
        if events
            .iter()
            .any(|e| matches!(e.kind, EventKind::AttemptFinished { .. }))
        {
            self.largest.fetch_max(events.len(), Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A run whose attempts report faster than it commits still commits in
/// bounded groups: the executor ends each attempt as it launches it, so a
/// report is always waiting, and no commit holds more than
/// `GROUP_MAX_EVENTS` events plus what one turn of the loop queues (a
/// report's events and those of the launches it frees, at most
/// `max_parallel` of them). (The group used to grow until the run ended:
/// its history held the registration alone until then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_never_goes_quiet_commits_in_bounded_groups() {
    const NODES: usize = 3_000;
    let space = Space::new();
    let engine = Engine::open(space.db()).unwrap();
    let commits = Arc::new(Commits::default());
    engine.observe(commits.clone());
    let mut wf = space.workflow("flood");
    for i in 0..NODES {
        wf.node(format!("n{i}"), Task::command(["true"]))
            .input("n", i);
    }
    wf.max_parallel(64).executor(Arc::new(Echo::default()));
    let outcome = engine
        .start(wf.definition(), wf.options())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let largest = commits.largest.load(Ordering::Relaxed);
    assert!(
        largest <= orch::engine::GROUP_MAX_EVENTS + 2 * 64 + 16,
        "a commit of {largest} events"
    );
    // Every attempt's end (and more), at most a group a commit.
    let count = commits.count.load(Ordering::Relaxed);
    assert!(
        count >= 2 * NODES / (orch::engine::GROUP_MAX_EVENTS + 2 * 64 + 16),
        "{count} commits"
    );
}
