//! The run loop: starts ready nodes (one at a time by default, in
//! insertion order), answers the mutations of running tasks, commits each
//! successful attempt's batch with its output in one transaction, takes
//! signals, and ends the run.
//!
//! All state changes go through [`Runner::emit`]: an event is applied to
//! the in-memory [`RunState`] (the same fold a rebuild uses) and queued;
//! [`Runner::flush`] writes the queued events to the store in one
//! transaction, fenced by the run's lease, then tells the observers.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::exec::{
    AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Executor, ProcessEnv, ProcessExecutor, Report,
    Stop,
};
use crate::graph::Staging;
use crate::history::{Event, EventKind, RunState, ViolationRecord};
use crate::model::{
    resolve_refs, AttemptOutcome, Exec, FailurePolicy, NodeState, Origin, RunStatus,
};
use crate::picture::live::LivePicture;
use crate::promise::{self, BatchProblem, Promise, RegionState, Violation};
use crate::store::{Lease, LogLine, Signal, SignalId, Store};
use crate::typed::native;

use super::fault::Fault;
use super::observe::{Observer, Picture};
use super::schedule::{self, Halt};
use super::start::typecheck;
use super::verdict::{self, Retry, Stopping, Verdict};
use super::{Engine, Envelope, RunConfig, RunOutcome};

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
        let by = by.map(|(i, a)| {
            let n = self.state.graph.node(i);
            (n.id.clone(), n.task.name.clone(), a)
        });
        warn!(violation = %v, "promise broken");
        self.emit(EventKind::PromiseBroken {
            violation: ViolationRecord::new(v, by),
        });
        self.halt.broken.get_or_insert_with(|| v.to_string());
        self.kill_running();
    }

    /// Stops waiting for the attempts runners hold, leaving them claimed
    /// (the engine stops or lost the run): the engine that drives the run
    /// next re-attaches to them. They stay `running` in the history.
    fn detach_remote(&mut self) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let run = self.state.run.clone();
        let detached: Vec<usize> = self
            .running
            .iter()
            .filter(|(i, r)| remote.detach(&AttemptId::new(&run, self.id(**i), r.attempt)))
            .map(|(i, _)| *i)
            .collect();
        for i in detached {
            if let Some(r) = self.running.remove(&i) {
                info!(run = %run, node = %self.id(i), attempt = r.attempt, "left to its runner for the run's next owner");
            }
        }
    }

    /// Waits again for attempt `attempt` of node `i`, which a runner may
    /// still hold (the run's previous owner sent it to the queue): `true`
    /// when it does and this engine now waits for its reports.
    pub(super) fn reattach(&mut self, i: usize, attempt: u32) -> bool {
        let Some(remote) = self.remote.clone() else {
            return false;
        };
        let node = self.id(i);
        let id = AttemptId::new(&self.state.run, &node, attempt);
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let link =
            AttemptLink::new(id.clone(), self.reports_tx.clone(), kill_rx).following_logs(true);
        match remote.reattach(link) {
            Ok(true) => {
                // Lines the previous owner stored are not taken again.
                let streamed = self
                    .store
                    .logs(&self.state.run, &node, Some(attempt))
                    .map(|l| l.iter().map(|l| l.line).max().unwrap_or(0))
                    .unwrap_or(0);
                info!(attempt = %id, "re-attached to an attempt a runner holds");
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        stop: kill_tx,
                        violated: None,
                        streamed,
                        adopted: true,
                    },
                );
                true
            }
            Ok(false) => false,
            Err(e) => {
                warn!(attempt = %id, error = %e, "cannot tell whether a runner still holds the attempt; it runs again");
                false
            }
        }
    }

    /// Asks every running attempt to be killed (with its process group).
    fn kill_running(&mut self) {
        self.stop_running(Stop::Kill);
    }

    /// Asks every running attempt to stop (`how`).
    fn stop_running(&mut self, how: Stop) {
        for r in self.running.values() {
            let _ = r.stop.send(how);
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

    /// Writes the queued events, logs and taken signals in one
    /// transaction fenced by the lease, then tells the observers.
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.queued.is_empty() && self.logs.is_empty() && self.taken.is_empty() {
            return Ok(());
        }
        self.store.commit(
            &self.lease,
            &self.state,
            &self.queued,
            &self.logs,
            &self.taken,
        )?;
        self.enablers.clear();
        self.logs.clear();
        self.write_due = None;
        self.deferred = 0;
        self.taken.clear();
        if !self.queued.is_empty() {
            for o in &self.observers {
                o.committed(&self.state, &self.queued);
            }
        }
        // Cleared, not replaced: the next commit reuses the allocation.
        self.queued.clear();
        self.gathering = None;
        Ok(())
    }

    /// Writes what waits alone by `at` at the latest.
    fn write_by(&mut self, at: tokio::time::Instant) {
        self.write_due = Some(self.write_due.map_or(at, |due| due.min(at)));
    }

    /// The `start_unwritten` fault: dies before a started attempt that
    /// waited alone for a commit is written.
    fn fault_unwritten(&mut self) {
        if self.fault.is_none() || self.deferred == 0 {
            return;
        }
        let started: Vec<String> = self
            .queued
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::AttemptStarted { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect();
        for node in started {
            self.fault(Fault::StartUnwritten, &node);
        }
    }

    /// Whether the queued events are a full group commit: as many as one
    /// may hold, or gathered for as long.
    fn group_full(&mut self) -> bool {
        if self.queued.is_empty() {
            return false;
        }
        let since = *self.gathering.get_or_insert_with(tokio::time::Instant::now);
        self.queued.len() >= GROUP_MAX_EVENTS || since.elapsed() >= GROUP_MAX_DELAY
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

    /// Acts on a signal; a stored one is marked taken with what it did.
    fn take_signal(&mut self, id: Option<SignalId>, signal: Signal) -> Result<()> {
        if let Some(id) = id {
            if !self.seen.insert(id) {
                return Ok(());
            }
            self.taken.push(id);
        }
        info!(run = %self.state.run, signal = signal.as_str(), "signal taken");
        match signal {
            Signal::Pause if self.state.status == RunStatus::Running => {
                self.emit(EventKind::RunStatus {
                    status: RunStatus::Paused,
                    reason: None,
                });
            }
            Signal::Unpause if self.state.status == RunStatus::Paused => {
                self.emit(EventKind::RunStatus {
                    status: RunStatus::Running,
                    reason: None,
                });
            }
            Signal::Cancel if !self.halt.cancelling => {
                self.halt.cancelling = true;
                self.stop_waiting("cancelled while waiting for input");
                self.kill_running();
            }
            Signal::Input { node, value } => {
                let target = self.state.graph.position(&node).filter(|&i| {
                    let n = self.state.graph.node(i);
                    matches!(n.task.exec, Exec::Input { .. }) && !n.state.is_terminal()
                });
                match target {
                    Some(i) if self.waiting.contains(&i) => {
                        self.offer(i, value);
                    }
                    Some(i) => {
                        // Not waiting yet: kept until it does. Taken only
                        // then, so a crash meanwhile loses nothing.
                        if let Some(id) = id {
                            self.taken.retain(|t| *t != id);
                        }
                        self.inbox.entry(i).or_default().push_back((id, value));
                    }
                    None => {
                        warn!(run = %self.state.run, node = %node, "input for a node that no longer waits for one; ignored");
                    }
                }
            }
            _ => {}
        }
        // What the signal did is written with it, before anything else.
        self.flush()
    }

    /// Offers `value` to waiting input node `i`: it becomes the node's
    /// output if it fits the type the node declares; otherwise it is
    /// refused, said in the node's log (a value stored by another process,
    /// `orch input`, which cannot know this binary's types), and the node
    /// waits on. True when delivered.
    fn offer(&mut self, i: usize, value: Value) -> bool {
        let misfit = crate::limits::check_value(&value)
            .map_err(|e| e.to_string())
            .and_then(|()| native::check_output(&self.state.graph.node(i).task, &value))
            .err()
            .map(|e| e.replace("the output", "the value"));
        let Some(why) = misfit else {
            self.deliver(i, value);
            return true;
        };
        let node = self.id(i);
        warn!(run = %self.state.run, node = %node, error = %why, "input refused");
        let attempt = self.state.last_attempt(i);
        let line = self.note_line(i, attempt);
        self.logs.push(LogLine {
            node,
            attempt,
            line,
            stream: "orch".into(),
            text: format!("input refused: {why}"),
        });
        false
    }

    /// The next line number of attempt `attempt` of node `i`, whose log
    /// this runner writes itself (it runs no process): after those an
    /// earlier runner wrote.
    fn note_line(&mut self, i: usize, attempt: u32) -> u32 {
        if !self.notes.contains_key(&(i, attempt)) {
            let node = self.id(i);
            let written = self
                .store
                .logs(&self.state.run, &node, Some(attempt))
                .map(|l| l.iter().map(|l| l.line).max().unwrap_or(0))
                .unwrap_or(0);
            self.notes.insert((i, attempt), written);
        }
        let line = self.notes.entry((i, attempt)).or_insert(0);
        *line += 1;
        *line
    }

    /// Makes `value` the output of waiting input node `i`.
    fn deliver(&mut self, i: usize, value: Value) {
        self.waiting.remove(&i);
        let attempt = self.state.last_attempt(i);
        info!(node = %self.state.graph.node(i).id, "input delivered");
        self.succeed(i, attempt, value, None);
    }

    /// Ends attempt `attempt` of node `i` in success with `output`: the
    /// output, the attempt's end and the node's state, queued together.
    fn succeed(&mut self, i: usize, attempt: u32, output: Value, exit_code: Option<i32>) {
        self.succeed_with(i, attempt, output, exit_code, Vec::new());
    }

    /// [`Runner::succeed`] with the files the attempt produced.
    fn succeed_with(
        &mut self,
        i: usize,
        attempt: u32,
        output: Value,
        exit_code: Option<i32>,
        files: Vec<crate::history::ProducedFile>,
    ) {
        let node = self.id(i);
        self.emit(EventKind::Output {
            node: node.clone(),
            value: output,
        });
        let runner = self.ran_on.remove(&(i, attempt));
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome: AttemptOutcome::Succeeded,
            exit_code,
            error: None,
            files,
            runner,
        });
        self.emit(EventKind::NodeState {
            node,
            state: NodeState::Succeeded,
        });
    }

    /// Fires every rule whose predicate holds, in the order they were
    /// declared, until none does (a body may make another rule's
    /// predicate hold). Each firing is one batch with origin `rule:<id>`,
    /// checked like a task's and queued with the events that made it
    /// hold: the commit that records them records the firing, so a rule
    /// fires exactly once across crashes. Nothing fires while the run is
    /// paused or halted.
    fn fire_rules(&mut self) {
        if !self.rules_dirty || self.state.graph.rules().is_empty() {
            return;
        }
        self.rules_dirty = false;
        while self.halt.going() && self.state.status == RunStatus::Running {
            let g = &self.state.graph;
            let refused = &self.rules_refused;
            let due = (0..g.rules().len()).find(|&k| {
                !g.rule_fired(k)
                    && !refused.contains(&k)
                    && crate::rule::holds(g, &g.rules()[k].when, Some(k))
            });
            let Some(k) = due else {
                return;
            };
            let rule = &g.rules()[k];
            let id = rule.id.clone();
            let at = format!("rule:{id}");
            let staged = crate::rule::body(g, rule)
                .and_then(|batch| g.stage_all(batch).map_err(|e| e.to_string()))
                .map_err(BatchProblem::BadPromise)
                .and_then(|staging| promise::check_rule_batch(g, &staging, &id).map(|()| staging));
            match staged {
                Ok(staging) => {
                    info!(rule = %id, "rule fired");
                    self.emit(EventKind::BatchCommitted {
                        origin: Origin::Rule { rule: id },
                        mutations: staging.into_mutations(),
                    });
                    self.fault(Fault::BeforeCommit, &at);
                    self.fault(Fault::AfterCommit, &at);
                }
                Err(BatchProblem::Violation(v)) => {
                    self.break_promise(&v, None);
                    return;
                }
                Err(BatchProblem::BadPromise(error)) => {
                    let reason = format!("rule `{id}` could not fire: {error}");
                    warn!(rule = %id, error = %error, "rule could not fire");
                    self.halt.failures.push(reason);
                    self.rules_refused.insert(k);
                    // Failing fast: what runs is stopped like after a
                    // node's failure; keeping going, the rest goes on.
                    return;
                }
            }
        }
    }

    /// Moves every loop whose latest iteration succeeded on (SPEC §10):
    /// the next iteration, or the exit edge to its `to`, as one batch with
    /// origin `loop:<id>` checked against every promise, queued with the
    /// events that decided it; or, at the bound, the run fails naming the
    /// loop. What a loop does next is a pure function of the graph and the
    /// outputs ([`crate::loops::next`]), so a batch lost in a crash is
    /// decided again on resume and a committed one is never repeated.
    fn fire_loops(&mut self) {
        if !self.loops_dirty
            || self.state.graph.loops().is_empty()
            || !self.halt.going()
            || self.state.status != RunStatus::Running
        {
            return;
        }
        self.loops_dirty = false;
        let mut k = 0;
        while k < self.state.graph.loops().len() {
            if !self.halt.going() || self.state.status != RunStatus::Running {
                return;
            }
            let l = &self.state.graph.loops()[k];
            if self.loops_refused.contains(&l.id) {
                k += 1;
                continue;
            }
            let id = l.id.clone();
            let (iteration, after, batch) = match crate::loops::next(&self.state, l) {
                crate::loops::Next::Iterate {
                    iteration,
                    after,
                    batch,
                } => (Some(iteration), after, batch),
                crate::loops::Next::Exit { after, batch, .. } => (None, after, batch),
                crate::loops::Next::Capped(reason) => {
                    warn!(r#loop = %id, "{reason}");
                    self.halt.failures.push(reason);
                    self.loops_refused.insert(id);
                    return;
                }
                _ => {
                    k += 1;
                    continue;
                }
            };
            let g = &self.state.graph;
            let at = format!("loop:{after}");
            let staged = g
                .stage_all(batch)
                .map_err(|e| BatchProblem::BadPromise(e.to_string()))
                .and_then(|staging| promise::check_loop_batch(g, &staging, &id).map(|()| staging));
            match staged {
                Ok(staging) => {
                    match iteration {
                        Some(n) => info!(r#loop = %id, iteration = n, "loop iterates"),
                        None => info!(r#loop = %id, after = %after, "loop exits"),
                    }
                    self.emit(EventKind::BatchCommitted {
                        origin: Origin::Loop { id, after },
                        mutations: staging.into_mutations(),
                    });
                    self.fault(Fault::BeforeCommit, &at);
                    self.fault(Fault::AfterCommit, &at);
                    // The same loop again: it has nothing more to do until
                    // the new iteration succeeds, and that is cheap to see.
                }
                Err(BatchProblem::Violation(v)) => {
                    self.break_promise(&v, None);
                    return;
                }
                Err(BatchProblem::BadPromise(error)) => {
                    let reason = format!("loop `{id}` could not go on after `{after}`: {error}");
                    warn!(r#loop = %id, error = %error, "loop could not go on");
                    self.halt.failures.push(reason);
                    self.loops_refused.insert(id);
                    return;
                }
            }
        }
    }

    /// Starts ready nodes while slots are free, lowest position first.
    fn schedule(&mut self) -> Result<()> {
        let mut from = 0;
        while schedule::may_start(
            &self.halt,
            self.state.status,
            self.running.len(),
            self.max_parallel,
        ) {
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
        if matches!(task.exec, Exec::Input { .. }) {
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
            // A value that arrived before the node waited is its output (the
            // first one that fits its type).
            while let Some((id, value)) = self.inbox.get_mut(&i).and_then(VecDeque::pop_front) {
                self.taken.extend(id);
                if self.offer(i, value) {
                    break;
                }
            }
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
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let id = AttemptId::new(&self.state.run, &node, attempt);
        let launched = inputs.and_then(|inputs| {
            self.executor
                .launch(
                    AttemptSpec::new(id.clone(), task, inputs, upstream),
                    AttemptLink::new(id, self.reports_tx.clone(), kill_rx).following_logs(true),
                )
                .map_err(|e| e.to_string())
        });
        let before = self.queued.len();
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
                // A local process is found by its environment should a
                // crash keep its start from being written: the start may
                // wait for the next commit (see `START_DELAY`).
                if pid.is_some() && self.queued.len() == before + 2 {
                    self.deferred += 2;
                }
                self.fault(Fault::AfterSpawn, &node);
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        stop: kill_tx,
                        violated: None,
                        streamed: 0,
                        adopted: false,
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

    /// The position of the node whose running attempt is `id`; `None` for
    /// an attempt of another run, or one that is not (or no longer) its
    /// node's running attempt.
    fn current(&self, id: &AttemptId) -> Option<usize> {
        if id.run != self.state.run {
            return None;
        }
        let i = self.state.graph.position(&id.node)?;
        self.running
            .get(&i)
            .is_some_and(|r| r.attempt == id.attempt)
            .then_some(i)
    }

    fn handle(&mut self, report: Report) {
        match report {
            Report::Mutation {
                attempt: id,
                mutation,
                reply,
            } => {
                let Some(node) = self.current(&id) else {
                    let _ = reply.send(Err("this attempt is no longer running".to_string()));
                    return;
                };
                let attempt = id.attempt;
                let by = id.node;
                let g = &self.state.graph;
                let mut violation = None;
                let answer = match self.running.get_mut(&node) {
                    Some(r) if r.staging.mutations().len() >= self.max_batch => Err(format!(
                        "the attempt's batch already holds {} mutations, the most one attempt may send",
                        self.max_batch
                    )),
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
            // Streamed to the store as they come, in batches (see
            // `run_loop`): the logs of an attempt a crash interrupts are
            // kept up to its last moments.
            Report::Log { attempt: id, line } => {
                let Some(i) = self.current(&id) else {
                    return;
                };
                if let Some(r) = self.running.get_mut(&i) {
                    r.streamed = r.streamed.max(line.line);
                }
                for o in &self.observers {
                    o.log(&self.state.run, &line);
                }
                self.logs.push(line);
            }
            Report::Finished { attempt: id, end } => match self.current(&id) {
                Some(node) => self.finished(node, id.attempt, end),
                // A late report of a superseded attempt: the fence.
                None => {
                    warn!(attempt = %id, "a report of an attempt that is not running was refused")
                }
            },
        }
    }

    /// Judges the end of attempt `attempt` of node `i`; its record names
    /// the runner that ran it, if one did.
    fn finished(&mut self, i: usize, attempt: u32, mut end: AttemptEnd) {
        if let Some(runner) = end.runner.take() {
            self.ran_on.insert((i, attempt), runner);
        }
        self.judge_end(i, attempt, end);
        // Every path records the end (and takes the runner); none is left.
        self.ran_on.remove(&(i, attempt));
    }

    fn judge_end(&mut self, i: usize, attempt: u32, mut end: AttemptEnd) {
        let Some(running) = self.running.remove(&i) else {
            return;
        };
        drop(running.stop);
        // Lines the executor did not stream (all of them, for one that
        // streams none).
        end.logs.retain(|l| l.line > running.streamed);
        self.logs.append(&mut end.logs);
        let node = self.id(i);
        self.fault(Fault::AfterExit, &node);
        let stopping = if self.halt.cancelling {
            Some(Stopping::Cancelled)
        } else if self.halt.broken.is_some() {
            Some(Stopping::PromiseBroken)
        } else if self.halt.shutdown {
            Some(Stopping::Shutdown)
        } else {
            None
        };
        let exit_code = end.exit_code();
        if running.adopted && stopping.is_none() {
            let seen = running.staging.mutations().len() as u32;
            if end.mutations != Some(seen) {
                // Mutations the previous owner acknowledged died with it:
                // the batch cannot be committed whole.
                let error = format!(
                    "interrupted: attempt {}/{node}#{attempt} had {} mutations acknowledged, {seen} of them by this engine (the run changed owner while it ran); the node runs again",
                    self.state.run,
                    end.mutations.map_or("an unknown number of".to_string(), |n| n.to_string()),
                );
                self.kill_ended(i, attempt, exit_code, error, NodeState::Ready);
                return;
            }
        }
        let task = &self.state.graph.node(i).task;
        match verdict::judge(&end, task, &node, running.violated.as_deref(), stopping) {
            Verdict::Violated(error) => {
                self.fail_for_good(i, attempt, exit_code, error);
                return;
            }
            // Killed by the engine: the node is ready again when the engine
            // stopped (for whoever takes the run over), cancelled when the
            // run stops.
            Verdict::Interrupted(error) => {
                self.kill_ended(i, attempt, exit_code, error, NodeState::Ready);
                return;
            }
            Verdict::Stopped(error) => {
                self.kill_ended(i, attempt, exit_code, error, NodeState::Cancelled);
                return;
            }
            Verdict::Failed {
                outcome,
                error,
                retryable,
            } => {
                self.fail_attempt(i, attempt, outcome, exit_code, error, retryable);
                return;
            }
            Verdict::Succeeded => {}
        }
        // A runner uploaded its attempt's artefacts before its end; a
        // local attempt's are copied to the same place.
        // (The folder's path is made only for a task that produces files.)
        let produces = &self.state.graph.node(i).task.produces;
        let kept = || crate::exec::remote::artefact_dir(&self.run_home, &node, attempt);
        let files = if produces.is_empty() {
            Ok(Vec::new())
        } else if self.ran_on.contains_key(&(i, attempt)) {
            produced(&kept(), produces)
        } else {
            produced(&self.work_dir, produces)
                .and_then(|files| keep_artefacts(&self.work_dir, &kept(), produces).map(|()| files))
        };
        let files = match files {
            Ok(files) => files,
            Err(error) => {
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, exit_code, error, true);
                return;
            }
        };
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
                self.fail_for_good(i, attempt, exit_code, error);
                return;
            }
            Err(BatchProblem::BadPromise(error)) => {
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, exit_code, error, true);
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
        let output = end.output.unwrap_or(Value::Null);
        self.succeed_with(i, attempt, output, exit_code, files);
        self.fault(Fault::BeforeCommit, &node);
        info!(node = %node, attempt, "succeeded");
        self.fault(Fault::AfterCommit, &node);
    }

    /// Ends an attempt the engine killed (no retry used); its node goes to
    /// `next`.
    fn kill_ended(
        &mut self,
        i: usize,
        attempt: u32,
        exit_code: Option<i32>,
        error: String,
        next: NodeState,
    ) {
        self.end_attempt(i, attempt, AttemptOutcome::Killed, exit_code, error, next);
    }

    /// Fails an attempt that broke a promise: its node fails, with no
    /// retry (the run ends `promise_broken`).
    fn fail_for_good(&mut self, i: usize, attempt: u32, exit_code: Option<i32>, error: String) {
        let outcome = AttemptOutcome::Failed;
        self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Failed);
    }

    /// Ends an attempt and puts its node in `state` (`ready` again for a
    /// retry).
    pub(super) fn end_attempt(
        &mut self,
        i: usize,
        attempt: u32,
        outcome: AttemptOutcome,
        exit_code: Option<i32>,
        error: String,
        state: NodeState,
    ) {
        let node = self.id(i);
        let runner = self.ran_on.remove(&(i, attempt));
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome,
            exit_code,
            error: Some(error),
            files: Vec::new(),
            runner,
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
        let task = &self.state.graph.node(i).task;
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
        match verdict::retry(task, failures, retryable, self.halt.stopped_by_failure()) {
            Retry::Now => {
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Ready);
                return;
            }
            Retry::After(wait) => {
                info!(node = %node, attempt, wait_s = wait.as_secs_f64(), "retry after backoff");
                self.retry_at.insert(i, tokio::time::Instant::now() + wait);
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Pending);
                return;
            }
            Retry::GiveUp => {}
        }
        let reason = format!("node `{node}` failed (attempt {attempt}): {error}");
        self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Failed);
        if self.halt.keep_going || self.halt.failures.is_empty() {
            self.halt.failures.push(reason);
        }
        if self.halt.keep_going {
            self.fail_downstream([i]);
        }
    }

    /// Keeping going past failures: every node not started downstream of
    /// `failed` becomes `upstream_failed` (it can never start), and so on
    /// downstream of it. Independent branches are untouched.
    fn fail_downstream(&mut self, failed: impl IntoIterator<Item = usize>) {
        let mut stack: Vec<usize> = failed.into_iter().collect();
        while let Some(v) = stack.pop() {
            let g = &self.state.graph;
            let held: Vec<usize> = g
                .successors(v)
                .filter(|&s| g.node(s).state.not_started())
                .collect();
            for s in held {
                let node = self.id(s);
                info!(node = %node, "upstream failed");
                self.emit(EventKind::NodeState {
                    node,
                    state: NodeState::UpstreamFailed,
                });
                stack.push(s);
            }
        }
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
        if self.halt.shutdown
            && !self.halt.stopped_by_failure()
            && self.halt.broken.is_none()
            && !self.halt.cancelling
            && !self
                .state
                .graph
                .nodes()
                .iter()
                .all(|n| n.state.is_terminal())
        {
            // The engine stopped: the run stays `running`, its interrupted
            // attempts recorded, for whoever takes it over next; nodes
            // waiting for input still wait.
            info!(run = %self.state.run, "run interrupted: the engine stopped");
            return RunStatus::Running;
        }
        // A run that ends while nodes wait for input stops waiting for them.
        self.stop_waiting("the run ended while it waited for input");
        if self.halt.cancelling {
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
        } else if self.halt.broken.is_none() && self.halt.failures.is_empty() {
            self.check_unfilled();
        }
        if self.halt.keep_going && self.halt.broken.is_none() && !self.halt.cancelling {
            // Edges added after a failure may have put more nodes behind
            // it (or behind one it held back).
            let g = &self.state.graph;
            let behind: Vec<usize> = (0..g.len())
                .filter(|&i| {
                    matches!(
                        g.node(i).state,
                        NodeState::Failed | NodeState::UpstreamFailed
                    )
                })
                .collect();
            self.fail_downstream(behind);
        }
        let nodes = self.state.graph.nodes().iter();
        let (status, reason) =
            schedule::final_status(&self.halt, nodes.map(|n| (n.id.as_str(), n.state)));
        info!(run = %self.state.run, status = %status, "run finished");
        self.emit(EventKind::RunStatus { status, reason });
        status
    }
}

/// The files a task declares, as its attempt left them in `dir` (the
/// folder it ran in): each must be a regular file there; a path that
/// would leave the folder is refused.
/// Copies the files a local attempt produced (`declared`, checked by
/// [`produced`]) from `dir` to `kept`, where the run keeps its artefacts.
fn keep_artefacts(
    dir: &std::path::Path,
    kept: &std::path::Path,
    declared: &[String],
) -> std::result::Result<(), String> {
    for p in declared {
        let rel = crate::exec::remote::check_relative(p)?;
        let to = kept.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                format!("keeping artefact `{p}`: creating {}: {e}", parent.display())
            })?;
        }
        std::fs::copy(dir.join(&rel), &to)
            .map_err(|e| format!("keeping artefact `{p}` in {}: {e}", to.display()))?;
    }
    Ok(())
}

fn produced(
    dir: &std::path::Path,
    declared: &[String],
) -> std::result::Result<Vec<crate::history::ProducedFile>, String> {
    declared
        .iter()
        .map(|p| {
            let rel = std::path::Path::new(p);
            if p.is_empty()
                || rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "declared file `{p}` is not a relative path inside the folder the task runs in"
                ));
            }
            // Not followed: a link could point anywhere.
            match std::fs::symlink_metadata(dir.join(rel)) {
                Ok(m) if m.file_type().is_symlink() => Err(format!(
                    "declared file `{p}` is a symbolic link, not a file the task wrote"
                )),
                Ok(m) if m.is_file() => Ok(crate::history::ProducedFile {
                    path: p.clone(),
                    bytes: m.len(),
                }),
                Ok(_) => Err(format!("declared file `{p}` is not a file")),
                Err(_) => Err(format!("declared file `{p}` was not produced")),
            }
        })
        .collect()
}
