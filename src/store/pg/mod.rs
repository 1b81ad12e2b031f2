//! The PostgreSQL store: the same history and views as the SQLite store,
//! in a database several engines (and servers) share.
//!
//! Every write is one transaction; the views are copied from the fold the
//! engine hands over, never computed in SQL. Races are settled by the
//! database: a run's row is locked (`FOR UPDATE`) by the fence of a
//! commit, a takeover and a renewal, so a takeover waits for a commit in
//! flight and the stale owner's next commit is refused; fire times and
//! event runs are claimed by `INSERT … ON CONFLICT DO NOTHING` on their
//! keys, so of two claimers exactly one wins. Leases expire by the
//! database's clock (`now()`).
//!
//! See `conn` for how the sync [`Store`] methods reach the driver from
//! inside and outside a tokio runtime.

use std::path::PathBuf;

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
use crate::store::sqlite::to_json;
use crate::store::sqlite::views::{Filled, RegistrationView};

mod access;
#[cfg(feature = "testing")]
pub mod cluster;
mod conn;
mod queue;
#[cfg(all(test, feature = "testing"))]
mod tests;
mod views;

use conn::redact;
use conn::{off_runtime, store_error, Checkout, Pool, Tx};

/// The schema migrations, in order: migration `i` brings a database from
/// version `i` to `i + 1`. A database newer than the last is refused.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("queue.sql"),
    include_str!("runs_time.sql"),
    include_str!("runners_recorded.sql"),
    include_str!("queue_claims.sql"),
];

/// The schema version this orch writes.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The store's clock, in milliseconds since the Unix epoch: leases expire
/// by it, never by a host's idea of the time.
const NOW_MS: &str = "(floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint";

/// A key for the advisory lock that serialises schema upgrades of
/// engines starting together.
const MIGRATION_LOCK: i64 = 0x6f72_6368_0001;

/// A read that tells whether a write whose `COMMIT` went unanswered is
/// stored (see [`PgStore::transact`]).
type Landed<'a> = dyn Fn(&mut Tx<'_>) -> Result<bool> + Sync + 'a;

/// How a read-only transaction that sees one snapshot begins.
const READ_SNAPSHOT: &str = "ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// How many connections a store opens at most.
const POOL_SIZE: usize = 4;

/// How long a call whose connection was lost before it committed (the
/// database restarting, a network cut) keeps trying again on new
/// connections before its error reaches the caller, unless
/// [`PgStore::reconnect_for`] says otherwise.
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// An orch database in PostgreSQL (feature `postgres`).
///
/// ```no_run
/// use std::sync::Arc;
/// use orch::store::{PgStore, Store};
/// let store = PgStore::connect("postgres://orch:secret@127.0.0.1:5432/orch")?;
/// // Messages name the database without its password.
/// assert_eq!(store.location(), "postgres://orch@127.0.0.1:5432/orch");
/// let engine = orch::Engine::new(Arc::new(store), ".orch");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PgStore {
    pool: Pool,
    reconnect: std::time::Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.pool.loc)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.pool.close();
    }
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string; no TLS), creating orch's tables or
    /// upgrading them to this version. The database must exist; orch's
    /// tables live in the connection's schema (`search_path`).
    pub fn connect(url: &str) -> Result<PgStore> {
        let loc = redact(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            store_error(&loc, format!("not a PostgreSQL URL: {e}"))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("orch");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let store = PgStore {
            pool: Pool::new(config, loc, POOL_SIZE),
            reconnect: RECONNECT_FOR,
        };
        store.with(|c| {
            let mut tx = c.begin("")?;
            PgStore::migrate(&mut tx, &store.pool.loc)?;
            tx.commit()
        })?;
        Ok(store)
    }

    /// The same store, trying a call whose connection was lost again for
    /// up to `d` (default 60 s; zero: never) before the
    /// error reaches the caller. Only a call that committed nothing is
    /// tried again: a connection lost during `COMMIT` leaves its outcome
    /// unknown, and that error is returned at once.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let store = orch::store::PgStore::connect("postgres://orch@127.0.0.1/orch")?
    ///     .reconnect_for(Duration::from_secs(5));
    /// # Ok::<(), orch::Error>(())
    /// ```
    pub fn reconnect_for(mut self, d: std::time::Duration) -> PgStore {
        self.reconnect = d;
        self
    }

    /// Creates or upgrades the schema, under an advisory lock that makes
    /// engines starting together take turns.
    fn migrate(tx: &mut Tx<'_>, loc: &str) -> Result<()> {
        tx.exec("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch("CREATE TABLE IF NOT EXISTS orch_schema (version BIGINT NOT NULL)")?;
        let row = tx.row("SELECT max(version) FROM orch_schema", &[])?;
        let version: i64 = match row {
            Some(r) => tx.get::<Option<i64>>(&r, 0)?.unwrap_or(0),
            None => 0,
        };
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt {
                path: PathBuf::from(loc),
                message: format!(
                    "schema version {version} is newer than this orch understands ({SCHEMA_VERSION})"
                ),
            });
        }
        for step in &MIGRATIONS[version as usize..] {
            tx.batch(step)?;
        }
        if version < SCHEMA_VERSION {
            tx.exec("DELETE FROM orch_schema", &[])?;
            tx.exec(
                "INSERT INTO orch_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )?;
        }
        Ok(())
    }

    /// Runs `f` on a connection, off any tokio runtime.
    fn with<T: Send>(&self, f: impl FnOnce(&mut Checkout<'_>) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let mut c = self.pool.get()?;
            f(&mut c)
        })
    }

    /// Runs `f` in one transaction that begins with `BEGIN {mode}` and is
    /// committed when `f` answers `Ok`. When the connection is lost
    /// before the commit (see [`conn::is_lost`]), the transaction rolled
    /// back with it, so `f` runs again on a new connection, with a
    /// growing pause, for up to [`PgStore::reconnect_for`]: the engines and
    /// servers of a database that restarts carry on once it is back.
    ///
    /// A connection lost during `COMMIT` leaves the outcome unknown: with
    /// `landed` (a read that tells whether this very write is stored),
    /// the answer is looked up once the database answers, and `f` runs
    /// again only when it did not land; without, the error is returned.
    fn transact<T: Send>(
        &self,
        mode: &str,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T> + Send,
        landed: Option<&Landed<'_>>,
    ) -> Result<T> {
        /// How one try ended.
        enum Step<T> {
            Done(T),
            /// Committed, or not: `landed` will tell.
            Unknown(T, Error),
            /// What `landed` said.
            Probed(bool),
        }
        let read_only = mode.ends_with("READ ONLY");
        off_runtime(|| {
            let mut pause = std::time::Duration::from_millis(20);
            let mut since: Option<std::time::Instant> = None;
            // The value of a write whose COMMIT's outcome is unknown, and
            // the error that left it so.
            let mut unknown: Option<(T, Error)> = None;
            loop {
                let tried = self.pool.get().and_then(|mut c| {
                    if let (Some(_), Some(landed)) = (&unknown, landed) {
                        let mut tx = c.begin(READ_SNAPSHOT)?;
                        let yes = landed(&mut tx)?;
                        let _ = tx.commit();
                        return Ok(Step::Probed(yes));
                    }
                    let mut tx = c.begin(mode)?;
                    let v = f(&mut tx)?;
                    match tx.commit() {
                        Ok(()) => Ok(Step::Done(v)),
                        // What a read-only transaction read came from one
                        // snapshot whatever became of its COMMIT.
                        Err(_) if read_only => Ok(Step::Done(v)),
                        Err(e) if landed.is_some() && conn::in_commit(&e) => {
                            Ok(Step::Unknown(v, e))
                        }
                        Err(e) => Err(e),
                    }
                });
                let e = match tried {
                    Ok(Step::Done(v)) => return Ok(self.answered(since, v)),
                    Ok(Step::Probed(true)) => {
                        let (v, _) = unknown.take().expect("probed an unknown commit");
                        return Ok(self.answered(since, v));
                    }
                    Ok(Step::Probed(false)) => {
                        unknown = None;
                        continue;
                    }
                    Ok(Step::Unknown(v, e)) => {
                        tracing::warn!(db = %self.pool.loc, error = %e,
                            "lost the database connection during a commit; looking up whether it landed");
                        unknown = Some((v, e));
                        since.get_or_insert_with(std::time::Instant::now);
                        self.pool.close();
                        continue;
                    }
                    Err(e) if conn::is_lost(&e) => e,
                    Err(e) => return Err(e),
                };
                let first = *since.get_or_insert_with(std::time::Instant::now);
                if first.elapsed() >= self.reconnect {
                    return Err(unknown.map_or(e, |(_, e)| e));
                }
                if pause.as_millis() == 20 {
                    tracing::warn!(db = %self.pool.loc, error = %e,
                        "lost the database connection; trying again on a new one for up to {:.1} s",
                        self.reconnect.as_secs_f64());
                }
                // The others are likely dead too.
                self.pool.close();
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
        })
    }

    /// `v`, saying so in the log when it came after a lost connection.
    fn answered<T>(&self, since: Option<std::time::Instant>, v: T) -> T {
        if since.is_some() {
            tracing::info!(db = %self.pool.loc, "the database answers again");
        }
        v
    }

    /// Runs `f` in one read-committed transaction, committed when it
    /// answers `Ok` (again after a lost connection: [`PgStore::transact`]).
    fn write<T: Send>(&self, f: impl FnMut(&mut Tx<'_>) -> Result<T> + Send) -> Result<T> {
        self.transact("", f, None)
    }

    /// Runs `sql`, one statement that commits on its own (see
    /// [`Checkout::exec_alone`]): the rows it changed. Tried once: its
    /// callers fall back to a [`PgStore::write`] that says what the
    /// statement could not (why it changed nothing, or whether it landed
    /// when the connection was lost).
    fn write_alone(&self, sql: &str, params: &conn::Params<'_>) -> Result<u64> {
        self.with(|c| c.exec_alone(sql, params))
    }

    /// Runs `f` in one read-only transaction that sees one snapshot.
    fn read<T: Send>(&self, f: impl FnMut(&mut Tx<'_>) -> Result<T> + Send) -> Result<T> {
        self.transact(READ_SNAPSHOT, f, None)
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt {
            path: PathBuf::from(&self.pool.loc),
            message,
        }
    }

    /// A run's owner row, the run's status, and the database's clock.
    fn owner_row(
        tx: &mut Tx<'_>,
        run: &str,
        lock: bool,
    ) -> Result<Option<(OwnerRecord, String, i64)>> {
        let sql = format!(
            "SELECT owner, epoch, lease_until, status, {NOW_MS} FROM runs WHERE id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let Some(r) = tx.row(&sql, &[&run])? else {
            return Ok(None);
        };
        let owner: Option<String> = tx.get(&r, 0)?;
        Ok(Some((
            OwnerRecord {
                owner: owner.and_then(|o| serde_json::from_str(&o).ok()),
                epoch: tx.get::<i64>(&r, 1)? as u64,
                until_ms: tx.get(&r, 2)?,
            },
            tx.get(&r, 3)?,
            tx.get(&r, 4)?,
        )))
    }

    /// The error for a write fenced off `lease`.
    fn fenced(tx: &mut Tx<'_>, lease: &Lease) -> Error {
        let now = PgStore::owner_row(tx, &lease.run, false).ok().flatten();
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

    /// A node's task and state, from its row.
    fn node_row(
        &self,
        tx: &mut Tx<'_>,
        run: &str,
        node: &str,
    ) -> Result<Option<(Task, crate::model::NodeState)>> {
        let Some(r) = tx.row(
            "SELECT task, state FROM nodes WHERE run = $1 AND id = $2",
            &[&run, &node],
        )?
        else {
            return Ok(None);
        };
        let (task, state): (String, String) = (tx.get(&r, 0)?, tx.get(&r, 1)?);
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            self.corrupt(format!(
                "run {run} node `{node}` has an unreadable {what}: {e}"
            ))
        };
        let task: Task = serde_json::from_str(&task).map_err(|e| corrupt("task", &e))?;
        let state = state.parse().map_err(|e: String| corrupt("state", &e))?;
        Ok(Some((task, state)))
    }

    /// Refuses an input for a node that is not an input node, or that
    /// finished.
    fn check_input(&self, tx: &mut Tx<'_>, run: &str, node: &str) -> Result<()> {
        let (task, state) = self
            .node_row(tx, run, node)?
            .ok_or_else(|| Error::UnknownNode {
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

    /// A JSON column.
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        tx: &Tx<'_>,
        r: &postgres::Row,
        i: usize,
        what: &str,
    ) -> Result<T> {
        let s: String = tx.get(r, i)?;
        serde_json::from_str(&s).map_err(|e| self.corrupt(format!("{what} does not parse: {e}")))
    }

    fn read_export(&self, tx: &mut Tx<'_>, run: &str) -> Result<RunExport> {
        let Some(r) = tx.row(
            "SELECT workflow, status, reason, orchestrator_pid, created_at, finished_at, last_seq,
                    (config::json -> 'source')::text
             FROM runs WHERE id = $1",
            &[&run],
        )?
        else {
            return Err(Error::UnknownRun(run.to_string()));
        };
        let status: String = tx.get(&r, 1)?;
        let mut ex = RunExport {
            run: run.to_string(),
            workflow: tx.get(&r, 0)?,
            status: status.parse().unwrap_or(RunStatus::Failed),
            reason: tx.get(&r, 2)?,
            orchestrator_pid: tx.get::<Option<i64>>(&r, 3)?.map(|p| p as u32),
            created_at: tx.get(&r, 4)?,
            finished_at: tx.get(&r, 5)?,
            event: tx.get::<i64>(&r, 6)? as u64,
            nodes: Vec::new(),
            edges: Vec::new(),
            promises: Vec::new(),
            violations: Vec::new(),
            source: tx
                .get::<Option<String>>(&r, 7)?
                .and_then(|s| serde_json::from_str(&s).ok()),
        };
        let mut attempts: std::collections::HashMap<String, Vec<AttemptRecord>> =
            Default::default();
        for r in tx.rows(
            "SELECT node, attempt, pid, started_at, finished_at, outcome, exit_code, error, files,
                    runner
             FROM attempts WHERE run = $1 ORDER BY node, attempt",
            &[&run],
        )? {
            let outcome: Option<String> = tx.get(&r, 5)?;
            let files: Option<String> = tx.get(&r, 8)?;
            let a = AttemptRecord {
                attempt: tx.get::<i64>(&r, 1)? as u32,
                pid: tx.get::<Option<i64>>(&r, 2)?.map(|p| p as u32),
                started_at: tx.get(&r, 3)?,
                finished_at: tx.get(&r, 4)?,
                outcome: outcome.and_then(|o| o.parse().ok()),
                exit_code: tx.get::<Option<i64>>(&r, 6)?.map(|c| c as i32),
                error: tx.get(&r, 7)?,
                files: match files {
                    Some(_) => self.json(tx, &r, 8, "an attempt's files")?,
                    None => Vec::new(),
                },
                runner: tx.get(&r, 9)?,
            };
            attempts.entry(tx.get(&r, 0)?).or_default().push(a);
        }
        for r in tx.rows(
            "SELECT n.id, n.task, n.state, n.inputs, n.attrs, o.value, n.started_at, n.finished_at
             FROM nodes n LEFT JOIN outputs o ON o.run = n.run AND o.node = n.id
             WHERE n.run = $1 ORDER BY n.pos",
            &[&run],
        )? {
            let id: String = tx.get(&r, 0)?;
            let state: String = tx.get(&r, 2)?;
            let output: Option<String> = tx.get(&r, 5)?;
            ex.nodes.push(NodeExport {
                attempts: attempts.remove(&id).unwrap_or_default(),
                task: self.json(tx, &r, 1, "a node's task")?,
                state: state
                    .parse()
                    .map_err(|e: String| self.corrupt(format!("node `{id}`: {e}")))?,
                inputs: self.json(tx, &r, 3, "a node's inputs")?,
                attrs: self.json(tx, &r, 4, "a node's attributes")?,
                // An output that does not read back is a damaged
                // database, not a null.
                output: output
                    .map(|o| {
                        serde_json::from_str(&o).map_err(|e| {
                            self.corrupt(format!("node `{id}`'s output does not parse: {e}"))
                        })
                    })
                    .transpose()?,
                started_at: tx.get(&r, 6)?,
                finished_at: tx.get(&r, 7)?,
                id,
            });
        }
        for r in tx.rows(
            "SELECT src, dst, attrs FROM edges WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.edges.push(EdgeExport {
                from: tx.get(&r, 0)?,
                to: tx.get(&r, 1)?,
                attrs: self.json(tx, &r, 2, "an edge's attributes")?,
            });
        }
        for r in tx.rows(
            "SELECT promise FROM promises WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.promises.push(self.json(tx, &r, 0, "a promise")?);
        }
        for r in tx.rows(
            "SELECT violation FROM violations WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.violations.push(self.json(tx, &r, 0, "a violation")?);
        }
        Ok(ex)
    }

    fn summary(tx: &Tx<'_>, r: &postgres::Row) -> Result<RunSummary> {
        Ok(RunSummary {
            id: tx.get(r, 0)?,
            workflow: tx.get(r, 1)?,
            status: tx.get(r, 2)?,
            created_at: tx.get(r, 3)?,
            finished_at: tx.get(r, 4)?,
            nodes: tx.get::<i64>(r, 5)? as u64,
            fired_at: tx.get(r, 6)?,
        })
    }

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
        self.read(|tx| {
            let exists = tx.row(
                "SELECT 1 FROM nodes WHERE run = $1 AND id = $2",
                &[&run, &node],
            )?;
            if exists.is_none() {
                return Err(Error::UnknownNode {
                    run: run.to_string(),
                    node: node.to_string(),
                });
            }
            let rows = tx.rows(
                "SELECT attempt, line, stream, text FROM logs
                 WHERE run = $1 AND node = $2 AND ($3::bigint IS NULL OR attempt = $3)
                   AND (attempt > $4 OR (attempt = $4 AND line > $5))
                 ORDER BY attempt, line LIMIT $6",
                &[
                    &run,
                    &node,
                    &attempt.map(i64::from),
                    &i64::from(after.0),
                    &i64::from(after.1),
                    &limit.map(clamp),
                ],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(LogLine {
                        node: node.to_string(),
                        attempt: tx.get::<i64>(r, 0)? as u32,
                        line: tx.get::<i64>(r, 1)? as u32,
                        stream: tx.get(r, 2)?,
                        text: tx.get(r, 3)?,
                    })
                })
                .collect()
        })
    }

    fn fire(tx: &Tx<'_>, r: &postgres::Row) -> Result<Fire> {
        Ok(Fire {
            workflow: tx.get(r, 0)?,
            at_ms: tx.get(r, 1)?,
            run: tx.get(r, 2)?,
            kind: tx.get(r, 3)?,
            claimed_ms: tx.get(r, 4)?,
            status: None,
        })
    }

    fn pushed(&self, tx: &Tx<'_>, r: &postgres::Row) -> Result<Pushed> {
        Ok(Pushed {
            id: tx.get(r, 0)?,
            key: tx.get(r, 1)?,
            payload: self.json(tx, r, 2, "a pushed event's payload")?,
            pushed_at: tx.get(r, 3)?,
        })
    }
}

/// A count as `LIMIT` takes it.
fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored timestamp in milliseconds since the epoch.
fn millis(t: &str) -> Option<i64> {
    crate::time::parse_millis(t).and_then(|ms| i64::try_from(ms).ok())
}

/// SQLSTATE `unique_violation`.
fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

impl Store for PgStore {
    fn location(&self) -> String {
        self.pool.loc.clone()
    }

    fn register(
        &self,
        owner: &Owner,
        reg: Registration<'_>,
        go: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Lease>> {
        let Registration {
            run,
            started,
            batch: (seq, at),
            mutations,
        } = reg;
        // The rows are written, then `go` is asked on this thread (it may
        // wait for validation), then the transaction ends: two steps off
        // the runtime, the connection held in between.
        let mut c = off_runtime(|| self.pool.get())?;
        let written = off_runtime(|| -> Result<()> {
            let mut tx = c.begin("")?;
            // Two registrations of one id take turns here; the second
            // then sees the first's run.
            tx.exec(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&run],
            )?;
            let exists = tx.row("SELECT 1 FROM runs WHERE id = $1", &[&run])?;
            if exists.is_some() {
                return Err(taken(run));
            }
            views::write_events(&mut tx, run, std::slice::from_ref(started), None)?;
            let data = to_json(&RegistrationView {
                origin: Origin::Registration,
                mutations: Filled(mutations),
            });
            tx.exec(
                "INSERT INTO events (run, seq, at, kind, data) VALUES ($1, $2, $3, 'batch_committed', $4)",
                &[&run, &(seq as i64), &at, &data],
            )?;
            drop(data);
            views::write_mutations(&mut tx, run, mutations)?;
            let n = tx.exec(
                &format!(
                    "UPDATE runs SET last_seq = $2, owner_id = $3, owner = $4, epoch = 1,
                            lease_until = {NOW_MS} + $5
                     WHERE id = $1"
                ),
                &[
                    &run,
                    &(seq as i64),
                    &owner.id,
                    &to_json(owner),
                    &(owner.ttl.as_millis() as i64),
                ],
            )?;
            debug_assert_eq!(n, 1);
            tx.keep_open();
            Ok(())
        });
        if let Err(e) = written {
            off_runtime(|| drop(c));
            return Err(e);
        }
        let keep = go();
        let ended = off_runtime(move || {
            let r = c.finish(keep);
            drop(c);
            r
        });
        match ended {
            Ok(()) if keep => Ok(Some(Lease::new(run, &owner.id, 1))),
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn take_over(&self, run: &str, owner: &Owner, force: bool) -> Result<Lease> {
        self.write(|tx| {
            // The row locked: two takeovers (in any processes) read and
            // write the owner one after the other, so one wins and the
            // other sees it.
            let (record, _, now) = PgStore::owner_row(tx, run, true)?
                .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
            let verdict =
                lease::may_take_over(&record, owner, now, force, &crate::host::process_start);
            if let lease::Verdict::Held(why) = verdict {
                return Err(Error::Owned {
                    run: run.to_string(),
                    owner: why,
                });
            }
            let epoch = record.epoch + 1;
            tx.exec(
                &format!(
                    "UPDATE runs SET owner_id = $2, owner = $3, epoch = $4, lease_until = {NOW_MS} + $5
                     WHERE id = $1"
                ),
                &[
                    &run,
                    &owner.id,
                    &to_json(owner),
                    &(epoch as i64),
                    &(owner.ttl.as_millis() as i64),
                ],
            )?;
            Ok(Lease::new(run, &owner.id, epoch))
        })
    }

    fn renew(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>> {
        // Exactly the leases the engine passes (the runs it drives), in
        // one transaction and one statement; rows are locked in id order.
        let runs: Vec<&str> = leases.iter().map(|l| l.run.as_str()).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch as i64).collect();
        let ttl = owner.ttl.as_millis() as i64;
        let renewed: Vec<String> = self.write(|tx| {
            let rows = tx.rows(
                &format!(
                    "WITH mine AS (
                         SELECT r.id FROM runs r
                         JOIN unnest($1::text[], $2::bigint[]) AS l(run, epoch)
                           ON r.id = l.run AND r.epoch = l.epoch
                         WHERE r.owner_id = $3 AND r.finished_at IS NULL
                         ORDER BY r.id FOR UPDATE OF r
                     )
                     UPDATE runs SET lease_until = {NOW_MS} + $4
                     FROM mine WHERE runs.id = mine.id RETURNING runs.id"
                ),
                &[&runs, &epochs, &owner.id, &ttl],
            )?;
            rows.iter().map(|r| tx.get(r, 0)).collect()
        })?;
        let renewed: std::collections::HashSet<&str> = renewed.iter().map(String::as_str).collect();
        Ok(leases
            .iter()
            .filter(|l| !renewed.contains(l.run.as_str()))
            .map(|l| l.run.clone())
            .collect())
    }

    fn release(&self, lease: &Lease) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE runs SET owner_id = NULL, owner = NULL, lease_until = 0
                 WHERE id = $1 AND owner_id = $2 AND epoch = $3",
                &[&lease.run, &lease.owner, &(lease.epoch as i64)],
            )?;
            Ok(())
        })
    }

    fn owner(&self, run: &str) -> Result<OwnerRecord> {
        self.read(|tx| {
            PgStore::owner_row(tx, run, false)?
                .map(|(rec, ..)| rec)
                .ok_or_else(|| Error::UnknownRun(run.to_string()))
        })
    }

    fn commit(
        &self,
        lease: &Lease,
        state: &RunState,
        events: &[Event],
        logs: &[LogLine],
        taken: &[SignalId],
    ) -> Result<()> {
        // Whether this commit is stored, after its COMMIT's answer was
        // lost: its last event (sequence numbers are the run's own), else
        // its last log line; signals taken twice are taken once. Never
        // when the lease is gone: trying again then ends fenced.
        let landed = |tx: &mut Tx<'_>| -> Result<bool> {
            let ours = tx.row(
                "SELECT 1 FROM runs WHERE id = $1 AND owner_id = $2 AND epoch = $3",
                &[&lease.run, &lease.owner, &(lease.epoch as i64)],
            )?;
            if ours.is_none() {
                return Ok(false);
            }
            if let Some(last) = events.last() {
                let r = tx.one(
                    "SELECT count(*) FROM events WHERE run = $1 AND seq = $2",
                    &[&lease.run, &(last.seq as i64)],
                )?;
                return Ok(tx.get::<i64>(&r, 0)? > 0);
            }
            if let Some(l) = logs.last() {
                let r = tx.one(
                    "SELECT count(*) FROM logs WHERE run = $1 AND node = $2 AND attempt = $3 AND line = $4",
                    &[&lease.run, &l.node, &i64::from(l.attempt), &i64::from(l.line)],
                )?;
                return Ok(tx.get::<i64>(&r, 0)? > 0);
            }
            Ok(false)
        };
        self.transact("", |tx| {
            // The fence first, locking the run's row: a stale owner writes
            // nothing at all, and a takeover waits for this transaction.
            let fenced = tx.exec(
                "UPDATE runs SET last_seq = greatest(last_seq, $4)
                 WHERE id = $1 AND owner_id = $2 AND epoch = $3",
                &[
                    &lease.run,
                    &lease.owner,
                    &(lease.epoch as i64),
                    &events.last().map_or(0, |e| e.seq as i64),
                ],
            )? == 0;
            if fenced {
                return Err(PgStore::fenced(tx, lease));
            }
            let run = lease.run.as_str();
            views::write_events(tx, run, events, Some(state))?;
            if events
                .iter()
                .any(|e| matches!(e.kind, EventKind::Restarted { .. }))
            {
                views::rewrite_graph(tx, run, state)?;
            }
            if !logs.is_empty() {
                let nodes: Vec<&str> = logs.iter().map(|l| l.node.as_str()).collect();
                let attempts: Vec<i64> = logs.iter().map(|l| i64::from(l.attempt)).collect();
                let lines: Vec<i64> = logs.iter().map(|l| i64::from(l.line)).collect();
                let streams: Vec<&str> = logs.iter().map(|l| l.stream.as_str()).collect();
                let texts: Vec<&str> = logs.iter().map(|l| l.text.as_str()).collect();
                tx.exec(
                    "INSERT INTO logs (run, node, attempt, line, stream, text)
                     SELECT $1, n, a, l, s, t
                     FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[]) AS u(n, a, l, s, t)",
                    &[&run, &nodes, &attempts, &lines, &streams, &texts],
                )?;
            }
            if !taken.is_empty() {
                let ids: Vec<i64> = taken.iter().map(|s| s.0).collect();
                tx.exec(
                    "UPDATE signals SET taken_at = $2 WHERE id = ANY($1)",
                    &[&ids, &crate::time::now()],
                )?;
            }
            Ok(())
        }, Some(&landed))
    }

    fn resolve_run(&self, what: &str) -> Result<String> {
        let found = self.read(|tx| {
            if what == "latest" {
                let r = tx.row(
                    "SELECT id FROM runs ORDER BY created_at DESC, pos DESC LIMIT 1",
                    &[],
                )?;
                return r.map(|r| tx.get(&r, 0)).transpose();
            }
            // Ids are lower-case ASCII; `starts_with` under the "C"
            // collation of the column.
            let prefix = what.to_ascii_lowercase();
            let rows = tx.rows(
                "SELECT id FROM runs WHERE starts_with(id, $1) ORDER BY id LIMIT 3",
                &[&prefix],
            )?;
            let ids: Vec<String> = rows.iter().map(|r| tx.get(r, 0)).collect::<Result<_>>()?;
            match ids.as_slice() {
                [one] => Ok(Some(one.clone())),
                many if many.contains(&prefix) => Ok(Some(prefix.clone())),
                [] => Ok(None),
                _ => Err(Error::AmbiguousRun {
                    prefix: what.to_string(),
                    matches: ids.join(", "),
                }),
            }
        })?;
        found.ok_or_else(|| Error::UnknownRun(what.to_string()))
    }

    fn runs(&self) -> Result<Vec<RunSummary>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, workflow, status, created_at, finished_at,
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                        config::json ->> 'fired_at'
                 FROM runs ORDER BY created_at DESC, pos DESC",
                &[],
            )?;
            rows.iter().map(|r| PgStore::summary(tx, r)).collect()
        })
    }

    fn events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT seq, at, data FROM events WHERE run = $1 AND seq <= $2 ORDER BY seq",
                &[&run, &upto.map_or(i64::MAX, |u| u as i64)],
            )?;
            rows.iter()
                .map(|r| {
                    let seq = tx.get::<i64>(r, 0)? as u64;
                    let data: String = tx.get(r, 2)?;
                    let kind: EventKind = serde_json::from_str(&data).map_err(|e| {
                        self.corrupt(format!("run {run} event {seq} does not parse: {e}"))
                    })?;
                    Ok(Event {
                        seq,
                        at: tx.get(r, 1)?,
                        kind,
                    })
                })
                .collect()
        })
    }

    fn run_tail(&self, run: &str, after: u64, limit: usize) -> Result<super::RunTail> {
        let after = after.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|tx| {
            let Some(head) = tx.row("SELECT status, last_seq FROM runs WHERE id = $1", &[&run])?
            else {
                return Err(Error::UnknownRun(run.to_string()));
            };
            let status: String = tx.get(&head, 0)?;
            let last: i64 = tx.get(&head, 1)?;
            let rows = tx.rows(
                "SELECT seq, at, data FROM events WHERE run = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&run, &after, &limit],
            )?;
            let events = rows
                .iter()
                .map(|r| {
                    let seq = tx.get::<i64>(r, 0)? as u64;
                    let data: String = tx.get(r, 2)?;
                    let kind: EventKind = serde_json::from_str(&data).map_err(|e| {
                        self.corrupt(format!("run {run} event {seq} does not parse: {e}"))
                    })?;
                    Ok(Event {
                        seq,
                        at: tx.get(r, 1)?,
                        kind,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(super::RunTail {
                events,
                status: status.parse().map_err(|e| {
                    self.corrupt(format!("run {run} has the status {status:?}: {e}"))
                })?,
                last: last as u64,
            })
        })
    }

    fn export(&self, run: &str) -> Result<RunExport> {
        self.read(|tx| self.read_export(tx, run))
    }

    fn node(&self, run: &str, node: &str) -> Result<Option<(Task, crate::model::NodeState)>> {
        self.read(|tx| self.node_row(tx, run, node))
    }

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

    fn request(&self, run: &str, signal: &Signal) -> Result<SignalId> {
        self.write(|tx| {
            // The run's row locked: its end and this signal are ordered.
            let status = match tx.row("SELECT status FROM runs WHERE id = $1 FOR SHARE", &[&run])? {
                Some(r) => tx
                    .get::<String>(&r, 0)?
                    .parse()
                    .unwrap_or(RunStatus::Failed),
                None => return Err(Error::UnknownRun(run.to_string())),
            };
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
                    self.check_input(tx, run, node)?;
                    (Some(node.as_str()), Some(to_json(value)))
                }
                _ => (None, None),
            };
            let r = tx.one(
                "INSERT INTO signals (run, kind, node, value, requested_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&run, &signal.as_str(), &node, &value, &crate::time::now()],
            )?;
            Ok(SignalId(tx.get(&r, 0)?))
        })
    }

    fn pending(&self) -> Result<Vec<Pending>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT s.id, s.run, s.kind, s.node, s.value FROM signals s
                 JOIN runs r ON r.id = s.run
                 WHERE s.taken_at IS NULL AND r.finished_at IS NULL ORDER BY s.id",
                &[],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let kind: String = tx.get(r, 2)?;
                let node: Option<String> = tx.get(r, 3)?;
                let value: Option<String> = tx.get(r, 4)?;
                let signal = match (kind.as_str(), node) {
                    ("input", Some(node)) => Signal::Input {
                        node,
                        value: value
                            .and_then(|v| serde_json::from_str(&v).ok())
                            .unwrap_or(Value::Null),
                    },
                    (other, _) => match other.parse() {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                out.push(Pending {
                    id: SignalId(tx.get(r, 0)?),
                    run: tx.get(r, 1)?,
                    signal,
                });
            }
            Ok(out)
        })
    }

    fn claim_fire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<bool> {
        // The primary key settles a race: of two inserts, one waits for
        // the other and then does nothing.
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS}) ON CONFLICT DO NOTHING"
                ),
                &[&workflow, &at_ms, &run, &kind],
            )?;
            Ok(n == 1)
        })
    }

    fn refire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                &format!(
                    "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS})
                     ON CONFLICT (workflow, fire_at)
                     DO UPDATE SET run = $3, kind = $4, claimed_at = {NOW_MS}"
                ),
                &[&workflow, &at_ms, &run, &kind],
            )?;
            Ok(())
        })
    }

    fn fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at, r.status FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE f.workflow = $1 AND f.fire_at BETWEEN $2 AND $3
                 ORDER BY f.fire_at",
                &[&workflow, &from_ms, &to_ms],
            )?;
            rows.iter()
                .map(|r| {
                    let mut f = PgStore::fire(tx, r)?;
                    f.status = tx.get::<Option<String>>(r, 5)?.and_then(|s| s.parse().ok());
                    Ok(f)
                })
                .collect()
        })
    }

    fn last_fire(&self, workflow: &str) -> Result<Option<i64>> {
        self.read(|tx| {
            let r = tx.one(
                "SELECT max(fire_at) FROM fires WHERE workflow = $1",
                &[&workflow],
            )?;
            tx.get(&r, 0)
        })
    }

    fn active_runs(&self, workflow: &str) -> Result<u64> {
        self.read(|tx| {
            let r = tx.one(
                "SELECT count(*) FROM runs WHERE workflow = $1 AND status IN ('running', 'paused')",
                &[&workflow],
            )?;
            Ok(tx.get::<i64>(&r, 0)? as u64)
        })
    }

    fn push_event(&self, key: &str, payload: &Value) -> Result<(i64, Vec<(String, String)>)> {
        let value = to_json(payload);
        self.write(|tx| {
            let now = crate::time::now();
            let r = tx.one(
                "INSERT INTO pushes (key, payload, pushed_at) VALUES ($1, $2, $3) RETURNING id",
                &[&key, &value, &now],
            )?;
            let id: i64 = tx.get(&r, 0)?;
            let rows = tx.rows(
                "SELECT n.run, n.id FROM nodes n JOIN runs r ON r.id = n.run
                 WHERE r.finished_at IS NULL
                   AND n.task::json ->> 'kind' = 'input'
                   AND n.task::json ->> 'listen' = $1
                   AND n.state NOT IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')
                 ORDER BY n.run, n.id",
                &[&key],
            )?;
            let listening: Vec<(String, String)> = rows
                .iter()
                .map(|r| Ok((tx.get(r, 0)?, tx.get(r, 1)?)))
                .collect::<Result<_>>()?;
            let runs: Vec<&str> = listening.iter().map(|(r, _)| r.as_str()).collect();
            let nodes: Vec<&str> = listening.iter().map(|(_, n)| n.as_str()).collect();
            tx.exec(
                "INSERT INTO signals (run, kind, node, value, requested_at)
                 SELECT r, 'input', n, $3, $4
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(r, n, o) ORDER BY o",
                &[&runs, &nodes, &value, &now],
            )?;
            Ok((id, listening))
        })
    }

    fn events_after(&self, after: i64, since_ms: i64, limit: usize) -> Result<Vec<Pushed>> {
        let since = crate::time::format_millis(since_ms.max(0) as u64);
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, key, payload, pushed_at FROM pushes
                 WHERE id > $1 AND pushed_at >= $2 ORDER BY id LIMIT $3",
                &[&after, &since, &clamp(limit)],
            )?;
            rows.iter().map(|r| self.pushed(tx, r)).collect()
        })
    }

    fn claim_event_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "INSERT INTO push_runs (push, workflow, run, claimed_at)
                     VALUES ($1, $2, $3, {NOW_MS}) ON CONFLICT DO NOTHING"
                ),
                &[&event, &workflow, &run],
            )?;
            Ok(n == 1)
        })
    }

    fn orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE r.id IS NULL AND f.claimed_at BETWEEN $1 AND $2
                 ORDER BY f.claimed_at, f.workflow, f.fire_at",
                &[&since_ms, &until_ms],
            )?;
            rows.iter().map(|r| PgStore::fire(tx, r)).collect()
        })
    }

    fn orphaned_event_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT p.id, p.key, p.payload, p.pushed_at, r.workflow, r.run FROM push_runs r
                 JOIN pushes p ON p.id = r.push
                 LEFT JOIN runs x ON x.id = r.run
                 WHERE x.id IS NULL AND r.claimed_at BETWEEN $1 AND $2
                 ORDER BY p.id, r.workflow",
                &[&since_ms, &until_ms],
            )?;
            rows.iter()
                .map(|r| Ok((self.pushed(tx, r)?, tx.get(r, 4)?, tx.get(r, 5)?)))
                .collect()
        })
    }

    fn add_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64> {
        self.write(|tx| {
            let r = tx.one(
                &format!(
                    "INSERT INTO timers (workflow, at_ms, cron, timezone, created_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS}) RETURNING id"
                ),
                &[&workflow, &at_ms, &cron, &timezone],
            )?;
            tx.get(&r, 0)
        })
    }

    fn stop_timer(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "UPDATE timers SET stopped_at = {NOW_MS} WHERE id = $1 AND stopped_at IS NULL"
                ),
                &[&id],
            )?;
            Ok(n == 1)
        })
    }

    fn timers(&self) -> Result<Vec<Timer>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, workflow, at_ms, cron, timezone, created_at, stopped_at
                 FROM timers ORDER BY id",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Timer {
                        id: tx.get(r, 0)?,
                        workflow: tx.get(r, 1)?,
                        at_ms: tx.get(r, 2)?,
                        cron: tx.get(r, 3)?,
                        timezone: tx.get(r, 4)?,
                        created_ms: tx.get(r, 5)?,
                        stopped_ms: tx.get(r, 6)?,
                    })
                })
                .collect()
        })
    }

    fn task_durations(
        &self,
        workflow: &str,
        runs: usize,
        per_task: usize,
    ) -> Result<Vec<TaskSample>> {
        let rows: Vec<(String, String, String, i64, String, String)> = self.read(|tx| {
            let rows = tx.rows(
                "WITH recent AS (
                     SELECT id FROM runs WHERE workflow = $1
                     ORDER BY created_at DESC, pos DESC LIMIT $2
                 ), ok AS (
                     SELECT a.run, a.node, a.attempt, a.started_at, a.finished_at,
                            (n.task::json ->> 'name') COLLATE \"C\" AS task
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
                 WHERE k <= $3 ORDER BY task, k",
                &[&workflow, &clamp(runs), &clamp(per_task)],
            )?;
            rows.iter()
                .map(|r| {
                    Ok((
                        tx.get(r, 0)?,
                        tx.get(r, 1)?,
                        tx.get(r, 2)?,
                        tx.get(r, 3)?,
                        tx.get(r, 4)?,
                        tx.get(r, 5)?,
                    ))
                })
                .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, node, task, attempt, started, finished)| {
                let (s, f) = (millis(&started)?, millis(&finished)?);
                Some(TaskSample::new(&run, &node, &task, attempt as u32, s, f))
            })
            .collect())
    }

    fn run_durations(&self, workflow: &str, limit: usize) -> Result<Vec<RunSample>> {
        let rows: Vec<(String, String, String)> = self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, created_at, finished_at FROM runs
                 WHERE workflow = $1 AND status = 'succeeded' AND finished_at IS NOT NULL
                 ORDER BY created_at DESC, pos DESC LIMIT $2",
                &[&workflow, &clamp(limit)],
            )?;
            rows.iter()
                .map(|r| Ok((tx.get(r, 0)?, tx.get(r, 1)?, tx.get(r, 2)?)))
                .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, started, finished)| {
                Some(RunSample::new(&run, millis(&started)?, millis(&finished)?))
            })
            .collect())
    }

    /// The schema is this orch's, and every run's last event is in its
    /// history.
    fn integrity_check(&self) -> Result<()> {
        let (version, broken): (Option<i64>, Vec<String>) = self.read(|tx| {
            let r = tx.one("SELECT max(version) FROM orch_schema", &[])?;
            let version = tx.get(&r, 0)?;
            let rows = tx.rows(
                "SELECT id FROM runs r WHERE r.last_seq > 0 AND NOT EXISTS
                     (SELECT 1 FROM events e WHERE e.run = r.id AND e.seq = r.last_seq)
                 ORDER BY id LIMIT 10",
                &[],
            )?;
            let broken = rows.iter().map(|r| tx.get(r, 0)).collect::<Result<_>>()?;
            Ok((version, broken))
        })?;
        if version != Some(SCHEMA_VERSION) {
            return Err(self.corrupt(format!(
                "schema version {version:?}, expected {SCHEMA_VERSION}"
            )));
        }
        if !broken.is_empty() {
            return Err(self.corrupt(format!(
                "runs whose last event is missing from their history: {}",
                broken.join(", ")
            )));
        }
        Ok(())
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
}

/// The refusal of a second run with an existing id.
fn taken(run: &str) -> Error {
    Error::Refused {
        what: format!("run {run}"),
        message: "a run with this id exists already".into(),
    }
}
