//! The event history of a run and the state it folds into.
//!
//! Every change of a run is an [`Event`], appended to the store's log in
//! the same transaction that updates the materialized tables. The live
//! orchestrator and a rebuild from the log use the same
//! [`RunState::apply`], so a run's state at any past event can be rebuilt
//! (and drawn) from the log alone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::Graph;
use crate::model::{
    AttemptOutcome, Attrs, Mutation, NodeState, Origin, RunConfig, RunStatus, Task,
};

/// One entry of a run's append-only history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's history, from 1.
    pub seq: u64,
    /// When it was committed (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The run was created by an orchestrator process.
    RunStarted {
        /// The workflow's name.
        workflow: String,
        /// The orchestrating process.
        orchestrator_pid: u32,
        /// What is needed to run it again: base directory, interpreter,
        /// parallelism.
        config: RunConfig,
    },
    /// A new orchestrator process took the run over after the previous
    /// one stopped.
    RunResumed {
        /// The orchestrating process from now on.
        orchestrator_pid: u32,
    },
    /// A batch of mutations was committed.
    BatchCommitted {
        /// Who sent it.
        origin: Origin,
        /// The mutations, validated, in order.
        mutations: Vec<Mutation>,
    },
    /// A node changed state.
    NodeState {
        /// The node id.
        node: String,
        /// The new state.
        state: NodeState,
    },
    /// An attempt's process was started.
    AttemptStarted {
        /// The node id.
        node: String,
        /// The attempt number, from 1.
        attempt: u32,
        /// The process id, when a process was started.
        pid: Option<u32>,
    },
    /// An attempt ended.
    AttemptFinished {
        /// The node id.
        node: String,
        /// The attempt number.
        attempt: u32,
        /// How it ended.
        outcome: AttemptOutcome,
        /// The exit code, when the process exited normally.
        exit_code: Option<i32>,
        /// Why it failed, when it failed.
        error: Option<String>,
        /// The files it produced, of those its task declares.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<ProducedFile>,
        /// The runner that ran it (its name); absent when the server's
        /// own machine ran it (and in histories written before runners
        /// were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<String>,
    },
    /// A node's output was committed (with its attempt's batch).
    Output {
        /// The node id.
        node: String,
        /// The output value.
        value: Value,
    },
    /// A batch broke a promise; it was not applied.
    PromiseBroken {
        /// What was broken, by what.
        violation: ViolationRecord,
    },
    /// A node and everything downstream were restarted: the batches sent
    /// by their tasks (and by the tasks of the nodes those added) are
    /// retracted, giving a new generation of the graph; the nodes that stay
    /// go back to `pending`.
    Restarted {
        /// The node restarted.
        node: String,
        /// The new generation number (the first graph is generation 0).
        generation: u32,
        /// Sequence numbers of the retracted batches.
        retracted: Vec<u64>,
        /// The nodes set back to `pending`.
        reset: Vec<String>,
    },
    /// The run changed status.
    RunStatus {
        /// The new status.
        status: RunStatus,
        /// Why, for failures.
        reason: Option<String>,
    },
}

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

/// One attempt of a node, as folded from the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The process id, when a process was started.
    pub pid: Option<u32>,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How it ended.
    pub outcome: Option<AttemptOutcome>,
    /// The exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// The files it produced, of those its task declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ProducedFile>,
    /// Where it ran, once it ended: the name of the runner that ran it,
    /// or [`LOCAL`] for the machine of the engine that drives the run
    /// (also for attempts of histories written before runners were
    /// recorded). Absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
}

/// The `runner` of an attempt that the engine's own machine ran.
pub const LOCAL: &str = "local";

/// A file an attempt produced: its path (relative to the folder the
/// attempt ran in) and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducedFile {
    /// The path, as the task declares it.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Per-node facts besides the graph's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// When its first attempt started.
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    pub finished_at: Option<String>,
    /// Its attempts in order.
    pub attempts: Vec<AttemptRecord>,
    /// Its committed output.
    pub output: Option<Value>,
}

/// The state of a run: the fold of its events.
#[derive(Clone, Debug)]
pub struct RunState {
    /// The run id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// The run's configuration as recorded when it started.
    pub config: Option<RunConfig>,
    /// Current status.
    pub status: RunStatus,
    /// Why the run failed, if it did.
    pub reason: Option<String>,
    /// The process that orchestrates (or last orchestrated) the run.
    pub orchestrator_pid: Option<u32>,
    /// When the run started.
    pub created_at: Option<String>,
    /// When the run reached a terminal status.
    pub finished_at: Option<String>,
    /// Nodes, edges and promises.
    pub graph: Graph,
    /// Per node (by position): times, attempts, output.
    pub facts: Vec<NodeFacts>,
    /// Promise violations (filled by the promise checker).
    pub violations: Vec<ViolationRecord>,
    /// The last applied event's sequence number.
    pub last_seq: u64,
    /// The generation of the graph (bumped by each restart).
    pub generation: u32,
    /// Every batch in force: (event seq, origin, mutations). Kept by a
    /// rebuild from the history (a restart needs them); a running
    /// orchestrator's state does not keep them, to hold one copy of the
    /// graph instead of two.
    pub batches: Vec<(u64, Origin, Vec<Mutation>)>,
    /// Whether [`RunState::batches`] records new batches.
    pub(crate) keep_batches: bool,
    /// For node ids retracted by a restart: the last attempt number they
    /// used, so that a node added again never reuses one.
    pub retired: std::collections::HashMap<String, u32>,
}

/// A broken promise as the history records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ViolationRecord {
    /// The promise.
    pub promise: crate::promise::Promise,
    /// The promise as text, e.g. `no_edges_into(x)`.
    pub promise_text: String,
    /// Its position among the run's promises.
    pub promise_index: usize,
    /// The mutation (or moment) that broke it.
    pub mutation: String,
    /// What is wrong.
    pub message: String,
    /// The node whose attempt sent the batch, if an attempt did.
    pub node: Option<String>,
    /// That node's task name.
    pub task: Option<String>,
    /// That attempt's number.
    pub attempt: Option<u32>,
}

impl ViolationRecord {
    /// The record of `v`, broken by attempt `attempt` of `node` running
    /// `task` (all `None` when no attempt broke it: a region never
    /// filled, a start).
    pub fn new(
        v: &crate::promise::Violation,
        by: Option<(String, String, u32)>,
    ) -> ViolationRecord {
        let (node, task, attempt) = match by {
            Some((n, t, a)) => (Some(n), Some(t), Some(a)),
            None => (None, None, None),
        };
        ViolationRecord {
            promise: v.promise.clone(),
            promise_text: v.promise.to_string(),
            promise_index: v.index,
            mutation: v.mutation.clone(),
            message: v.message.clone(),
            node,
            task,
            attempt,
        }
    }
}

impl RunState {
    /// The empty state of a run before its first event.
    pub fn new(run: &str) -> RunState {
        RunState {
            run: run.to_string(),
            workflow: String::new(),
            config: None,
            status: RunStatus::Running,
            reason: None,
            orchestrator_pid: None,
            created_at: None,
            finished_at: None,
            graph: Graph::new(),
            facts: Vec::new(),
            violations: Vec::new(),
            last_seq: 0,
            generation: 0,
            batches: Vec::new(),
            keep_batches: true,
            retired: std::collections::HashMap::new(),
        }
    }

    /// Folds a whole history.
    pub fn replay<'a>(run: &str, events: impl IntoIterator<Item = &'a Event>) -> RunState {
        let mut s = RunState::new(run);
        for e in events {
            s.apply(e);
        }
        s
    }

    fn pos(&self, node: &str) -> usize {
        self.graph
            .position(node)
            .unwrap_or_else(|| panic!("event names unknown node `{node}`"))
    }

    /// [`RunState::apply`] of a `batch_committed` event at `seq` whose
    /// mutations are borrowed (a registration validated in place, see
    /// [`Graph::stage_borrowed`]): a batch that the state does not keep
    /// is copied into the graph one mutation at a time, never whole.
    pub(crate) fn apply_borrowed(
        &mut self,
        seq: u64,
        at: &str,
        origin: &Origin,
        mutations: &[Mutation],
    ) -> Vec<usize> {
        if self.keep_batches {
            return self.apply(&Event {
                seq,
                at: at.to_string(),
                kind: EventKind::BatchCommitted {
                    origin: origin.clone(),
                    mutations: mutations.to_vec(),
                },
            });
        }
        self.last_seq = seq;
        let applied = self.graph.apply_cloned(mutations);
        if let Origin::Rule { rule } = origin {
            self.graph.mark_fired(rule);
        }
        self.facts.resize_with(self.graph.len(), NodeFacts::default);
        applied.touched
    }

    /// Applies one event. Returns the nodes whose readiness may have
    /// changed (new nodes, targets of new edges, successors of a node that
    /// succeeded): the scheduler re-examines exactly these.
    pub fn apply(&mut self, e: &Event) -> Vec<usize> {
        self.last_seq = e.seq;
        match &e.kind {
            EventKind::RunStarted {
                workflow,
                orchestrator_pid,
                config,
            } => {
                self.workflow = workflow.clone();
                self.config = Some(config.clone());
                self.orchestrator_pid = Some(*orchestrator_pid);
                self.created_at.get_or_insert_with(|| e.at.clone());
                Vec::new()
            }
            EventKind::RunResumed { orchestrator_pid } => {
                self.orchestrator_pid = Some(*orchestrator_pid);
                Vec::new()
            }
            EventKind::BatchCommitted { origin, mutations } => {
                if self.keep_batches {
                    self.batches
                        .push((e.seq, origin.clone(), mutations.clone()));
                }
                let applied = self.graph.apply_unchecked(mutations);
                if let Origin::Rule { rule } = origin {
                    self.graph.mark_fired(rule);
                }
                self.facts.resize_with(self.graph.len(), NodeFacts::default);
                applied.touched
            }
            EventKind::NodeState { node, state } => {
                let i = self.pos(node);
                let facts = &mut self.facts[i];
                if matches!(state, NodeState::Running | NodeState::Waiting) {
                    facts.started_at.get_or_insert_with(|| e.at.clone());
                }
                facts.finished_at = state.is_terminal().then(|| e.at.clone());
                self.graph.set_state(i, *state)
            }
            EventKind::AttemptStarted { node, attempt, pid } => {
                let i = self.pos(node);
                let attempts = &mut self.facts[i].attempts;
                if attempts.is_empty() {
                    // Room for exactly one: most nodes run once, and a
                    // first push makes room for four records (~140 bytes
                    // each: 56 MiB of a 100,000-node run's peak).
                    attempts.reserve_exact(1);
                }
                attempts.push(AttemptRecord {
                    attempt: *attempt,
                    pid: *pid,
                    started_at: e.at.clone(),
                    finished_at: None,
                    outcome: None,
                    exit_code: None,
                    error: None,
                    files: Vec::new(),
                    runner: None,
                });
                Vec::new()
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
                let i = self.pos(node);
                if let Some(a) = self.facts[i]
                    .attempts
                    .iter_mut()
                    .find(|a| a.attempt == *attempt)
                {
                    a.finished_at = Some(e.at.clone());
                    a.outcome = Some(*outcome);
                    a.exit_code = *exit_code;
                    a.error = error.clone();
                    a.files = files.clone();
                    a.runner = Some(runner.clone().unwrap_or_else(|| LOCAL.to_string()));
                }
                Vec::new()
            }
            EventKind::Output { node, value } => {
                let i = self.pos(node);
                self.facts[i].output = Some(value.clone());
                Vec::new()
            }
            EventKind::Restarted {
                generation,
                retracted,
                reset,
                ..
            } => {
                self.generation = *generation;
                self.batches.retain(|(seq, ..)| !retracted.contains(seq));
                let old_states: std::collections::HashMap<String, (NodeState, NodeFacts)> = self
                    .graph
                    .nodes()
                    .iter()
                    .zip(std::mem::take(&mut self.facts))
                    .map(|(n, f)| (n.id.clone(), (n.state, f)))
                    .collect();
                let mut graph = Graph::new();
                for (_, origin, m) in &self.batches {
                    graph.apply_unchecked(m);
                    if let Origin::Rule { rule } = origin {
                        graph.mark_fired(rule);
                    }
                }
                let mut facts = Vec::with_capacity(graph.len());
                for i in 0..graph.len() {
                    let id = graph.node(i).id.clone();
                    let (state, mut f) = old_states
                        .get(&id)
                        .cloned()
                        .unwrap_or((NodeState::Pending, NodeFacts::default()));
                    if reset.contains(&id) {
                        f.output = None;
                        f.finished_at = None;
                        graph.set_state(i, NodeState::Pending);
                    } else {
                        graph.set_state(i, state);
                    }
                    facts.push(f);
                }
                for (id, (_, f)) in &old_states {
                    if graph.position(id).is_none() {
                        let last = f.attempts.iter().map(|a| a.attempt).max().unwrap_or(0);
                        let r = self.retired.entry(id.clone()).or_insert(0);
                        *r = (*r).max(last);
                    }
                }
                self.graph = graph;
                self.facts = facts;
                (0..self.graph.len()).collect()
            }
            EventKind::PromiseBroken { violation } => {
                self.violations.push(violation.clone());
                Vec::new()
            }
            EventKind::RunStatus { status, reason } => {
                self.status = *status;
                self.reason = reason.clone();
                self.finished_at = status.is_terminal().then(|| e.at.clone());
                Vec::new()
            }
        }
    }

    /// Applies a new event of `kind`, numbered after the last one and
    /// stamped now; returns it with the nodes it touched (as
    /// [`RunState::apply`]).
    pub(crate) fn push(&mut self, kind: EventKind) -> (Event, Vec<usize>) {
        let ev = Event {
            seq: self.last_seq + 1,
            at: crate::time::now(),
            kind,
        };
        let touched = self.apply(&ev);
        (ev, touched)
    }

    /// The number the next attempt of node `i` gets.
    pub fn next_attempt(&self, i: usize) -> u32 {
        let used = self.facts[i]
            .attempts
            .iter()
            .map(|a| a.attempt)
            .max()
            .unwrap_or(0);
        let retired = self
            .retired
            .get(&self.graph.node(i).id)
            .copied()
            .unwrap_or(0);
        used.max(retired) + 1
    }

    /// The number of node `i`'s latest attempt (0 when none).
    pub fn last_attempt(&self, i: usize) -> u32 {
        self.facts[i].attempts.last().map_or(0, |a| a.attempt)
    }

    /// The output of a node, if committed.
    pub fn output_of(&self, node: &str) -> Option<&Value> {
        self.graph
            .position(node)
            .and_then(|i| self.facts[i].output.as_ref())
    }

    /// The run as the export format describes it.
    pub fn export(&self) -> RunExport {
        let g = &self.graph;
        RunExport {
            run: self.run.clone(),
            workflow: self.workflow.clone(),
            status: self.status,
            reason: self.reason.clone(),
            orchestrator_pid: self.orchestrator_pid,
            created_at: self.created_at.clone(),
            finished_at: self.finished_at.clone(),
            event: self.last_seq,
            nodes: g
                .nodes()
                .iter()
                .zip(&self.facts)
                .map(|(n, f)| NodeExport {
                    id: n.id.clone(),
                    task: Task::clone(&n.task),
                    state: n.state,
                    inputs: n.inputs.clone(),
                    attrs: n.attrs.clone(),
                    output: f.output.clone(),
                    started_at: f.started_at.clone(),
                    finished_at: f.finished_at.clone(),
                    attempts: f.attempts.clone(),
                })
                .collect(),
            edges: g
                .edges()
                .iter()
                .map(|e| EdgeExport {
                    from: g.node(e.from).id.clone(),
                    to: g.node(e.to).id.clone(),
                    attrs: e.attrs.clone(),
                })
                .collect(),
            promises: g.promises().to_vec(),
            violations: self.violations.clone(),
            source: self.config.as_ref().and_then(|c| c.source.clone()),
        }
    }
}

/// The JSON export of a run (`orch export <run> --format json`).
///
/// Timestamps are RFC 3339 UTC with milliseconds. Nodes and edges are in
/// insertion order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunExport {
    /// The run id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// `running`, `paused`, `succeeded`, `failed`, `promise_broken` or
    /// `cancelled`.
    pub status: RunStatus,
    /// Why the run failed, if it did.
    pub reason: Option<String>,
    /// The orchestrating process.
    pub orchestrator_pid: Option<u32>,
    /// When the run started.
    pub created_at: Option<String>,
    /// When the run reached a terminal status.
    pub finished_at: Option<String>,
    /// The last event this export includes.
    pub event: u64,
    /// Every node.
    pub nodes: Vec<NodeExport>,
    /// Every edge.
    pub edges: Vec<EdgeExport>,
    /// Every promise, in declaration order.
    pub promises: Vec<crate::promise::Promise>,
    /// Every promise violation.
    pub violations: Vec<ViolationRecord>,
    /// The published version the run started from (a server's runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::model::Source>,
}

impl RunExport {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeExport> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// A node in the export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeExport {
    /// The node id.
    pub id: String,
    /// What runs.
    pub task: Task,
    /// The state.
    pub state: NodeState,
    /// The inputs as declared (references unresolved).
    pub inputs: Value,
    /// Cosmetic attributes.
    pub attrs: Attrs,
    /// The committed output.
    pub output: Option<Value>,
    /// When its first attempt started.
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    pub finished_at: Option<String>,
    /// Its attempts.
    pub attempts: Vec<AttemptRecord>,
}

/// An edge in the export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeExport {
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
    /// Cosmetic attributes.
    pub attrs: Attrs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: format!("2026-01-01T00:00:0{seq}.000Z"),
            kind,
        }
    }

    #[test]
    fn a_first_attempt_takes_room_for_one_record_and_retries_keep_every_one() {
        let mut s = RunState::new("r");
        s.apply(&event(
            1,
            EventKind::BatchCommitted {
                origin: Origin::Registration,
                mutations: vec![Mutation::add_node("a", Task::command(["true"]))],
            },
        ));
        let started = |seq, attempt| {
            event(
                seq,
                EventKind::AttemptStarted {
                    node: "a".into(),
                    attempt,
                    pid: None,
                },
            )
        };
        s.apply(&started(2, 1));
        assert_eq!(s.facts[0].attempts.capacity(), 1);
        s.apply(&event(
            3,
            EventKind::AttemptFinished {
                node: "a".into(),
                attempt: 1,
                outcome: AttemptOutcome::Failed,
                exit_code: Some(1),
                error: None,
                files: Vec::new(),
                runner: None,
            },
        ));
        s.apply(&started(4, 2));
        s.apply(&started(5, 3));
        let attempts: Vec<_> = s.facts[0]
            .attempts
            .iter()
            .map(|a| (a.attempt, a.started_at.as_str(), a.outcome))
            .collect();
        assert_eq!(
            attempts,
            [
                (1, "2026-01-01T00:00:02.000Z", Some(AttemptOutcome::Failed)),
                (2, "2026-01-01T00:00:04.000Z", None),
                (3, "2026-01-01T00:00:05.000Z", None),
            ]
        );
    }
}
