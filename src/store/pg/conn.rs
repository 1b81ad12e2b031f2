//! Connections to PostgreSQL and how the store's sync methods reach them.
//!
//! The client is `postgres`, the blocking wrapper of `tokio-postgres`:
//! each connection runs its own single-threaded tokio runtime and blocks
//! on it. Blocking on a runtime from a thread that is inside another one
//! panics, and the engine calls the store from its async tasks; so a call
//! made on a runtime's thread runs on a short-lived scoped thread (the
//! caller blocks meanwhile, as it does on SQLite's file), and a call made
//! outside any runtime runs where it is. Connections are kept in a small
//! pool, opened on demand up to its size; one whose socket closed (the
//! database restarted) is dropped and the next call opens a new one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

use postgres::types::{FromSql, ToSql};
use postgres::{Client, NoTls, Row, Statement};

use crate::error::{Error, Result};

/// A driver's failure as orch shows it: the message, never the driver's
/// type.
#[derive(Debug)]
pub(super) struct PgError {
    message: String,
    /// Whether, and when, the connection broke.
    broke: Broke,
}

/// Whether, and when, a call's connection broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broke {
    /// It did not (the database refused the statement, say).
    No,
    /// It broke, or none could be made (the database is restarting,
    /// say), before anything was committed: the whole call may be tried
    /// again on a new connection.
    Before,
    /// It broke during `COMMIT`: whether the transaction landed is
    /// unknown.
    InCommit,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

/// How `e` broke, for a PostgreSQL store error.
fn broke(e: &Error) -> Broke {
    match e {
        Error::Store { source, .. } => source
            .downcast_ref::<PgError>()
            .map_or(Broke::No, |p| p.broke),
        _ => Broke::No,
    }
}

/// True for an error that says the connection is gone (or could not be
/// made) before the call committed anything: see [`Broke::Before`].
pub(super) fn is_lost(e: &Error) -> bool {
    broke(e) == Broke::Before
}

/// True for an error that says the connection broke during `COMMIT`.
pub(super) fn in_commit(e: &Error) -> bool {
    broke(e) == Broke::InCommit
}

/// True when `e`, met on `client`, means the connection is unusable: the
/// socket closed, or the server said it is shutting down, starting up or
/// that the connection failed (SQLSTATE class 08, 57P01–57P03).
fn breaks_connection(e: &postgres::Error, client: Option<&Client>) -> bool {
    if e.is_closed() || client.is_some_and(Client::is_closed) {
        return true;
    }
    match e.code().map(|c| c.code()) {
        Some(code) => code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03"),
        // No answer from the server at all: the socket failed.
        None => e.as_db_error().is_none() && client.is_none(),
    }
}

/// The message of a driver error: the server's own words and SQLSTATE
/// when the server answered.
pub(super) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    }
}

/// An [`Error::Store`] naming the store.
pub(super) fn store_error(loc: &str, message: String) -> Error {
    broken(loc, message, Broke::No)
}

/// An [`Error::Store`] for a connection that broke (`broke`).
fn broken(loc: &str, message: String, broke: Broke) -> Error {
    Error::Store {
        path: PathBuf::from(loc),
        source: Box::new(PgError { message, broke }),
    }
}

/// An [`Error::Store`] for a connection lost before anything committed.
fn lost_error(loc: &str, message: String) -> Error {
    broken(loc, message, Broke::Before)
}

/// `url` without its password: what messages and logs may show.
///
/// Handles URLs (`postgres://user:secret@host/db?password=…`) and
/// key/value strings (`host=… password=…`).
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (auth, tail) = rest.split_at(auth_end);
        let auth = match auth.rfind('@') {
            Some(at) => {
                let (userinfo, host) = auth.split_at(at);
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{user}{host}")
            }
            None => auth.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
                    .collect();
                if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{auth}{tail}");
    }
    url.split_whitespace()
        .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `f` where a blocking client may block: here when this thread is
/// outside any tokio runtime, else on a scoped thread of its own.
pub(super) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// One connection and its prepared statements.
pub(super) struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
    /// A transaction was left open (its caller went away between its
    /// writes and its end): rolled back before the next use.
    open: bool,
}

struct Slots {
    idle: Vec<Conn>,
    live: usize,
}

/// The store's connections.
pub(super) struct Pool {
    config: postgres::Config,
    pub(super) loc: String,
    size: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
}

impl Pool {
    pub(super) fn new(config: postgres::Config, loc: String, size: usize) -> Pool {
        Pool {
            config,
            loc,
            size: size.max(1),
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                live: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one, a new one while the pool has room, or
    /// the next one freed. Call off any runtime.
    pub(super) fn get(&self) -> Result<Checkout<'_>> {
        let mut slots = self.slots();
        loop {
            if let Some(mut conn) = slots.idle.pop() {
                drop(slots);
                if conn.open {
                    let _ = conn.client.batch_execute("ROLLBACK");
                    conn.open = false;
                }
                if conn.client.is_closed() {
                    self.slots().live -= 1;
                    slots = self.slots();
                    continue;
                }
                return Ok(Checkout {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if slots.live < self.size {
                slots.live += 1;
                drop(slots);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Checkout {
                        pool: self,
                        conn: Some(Conn {
                            client,
                            stmts: HashMap::new(),
                            open: false,
                        }),
                    }),
                    Err(e) => {
                        self.slots().live -= 1;
                        self.freed.notify_one();
                        let why = format!("cannot connect: {}", message(&e));
                        Err(if breaks_connection(&e, None) {
                            lost_error(&self.loc, why)
                        } else {
                            store_error(&self.loc, why)
                        })
                    }
                };
            }
            slots = self.freed.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Closes every idle connection (off any runtime: a client's drop
    /// blocks on its own). After a connection was lost the others are
    /// likely dead too (the database restarted): the next calls open new
    /// ones instead of finding that out one by one.
    pub(super) fn close(&self) {
        let idle = {
            let mut slots = self.slots();
            let idle = std::mem::take(&mut slots.idle);
            slots.live -= idle.len();
            idle
        };
        if !idle.is_empty() {
            self.freed.notify_all();
        }
        off_runtime(move || drop(idle));
    }
}

/// A connection taken from the pool, given back when dropped.
pub(super) struct Checkout<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut slots = self.pool.slots();
            if conn.client.is_closed() {
                slots.live -= 1;
                drop(slots);
                // A client's drop blocks on its runtime.
                off_runtime(move || drop(conn));
            } else {
                slots.idle.push(conn);
                drop(slots);
            }
            self.pool.freed.notify_one();
        }
    }
}

impl Checkout<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a checkout holds its connection")
    }

    /// Starts a transaction (`mode`: what follows `BEGIN`).
    pub(super) fn begin(&mut self, mode: &str) -> Result<Tx<'_>> {
        let loc = self.pool.loc.as_str();
        let conn = self.conn.as_mut().expect("a checkout holds its connection");
        if let Err(e) = conn.client.batch_execute(&format!("BEGIN {mode}")) {
            return Err(classify(loc, &e, &conn.client));
        }
        conn.open = true;
        Ok(Tx { conn, loc })
    }

    /// Runs one statement outside any transaction block: PostgreSQL
    /// commits it on its own, in one round trip where `BEGIN`, the
    /// statement and `COMMIT` take three. The rows it changed. A
    /// connection lost while it ran leaves its outcome unknown
    /// ([`Broke::InCommit`]); one lost before (it could not be prepared)
    /// is [`Broke::Before`].
    pub(super) fn exec_alone(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        let loc = self.pool.loc.as_str();
        let conn = self.conn.as_mut().expect("a checkout holds its connection");
        let s = match conn.stmt(sql) {
            Ok(s) => s,
            Err(e) => return Err(classify(loc, &e, &conn.client)),
        };
        conn.client.execute(&s, params).map_err(|e| {
            if breaks_connection(&e, Some(&conn.client)) {
                broken(
                    loc,
                    format!(
                        "the connection was lost during a statement (whether it landed is unknown): {}",
                        message(&e)
                    ),
                    Broke::InCommit,
                )
            } else {
                store_error(loc, message(&e))
            }
        })
    }

    /// Ends the transaction a [`Tx::keep_open`] left open.
    pub(super) fn finish(&mut self, commit: bool) -> Result<()> {
        let loc = self.pool.loc.clone();
        let conn = self.conn();
        let r = conn
            .client
            .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" });
        conn.open = false;
        r.map_err(|e| store_error(&loc, message(&e)))
    }
}

/// An open transaction: rolled back when dropped before [`Tx::commit`].
pub(super) struct Tx<'c> {
    conn: &'c mut Conn,
    loc: &'c str,
}

/// Query parameters.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The store error for `e`, met on `client` before any `COMMIT`: lost
/// when the connection broke.
fn classify(loc: &str, e: &postgres::Error, client: &Client) -> Error {
    if breaks_connection(e, Some(client)) {
        lost_error(loc, format!("the connection was lost: {}", message(e)))
    } else {
        store_error(loc, message(e))
    }
}

impl Conn {
    /// `sql` prepared on this connection, once.
    fn stmt(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Tx<'_> {
    pub(super) fn err(&self, e: postgres::Error) -> Error {
        classify(self.loc, &e, &self.conn.client)
    }

    fn stmt(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        self.conn.stmt(sql)
    }

    /// Runs a statement; the driver's error as it is (to read its code).
    pub(super) fn exec_raw(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> std::result::Result<u64, postgres::Error> {
        let s = self.stmt(sql)?;
        self.conn.client.execute(&s, params)
    }

    /// Runs a statement: the number of rows it changed.
    pub(super) fn exec(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.exec_raw(sql, params).map_err(|e| self.err(e))
    }

    /// Runs a query: its rows.
    pub(super) fn rows(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let s = self.stmt(sql).map_err(|e| self.err(e))?;
        self.conn.client.query(&s, params).map_err(|e| self.err(e))
    }

    /// Runs a query of at most one row.
    pub(super) fn row(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let s = self.stmt(sql).map_err(|e| self.err(e))?;
        self.conn
            .client
            .query_opt(&s, params)
            .map_err(|e| self.err(e))
    }

    /// Runs a query of exactly one row.
    pub(super) fn one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row> {
        let s = self.stmt(sql).map_err(|e| self.err(e))?;
        self.conn
            .client
            .query_one(&s, params)
            .map_err(|e| self.err(e))
    }

    /// Runs statements with no parameters.
    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.client.batch_execute(sql).map_err(|e| self.err(e))
    }

    /// Column `i` of `row`.
    pub(super) fn get<'r, T: FromSql<'r>>(&self, row: &'r Row, i: usize) -> Result<T> {
        row.try_get(i).map_err(|e| self.err(e))
    }

    /// Commits. A connection lost during `COMMIT` is [`Broke::InCommit`]:
    /// whether it landed is unknown, so the call is never tried again
    /// blindly.
    pub(super) fn commit(self) -> Result<()> {
        let r = self.conn.client.batch_execute("COMMIT");
        self.conn.open = false;
        r.map_err(|e| {
            if breaks_connection(&e, Some(&self.conn.client)) {
                broken(
                    self.loc,
                    format!(
                        "the connection was lost during COMMIT (whether it landed is unknown): {}",
                        message(&e)
                    ),
                    Broke::InCommit,
                )
            } else {
                store_error(self.loc, message(&e))
            }
        })
    }

    /// Leaves the transaction open: the checkout's [`Checkout::finish`]
    /// ends it (a registration waits for its validation in between).
    pub(super) fn keep_open(self) {
        std::mem::forget(self);
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.conn.open {
            let _ = self.conn.client.batch_execute("ROLLBACK");
            self.conn.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://orch:s3cret@db.example:5432/orch?sslmode=disable&password=x"),
            "postgres://orch@db.example:5432/orch?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://orch@localhost/orch"),
            "postgresql://orch@localhost/orch"
        );
        assert_eq!(redact("postgres://h/db?password=x"), "postgres://h/db");
        assert_eq!(
            redact("host=/tmp user=orch password=s3cret dbname=orch"),
            "host=/tmp user=orch dbname=orch"
        );
    }
}
