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
