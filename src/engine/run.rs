//! The orchestrator loop: registers a workflow, starts ready nodes (one at
//! a time by default, in insertion order), answers the mutations of
//! running tasks, commits each successful attempt's batch with its output
//! in one transaction, and ends the run.
//!
//! All state changes go through [`Runner::emit`]: an event is applied to
//! the in-memory [`RunState`] (the same fold a rebuild uses) and queued;
//! [`Runner::flush`] writes the queued events to SQLite in one
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::error::StructuralError;
use crate::error::{Error, Result};
use crate::exec::{
    configured_python, content_hash, install_helper, kill_group, process_alive, AttemptEnd,
    AttemptLink, AttemptSpec, Executor, ProcessEnv, ProcessExecutor, Report,
};
use crate::graph::{Graph, Staging};
use crate::picture::live::LivePicture;
use crate::model::{resolve_refs, AttemptOutcome, Exec, Mutation, NodeState, Origin, RunStatus};
use crate::typed::native;
use crate::promise::{self, BatchProblem, Promise, RegionState, Violation};
use crate::history::{Event, EventKind, RunState};
use crate::store::{self, Control, LogLine, Store};
use crate::time;
use crate::workflow::{RunOutcome, Workflow};

/// How often a waiting run looks for pause, unpause and cancel requests.
const CONTROL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

struct Running {
    attempt: u32,
    staging: Staging,
    kill: Option<oneshot::Sender<()>>,
    /// Set when this attempt broke a promise.
    violated: Option<String>,
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
    /// Nodes whose creation or success is queued but not committed yet:
    /// nothing that depends on them starts before the next flush.
    enablers: HashSet<usize>,
    failure: Option<String>,
    /// Set once a promise is broken: nothing starts, nothing commits.
    broken: Option<String>,
    /// Set once the run is being cancelled: nothing starts, nothing commits.
    cancelling: bool,
    /// Nodes waiting for input (no process held).
    waiting: BTreeSet<usize>,
    /// Where to die on purpose, for durability tests (`ORCH_FAULT`).
    fault: Option<(Fault, String)>,
    /// Nodes waiting out a retry backoff, with when they may start again.
    retry_at: HashMap<usize, tokio::time::Instant>,
    /// The live picture, rewritten after committed events.
    picture: Option<LivePicture>,
    /// Set while the executor is getting ready for a ready node's task
    /// (see `Executor::not_ready`): the loop wakes when it completes.
    hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// Completes when the executor's hold does (never without one).
async fn until_ready(hold: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>) {
    match hold {
        Some(until) => until.await,
        None => std::future::pending().await,
    }
}

/// Registers `wf` and runs it to the end.
pub(crate) async fn run(wf: &Workflow) -> Result<RunOutcome> {
    native::refuse_task_mode()?;
    if let Some(problem) = wf.problems.first() {
        return Err(Error::Registration {
            workflow: wf.name.clone(),
            source: StructuralError {
                mutation: "the typed builder".into(),
                reason: problem.clone(),
            },
        });
    }
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
    let python = configured_python(wf.python.as_deref());
    let config = RunConfig {
        scripts: script_hashes(&base_dir, &wf.mutations),
        base_dir,
        python,
        max_parallel: wf.max_parallel,
        default_timeout: wf.default_timeout.map(|d| d.as_secs_f64()),
        live_picture: wf.live_picture,
        native_binary: std::env::current_exe().ok(),
        python_fork: wf.python_fork,
        python_preload: wf.python_preload.clone(),
    };
    let run_id = time::new_run_id();
    let started = Event {
        seq: 1,
        at: time::now(),
        kind: EventKind::RunStarted {
            workflow: wf.name.clone(),
            orchestrator_pid: std::process::id(),
            config: serde_json::to_value(&config).expect("config serialises"),
        },
    };
    let at = time::now();
    let mut state = RunState::new(&run_id);
    // Only a restart needs the batches, and it rebuilds the state from the
    // history.
    state.keep_batches = false;
    // The registration is written to SQLite on a second thread while this
    // one validates it and builds the graph; the transaction commits only
    // once the validation passed, and nothing starts before it committed.
    // The writer serialises the workflow's own mutations (as validation
    // fills them in), so the registration is never copied for it.
    let (touched, written) = std::thread::scope(|s| {
        let (verdict, verdict_rx) = std::sync::mpsc::channel::<bool>();
        let (db, run_id, started, at, mutations) = (&db, &run_id, &started, &at, &wf.mutations[..]);
        let writer = s.spawn(move || -> Result<Option<Store>> {
            let mut store = Store::open(db)?;
            let go = store.commit_registration(run_id, started, (2, at), mutations, || {
                verdict_rx.recv().unwrap_or(false)
            })?;
            Ok(go.then_some(store))
        });
        let registration = validate_registration(wf);
        // The staging's indices are gone; the graph is built next.
        crate::release_freed_memory();
        let _ = verdict.send(registration.is_ok());
        let touched = registration.map(|mutations| {
            state.apply(started);
            state.apply_owned(Event {
                seq: 2,
                at: at.clone(),
                kind: EventKind::BatchCommitted {
                    origin: Origin::Registration,
                    mutations,
                },
            })
        });
        (touched, writer.join())
    });
    let touched = touched?;
    let store = match written {
        Ok(written) => written?.expect("a valid registration commits"),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // What the writer used for the rows.
    crate::release_freed_memory();
    let custom = wf.executor.as_ref().map(|e| e.0.clone());
    let mut runner = Runner::new(store, state, &config, custom)?;
    for i in touched {
        runner.refresh(i);
    }
    runner.flush()?;
    runner.announce("run started");
    runner.finish_outcome().await
}

/// Validates the registration exactly like a runtime batch (structure,
/// promises, declared types); returns its mutations as they are applied.
fn validate_registration(wf: &Workflow) -> Result<Vec<Mutation>> {
    let empty = Graph::new();
    empty
        .stage_all(wf.mutations.iter().cloned())
        .and_then(
            |staging| match promise::check_batch(&empty, &staging, None) {
                Ok(()) => check_types(&empty, &staging).map(|()| staging.into_mutations()),
                Err(problem) => Err(StructuralError {
                    mutation: "the registration".into(),
                    reason: match problem {
                        BatchProblem::Violation(v) => v.to_string(),
                        BatchProblem::BadPromise(why) => why,
                    },
                }),
            },
        )
        .map_err(|source| Error::Registration {
            workflow: wf.name.clone(),
            source,
        })
}

/// Checks the inputs of an `add_node` against its task's declared types
/// (`docs/typed.md`), before it joins the batch.
fn typecheck(g: &Graph, staging: &Staging, m: &Mutation) -> std::result::Result<(), String> {
    let Mutation::AddNode {
        id, task, inputs, ..
    } = m
    else {
        return Ok(());
    };
    let output_type_of = |node: &str| {
        let t = staging.task_of(g, node)?;
        t.output_type.as_deref().map(String::from)
    };
    native::check_inputs(task, inputs, &output_type_of).map_err(|e| format!("add_node `{id}`: {e}"))
}

/// [`typecheck`] over a whole staged batch (the registration).
fn check_types(g: &Graph, staging: &Staging) -> std::result::Result<(), StructuralError> {
    for m in staging.mutations() {
        typecheck(g, staging, m).map_err(|reason| StructuralError {
            mutation: "the registration".into(),
            reason,
        })?;
    }
    Ok(())
}

/// Named points where the orchestrator can be made to die (`kill -9`
/// style) for durability tests: `ORCH_FAULT=<point>:<node>`, with the
/// point one of `after_spawn` (the attempt's process started and recorded),
/// `after_exit` (the process ended, nothing recorded), `before_commit` (the
/// batch validated, not written) and `after_commit` (the batch written).
/// A testing aid: never set it in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    AfterSpawn,
    AfterExit,
    BeforeCommit,
    AfterCommit,
}

impl Fault {
    fn from_env() -> Option<(Fault, String)> {
        let spec = std::env::var("ORCH_FAULT").ok()?;
        let (point, node) = spec.split_once(':')?;
        let point = match point {
            "after_spawn" => Fault::AfterSpawn,
            "after_exit" => Fault::AfterExit,
            "before_commit" => Fault::BeforeCommit,
            "after_commit" => Fault::AfterCommit,
            other => {
                warn!(point = other, "ORCH_FAULT names an unknown point; ignored");
                return None;
            }
        };
        Some((point, node.to_string()))
    }
}

/// What a run needs to run again, recorded in its `run_started` event.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunConfig {
    base_dir: PathBuf,
    python: String,
    max_parallel: usize,
    default_timeout: Option<f64>,
    #[serde(default = "yes")]
    live_picture: bool,
    /// Content hash of each Python script the registered nodes run.
    #[serde(default)]
    scripts: BTreeMap<String, String>,
    /// The workflow binary, which native tasks run in task mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    native_binary: Option<PathBuf>,
    /// Fork Python attempts from a warm server (`Workflow::python_fork`).
    #[serde(default = "yes")]
    python_fork: bool,
    /// Modules the fork server preloads (`Workflow::python_preload`).
    #[serde(default)]
    python_preload: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The content hash of each Python script the registration runs (a
/// missing file hashes as `missing`).
fn script_hashes(base_dir: &Path, registration: &[Mutation]) -> BTreeMap<String, String> {
    registration
        .iter()
        .filter_map(|m| match m {
            Mutation::AddNode { task, .. } => match &task.exec {
                Exec::Python { script } => Some(script.clone()),
                _ => None,
            },
            _ => None,
        })
        .map(|script| {
            let hash = std::fs::read(base_dir.join(&script))
                .map(content_hash)
                .unwrap_or_else(|_| "missing".into());
            (script, hash)
        })
        .collect()
}

/// Resumes a run whose orchestrator stopped (even by `kill -9`): what
/// committed stays committed, attempts that were running are run again
/// under a new attempt number, and no batch is applied twice. Refused when
/// the run ended, when its orchestrator still runs, or when a script of
/// the workflow changed since the run started, unless `force`.
pub(crate) async fn resume(
    db: &Path,
    run: &str,
    force: bool,
    executor: Option<Arc<dyn Executor>>,
) -> Result<RunOutcome> {
    native::refuse_task_mode()?;
    let store = Store::open_existing(db)?;
    let run = store.resolve_run(run)?;
    let state = store.replay(&run, None)?;
    if state.status.is_terminal() {
        return Err(Error::RunEnded {
            run,
            status: state.status.to_string(),
            control: "resume".into(),
        });
    }
    let config = takeover(db, &run, &state, force)?;
    if !force {
        let registration: Vec<Mutation> = store
            .events(&run, None)?
            .into_iter()
            .find_map(|e| match e.kind {
                EventKind::BatchCommitted {
                    origin: Origin::Registration,
                    mutations,
                } => Some(mutations),
                _ => None,
            })
            .unwrap_or_default();
        let now = script_hashes(&config.base_dir, &registration);
        if let Some(script) = now.keys().find(|k| config.scripts.get(*k) != now.get(*k)) {
            return Err(Error::Resume {
                run,
                message: format!(
                    "the workflow changed since the run started: {} is not the script it ran; resume with force to run it anyway",
                    config.base_dir.join(script).display()
                ),
            });
        }
    }
    let mut runner = Runner::new(store, state, &config, executor)?;
    runner.recover()?;
    runner.announce("run resumed");
    runner.finish_outcome().await
}

/// The config of a run another orchestrator is about to take over;
/// refused while the run's own orchestrator is alive (unless `force`).
fn takeover(db: &Path, run: &str, state: &RunState, force: bool) -> Result<RunConfig> {
    let config: RunConfig =
        serde_json::from_value(state.config.clone()).map_err(|e| Error::Corrupt {
            path: db.to_path_buf(),
            message: format!("run {run} has no usable configuration: {e}"),
        })?;
    let alive = state
        .orchestrator_pid
        .filter(|&p| p != std::process::id() && process_alive(p) && !state.status.is_terminal());
    match alive {
        Some(pid) if !force => Err(Error::Resume {
            run: run.to_string(),
            message: format!(
                "its orchestrator (pid {pid}) is still running; stop it first, or force"
            ),
        }),
        _ => Ok(config),
    }
}

/// Restarts `node` and everything downstream of it, in a new generation of
/// the graph, and runs the run to the end. The batches sent by the tasks
/// of those nodes (and of the nodes they added, transitively) are
/// retracted: their nodes, edges, attributes and promises leave the
/// current graph but stay in the history. The restarted nodes that remain
/// go back to `pending` and run again; everything else keeps its state and
/// output. Promises are checked again as the new generation grows.
pub(crate) async fn restart(
    db: &Path,
    run: &str,
    node: &str,
    force: bool,
    executor: Option<Arc<dyn Executor>>,
) -> Result<RunOutcome> {
    native::refuse_task_mode()?;
    let mut store = Store::open_existing(db)?;
    let run = store.resolve_run(run)?;
    let mut state = store.replay(&run, None)?;
    let config = takeover(db, &run, &state, force)?;
    let g = &state.graph;
    let start = g.position(node).ok_or_else(|| Error::UnknownNode {
        run: run.clone(),
        node: node.to_string(),
    })?;
    let mut downstream: BTreeSet<usize> = BTreeSet::from([start]);
    let mut stack = vec![start];
    while let Some(v) = stack.pop() {
        for s in g.successors(v) {
            if downstream.insert(s) {
                stack.push(s);
            }
        }
    }
    let mut restarted: std::collections::HashSet<String> =
        downstream.iter().map(|&i| g.node(i).id.clone()).collect();
    let mut retracted_nodes: std::collections::HashSet<String> = Default::default();
    let mut retracted = Vec::new();
    for (seq, origin, mutations) in &state.batches {
        let Origin::Attempt { node: by, .. } = origin else {
            continue;
        };
        if restarted.contains(by) || retracted_nodes.contains(by) {
            retracted.push(*seq);
            for m in mutations {
                if let Mutation::AddNode { id, .. } = m {
                    retracted_nodes.insert(id.clone());
                }
            }
        }
    }
    restarted.retain(|id| !retracted_nodes.contains(id));
    let mut reset: Vec<String> = restarted.into_iter().collect();
    reset.sort_by_key(|id| g.position(id));
    let event = Event {
        seq: state.last_seq + 1,
        at: time::now(),
        kind: EventKind::Restarted {
            node: node.to_string(),
            generation: state.generation + 1,
            retracted,
            reset,
        },
    };
    state.apply(&event);
    store.commit_restart(&run, &event, &state)?;
    let mut runner = Runner::new(store, state, &config, executor)?;
    if runner.state.status != RunStatus::Running {
        runner.emit(EventKind::RunStatus {
            status: RunStatus::Running,
            reason: None,
        });
    }
    runner.recover()?;
    runner.announce("run restarted");
    runner.finish_outcome().await
}

impl Runner {
    /// Takes a run over from a stopped orchestrator: the attempts that
    /// were running are stopped and run again; ready and waiting nodes are
    /// picked up.
    fn recover(&mut self) -> Result<()> {
        let runner = self;
        runner.emit(EventKind::RunResumed {
            orchestrator_pid: std::process::id(),
        });
        // Attempts that were running when the orchestrator stopped: stop what
        // is left of them and run them again.
        for i in 0..runner.state.graph.len() {
            if runner.state.graph.node(i).state != NodeState::Running {
                continue;
            }
            let node = runner.id(i);
            let Some(last) = runner.state.facts[i].attempts.last().cloned() else {
                continue;
            };
            if let Some(pid) = last
                .pid
                .filter(|&p| belongs_to(p, &runner.state.run, &node))
            {
                kill_group(pid);
            }
            runner.end_attempt(
                i,
                last.attempt,
                AttemptOutcome::Killed,
                None,
                "interrupted: the orchestrator stopped; the node runs again".into(),
                NodeState::Ready,
            );
        }
        for i in 0..runner.state.graph.len() {
            match runner.state.graph.node(i).state {
                NodeState::Ready => {
                    runner.ready.insert(i);
                }
                NodeState::Pending => runner.refresh(i),
                NodeState::Waiting => {
                    runner.waiting.insert(i);
                }
                _ => {}
            }
        }
        runner.flush()
    }
}

/// True when process `pid` is an attempt of this run and node (its
/// environment says so, or, for an attempt forked by the Python fork
/// server, whose environment is the server's, the marker it holds open),
/// so that a recycled pid is never killed.
fn belongs_to(pid: u32, run: &str, node: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
    (vars.contains(&format!("ORCH_RUN={run}").as_bytes())
        && vars.contains(&format!("ORCH_NODE={node}").as_bytes()))
        || crate::exec::is_forked_attempt(pid, run, node)
}

impl Runner {
    /// A runner; attempts go to `executor`, else to a
    /// [`ProcessExecutor`] for `config`.
    fn new(
        store: Store,
        state: RunState,
        config: &RunConfig,
        executor: Option<Arc<dyn Executor>>,
    ) -> Result<Runner> {
        let db = store
            .path()
            .canonicalize()
            .unwrap_or_else(|_| store.path().to_path_buf());
        let home = db.parent().unwrap_or(&config.base_dir).to_path_buf();
        let executor: Arc<dyn Executor> = match executor {
            Some(e) => e,
            None => Arc::new(ProcessExecutor::new(ProcessEnv {
                base_dir: config.base_dir.clone(),
                python: config.python.clone(),
                helper_dir: install_helper(&home)?,
                db,
                default_timeout: config.default_timeout.map(Duration::from_secs_f64),
                native_binary: config.native_binary.clone(),
                python_fork: config.python_fork,
                python_preload: config.python_preload.clone(),
            })),
        };
        let picture = if config.live_picture {
            let dir = home.join("runs").join(&state.run);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            Some(LivePicture::new(dir.join("live.svg")))
        } else {
            None
        };
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        // Only a restart needs the batches, and it rebuilds the state from
        // the history.
        let mut state = state;
        state.keep_batches = false;
        state.batches = Vec::new();
        Ok(Runner {
            state,
            executor,
            max_parallel: config.max_parallel.max(1),
            ready: BTreeSet::new(),
            running: HashMap::new(),
            reports_tx,
            reports_rx,
            queued: Vec::new(),
            logs: Vec::new(),
            enablers: HashSet::new(),
            failure: None,
            broken: None,
            cancelling: false,
            retry_at: HashMap::new(),
            picture,
            hold: None,
            store,
            fault: Fault::from_env(),
            waiting: BTreeSet::new(),
        })
    }

    fn announce(&self, what: &str) {
        let db = self.store.path().display();
        let run = &self.state.run;
        let workflow = &self.state.workflow;
        match &self.picture {
            Some(p) => {
                info!(run = %run, workflow = %workflow, db = %db, picture = %p.path().display(), "{what}")
            }
            None => info!(run = %run, workflow = %workflow, db = %db, "{what}"),
        }
    }

    async fn finish_outcome(mut self) -> Result<RunOutcome> {
        let status = self.drive().await?;
        Ok(RunOutcome {
            run: self.state.run.clone(),
            status,
            reason: self.state.reason.clone(),
            db: self
                .store
                .path()
                .canonicalize()
                .unwrap_or_else(|_| self.store.path().to_path_buf()),
            picture: self.picture.as_ref().map(|p| p.path().to_path_buf()),
        })
    }

    /// Dies like `kill -9` at a named point, when `ORCH_FAULT` asks for it
    /// (see [`Fault`]). Points after a commit flush first.
    fn fault(&mut self, point: Fault, node: &str) {
        let Some((want, at)) = &self.fault else {
            return;
        };
        if *want != point || at != node {
            return;
        }
        if matches!(point, Fault::AfterSpawn | Fault::AfterCommit) {
            let _ = self.flush();
        }
        warn!(point = ?point, node = %node, "ORCH_FAULT: the orchestrator dies here");
        // SAFETY: signals our own process; nothing after this runs.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }

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
        match &ev.kind {
            EventKind::NodeState { node, state } => {
                let i = self.state.graph.position(node).expect("known node");
                if *state == NodeState::Ready {
                    self.ready.insert(i);
                } else {
                    self.ready.remove(&i);
                }
                if *state == NodeState::Succeeded {
                    self.enablers.insert(i);
                }
            }
            // New nodes and the targets of new edges start only once the
            // batch is committed.
            EventKind::BatchCommitted { .. } => self.enablers.extend(touched.iter().copied()),
            _ => {}
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
            (NodeState::Pending, 0) if !self.gated(i) && !self.retry_at.contains_key(&i) => {
                NodeState::Ready
            }
            (NodeState::Ready, n) if n > 0 || self.gated(i) => NodeState::Pending,
            _ => return,
        };
        let node = self.id(i);
        self.emit(EventKind::NodeState { node, state: want });
    }

    /// The shape promises whose region ends at node `i`.
    fn shapes_into(&self, i: usize) -> Vec<(usize, Promise)> {
        let g = &self.state.graph;
        g.shapes_into(i)
            .map(|k| (k, g.promises()[k].clone()))
            .collect()
    }

    /// True while a shape region ending at `i` is unfilled: the region's
    /// `to` waits for it through the promise itself.
    fn gated(&self, i: usize) -> bool {
        let g = &self.state.graph;
        g.shapes_into(i).any(|k| g.region_unfilled(k) == Some(true))
    }

    /// Records a violation: the run ends `promise_broken`, nothing starts
    /// any more, and every running attempt is stopped.
    fn break_promise(&mut self, v: &Violation, by: Option<(usize, u32)>) {
        let (node, task, attempt) = match by {
            Some((i, a)) => {
                let n = self.state.graph.node(i);
                (Some(n.id.clone()), Some(n.task.name.clone()), Some(a))
            }
            None => (None, None, None),
        };
        warn!(violation = %v, "promise broken");
        self.emit(EventKind::PromiseBroken {
            violation: json!({
                "promise": v.promise,
                "promise_text": v.promise.to_string(),
                "promise_index": v.index,
                "mutation": v.mutation,
                "message": v.message,
                "node": node,
                "task": task,
                "attempt": attempt,
            }),
        });
        self.broken.get_or_insert_with(|| v.to_string());
        self.kill_running();
    }

    /// Asks every running attempt to be killed (with its process group).
    fn kill_running(&mut self) {
        for r in self.running.values_mut() {
            if let Some(kill) = r.kill.take() {
                let _ = kill.send(());
            }
        }
    }

    /// Ends the wait of every node waiting for input: `cancelled`.
    fn stop_waiting(&mut self, why: &str) {
        for i in std::mem::take(&mut self.waiting) {
            let attempt = self.state.last_attempt(i);
            self.end_attempt(
                i,
                attempt,
                AttemptOutcome::Killed,
                None,
                why.to_string(),
                NodeState::Cancelled,
            );
        }
    }

    /// Writes the queued events and logs in one transaction.
    fn flush(&mut self) -> Result<()> {
        if self.queued.is_empty() && self.logs.is_empty() {
            return Ok(());
        }
        self.store
            .commit(&self.state.run, &self.queued, &self.logs)?;
        let events = !self.queued.is_empty();
        self.queued.clear();
        self.enablers.clear();
        self.logs.clear();
        if let Some(p) = self.picture.as_mut().filter(|_| events) {
            p.update(&self.state, self.state.status.is_terminal());
        }
        Ok(())
    }

    async fn drive(&mut self) -> Result<RunStatus> {
        // Controls (pause, unpause, cancel) come through SQLite from any
        // process; they are polled while the run waits, and every
        // CONTROL_POLL while reports keep it busy.
        let mut poll = tokio::time::interval(CONTROL_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_controls = tokio::time::Instant::now() + CONTROL_POLL;
        loop {
            self.take_inputs()?;
            self.schedule()?;
            let paused = self.state.status == RunStatus::Paused && !self.cancelling;
            let waiting = !self.waiting.is_empty()
                && self.failure.is_none()
                && self.broken.is_none()
                && !self.cancelling;
            let backing_off = !self.retry_at.is_empty()
                && self.failure.is_none()
                && self.broken.is_none()
                && !self.cancelling;
            let holding = self.hold.is_some()
                && !self.ready.is_empty()
                && self.failure.is_none()
                && self.broken.is_none()
                && !self.cancelling;
            if self.running.is_empty() && !paused && !backing_off && !waiting && !holding {
                let status = self.finish();
                self.flush()?;
                return Ok(status);
            }
            let next_retry = self.retry_at.values().min().copied();
            // Group commit: reports that are already there are handled
            // without writing first. Nothing waits on the queued events
            // meanwhile: a node whose start depends on them flushes first
            // (see `start`), and they are written before the loop waits.
            if let Ok(report) = self.reports_rx.try_recv() {
                self.handle(report);
                let now = tokio::time::Instant::now();
                if now >= next_controls {
                    next_controls = now + CONTROL_POLL;
                    self.take_controls()?;
                }
                if next_retry.is_some_and(|t| t <= now) {
                    self.release_retries();
                }
                continue;
            }
            self.flush()?;
            tokio::select! {
                report = self.reports_rx.recv() => {
                    self.handle(report.expect("the runner holds a sender"));
                }
                _ = poll.tick() => {
                    next_controls = tokio::time::Instant::now() + CONTROL_POLL;
                    self.take_controls()?;
                }
                () = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if next_retry.is_some() => self.release_retries(),
                () = until_ready(&mut self.hold) => self.hold = None,
            }
        }
    }

    /// Makes nodes whose retry backoff is over ready again.
    fn release_retries(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<usize> = self
            .retry_at
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            self.retry_at.remove(&i);
            self.refresh(i);
        }
    }

    /// Gives waiting input nodes the values delivered to them.
    fn take_inputs(&mut self) -> Result<()> {
        if self.cancelling || self.broken.is_some() {
            return Ok(());
        }
        for i in self.waiting.clone() {
            let node = self.id(i);
            let Some(value) = self.store.take_input(&self.state.run, &node)? else {
                continue;
            };
            self.waiting.remove(&i);
            let attempt = self.state.last_attempt(i);
            info!(node = %node, "input delivered");
            self.emit(EventKind::Output {
                node: node.clone(),
                value,
            });
            self.emit(EventKind::AttemptFinished {
                node: node.clone(),
                attempt,
                outcome: AttemptOutcome::Succeeded,
                exit_code: None,
                error: None,
            });
            self.emit(EventKind::NodeState {
                node,
                state: NodeState::Succeeded,
            });
            // The value was taken from the inputs table: its output is
            // written before anything else happens.
            self.flush()?;
        }
        Ok(())
    }

    /// Applies the control requests stored since the last look.
    fn take_controls(&mut self) -> Result<()> {
        for control in self.store.take_controls(&self.state.run)? {
            info!(run = %self.state.run, control = control.as_str(), "control taken");
            match control {
                Control::Pause if self.state.status == RunStatus::Running => {
                    self.emit(EventKind::RunStatus {
                        status: RunStatus::Paused,
                        reason: None,
                    });
                }
                Control::Unpause if self.state.status == RunStatus::Paused => {
                    self.emit(EventKind::RunStatus {
                        status: RunStatus::Running,
                        reason: None,
                    });
                }
                Control::Cancel if !self.cancelling => {
                    self.cancelling = true;
                    self.stop_waiting("cancelled while waiting for input");
                    self.kill_running();
                }
                _ => {}
            }
            // The request was marked taken: what it did is written now.
            self.flush()?;
        }
        Ok(())
    }

    /// Starts ready nodes while slots are free, lowest position first.
    fn schedule(&mut self) -> Result<()> {
        let mut from = 0;
        while self.failure.is_none()
            && self.broken.is_none()
            && !self.cancelling
            && self.state.status == RunStatus::Running
            && self.running.len() < self.max_parallel
        {
            let Some(&i) = self.ready.range(from..).next() else {
                break;
            };
            if let Some(until) = self.executor.not_ready(&self.state.graph.node(i).task) {
                // The executor cannot start it without blocking yet (the
                // fork server preloads): it stays ready, the others start,
                // and the loop comes back when the executor is ready.
                self.hold = Some(until);
                from = i + 1;
                continue;
            }
            // What this start depends on (the node's creation, its
            // predecessors' success and outputs) is committed first.
            let g = &self.state.graph;
            if self.enablers.contains(&i) || g.predecessors(i).any(|p| self.enablers.contains(&p)) {
                self.flush()?;
            }
            self.start(i);
        }
        Ok(())
    }

    fn start(&mut self, i: usize) {
        let node = self.id(i);
        // The final check of every region that ends here: it can no longer
        // grow once its `to` starts.
        for (index, p) in self.shapes_into(i) {
            let Promise::Shape { from, to, shape } = &p else {
                continue;
            };
            let Some(region) = promise::shape_region(&self.state.graph, index) else {
                continue;
            };
            if let RegionState::Mismatch(why) = promise::region_state(&region, shape) {
                let v = Violation {
                    index,
                    promise: p.clone(),
                    mutation: format!("starting `{node}`"),
                    message: format!("between `{from}` and `{to}`: {why}"),
                };
                self.break_promise(&v, None);
                return;
            }
        }
        let attempt = self.state.next_attempt(i);
        let n = self.state.graph.node(i);
        let task = crate::Task::clone(&n.task);
        if matches!(task.exec, Exec::Input {}) {
            // No process: the node waits for a delivered value.
            self.emit(EventKind::NodeState {
                node: node.clone(),
                state: NodeState::Waiting,
            });
            self.emit(EventKind::AttemptStarted {
                node,
                attempt,
                pid: None,
            });
            self.waiting.insert(i);
            return;
        }
        let inputs =
            resolve_refs(&n.inputs, &|id| self.state.output_of(id).cloned()).and_then(|v| {
                match native::check_resolved_inputs(&task, &v) {
                    Ok(()) => Ok(v),
                    Err(e) => Err(format!("the inputs do not fit the task's types: {e}")),
                }
            });
        let upstream = self
            .state
            .graph
            .predecessors(i)
            .map(|p| {
                let id = self.id(p);
                let out = self.state.output_of(&id).cloned().unwrap_or(Value::Null);
                (id, out)
            })
            .collect();
        let (kill_tx, kill_rx) = oneshot::channel();
        let launched = inputs.and_then(|inputs| {
            self.executor.launch(
                AttemptSpec {
                    run: self.state.run.clone(),
                    node: node.clone(),
                    attempt,
                    task,
                    inputs,
                    upstream,
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
                self.emit(EventKind::AttemptStarted {
                    node: node.clone(),
                    attempt,
                    pid,
                });
                self.fault(Fault::AfterSpawn, &node);
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        kill: Some(kill_tx),
                        violated: None,
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
                let by = self.id(node);
                let g = &self.state.graph;
                let mut violation = None;
                let answer = match self.running.get_mut(&node) {
                    Some(r) if r.attempt == attempt && r.violated.is_none() => {
                        match typecheck(g, &r.staging, &mutation)
                            .and_then(|()| r.staging.stage(g, mutation).map_err(|e| e.to_string()))
                        {
                            Err(e) => Err(e),
                            Ok(()) => {
                                let staged = r.staging.mutations().last().expect("just staged");
                                match promise::check_mutation(g, &r.staging, &by, staged) {
                                    Ok(()) => Ok(()),
                                    Err(v) => {
                                        r.violated = Some(v.to_string());
                                        let msg = v.to_string();
                                        violation = Some(v);
                                        Err(msg)
                                    }
                                }
                            }
                        }
                    }
                    _ => Err("this attempt is no longer running".to_string()),
                };
                let _ = reply.send(answer);
                if let Some(v) = violation {
                    self.break_promise(&v, Some((node, attempt)));
                }
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
        self.fault(Fault::AfterExit, &node);
        if let Some(v) = running.violated {
            self.end_attempt(
                i,
                attempt,
                AttemptOutcome::Failed,
                end.exit_code,
                v,
                NodeState::Failed,
            );
            return;
        }
        if self.broken.is_some() || self.cancelling {
            let error = if self.cancelling {
                "killed: the run was cancelled".to_string()
            } else {
                "stopped: the run broke a promise".to_string()
            };
            self.end_attempt(
                i,
                attempt,
                AttemptOutcome::Killed,
                end.exit_code,
                error,
                NodeState::Cancelled,
            );
            return;
        }
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
        } else if end.output.is_none() && self.state.graph.node(i).task.output_required {
            Some((
                AttemptOutcome::Failed,
                "exited 0 without the output its task declares".to_string(),
                true,
            ))
        } else if let Err(e) = native::check_output(
            &self.state.graph.node(i).task,
            end.output.as_ref().unwrap_or(&Value::Null),
        ) {
            Some((AttemptOutcome::Failed, format!("node `{node}`: {e}"), true))
        } else {
            None
        };
        if let Some((outcome, error, retry)) = failure {
            self.fail_attempt(i, attempt, outcome, end.exit_code, error, retry);
            return;
        }
        // Other attempts may have committed since the mutations were
        // checked on arrival: validate the whole batch once more.
        let staged = self
            .state
            .graph
            .stage_all(running.staging.into_mutations())
            .map_err(|e| BatchProblem::BadPromise(format!("the batch was rejected at commit: {e}")))
            .and_then(|staging| {
                promise::check_batch(&self.state.graph, &staging, Some(&node)).map(|()| staging)
            });
        let batch = match staged {
            Ok(staging) => staging.into_mutations(),
            Err(BatchProblem::Violation(v)) => {
                self.break_promise(&v, Some((i, attempt)));
                let error = v.to_string();
                self.end_attempt(
                    i,
                    attempt,
                    AttemptOutcome::Failed,
                    end.exit_code,
                    error,
                    NodeState::Failed,
                );
                return;
            }
            Err(BatchProblem::BadPromise(error)) => {
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
        self.fault(Fault::BeforeCommit, &node);
        info!(node = %node, attempt, "succeeded");
        self.fault(Fault::AfterCommit, &node);
    }

    /// Ends an attempt and puts its node in `state` (`ready` again for a
    /// retry).
    fn end_attempt(
        &mut self,
        i: usize,
        attempt: u32,
        outcome: AttemptOutcome,
        exit_code: Option<i32>,
        error: String,
        state: NodeState,
    ) {
        let node = self.id(i);
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome,
            exit_code,
            error: Some(error),
        });
        self.emit(EventKind::NodeState { node, state });
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
        let retries = self.state.graph.node(i).task.retries;
        // Interrupted attempts (the orchestrator stopped) use no retry.
        let failures = 1 + self.state.facts[i]
            .attempts
            .iter()
            .filter(|a| {
                matches!(
                    a.outcome,
                    Some(AttemptOutcome::Failed | AttemptOutcome::TimedOut)
                )
            })
            .count() as u32;
        if retryable && failures <= retries && self.failure.is_none() {
            let wait = self.state.graph.node(i).task.backoff(failures);
            if wait.is_zero() {
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Ready);
            } else {
                info!(node = %node, attempt, wait_s = wait.as_secs_f64(), "retry after backoff");
                self.retry_at.insert(i, tokio::time::Instant::now() + wait);
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Pending);
            }
            return;
        }
        let reason = format!("node `{node}` failed (attempt {attempt}): {error}");
        self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Failed);
        self.failure.get_or_insert(reason);
    }

    /// Once nothing runs: a shape region still unfilled can never be
    /// filled, and its `to` can never start.
    fn check_unfilled(&mut self) {
        let g = &self.state.graph;
        let found = g.promises().iter().enumerate().find_map(|(index, p)| match p {
            Promise::Shape { from, to, .. }
                if g.get(to).is_some_and(|n| n.state == NodeState::Pending)
                    && g.region_unfilled(index) == Some(true) =>
            {
                Some(Violation {
                    index,
                    promise: p.clone(),
                    mutation: format!("waiting for `{to}`"),
                    message: format!(
                        "the region between `{from}` and `{to}` was never filled (not even the edge `{from}` -> `{to}`), so `{to}` can never start"
                    ),
                })
            }
            _ => None,
        });
        if let Some(v) = found {
            self.break_promise(&v, None);
        }
    }

    /// Decides the final status once nothing runs.
    fn finish(&mut self) -> RunStatus {
        // A run that ends while nodes wait for input stops waiting for them.
        self.stop_waiting("the run ended while it waited for input");
        if self.cancelling {
            // Nothing that had not started will run.
            let unfinished: Vec<String> = self
                .state
                .graph
                .nodes()
                .iter()
                .filter(|n| n.state.not_started())
                .map(|n| n.id.clone())
                .collect();
            for node in unfinished {
                self.emit(EventKind::NodeState {
                    node,
                    state: NodeState::Cancelled,
                });
            }
        } else if self.broken.is_none() && self.failure.is_none() {
            self.check_unfilled();
        }
        let g = &self.state.graph;
        let (status, reason) = if self.cancelling {
            (
                RunStatus::Cancelled,
                Some("cancelled on request".to_string()),
            )
        } else if let Some(b) = self.broken.clone() {
            (RunStatus::PromiseBroken, Some(b))
        } else if let Some(f) = self.failure.clone() {
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
