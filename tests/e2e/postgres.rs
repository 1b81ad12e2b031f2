//! The engine on PostgreSQL, end to end: a workflow of real processes
//! (Python and commands) runs to its end with its history, views and logs
//! in a throwaway cluster; an engine killed with SIGKILL mid-run is taken
//! over by another process's engine, which finishes the run with every
//! node succeeding once. These tests fail, saying what is missing, when
//! PostgreSQL's server binaries are not installed.

use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use orch::engine::{Engine, TakeoverKind};
use orch::store::{PgStore, PgTestCluster};
use orch::{AttemptOutcome, NodeState, RunStatus, Store, Task};

use crate::util::*;

/// One cluster for the whole test binary, a database per test; stopped
/// when the process exits.
pub(crate) fn cluster() -> &'static PgTestCluster {
    static CLUSTER: OnceLock<PgTestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = PgTestCluster::start().unwrap_or_else(|e| panic!("PostgreSQL tests: {e}"));
        extern "C" fn stop() {
            if let Some(c) = CLUSTER.get() {
                c.stop();
            }
        }
        // SAFETY: registers a plain function; it runs once at exit.
        unsafe { libc::atexit(stop) };
        c
    })
}

/// The export of a run from PostgreSQL, checked against a rebuild from
/// its history alone.
pub(crate) fn export(store: &dyn Store, run: &str) -> orch::RunExport {
    let live = store.export(run).expect("export");
    let rebuilt = store.replay(run, None).expect("replay").export();
    assert_eq!(
        rebuilt, live,
        "the views differ from the fold of the history"
    );
    store.integrity_check().expect("integrity");
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_of_real_processes_runs_on_postgres() {
    let started = Instant::now();
    let url = cluster().new_database().unwrap();
    let space = Space::new();
    space.write(
        "double.py",
        "import orch\nctx = orch.start()\nprint('doubling', ctx.inputs['x'])\norch.output({'x': ctx.inputs['x'] * 2})\n",
    );
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    let engine = Engine::new(store.clone(), space.path().join(".orch"));
    let mut wf = space.workflow("pg-e2e");
    wf.live_picture(false);
    wf.node("double", Task::python("double.py")).input("x", 21);
    for i in 0..4 {
        let n = format!("echo{i}");
        wf.node(
            &n,
            Task::command(["sh", "-c", &format!("echo line {i}; echo err {i} >&2")]),
        );
        wf.edge("double", &n);
    }
    wf.node("last", Task::command(["true"]))
        .input("got", orch::output("double"));
    for i in 0..4 {
        wf.edge(format!("echo{i}"), "last");
    }
    let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
    let run = handle.id().to_string();
    let outcome = handle.wait().await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ex = export(store.as_ref(), &run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.nodes.len(), 6);
    assert_each_succeeded_once(&ex, "on PostgreSQL");
    assert_eq!(
        ex.node("double").unwrap().output,
        Some(serde_json::json!({"x": 42}))
    );
    let logs = store.logs(&run, "echo2", None).unwrap();
    let texts: Vec<&str> = logs.iter().map(|l| l.text.as_str()).collect();
    assert!(
        texts.contains(&"line 2") && texts.contains(&"err 2"),
        "{texts:?}"
    );
    assert_eq!(store.resolve_run("latest").unwrap(), run);
    assert_eq!(store.runs().unwrap().len(), 1);
    eprintln!("a workflow on PostgreSQL: {:?}", started.elapsed());
}

/// The child of [`a_killed_engine_is_taken_over_from_another_process`]:
/// runs a chain of sleeping commands on the database its parent names,
/// until the parent kills it. Ignored unless the parent starts it.
#[test]
#[ignore = "started by a_killed_engine_is_taken_over_from_another_process"]
fn pg_child_engine() {
    let Ok(url) = std::env::var("ORCH_TEST_PG_URL") else {
        return;
    };
    let dir = std::env::var("ORCH_TEST_PG_DIR").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
        let engine = Engine::new(store, format!("{dir}/.orch"));
        let mut wf = orch::Workflow::new("pg-chain");
        wf.dir(&dir);
        wf.live_picture(false);
        for i in 0..4 {
            let n = format!("t{i}");
            wf.node(&n, Task::command(["sleep", "0.5"]));
            if i > 0 {
                wf.edge(format!("t{}", i - 1), &n);
            }
        }
        let handle = engine.start(wf.definition(), wf.options()).await.unwrap();
        let _ = handle.wait().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_is_taken_over_from_another_process() {
    let started = Instant::now();
    let url = cluster().new_database().unwrap();
    let space = Space::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "postgres::pg_child_engine",
            "--ignored",
            "--nocapture",
        ])
        .env("ORCH_TEST_PG_URL", &url)
        .env("ORCH_TEST_PG_DIR", space.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    // Until the second node's attempt runs (its start is committed).
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        assert!(
            Instant::now() < deadline,
            "the child's run never reached t1"
        );
        if let Ok(run) = store.resolve_run("latest") {
            let ex = store.export(&run).unwrap();
            let t1 = ex.node("t1").unwrap();
            if t1.state == NodeState::Running && !t1.attempts.is_empty() {
                break run;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    kill9(&mut child);
    assert_eq!(store.export(&run).unwrap().status, RunStatus::Running);
    // The owner is proven dead (its pid and start time are gone): taken
    // over at once, without waiting for the lease.
    let engine = Engine::new(store.clone(), space.path().join(".orch"));
    let handle = engine
        .take_over(&run, TakeoverKind::Resume, false, None)
        .await
        .unwrap();
    let outcome = handle.wait().await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ex = export(store.as_ref(), &run);
    assert_each_succeeded_once(&ex, "after the takeover");
    let t1 = ex.node("t1").unwrap();
    assert_eq!(t1.attempts.len(), 2, "{:?}", t1.attempts);
    assert_eq!(t1.attempts[0].outcome, Some(AttemptOutcome::Killed));
    assert_eq!(
        ex.node("t0").unwrap().attempts.len(),
        1,
        "t0 never ran again"
    );
    assert_eq!(store.owner(&run).unwrap().epoch, 2);
    eprintln!(
        "kill -9 and takeover on PostgreSQL: {:?}",
        started.elapsed()
    );
}
