//! The SQLite store: one file per workspace, WAL, an append-only event log
//! plus materialized tables (runs, nodes, edges, attempts, outputs,
//! promises, violations, logs), run leases and stored signals.
//!
//! Every write is one transaction that appends events and updates the
//! tables together, so the tables always equal the fold of the log (see
//! [`Store::replay`]). One connection serves every run of an engine: its
//! writes are short transactions taken in turn.
//!
//! [`Store`]'s methods hand their work to a module per concern: `open`
//! (recognising and upgrading a file), `owners` (run leases), `history`
//! (reads of runs and their history), `signals` (signals and pushed
//! events), `schedules` (fires and timers), `queue` (runners and claims)
//! and `access` (users, tokens, pages of runs); `views` writes the tables.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde_json::Value;

use super::lease::{Lease, Owner, OwnerRecord};
use super::sql::{clamp, millis};
use super::{
    Fire, LogLine, Pending, Pushed, Registration, RunFilter, RunSample, RunSummary, Signal,
    SignalId, Store, TaskSample, Timer, TokenRecord, UserRecord,
};
use crate::error::{Error, Result};
use crate::history::{Event, EventKind, RunExport, RunState};
use crate::model::{Origin, Task};

/// The environment variable that overrides the database path.
pub const DB_ENV: &str = "ORCH_DB";

mod access;
mod checkpoint;
mod history;
mod open;
mod owners;
mod queue;
mod schedules;
mod schema;
mod signals;
#[cfg(test)]
mod tests;
pub(in crate::store) mod views;

use schema::NOW_MS;
// The tests read it through `super::*`.
#[cfg(test)]
use schema::SCHEMA_VERSION;
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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
        self.take_over_run(run, owner, force)
    }

    fn renew(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>> {
        self.renew_leases(owner, leases)
    }

    fn release(&self, lease: &Lease) -> Result<()> {
        self.release_lease(lease)
    }

    fn owner(&self, run: &str) -> Result<OwnerRecord> {
        self.read_owner(run)
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

    fn resolve_run(&self, what: &str) -> Result<String> {
        self.find_run(what)
    }

    fn runs(&self) -> Result<Vec<RunSummary>> {
        self.all_runs()
    }

    fn events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        self.read_events(run, upto)
    }

    fn run_tail(&self, run: &str, after: u64, limit: usize) -> Result<super::RunTail> {
        self.read_tail(run, after, limit)
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
        self.insert_signal(run, signal)
    }

    fn pending(&self) -> Result<Vec<Pending>> {
        self.read_pending()
    }

    fn claim_fire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<bool> {
        self.insert_fire(workflow, at_ms, run, kind)
    }

    fn refire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<()> {
        self.replace_fire(workflow, at_ms, run, kind)
    }

    fn fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>> {
        self.read_fires(workflow, from_ms, to_ms)
    }

    fn last_fire(&self, workflow: &str) -> Result<Option<i64>> {
        self.read_last_fire(workflow)
    }

    fn active_runs(&self, workflow: &str) -> Result<u64> {
        self.count_active_runs(workflow)
    }

    fn push_event(&self, key: &str, payload: &Value) -> Result<(i64, Vec<(String, String)>)> {
        self.insert_push(key, payload)
    }

    fn events_after(&self, after: i64, since_ms: i64, limit: usize) -> Result<Vec<Pushed>> {
        self.read_pushes(after, since_ms, limit)
    }

    fn claim_event_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool> {
        self.insert_push_run(event, workflow, run)
    }

    fn orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>> {
        self.read_orphaned_fires(since_ms, until_ms)
    }

    fn orphaned_event_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>> {
        self.read_orphaned_push_runs(since_ms, until_ms)
    }

    fn add_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64> {
        self.insert_timer(workflow, at_ms, cron, timezone)
    }

    fn stop_timer(&self, id: i64) -> Result<bool> {
        self.end_timer(id)
    }

    fn timers(&self) -> Result<Vec<Timer>> {
        self.read_timers()
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

    fn enqueue_for(
        &self,
        attempt: &super::queue::QueuedAttempt,
        runner: &str,
        lease_ms: i64,
    ) -> Result<bool> {
        self.q_enqueue_for(attempt, runner, lease_ms)
    }

    fn release_claim(&self, attempt: &crate::exec::AttemptId, runner: &str) -> Result<bool> {
        self.q_release_claim(attempt, runner)
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
        self.read_task_durations(workflow, runs, per_task)
    }

    fn run_durations(&self, workflow: &str, limit: usize) -> Result<Vec<RunSample>> {
        self.read_run_durations(workflow, limit)
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

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
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
