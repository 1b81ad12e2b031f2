//! Writing events and the views they touch, in PostgreSQL: the same rows
//! as the SQLite store's, copied from the fold (never computed here).
//! Rows of a big batch go in one statement per kind and run of the batch
//! (`unnest` of arrays, in order), so a registration of 100,000 nodes is
//! a handful of statements.

use serde_json::Value;

use super::conn::Tx;
use crate::error::Result;
use crate::history::{Event, EventKind, RunState};
use crate::model::{output_refs, Mutation};
use crate::store::sqlite::to_json;
use crate::store::sqlite::views::{event_name, merged, named};

/// Appends events (in one statement) and updates the views each touches.
/// Where a view holds something the fold computes (a node's times, a
/// run's end), the value is copied from `state`, the fold that includes
/// the events. Only `run_started` may come without it.
pub(super) fn write_events(
    tx: &mut Tx<'_>,
    run: &str,
    events: &[Event],
    state: Option<&RunState>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
    let ats: Vec<&str> = events.iter().map(|e| e.at.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| event_name(&e.kind)).collect();
    let data: Vec<String> = events.iter().map(|e| to_json(&e.kind)).collect();
    tx.exec(
        "INSERT INTO events (run, seq, at, kind, data)
         SELECT $1, s, a, k, d FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS u(s, a, k, d)",
        &[&run, &seqs, &ats, &kinds, &data],
    )?;
    for e in events {
        write_view(tx, run, e, state)?;
    }
    Ok(())
}

fn write_view(tx: &mut Tx<'_>, run: &str, e: &Event, state: Option<&RunState>) -> Result<()> {
    let folded = || state.expect("views of a state change are copied from the fold");
    match &e.kind {
        EventKind::RunStarted {
            workflow,
            orchestrator_pid,
            config,
        } => {
            tx.exec(
                "INSERT INTO runs (id, workflow, status, orchestrator_pid, created_at, config)
                 VALUES ($1, $2, 'running', $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET orchestrator_pid = $3",
                &[
                    &run,
                    workflow,
                    &i64::from(*orchestrator_pid),
                    &e.at,
                    &to_json(config),
                ],
            )?;
        }
        EventKind::RunResumed { orchestrator_pid } => {
            tx.exec(
                "UPDATE runs SET orchestrator_pid = $2 WHERE id = $1",
                &[&run, &i64::from(*orchestrator_pid)],
            )?;
        }
        EventKind::BatchCommitted { mutations, .. } => write_mutations(tx, run, mutations)?,
        EventKind::NodeState { node, .. } => {
            let st = folded();
            // A node retracted by a later restart of the same commit is
            // written by the rewrite.
            if let Some(i) = st.graph.position(node) {
                let facts = &st.facts[i];
                tx.exec(
                    "UPDATE nodes SET state = $3, started_at = $4, finished_at = $5
                     WHERE run = $1 AND id = $2",
                    &[
                        &run,
                        node,
                        &st.graph.node(i).state.as_str(),
                        &facts.started_at,
                        &facts.finished_at,
                    ],
                )?;
            }
        }
        EventKind::AttemptStarted { node, attempt, pid } => {
            tx.exec(
                "INSERT INTO attempts (run, node, attempt, pid, started_at) VALUES ($1, $2, $3, $4, $5)",
                &[&run, node, &i64::from(*attempt), &pid.map(i64::from), &e.at],
            )?;
        }
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
            tx.exec(
                "UPDATE attempts SET finished_at = $4, outcome = $5, exit_code = $6, error = $7, files = $8,
                    runner = $9
                 WHERE run = $1 AND node = $2 AND attempt = $3",
                &[
                    &run,
                    node,
                    &i64::from(*attempt),
                    &e.at,
                    &outcome.as_str(),
                    &exit_code.map(i64::from),
                    error,
                    &files,
                    &runner,
                ],
            )?;
        }
        EventKind::Output { node, value } => {
            tx.exec(
                "INSERT INTO outputs (run, node, value) VALUES ($1, $2, $3)
                 ON CONFLICT (run, node) DO UPDATE SET value = $3",
                &[&run, node, &to_json(value)],
            )?;
        }
        EventKind::Restarted { .. } => {
            // The new generation is rewritten from the folded state once
            // the commit's events are written (see `Store::commit`).
        }
        EventKind::PromiseBroken { violation } => {
            tx.exec(
                "INSERT INTO violations (run, violation) VALUES ($1, $2)",
                &[&run, &to_json(violation)],
            )?;
        }
        EventKind::RunStatus { .. } => {
            let st = folded();
            tx.exec(
                "UPDATE runs SET status = $2, reason = $3, finished_at = $4 WHERE id = $1",
                &[&run, &st.status.as_str(), &st.reason, &st.finished_at],
            )?;
        }
    }
    Ok(())
}

/// Node rows waiting to be inserted, in order.
#[derive(Default)]
struct Nodes {
    id: Vec<String>,
    task: Vec<String>,
    inputs: Vec<String>,
    attrs: Vec<String>,
}

impl Nodes {
    fn flush(&mut self, tx: &mut Tx<'_>, run: &str) -> Result<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        tx.exec(
            "INSERT INTO nodes (run, id, task, inputs, attrs, state)
             SELECT $1, i, t, n, a, 'pending'
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(i, t, n, a, o)
             ORDER BY o",
            &[&run, &self.id, &self.task, &self.inputs, &self.attrs],
        )?;
        *self = Nodes::default();
        Ok(())
    }
}

/// Edge rows waiting to be inserted, in order: explicit ones, or the
/// ones implied by inputs that reference outputs (kept once).
struct Edges {
    implied: bool,
    src: Vec<String>,
    dst: Vec<String>,
    attrs: Vec<String>,
}

impl Edges {
    fn new(implied: bool) -> Edges {
        Edges {
            implied,
            src: Vec::new(),
            dst: Vec::new(),
            attrs: Vec::new(),
        }
    }

    fn flush(&mut self, tx: &mut Tx<'_>, run: &str) -> Result<()> {
        if self.src.is_empty() {
            return Ok(());
        }
        let sql = if self.implied {
            "INSERT INTO edges (run, src, dst, attrs)
             SELECT $1, s, d, a FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(s, d, a, o)
             ORDER BY o ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO edges (run, src, dst, attrs)
             SELECT $1, s, d, a FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(s, d, a, o)
             ORDER BY o"
        };
        tx.exec(sql, &[&run, &self.src, &self.dst, &self.attrs])?;
        self.src.clear();
        self.dst.clear();
        self.attrs.clear();
        Ok(())
    }
}

/// The materialized rows of a batch's mutations, in order.
pub(super) fn write_mutations(tx: &mut Tx<'_>, run: &str, mutations: &[Mutation]) -> Result<()> {
    let mut nodes = Nodes::default();
    let mut edges = Edges::new(false);
    let mut implied = Edges::new(true);
    for m in mutations {
        match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                nodes.id.push(id.clone());
                nodes.task.push(to_json(&named(id, task)));
                nodes.inputs.push(to_json(inputs));
                nodes.attrs.push(to_json(attrs));
                let refs = output_refs(inputs).unwrap_or_default();
                if !refs.is_empty() {
                    // Explicit edges keep their order with implied ones.
                    edges.flush(tx, run)?;
                    for r in refs {
                        implied.src.push(r.node.clone());
                        implied.dst.push(id.clone());
                        implied.attrs.push("{}".into());
                    }
                }
            }
            Mutation::AddEdge { from, to, attrs } => {
                implied.flush(tx, run)?;
                edges.src.push(from.clone());
                edges.dst.push(to.clone());
                edges.attrs.push(to_json(attrs));
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

/// A mutation that reads earlier rows (`set_attrs`) or a promise.
fn write_mutation(tx: &mut Tx<'_>, run: &str, m: &Mutation) -> Result<()> {
    match m {
        Mutation::AddNode { .. } | Mutation::AddEdge { .. } => {
            write_mutations(tx, run, std::slice::from_ref(m))?
        }
        Mutation::SetAttrs {
            node: Some(n),
            attrs,
            ..
        } => {
            let row = tx.one(
                "SELECT attrs FROM nodes WHERE run = $1 AND id = $2 FOR UPDATE",
                &[&run, n],
            )?;
            let current: String = tx.get(&row, 0)?;
            tx.exec(
                "UPDATE nodes SET attrs = $3 WHERE run = $1 AND id = $2",
                &[&run, n, &merged(&current, attrs)],
            )?;
        }
        Mutation::SetAttrs {
            edge: Some(e),
            attrs,
            ..
        } => {
            let row = tx.one(
                "SELECT attrs FROM edges WHERE run = $1 AND src = $2 AND dst = $3 FOR UPDATE",
                &[&run, &e.from, &e.to],
            )?;
            let current: String = tx.get(&row, 0)?;
            tx.exec(
                "UPDATE edges SET attrs = $4 WHERE run = $1 AND src = $2 AND dst = $3",
                &[&run, &e.from, &e.to, &merged(&current, attrs)],
            )?;
        }
        Mutation::SetAttrs { .. } => {}
        // Rules and loops live in the history alone (their firings and
        // iterations are batches).
        Mutation::AddRule { .. } | Mutation::AddLoop { .. } => {}
        Mutation::AddPromise { promise } => {
            tx.exec(
                "INSERT INTO promises (run, promise) VALUES ($1, $2)",
                &[&run, &to_json(promise)],
            )?;
        }
    }
    Ok(())
}

/// Rewrites a run's graph views from the folded state (after a restart).
pub(super) fn rewrite_graph(tx: &mut Tx<'_>, run: &str, state: &RunState) -> Result<()> {
    for table in ["nodes", "edges", "outputs", "promises"] {
        tx.exec(&format!("DELETE FROM {table} WHERE run = $1"), &[&run])?;
    }
    let g = &state.graph;
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    let mut inputs = Vec::new();
    let mut attrs = Vec::new();
    let mut states = Vec::new();
    let mut started = Vec::new();
    let mut finished = Vec::new();
    let mut out_nodes = Vec::new();
    let mut out_values = Vec::new();
    for (n, f) in g.nodes().iter().zip(&state.facts) {
        ids.push(n.id.clone());
        tasks.push(to_json(&n.task));
        inputs.push(to_json(&n.inputs));
        attrs.push(to_json(&n.attrs));
        states.push(n.state.as_str());
        started.push(f.started_at.clone());
        finished.push(f.finished_at.clone());
        if let Some(v) = &f.output {
            out_nodes.push(n.id.clone());
            out_values.push(to_json::<Value>(v));
        }
    }
    tx.exec(
        "INSERT INTO nodes (run, id, task, inputs, attrs, state, started_at, finished_at)
         SELECT $1, i, t, n, a, s, b, e
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
              WITH ORDINALITY AS u(i, t, n, a, s, b, e, o)
         ORDER BY o",
        &[
            &run, &ids, &tasks, &inputs, &attrs, &states, &started, &finished,
        ],
    )?;
    tx.exec(
        "INSERT INTO outputs (run, node, value) SELECT $1, n, v FROM unnest($2::text[], $3::text[]) AS u(n, v)",
        &[&run, &out_nodes, &out_values],
    )?;
    let mut edges = Edges::new(false);
    for e in g.edges() {
        edges.src.push(g.node(e.from).id.clone());
        edges.dst.push(g.node(e.to).id.clone());
        edges.attrs.push(to_json(&e.attrs));
    }
    edges.flush(tx, run)?;
    let promises: Vec<String> = g.promises().iter().map(to_json).collect();
    tx.exec(
        "INSERT INTO promises (run, promise)
         SELECT $1, p FROM unnest($2::text[]) WITH ORDINALITY AS u(p, o) ORDER BY o",
        &[&run, &promises],
    )?;
    // Attempts of retracted nodes live on in the event log only.
    tx.exec(
        "DELETE FROM attempts WHERE run = $1 AND node NOT IN (SELECT id FROM nodes WHERE run = $1)",
        &[&run],
    )?;
    Ok(())
}
