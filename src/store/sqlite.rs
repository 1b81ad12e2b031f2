//! The SQLite store: one file per workspace, WAL, an append-only event log
//! plus materialized tables (runs, nodes, edges, attempts, outputs,
//! promises, violations, logs), run leases and stored signals.
//!
//! Every write is one transaction that appends events and updates the
//! tables together, so the tables always equal the fold of the log (see
//! [`Store::replay`]). One connection serves every run of an engine: its
//! writes are short transactions taken in turn.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde_json::Value;

use super::lease::{self, Lease, Owner, OwnerRecord};
use super::{LogLine, Pending, Registration, RunSummary, Signal, SignalId, Store};
use crate::error::{Error, Result};
use crate::graph::merge_attrs;
use crate::history::{
    AttemptRecord, EdgeExport, Event, EventKind, NodeExport, RunExport, RunState,
};
use crate::model::{output_refs, Attrs, Mutation, Origin, RunStatus, Task};

/// The environment variable that overrides the database path.
pub const DB_ENV: &str = "ORCH_DB";

/// Version 2 added run leases (`owner_id`, `owner`, `epoch`,
/// `lease_until`) and the `signals` table (replacing `controls` and
/// `inputs`: a migrated database moves their untaken rows into it and
/// keeps the tables, unused).
const SCHEMA_VERSION: i64 = 2;

/// What a version-1 database needs to become version 2 (before `SCHEMA`,
/// whose `CREATE ... IF NOT EXISTS` adds the new tables).
const MIGRATE_1_TO_2: &str = r#"
ALTER TABLE runs ADD COLUMN owner_id TEXT;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    value TEXT,
    requested_at TEXT NOT NULL,
    taken_at TEXT
);
INSERT INTO signals (run, kind, node, value, requested_at)
    SELECT run, kind, node, value, at FROM (
        SELECT run, command AS kind, NULL AS node, NULL AS value, requested_at AS at, 0 AS src, id
            FROM controls WHERE taken_at IS NULL
        UNION ALL
        SELECT run, 'input', node, value, delivered_at, 1, id
            FROM inputs WHERE taken_at IS NULL
    ) ORDER BY at, src, id;
"#;

/// The store's clock, in milliseconds since the Unix epoch: leases expire
/// by it, never by a host's idea of the time.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    orchestrator_pid INTEGER,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    config TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    owner_id TEXT,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_owner ON runs (owner_id) WHERE owner_id IS NOT NULL;
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
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    value TEXT,
    requested_at TEXT NOT NULL,
    taken_at TEXT
);
CREATE INDEX IF NOT EXISTS signals_open ON signals (taken_at, id);
"#;

/// The database path: `ORCH_DB` if set, else `.orch/orch.db` under the
/// current directory.
///
/// ```
/// let p = orch::store::default_path();
/// assert!(p.ends_with("orch.db") || std::env::var_os("ORCH_DB").is_some());
/// ```
pub fn default_path() -> PathBuf {
    match std::env::var_os(DB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(".orch").join("orch.db"),
    }
}

/// `path`, or an error naming it when there is no such file.
fn must_exist(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    Err(Error::io(
        format!(
            "no orch database at {} (run a workflow first, or point {DB_ENV} or --db at one)",
            path.display()
        ),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    ))
}

/// How a store opens its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Creating it when missing or empty.
    Create,
    /// Only an orch database that exists; upgraded when older.
    Existing,
    /// Only an orch database, never written.
    ReadOnly,
}

/// An orch database in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed, with its folder) the database at `path`.
    ///
    /// ```
    /// use orch::store::{SqliteStore, Store};
    /// let dir = tempfile::tempdir()?;
    /// let store = SqliteStore::open(dir.path().join("orch.db"))?;
    /// assert!(store.runs()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating folder {}", dir.display()), e))?;
        }
        SqliteStore::connect(path, Mode::Create)
    }

    /// Opens an existing database; an error naming the path if there is
    /// none, or if the file is not an orch database (the CLI never
    /// creates one).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = must_exist(path.as_ref())?;
        SqliteStore::connect(path, Mode::Existing)
    }

    /// Opens an existing orch database for reading only: nothing is ever
    /// written to the file (no schema, no migration, no journal mode), so
    /// it works on files this process may not write, and refuses a file
    /// that is not an orch database, naming it. Writes through it fail.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("empty.db");
    /// std::fs::write(&path, b"")?;
    /// let err = orch::SqliteStore::open_read_only(&path).unwrap_err();
    /// assert!(err.to_string().contains("not an orch database"));
    /// assert_eq!(std::fs::metadata(&path)?.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = must_exist(path.as_ref())?;
        SqliteStore::connect(path, Mode::ReadOnly)
    }

    fn connect(path: PathBuf, mode: Mode) -> Result<SqliteStore> {
        let conn = match mode {
            Mode::ReadOnly => Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
            _ => Connection::open(&path),
        }
        .map_err(wrapper(&path))?;
        SqliteStore::init(&conn, &path, mode)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        wrapper(&self.path)(source)
    }

    /// The connection; a panic of another holder leaves it usable (every
    /// write is a transaction, rolled back when its guard dropped).
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn init(conn: &Connection, path: &Path, mode: Mode) -> Result<()> {
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(wrapper(path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrapper(path))?;
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: format!(
                    "schema version {version} is newer than this orch understands ({SCHEMA_VERSION})"
                ),
            });
        }
        // Before anything is written: a file that is not an orch database
        // (empty, or another application's) is left as it is.
        SqliteStore::recognise(conn, path, version, mode)?;
        if mode != Mode::ReadOnly {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(wrapper(path))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(wrapper(path))?;
            // The migration, the schema and its version in one
            // transaction: a crash or a full disk halfway leaves the old
            // version whole. A database already at this version is not
            // written to at all.
            if version < SCHEMA_VERSION {
                SqliteStore::upgrade(conn).map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    wrapper(path)(e)
                })?;
            }
        }
        // Room for the multi-row statements of big batches beside the
        // per-event ones.
        conn.set_prepared_statement_cache_capacity(32);
        // A testing aid: simulate a full disk once the file reaches this
        // many pages (SQLite's max_page_count is per connection).
        #[cfg(feature = "testing")]
        if let Some(pages) = std::env::var("ORCH_TEST_MAX_PAGES")
            .ok()
            .and_then(|p| p.parse::<i64>().ok())
        {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(wrapper(path))?;
        }
        Ok(())
    }

    /// Refuses a file that is not an orch database: one with orch's
    /// version mark and tables; for [`Mode::Create`], also a database with
    /// no tables at all (a new file).
    fn recognise(conn: &Connection, path: &Path, version: i64, mode: Mode) -> Result<()> {
        let (tables, ours): (i64, i64) = conn
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE name IN ('runs', 'events'))
                 FROM sqlite_master WHERE type = 'table'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(wrapper(path))?;
        let orch = version >= 1 && ours == 2;
        let fresh = version == 0 && tables == 0;
        if orch || (fresh && mode == Mode::Create) {
            return Ok(());
        }
        let what = if fresh {
            "it is empty: no workflow ran with it; run a workflow first".to_string()
        } else {
            format!(
                "it holds {tables} table(s) but not orch's (schema version {version}): another application's database? point --db or ORCH_DB at the file a workflow wrote"
            )
        };
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("not an orch database: {what}; it was left as it is"),
        })
    }

    /// Brings the schema to this version in one transaction. The version
    /// is read again inside it: another process may have upgraded the
    /// file meanwhile.
    fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            if version == 1 {
                conn.execute_batch(MIGRATE_1_TO_2)?;
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        conn.execute_batch("COMMIT")
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_export(&self, run: &str) -> rusqlite::Result<RunExport> {
        let c = self.lock();
        let c = &*c;
        let mut ex = c.query_row(
            "SELECT workflow, status, reason, orchestrator_pid, created_at, finished_at, last_seq FROM runs WHERE id = ?1",
            [run],
            |r| {
                let status: String = r.get(1)?;
                Ok(RunExport {
                    run: run.to_string(),
                    workflow: r.get(0)?,
                    status: status.parse().unwrap_or(RunStatus::Failed),
                    reason: r.get(2)?,
                    orchestrator_pid: r.get(3)?,
                    created_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    event: r.get::<_, i64>(6)? as u64,
                    nodes: Vec::new(),
                    edges: Vec::new(),
                    promises: Vec::new(),
                    violations: Vec::new(),
                })
            },
        )?;
        let mut attempts: std::collections::HashMap<String, Vec<AttemptRecord>> =
            Default::default();
        let mut stmt = c.prepare(
            "SELECT node, attempt, pid, started_at, finished_at, outcome, exit_code, error
             FROM attempts WHERE run = ?1 ORDER BY node, attempt",
        )?;
        let rows = stmt.query_map([run], |r| {
            let outcome: Option<String> = r.get(5)?;
            Ok((
                r.get::<_, String>(0)?,
                AttemptRecord {
                    attempt: r.get(1)?,
                    pid: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    outcome: outcome.and_then(|o| o.parse().ok()),
                    exit_code: r.get(6)?,
                    error: r.get(7)?,
                },
            ))
        })?;
        for row in rows {
            let (node, a) = row?;
            attempts.entry(node).or_default().push(a);
        }
        let mut stmt = c.prepare(
            "SELECT n.id, n.task, n.state, n.inputs, n.attrs, o.value, n.started_at, n.finished_at
             FROM nodes n LEFT JOIN outputs o ON o.run = n.run AND o.node = n.id
             WHERE n.run = ?1 ORDER BY n.rowid",
        )?;
        let rows = stmt.query_map([run], |r| {
            let id: String = r.get(0)?;
            let state: String = r.get(2)?;
            let output: Option<String> = r.get(5)?;
            Ok(NodeExport {
                attempts: attempts.remove(&id).unwrap_or_default(),
                id,
                task: json_col(r, 1)?,
                state: state.parse().map_err(|e: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                inputs: json_col(r, 3)?,
                attrs: json_col(r, 4)?,
                output: output.map(|o| serde_json::from_str(&o).unwrap_or(Value::Null)),
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
            })
        })?;
        ex.nodes = rows.collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT src, dst, attrs FROM edges WHERE run = ?1 ORDER BY rowid")?;
        ex.edges = stmt
            .query_map([run], |r| {
                Ok(EdgeExport {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    attrs: json_col(r, 2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = c.prepare("SELECT promise FROM promises WHERE run = ?1 ORDER BY rowid")?;
        ex.promises = stmt
            .query_map([run], |r| json_col(r, 0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT violation FROM violations WHERE run = ?1 ORDER BY rowid")?;
        ex.violations = stmt
            .query_map([run], |r| json_col(r, 0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ex)
    }

    /// Reads a run's owner row.
    fn owner_row(
        c: &Connection,
        run: &str,
    ) -> rusqlite::Result<Option<(OwnerRecord, String, i64)>> {
        c.query_row(
            &format!("SELECT owner, epoch, lease_until, status, {NOW_MS} FROM runs WHERE id = ?1"),
            [run],
            |r| {
                let owner: Option<String> = r.get(0)?;
                Ok((
                    OwnerRecord {
                        owner: owner.and_then(|o| serde_json::from_str(&o).ok()),
                        epoch: r.get::<_, i64>(1)? as u64,
                        until_ms: r.get(2)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()
    }

    /// The error for a write fenced off `lease`.
    fn fenced(&self, c: &Connection, lease: &Lease) -> Error {
        let now = SqliteStore::owner_row(c, &lease.run).ok().flatten();
        Error::Fenced {
            run: lease.run.clone(),
            epoch: lease.epoch,
            owner: match now {
                Some((rec, ..)) => match rec.owner {
                    Some(o) => format!("{} holds it at epoch {}", o.describe(), rec.epoch),
                    None => format!("it was released at epoch {}", rec.epoch),
                },
                None => "the run is gone".into(),
            },
        }
    }

    /// The first lines of a run's `runs` row that a takeover or a signal
    /// needs: its status.
    fn status(c: &Connection, run: &str) -> rusqlite::Result<Option<RunStatus>> {
        c.query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map(|s| s.map(|s| s.parse().unwrap_or(RunStatus::Failed)))
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn register(
        &self,
        owner: &Owner,
        reg: Registration<'_>,
        go: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Lease>> {
        let wrap = wrapper(&self.path);
        let Registration {
            run,
            started,
            batch: (seq, at),
            mutations,
        } = reg;
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        write_event(&tx, run, started, None).map_err(wrap)?;
        {
            // Serialised and dropped before the rows are written.
            let data = serde_json::to_string(&RegistrationView {
                origin: Origin::Registration,
                mutations: Filled(mutations),
            })
            .expect("orch values always serialise");
            tx.prepare_cached(
                "INSERT INTO events (run, seq, at, kind, data) VALUES (?1, ?2, ?3, 'batch_committed', ?4)",
            )
            .and_then(|mut s| s.execute(params![run, seq as i64, at, data]))
            .map_err(wrap)?;
        }
        // That JSON, and SQLite's copies of it, are freed by now.
        crate::release_freed_memory();
        write_mutations(&tx, run, mutations).map_err(wrap)?;
        set_last_seq(&tx, run, seq).map_err(wrap)?;
        tx.prepare_cached(&format!(
            "UPDATE runs SET owner_id = ?2, owner = ?3, epoch = 1, lease_until = {NOW_MS} + ?4 WHERE id = ?1"
        ))
        .and_then(|mut s| {
            s.execute(params![
                run,
                owner.id,
                to_json(owner),
                owner.ttl.as_millis() as i64
            ])
        })
        .map_err(wrap)?;
        if !go() {
            return Ok(None);
        }
        tx.commit().map_err(wrap)?;
        Ok(Some(Lease::new(run, &owner.id, 1)))
    }

    fn take_over(&self, run: &str, owner: &Owner, force: bool) -> Result<Lease> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        // IMMEDIATE: two takeovers (in any processes) read and write the
        // owner row one after the other, so one wins and the other sees it.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let (record, _, now) = SqliteStore::owner_row(&tx, run)
            .map_err(wrap)?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        let verdict = lease::may_take_over(&record, owner, now, force, &crate::host::process_start);
        if let lease::Verdict::Held(why) = verdict {
            return Err(Error::Owned {
                run: run.to_string(),
                owner: why,
            });
        }
        let epoch = record.epoch + 1;
        tx.execute(
            &format!(
                "UPDATE runs SET owner_id = ?2, owner = ?3, epoch = ?4, lease_until = {NOW_MS} + ?5 WHERE id = ?1"
            ),
            params![run, owner.id, to_json(owner), epoch as i64, owner.ttl.as_millis() as i64],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(Lease::new(run, &owner.id, epoch))
    }

    fn renew(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        // Exactly the leases the engine passes (the runs it drives), in one
        // transaction: a run this owner holds but no longer drives (its
        // loop died) is not kept from a takeover.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let mut lost = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE runs SET lease_until = {NOW_MS} + ?4
                     WHERE id = ?1 AND owner_id = ?2 AND epoch = ?3 AND finished_at IS NULL"
                ))
                .map_err(wrap)?;
            let ttl = owner.ttl.as_millis() as i64;
            for l in leases {
                let renewed = stmt
                    .execute(params![l.run, owner.id, l.epoch as i64, ttl])
                    .map_err(wrap)?;
                if renewed == 0 {
                    lost.push(l.run.clone());
                }
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(lost)
    }

    fn release(&self, lease: &Lease) -> Result<()> {
        let c = self.lock();
        c.execute(
            "UPDATE runs SET owner_id = NULL, owner = NULL, lease_until = 0
             WHERE id = ?1 AND owner_id = ?2 AND epoch = ?3",
            params![lease.run, lease.owner, lease.epoch as i64],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn owner(&self, run: &str) -> Result<OwnerRecord> {
        let c = self.lock();
        SqliteStore::owner_row(&c, run)
            .map_err(|e| self.err(e))?
            .map(|(rec, ..)| rec)
            .ok_or_else(|| Error::UnknownRun(run.to_string()))
    }

    fn commit(
        &self,
        lease: &Lease,
        state: &RunState,
        events: &[Event],
        logs: &[LogLine],
        taken: &[SignalId],
    ) -> Result<()> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        // The fence first: a stale owner writes nothing at all.
        let fenced = tx
            .prepare_cached(
                "UPDATE runs SET last_seq = max(last_seq, ?4) WHERE id = ?1 AND owner_id = ?2 AND epoch = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    lease.run,
                    lease.owner,
                    lease.epoch as i64,
                    events.last().map_or(0, |e| e.seq as i64),
                ])
            })
            .map_err(wrap)?
            == 0;
        if fenced {
            drop(tx);
            return Err(self.fenced(&c, lease));
        }
        let run = lease.run.as_str();
        let restarted = events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Restarted { .. }));
        for e in events {
            write_event(&tx, run, e, Some(state)).map_err(wrap)?;
        }
        if restarted {
            rewrite_graph(&tx, run, state).map_err(wrap)?;
        }
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO logs (run, node, attempt, line, stream, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(wrap)?;
            for l in logs {
                ins.execute(params![run, l.node, l.attempt, l.line, l.stream, l.text])
                    .map_err(wrap)?;
            }
        }
        if !taken.is_empty() {
            let mut upd = tx
                .prepare_cached("UPDATE signals SET taken_at = ?2 WHERE id = ?1")
                .map_err(wrap)?;
            let at = crate::time::now();
            for id in taken {
                upd.execute(params![id.0, at]).map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)
    }

    /// Resolves `latest`, a full run id or a unique prefix of one.
    fn resolve_run(&self, what: &str) -> Result<String> {
        let c = self.lock();
        let found: Option<String> = if what == "latest" {
            c.query_row(
                "SELECT id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
        } else {
            // A range over the primary key: the exact id, then the ids it
            // prefixes (ids are lower-case ASCII; U+10FFFF sorts after
            // every one of them).
            let prefix = what.to_ascii_lowercase();
            let mut stmt = c
                .prepare_cached(
                    "SELECT id FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 3",
                )
                .map_err(|e| self.err(e))?;
            let ids: Vec<String> = stmt
                .query_map(params![prefix, format!("{prefix}\u{10FFFF}")], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            match ids.as_slice() {
                [one] => Some(one.clone()),
                many if many.contains(&prefix) => Some(prefix.clone()),
                [] => None,
                _ => {
                    return Err(Error::AmbiguousRun {
                        prefix: what.to_string(),
                        matches: ids.join(", "),
                    })
                }
            }
        };
        found.ok_or_else(|| Error::UnknownRun(what.to_string()))
    }

    /// Every run, newest first.
    fn runs(&self) -> Result<Vec<RunSummary>> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, workflow, status, created_at, finished_at,
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id)
                 FROM runs ORDER BY created_at DESC, rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    status: r.get(2)?,
                    created_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    nodes: r.get::<_, i64>(5)? as u64,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    /// The history of a run, in order; with `upto`, only the events up to
    /// and including that sequence number.
    fn events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT seq, at, data FROM events WHERE run = ?1 AND seq <= ?2 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(u64, String, String)> = stmt
            .query_map(params![run, upto.map_or(i64::MAX, |u| u as i64)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(seq, at, data)| {
                let kind: EventKind = serde_json::from_str(&data).map_err(|e| Error::Corrupt {
                    path: self.path.clone(),
                    message: format!("run {run} event {seq} does not parse: {e}"),
                })?;
                Ok(Event { seq, at, kind })
            })
            .collect()
    }

    /// The export of a run, read from the materialized tables.
    fn export(&self, run: &str) -> Result<RunExport> {
        self.read_export(run).map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Error::UnknownRun(run.to_string()),
            other => self.err(other),
        })
    }

    /// The log lines of a node's attempts (all attempts when `attempt` is
    /// `None`), in order.
    fn logs(&self, run: &str, node: &str, attempt: Option<u32>) -> Result<Vec<LogLine>> {
        let c = self.lock();
        let exists: bool = c
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM nodes WHERE run = ?1 AND id = ?2)",
                params![run, node],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !exists {
            return Err(Error::UnknownNode {
                run: run.to_string(),
                node: node.to_string(),
            });
        }
        let mut stmt = c
            .prepare(
                "SELECT attempt, line, stream, text FROM logs
                 WHERE run = ?1 AND node = ?2 AND (?3 IS NULL OR attempt = ?3)
                 ORDER BY attempt, line",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![run, node, attempt], |r| {
                Ok(LogLine {
                    node: node.to_string(),
                    attempt: r.get(0)?,
                    line: r.get(1)?,
                    stream: r.get(2)?,
                    text: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn node(&self, run: &str, node: &str) -> Result<Option<(Task, crate::model::NodeState)>> {
        let c = self.lock();
        SqliteStore::node_row(&c, &self.path, run, node)
    }

    fn request(&self, run: &str, signal: &Signal) -> Result<SignalId> {
        let c = self.lock();
        let status = SqliteStore::status(&c, run)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        if status.is_terminal() {
            return Err(Error::RunEnded {
                run: run.to_string(),
                status: status.to_string(),
                control: match signal {
                    Signal::Input { .. } => "deliver input".into(),
                    other => other.as_str().to_string(),
                },
            });
        }
        let (node, value) = match signal {
            Signal::Input { node, value } => {
                self.check_input(&c, run, node)?;
                (Some(node.as_str()), Some(to_json(value)))
            }
            _ => (None, None),
        };
        c.prepare_cached(
            "INSERT INTO signals (run, kind, node, value, requested_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![run, signal.as_str(), node, value, crate::time::now()]))
        .map_err(|e| self.err(e))?;
        Ok(SignalId(c.last_insert_rowid()))
    }

    fn pending(&self) -> Result<Vec<Pending>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT s.id, s.run, s.kind, s.node, s.value FROM signals s
                 JOIN runs r ON r.id = s.run
                 WHERE s.taken_at IS NULL AND r.finished_at IS NULL ORDER BY s.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, run, kind, node, value)| {
                let signal = match (kind.as_str(), node) {
                    ("input", Some(node)) => Signal::Input {
                        node,
                        value: value
                            .and_then(|v| serde_json::from_str(&v).ok())
                            .unwrap_or(Value::Null),
                    },
                    (other, _) => other.parse().ok()?,
                };
                Some(Pending {
                    id: SignalId(id),
                    run,
                    signal,
                })
            })
            .collect())
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when SQLite says `ok`.
    fn integrity_check(&self) -> Result<()> {
        let c = self.lock();
        let res: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if res == "ok" {
            Ok(())
        } else {
            Err(Error::Corrupt {
                path: self.path.clone(),
                message: res,
            })
        }
    }
}

impl SqliteStore {
    /// A node's task and state, from its row.
    fn node_row(
        c: &Connection,
        path: &Path,
        run: &str,
        node: &str,
    ) -> Result<Option<(Task, crate::model::NodeState)>> {
        let row: Option<(String, String)> = c
            .prepare_cached("SELECT task, state FROM nodes WHERE run = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![run, node], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(wrapper(path))?;
        let Some((task, state)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("run {run} node `{node}` has an unreadable {what}: {e}"),
        };
        let task: Task = serde_json::from_str(&task).map_err(|e| corrupt("task", &e))?;
        let state = state.parse().map_err(|e: String| corrupt("state", &e))?;
        Ok(Some((task, state)))
    }

    /// Refuses an input for a node that is not an input node, or that
    /// finished (one row read, not the run).
    /// Delivers a value to a node whose task is [`crate::Task::input`]: it
    /// becomes the node's output when the orchestrator takes it (at once
    /// if the node waits, else when it starts waiting).
    fn check_input(&self, c: &Connection, run: &str, node: &str) -> Result<()> {
        let (task, state) =
            SqliteStore::node_row(c, &self.path, run, node)?.ok_or_else(|| Error::UnknownNode {
                run: run.to_string(),
                node: node.to_string(),
            })?;
        if !matches!(task.exec, crate::model::Exec::Input {}) {
            return Err(Error::NotInput {
                run: run.to_string(),
                node: node.to_string(),
                kind: task.exec.kind().to_string(),
            });
        }
        if state.is_terminal() {
            return Err(Error::RunEnded {
                run: format!("{run}` node `{node}"),
                status: state.to_string(),
                control: "deliver input to".into(),
            });
        }
        Ok(())
    }
}

fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("orch values always serialise")
}

fn event_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::RunStarted { .. } => "run_started",
        EventKind::RunResumed { .. } => "run_resumed",
        EventKind::BatchCommitted { .. } => "batch_committed",
        EventKind::NodeState { .. } => "node_state",
        EventKind::AttemptStarted { .. } => "attempt_started",
        EventKind::AttemptFinished { .. } => "attempt_finished",
        EventKind::Output { .. } => "output",
        EventKind::PromiseBroken { .. } => "promise_broken",
        EventKind::Restarted { .. } => "restarted",
        EventKind::RunStatus { .. } => "run_status",
    }
}

/// Appends one event and applies it to the materialized tables.
/// Turns SQLite errors into [`Error::Store`] naming the database file.
fn wrapper(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |source| Error::Store {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Records the last event written for the run.
fn set_last_seq(tx: &Transaction<'_>, run: &str, seq: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE runs SET last_seq = ?2 WHERE id = ?1")?
        .execute(params![run, seq as i64])
        .map(drop)
}

/// Appends one event and updates the views it touches. Where a view holds
/// something the fold computes (a node's times, a run's end), the value
/// is copied from `state`, the fold that includes the event: the store
/// never folds events itself. Only `run_started` may come without it.
fn write_event(
    tx: &Transaction<'_>,
    run: &str,
    e: &Event,
    state: Option<&RunState>,
) -> rusqlite::Result<()> {
    let folded = || state.expect("views of a state change are copied from the fold");
    tx.prepare_cached("INSERT INTO events (run, seq, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![
            run,
            e.seq as i64,
            e.at,
            event_name(&e.kind),
            to_json(&e.kind)
        ])?;
    match &e.kind {
        EventKind::RunStarted {
            workflow,
            orchestrator_pid,
            config,
        } => {
            tx.prepare_cached(
                "INSERT INTO runs (id, workflow, status, orchestrator_pid, created_at, config)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET orchestrator_pid = ?3",
            )?
            .execute(params![
                run,
                workflow,
                orchestrator_pid,
                e.at,
                to_json(config)
            ])?;
        }
        EventKind::RunResumed { orchestrator_pid } => {
            tx.prepare_cached("UPDATE runs SET orchestrator_pid = ?2 WHERE id = ?1")?
                .execute(params![run, orchestrator_pid])?;
        }
        EventKind::BatchCommitted { mutations, .. } => write_mutations(tx, run, mutations)?,
        EventKind::NodeState { node, .. } => {
            let st = folded();
            // A node retracted by a later restart of the same commit is
            // written by the rewrite.
            if let Some(i) = st.graph.position(node) {
                let facts = &st.facts[i];
                tx.prepare_cached(
                    "UPDATE nodes SET state = ?3, started_at = ?4, finished_at = ?5
                     WHERE run = ?1 AND id = ?2",
                )?
                .execute(params![
                    run,
                    node,
                    st.graph.node(i).state.as_str(),
                    facts.started_at,
                    facts.finished_at
                ])?;
            }
        }
        EventKind::AttemptStarted { node, attempt, pid } => {
            tx.prepare_cached(
                "INSERT INTO attempts (run, node, attempt, pid, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![run, node, attempt, pid, e.at])?;
        }
        EventKind::AttemptFinished {
            node,
            attempt,
            outcome,
            exit_code,
            error,
        } => {
            tx.prepare_cached(
                "UPDATE attempts SET finished_at = ?4, outcome = ?5, exit_code = ?6, error = ?7
                 WHERE run = ?1 AND node = ?2 AND attempt = ?3",
            )?
            .execute(params![
                run,
                node,
                attempt,
                e.at,
                outcome.as_str(),
                exit_code,
                error
            ])?;
        }
        EventKind::Output { node, value } => {
            tx.prepare_cached(
                "INSERT INTO outputs (run, node, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run, node) DO UPDATE SET value = ?3",
            )?
            .execute(params![run, node, to_json(value)])?;
        }
        EventKind::Restarted { .. } => {
            // The new generation is rewritten from the folded state once
            // the commit's events are written (see `Store::commit`).
        }
        EventKind::PromiseBroken { violation } => {
            tx.prepare_cached("INSERT INTO violations (run, violation) VALUES (?1, ?2)")?
                .execute(params![run, to_json(violation)])?;
        }
        EventKind::RunStatus { .. } => {
            let st = folded();
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, reason = ?3, finished_at = ?4 WHERE id = ?1",
            )?
            .execute(params![run, st.status.as_str(), st.reason, st.finished_at])?;
        }
    }
    Ok(())
}

/// The `batch_committed` event of a registration as
/// [`Store::commit_registration`] writes it: the same JSON as
/// `EventKind::BatchCommitted` with the mutations as validation accepts
/// them, without a copy of them.
#[derive(serde::Serialize)]
#[serde(tag = "event", rename = "batch_committed")]
struct RegistrationView<'a> {
    origin: Origin,
    mutations: Filled<'a>,
}

/// Mutations serialised with empty task names filled in (the node's id).
struct Filled<'a>(&'a [Mutation]);

impl serde::Serialize for Filled<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } if task.name.is_empty() => FilledMutation::AddNode {
                id,
                task: named(id, task),
                inputs,
                attrs,
            },
            m => FilledMutation::Other(m),
        }))
    }
}

/// An `add_node` laid out like [`Mutation::AddNode`], or any mutation.
#[derive(serde::Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FilledMutation<'a> {
    AddNode {
        id: &'a str,
        task: std::borrow::Cow<'a, Task>,
        #[serde(skip_serializing_if = "Value::is_null")]
        inputs: &'a Value,
        #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
        attrs: &'a Attrs,
    },
    #[serde(untagged)]
    Other(&'a Mutation),
}

/// The task with its name filled in as validation does (an empty name is
/// the node's id).
fn named<'a>(id: &str, task: &'a Task) -> std::borrow::Cow<'a, Task> {
    if task.name.is_empty() {
        let mut t = task.clone();
        t.name = id.to_string();
        std::borrow::Cow::Owned(t)
    } else {
        std::borrow::Cow::Borrowed(task)
    }
}

/// A cell as text (ids and JSON are UTF-8).
fn text(cell: &[u8]) -> &str {
    std::str::from_utf8(cell).expect("cells hold UTF-8")
}

/// Rows per multi-row `INSERT` when a batch adds many nodes or edges.
const CHUNK: usize = 64;

/// The `INSERT` of `rows` rows into `table`: `?1` is the run, then
/// `width` parameters per row, then `tail` (constant columns) per row.
fn insert_sql(head: &str, rows: usize, width: usize, tail: &str) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " VALUES (?1" } else { ", (?1" });
        for c in 0..width {
            sql.push_str(&format!(", ?{}", 2 + r * width + c));
        }
        sql.push_str(tail);
        sql.push(')');
    }
    sql
}

/// Rows of one kind waiting to be inserted, `width` text columns each
/// (after the run), written `CHUNK` at a time by one multi-row statement
/// and the rest one by one, in order (their rowids keep the batch's
/// order, which exports follow).
struct Rows {
    head: &'static str,
    tail: &'static str,
    width: usize,
    cells: Vec<Vec<u8>>,
    used: usize,
}

impl Rows {
    fn new(head: &'static str, width: usize, tail: &'static str) -> Rows {
        Rows {
            head,
            tail,
            width,
            cells: Vec::new(),
            used: 0,
        }
    }

    /// A cell of the next row, to fill (cells are reused across chunks).
    fn cell(&mut self) -> &mut Vec<u8> {
        if self.used == self.cells.len() {
            self.cells.push(Vec::new());
        }
        let c = &mut self.cells[self.used];
        self.used += 1;
        c.clear();
        c
    }

    fn push_json<T: serde::Serialize>(&mut self, v: &T) {
        serde_json::to_writer(self.cell(), v).expect("orch values always serialise");
    }

    fn push_str(&mut self, v: &str) {
        self.cell().extend_from_slice(v.as_bytes());
    }

    /// Writes the complete chunk when there is one.
    fn maybe_flush(&mut self, tx: &Transaction<'_>, run: &str) -> rusqlite::Result<()> {
        if self.used == CHUNK * self.width {
            self.flush(tx, run)?;
        }
        Ok(())
    }

    fn flush(&mut self, tx: &Transaction<'_>, run: &str) -> rusqlite::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let rows = self.used / self.width;
        let mut stmt = tx.prepare_cached(&insert_sql(
            self.head,
            if rows == CHUNK { CHUNK } else { 1 },
            self.width,
            self.tail,
        ))?;
        if rows == CHUNK {
            stmt.raw_bind_parameter(1, run)?;
            for (k, c) in self.cells[..self.used].iter().enumerate() {
                stmt.raw_bind_parameter(2 + k, text(c))?;
            }
            stmt.raw_execute()?;
        } else {
            for row in self.cells[..self.used].chunks(self.width) {
                stmt.raw_bind_parameter(1, run)?;
                for (k, c) in row.iter().enumerate() {
                    stmt.raw_bind_parameter(2 + k, text(c))?;
                }
                stmt.raw_execute()?;
            }
        }
        self.used = 0;
        Ok(())
    }
}

/// The materialized rows of a batch's mutations, in order. Node and edge
/// rows go in multi-row statements, so that a big batch (a registration
/// of 100,000 nodes) costs a few thousand statements, not 300,000; rows
/// that read earlier ones (`set_attrs`) are written after those.
fn write_mutations(
    tx: &Transaction<'_>,
    run: &str,
    mutations: &[Mutation],
) -> rusqlite::Result<()> {
    let mut nodes = Rows::new(
        "INSERT INTO nodes (run, id, task, inputs, attrs, state)",
        4,
        ", 'pending'",
    );
    let mut edges = Rows::new("INSERT INTO edges (run, src, dst, attrs)", 3, "");
    let mut implied = Rows::new(
        "INSERT OR IGNORE INTO edges (run, src, dst, attrs)",
        2,
        ", '{}'",
    );
    for m in mutations {
        match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                nodes.push_str(id);
                nodes.push_json(&named(id, task));
                nodes.push_json(inputs);
                nodes.push_json(attrs);
                nodes.maybe_flush(tx, run)?;
                let refs = output_refs(inputs).unwrap_or_default();
                if !refs.is_empty() {
                    // Explicit edges keep their order with implied ones.
                    edges.flush(tx, run)?;
                    for r in refs {
                        implied.push_str(&r.node);
                        implied.push_str(id);
                        implied.maybe_flush(tx, run)?;
                    }
                }
            }
            Mutation::AddEdge { from, to, attrs } => {
                implied.flush(tx, run)?;
                edges.push_str(from);
                edges.push_str(to);
                edges.push_json(attrs);
                edges.maybe_flush(tx, run)?;
            }
            other => {
                nodes.flush(tx, run)?;
                edges.flush(tx, run)?;
                implied.flush(tx, run)?;
                write_mutation(tx, run, other)?;
            }
        }
    }
    nodes.flush(tx, run)?;
    edges.flush(tx, run)?;
    implied.flush(tx, run)
}

fn write_mutation(tx: &Transaction<'_>, run: &str, m: &Mutation) -> rusqlite::Result<()> {
    match m {
        Mutation::AddNode {
            id,
            task,
            inputs,
            attrs,
        } => {
            tx.prepare_cached(
                "INSERT INTO nodes (run, id, task, inputs, attrs, state) VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            )?
            .execute(params![run, id, to_json(task), to_json(inputs), to_json(attrs)])?;
            let mut implied = tx.prepare_cached(
                "INSERT OR IGNORE INTO edges (run, src, dst, attrs) VALUES (?1, ?2, ?3, '{}')",
            )?;
            for r in output_refs(inputs).unwrap_or_default() {
                implied.execute(params![run, r.node, id])?;
            }
        }
        Mutation::AddEdge { from, to, attrs } => {
            tx.prepare_cached("INSERT INTO edges (run, src, dst, attrs) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![run, from, to, to_json(attrs)])?;
        }
        Mutation::SetAttrs {
            node: Some(n),
            attrs,
            ..
        } => {
            let current: String = tx.query_row(
                "SELECT attrs FROM nodes WHERE run = ?1 AND id = ?2",
                params![run, n],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE nodes SET attrs = ?3 WHERE run = ?1 AND id = ?2",
                params![run, n, merged(&current, attrs)],
            )?;
        }
        Mutation::SetAttrs {
            edge: Some(e),
            attrs,
            ..
        } => {
            let current: String = tx.query_row(
                "SELECT attrs FROM edges WHERE run = ?1 AND src = ?2 AND dst = ?3",
                params![run, e.from, e.to],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE edges SET attrs = ?4 WHERE run = ?1 AND src = ?2 AND dst = ?3",
                params![run, e.from, e.to, merged(&current, attrs)],
            )?;
        }
        Mutation::SetAttrs { .. } => {}
        Mutation::AddPromise { promise } => {
            tx.prepare_cached("INSERT INTO promises (run, promise) VALUES (?1, ?2)")?
                .execute(params![run, to_json(promise)])?;
        }
    }
    Ok(())
}

fn rewrite_graph(tx: &Transaction<'_>, run: &str, state: &RunState) -> rusqlite::Result<()> {
    for table in ["nodes", "edges", "outputs", "promises"] {
        tx.execute(&format!("DELETE FROM {table} WHERE run = ?1"), [run])?;
    }
    let g = &state.graph;
    for (n, f) in g.nodes().iter().zip(&state.facts) {
        tx.prepare_cached(
            "INSERT INTO nodes (run, id, task, inputs, attrs, state, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            run,
            n.id,
            to_json(&n.task),
            to_json(&n.inputs),
            to_json(&n.attrs),
            n.state.as_str(),
            f.started_at,
            f.finished_at
        ])?;
        if let Some(v) = &f.output {
            tx.prepare_cached("INSERT INTO outputs (run, node, value) VALUES (?1, ?2, ?3)")?
                .execute(params![run, n.id, to_json(v)])?;
        }
    }
    for e in g.edges() {
        tx.prepare_cached("INSERT INTO edges (run, src, dst, attrs) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![
                run,
                g.node(e.from).id,
                g.node(e.to).id,
                to_json(&e.attrs)
            ])?;
    }
    for p in g.promises() {
        tx.prepare_cached("INSERT INTO promises (run, promise) VALUES (?1, ?2)")?
            .execute(params![run, to_json(p)])?;
    }
    // Attempts of retracted nodes live on in the event log only.
    tx.execute(
        "DELETE FROM attempts WHERE run = ?1 AND node NOT IN (SELECT id FROM nodes WHERE run = ?1)",
        [run],
    )?;
    Ok(())
}

fn merged(current: &str, patch: &Attrs) -> String {
    let mut attrs: Attrs = serde_json::from_str(current).unwrap_or_default();
    merge_attrs(&mut attrs, patch);
    to_json(&attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::model::{output, EdgeRef, Task};
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
                attrs: if i % 7 == 0 { attrs.clone() } else { Attrs::new() },
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
}
