//! Writing events and the views they touch: the rows of runs, nodes,
//! edges, attempts, outputs, promises and violations, copied from the
//! fold (never computed here).

use std::fmt::Write as _;

use rusqlite::{params, CachedStatement, Transaction};
use serde_json::Value;

use super::to_json;
use crate::graph::merge_attrs;
use crate::history::{Event, EventKind, RunState};
use crate::model::{output_refs, Attrs, Mutation, Origin, Task};

pub(in crate::store) fn event_name(kind: &EventKind) -> &'static str {
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

/// Records the last event written for the run.
pub(super) fn set_last_seq(tx: &Transaction<'_>, run: &str, seq: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE runs SET last_seq = ?2 WHERE id = ?1")?
        .execute(params![run, seq as i64])
        .map(drop)
}

/// Statements taken from the connection's cache once per commit and kept
/// until it is written: a commit of 600 events runs the same few
/// statements hundreds of times, and each checkout and return of the
/// cache hashes the statement's text and clears its bindings (~3,000
/// instructions, as much as the `UPDATE` itself).
struct Held<'c> {
    stmts: Vec<(&'static str, CachedStatement<'c>)>,
}

impl<'c> Held<'c> {
    fn new() -> Held<'c> {
        Held { stmts: Vec::new() }
    }

    /// The statement of `sql`, prepared (or taken from the cache) at its
    /// first use.
    fn get(
        &mut self,
        tx: &'c Transaction<'_>,
        sql: &'static str,
    ) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let at = match self.stmts.iter().position(|(s, _)| *s == sql) {
            Some(at) => at,
            None => {
                self.stmts.push((sql, tx.prepare_cached(sql)?));
                self.stmts.len() - 1
            }
        };
        Ok(&mut self.stmts[at].1)
    }
}

/// Appends one event and updates the views it touches. Where a view holds
/// something the fold computes (a node's times, a run's end), the value
/// is copied from `state`, the fold that includes the event: the store
/// never folds events itself. Only `run_started` may come without it.
pub(super) fn write_event(
    tx: &Transaction<'_>,
    run: &str,
    e: &Event,
    state: Option<&RunState>,
) -> rusqlite::Result<()> {
    write_events(tx, run, std::slice::from_ref(e), state)
}

/// Rows per multi-row `INSERT` of a commit's events, attempts and
/// outputs. A remainder goes in statements of 8, 4, 2 and 1 rows, so five
/// prepared statements per table write any number of rows.
const EVENT_ROWS: usize = 16;

/// A table a commit writes in multi-row `INSERT`s: `?1` is the run, then
/// `width` parameters per row; `suffix` follows the rows.
struct MultiRow {
    head: &'static str,
    width: usize,
    suffix: &'static str,
    sql: std::sync::OnceLock<Vec<String>>,
}

impl MultiRow {
    const fn new(head: &'static str, width: usize, suffix: &'static str) -> MultiRow {
        MultiRow {
            head,
            width,
            suffix,
            sql: std::sync::OnceLock::new(),
        }
    }

    /// The statement for `rows` rows (a power of two up to
    /// [`EVENT_ROWS`]), made once.
    fn sql(&'static self, rows: usize) -> &'static str {
        let all = self.sql.get_or_init(|| {
            (0..=EVENT_ROWS.ilog2())
                .map(|k| insert_sql(self.head, 1 << k, self.width, "") + self.suffix)
                .collect()
        });
        &all[rows.ilog2() as usize]
    }
}

/// seq, at, kind, data per row.
static EVENTS: MultiRow = MultiRow::new(
    "INSERT OR FAIL INTO events (run, seq, at, kind, data)",
    4,
    "",
);

/// An attempt's row, whole when it ended within the commit (else the end's
/// columns are `NULL`, as its start alone leaves them).
static ATTEMPTS: MultiRow = MultiRow::new(
    "INSERT OR FAIL INTO attempts (run, node, attempt, pid, started_at, finished_at, outcome,
        exit_code, error, files, runner)",
    10,
    "",
);

/// A node's output; a later one of the same node replaces it.
static OUTPUTS: MultiRow = MultiRow::new(
    "INSERT OR FAIL INTO outputs (run, node, value)",
    2,
    " ON CONFLICT (run, node) DO UPDATE SET value = excluded.value",
);

/// Writes `rows` into `table`, [`EVENT_ROWS`] to a statement; `bind`
/// binds one row from the parameter it is given on.
fn insert_rows<'c, T>(
    tx: &'c Transaction<'_>,
    held: &mut Held<'c>,
    run: &str,
    table: &'static MultiRow,
    rows: &[T],
    mut bind: impl FnMut(&mut CachedStatement<'c>, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = EVENT_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(n);
        let stmt = held.get(tx, table.sql(n))?;
        stmt.raw_bind_parameter(1, run)?;
        for (r, row) in chunk.iter().enumerate() {
            bind(stmt, 2 + table.width * r, row)?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// An `attempt_started` of a commit, with the `attempt_finished` of the
/// same attempt when the commit holds it too.
struct AttemptRow<'a> {
    node: &'a str,
    attempt: u32,
    pid: Option<u32>,
    started_at: &'a str,
    end: Option<&'a Event>,
}

/// Inserts a commit's attempts, whole where they ended within it.
fn insert_attempts<'c>(
    tx: &'c Transaction<'_>,
    held: &mut Held<'c>,
    run: &str,
    rows: &[AttemptRow<'_>],
) -> rusqlite::Result<()> {
    use rusqlite::types::Null;
    insert_rows(tx, held, run, &ATTEMPTS, rows, |stmt, p, a| {
        stmt.raw_bind_parameter(p, a.node)?;
        stmt.raw_bind_parameter(p + 1, a.attempt)?;
        stmt.raw_bind_parameter(p + 2, a.pid)?;
        stmt.raw_bind_parameter(p + 3, a.started_at)?;
        match a.end {
            Some(Event {
                at,
                kind:
                    EventKind::AttemptFinished {
                        outcome,
                        exit_code,
                        error,
                        files,
                        runner,
                        ..
                    },
                ..
            }) => {
                stmt.raw_bind_parameter(p + 4, at)?;
                stmt.raw_bind_parameter(p + 5, outcome.as_str())?;
                stmt.raw_bind_parameter(p + 6, exit_code)?;
                stmt.raw_bind_parameter(p + 7, error)?;
                stmt.raw_bind_parameter(p + 8, (!files.is_empty()).then(|| to_json(files)))?;
                stmt.raw_bind_parameter(p + 9, runner.as_deref().unwrap_or(crate::history::LOCAL))?;
            }
            _ => {
                for k in 4..10 {
                    stmt.raw_bind_parameter(p + k, Null)?;
                }
            }
        }
        Ok(())
    })
}

/// Appends events, [`EVENT_ROWS`] to a statement: one statement for a
/// commit's few events instead of one each.
fn insert_events<'c>(
    tx: &'c Transaction<'_>,
    held: &mut Held<'c>,
    run: &str,
    events: &[Event],
) -> rusqlite::Result<()> {
    // One buffer per row of a statement, reused by the next statement:
    // SQLite copies what is bound, so a commit's events need not each
    // allocate their JSON.
    let mut data: Vec<Vec<u8>> = Vec::new();
    data.resize_with(EVENT_ROWS.min(events.len()), Vec::new);
    let mut rest = events;
    while !rest.is_empty() {
        let rows = EVENT_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(rows);
        for (e, d) in chunk.iter().zip(&mut data) {
            d.clear();
            serde_json::to_writer(&mut *d, &e.kind).expect("orch values always serialise");
        }
        let stmt = held.get(tx, EVENTS.sql(rows))?;
        stmt.raw_bind_parameter(1, run)?;
        for (r, (e, d)) in chunk.iter().zip(&data).enumerate() {
            let p = 2 + 4 * r;
            stmt.raw_bind_parameter(p, e.seq as i64)?;
            stmt.raw_bind_parameter(p + 1, &e.at)?;
            stmt.raw_bind_parameter(p + 2, event_name(&e.kind))?;
            stmt.raw_bind_parameter(p + 3, text(d))?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// How [`write_events`] writes one event's views.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// As the event alone would.
    Own,
    /// Not at all: a later event of the same commit writes the same row
    /// (a node's row takes the folded state, the same for all of the
    /// commit's state changes of the node; an attempt that starts and
    /// ends within the commit is inserted whole by its start).
    Later,
    /// An `attempt_started` whose attempt ends at this event of the commit.
    Whole(usize),
}

/// Appends a commit's events (in order, multi-row statements) and updates
/// the views they touch, each row once per commit where several events
/// touch it. The rows are the ones writing each event on its own would
/// leave: see [`write_event`].
pub(super) fn write_events(
    tx: &Transaction<'_>,
    run: &str,
    events: &[Event],
    state: Option<&RunState>,
) -> rusqlite::Result<()> {
    let held = &mut Held::new();
    insert_events(tx, held, run, events)?;
    let mut rows = vec![Rows::Own; events.len()];
    if events.len() > 1 {
        // The graph's hasher, not SipHash: a commit holds hundreds of ids.
        type Fast = std::hash::BuildHasherDefault<crate::graph::FastHasher>;
        let mut later_node: std::collections::HashSet<&str, Fast> = Default::default();
        let mut ends: std::collections::HashMap<(&str, u32), usize, Fast> = Default::default();
        for (k, e) in events.iter().enumerate().rev() {
            match &e.kind {
                // (The guard records the node: its last change writes.)
                EventKind::NodeState { node, .. } if !later_node.insert(node) => {
                    rows[k] = Rows::Later;
                }
                EventKind::AttemptFinished { node, attempt, .. } => {
                    ends.insert((node, *attempt), k);
                }
                EventKind::AttemptStarted { node, attempt, .. } => {
                    if let Some(end) = ends.remove(&(node.as_str(), *attempt)) {
                        rows[k] = Rows::Whole(end);
                        rows[end] = Rows::Later;
                    }
                }
                _ => {}
            }
        }
    }
    // The commit's attempts and outputs go in multi-row statements after
    // its other rows (no other row of the commit reads them: an attempt
    // that ends within the commit is inserted whole, and a restart's
    // rewrite comes after all of them).
    let mut attempts = Vec::new();
    let mut outputs = Vec::new();
    for (e, how) in events.iter().zip(rows) {
        match (&e.kind, how) {
            (_, Rows::Later) => {}
            (EventKind::AttemptStarted { node, attempt, pid }, how) => attempts.push(AttemptRow {
                node,
                attempt: *attempt,
                pid: *pid,
                started_at: &e.at,
                end: match how {
                    Rows::Whole(end) => Some(&events[end]),
                    _ => None,
                },
            }),
            (EventKind::Output { node, value }, _) => outputs.push((node.as_str(), value)),
            _ => write_views(tx, held, run, e, state)?,
        }
    }
    insert_attempts(tx, held, run, &attempts)?;
    insert_rows(
        tx,
        held,
        run,
        &OUTPUTS,
        &outputs,
        |stmt, p, (node, value)| {
            stmt.raw_bind_parameter(p, node)?;
            stmt.raw_bind_parameter(p + 1, to_json(value))
        },
    )
}

/// The views of one event other than an `attempt_started` or an `output`
/// (which [`write_events`] inserts in multi-row statements).
fn write_views<'c>(
    tx: &'c Transaction<'_>,
    held: &mut Held<'c>,
    run: &str,
    e: &Event,
    state: Option<&RunState>,
) -> rusqlite::Result<()> {
    let folded = || state.expect("views of a state change are copied from the fold");
    match &e.kind {
        EventKind::RunStarted {
            workflow,
            orchestrator_pid,
            config,
        } => {
            held.get(
                tx,
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
            held.get(tx, "UPDATE runs SET orchestrator_pid = ?2 WHERE id = ?1")?
                .execute(params![run, orchestrator_pid])?;
        }
        EventKind::BatchCommitted { mutations, .. } => write_mutations(tx, run, mutations)?,
        EventKind::NodeState { node, .. } => {
            let st = folded();
            // A node retracted by a later restart of the same commit is
            // written by the rewrite.
            if let Some(i) = st.graph.position(node) {
                let facts = &st.facts[i];
                held.get(
                    tx,
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
        // Written by `write_events`, many to a statement.
        EventKind::AttemptStarted { .. } | EventKind::Output { .. } => {}
        EventKind::AttemptFinished {
            node,
            attempt,
            outcome,
            exit_code,
            error,
            files,
            runner,
        } => {
            let files = (!files.is_empty()).then(|| to_json(files));
            let runner = runner.as_deref().unwrap_or(crate::history::LOCAL);
            held.get(
                tx,
                "UPDATE attempts SET finished_at = ?4, outcome = ?5, exit_code = ?6, error = ?7, files = ?8,
                    runner = ?9
                 WHERE run = ?1 AND node = ?2 AND attempt = ?3",
            )?
            .execute(params![
                run,
                node,
                attempt,
                e.at,
                outcome.as_str(),
                exit_code,
                error,
                files,
                runner
            ])?;
        }
        EventKind::Restarted { .. } => {
            // The new generation is rewritten from the folded state once
            // the commit's events are written (see `Store::commit`).
        }
        EventKind::PromiseBroken { violation } => {
            held.get(
                tx,
                "INSERT INTO violations (run, violation) VALUES (?1, ?2)",
            )?
            .execute(params![run, to_json(violation)])?;
        }
        EventKind::RunStatus { .. } => {
            let st = folded();
            held.get(
                tx,
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
pub(in crate::store) struct RegistrationView<'a> {
    pub(in crate::store) origin: Origin,
    pub(in crate::store) mutations: Filled<'a>,
}

/// Mutations serialised with empty task names filled in (the node's id).
pub(in crate::store) struct Filled<'a>(pub(in crate::store) &'a [Mutation]);

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
        task: NamedTask<'a>,
        #[serde(skip_serializing_if = "Value::is_null")]
        inputs: &'a Value,
        #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
        attrs: &'a Attrs,
    },
    #[serde(untagged)]
    Other(&'a Mutation),
}

/// The task with its name filled in as validation does (an empty name is
/// the node's id), to serialise: laid out as [`Task`]'s own serialisation,
/// without a copy of the task (cloning 100,000 tasks for the rows and the
/// event of a registration was ~5% of its writer thread).
pub(in crate::store) fn named<'a>(id: &'a str, task: &'a Task) -> NamedTask<'a> {
    NamedTask { id, task }
}

/// See [`named`].
pub(in crate::store) struct NamedTask<'a> {
    id: &'a str,
    task: &'a Task,
}

impl serde::Serialize for NamedTask<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use crate::model::{Exec, Resources};
        fn none<T>(v: &&Option<T>) -> bool {
            v.is_none()
        }
        fn zero(n: &u32) -> bool {
            *n == 0
        }
        fn not(b: &bool) -> bool {
            !*b
        }
        fn empty(v: &&Vec<String>) -> bool {
            v.is_empty()
        }
        /// [`Task`]'s fields, as its derive lays them out.
        #[derive(serde::Serialize)]
        struct Fields<'a> {
            name: &'a str,
            #[serde(flatten)]
            exec: &'a Exec,
            #[serde(skip_serializing_if = "none")]
            timeout: &'a Option<f64>,
            #[serde(skip_serializing_if = "zero")]
            retries: u32,
            #[serde(skip_serializing_if = "none")]
            retry_delay: &'a Option<f64>,
            #[serde(skip_serializing_if = "not")]
            output_required: bool,
            #[serde(skip_serializing_if = "none")]
            input_type: &'a Option<Box<str>>,
            #[serde(skip_serializing_if = "none")]
            output_type: &'a Option<Box<str>>,
            #[serde(skip_serializing_if = "empty")]
            produces: &'a Vec<String>,
            #[serde(skip_serializing_if = "none")]
            requires: &'a Option<Box<Resources>>,
        }
        // Every field named: a field added to `Task` fails to compile here.
        let Task {
            name,
            exec,
            timeout,
            retries,
            retry_delay,
            output_required,
            input_type,
            output_type,
            produces,
            requires,
        } = self.task;
        Fields {
            name: if name.is_empty() { self.id } else { name },
            exec,
            timeout,
            retries: *retries,
            retry_delay,
            output_required: *output_required,
            input_type,
            output_type,
            produces,
            requires,
        }
        .serialize(s)
    }
}

/// A cell as text (ids and JSON are UTF-8).
fn text(cell: &[u8]) -> &str {
    std::str::from_utf8(cell).expect("cells hold UTF-8")
}

/// Rows per multi-row `INSERT` when a batch adds many nodes or edges.
pub(super) const CHUNK: usize = 64;

/// The `INSERT` of `rows` rows into `table`: `?1` is the run, then
/// `width` parameters per row, then `tail` (constant columns) per row.
///
/// The multi-row statements say `INSERT OR FAIL` (or `OR IGNORE`), never
/// the default `OR ABORT`: to undo only its own rows when one of them
/// breaks a constraint, an aborting multi-row statement copies every page
/// it is about to change into a statement journal first, which spilled
/// into a temporary file past 64 KiB (174 MB of writes for a
/// 100,000-node registration). Nothing here continues a transaction
/// after a failed statement: the error rolls the whole transaction back,
/// so the rows a failing statement already wrote never stay.
fn insert_sql(head: &str, rows: usize, width: usize, tail: &str) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " VALUES (?1" } else { ", (?1" });
        for c in 0..width {
            let _ = write!(sql, ", ?{}", 2 + r * width + c);
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
struct Chunked {
    head: &'static str,
    tail: &'static str,
    width: usize,
    cells: Vec<Vec<u8>>,
    used: usize,
    /// The statements' text for `CHUNK` rows and for one, made once.
    sql: [Option<String>; 2],
}

impl Chunked {
    fn new(head: &'static str, width: usize, tail: &'static str) -> Chunked {
        Chunked {
            head,
            tail,
            width,
            cells: Vec::new(),
            used: 0,
            sql: [None, None],
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
        let (head, width, tail) = (self.head, self.width, self.tail);
        let per = if rows == CHUNK { CHUNK } else { 1 };
        let sql = self.sql[usize::from(per == 1)]
            .get_or_insert_with(|| insert_sql(head, per, width, tail));
        let mut stmt = tx.prepare_cached(sql)?;
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
pub(super) fn write_mutations(
    tx: &Transaction<'_>,
    run: &str,
    mutations: &[Mutation],
) -> rusqlite::Result<()> {
    let mut nodes = Chunked::new(
        "INSERT OR FAIL INTO nodes (run, id, task, inputs, attrs, state)",
        4,
        ", 'pending'",
    );
    let mut edges = Chunked::new("INSERT OR FAIL INTO edges (run, src, dst, attrs)", 3, "");
    let mut implied = Chunked::new(
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

pub(super) fn write_mutation(
    tx: &Transaction<'_>,
    run: &str,
    m: &Mutation,
) -> rusqlite::Result<()> {
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
        // Rules have no table: they live in the events, and the fold of
        // the history (`Store::replay`) knows them and which fired.
        Mutation::AddRule { .. } => {}
        // Loops neither: their iterations are ordinary nodes.
        Mutation::AddLoop { .. } => {}
    }
    Ok(())
}

pub(super) fn rewrite_graph(
    tx: &Transaction<'_>,
    run: &str,
    state: &RunState,
) -> rusqlite::Result<()> {
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

pub(in crate::store) fn merged(current: &str, patch: &Attrs) -> String {
    let mut attrs: Attrs = serde_json::from_str(current).unwrap_or_default();
    merge_attrs(&mut attrs, patch);
    to_json(&attrs)
}
