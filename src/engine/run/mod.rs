//! The run loop: starts ready nodes (one at a time by default, in
//! insertion order), answers the mutations of running tasks, commits each
//! successful attempt's batch with its output in one transaction, takes
//! signals, and ends the run.
//!
//! All state changes go through [`Runner::emit`]: an event is applied to
//! the in-memory [`RunState`] (the same fold a rebuild uses) and queued;
//! [`Runner::flush`] writes the queued events to the store in one
//! transaction, fenced by the run's lease, then tells the observers.
//!
//! This module keeps the [`Runner`], its construction and the loop; the
//! loop's work lives in a module per concern: `commit` (the group commit),
//! `launch` (starting attempts), `report` (what attempts report), `end`
//! (judging and recording attempts' ends), `control` (signals, input,
//! stopping attempts), `fire` (rules and loops) and `finish` (how the run
//! stops and its final status).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::exec::{Executor, ProcessEnv, ProcessExecutor, Report, Stop};
use crate::graph::Staging;
use crate::history::{Event, EventKind, RunState};
use crate::model::{FailurePolicy, NodeState, RunStatus};
use crate::picture::live::LivePicture;
use crate::store::{Lease, LogLine, SignalId, Store};

use super::fault::Fault;
use super::observe::{Observer, Picture};
use super::schedule::{self, Halt};
use super::{Engine, Envelope, RunConfig, RunOutcome};

mod commit;
mod control;
mod end;
mod finish;
mod fire;
mod launch;
mod report;

/// How long nothing must happen before the observers hear the run is
/// idle ([`Observer::idle`]).
const QUIET: Duration = Duration::from_millis(50);
/// How long log lines written while an attempt runs may wait for the next
/// commit before they are written alone.
const LOG_DELAY: Duration = Duration::from_millis(200);
/// How many mutations one attempt's batch may hold: a task cannot grow
/// the orchestrator's memory without end (each further one is refused,
/// and the task may still succeed with the batch it has).
pub const MAX_BATCH: usize = 1_000_000;
/// [`MAX_BATCH`], or (a testing aid) `ORCH_TEST_MAX_BATCH`.
fn max_batch() -> usize {
    #[cfg(feature = "testing")]
    if let Some(n) = std::env::var("ORCH_TEST_MAX_BATCH")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        return n;
    }
    MAX_BATCH
}

/// How many log lines make a commit of their own at once.
const LOG_BATCH: usize = 4096;

/// The most events a group commit gathers (reports handled back to back
/// while more are waiting, before one write): a run whose attempts report
/// faster than it writes still commits, so its history, its memory and
/// its observers keep up (without a bound, a run that never went quiet
/// wrote nothing but its registration until it ended).
pub const GROUP_MAX_EVENTS: usize = 1024;
/// The longest a group commit gathers events before it writes them.
const GROUP_MAX_DELAY: Duration = Duration::from_millis(100);
/// The longest a started attempt of a local process (one with a pid) waits
/// for the next commit before it is written alone. In a chain of short
/// tasks that next commit is the attempt's own end, so a step costs one
/// write transaction, not two. A crash meanwhile leaves the node `ready`
/// with no trace of the attempt; the takeover finds and kills its
/// processes by their environment (`ORCH_RUN`, `ORCH_NODE`, or a forked
/// attempt's marker), as it checks a recorded pid, so nothing of it
/// outlives the crash unnoticed (see `Runner::recover`).
pub(super) const START_DELAY: Duration = Duration::from_millis(50);

pub(super) struct Running {
    attempt: u32,
    staging: Staging,
    /// Where stop requests for the attempt go (dropped once it ended).
    stop: mpsc::UnboundedSender<Stop>,
    /// Set when this attempt broke a promise.
    violated: Option<String>,
    /// The last log line the executor reported as it was written: the
    /// lines of the attempt's end up to it are on their way to the store.
    streamed: u32,
    /// A runner's attempt this engine re-attached to after taking the run
    /// over: the mutations the previous owner acknowledged are not in
    /// `staging`, so its end must say how many there were.
    adopted: bool,
}

pub(crate) struct Runner {
    store: Arc<dyn Store>,
    lease: Lease,
    pub(super) state: RunState,
    pub(super) executor: Arc<dyn Executor>,
    /// The runners' queue, when attempts may go there.
    remote: Option<Arc<crate::exec::remote::Remote>>,
    max_parallel: usize,
    pub(super) ready: BTreeSet<usize>,
    running: HashMap<usize, Running>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    queued: Vec<Event>,
    /// How many of `queued` are started attempts of local processes that
    /// may wait for the next commit (see [`START_DELAY`]).
    deferred: usize,
    /// Since when the loop has been gathering `queued` (a group commit).
    gathering: Option<tokio::time::Instant>,
    logs: Vec<LogLine>,
    /// Stored signals acted on since the last flush: marked taken with it.
    taken: Vec<SignalId>,
    /// Every stored signal this runner saw (a signal can reach it both
    /// directly and through the engine's poll).
    seen: HashSet<SignalId>,
    /// Lines this runner wrote into the log of an attempt that runs no
    /// process (an input node's refusals), by (node, attempt).
    notes: HashMap<(usize, u32), u32>,
    /// Values delivered to input nodes that do not wait yet, in order.
    inbox: HashMap<usize, VecDeque<(Option<SignalId>, Value)>>,
    /// Nodes whose creation or success is queued but not committed yet:
    /// nothing that depends on them starts before the next flush.
    enablers: HashSet<usize>,
    /// Why the run stops starting attempts (a failure, a broken promise,
    /// a cancel): nothing starts, nothing commits.
    halt: Halt,
    /// Nodes waiting for input (no process held).
    pub(super) waiting: BTreeSet<usize>,
    /// Where to die on purpose, for durability tests (`ORCH_FAULT`).
    fault: Option<(Fault, String)>,
    /// Nodes waiting out a retry backoff, with when they may start again.
    retry_at: HashMap<usize, tokio::time::Instant>,
    /// Told of every commit: the engine's observers and the live picture.
    observers: Vec<Arc<dyn Observer>>,
    /// When what waits alone for the next commit (log lines, started
    /// attempts) is written at the latest.
    write_due: Option<tokio::time::Instant>,
    /// Where the live picture is kept, when it is.
    picture: Option<PathBuf>,
    /// Set while the executor is getting ready for a ready node's task
    /// (see `Executor::not_ready`): the loop wakes when it completes.
    hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Whether this runner took the run over with a restart.
    restarted: bool,
    /// How many mutations one attempt's batch may hold ([`MAX_BATCH`]).
    max_batch: usize,
    /// The folder attempts run in: declared files are looked for there.
    work_dir: PathBuf,
    /// Set when the graph or a node's state changed since the rules were
    /// last evaluated.
    rules_dirty: bool,
    /// Rules whose body could not be committed when they fired (the run
    /// failed for it): not tried again in this session.
    rules_refused: HashSet<usize>,
    /// Set like `rules_dirty`, cleared once every loop was examined.
    loops_dirty: bool,
    /// Loops that failed the run (their bound, a batch that could not
    /// commit): not tried again in this session.
    loops_refused: HashSet<String>,
    /// The runner that ran each ended attempt, by (node, attempt), until
    /// its end is recorded (`AttemptFinished::runner`).
    ran_on: HashMap<(usize, u32), String>,
    /// The run's own folder: its attempts' artefacts are kept under it
    /// ([`crate::exec::remote::artefact_dir`]).
    run_home: PathBuf,
}

/// Completes at `at` (never without one). The timer exists only once the
/// future is polled.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the executor's hold does (never without one).
async fn until_ready(hold: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>) {
    match hold {
        Some(until) => until.await,
        None => std::future::pending().await,
    }
}

impl Runner {
    /// A runner of `engine` for the run `lease` holds; attempts go to
    /// `executor`, else to a [`ProcessExecutor`] for `config`.
    pub(super) fn new(
        engine: &Engine,
        lease: Lease,
        state: RunState,
        config: &RunConfig,
        executor: Option<Arc<dyn Executor>>,
    ) -> Result<Runner> {
        let home = engine.home().to_path_buf();
        let store = engine.store().clone();
        // Every run has a folder of its own for the files its tasks write.
        let run_home = home.join("runs").join(&state.run);
        let run_dir = run_home.join("work");
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| Error::io(format!("creating {}", run_dir.display()), e))?;
        let work_dir = if config.per_run_dir {
            run_dir.clone()
        } else {
            config.base_dir.clone()
        };
        let executor: Arc<dyn Executor> = match executor {
            Some(e) => e,
            None => Arc::new(ProcessExecutor::new(ProcessEnv {
                base_dir: config.base_dir.clone(),
                python: config.python.clone(),
                helper_dir: engine.helper_dir()?,
                db: PathBuf::from(store.location()),
                default_timeout: config
                    .default_timeout
                    .and_then(|t| Duration::try_from_secs_f64(t).ok()),
                native_binary: config.native_binary.clone(),
                python_fork: config.python_fork,
                python_preload: config.python_preload.clone(),
                run_dir: Some((run_dir, config.per_run_dir)),
                container_engine: config.container_engine.clone(),
            })),
        };
        let executor: Arc<dyn Executor> = match engine.remote() {
            Some(remote) => {
                let mut e = crate::exec::remote::RemoteExecutor::new(remote.clone(), executor);
                // A published workflow's files go with its attempts.
                if let Some(source) = &config.source {
                    e = e.shipping(&config.base_dir, source);
                }
                Arc::new(e)
            }
            None => executor,
        };
        let mut observers = engine.observers();
        let picture = if config.live_picture {
            let dir = home.join("runs").join(&state.run);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let path = dir.join("live.svg");
            observers.push(Arc::new(Picture(Mutex::new(LivePicture::new(
                path.clone(),
            )))));
            Some(path)
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
            lease,
            executor,
            remote: engine.remote().cloned(),
            max_parallel: config.max_parallel.max(1),
            ready: BTreeSet::new(),
            running: HashMap::new(),
            reports_tx,
            reports_rx,
            queued: Vec::new(),
            gathering: None,
            deferred: 0,
            logs: Vec::new(),
            taken: Vec::new(),
            seen: HashSet::new(),
            inbox: HashMap::new(),
            notes: HashMap::new(),
            enablers: HashSet::new(),
            halt: Halt {
                keep_going: config.failure_policy == FailurePolicy::KeepGoing,
                ..Halt::default()
            },
            retry_at: HashMap::new(),
            write_due: None,
            observers,
            picture,
            hold: None,
            store,
            fault: Fault::from_env(),
            waiting: BTreeSet::new(),
            restarted: false,
            max_batch: max_batch(),
            work_dir,
            rules_dirty: true,
            rules_refused: HashSet::new(),
            loops_dirty: true,
            loops_refused: HashSet::new(),
            ran_on: HashMap::new(),
            run_home,
        })
    }

    pub(super) fn run_id(&self) -> &str {
        &self.state.run
    }

    pub(super) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(super) fn status(&self) -> RunStatus {
        self.state.status
    }

    pub(super) fn restarted(&self) -> bool {
        self.restarted
    }

    /// Queues an event already applied to the state (a restart's, which
    /// needs the history's batches this runner does not keep).
    pub(super) fn queue_applied(&mut self, event: Event) {
        self.restarted |= matches!(event.kind, EventKind::Restarted { .. });
        self.queued.push(event);
    }

    pub(super) fn announce(&self, what: &str) {
        let db = self.store.location();
        let run = &self.state.run;
        let workflow = &self.state.workflow;
        match &self.picture {
            Some(p) => {
                info!(run = %run, workflow = %workflow, db = %db, picture = %p.display(), "{what}")
            }
            None => info!(run = %run, workflow = %workflow, db = %db, "{what}"),
        }
    }

    /// Drives the run to its end, taking signals from `signals`; gives the
    /// run up (its lease released) once it ended.
    pub(super) async fn drive(
        mut self,
        mut signals: mpsc::UnboundedReceiver<Envelope>,
    ) -> Result<RunOutcome> {
        let outcome = self.run_loop(&mut signals).await;
        // Whatever ended the loop, the picture shows where the run stands
        // (a redraw the pacing skipped is made now).
        for o in &self.observers {
            o.idle(&self.state);
        }
        let status = match outcome {
            Ok(status) => status,
            Err(e) => {
                // Fenced (taken over) or the store failed: nothing more is
                // written; the attempts are stopped with their groups.
                // Runners keep theirs: the next owner re-attaches to them.
                self.detach_remote();
                self.kill_running();
                if !matches!(e, Error::Fenced { .. }) {
                    // Free for the next takeover at once, if the store
                    // still answers.
                    let _ = self.store.release(&self.lease);
                }
                warn!(run = %self.state.run, error = %e, "this engine stops driving the run");
                return Err(e);
            }
        };
        if let Err(e) = self.store.release(&self.lease) {
            warn!(run = %self.state.run, error = %e, "cannot release the run's lease");
        }
        let reason = if status.is_terminal() {
            self.state.reason.clone()
        } else {
            Some(format!(
                "interrupted: the engine stopped; `orch resume {}` continues the run",
                self.state.run
            ))
        };
        Ok(RunOutcome {
            run: self.state.run.clone(),
            status,
            reason,
            db: PathBuf::from(self.store.location())
                .canonicalize()
                .unwrap_or_else(|_| PathBuf::from(self.store.location())),
            picture: self.picture.clone(),
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
        if point.flushes_first() {
            let _ = self.flush();
        }
        warn!(point = ?point, node = %node, "ORCH_FAULT: the orchestrator dies here");
        // SAFETY: signals our own process; nothing after this runs.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }

    pub(super) fn id(&self, i: usize) -> String {
        self.state.graph.node(i).id.clone()
    }

    /// Applies an event to the in-memory state, queues it for the next
    /// flush, and re-examines the readiness of the nodes it touched.
    pub(super) fn emit(&mut self, kind: EventKind) {
        let (ev, touched) = self.state.push(kind);
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
        // A change of status counts too: nothing fires while the run is
        // paused, so what became due meanwhile fires on unpause.
        if matches!(
            ev.kind,
            EventKind::BatchCommitted { .. }
                | EventKind::NodeState { .. }
                | EventKind::RunStatus { .. }
        ) {
            self.rules_dirty = true;
            self.loops_dirty = true;
        }
        self.queued.push(ev);
        for i in touched {
            self.refresh(i);
        }
    }

    /// Moves a node between `pending` and `ready` as its predecessors say.
    pub(super) fn refresh(&mut self, i: usize) {
        let g = &self.state.graph;
        let (state, unmet) = (g.node(i).state, g.unmet(i));
        // The gates are looked up only where they can decide.
        let gated =
            unmet == 0 && matches!(state, NodeState::Pending | NodeState::Ready) && self.gated(i);
        let backing_off = self.retry_at.contains_key(&i);
        let Some(want) = schedule::readiness(state, unmet, gated, backing_off) else {
            return;
        };
        let node = self.id(i);
        self.emit(EventKind::NodeState { node, state: want });
    }

    async fn run_loop(
        &mut self,
        signals: &mut mpsc::UnboundedReceiver<Envelope>,
    ) -> Result<RunStatus> {
        // Whether the observers were told of the current quiet spell.
        let mut quiet = false;
        loop {
            self.fire_loops();
            self.fire_rules();
            self.schedule()?;
            let pending = schedule::Pending {
                running: self.running.len(),
                paused: self.state.status == RunStatus::Paused,
                waiting: !self.waiting.is_empty(),
                backing_off: !self.retry_at.is_empty(),
                holding: self.hold.is_some() && !self.ready.is_empty(),
            };
            if schedule::over(&self.halt, &pending) {
                let status = self.finish();
                self.flush()?;
                return Ok(status);
            }
            let next_retry = self.retry_at.values().min().copied();
            // Group commit: reports that are already there are handled
            // without writing first. Nothing waits on the queued events
            // meanwhile: a node whose start depends on them flushes first
            // (see `schedule`), and they are written before the loop waits,
            // or once the group holds `GROUP_MAX_EVENTS` or has gathered
            // for `GROUP_MAX_DELAY`.
            if !self.group_full() {
                if let Ok(report) = self.reports_rx.try_recv() {
                    self.handle(report);
                    if next_retry.is_some_and(|t| t <= tokio::time::Instant::now()) {
                        self.release_retries();
                    }
                    continue;
                }
            }
            if self.queued.len() <= self.deferred
                && self.taken.is_empty()
                && self.logs.len() < LOG_BATCH
            {
                // Log lines alone wait a little for company: a chatty task
                // costs a transaction per batch, not per line. So do
                // started attempts: a short one's end comes first.
                let now = tokio::time::Instant::now();
                if !self.logs.is_empty() {
                    self.write_by(now + LOG_DELAY);
                }
                if !self.queued.is_empty() {
                    self.write_by(now + START_DELAY);
                }
            } else {
                self.flush()?;
            }
            // Observers hear once per quiet spell that the run went idle:
            // nothing runs, nothing happened for a moment. (A running
            // attempt will commit anyway; no timer is armed for it.)
            let told_quiet = std::mem::take(&mut quiet);
            let quiet_at = (!told_quiet && self.running.is_empty() && !self.observers.is_empty())
                .then(|| tokio::time::Instant::now() + QUIET);
            tokio::select! {
                biased;
                envelope = signals.recv() => match envelope {
                    Some(Envelope::Signal(id, signal)) => self.take_signal(id, signal)?,
                    Some(Envelope::Shutdown(grace)) => {
                        self.halt.shutdown = true;
                        self.detach_remote();
                        self.stop_running(if grace.is_zero() { Stop::Kill } else { Stop::Terminate(grace) });
                    }
                    Some(Envelope::Lost) => {
                        return Err(Error::Fenced {
                            run: self.state.run.clone(),
                            epoch: self.lease.epoch,
                            owner: "another engine took it over (its lease renewal found the run gone)".into(),
                        })
                    }
                    // The engine dropped this run's entry: it no longer
                    // drives it.
                    None => {
                        return Err(Error::Engine {
                            run: self.state.run.clone(),
                            message: "the engine stopped driving the run".into(),
                        })
                    }
                },
                report = self.reports_rx.recv() => {
                    self.handle(report.expect("the runner holds a sender"));
                }
                () = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if next_retry.is_some() => self.release_retries(),
                () = until_ready(&mut self.hold) => self.hold = None,
                () = until(self.write_due) => {
                    self.fault_unwritten();
                    self.flush()?;
                }
                () = until(quiet_at), if quiet_at.is_some() => {
                    for o in &self.observers {
                        o.idle(&self.state);
                    }
                    quiet = true;
                }
            }
        }
    }
}
