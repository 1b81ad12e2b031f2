//! Expected times from history (SERVICE.md §5): how long each task is
//! expected to take, and when each remaining node of a run and the run
//! itself are expected to end.
//!
//! # Method
//!
//! - **A task's expected duration** is the median (and the 80th
//!   percentile) of the durations of its past successful attempts: same
//!   workflow, same task name, the [`SAMPLES_PER_TASK`] most recent of the
//!   workflow's [`SAMPLE_RUNS`] latest runs, plus the attempts that already
//!   succeeded in the run itself. When the samples carry commits and at
//!   least [`MIN_SAME_COMMIT`] come from the commit the run started from,
//!   only those count ([`History`]).
//! - **A run's remaining work** is simulated by a greedy list scheduler
//!   with the run's `max_parallel` slots: running nodes hold their slot and
//!   end after `max(0, expected − elapsed)`; ready and pending nodes start,
//!   in insertion order as the engine starts them, when their unfinished
//!   predecessors have ended and a slot is free. With as many slots as
//!   nodes this is the longest remaining path; with fewer, queue waits
//!   appear. The run is assumed to go on (a paused run as if unpaused now).
//! - **A task with no history** takes the median of every successful
//!   attempt of the workflow ([`Basis::Workflow`]) and the estimate is
//!   marked [`RunEstimate::partial`]. A workflow with no history at all
//!   gives no times, only the structure.
//! - **Promised but unmaterialised parts.** An open `shape` region that no
//!   batch filled yet gates its `to` node; it is a placeholder that holds
//!   no slot and lasts what the gap between `from` ending and `to`
//!   starting lasted in past runs (queue waits inside it included). A node
//!   that may still add nodes (the outlook's `★`) can add work nobody can
//!   see yet: the run is then expected to last at least as long as its
//!   past succeeded runs did (their median from the run's start: a floor on
//!   [`RunEstimate::expected_end_ms`]). Parts with no history of their own
//!   mark the estimate partial.
//!
//! The method for users: `docs/estimates.md`. Everything here but
//! [`for_run`] and [`for_state`] is pure: no I/O, no
//! clock (the caller passes "now").

mod simulate;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::Serialize;

pub use stats::{percentile, History, Stats, MIN_SAME_COMMIT};

use crate::error::Result;
use crate::history::RunState;
use crate::model::{AttemptOutcome, NodeState};
use crate::promise::Promise;
use crate::store::{Store, TaskSample};
use simulate::Item;

/// How many of a workflow's latest runs [`for_run`] reads samples from.
pub const SAMPLE_RUNS: usize = 200;

/// How many samples of each task name [`for_run`] keeps (the most
/// recent).
pub const SAMPLES_PER_TASK: usize = 50;

/// How many of a workflow's latest succeeded runs [`for_run`] reads for
/// the floor of a run that may still grow.
pub const RUN_SAMPLES: usize = 50;

/// What a node's expected duration is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Past successful attempts of its own task name.
    Task,
    /// No history of its task: the median of the workflow's attempts.
    Workflow,
    /// No history at all: no time.
    None,
}

/// When a remaining node is expected to start and end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEstimate {
    /// The node id.
    pub node: String,
    /// Its task name.
    pub task: String,
    /// Its state at the estimate's moment.
    pub state: NodeState,
    /// When it starts (or started, when it runs), in milliseconds since
    /// the Unix epoch.
    pub expected_start_ms: Option<i64>,
    /// When it ends, at the median durations.
    pub expected_end_ms: Option<i64>,
    /// Its expected duration: the median of its samples.
    pub median_ms: Option<i64>,
    /// The 80th percentile of its samples.
    pub p80_ms: Option<i64>,
    /// How many samples that is.
    pub samples: usize,
    /// What the duration is built from.
    pub basis: Basis,
}

/// What kind of future the promises still allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenKind {
    /// An open `shape` region no batch filled yet, between two nodes.
    Region,
    /// A node whose task may still add nodes.
    Growth,
}

/// A part of the run the promises allow but the graph does not hold yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenPart {
    /// A region or a growing node.
    pub kind: OpenKind,
    /// The region's `from`, or the growing node.
    pub node: String,
    /// The region's `to`.
    pub to: Option<String>,
    /// How long the region is expected to take (the median of past gaps
    /// between `from` ending and `to` starting); `None` for growth and for
    /// a region with no history.
    pub expected_ms: Option<i64>,
    /// How many past runs that is built from.
    pub samples: usize,
}

/// The expected times of a run at one moment. Times are milliseconds
/// since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunEstimate {
    /// The run id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// The moment the estimate is for.
    pub now_ms: i64,
    /// When the run started.
    pub started_ms: Option<i64>,
    /// When it is expected to end, at median durations (its actual end
    /// once it ended); `None` when the workflow has no history.
    pub expected_end_ms: Option<i64>,
    /// The same at the 80th percentiles: a pessimistic end.
    pub expected_end_p80_ms: Option<i64>,
    /// Some part is estimated without history of its own (a task that
    /// never succeeded before, a region or a growth never seen end), or
    /// not at all.
    pub partial: bool,
    /// The workflow's past succeeded runs, start to end: the floor of a
    /// run that may still grow.
    pub past_runs: Option<Stats>,
    /// The parts the promises still allow that the graph does not hold.
    pub open: Vec<OpenPart>,
    /// Every node that has not finished, in insertion order.
    pub nodes: Vec<NodeEstimate>,
}

fn millis(t: &str) -> Option<i64> {
    crate::time::parse_millis(t).and_then(|ms| i64::try_from(ms).ok())
}

/// Which statistic of a [`Stats`] a simulation uses.
#[derive(Clone, Copy)]
enum Quantile {
    Median,
    P80,
}

impl Quantile {
    fn of(self, s: &Stats) -> i64 {
        match self {
            Quantile::Median => s.median_ms,
            Quantile::P80 => s.p80_ms,
        }
    }
}

/// The expected times of the run folded in `state`, from `history` (of
/// its workflow), at `now_ms`. Pure: see the [module](self) for the
/// method.
///
/// ```
/// use orch::estimate::{estimate, History};
/// use orch::store::TaskSample;
/// use orch::{Mutation, RunState, Task};
///
/// let mut state = RunState::new("r");
/// state.graph.commit(&[
///     Mutation::add_node("a", Task::command(["true"]).named("fetch")),
///     Mutation::add_node("b", Task::command(["true"]).named("fetch")),
///     Mutation::add_edge("a", "b"),
///     Mutation::AddPromise { promise: orch::Promise::Static {} },
/// ]).unwrap();
/// let past = [TaskSample::new("old", "a", "fetch", 1, 0, 1_000)];
/// let e = estimate(&state, &History::new(&past, &[], None), 5_000);
/// assert_eq!(e.expected_end_ms, Some(7_000));
/// assert!(!e.partial);
/// ```
pub fn estimate(state: &RunState, history: &History, now_ms: i64) -> RunEstimate {
    let g = &state.graph;
    let mut out = RunEstimate {
        run: state.run.clone(),
        workflow: state.workflow.clone(),
        now_ms,
        started_ms: state.created_at.as_deref().and_then(millis),
        expected_end_ms: None,
        expected_end_p80_ms: None,
        partial: false,
        past_runs: history.runs().copied(),
        open: Vec::new(),
        nodes: Vec::new(),
    };
    if state.status.is_terminal() {
        out.expected_end_ms = state.finished_at.as_deref().and_then(millis);
        out.expected_end_p80_ms = out.expected_end_ms;
        return out;
    }

    // The remaining nodes, in insertion order, with what their durations
    // are built from.
    let mut item_of: HashMap<usize, usize> = HashMap::new();
    let mut nodes: Vec<(usize, Option<Stats>, Option<i64>)> = Vec::new();
    for (i, n) in g.nodes().iter().enumerate() {
        if n.state.is_terminal() {
            continue;
        }
        let (stats, basis) = match (history.task(&n.task.name), history.fallback()) {
            (Some(s), _) => (Some(*s), Basis::Task),
            (None, Some(f)) => (Some(*f), Basis::Workflow),
            (None, None) => (None, Basis::None),
        };
        out.partial |= basis != Basis::Task;
        let running_since = matches!(n.state, NodeState::Running | NodeState::Waiting).then(|| {
            let f = state.facts.get(i);
            f.and_then(|f| f.attempts.last().map(|a| a.started_at.as_str()))
                .or(f.and_then(|f| f.started_at.as_deref()))
                .and_then(millis)
                .unwrap_or(now_ms)
        });
        item_of.insert(i, nodes.len());
        nodes.push((i, stats, running_since));
        out.nodes.push(NodeEstimate {
            node: n.id.clone(),
            task: n.task.name.clone(),
            state: n.state,
            expected_start_ms: None,
            expected_end_ms: None,
            median_ms: stats.map(|s| s.median_ms),
            p80_ms: stats.map(|s| s.p80_ms),
            samples: stats.map_or(0, |s| s.samples),
            basis,
        });
    }

    // Open regions: a placeholder between `from` and a `to` that has not
    // started, gating `to`.
    // (from node, to node, elapsed since from ended, stats)
    let mut regions: Vec<(usize, usize, i64, Option<Stats>)> = Vec::new();
    for (k, p) in g.promises().iter().enumerate() {
        let Promise::Shape { from, to, .. } = p else {
            continue;
        };
        let (Some(f), Some(t)) = (g.position(from), g.position(to)) else {
            continue;
        };
        if g.region_unfilled(k) != Some(true) || !g.node(t).state.not_started() {
            continue;
        }
        let gap = history.gap(from, to);
        let elapsed = match g.node(f).state {
            NodeState::Succeeded => state
                .facts
                .get(f)
                .and_then(|facts| facts.finished_at.as_deref())
                .and_then(millis)
                .map_or(0, |end| (now_ms - end).max(0)),
            _ => 0,
        };
        out.partial |= gap.is_none();
        out.open.push(OpenPart {
            kind: OpenKind::Region,
            node: from.clone(),
            to: Some(to.clone()),
            expected_ms: gap.map(|s| s.median_ms),
            samples: gap.map_or(0, |s| s.samples),
        });
        regions.push((f, t, elapsed, gap));
    }
    let mut grows = false;
    for (i, n) in g.nodes().iter().enumerate() {
        if !n.state.is_terminal() && crate::picture::outlook::growth(g, i).is_some() {
            grows = true;
            out.open.push(OpenPart {
                kind: OpenKind::Growth,
                node: n.id.clone(),
                to: None,
                expected_ms: None,
                samples: 0,
            });
        }
    }
    out.partial |= grows && history.runs().is_none();

    if nodes.iter().any(|(_, s, _)| s.is_none()) {
        // No history at all: structure only.
        out.partial = true;
        return out;
    }
    let slots = state.config.as_ref().map_or(1, |c| c.max_parallel);
    let simulate = |q: Quantile| {
        let mut items: Vec<Item> = nodes
            .iter()
            .map(|&(i, stats, running_since)| {
                let expected = stats.map_or(0, |s| q.of(&s));
                let elapsed = running_since.map_or(0, |s| (now_ms - s).max(0));
                Item {
                    duration: (expected - elapsed).max(0),
                    slot: true,
                    deps: g
                        .predecessors(i)
                        .filter_map(|p| item_of.get(&p).copied())
                        .collect(),
                    running_since,
                }
            })
            .collect();
        for &(f, t, elapsed, gap) in &regions {
            let placeholder = items.len();
            items.push(Item {
                duration: (gap.map_or(0, |s| q.of(&s)) - elapsed).max(0),
                slot: false,
                deps: item_of.get(&f).copied().into_iter().collect(),
                running_since: None,
            });
            if let Some(&ti) = item_of.get(&t) {
                items[ti].deps.push(placeholder);
            }
        }
        let times = simulate::schedule(&items, slots, now_ms);
        let end = times.iter().flatten().map(|&(_, e)| e).max();
        let mut end = end.unwrap_or(now_ms).max(now_ms);
        if grows {
            if let (Some(start), Some(runs)) = (out.started_ms, history.runs()) {
                end = end.max(start + q.of(runs));
            }
        }
        (times, end)
    };
    let (times, end) = simulate(Quantile::Median);
    for (n, t) in out.nodes.iter_mut().zip(&times) {
        n.expected_start_ms = t.map(|(s, _)| s);
        n.expected_end_ms = t.map(|(_, e)| e);
    }
    out.expected_end_ms = Some(end);
    out.expected_end_p80_ms = Some(simulate(Quantile::P80).1);
    out
}

/// The successful attempts the run folded in `state` already made, as
/// samples of its own.
fn own_samples(state: &RunState) -> Vec<TaskSample> {
    let g = &state.graph;
    let mut out = Vec::new();
    for (i, f) in state.facts.iter().enumerate() {
        let task = &g.node(i).task.name;
        for a in &f.attempts {
            let (Some(AttemptOutcome::Succeeded), Some(end)) = (a.outcome, &a.finished_at) else {
                continue;
            };
            if let (Some(s), Some(e)) = (millis(&a.started_at), millis(end)) {
                out.push(TaskSample::new(
                    &state.run,
                    &g.node(i).id,
                    task,
                    a.attempt,
                    s,
                    e,
                ));
            }
        }
    }
    out
}

/// The expected times of the run folded in `state` at `now_ms`, from the
/// history `store` keeps of its workflow: the samples of its other runs
/// (the store's record of the run itself is replaced by what `state`
/// knows, so that an estimate of a past moment uses nothing from its
/// future).
pub fn for_state(store: &dyn Store, state: &RunState, now_ms: i64) -> Result<RunEstimate> {
    let mut samples: Vec<TaskSample> = store
        .task_durations(&state.workflow, SAMPLE_RUNS, SAMPLES_PER_TASK)?
        .into_iter()
        .filter(|s| s.run != state.run)
        .collect();
    samples.extend(own_samples(state));
    let mut runs = store.run_durations(&state.workflow, RUN_SAMPLES)?;
    runs.retain(|r| r.run != state.run);
    // Runs record no commit yet: no preference.
    let history = History::new(&samples, &runs, None);
    Ok(estimate(state, &history, now_ms))
}

/// The expected times of run `run` (an id, a unique prefix of one, or
/// `latest`) at `now_ms`, rebuilt from its history and its workflow's.
///
/// ```
/// use orch::{Task, Workflow};
/// let dir = tempfile::tempdir()?;
/// let db = dir.path().join("orch.db");
/// let mut wf = Workflow::new("estimated");
/// wf.dir(dir.path()).db(&db);
/// wf.node("a", Task::command(["true"]));
/// wf.node("b", Task::command(["true"]));
/// wf.edge("a", "b");
/// wf.run()?;
/// wf.run()?;
/// let store = orch::SqliteStore::open_existing(&db)?;
/// let e = orch::estimate::for_run(&store, "latest", orch::time::unix_millis() as i64)?;
/// assert!(e.nodes.is_empty(), "the run ended");
/// assert_eq!(e.past_runs.map(|s| s.samples), Some(1), "the other run");
/// assert_eq!(e.expected_end_ms, e.expected_end_p80_ms);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn for_run(store: &dyn Store, run: &str, now_ms: i64) -> Result<RunEstimate> {
    let run = store.resolve_run(run)?;
    let state = store.replay(&run, None)?;
    for_state(store, &state, now_ms)
}
