//! The SQLite store: one file per workspace, WAL, an append-only event log
//! plus materialized tables (runs, nodes, edges, attempts, outputs,
//! promises, violations, logs).
//!
//! Every write is one transaction that appends events and updates the
//! tables together, so the tables always equal the fold of the log (see
//! [`Store::replay`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::merge_attrs;
use crate::model::{output_refs, Attrs, Mutation, Origin, RunStatus, Task};
use crate::history::{AttemptRecord, EdgeExport, Event, EventKind, NodeExport, RunExport, RunState};

/// The environment variable that overrides the database path.
pub const DB_ENV: &str = "ORCH_DB";

const SCHEMA_VERSION: i64 = 1;

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

/// One line of an attempt's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The node id.
    pub node: String,
    /// The attempt number.
    pub attempt: u32,
    /// Line number within the attempt, from 1.
    pub line: u32,
    /// `stdout`, `stderr` or `log` (a protocol `log` message, with its
    /// level as a prefix).
    pub stream: String,
    /// The text, without the newline.
    pub text: String,
}

/// What a person (or program) can ask of a live run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// No new task starts; running ones finish.
    Pause,
    /// Tasks start again.
    Unpause,
    /// Running tasks are killed with their process groups; the run ends
    /// `cancelled`.
    Cancel,
}

impl Control {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Unpause => "unpause",
            Control::Cancel => "cancel",
        }
    }
}

impl std::str::FromStr for Control {
    type Err = String;
    fn from_str(s: &str) -> Result<Control, String> {
        match s {
            "pause" => Ok(Control::Pause),
            "unpause" => Ok(Control::Unpause),
            "cancel" => Ok(Control::Cancel),
            other => Err(format!("unknown control `{other}`")),
        }
    }
}

/// A line of `orch runs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The run id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The status.
    pub status: String,
    /// When it started.
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How many nodes it has.
    pub nodes: u64,
}

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

/// A connection to the database file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed, with its folder) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating folder {}", dir.display()), e))?;
        }
        Store::connect(path)
    }

    /// Opens an existing database; an error naming the path if there is
    /// none (the CLI never creates one).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(Error::io(
                format!(
                    "no orch database at {} (run a workflow first, or point {DB_ENV} or --db at one)",
                    path.display()
                ),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Store::connect(path)
    }

    fn connect(path: PathBuf) -> Result<Store> {
        let conn = Connection::open(&path).map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        let store = Store { conn, path };
        store.init()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        wrapper(&self.path)(source)
    }

    fn init(&self) -> Result<()> {
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err(e))?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                message: format!(
                    "schema version {version} is newer than this orch understands ({SCHEMA_VERSION})"
                ),
            });
        }
        self.conn.execute_batch(SCHEMA).map_err(|e| self.err(e))?;
        // Room for the multi-row statements of big batches beside the
        // per-event ones.
        self.conn.set_prepared_statement_cache_capacity(32);
        self.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| self.err(e))?;
        // A testing aid: simulate a full disk once the file reaches this
        // many pages (SQLite's max_page_count is per connection).
        if let Some(pages) = std::env::var("ORCH_TEST_MAX_PAGES")
            .ok()
            .and_then(|p| p.parse::<i64>().ok())
        {
            self.conn
                .pragma_update(None, "max_page_count", pages)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends events (already applied to the in-memory state) and log
    /// lines in one transaction, updating the materialized tables.
    pub fn commit(&mut self, run: &str, events: &[Event], logs: &[LogLine]) -> Result<()> {
        let path = self.path.clone();
        let wrap = wrapper(&path);
        let tx = self.conn.transaction().map_err(wrap)?;
        for e in events {
            write_event(&tx, run, e).map_err(wrap)?;
        }
        if let Some(last) = events.last() {
            set_last_seq(&tx, run, last.seq).map_err(wrap)?;
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
        tx.commit().map_err(wrap)
    }

    /// Writes the first two events of a run in one transaction: `started`
    /// (its `run_started`) and, as event `seq` at `at`, the registration
    /// batch made of the workflow's `mutations` as validation accepts them
    /// (an empty task name is the node's id), with their materialized
    /// rows. The transaction commits only if `go` (called once everything
    /// is written, typically waiting for the validation that runs
    /// meanwhile) says so; otherwise nothing is kept and the answer is
    /// `false`.
    pub(crate) fn commit_registration(
        &mut self,
        run: &str,
        started: &Event,
        (seq, at): (u64, &str),
        mutations: &[Mutation],
        go: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let path = self.path.clone();
        let wrap = wrapper(&path);
        let tx = self.conn.transaction().map_err(wrap)?;
        write_event(&tx, run, started).map_err(wrap)?;
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
        if !go() {
            return Ok(false);
        }
        tx.commit().map_err(wrap)?;
        Ok(true)
    }

    /// Appends a `restarted` event and rewrites the run's graph tables to
    /// `state`, the fold that includes it: one transaction.
    pub fn commit_restart(&mut self, run: &str, event: &Event, state: &RunState) -> Result<()> {
        let path = self.path.clone();
        let wrap = wrapper(&path);
        let tx = self.conn.transaction().map_err(wrap)?;
        write_event(&tx, run, event).map_err(wrap)?;
        rewrite_graph(&tx, run, state).map_err(wrap)?;
        set_last_seq(&tx, run, event.seq).map_err(wrap)?;
        tx.commit().map_err(wrap)
    }

    /// Resolves `latest`, a full run id or a unique prefix of one.
    pub fn resolve_run(&self, what: &str) -> Result<String> {
        let found: Option<String> = if what == "latest" {
            self.conn
                .query_row(
                    "SELECT id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?
        } else {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id FROM runs WHERE id = ?1 OR id LIKE ?1 || '%' ORDER BY id LIMIT 3",
                )
                .map_err(|e| self.err(e))?;
            let ids: Vec<String> = stmt
                .query_map([what], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            match ids.as_slice() {
                [one] => Some(one.clone()),
                many if many.iter().any(|i| i == what) => Some(what.to_string()),
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
    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut stmt = self
            .conn
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
    pub fn events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
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

    /// Rebuilds a run's state from its event log alone.
    pub fn replay(&self, run: &str, upto: Option<u64>) -> Result<RunState> {
        let events = self.events(run, upto)?;
        if events.is_empty() {
            return Err(Error::UnknownRun(run.to_string()));
        }
        Ok(RunState::replay(run, &events))
    }

    /// The export of a run, read from the materialized tables.
    pub fn export(&self, run: &str) -> Result<RunExport> {
        self.read_export(run).map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Error::UnknownRun(run.to_string()),
            other => self.err(other),
        })
    }

    fn read_export(&self, run: &str) -> rusqlite::Result<RunExport> {
        let c = &self.conn;
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

    /// The log lines of a node's attempts (all attempts when `attempt` is
    /// `None`), in order.
    pub fn logs(&self, run: &str, node: &str, attempt: Option<u32>) -> Result<Vec<LogLine>> {
        let exists: bool = self
            .conn
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
        let mut stmt = self
            .conn
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

    /// Asks the orchestrator of a run to pause, unpause or cancel it. The
    /// request is stored; the orchestrator takes it within a fraction of a
    /// second (or when the run is resumed). Refused for a run that ended.
    pub fn request_control(&self, run: &str, control: Control) -> Result<()> {
        let status: String = self
            .conn
            .query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        let status: RunStatus = status.parse().unwrap_or(RunStatus::Failed);
        if status.is_terminal() {
            return Err(Error::RunEnded {
                run: run.to_string(),
                status: status.to_string(),
                control: control.as_str().to_string(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO controls (run, command, requested_at) VALUES (?1, ?2, ?3)",
                params![run, control.as_str(), crate::time::now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Takes the control requests of a run not taken yet, oldest first.
    pub fn take_controls(&self, run: &str) -> Result<Vec<Control>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE controls SET taken_at = ?2 WHERE run = ?1 AND taken_at IS NULL RETURNING id, command",
            )
            .map_err(|e| self.err(e))?;
        let mut rows: Vec<(i64, String)> = stmt
            .query_map(params![run, crate::time::now()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        rows.sort();
        Ok(rows
            .into_iter()
            .filter_map(|(_, c)| c.parse().ok())
            .collect())
    }

    /// Delivers a value to a node whose task is [`crate::Task::input`]: it
    /// becomes the node's output when the orchestrator takes it (at once
    /// if the node waits, else when it starts waiting).
    pub fn deliver_input(&self, run: &str, node: &str, value: &serde_json::Value) -> Result<()> {
        let ex = self.export(run)?;
        if ex.status.is_terminal() {
            return Err(Error::RunEnded {
                run: run.to_string(),
                status: ex.status.to_string(),
                control: "deliver input".into(),
            });
        }
        let n = ex.node(node).ok_or_else(|| Error::UnknownNode {
            run: run.to_string(),
            node: node.to_string(),
        })?;
        if !matches!(n.task.exec, crate::model::Exec::Input {}) {
            return Err(Error::NotInput {
                run: run.to_string(),
                node: node.to_string(),
                kind: serde_json::to_value(&n.task)
                    .ok()
                    .and_then(|t| t["kind"].as_str().map(str::to_string))
                    .unwrap_or_default(),
            });
        }
        if n.state.is_terminal() {
            return Err(Error::RunEnded {
                run: format!("{run}` node `{node}"),
                status: n.state.to_string(),
                control: "deliver input to".into(),
            });
        }
        self.conn
            .execute(
                "INSERT INTO inputs (run, node, value, delivered_at) VALUES (?1, ?2, ?3, ?4)",
                params![run, node, to_json(value), crate::time::now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Takes the first value delivered to `node` and not taken yet.
    pub fn take_input(&self, run: &str, node: &str) -> Result<Option<serde_json::Value>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT id, value FROM inputs WHERE run = ?1 AND node = ?2 AND taken_at IS NULL ORDER BY id LIMIT 1",
                params![run, node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((id, value)) = row else {
            return Ok(None);
        };
        self.conn
            .execute(
                "UPDATE inputs SET taken_at = ?2 WHERE id = ?1",
                params![id, crate::time::now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(Some(
            serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when SQLite says `ok`.
    pub fn integrity_check(&self) -> Result<()> {
        let res: String = self
            .conn
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
        source,
    }
}

/// Records the last event written for the run.
fn set_last_seq(tx: &Transaction<'_>, run: &str, seq: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE runs SET last_seq = ?2 WHERE id = ?1")?
        .execute(params![run, seq as i64])
        .map(drop)
}

fn write_event(tx: &Transaction<'_>, run: &str, e: &Event) -> rusqlite::Result<()> {
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
        EventKind::NodeState { node, state } => {
            let running = matches!(state, crate::NodeState::Running | crate::NodeState::Waiting);
            let terminal = state.is_terminal();
            tx.prepare_cached(
                "UPDATE nodes SET state = ?3,
                    started_at = CASE WHEN ?4 THEN coalesce(started_at, ?6) ELSE started_at END,
                    finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END
                 WHERE run = ?1 AND id = ?2",
            )?
            .execute(params![run, node, state.as_str(), running, terminal, e.at])?;
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
            // The new generation is written from the folded state by
            // `commit_restart`.
        }
        EventKind::PromiseBroken { violation } => {
            tx.prepare_cached("INSERT INTO violations (run, violation) VALUES (?1, ?2)")?
                .execute(params![run, to_json(violation)])?;
        }
        EventKind::RunStatus { status, reason } => {
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, reason = ?3,
                    finished_at = CASE WHEN ?4 THEN ?5 ELSE NULL END
                 WHERE id = ?1",
            )?
            .execute(params![
                run,
                status.as_str(),
                reason,
                status.is_terminal(),
                e.at
            ])?;
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
                config: json!({"x": 1}),
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
        let mut before = Store::open(dir.path().join("a.db")).unwrap();
        let tx = before.conn.transaction().unwrap();
        write_event(&tx, "r", &started()).unwrap();
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

        let mut now = Store::open(dir.path().join("b.db")).unwrap();
        let kept = now
            .commit_registration("r", &started(), (2, at), &muts, || true)
            .unwrap();
        assert!(kept);
        assert_eq!(now.events("r", None).unwrap(), vec![started(), batch]);
        let raw = |s: &Store| -> Vec<(i64, String, String, String)> {
            let mut q = s
                .conn
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

        // And a batch written by `commit` (any later one) too.
        let mut later = Store::open(dir.path().join("c.db")).unwrap();
        later
            .commit(
                "r",
                &[started(), now.events("r", None).unwrap()[1].clone()],
                &[],
            )
            .unwrap();
        assert_eq!(later.export("r").unwrap(), before.export("r").unwrap());
    }

    #[test]
    fn a_registration_refused_by_its_validation_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("a.db")).unwrap();
        let kept = store
            .commit_registration("r", &started(), (2, "t"), &registration(), || false)
            .unwrap();
        assert!(!kept);
        assert!(store.runs().unwrap().is_empty());
        assert!(store.events("r", None).unwrap().is_empty());
        let rows: i64 = store
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM nodes) + (SELECT count(*) FROM edges)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        // The store stays usable.
        assert!(store
            .commit_registration("r", &started(), (2, "t"), &registration(), || true)
            .unwrap());
    }
}
