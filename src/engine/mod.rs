//! The engine: the one core that starts runs from a definition, takes
//! over runs that lost their owner, delivers signals, and drives any
//! number of runs at once in one process (one task each on the tokio
//! runtime). [`crate::Workflow::run`], [`crate::resume`],
//! [`crate::restart`], [`crate::Takeover`] and the CLI are thin calls into
//! it.
//!
//! ```no_run
//! use orch::engine::Engine;
//! use orch::{Task, Workflow};
//!
//! # async fn demo() -> orch::Result<()> {
//! let engine = Engine::open(".orch/orch.db")?;
//! let mut handles = Vec::new();
//! for i in 0..3 {
//!     let mut wf = Workflow::new(format!("hello-{i}"));
//!     wf.node("greet", Task::command(["echo", "hi"]));
//!     handles.push(engine.start(wf.definition(), wf.options()).await?);
//! }
//! for h in handles {
//!     println!("{}", h.wait().await?.status);
//! }
//! # Ok(()) }
//! ```
//!
//! Who owns a run is decided by a lease in the store (SERVICE.md §2): the
//! engine renews the leases of the runs it drives, every write carries the
//! run's epoch, and a run taken over by another engine stops here at its
//! next write. Signals reach a run hosted by this engine directly; signals
//! stored by other processes (`orch pause`, `orch input`) are picked up by
//! one poll of the store for all the runs the engine drives.

mod fault;
mod observe;
mod options;
mod outcome;
mod run;
pub use run::{GROUP_MAX_EVENTS, MAX_BATCH};
pub mod schedule;
mod start;
pub use start::validate;
mod stop;
mod takeover;
pub mod verdict;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

pub use crate::model::RunConfig;
pub use observe::Observer;
pub use options::RunOptions;
pub use outcome::RunOutcome;
pub(crate) use stop::wait_or_stop;
pub use stop::{stop_grace, StopSignals};

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::model::Definition;
use crate::store::{Lease, Owner, Pending, Signal, SignalId, SqliteStore, Store};

/// How often the engine looks in the store for signals sent by other
/// processes.
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// What reaches a run's loop from outside.
#[derive(Debug)]
pub(crate) enum Envelope {
    /// A signal; stored ones carry their id, taken with what they did.
    Signal(Option<SignalId>, Signal),
    /// Another engine took the run over: stop driving it.
    Lost,
    /// The engine stops: start nothing, stop the running attempts (with
    /// this grace period; zero: kill them), leave the run resumable.
    Shutdown(Duration),
}

/// A run this engine drives.
struct Hosted {
    lease: Lease,
    tx: mpsc::UnboundedSender<Envelope>,
}

struct Inner {
    store: Arc<dyn Store>,
    owner: Owner,
    /// Where helper files and live pictures go (the database's folder for
    /// a SQLite store).
    home: PathBuf,
    runs: Mutex<HashMap<String, Hosted>>,
    /// Stored signals already handed to a run, with the epoch of the
    /// runner they went to (until the store no longer lists them as
    /// pending).
    forwarded: Mutex<HashSet<(SignalId, u64)>>,
    observers: Mutex<Vec<Arc<dyn Observer>>>,
    /// The Python helper's folder under `home`, once installed (once per
    /// engine, not per run).
    helper: std::sync::OnceLock<PathBuf>,
    /// Whether the poll-and-renew task runs.
    background: Mutex<bool>,
    /// Set by [`Engine::shutdown`], with its grace: nothing new is
    /// started or taken over.
    stopping: Mutex<Option<Duration>>,
    /// Where attempts go that runners run (`orch serve` sets it).
    remote: std::sync::OnceLock<Arc<crate::exec::remote::Remote>>,
    /// Runs being started: registered (or about to be) but not in `runs`
    /// yet. [`Engine::hosted`] lists them, so an adopter that finds one
    /// running and owned by this engine does not take it over from the
    /// start still setting it up.
    starting: Mutex<HashSet<String>>,
}

/// Takes a run out of the engine's starting runs when dropped.
struct StartingGuard<'a> {
    engine: &'a Engine,
    run: String,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.engine.inner.starting).remove(&self.run);
    }
}

/// Takes a run out of the engine's hosted runs when dropped, if the entry
/// is still this runner's.
struct HostedGuard {
    engine: Engine,
    run: String,
    lease: Lease,
}

impl Drop for HostedGuard {
    fn drop(&mut self) {
        let mut runs = lock(&self.engine.inner.runs);
        if runs.get(&self.run).is_some_and(|h| h.lease == self.lease) {
            runs.remove(&self.run);
        }
    }
}

/// The core that drives runs; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.inner.store.location())
            .field("owner", &self.inner.owner.id)
            .finish_non_exhaustive()
    }
}

/// A run started or taken over by an engine.
#[derive(Debug)]
pub struct RunHandle {
    run: String,
    task: tokio::task::JoinHandle<Result<RunOutcome>>,
}

impl RunHandle {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.run
    }

    /// Waits until the run ends (or this engine stops driving it).
    pub async fn wait(self) -> Result<RunOutcome> {
        match self.task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Engine {
                run: self.run,
                message: format!("its task was stopped: {e}"),
            }),
        }
    }
}

/// What a takeover does with the run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeoverKind {
    /// Continue it: attempts that were running run again.
    Resume,
    /// Restart this node and everything downstream, in a new generation.
    Restart(String),
}

impl Engine {
    /// An engine over `store`; `home` holds the files runs need (the
    /// Python helper, live pictures).
    pub fn new(store: Arc<dyn Store>, home: impl AsRef<Path>) -> Engine {
        Engine::with_owner(store, home, Owner::this_process())
    }

    /// An engine with a chosen identity (its lease duration, say).
    pub fn with_owner(store: Arc<dyn Store>, home: impl AsRef<Path>, owner: Owner) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store,
                owner,
                home: home.as_ref().to_path_buf(),
                runs: Mutex::new(HashMap::new()),
                forwarded: Mutex::new(HashSet::new()),
                observers: Mutex::new(Vec::new()),
                helper: std::sync::OnceLock::new(),
                background: Mutex::new(false),
                stopping: Mutex::new(None),
                remote: std::sync::OnceLock::new(),
                starting: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// An engine over the SQLite database at `db` (created if missing),
    /// with its files beside it.
    pub fn open(db: impl AsRef<Path>) -> Result<Engine> {
        Ok(Engine::over_sqlite(SqliteStore::open(db.as_ref())?))
    }

    /// An engine over the existing SQLite database at `db` (an error
    /// naming the path when there is none).
    pub fn open_existing(db: impl AsRef<Path>) -> Result<Engine> {
        let store = SqliteStore::open_existing(db.as_ref())?;
        Ok(Engine::over_sqlite(store))
    }

    fn over_sqlite(store: SqliteStore) -> Engine {
        let home = store
            .path()
            .canonicalize()
            .unwrap_or_else(|_| store.path().to_path_buf())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Engine::new(Arc::new(store), home)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Sends attempts that runners can serve (or that this machine
    /// cannot run) to `remote`'s queue, in every run started or taken
    /// over from now on with the default executor. Set once; `false` when
    /// it was set already.
    pub fn send_to_runners(&self, remote: Arc<crate::exec::remote::Remote>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    /// The queue of runners, when attempts may go there.
    pub fn remote(&self) -> Option<&Arc<crate::exec::remote::Remote>> {
        self.inner.remote.get()
    }

    /// This engine's identity, as leases record it.
    pub fn owner(&self) -> &Owner {
        &self.inner.owner
    }

    /// Calls `observer` after every commit of every run this engine
    /// drives from now on.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        lock(&self.inner.observers).push(observer);
    }

    /// The ids of the runs this engine drives now.
    pub fn hosted(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.inner.runs).keys().cloned().collect();
        ids.extend(lock(&self.inner.starting).iter().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Registers `definition` as a new run (validated exactly like a
    /// runtime batch) and starts driving it; returns once the
    /// registration committed.
    pub async fn start(&self, definition: &Definition, options: &RunOptions) -> Result<RunHandle> {
        self.start_cow(std::borrow::Cow::Borrowed(definition), options)
            .await
    }

    /// [`Engine::start`] taking the definition: it is dropped once the
    /// registration committed (see [`crate::Workflow::run_owned`]).
    pub(crate) async fn start_owned(
        &self,
        definition: Definition,
        options: &RunOptions,
    ) -> Result<RunHandle> {
        self.start_cow(std::borrow::Cow::Owned(definition), options)
            .await
    }

    async fn start_cow(
        &self,
        definition: std::borrow::Cow<'_, Definition>,
        options: &RunOptions,
    ) -> Result<RunHandle> {
        self.refuse_if_stopping(&definition.name)?;
        let run = options
            .run_id
            .clone()
            .unwrap_or_else(crate::time::new_run_id);
        // Hosted from before its registration commits until `spawn` put
        // it in `runs`.
        lock(&self.inner.starting).insert(run.clone());
        let _starting = StartingGuard {
            engine: self,
            run: run.clone(),
        };
        let runner = start::register(self, definition, options, run)?;
        Ok(self.spawn(runner))
    }

    /// Takes over a stored run (an id, a unique prefix, or `latest`) and
    /// drives it: resumes it, or restarts a node. Refused while another
    /// engine owns the run and its lease holds (unless `force`), and for a
    /// resume when the run ended or a script changed since it started
    /// (unless `force`). Attempts go to `executor`, else to the process
    /// executor the run was started with.
    pub async fn take_over(
        &self,
        run: &str,
        kind: TakeoverKind,
        force: bool,
        executor: Option<Arc<dyn Executor>>,
    ) -> Result<RunHandle> {
        self.refuse_if_stopping(run)?;
        let id = self.inner.store.resolve_run(run)?;
        if lock(&self.inner.runs).contains_key(&id) {
            return Err(Error::Engine {
                run: id,
                message: "this engine drives the run now; it can be taken over once it ended (or was cancelled)".into(),
            });
        }
        let runner = takeover::take_over(self, &id, kind, force, executor)?;
        Ok(self.spawn(runner))
    }

    /// Sends a signal to a run: stored first (so it survives a crash and
    /// reaches the run wherever it is driven), then handed straight to the
    /// run when this engine drives it. Refused for a run that ended, and
    /// for an input to a node that is no input node or finished, or whose
    /// value does not fit the type the node declares
    /// ([`crate::NodeBuilder::returns`]) or nests past the limits
    /// ([`crate::limits::MAX_JSON_DEPTH`]).
    pub async fn signal(&self, run: &str, signal: Signal) -> Result<()> {
        let store = &self.inner.store;
        let run = store.resolve_run(run)?;
        if let Signal::Input { node, value } = &signal {
            crate::limits::check_value(value).map_err(|e| Error::Refused {
                what: format!("the input for `{node}` of run {run}"),
                message: e.to_string(),
            })?;
            if let Some((task, _)) = store.node(&run, node)? {
                crate::typed::native::check_output(&task, value).map_err(|e| Error::Refused {
                    what: format!("the input for `{node}` of run {run}"),
                    message: e.replace("the output", "the value"),
                })?;
            }
        }
        let id = store.request(&run, &signal)?;
        if let Some(h) = lock(&self.inner.runs).get(&run) {
            lock(&self.inner.forwarded).insert((id, h.lease.epoch));
            let _ = h.tx.send(Envelope::Signal(Some(id), signal));
        }
        Ok(())
    }

    /// Stops the engine gracefully: nothing new starts or is taken over;
    /// every running attempt is asked to stop (`SIGTERM` to its process
    /// group) and killed if it has not ended after `grace` (zero: killed
    /// at once); each run records its stopped attempts as interrupted
    /// (no retry used, the node ready again), keeps its status `running`
    /// and gives up its lease, so that `orch resume` takes it over at
    /// once. Attempts that end on their own meanwhile commit as usual.
    /// Returns at once; each run's [`RunHandle::wait`] returns when it
    /// stopped. Calling it again with a shorter grace cuts the grace short.
    pub fn shutdown(&self, grace: Duration) {
        let runs = lock(&self.inner.runs);
        {
            let mut stopping = lock(&self.inner.stopping);
            *stopping = Some(stopping.map_or(grace, |g| g.min(grace)));
        }
        for h in runs.values() {
            let _ = h.tx.send(Envelope::Shutdown(grace));
        }
    }

    fn refuse_if_stopping(&self, what: &str) -> Result<()> {
        if lock(&self.inner.stopping).is_some() {
            return Err(Error::Engine {
                run: what.to_string(),
                message: "the engine is shutting down; it starts and takes over nothing".into(),
            });
        }
        Ok(())
    }

    fn spawn(&self, runner: run::Runner) -> RunHandle {
        let run = runner.run_id().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let lease = runner.lease().clone();
        {
            let mut runs = lock(&self.inner.runs);
            // A shutdown that began while this run was set up reaches it
            // too (the map was walked before it was in it).
            if let Some(grace) = *lock(&self.inner.stopping) {
                let _ = tx.send(Envelope::Shutdown(grace));
            }
            runs.insert(
                run.clone(),
                Hosted {
                    lease: lease.clone(),
                    tx,
                },
            );
        }
        self.ensure_background();
        // Removes the entry when the run's task ends, however it ends (a
        // panic included): nothing renews a lease for a run not driven.
        let hosted = HostedGuard {
            engine: self.clone(),
            run: run.clone(),
            lease,
        };
        let task = tokio::spawn(async move {
            let _hosted = hosted;
            runner.drive(rx).await
        });
        RunHandle { run, task }
    }

    /// Starts the task that polls stored signals and renews leases, once.
    fn ensure_background(&self) {
        let mut started = lock(&self.inner.background);
        if *started {
            return;
        }
        *started = true;
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(background(weak));
    }

    pub(crate) fn observers(&self) -> Vec<Arc<dyn Observer>> {
        lock(&self.inner.observers).clone()
    }

    pub(crate) fn home(&self) -> &Path {
        &self.inner.home
    }

    /// The folder of the Python helper package, installed under `home`
    /// the first time a run of this engine needs it.
    pub(crate) fn helper_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = self.inner.helper.get() {
            return Ok(dir.clone());
        }
        let dir = crate::exec::install_helper(&self.inner.home)?;
        Ok(self.inner.helper.get_or_init(|| dir).clone())
    }
}

/// Polls the store for signals sent by other processes and renews the
/// leases of the hosted runs, while the engine lives and hosts runs.
async fn background(engine: Weak<Inner>) {
    let mut poll = tokio::time::interval(SIGNAL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        poll.tick().await;
        let Some(inner) = engine.upgrade() else {
            return;
        };
        {
            // Under the flag's lock: a run hosted meanwhile either is seen
            // here, or finds the flag down and starts a new task.
            let mut running = lock(&inner.background);
            if lock(&inner.runs).is_empty() {
                *running = false;
                return;
            }
        }
        match inner.store.pending() {
            Ok(pending) => forward(&inner, pending),
            Err(e) => warn!(error = %e, "cannot read stored signals"),
        }
        if last_renewal.elapsed() >= inner.owner.ttl / 3 {
            last_renewal = tokio::time::Instant::now();
            let leases: Vec<Lease> = lock(&inner.runs)
                .values()
                .map(|h| h.lease.clone())
                .collect();
            match inner.store.renew(&inner.owner, &leases) {
                Ok(lost) => {
                    let runs = lock(&inner.runs);
                    for run in lost {
                        let renewed = leases.iter().find(|l| l.run == run);
                        // Only the runner that held the lease renewed.
                        if let Some(h) = runs.get(&run).filter(|h| Some(&h.lease) == renewed) {
                            let _ = h.tx.send(Envelope::Lost);
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew the leases of this engine's runs"),
            }
        }
    }
}

/// Hands each pending signal of a hosted run to it, once.
fn forward(inner: &Inner, pending: Vec<Pending>) {
    let runs = lock(&inner.runs);
    let mut forwarded = lock(&inner.forwarded);
    let open: HashSet<SignalId> = pending.iter().map(|p| p.id).collect();
    forwarded.retain(|(id, _)| open.contains(id));
    for p in pending {
        if let Some(h) = runs.get(&p.run) {
            // Once per runner (a run taken over again by this engine gets
            // what its earlier runner left untaken).
            if forwarded.insert((p.id, h.lease.epoch)) {
                let _ = h.tx.send(Envelope::Signal(Some(p.id), p.signal));
            }
        }
    }
}

/// Locks a mutex whose holder may have panicked (what it guards stays
/// consistent: each holder makes one insert, remove or push).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
