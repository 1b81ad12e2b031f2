//! The orchestrator loop: registers a workflow, starts ready nodes (one at
//! a time by default, in insertion order), answers the mutations of
//! running tasks, commits each successful attempt's batch with its output
//! in one transaction, and ends the run.
//!
//! All state changes go through [`Runner::emit`]: an event is applied to
//! the in-memory [`RunState`] (the same fold a rebuild uses) and queued;
//! [`Runner::flush`] writes the queued events to SQLite in one
//! transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::executor::{
    configured_python, install_helper, AttemptEnd, AttemptLink, AttemptSpec, Executor, ProcessEnv,
    ProcessExecutor, Report,
};
use crate::graph::Staging;
use crate::model::{resolve_refs, AttemptOutcome, NodeState, Origin, RunStatus};
use crate::state::{Event, EventKind, RunState};
use crate::store::{self, LogLine, Store};
use crate::time;
use crate::workflow::{RunOutcome, Workflow};

struct Running {
    attempt: u32,
    staging: Staging,
    kill: Option<oneshot::Sender<()>>,
}

pub(crate) struct Runner {
    store: Store,
    state: RunState,
    executor: Arc<dyn Executor>,
    max_parallel: usize,
    ready: BTreeSet<usize>,
    running: HashMap<usize, Running>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    queued: Vec<Event>,
    logs: Vec<LogLine>,
    failure: Option<String>,
}

/// Registers `wf` and runs it to the end.
pub(crate) async fn run(wf: &Workflow) -> Result<RunOutcome> {
    let db = wf.db.clone().unwrap_or_else(store::default_path);
    let base_dir = match &wf.dir {
        Some(d) => d.clone(),
        None => {
            std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?
        }
    };
    let base_dir = base_dir
        .canonicalize()
        .map_err(|e| Error::io(format!("workflow directory {}", base_dir.display()), e))?;
    let registration = crate::graph::Graph::new()
        .validate(wf.mutations.clone())
        .map_err(|source| Error::Registration {
            workflow: wf.name.clone(),
            source,
        })?;

    let store = Store::open(&db)?;
    let db = store
        .path()
        .canonicalize()
        .unwrap_or_else(|_| store.path().to_path_buf());
    let helper_dir = install_helper(db.parent().unwrap_or(&base_dir))?;
    let python = configured_python(wf.python.as_deref());
    let executor = ProcessExecutor::new(ProcessEnv {
        base_dir: base_dir.clone(),
        python: python.clone(),
        helper_dir,
        db: db.clone(),
        default_timeout: wf.default_timeout,
    });

    let run_id = time::new_run_id();
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut runner = Runner {
        state: RunState::new(&run_id),
        executor: Arc::new(executor),
        max_parallel: wf.max_parallel,
        ready: BTreeSet::new(),
        running: HashMap::new(),
        reports_tx,
        reports_rx,
        queued: Vec::new(),
        logs: Vec::new(),
        failure: None,
        store,
    };
    runner.emit(EventKind::RunStarted {
        workflow: wf.name.clone(),
        orchestrator_pid: std::process::id(),
        config: json!({
            "base_dir": base_dir,
            "python": python,
            "max_parallel": wf.max_parallel,
            "default_timeout": wf.default_timeout.map(|d| d.as_secs_f64()),
        }),
    });
    runner.emit(EventKind::BatchCommitted {
        origin: Origin::Registration,
        mutations: registration,
    });
    runner.flush()?;
    info!(run = %run_id, workflow = %wf.name, db = %db.display(), "run started");
    let status = runner.drive().await?;
    Ok(RunOutcome {
        run: run_id,
        status,
        reason: runner.state.reason.clone(),
        db,
    })
}

impl Runner {
    fn id(&self, i: usize) -> String {
        self.state.graph.node(i).id.clone()
    }

    /// Applies an event to the in-memory state, queues it for the next
    /// flush, and re-examines the readiness of the nodes it touched.
    fn emit(&mut self, kind: EventKind) {
        let ev = Event {
            seq: self.state.last_seq + 1,
            at: time::now(),
            kind,
        };
        let touched = self.state.apply(&ev);
        if let EventKind::NodeState { node, state } = &ev.kind {
            let i = self.state.graph.position(node).expect("known node");
            if *state == NodeState::Ready {
                self.ready.insert(i);
            } else {
                self.ready.remove(&i);
            }
        }
        self.queued.push(ev);
        for i in touched {
            self.refresh(i);
        }
    }

    /// Moves a node between `pending` and `ready` as its predecessors say.
    fn refresh(&mut self, i: usize) {
        let g = &self.state.graph;
        let want = match (g.node(i).state, g.unmet(i)) {
            (NodeState::Pending, 0) => NodeState::Ready,
            (NodeState::Ready, n) if n > 0 => NodeState::Pending,
            _ => return,
        };
        let node = self.id(i);
        self.emit(EventKind::NodeState { node, state: want });
    }

    /// Writes the queued events and logs in one transaction.
    fn flush(&mut self) -> Result<()> {
        if self.queued.is_empty() && self.logs.is_empty() {
            return Ok(());
        }
        self.store
            .commit(&self.state.run, &self.queued, &self.logs)?;
        self.queued.clear();
        self.logs.clear();
        Ok(())
    }

    async fn drive(&mut self) -> Result<RunStatus> {
        loop {
            self.schedule();
            self.flush()?;
            if self.running.is_empty() {
                let status = self.finish();
                self.flush()?;
                return Ok(status);
            }
            let report = self
                .reports_rx
                .recv()
                .await
                .expect("the runner holds a sender");
            self.handle(report);
        }
    }

    /// Starts ready nodes while slots are free, lowest position first.
    fn schedule(&mut self) {
        while self.failure.is_none()
            && self.state.status == RunStatus::Running
            && self.running.len() < self.max_parallel
        {
            let Some(&i) = self.ready.iter().next() else {
                break;
            };
            self.start(i);
        }
    }

    fn start(&mut self, i: usize) {
        let node = self.id(i);
        let attempt = self.state.facts[i].attempts.len() as u32 + 1;
        let n = self.state.graph.node(i);
        let task = n.task.clone();
        let inputs = resolve_refs(&n.inputs, &|id| self.state.output_of(id).cloned());
        let (kill_tx, kill_rx) = oneshot::channel();
        let launched = inputs.and_then(|inputs| {
            self.executor.launch(
                AttemptSpec {
                    run: self.state.run.clone(),
                    node: node.clone(),
                    attempt,
                    task,
                    inputs,
                },
                AttemptLink {
                    node: i,
                    attempt,
                    reports: self.reports_tx.clone(),
                    kill: kill_rx,
                },
            )
        });
        self.emit(EventKind::NodeState {
            node: node.clone(),
            state: NodeState::Running,
        });
        match launched {
            Ok(pid) => {
                debug!(node = %node, attempt, pid, "attempt started");
                self.emit(EventKind::AttemptStarted { node, attempt, pid });
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        kill: Some(kill_tx),
                    },
                );
            }
            Err(error) => {
                self.emit(EventKind::AttemptStarted {
                    node,
                    attempt,
                    pid: None,
                });
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, None, error, true);
            }
        }
    }

    fn handle(&mut self, report: Report) {
        match report {
            Report::Mutation {
                node,
                attempt,
                mutation,
                reply,
            } => {
                let answer = match self.running.get_mut(&node) {
                    Some(r) if r.attempt == attempt => r
                        .staging
                        .stage(&self.state.graph, mutation)
                        .map_err(|e| e.to_string()),
                    _ => Err("this attempt is no longer running".to_string()),
                };
                let _ = reply.send(answer);
            }
            Report::Finished { node, attempt, end } => self.finished(node, attempt, end),
        }
    }

    fn finished(&mut self, i: usize, attempt: u32, mut end: AttemptEnd) {
        let Some(running) = self.running.remove(&i) else {
            return;
        };
        drop(running.kill);
        self.logs.append(&mut end.logs);
        let node = self.id(i);
        let failure = if let Some(e) = end.error.take() {
            Some((AttemptOutcome::Failed, e, true))
        } else if end.timed_out {
            Some((AttemptOutcome::TimedOut, "timed out".to_string(), true))
        } else if end.killed {
            Some((
                AttemptOutcome::Killed,
                "killed by the orchestrator".to_string(),
                true,
            ))
        } else if let Some((msg, retry)) = end.fail.take() {
            Some((
                AttemptOutcome::Failed,
                format!("the task failed: {msg}"),
                retry,
            ))
        } else if let Some(sig) = end.signal {
            Some((
                AttemptOutcome::Failed,
                format!("killed by signal {sig}"),
                true,
            ))
        } else if end.exit_code != Some(0) {
            let code = end.exit_code.map_or("?".to_string(), |c| c.to_string());
            Some((
                AttemptOutcome::Failed,
                format!("exited with code {code}"),
                true,
            ))
        } else {
            None
        };
        if let Some((outcome, error, retry)) = failure {
            self.fail_attempt(i, attempt, outcome, end.exit_code, error, retry);
            return;
        }
        // Other attempts may have committed since the mutations were
        // checked on arrival: validate the whole batch once more.
        let batch = match self.state.graph.validate(running.staging.into_mutations()) {
            Ok(b) => b,
            Err(e) => {
                let error = format!("the batch was rejected at commit: {e}");
                self.fail_attempt(
                    i,
                    attempt,
                    AttemptOutcome::Failed,
                    end.exit_code,
                    error,
                    true,
                );
                return;
            }
        };
        if !batch.is_empty() {
            self.emit(EventKind::BatchCommitted {
                origin: Origin::Attempt {
                    node: node.clone(),
                    attempt,
                },
                mutations: batch,
            });
        }
        self.emit(EventKind::Output {
            node: node.clone(),
            value: end.output.unwrap_or(Value::Null),
        });
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome: AttemptOutcome::Succeeded,
            exit_code: end.exit_code,
            error: None,
        });
        self.emit(EventKind::NodeState {
            node: node.clone(),
            state: NodeState::Succeeded,
        });
        info!(node = %node, attempt, "succeeded");
    }

    fn fail_attempt(
        &mut self,
        i: usize,
        attempt: u32,
        outcome: AttemptOutcome,
        exit_code: Option<i32>,
        error: String,
        retryable: bool,
    ) {
        let node = self.id(i);
        warn!(node = %node, attempt, error = %error, "attempt failed");
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome,
            exit_code,
            error: Some(error.clone()),
        });
        let retries = self.state.graph.node(i).task.retries;
        if retryable && attempt <= retries && self.failure.is_none() {
            self.emit(EventKind::NodeState {
                node,
                state: NodeState::Ready,
            });
            return;
        }
        self.emit(EventKind::NodeState {
            node: node.clone(),
            state: NodeState::Failed,
        });
        self.failure
            .get_or_insert_with(|| format!("node `{node}` failed (attempt {attempt}): {error}"));
    }

    /// Decides the final status once nothing runs.
    fn finish(&mut self) -> RunStatus {
        let g = &self.state.graph;
        let (status, reason) = if let Some(f) = self.failure.clone() {
            (RunStatus::Failed, Some(f))
        } else if g.nodes().iter().all(|n| n.state == NodeState::Succeeded) {
            (RunStatus::Succeeded, None)
        } else {
            let stuck: Vec<&str> = g
                .nodes()
                .iter()
                .filter(|n| n.state != NodeState::Succeeded)
                .map(|n| n.id.as_str())
                .take(10)
                .collect();
            (
                RunStatus::Failed,
                Some(format!(
                    "no node can start; unfinished: {}",
                    stuck.join(", ")
                )),
            )
        };
        info!(run = %self.state.run, status = %status, "run finished");
        self.emit(EventKind::RunStatus { status, reason });
        status
    }
}
