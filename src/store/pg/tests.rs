//! The PostgreSQL store's tests: the conformance suite on a throwaway
//! cluster, and what only a shared database shows (two stores racing).
//! They fail, saying what is missing, when PostgreSQL's server binaries
//! are not installed.

use std::sync::{Arc, OnceLock};

use super::cluster::TestCluster;
use super::*;

/// One cluster for the tests of this binary (a database each), stopped
/// when the process exits (statics are never dropped).
fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let c = TestCluster::start().unwrap_or_else(|e| panic!("PostgreSQL tests: {e}"));
        // Stops the cluster when the test binary exits.
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

fn store() -> PgStore {
    let url = cluster().new_database().expect("a database");
    PgStore::connect(&url).expect("connect")
}

#[test]
fn conformance() {
    let started = std::time::Instant::now();
    crate::store::conformance::run(&mut || Box::new(store()));
    eprintln!("conformance on PostgreSQL: {:?}", started.elapsed());
}

#[test]
fn conformance_inside_a_runtime() {
    // The engine calls the store from its async tasks.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = store();
        assert!(s.runs().unwrap().is_empty());
        s.integrity_check().unwrap();
        // Dropped inside the runtime: its connections close off it.
        drop(s);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { assert!(store().runs().unwrap().is_empty()) });
}

#[test]
fn two_stores_on_one_database_fence_each_other() {
    let url = cluster().new_database().unwrap();
    let a = Arc::new(PgStore::connect(&url).unwrap());
    // A second engine starting on the same database: the schema is there.
    let b = Arc::new(PgStore::connect(&url).unwrap());
    let mut me = Owner::this_process();
    me.id = "engine-a".into();
    let mut other = Owner::this_process();
    other.id = "engine-b".into();
    let started = Event {
        seq: 1,
        at: crate::time::now(),
        kind: EventKind::RunStarted {
            workflow: "w".into(),
            orchestrator_pid: 1,
            config: crate::model::RunConfig::new("/tmp", "python3"),
        },
    };
    let lease = a
        .register(
            &me,
            Registration {
                run: "r1",
                started: &started,
                batch: (2, &crate::time::now()),
                mutations: &[],
            },
            &mut || true,
        )
        .unwrap()
        .unwrap();
    // The same id again, from the other store: refused.
    let again = b.register(
        &other,
        Registration {
            run: "r1",
            started: &started,
            batch: (2, &crate::time::now()),
            mutations: &[],
        },
        &mut || true,
    );
    assert!(matches!(again, Err(Error::Refused { .. })), "{again:?}");
    let taken = b.take_over("r1", &other, true).unwrap();
    assert_eq!(taken.epoch, 2);
    let mut state = a.replay("r1", None).unwrap();
    let e = Event {
        seq: state.last_seq + 1,
        at: crate::time::now(),
        kind: EventKind::RunStatus {
            status: RunStatus::Succeeded,
            reason: None,
        },
    };
    state.apply(&e);
    let err = a.commit(&lease, &state, &[e], &[], &[]).unwrap_err();
    assert!(
        matches!(&err, Error::Fenced { owner, .. } if owner.contains("epoch 2")),
        "{err}"
    );
    // The stale owner wrote nothing.
    assert_eq!(b.events("r1", None).unwrap().len(), 2);
}

#[test]
fn a_newer_schema_is_refused_and_errors_hide_the_password() {
    let url = cluster().new_database().unwrap();
    let s = PgStore::connect(&url).unwrap();
    s.write(|tx| {
        tx.exec("UPDATE orch_schema SET version = 99", &[])
            .map(drop)
    })
    .unwrap();
    let err = PgStore::connect(&url).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    let secret = format!(
        "postgres://postgres:hunter2@127.0.0.1:{}/no_such_db",
        cluster().port()
    );
    let err = PgStore::connect(&secret).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("postgres://postgres@127.0.0.1"), "{err}");
}

#[test]
fn a_restarted_database_is_met_with_new_connections() {
    // A cluster of its own: the restart cuts every connection.
    let cluster = TestCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.new_database().unwrap();
    let store = Arc::new(PgStore::connect(&url).unwrap());
    // Connections in the pool, all cut by the restart.
    std::thread::scope(|s| {
        for _ in 0..POOL_SIZE {
            s.spawn(|| store.runs().unwrap());
        }
    });
    cluster.restart().unwrap();
    // The first call on each cut connection is tried again on a new one.
    for _ in 0..=POOL_SIZE {
        assert!(store.runs().unwrap().is_empty());
    }
    // Calls made while the database is down wait for it to come back.
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let calls = std::thread::scope(|s| {
        let caller = s.spawn(|| {
            let mut calls = Vec::new();
            while !restarted.load(std::sync::atomic::Ordering::SeqCst) {
                calls.push(store.runs().map(|r| r.len()));
            }
            calls.push(store.runs().map(|r| r.len()));
            calls
        });
        cluster.restart().unwrap();
        restarted.store(true, std::sync::atomic::Ordering::SeqCst);
        caller.join().unwrap()
    });
    assert!(calls.iter().all(|c| matches!(c, Ok(0))), "{calls:?}");
    store.integrity_check().unwrap();
    // Down for good: the error comes once the window closed, naming the
    // database.
    cluster.stop();
    let store = Arc::into_inner(store)
        .unwrap()
        .reconnect_for(std::time::Duration::from_millis(200));
    let e = store.runs().unwrap_err().to_string();
    assert!(e.contains(&redact(&url)), "{e}");
    assert!(e.contains("connect") || e.contains("connection"), "{e}");
}

#[test]
fn a_commit_cut_during_its_commit_is_stored_once() {
    use crate::model::NodeState;
    use crate::store::conformance::{node_state, owner, register};
    let url = cluster().new_database().unwrap();
    let store = PgStore::connect(&url).unwrap();
    let me = owner("engine-a");
    let mut f = register(&store, "run-cut", &me);
    // A trigger deferred to COMMIT ends the connection there, the first
    // time only (a sequence is not rolled back): the engine's commit
    // fails with its outcome unknown.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE SEQUENCE cut_once;
             CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('cut_once') = 1 THEN
                     PERFORM pg_terminate_backend(pg_backend_pid());
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER cut AFTER INSERT ON events
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cut();",
        )
        .unwrap();
    let lease = f.lease.clone();
    f.commit(&store, &lease, vec![node_state("ask", NodeState::Waiting)])
        .expect("looked up, found missing, and written again");
    let cuts: i64 = admin
        .query_one("SELECT last_value FROM cut_once", &[])
        .unwrap()
        .get(0);
    assert!(cuts >= 2, "the first COMMIT was cut, the next went through");
    let ex = store.export("run-cut").unwrap();
    let seqs: Vec<u64> = store
        .events("run-cut", None)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=f.state.last_seq).collect::<Vec<_>>());
    let ask = ex.nodes.iter().find(|n| n.id == "ask").unwrap();
    assert_eq!(ask.state, NodeState::Waiting);
    // The next commit goes on from there.
    f.commit(
        &store,
        &lease,
        vec![node_state("work", NodeState::Cancelled)],
    )
    .unwrap();
    assert_eq!(
        store.events("run-cut", None).unwrap().len() as u64,
        f.state.last_seq
    );
}

#[test]
fn an_end_whose_connection_was_cut_ends_its_claim_on_a_new_one() {
    use crate::exec::resources::Offer;
    use crate::exec::AttemptId;
    use crate::store::queue::{QueuedAttempt, RunnerSpec};
    // A cluster of its own: the restart cuts every connection.
    let cluster = TestCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.new_database().unwrap();
    let store = PgStore::connect(&url).unwrap();
    let offer = Offer {
        cpu: 1.0,
        memory: None,
        gpu: 0,
        labels: Vec::new(),
    };
    store
        .register_runner(&RunnerSpec::new("r1", "r1", offer, 4, "0"), 60_000)
        .unwrap();
    let a = AttemptId::new("run1", "a", 1);
    store
        .enqueue(&QueuedAttempt::new(
            a.clone(),
            Default::default(),
            "{}".into(),
        ))
        .unwrap();
    assert_eq!(store.claim("r1", 1, 60_000).unwrap().len(), 1);
    // The end's one statement meets a cut connection: the transaction it
    // falls back to finds the claim still held and ends it.
    cluster.restart().unwrap();
    store.finish_claim(&a, "r1").unwrap();
    assert!(store.claims(10).unwrap().is_empty());
    // Ended once: a second end is fenced, saying why.
    let e = store.finish_claim(&a, "r1").unwrap_err();
    assert!(matches!(e, Error::AttemptFenced { .. }), "{e}");
    cluster.stop();
}
