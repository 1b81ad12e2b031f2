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
//!
//! The methods' bodies live by concern in files named as the SQLite
//! store's: `owners`, `history`, `signals`, `schedules`, `queue`,
//! `access` and `views`.

use std::path::PathBuf;

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
use crate::store::sqlite::to_json;
use crate::store::sqlite::views::{Filled, RegistrationView};

mod access;
#[cfg(feature = "testing")]
pub mod cluster;
mod conn;
mod history;
mod owners;
mod queue;
mod schedules;
mod signals;
#[cfg(all(test, feature = "testing"))]
mod tests;
mod views;

// The tests read it through `super::*`.
#[cfg(all(test, feature = "testing"))]
use crate::model::RunStatus;
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
