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

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::lease::{self, Lease, Owner, OwnerRecord};
use super::{
    Fire, LogLine, Pending, Pushed, Registration, RunFilter, RunSample, RunSummary, Signal,
    SignalId, Store, TaskSample, Timer, TokenRecord, UserRecord,
};
use crate::error::{Error, Result};
use crate::history::{
    AttemptRecord, EdgeExport, Event, EventKind, NodeExport, RunExport, RunState,
};
use crate::model::{Origin, RunStatus, Task};

/// The environment variable that overrides the database path.
pub const DB_ENV: &str = "ORCH_DB";

mod access;
mod checkpoint;
mod queue;
mod schema;
#[cfg(test)]
mod tests;
pub(in crate::store) mod views;

use schema::{
    MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4, MIGRATE_5_TO_6, MIGRATE_5_TO_6_RUNNERS, NOW_MS,
    READ_ONLY_2_AS_3, READ_ONLY_3_AS_4, READ_ONLY_4_AS_5, READ_ONLY_5_AS_6, SCHEMA, SCHEMA_VERSION,
};
use views::{
    rewrite_graph, set_last_seq, write_event, write_events, write_mutations, Filled,
    RegistrationView,
};

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

/// Refuses a PostgreSQL URL given where a SQLite file is expected (it
/// would become a folder named after it, password included): the message
/// never repeats the URL.
fn not_a_url(path: &Path) -> Result<()> {
    if super::is_postgres_url(&path.to_string_lossy()) {
        return Err(Error::Refused {
            what: "the database".into(),
            message: "it is a PostgreSQL URL, and this command (or program) opens SQLite files \
                      only; `orch serve`, `orch user`, `orch token` and `PgStore` (feature \
                      `postgres`) take PostgreSQL URLs, other commands reach such a database \
                      through `orch --server URL`"
                .into(),
        });
    }
    Ok(())
}

/// `path`, or an error naming it when there is no such file.
fn must_exist(path: &Path) -> Result<PathBuf> {
    not_a_url(path)?;
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
    /// The WAL's checkpoints, for a store that writes (dropped after the
    /// connection: its thread closes the file last).
    checkpointer: Option<checkpoint::Checkpointer>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("checkpointer", &self.checkpointer.is_some())
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
        not_a_url(&path)?;
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
        let mut conn = match mode {
            Mode::ReadOnly => Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
            _ => Connection::open(&path),
        }
        .map_err(wrapper(&path))?;
        SqliteStore::init(&conn, &path, mode)?;
        let checkpointer = match mode {
            Mode::ReadOnly => None,
            _ => Some(checkpoint::Checkpointer::attach(&mut conn, &path)?),
        };
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            checkpointer,
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
        SqliteStore::recognise(conn, path, mode)?;
        if mode == Mode::ReadOnly && version == 2 {
            // An older orch's database, read by this one without changing it.
            conn.execute_batch(READ_ONLY_2_AS_3)
                .map_err(wrapper(path))?;
        }
        if mode == Mode::ReadOnly && (2..=3).contains(&version) {
            conn.execute_batch(READ_ONLY_3_AS_4)
                .map_err(wrapper(path))?;
        }
        if mode == Mode::ReadOnly && (2..=4).contains(&version) {
            conn.execute_batch(READ_ONLY_4_AS_5)
                .map_err(wrapper(path))?;
        }
        // (Version 2's view of the attempts has the runner already.)
        if mode == Mode::ReadOnly && (3..=5).contains(&version) {
            conn.execute_batch(READ_ONLY_5_AS_6)
                .map_err(wrapper(path))?;
        }
        if mode != Mode::ReadOnly {
            // Switching to WAL takes the file for a moment; another process
            // opening a new database at the same time may hold it, and
            // SQLite answers "locked" at once instead of waiting.
            retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))
                .map_err(wrapper(path))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(wrapper(path))?;
            // The migration, the schema and its version in one
            // transaction: a crash or a full disk halfway leaves the old
            // version whole. A database already at this version is not
            // written to at all.
            if version < SCHEMA_VERSION {
                retry_busy(|| {
                    SqliteStore::upgrade(conn).inspect_err(|_| {
                        let _ = conn.execute_batch("ROLLBACK");
                    })
                })
                .map_err(wrapper(path))?;
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
    fn recognise(conn: &Connection, path: &Path, mode: Mode) -> Result<()> {
        // The version read again with the tables, in one snapshot: another
        // process may have created the schema since the version was read.
        let (tables, ours, version): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE name IN ('runs', 'events')),
                        (SELECT user_version FROM pragma_user_version)
                 FROM sqlite_master WHERE type = 'table'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
            if (1..=2).contains(&version) {
                conn.execute_batch(MIGRATE_2_TO_3)?;
            }
            if (1..=3).contains(&version) {
                conn.execute_batch(MIGRATE_3_TO_4)?;
            }
            if (1..=5).contains(&version) {
                conn.execute_batch(MIGRATE_5_TO_6)?;
            }
            // (Older ones get the runners from `SCHEMA`.)
            if version == 5 {
                conn.execute_batch(MIGRATE_5_TO_6_RUNNERS)?;
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
            "SELECT workflow, status, reason, orchestrator_pid, created_at, finished_at, last_seq,
                    json_extract(config, '$.source') FROM runs WHERE id = ?1",
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
                    source: r
                        .get::<_, Option<String>>(7)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                })
            },
        )?;
        let mut attempts: std::collections::HashMap<String, Vec<AttemptRecord>> =
            Default::default();
        let mut stmt = c.prepare(
            "SELECT node, attempt, pid, started_at, finished_at, outcome, exit_code, error, files,
                    runner
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
                    files: match r.get::<_, Option<String>>(8)? {
                        Some(_) => json_col(r, 8)?,
                        None => Vec::new(),
                    },
                    runner: r.get(9)?,
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
                // An output that does not read back is a damaged
                // database, not a null.
                output: output
                    .map(|o| {
                        serde_json::from_str(&o).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                5,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })
                    })
                    .transpose()?,
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
        let taken: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM runs WHERE id = ?1)",
                [run],
                |r| r.get(0),
            )
            .map_err(wrap)?;
        if taken {
            return Err(Error::Refused {
                what: format!("run {run}"),
                message: "a run with this id exists already".into(),
            });
        }
        write_event(&tx, run, started, None).map_err(wrap)?;
        {
            // Serialised and dropped before the rows are written.
            let data = serde_json::to_string(&RegistrationView {
                origin: Origin::Registration,
                mutations: Filled(mutations),
            })
            .expect("orch values always serialise");
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (run, seq, at, kind, data) VALUES (?1, ?2, ?3, 'batch_committed', ?4)",
                )
                .map_err(wrap)?;
            insert.raw_bind_parameter(1, run).map_err(wrap)?;
            insert.raw_bind_parameter(2, seq as i64).map_err(wrap)?;
            insert.raw_bind_parameter(3, at).map_err(wrap)?;
            insert.raw_bind_parameter(4, data.as_str()).map_err(wrap)?;
            // SQLite binds a copy and builds the row from it: ours goes
            // before that (three copies of a 100,000-node registration's
            // 18 MB were 70 MB of the registration's peak).
            drop(data);
            insert.raw_execute().map_err(wrap)?;
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
        write_events(&tx, run, events, Some(state)).map_err(wrap)?;
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
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                        json_extract(config, '$.fired_at')
                 FROM runs ORDER BY created_at DESC, rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], access::summary_row)
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

    fn run_tail(&self, run: &str, after: u64, limit: usize) -> Result<super::RunTail> {
        let mut c = self.lock();
        // One read transaction: the status and the events agree.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.err(e))?;
        let head = tx
            .query_row(
                "SELECT status, last_seq FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((status, last)) = head else {
            return Err(Error::UnknownRun(run.to_string()));
        };
        let rows: Vec<(u64, String, String)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, at, data FROM events WHERE run = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(
                    params![
                        run,
                        after.min(i64::MAX as u64) as i64,
                        limit.min(i64::MAX as usize) as i64
                    ],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
                )
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            rows
        };
        tx.commit().map_err(|e| self.err(e))?;
        let events = rows
            .into_iter()
            .map(|(seq, at, data)| {
                let kind: EventKind = serde_json::from_str(&data).map_err(|e| Error::Corrupt {
                    path: self.path.clone(),
                    message: format!("run {run} event {seq} does not parse: {e}"),
                })?;
                Ok(Event { seq, at, kind })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(super::RunTail {
            events,
            status: status.parse().map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                message: format!("run {run} has the status {status:?}: {e}"),
            })?,
            last: last as u64,
        })
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
        self.log_lines(run, node, attempt, (0, 0), None)
    }

    fn logs_after(
        &self,
        run: &str,
        node: &str,
        after: (u32, u32),
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        self.log_lines(run, node, None, after, Some(limit))
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
    fn claim_fire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<bool> {
        let c = self.lock();
        let n = c
            .prepare_cached(&format!(
                "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                 VALUES (?1, ?2, ?3, ?4, {NOW_MS}) ON CONFLICT DO NOTHING"
            ))
            .and_then(|mut s| s.execute(params![workflow, at_ms, run, kind]))
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn refire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<()> {
        let c = self.lock();
        c.prepare_cached(&format!(
            "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
             VALUES (?1, ?2, ?3, ?4, {NOW_MS})
             ON CONFLICT (workflow, fire_at) DO UPDATE SET run = ?3, kind = ?4, claimed_at = {NOW_MS}"
        ))
        .and_then(|mut s| s.execute(params![workflow, at_ms, run, kind]))
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT f.fire_at, f.run, f.kind, r.status, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE f.workflow = ?1 AND f.fire_at BETWEEN ?2 AND ?3
                 ORDER BY f.fire_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workflow, from_ms, to_ms], |r| {
                let status: Option<String> = r.get(3)?;
                Ok(Fire {
                    workflow: workflow.to_string(),
                    at_ms: r.get(0)?,
                    run: r.get(1)?,
                    kind: r.get(2)?,
                    status: status.and_then(|s| s.parse().ok()),
                    claimed_ms: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn last_fire(&self, workflow: &str) -> Result<Option<i64>> {
        let c = self.lock();
        c.query_row(
            "SELECT max(fire_at) FROM fires WHERE workflow = ?1",
            [workflow],
            |r| r.get(0),
        )
        .map_err(|e| self.err(e))
    }

    fn active_runs(&self, workflow: &str) -> Result<u64> {
        let c = self.lock();
        c.query_row(
            "SELECT count(*) FROM runs WHERE workflow = ?1 AND status IN ('running', 'paused')",
            [workflow],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| self.err(e))
    }

    fn push_event(&self, key: &str, payload: &Value) -> Result<(i64, Vec<(String, String)>)> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&wrap)?;
        let now = crate::time::now();
        let value = to_json(payload);
        tx.execute(
            "INSERT INTO pushes (key, payload, pushed_at) VALUES (?1, ?2, ?3)",
            params![key, value, now],
        )
        .map_err(&wrap)?;
        let id = tx.last_insert_rowid();
        let listening: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT n.run, n.id FROM nodes n JOIN runs r ON r.id = n.run
                     WHERE r.finished_at IS NULL
                       AND json_extract(n.task, '$.kind') = 'input'
                       AND json_extract(n.task, '$.listen') = ?1
                       AND n.state NOT IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')
                     ORDER BY n.run, n.id",
                )
                .map_err(&wrap)?;
            let rows = stmt
                .query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&wrap)?;
            rows
        };
        for (run, node) in &listening {
            tx.execute(
                "INSERT INTO signals (run, kind, node, value, requested_at) VALUES (?1, 'input', ?2, ?3, ?4)",
                params![run, node, value, now],
            )
            .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)?;
        Ok((id, listening))
    }

    fn events_after(&self, after: i64, since_ms: i64, limit: usize) -> Result<Vec<Pushed>> {
        let c = self.lock();
        let since = crate::time::format_millis(since_ms.max(0) as u64);
        let mut stmt = c
            .prepare_cached(
                "SELECT id, key, payload, pushed_at FROM pushes
                 WHERE id > ?1 AND pushed_at >= ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after, since, limit as i64], |r| {
                Ok(Pushed {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    payload: json_col(r, 2)?,
                    pushed_at: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn claim_event_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool> {
        let c = self.lock();
        let n = c
            .prepare_cached(
                &format!("INSERT INTO push_runs (push, workflow, run, claimed_at) VALUES (?1, ?2, ?3, {NOW_MS}) ON CONFLICT DO NOTHING"),
            )
            .and_then(|mut s| s.execute(params![event, workflow, run]))
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE r.id IS NULL AND f.claimed_at BETWEEN ?1 AND ?2
                 ORDER BY f.claimed_at, f.workflow, f.fire_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since_ms, until_ms], |r| {
                Ok(Fire {
                    workflow: r.get(0)?,
                    at_ms: r.get(1)?,
                    run: r.get(2)?,
                    kind: r.get(3)?,
                    status: None,
                    claimed_ms: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn orphaned_event_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT p.id, p.key, p.payload, p.pushed_at, r.workflow, r.run FROM push_runs r
                 JOIN pushes p ON p.id = r.push
                 LEFT JOIN runs x ON x.id = r.run
                 WHERE x.id IS NULL AND r.claimed_at BETWEEN ?1 AND ?2
                 ORDER BY p.id, r.workflow",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since_ms, until_ms], |r| {
                Ok((
                    Pushed {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        payload: json_col(r, 2)?,
                        pushed_at: r.get(3)?,
                    },
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn add_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64> {
        let c = self.lock();
        c.execute(
            &format!(
                "INSERT INTO timers (workflow, at_ms, cron, timezone, created_at) VALUES (?1, ?2, ?3, ?4, {NOW_MS})"
            ),
            params![workflow, at_ms, cron, timezone],
        )
        .map_err(|e| self.err(e))?;
        Ok(c.last_insert_rowid())
    }

    fn stop_timer(&self, id: i64) -> Result<bool> {
        let c = self.lock();
        let n = c
            .execute(
                &format!(
                    "UPDATE timers SET stopped_at = {NOW_MS} WHERE id = ?1 AND stopped_at IS NULL"
                ),
                [id],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn timers(&self) -> Result<Vec<Timer>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT id, workflow, at_ms, cron, timezone, created_at, stopped_at FROM timers ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Timer {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    at_ms: r.get(2)?,
                    cron: r.get(3)?,
                    timezone: r.get(4)?,
                    created_ms: r.get(5)?,
                    stopped_ms: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    fn runs_page(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        self.page_of_runs(filter)
    }

    fn run_counts(&self) -> Result<Vec<(String, u64)>> {
        self.counts_of_runs()
    }

    fn add_user(&self, user: &UserRecord) -> Result<bool> {
        self.insert_user(user)
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.read_user(name)
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.read_users()
    }

    fn update_user(
        &self,
        name: &str,
        role: Option<crate::access::Role>,
        password_hash: Option<&str>,
    ) -> Result<bool> {
        self.change_user(name, role, password_hash)
    }

    fn remove_user(&self, name: &str) -> Result<bool> {
        self.delete_user(name)
    }

    fn add_token(&self, token: &TokenRecord) -> Result<()> {
        self.insert_token(token)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.read_token(id)
    }

    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.read_tokens(user)
    }

    fn revoke_token(&self, id: &str) -> Result<bool> {
        self.revoke(id)
    }

    fn register_runner(
        &self,
        spec: &super::queue::RunnerSpec,
        lease_ms: i64,
    ) -> Result<super::queue::RunnerRecord> {
        self.q_register_runner(spec, lease_ms)
    }

    fn heartbeat(
        &self,
        id: &str,
        holding: &[crate::exec::AttemptId],
        lease_ms: i64,
    ) -> Result<super::queue::Beat> {
        self.q_heartbeat(id, holding, lease_ms)
    }

    fn runners(&self) -> Result<(Vec<super::queue::RunnerRecord>, i64)> {
        self.q_runners()
    }

    fn drain_runner(&self, id: &str) -> Result<bool> {
        self.q_drain_runner(id)
    }

    fn enqueue(&self, attempt: &super::queue::QueuedAttempt) -> Result<()> {
        self.q_enqueue(attempt)
    }

    fn claim(
        &self,
        runner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<super::queue::QueuedAttempt>> {
        self.q_claim(runner, max, lease_ms)
    }

    fn claim_holds(&self, attempt: &crate::exec::AttemptId, runner: &str) -> Result<()> {
        self.q_claim_holds(attempt, runner)
    }

    fn finish_claim(&self, attempt: &crate::exec::AttemptId, runner: &str) -> Result<()> {
        self.q_finish_claim(attempt, runner)
    }

    fn lost_claims(
        &self,
        attempts: &[crate::exec::AttemptId],
    ) -> Result<Vec<crate::exec::AttemptId>> {
        self.q_lost_claims(attempts)
    }

    fn dequeue(&self, attempt: &crate::exec::AttemptId) -> Result<bool> {
        self.q_dequeue(attempt)
    }

    fn queue_rows(&self) -> Result<(Vec<super::queue::QueueRow>, i64)> {
        self.q_queue_rows()
    }

    fn claims(&self, limit: usize) -> Result<Vec<super::queue::Claim>> {
        self.q_claims(limit)
    }

    fn clear_queue(&self, key: &str) -> Result<Vec<crate::exec::AttemptId>> {
        self.q_clear_queue(key)
    }

    fn task_durations(
        &self,
        workflow: &str,
        runs: usize,
        per_task: usize,
    ) -> Result<Vec<TaskSample>> {
        // The workflow's runs through `runs_workflow_created`, their attempts and
        // nodes through their primary keys; the window keeps the newest
        // `per_task` of each task name.
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "WITH recent AS (
                     SELECT id FROM runs WHERE workflow = ?1
                     ORDER BY created_at DESC, rowid DESC LIMIT ?2
                 ), ok AS (
                     SELECT a.run, a.node, a.attempt, a.started_at, a.finished_at,
                            json_extract(n.task, '$.name') AS task
                     FROM recent r
                     JOIN attempts a ON a.run = r.id
                     JOIN nodes n ON n.run = a.run AND n.id = a.node
                     WHERE a.outcome = 'succeeded' AND a.finished_at IS NOT NULL
                 ), ranked AS (
                     SELECT *, row_number() OVER (
                         PARTITION BY task ORDER BY finished_at DESC, run, node, attempt
                     ) AS k FROM ok
                 )
                 SELECT run, node, task, attempt, started_at, finished_at FROM ranked
                 WHERE k <= ?3 ORDER BY task, k",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String, i64, String, String)> = stmt
            .query_map(params![workflow, clamp(runs), clamp(per_task)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, node, task, attempt, started, finished)| {
                let (s, f) = (millis(&started)?, millis(&finished)?);
                Some(TaskSample::new(&run, &node, &task, attempt as u32, s, f))
            })
            .collect())
    }

    fn run_durations(&self, workflow: &str, limit: usize) -> Result<Vec<RunSample>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT id, created_at, finished_at FROM runs
                 WHERE workflow = ?1 AND status = 'succeeded' AND finished_at IS NOT NULL
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map(params![workflow, clamp(limit)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, started, finished)| {
                Some(RunSample::new(&run, millis(&started)?, millis(&finished)?))
            })
            .collect())
    }

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
        if !matches!(task.exec, crate::model::Exec::Input { .. }) {
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

/// `f`, tried again for up to 10 s while SQLite answers "busy" or
/// "locked" without waiting (a schema change racing another process's).
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A count as SQLite's `LIMIT` takes it.
fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored timestamp in milliseconds since the epoch.
fn millis(t: &str) -> Option<i64> {
    crate::time::parse_millis(t).and_then(|ms| i64::try_from(ms).ok())
}

pub(in crate::store) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("orch values always serialise")
}

/// Appends one event and applies it to the materialized tables.
/// Turns SQLite errors into [`Error::Store`] naming the database file.
pub(super) fn wrapper(path: &Path) -> impl Fn(rusqlite::Error) -> Error + Copy + '_ {
    move |source| Error::Store {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

impl SqliteStore {
    /// The log lines of a node's attempts (all attempts when `attempt` is
    /// `None`) after line `after.1` of attempt `after.0`, in order, at most
    /// `limit` of them.
    fn log_lines(
        &self,
        run: &str,
        node: &str,
        attempt: Option<u32>,
        after: (u32, u32),
        limit: Option<usize>,
    ) -> Result<Vec<LogLine>> {
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
                   AND (attempt > ?4 OR (attempt = ?4 AND line > ?5))
                 ORDER BY attempt, line LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    run,
                    node,
                    attempt,
                    after.0,
                    after.1,
                    // SQLite's "no limit".
                    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
                ],
                |r| {
                    Ok(LogLine {
                        node: node.to_string(),
                        attempt: r.get(0)?,
                        line: r.get(1)?,
                        stream: r.get(2)?,
                        text: r.get(3)?,
                    })
                },
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }
}
