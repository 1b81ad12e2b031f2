//! The SQLite store's own tests (the conformance suite runs here too).

use super::views::*;
use super::*;
use crate::graph::Graph;
use crate::model::{output, Attrs, EdgeRef, Mutation, Task};
use serde_json::json;

/// A registration with every kind of mutation: more nodes than a
/// multi-row chunk, unnamed and named tasks, inputs that reference
/// outputs (implied edges, also beside an explicit one), attributes,
/// `set_attrs` of a node and of an edge, a promise.
fn registration() -> Vec<Mutation> {
    let mut attrs = Attrs::new();
    attrs.insert("label".into(), json!("x"));
    let mut muts = Vec::new();
    for i in 0..(2 * CHUNK + 7) {
        let task = if i % 3 == 0 {
            Task::command(["true"]).named("T")
        } else {
            Task::command(["true"])
        };
        muts.push(Mutation::AddNode {
            id: format!("n{i}"),
            task: Box::new(task),
            inputs: if i % 5 == 4 {
                json!({"a": output(&format!("n{}", i - 1)), "b": output(&format!("n{}", i - 2))})
            } else {
                Value::Null
            },
            attrs: if i % 7 == 0 {
                attrs.clone()
            } else {
                Attrs::new()
            },
        });
        if i % 5 == 4 {
            muts.push(Mutation::AddEdge {
                from: format!("n{}", i - 3),
                to: format!("n{i}"),
                attrs: attrs.clone(),
            });
        } else if i > 0 {
            muts.push(Mutation::AddEdge {
                from: format!("n{}", i - 1),
                to: format!("n{i}"),
                attrs: Attrs::new(),
            });
        }
        if i == CHUNK + 1 {
            muts.push(Mutation::SetAttrs {
                node: Some("n3".into()),
                edge: None,
                attrs: attrs.clone(),
            });
            muts.push(Mutation::SetAttrs {
                node: None,
                edge: Some(EdgeRef {
                    from: "n1".into(),
                    to: "n2".into(),
                }),
                attrs: attrs.clone(),
            });
            muts.push(Mutation::AddPromise {
                promise: crate::Promise::Static {},
            });
        }
    }
    muts
}

fn started() -> Event {
    Event {
        seq: 1,
        at: "2026-01-01T00:00:00.000Z".into(),
        kind: EventKind::RunStarted {
            workflow: "w".into(),
            orchestrator_pid: 1,
            config: crate::model::RunConfig::new("/x", "python3"),
        },
    }
}

#[test]
fn a_registration_is_written_like_its_validated_batch_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let muts = registration();
    let valid = Graph::new().validate(muts.clone()).unwrap();
    let at = "2026-01-01T00:00:01.000Z";
    let batch = Event {
        seq: 2,
        at: at.into(),
        kind: EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations: valid.clone(),
        },
    };

    // The reference: one statement per row, the event as it serialises.
    let before = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let mut conn = before.lock();
    let tx = conn.transaction().unwrap();
    write_event(&tx, "r", &started(), None).unwrap();
    tx.execute(
        "INSERT INTO events (run, seq, at, kind, data) VALUES ('r', 2, ?1, 'batch_committed', ?2)",
        params![at, to_json(&batch.kind)],
    )
    .unwrap();
    for m in &valid {
        write_mutation(&tx, "r", m).unwrap();
    }
    tx.execute("UPDATE runs SET last_seq = 2 WHERE id = 'r'", [])
        .unwrap();
    tx.commit().unwrap();
    drop(conn);

    let now = SqliteStore::open(dir.path().join("b.db")).unwrap();
    let kept = now
        .register(&Owner::this_process(), reg(&muts, at), &mut || true)
        .unwrap();
    assert!(kept.is_some());
    assert_eq!(now.events("r", None).unwrap(), vec![started(), batch]);
    let raw = |s: &SqliteStore| -> Vec<(i64, String, String, String)> {
        let c = s.lock();
        let mut q = c
            .prepare("SELECT seq, at, kind, data FROM events ORDER BY seq")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(raw(&now), raw(&before), "the same JSON, byte for byte");
    assert_eq!(now.export("r").unwrap(), before.export("r").unwrap());
    let mut g = Graph::new();
    g.commit(&muts).unwrap();
    assert_eq!(now.export("r").unwrap().edges.len(), g.edges().len());

    // And a batch written the way `commit` writes any later one too.
    let later = SqliteStore::open(dir.path().join("c.db")).unwrap();
    let events = now.events("r", None).unwrap();
    let state = RunState::replay("r", &events);
    let mut conn = later.lock();
    let tx = conn.transaction().unwrap();
    for e in &events {
        write_event(&tx, "r", e, Some(&state)).unwrap();
    }
    set_last_seq(&tx, "r", 2).unwrap();
    tx.commit().unwrap();
    drop(conn);
    assert_eq!(later.export("r").unwrap(), before.export("r").unwrap());
}

#[test]
fn a_registration_refused_by_its_validation_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let muts = registration();
    let kept = store
        .register(&Owner::this_process(), reg(&muts, "t"), &mut || false)
        .unwrap();
    assert!(kept.is_none());
    assert!(store.runs().unwrap().is_empty());
    assert!(store.events("r", None).unwrap().is_empty());
    let rows: i64 = store
        .lock()
        .query_row(
            "SELECT (SELECT count(*) FROM nodes) + (SELECT count(*) FROM edges)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    // The store stays usable.
    assert!(store
        .register(&Owner::this_process(), reg(&muts, "t"), &mut || true)
        .unwrap()
        .is_some());
}

fn reg<'a>(muts: &'a [Mutation], at: &'a str) -> Registration<'a> {
    static STARTED: std::sync::OnceLock<Event> = std::sync::OnceLock::new();
    Registration {
        run: "r",
        started: STARTED.get_or_init(started),
        batch: (2, at),
        mutations: muts,
    }
}

#[test]
fn the_conformance_suite_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    crate::store::conformance::run(&mut || {
        n += 1;
        Box::new(SqliteStore::open(dir.path().join(format!("{n}.db"))).unwrap())
    });
}

/// The schema of version 1, as orch wrote it before leases.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
id TEXT PRIMARY KEY,
workflow TEXT NOT NULL,
status TEXT NOT NULL,
reason TEXT,
orchestrator_pid INTEGER,
created_at TEXT NOT NULL,
finished_at TEXT,
config TEXT NOT NULL,
last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
run TEXT NOT NULL,
seq INTEGER NOT NULL,
at TEXT NOT NULL,
kind TEXT NOT NULL,
data TEXT NOT NULL,
PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
run TEXT NOT NULL,
id TEXT NOT NULL,
task TEXT NOT NULL,
inputs TEXT NOT NULL,
attrs TEXT NOT NULL,
state TEXT NOT NULL,
started_at TEXT,
finished_at TEXT,
PRIMARY KEY (run, id)
);
CREATE TABLE IF NOT EXISTS edges (
run TEXT NOT NULL,
src TEXT NOT NULL,
dst TEXT NOT NULL,
attrs TEXT NOT NULL,
PRIMARY KEY (run, src, dst)
);
CREATE TABLE IF NOT EXISTS attempts (
run TEXT NOT NULL,
node TEXT NOT NULL,
attempt INTEGER NOT NULL,
pid INTEGER,
started_at TEXT NOT NULL,
finished_at TEXT,
outcome TEXT,
exit_code INTEGER,
error TEXT,
PRIMARY KEY (run, node, attempt)
);
CREATE TABLE IF NOT EXISTS outputs (
run TEXT NOT NULL,
node TEXT NOT NULL,
value TEXT NOT NULL,
PRIMARY KEY (run, node)
);
CREATE TABLE IF NOT EXISTS promises (
run TEXT NOT NULL,
promise TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS promises_run ON promises (run);
CREATE TABLE IF NOT EXISTS violations (
run TEXT NOT NULL,
violation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS violations_run ON violations (run);
CREATE TABLE IF NOT EXISTS logs (
run TEXT NOT NULL,
node TEXT NOT NULL,
attempt INTEGER NOT NULL,
line INTEGER NOT NULL,
stream TEXT NOT NULL,
text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_attempt ON logs (run, node, attempt, line);
CREATE TABLE IF NOT EXISTS controls (
id INTEGER PRIMARY KEY AUTOINCREMENT,
run TEXT NOT NULL,
command TEXT NOT NULL,
requested_at TEXT NOT NULL,
taken_at TEXT
);
CREATE INDEX IF NOT EXISTS controls_run ON controls (run, taken_at);
CREATE TABLE IF NOT EXISTS inputs (
id INTEGER PRIMARY KEY AUTOINCREMENT,
run TEXT NOT NULL,
node TEXT NOT NULL,
value TEXT NOT NULL,
delivered_at TEXT NOT NULL,
taken_at TEXT
);
CREATE INDEX IF NOT EXISTS inputs_run ON inputs (run, taken_at);
"#;

#[test]
fn a_version_1_database_is_migrated_with_its_pending_signals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO runs (id, workflow, status, created_at, config) VALUES ('r', 'w', 'running', 't', '{}');
             INSERT INTO controls (run, command, requested_at) VALUES ('r', 'pause', 't1');
             INSERT INTO controls (run, command, requested_at, taken_at) VALUES ('r', 'cancel', 't0', 't0');
             INSERT INTO inputs (run, node, value, delivered_at) VALUES ('r', 'ask', '{\"ok\": true}', 't2');",
        )
        .unwrap();
    }
    let store = SqliteStore::open_existing(&path).unwrap();
    let version: i64 = store
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let pending = store.pending().unwrap();
    assert_eq!(
        pending.iter().map(|p| p.signal.clone()).collect::<Vec<_>>(),
        vec![
            Signal::Pause,
            Signal::Input {
                node: "ask".into(),
                value: json!({"ok": true})
            }
        ],
        "untaken requests carry over, in order; taken ones do not"
    );
    let record = store.owner("r").unwrap();
    assert!(
        record.owner.is_none(),
        "a run of version 1 has no owner yet"
    );
    // Version 3's table is there too.
    assert!(store.claim_fire("w", 1, "r", "schedule").unwrap());
    assert_eq!(
        store.fires("w", 0, 10).unwrap()[0].status,
        Some(crate::model::RunStatus::Running)
    );
    // Opening it again changes nothing.
    drop(store);
    assert_eq!(
        SqliteStore::open_existing(&path)
            .unwrap()
            .pending()
            .unwrap(),
        pending
    );
}

#[test]
fn a_version_2_database_is_read_without_being_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        // A version-3 database taken back to version 2's shape.
        let store = SqliteStore::open(&path).unwrap();
        let c = store.lock();
        c.execute_batch(
            "DROP TABLE fires; DROP TABLE pushes; DROP TABLE push_runs; DROP TABLE timers;
             ALTER TABLE attempts DROP COLUMN files;
             ALTER TABLE attempts DROP COLUMN runner;
             INSERT INTO runs (id, workflow, status, created_at, config) VALUES ('r', 'w', 'succeeded', 't', '{}');
             INSERT INTO nodes (run, id, task, inputs, attrs, state) VALUES ('r', 'a', '{\"kind\":\"input\"}', 'null', '{}', 'succeeded');
             INSERT INTO attempts (run, node, attempt, started_at, finished_at, outcome) VALUES ('r', 'a', 1, 't', 't', 'succeeded');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let store = SqliteStore::open_read_only(&path).unwrap();
    let ex = store.export("r").unwrap();
    assert!(ex.node("a").unwrap().attempts[0].files.is_empty());
    assert_eq!(
        ex.node("a").unwrap().attempts[0].runner.as_deref(),
        Some(crate::history::LOCAL),
        "an attempt that ended before runners were recorded ran locally"
    );
    assert!(store.timers().unwrap().is_empty());
    assert_eq!(store.last_fire("w").unwrap(), None);
    assert!(store.events_after(0, 0, 10).unwrap().is_empty());
    drop(store);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is left as it was"
    );
}

#[test]
fn a_postgres_url_is_refused_without_repeating_it() {
    for open in [
        (|p| SqliteStore::open(p)) as fn(&str) -> Result<SqliteStore>,
        |p| SqliteStore::open_existing(p),
        |p| SqliteStore::open_read_only(p),
    ] {
        let err = open("postgres://orch:hunter2@db/orch")
            .unwrap_err()
            .to_string();
        assert!(err.contains("PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert!(!Path::new("postgres:").exists(), "no folder was made");
}

#[test]
fn a_version_5_database_reads_its_ended_attempts_as_local() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    {
        // A version-6 database taken back to version 5's shape.
        let store = SqliteStore::open(&path).unwrap();
        let c = store.lock();
        c.execute_batch(
            "ALTER TABLE attempts DROP COLUMN runner;
             ALTER TABLE runners DROP COLUMN affinity;
             INSERT INTO runs (id, workflow, status, created_at, config) VALUES ('r', 'w', 'running', 't', '{}');
             INSERT INTO nodes (run, id, task, inputs, attrs, state) VALUES ('r', 'a', '{\"kind\":\"input\"}', 'null', '{}', 'running');
             INSERT INTO attempts (run, node, attempt, started_at, finished_at, outcome) VALUES ('r', 'a', 1, 't', 't', 'failed');
             INSERT INTO attempts (run, node, attempt, started_at) VALUES ('r', 'a', 2, 't');
             PRAGMA user_version = 5;",
        )
        .unwrap();
    }
    let ran = |store: &SqliteStore| -> Vec<Option<String>> {
        let ex = store.export("r").unwrap();
        let a = &ex.node("a").unwrap().attempts;
        a.iter().map(|a| a.runner.clone()).collect()
    };
    let want = vec![Some(crate::history::LOCAL.to_string()), None];
    let before = std::fs::read(&path).unwrap();
    let read_only = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(ran(&read_only), want, "read as version 6, unchanged");
    drop(read_only);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let migrated = SqliteStore::open_existing(&path).unwrap();
    assert_eq!(
        ran(&migrated),
        want,
        "migrated: the one that ended ran here"
    );
    // Its runners remember what they claim.
    crate::store::conformance::runners_keep_their_queues_and_runs(&migrated);
}

/// A commit of more events than one multi-row statement holds, with
/// attempts that start and end in it, end in the next commit, or fail and
/// are retried: every event is stored in order and the views equal the
/// fold.
#[test]
fn a_commits_events_go_in_chunks_and_its_attempts_are_written_whole() {
    use crate::model::{AttemptOutcome, NodeState};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let muts = registration();
    let lease = store
        .register(&Owner::this_process(), reg(&muts, "t"), &mut || true)
        .unwrap()
        .expect("kept");
    let mut all = store.events("r", None).unwrap();
    let node_state = |i: usize, state| EventKind::NodeState {
        node: format!("n{i}"),
        state,
    };
    let begun = |i: usize, attempt| EventKind::AttemptStarted {
        node: format!("n{i}"),
        attempt,
        pid: Some(100 + i as u32),
    };
    let ended = |i: usize, attempt, outcome| EventKind::AttemptFinished {
        node: format!("n{i}"),
        attempt,
        outcome,
        exit_code: Some(i32::from(outcome != AttemptOutcome::Succeeded)),
        error: None,
        files: Vec::new(),
        runner: None,
    };
    let mut first = Vec::new();
    for i in 0..10 {
        first.push(node_state(i, NodeState::Running));
        first.push(begun(i, 1));
    }
    for i in 0..7 {
        first.push(ended(i, 1, AttemptOutcome::Succeeded));
        first.push(node_state(i, NodeState::Succeeded));
    }
    first.push(ended(7, 1, AttemptOutcome::Failed));
    let mut second = vec![begun(7, 2), ended(7, 2, AttemptOutcome::Succeeded)];
    for i in 7..10 {
        if i > 7 {
            second.push(ended(i, 1, AttemptOutcome::Succeeded));
        }
        second.push(node_state(i, NodeState::Succeeded));
    }
    // 35 events (16 + 16 + 2 + 1 rows), then 7 (4 + 2 + 1).
    assert_eq!((first.len(), second.len()), (35, 7));
    for kinds in [first, second] {
        let mut events = Vec::new();
        for kind in kinds {
            let seq = all.len() as u64 + 1;
            let e = Event {
                seq,
                at: format!("2026-01-01T00:00:{seq:02}.000Z"),
                kind,
            };
            all.push(e.clone());
            events.push(e);
        }
        let state = RunState::replay("r", &all);
        store.commit(&lease, &state, &events, &[], &[]).unwrap();
        assert_eq!(
            store.events("r", None).unwrap(),
            all,
            "every event, in order"
        );
        let export = store.export("r").unwrap();
        assert_eq!(export, state.export(), "the views equal the fold");
        assert_eq!(export, store.replay("r", None).unwrap().export());
    }
    let export = store.export("r").unwrap();
    let n7 = export.nodes.iter().find(|n| n.id == "n7").unwrap();
    assert_eq!(n7.attempts.len(), 2);
    assert_eq!(n7.attempts[0].outcome, Some(AttemptOutcome::Failed));
    assert_eq!(n7.attempts[1].pid, Some(107));
}

/// The multi-row statements are `INSERT OR FAIL` (no statement journal):
/// a row that breaks a constraint in the middle of one leaves the rows
/// before it written until the error rolls the whole transaction back.
/// Nothing of a failed registration or commit stays, and the store stays
/// usable.
#[test]
fn a_multi_row_statement_that_fails_midway_leaves_nothing() {
    use crate::model::NodeState;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let count = |store: &SqliteStore| -> i64 {
        store
            .lock()
            .query_row(
                "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM events)
                      + (SELECT count(*) FROM nodes) + (SELECT count(*) FROM edges)",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    // A full chunk of edges whose 31st repeats the 6th (validation would
    // refuse it; the store must not keep half of it either).
    let mut muts: Vec<Mutation> = (0..=CHUNK)
        .map(|i| Mutation::add_node(format!("n{i}"), Task::command(["true"])))
        .collect();
    let edge = |i: usize| Mutation::AddEdge {
        from: "n0".into(),
        to: format!("n{i}"),
        attrs: Attrs::new(),
    };
    muts.extend((1..=CHUNK).map(edge));
    muts.insert(CHUNK + 1 + 30, edge(6));
    let err = store
        .register(&Owner::this_process(), reg(&muts, "t"), &mut || true)
        .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_eq!(count(&store), 0);

    let good = registration();
    let lease = store
        .register(&Owner::this_process(), reg(&good, "t"), &mut || true)
        .unwrap()
        .expect("kept");
    let before = (store.events("r", None).unwrap(), store.export("r").unwrap());
    let rows = count(&store);
    // 20 events in one commit (16 rows, then 4) whose 11th repeats a
    // sequence number already stored.
    let mut all = before.0.clone();
    let mut events = Vec::new();
    for i in 0..20u64 {
        let seq = if i == 10 { 2 } else { all.len() as u64 + 1 + i };
        events.push(Event {
            seq,
            at: "2026-01-01T00:00:09.000Z".into(),
            kind: EventKind::NodeState {
                node: format!("n{i}"),
                state: NodeState::Ready,
            },
        });
    }
    let mut state = RunState::replay("r", &all);
    let err = store.commit(&lease, &state, &events, &[], &[]).unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_eq!(count(&store), rows);
    assert_eq!(store.events("r", None).unwrap(), before.0);
    assert_eq!(store.export("r").unwrap(), before.1);
    // The same commit with the right numbers goes through.
    events[10].seq = all.len() as u64 + 11;
    all.extend(events.iter().cloned());
    state = RunState::replay("r", &all);
    store.commit(&lease, &state, &events, &[], &[]).unwrap();
    assert_eq!(store.events("r", None).unwrap(), all);
    assert_eq!(store.export("r").unwrap(), state.export());
}

#[test]
fn a_named_task_serialises_as_the_task_with_its_name_filled_in() {
    let full = Task {
        name: String::new(),
        timeout: Some(1.5),
        retries: 2,
        retry_delay: Some(0.25),
        output_required: true,
        input_type: Some("In".into()),
        output_type: Some("Out".into()),
        produces: vec!["a.txt".into()],
        requires: Some(Box::new(crate::model::Resources {
            cpu: Some(2.0),
            gpu: Some(1),
            ..Default::default()
        })),
        ..Task::python("x \"quoted\".py")
    };
    for task in [
        full.clone(),
        Task::command(["true"]),
        Task::command(["echo", "hi"]).named("given"),
        Task::input(),
    ] {
        let mut filled = task.clone();
        if filled.name.is_empty() {
            filled.name = "n\u{e9}\"1".into();
        }
        assert_eq!(
            serde_json::to_string(&named("n\u{e9}\"1", &task)).unwrap(),
            serde_json::to_string(&filled).unwrap(),
        );
    }
}

#[test]
fn the_log_stays_bounded_past_the_checkpoint_bound_and_everything_reads_back_after_reopening() {
    use checkpoint::{SELF_PAGES, WAKE_PAGES};
    // 40 one-page rows a commit, 600 commits: 24,000 pages through the
    // log, over twice the growth at which the committing connection
    // checkpoints itself whatever the checkpointer does.
    const ROWS: usize = 40;
    const COMMITS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.checkpointer.is_some());
    store
        .lock()
        .execute_batch("CREATE TABLE bulk (i INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .unwrap();
    let mut largest = 0;
    for k in 0..COMMITS {
        let mut c = store.lock();
        let tx = c.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO bulk (i, b) VALUES (?1, ?2)")
                .unwrap();
            for r in 0..ROWS {
                insert
                    .execute(params![(k * ROWS + r) as i64, vec![(k % 251) as u8; 3000]])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        drop(c);
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // The log's header and its frames (a page and its 24-byte header
    // each): where the checkpointer was woken, the bound beyond, the
    // commit that crossed it, the table's b-tree.
    let frame = 4096 + 24;
    let bound = 32 + ((WAKE_PAGES + SELF_PAGES) as u64 + 2 * ROWS as u64 + 64) * frame;
    assert!(largest > 0);
    assert!(largest <= bound, "log of {largest} bytes, over {bound}");
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    store.integrity_check().unwrap();
    let c = store.lock();
    let (n, bytes): (i64, i64) = c
        .query_row("SELECT count(*), sum(length(b)) FROM bulk", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, (COMMITS * ROWS) as i64);
    assert_eq!(bytes, n * 3000);
    let mut sample = c.prepare("SELECT i, b FROM bulk WHERE i % 97 = 0").unwrap();
    let rows = sample
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    for row in rows {
        let (i, b) = row.unwrap();
        let k = i as usize / ROWS;
        assert_eq!(b, vec![(k % 251) as u8; 3000], "row {i}");
    }
}

#[test]
fn a_read_only_store_starts_no_checkpointer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    drop(SqliteStore::open(&path).unwrap());
    let store = SqliteStore::open_read_only(&path).unwrap();
    assert!(store.checkpointer.is_none());
}
