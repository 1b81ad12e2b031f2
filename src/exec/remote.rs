//! The remote executor: attempts that runners (`orch runner`) run.
//!
//! [`Remote`] is shared by an engine's runs (the server makes one). An
//! attempt whose requirements a live runner satisfies (or that this
//! machine cannot run) is queued in the store under its requirement set
//! ([`crate::store::queue::queue_key`]) instead of started here; a runner
//! claims it, runs it with its own local executor and reports back
//! through the server, which hands each report to the engine waiting for
//! it: a mutation is answered (ack or error) as it arrives, the end is
//! judged like a local attempt's. Every report is fenced by the store: a
//! runner that no longer holds the attempt (its lease expired, the node
//! moved to a later attempt) is refused. An attempt whose runner lost its
//! lease ends as interrupted, so its node runs again as the next attempt
//! without spending a retry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use super::looks::Looks;
use super::resources::Offer;
use super::wake::Waiters;
use super::{
    AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Executor, Exit, Interrupt, LaunchError, Report,
};
use crate::error::{Error, Result};
use crate::history::LogLine;
use crate::model::{Mutation, Resources, Task};
use crate::store::queue::QueuedAttempt;
use crate::store::Store;

mod wire;

#[cfg(any(feature = "server", feature = "client"))]
pub use wire::binary_label;
pub use wire::{
    artefact_dir, check_relative, lease_ms, ReportError, Shipment, WireEnd, WireFile, WireSpec,
    BINARY_LABEL, DEFAULT_LEASE_MS, LEASE_ENV, MAX_ARTEFACT, MAX_ARTEFACTS, MAX_LEASE_MS,
    MAX_SHIPPED_BYTES, MAX_SHIPPED_FILE, MAX_SHIPPED_FILES, MIN_LEASE_MS,
};

/// The wake of one attempt queued on this server, handed to one waiting
/// claim at a time ([`Remote::wait_for_attempts`]). Dropped, it goes on
/// to another waiting claim, unless its attempt was claimed through this
/// server or is no longer waited for: a claim that stops waiting does
/// not swallow it.
#[derive(Debug)]
pub struct Wake {
    /// Its attempt and the runners that declined it; `None` once handed
    /// on.
    inner: Option<(AttemptId, Vec<String>)>,
    remote: Weak<Remote>,
}

impl Wake {
    /// Runner `runner` read the queue after this wake and did not take
    /// its attempt (it does not fit, the runner is full, or the attempt
    /// is left to another runner): the wake goes on to a claim of another
    /// runner, unless the attempt was claimed meanwhile.
    pub fn declined_by(mut self, runner: &str) {
        if let Some((_, declined)) = &mut self.inner {
            if !declined.iter().any(|r| r == runner) {
                declined.push(runner.to_string());
            }
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let (Some((attempt, declined)), Some(remote)) =
            (self.inner.take(), self.remote.upgrade())
        {
            remote.wake(attempt, declined);
        }
    }
}

/// An attempt queued on this server and claimed, in the same
/// transaction, for the runner of a claim waiting here
/// ([`crate::store::Store::enqueue_for`]): that claim answers with it
/// without reading the store ([`Handed::take`]). Dropped untaken (the
/// claim stopped waiting first), the claim is put back in its queue and
/// the attempt wakes another waiting claim: a hand-off is never lost.
#[derive(Debug)]
pub struct Handed {
    /// The attempt and the runner it is claimed for; `None` once taken.
    inner: Option<(QueuedAttempt, String)>,
    /// The queue's epoch on this server and the moment before the store
    /// decided: then no other attempt waited, as a read that came up
    /// short would have found ([`Remote::looked`]).
    seen: (u64, std::time::Instant),
    remote: Weak<Remote>,
}

impl Handed {
    /// The attempt, claimed for this claim's runner: the claim's answer,
    /// to a claim that asked for `asked` attempts (it counts as that
    /// runner's read of the queue, which found nothing else waiting).
    pub fn take(mut self, asked: usize) -> QueuedAttempt {
        let (attempt, runner) = self.inner.take().expect("a hand-off is taken once");
        if let Some(remote) = self.remote.upgrade() {
            let (before, at) = self.seen;
            remote.looked(&runner, before, at, 1, asked);
        }
        attempt
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let (Some((attempt, runner)), Some(remote)) = (self.inner.take(), self.remote.upgrade())
        {
            remote.release(attempt.id, runner);
        }
    }
}

/// What a waiting claim is given ([`Waiting::woken`]).
#[derive(Debug)]
pub enum Woken {
    /// An attempt was queued that it may take: it reads the queue.
    Wake(Wake),
    /// An attempt already claimed for its runner: it answers with it.
    Handed(Handed),
}

/// A long-polling claim waiting for attempts
/// ([`Remote::wait_for_attempts`]). Dropped (the claim answers, or its
/// connection went away), it stops waiting and hands on a wake or an
/// attempt it got.
#[derive(Debug)]
pub struct Waiting {
    key: u64,
    remote: Arc<Remote>,
    woken: oneshot::Receiver<Woken>,
}

impl Waiting {
    /// The wake or the attempt, once one queued on this server is handed
    /// to this claim; `None` if none ever can be. Await it at most once.
    pub async fn woken(&mut self) -> Option<Woken> {
        (&mut self.woken).await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let left = self
            .remote
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.key);
        drop(left);
        self.woken.close();
        // Handed on (its `Drop`), outside the lock.
        drop(self.woken.try_recv().ok());
    }
}

/// How long the runners read for one launch decide the next ones: a
/// launch that a runner read less than this long ago serves (its lease
/// still holding by the store's clock, counted on) goes to the queue
/// without reading the runners again. Only that answer is kept: a launch
/// no known runner serves reads them again, so a runner that just
/// registered is seen at once; a runner asked to drain through another
/// server is seen within this long (through this one, at once:
/// [`Remote::runners_changed`]).
pub const RUNNERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a long-polling claim that was not woken looks at the queue
/// again (an attempt another server queued, a rival runner gone), and
/// how long a read that came up short stands for its runner's next
/// claim when nothing changed through this server since
/// ([`Remote::may_wait`]).
pub const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The live, not draining runners as read from the store at one moment:
/// what each offers and until when its lease holds (the store's clock).
#[derive(Debug)]
struct RunnerList {
    /// When they were read (this machine's clock).
    read: std::time::Instant,
    /// The store's clock then, in milliseconds.
    now_ms: i64,
    /// Each one's offer and the end of its lease.
    live: Vec<(Offer, i64)>,
}

impl RunnerList {
    fn new(runners: &[crate::store::queue::RunnerRecord], now_ms: i64) -> RunnerList {
        RunnerList {
            read: std::time::Instant::now(),
            now_ms,
            live: runners
                .iter()
                .filter(|r| r.alive && !r.draining)
                .map(|r| (r.spec.capabilities.clone(), r.lease_until_ms))
                .collect(),
        }
    }

    /// Whether one of them serves `need` now: read less than
    /// [`RUNNERS_FRESH`] ago, its lease still holding.
    fn serves(&self, need: &Resources) -> bool {
        self.serves_after(need, self.read.elapsed())
    }

    /// [`RunnerList::serves`], `since` after they were read.
    fn serves_after(&self, need: &Resources, since: std::time::Duration) -> bool {
        let now_ms = self.now_ms.saturating_add(since.as_millis() as i64);
        since < RUNNERS_FRESH
            && self
                .live
                .iter()
                .any(|(offer, lease_until)| *lease_until >= now_ms && offer.refuses(need).is_none())
    }
}

/// The queue side of an engine: the attempts it sent to runners and
/// waits for.
pub struct Remote {
    store: Arc<dyn Store>,
    lease_ms: i64,
    here: Offer,
    waiting: Mutex<HashMap<AttemptId, mpsc::UnboundedSender<Report>>>,
    /// The runner (its id) holding each attempt this engine waits for, as
    /// far as this server saw: the claims made through it and the
    /// reports it took. An attempt's record names it when it ends.
    holders: Mutex<HashMap<AttemptId, String>>,
    /// Runners' names by id (read from the store on a miss).
    names: Mutex<HashMap<String, String>>,
    /// The files each waiting attempt's run ships to its runner.
    shipments: Mutex<HashMap<AttemptId, Arc<Shipment>>>,
    /// The artefacts each waiting attempt may upload (what its task
    /// `produces`).
    produces: Mutex<HashMap<AttemptId, Vec<String>>>,
    /// Serialises the sweep of lost claims with a queue's clearing.
    sweeping: Mutex<()>,
    /// Attempts waited for whose queue row is being written: the sweep
    /// leaves them alone (no row yet is not a lost claim; the write can
    /// take long while the database reconnects).
    enqueuing: Mutex<std::collections::HashSet<AttemptId>>,
    /// The long-polling claims waiting on this server: each attempt
    /// queued wakes one of them ([`Remote::wait_for_attempts`]).
    claims: Mutex<Waiters<oneshot::Sender<Woken>>>,
    /// The queue's epoch on this server and each runner's last read that
    /// came up short: a claim that would find nothing new need not read
    /// ([`Remote::may_wait`]).
    looks: Mutex<Looks>,
    /// The live runners as last read from the store: a launch that one of
    /// them serves goes to the queue without reading them again
    /// ([`RUNNERS_FRESH`]).
    runners: Mutex<Option<RunnerList>>,
    /// The workflow binary whose native tasks' attempts require its
    /// [`binary_label`], if any.
    native_binary: Option<std::path::PathBuf>,
    /// That label, computed when the first native attempt needs it
    /// (hashing a large binary takes a while; most servers never do).
    native_label: std::sync::OnceLock<Option<String>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// The remote side over `store`, with runner leases of `lease_ms`.
    pub fn new(store: Arc<dyn Store>, lease_ms: i64) -> Remote {
        Remote {
            store,
            lease_ms,
            here: Offer::here(),
            waiting: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            shipments: Mutex::new(HashMap::new()),
            produces: Mutex::new(HashMap::new()),
            sweeping: Mutex::new(()),
            enqueuing: Mutex::new(std::collections::HashSet::new()),
            claims: Mutex::new(Waiters::default()),
            looks: Mutex::new(Looks::default()),
            runners: Mutex::new(None),
            native_binary: None,
            native_label: std::sync::OnceLock::new(),
        }
    }

    /// The same, with the attempts of native tasks requiring the
    /// `binary=<SHA-256>` label of `binary` (the workflow binary that
    /// runs them, hashed when the first one is sent): only runners
    /// started from that very binary claim them
    /// (`orch::runner::serve_native`), and with none live they run here.
    pub fn with_native_binary(mut self, binary: std::path::PathBuf) -> Remote {
        self.native_binary = Some(binary);
        self
    }

    /// The label native attempts require, if any.
    fn native_label(&self) -> Option<&String> {
        self.native_label
            .get_or_init(|| {
                let path = self.native_binary.as_ref()?;
                #[cfg(any(feature = "server", feature = "client"))]
                return binary_label(path)
                    .map_err(|e| {
                        tracing::warn!(binary = %path.display(), error = %e, "cannot hash the workflow binary: its native tasks run here only")
                    })
                    .ok();
                #[cfg(not(any(feature = "server", feature = "client")))]
                {
                    tracing::warn!(binary = %path.display(), "built without the `server` feature: native tasks run here only");
                    None
                }
            })
            .as_ref()
    }

    /// What attempts of `task` require of a runner: its own requirements,
    /// plus this binary's label for a native task.
    fn remote_need(&self, task: &Task) -> Resources {
        let mut need = task.requires.as_deref().cloned().unwrap_or_default();
        if let (crate::model::Exec::Native { .. }, Some(label)) = (&task.exec, self.native_label())
        {
            if !need.labels.contains(label) {
                need.labels.push(label.clone());
            }
        }
        need
    }

    /// The lease of runners and claims, in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// A long-polling claim of `runner` waiting for attempts: from now
    /// on an attempt queued on this server may wake it (make it before
    /// reading the queue, so that an attempt queued during the read is
    /// not missed). Each queued attempt wakes one waiting claim: the one
    /// of the runner that last claimed from the attempt's run, else the
    /// one that waited longest; a claim whose read after the wake did not
    /// take the attempt hands it on ([`Wake::declined_by`]) to a runner
    /// that has not declined it yet.
    pub fn wait_for_attempts(self: &Arc<Self>, runner: &str) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let key = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(runner, tx);
        Waiting {
            key,
            remote: self.clone(),
            woken: rx,
        }
    }

    /// Hands the wake of `attempt` to a waiting claim of a runner not in
    /// `declined`; nothing when the attempt was claimed through this
    /// server or is no longer waited for, or when no such claim waits
    /// (the next claim's read finds the attempt).
    fn wake(self: &Arc<Self>, mut attempt: AttemptId, mut declined: Vec<String>) {
        {
            let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let held = self
                .holders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&attempt);
            if held || !waiting.contains_key(&attempt) {
                return;
            }
        }
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Some(w) = claims.take_for(&attempt.run, &declined) else {
                tracing::debug!(%attempt, declined = declined.len(), "no waiting claim to wake");
                return;
            };
            let wake = Wake {
                inner: Some((attempt, declined)),
                remote: Arc::downgrade(self),
            };
            match w.to.send(Woken::Wake(wake)) {
                Ok(()) => return,
                // That claim stopped waiting meanwhile: the next one.
                Err(Woken::Wake(mut back)) => {
                    (attempt, declined) = back.inner.take().expect("a wake not sent is whole");
                }
                Err(Woken::Handed(_)) => unreachable!("a wake was sent"),
            }
        }
    }

    /// Whether an attempt needing `need` goes to the queue: a live runner
    /// that is not draining satisfies it, or this machine cannot.
    pub fn goes_remote(&self, need: &Resources) -> Result<bool> {
        self.goes_remote_with(need, need)
    }

    /// Whether an attempt goes to the queue: this machine cannot give it
    /// `here` (its own requirements), or a live runner that is not
    /// draining satisfies `there` (what it requires of a runner).
    fn goes_remote_with(&self, here: &Resources, there: &Resources) -> Result<bool> {
        if self.here.refuses(here).is_some() {
            return Ok(true);
        }
        let fresh = self
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|k| k.serves(there));
        if fresh {
            return Ok(true);
        }
        // Read again: a runner may have registered since (or none serves).
        let (runners, now_ms) = self.store.runners()?;
        let list = RunnerList::new(&runners, now_ms);
        let serves = list.serves(there);
        *self.runners.lock().unwrap_or_else(|p| p.into_inner()) = Some(list);
        Ok(serves)
    }

    /// Forgets the runners read last: the next launch reads them again
    /// (a runner was asked to drain).
    pub fn runners_changed(&self) {
        *self.runners.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // A draining runner holds nothing back for itself any more.
        self.queue_changed();
    }

    fn looks(&self) -> std::sync::MutexGuard<'_, Looks> {
        self.looks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed through this server that may give a runner's
    /// claim more than its last read found.
    fn queue_changed(&self) {
        self.looks().changed();
    }

    /// The queue's epoch on this server: take it before a claim reads
    /// the store, and hand it to [`Remote::looked`] after.
    pub fn queue_epoch(&self) -> u64 {
        self.looks().epoch()
    }

    /// Runner `runner` read the queue, beginning at `at` when the epoch
    /// was `before` ([`Remote::queue_epoch`]), and took `took` of the
    /// `asked` attempts it asked for.
    pub fn looked(
        &self,
        runner: &str,
        before: u64,
        at: std::time::Instant,
        took: usize,
        asked: usize,
    ) {
        self.looks().read(runner, before, at, took, asked);
    }

    /// When a claim of `runner` need not read the queue now: its last
    /// read came up short less than [`LOOK_AGAIN`] ago and nothing
    /// changed through this server since that could give it more. The
    /// moment its next look is due then (it waits for a wake until
    /// then); `None` when it reads now.
    pub fn may_wait(&self, runner: &str) -> Option<std::time::Instant> {
        self.looks().may_wait(runner, std::time::Instant::now())
    }

    /// Runner `runner` renewed its lease, or a claim of its ended: its
    /// next claim reads the queue (its lease may have run out, a slot of
    /// its freed).
    pub fn runner_changed(&self, runner: &str) {
        self.looks().forget(runner);
    }

    /// Notes that `runner` (its id) claimed `attempts`: those this engine
    /// waits for will name it when they end.
    pub fn claimed(&self, runner: &str, attempts: &[AttemptId]) {
        if attempts.is_empty() {
            return;
        }
        {
            let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
            for a in attempts.iter().filter(|a| waiting.contains_key(a)) {
                holders.insert(a.clone(), runner.to_string());
            }
        }
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        for a in attempts {
            claims.claimed(&a.run, runner);
        }
    }

    fn held_by(&self, id: &AttemptId, runner: &str) {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), runner.to_string());
    }

    /// The name of the runner that held attempt `id` (forgotten now), if
    /// this server saw one: what its record names. Reads the store when
    /// the runner's name is not known yet; its id stands in when that
    /// fails.
    fn ran_on(&self, id: &AttemptId) -> Option<String> {
        let runner = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        Some(self.runner_name(&runner))
    }

    fn runner_name(&self, runner: &str) -> String {
        if let Some(n) = self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(runner)
        {
            return n.clone();
        }
        match self.store.runners() {
            Ok((all, _)) => {
                let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                for r in all {
                    names.insert(r.spec.id, r.spec.name);
                }
                names
                    .get(runner)
                    .cloned()
                    .unwrap_or_else(|| runner.to_string())
            }
            Err(e) => {
                tracing::warn!(runner, error = %e, "reading the runner's name failed; its id stands in");
                runner.to_string()
            }
        }
    }

    fn take(&self, id: &AttemptId) -> Option<mpsc::UnboundedSender<Report>> {
        self.shipments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.produces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn sender(&self, id: &AttemptId) -> Option<mpsc::UnboundedSender<Report>> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The attempts this engine waits for.
    pub fn waiting(&self) -> Vec<AttemptId> {
        let mut v: Vec<_> = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The file of content `sha256` that attempt `id`, held by `runner`,
    /// needs: where it is on this machine and what it is. Fenced like a
    /// report.
    pub fn shipped_file(
        &self,
        id: &AttemptId,
        runner: &str,
        sha256: &str,
    ) -> std::result::Result<(PathBuf, WireFile), ReportError> {
        self.store.claim_holds(id, runner)?;
        let shipment = self
            .shipments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        shipment
            .find(sha256)
            .ok_or_else(|| ReportError::NoSuchFile {
                attempt: id.clone(),
                sha256: sha256.to_string(),
            })
    }

    /// Where artefact `path` of attempt `id`, uploaded by `runner`, goes
    /// (relative to the attempt's [`artefact_dir`]): only a runner that
    /// holds the attempt may upload, only what its task `produces`.
    pub fn artefact_path(
        &self,
        id: &AttemptId,
        runner: &str,
        path: &str,
    ) -> std::result::Result<PathBuf, ReportError> {
        self.store.claim_holds(id, runner)?;
        let declared = self
            .produces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|d| d.iter().any(|p| p == path));
        if !declared {
            return Err(ReportError::NotDeclared {
                attempt: id.clone(),
                path: path.to_string(),
            });
        }
        check_relative(path).map_err(|why| ReportError::NotDeclared {
            attempt: id.clone(),
            path: why,
        })
    }

    fn enqueue(
        self: &Arc<Self>,
        spec: &AttemptSpec,
        link: AttemptLink,
        shipment: Option<&Arc<Shipment>>,
    ) -> Result<()> {
        let need = self.remote_need(&spec.task);
        let mut wire = WireSpec::from(spec);
        if let Some(s) = shipment {
            wire.files = s.files().to_vec();
        }
        let payload = serde_json::to_string(&wire).expect("a spec is JSON");
        if payload.len() > crate::store::queue::MAX_PAYLOAD {
            return Err(Error::Refused {
                what: format!("attempt {}", spec.id),
                message: format!(
                    "its inputs are {} bytes, more than a runner takes ({})",
                    payload.len(),
                    crate::store::queue::MAX_PAYLOAD
                ),
            });
        }
        let AttemptLink {
            id, reports, kill, ..
        } = link;
        self.enqueuing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reports);
        if let Some(s) = shipment {
            self.shipments
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), s.clone());
        }
        if !spec.task.produces.is_empty() {
            self.produces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), spec.task.produces.clone());
        }
        let queued = self.queue(QueuedAttempt::new(id.clone(), need, payload));
        self.enqueuing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Err(e) = queued {
            self.take(&id);
            return Err(e);
        }
        self.watch(id, kill);
        Ok(())
    }

    /// Queues attempt `a` (waited for already) and wakes a waiting claim;
    /// or, when a claim waits on this server whose runner a claim would
    /// give it to, claims it for that runner in the same transaction and
    /// hands it to that claim ([`Handed`]).
    fn queue(self: &Arc<Self>, a: QueuedAttempt) -> Result<()> {
        // The claim a wake would go to first, kept from other wakes while
        // the store decides.
        let chosen = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_for(&a.id.run, &[]);
        let Some(claim) = chosen else {
            self.store.enqueue(&a)?;
            self.queue_changed();
            self.wake(a.id, Vec::new());
            return Ok(());
        };
        let seen = (self.queue_epoch(), std::time::Instant::now());
        // On an error, the claim (its sender dropped) waits again.
        let handed = self.store.enqueue_for(&a, &claim.runner, self.lease_ms)?;
        let id = a.id.clone();
        if !handed {
            self.queue_changed();
            let wake = Wake {
                inner: Some((id, Vec::new())),
                remote: Arc::downgrade(self),
            };
            // A claim gone meanwhile hands the wake on (its `Drop`).
            drop(claim.to.send(Woken::Wake(wake)));
            return Ok(());
        }
        tracing::debug!(attempt = %id, runner = %claim.runner, "handed to a waiting claim");
        self.claimed(&claim.runner, std::slice::from_ref(&id));
        let handed = Handed {
            inner: Some((a, claim.runner)),
            seen,
            remote: Arc::downgrade(self),
        };
        // A claim gone meanwhile puts it back (its `Drop`).
        drop(claim.to.send(Woken::Handed(handed)));
        Ok(())
    }

    /// Puts back in its queue attempt `id`, claimed for `runner` and
    /// handed to a claim that stopped waiting before it took it, and
    /// wakes another waiting claim for it (on a blocking thread when
    /// called on the runtime). When that fails, the claim lapses with
    /// its lease and the node runs again, as for a runner gone.
    fn release(self: &Arc<Self>, id: AttemptId, runner: String) {
        let me = self.clone();
        let work = move || match me.store.release_claim(&id, &runner) {
            Ok(true) => {
                tracing::debug!(attempt = %id, runner, "a hand-off not taken: queued again");
                me.holders
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                me.queue_changed();
                me.wake(id, Vec::new());
            }
            // Withdrawn, superseded or swept meanwhile.
            Ok(false) => {}
            Err(e) => tracing::warn!(
                attempt = %id, runner, error = %e,
                "putting back an attempt its claim did not take failed: it is lost when the claim's lease runs out, and its node runs again"
            ),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// Withdraws attempt `id` when the engine asks it gone through `kill`
    /// (a runner holding it learns from its next heartbeat and kills it);
    /// nothing when the line closes (the attempt ended or was detached).
    fn watch(self: &Arc<Self>, id: AttemptId, mut kill: mpsc::UnboundedReceiver<super::Stop>) {
        let me = self.clone();
        tokio::spawn(async move {
            if kill.recv().await.is_some() {
                if let Some(tx) = me.take(&id) {
                    let gone = id.clone();
                    let remote = me.clone();
                    let runner = tokio::task::spawn_blocking(move || {
                        let _ = remote.store.dequeue(&gone);
                        // The slot of the runner that held it frees.
                        remote.queue_changed();
                        remote.ran_on(&gone)
                    })
                    .await
                    .ok()
                    .flatten();
                    let mut end = AttemptEnd::ended(Exit::Unknown);
                    end.interrupt(Interrupt::Killed);
                    end.runner = runner;
                    let _ = tx.send(Report::Finished { attempt: id, end });
                }
            }
        });
    }

    /// Waits again for attempt `link.id`, queued or claimed before this
    /// engine took its run over (the previous owner stopped or died):
    /// its reports go to `link` from now on. `false` (and nothing waits)
    /// when the attempt will never report: its queue row is gone or
    /// names a later attempt, or its runner lost the claim's lease; the
    /// row is removed then, and the caller runs the node again.
    pub fn reattach(self: &Arc<Self>, link: AttemptLink) -> Result<bool> {
        let AttemptLink {
            id, reports, kill, ..
        } = link;
        // In the map first: a report arriving while the store is asked is
        // not refused as unexpected.
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reports);
        match self.store.lost_claims(std::slice::from_ref(&id)) {
            Ok(lost) if lost.is_empty() => {
                self.watch(id, kill);
                Ok(true)
            }
            Ok(_) => {
                self.take(&id);
                self.queue_changed();
                Ok(false)
            }
            Err(e) => {
                self.take(&id);
                Err(e)
            }
        }
    }

    /// Stops waiting for attempt `id` without withdrawing it: its runner
    /// keeps it, and the engine that takes the run over next re-attaches
    /// to it ([`Remote::reattach`]). `false` when this engine did not wait
    /// for it (it runs here, or it ended).
    pub fn detach(&self, id: &AttemptId) -> bool {
        self.take(id).is_some()
    }

    /// A mutation attempt `id` sent through `runner`: handed to the engine
    /// waiting for it; its answer (ack, or the error) is returned.
    pub async fn mutation(
        &self,
        id: &AttemptId,
        runner: &str,
        mutation: Mutation,
    ) -> std::result::Result<std::result::Result<(), String>, ReportError> {
        self.store.claim_holds(id, runner)?;
        self.held_by(id, runner);
        let tx = self
            .sender(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        let (reply, answer) = oneshot::channel();
        tx.send(Report::Mutation {
            attempt: id.clone(),
            mutation,
            reply,
        })
        .map_err(|_| ReportError::NotWaiting(id.clone()))?;
        answer
            .await
            .map_err(|_| ReportError::NotWaiting(id.clone()))
    }

    /// Log lines of attempt `id` as `runner` streams them: (line number,
    /// stream, text), handed to the engine (which stores them as they
    /// come and shows them to followers).
    pub fn logs(
        &self,
        id: &AttemptId,
        runner: &str,
        lines: Vec<(u32, String, String)>,
    ) -> std::result::Result<(), ReportError> {
        self.store.claim_holds(id, runner)?;
        self.held_by(id, runner);
        let tx = self
            .sender(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        for (line, stream, text) in lines {
            let line = LogLine {
                node: id.node.clone(),
                attempt: id.attempt,
                line,
                stream,
                text,
            };
            tx.send(Report::Log {
                attempt: id.clone(),
                line,
            })
            .map_err(|_| ReportError::NotWaiting(id.clone()))?;
        }
        Ok(())
    }

    /// The end of attempt `id`, reported by `runner`: the claim ends
    /// (fenced) and the engine judges it.
    pub fn end(
        &self,
        id: &AttemptId,
        runner: &str,
        end: WireEnd,
    ) -> std::result::Result<(), ReportError> {
        // Out of the map first: a sweep meanwhile cannot call it lost.
        let tx = self
            .take(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        if let Err(e) = self.store.finish_claim(id, runner) {
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), tx);
            return Err(e.into());
        }
        self.held_by(id, runner);
        let mut end = end.into_end(id);
        end.runner = self.ran_on(id);
        let _ = tx.send(Report::Finished {
            attempt: id.clone(),
            end,
        });
        Ok(())
    }

    /// Ends, as interrupted, every attempt this engine waits for whose
    /// runner lost its lease (or that left the queue): their nodes run
    /// again as their next attempt. Returns them (not those a report
    /// ended while the sweep looked).
    pub fn sweep(&self) -> Result<Vec<AttemptId>> {
        let _turn = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let mut waiting = self.waiting();
        {
            let enqueuing = self.enqueuing.lock().unwrap_or_else(|p| p.into_inner());
            waiting.retain(|id| !enqueuing.contains(id));
        }
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        // Only those this sweep ends: one a report ended meanwhile is not
        // lost, and its node does not run again.
        let mut ended = Vec::new();
        let lost = self.store.lost_claims(&waiting)?;
        if !lost.is_empty() {
            // Their runners' slots free.
            self.queue_changed();
        }
        for id in lost {
            if let Some(tx) = self.take(&id) {
                let mut end = AttemptEnd::ended(Exit::Unknown);
                end.interrupt(Interrupt::Lost(format!(
                    "interrupted: attempt {id} lost its runner (no heartbeat within the {} ms lease); the node runs again",
                    self.lease_ms
                )));
                end.runner = self.ran_on(&id);
                let _ = tx.send(Report::Finished {
                    attempt: id.clone(),
                    end,
                });
                ended.push(id);
            }
        }
        Ok(ended)
    }

    /// Removes the waiting attempts of queue `key`; those this engine
    /// waits for fail (their retries, if any, queue them again).
    pub fn clear(&self, key: &str, by: &str) -> Result<Vec<AttemptId>> {
        let _turn = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let cleared = self.store.clear_queue(key)?;
        for id in &cleared {
            if let Some(tx) = self.take(id) {
                let end = AttemptEnd::broken(format!(
                    "cleared from queue `{key}` by {by} before a runner claimed it"
                ));
                let _ = tx.send(Report::Finished {
                    attempt: id.clone(),
                    end,
                });
            }
        }
        Ok(cleared)
    }
}

/// An executor that sends attempts to runners when they go remote
/// ([`Remote::goes_remote`]) and starts the others with `local`.
pub struct RemoteExecutor {
    remote: Arc<Remote>,
    local: Arc<dyn Executor>,
    /// The files its attempts need on runners (a published workflow's),
    /// or why they cannot be shipped.
    shipment: Option<std::result::Result<Arc<Shipment>, String>>,
}

impl RemoteExecutor {
    /// Attempts go to `remote`'s queue, or to `local`.
    pub fn new(remote: Arc<Remote>, local: Arc<dyn Executor>) -> RemoteExecutor {
        RemoteExecutor {
            remote,
            local,
            shipment: None,
        }
    }

    /// The same executor, shipping the files of `source` (found under
    /// `root`, the run's workflow folder) with every attempt it queues.
    /// When they cannot be shipped (missing, too many, too large), each
    /// attempt that would go to a runner is refused, saying why.
    pub fn shipping(mut self, root: &Path, source: &crate::model::Source) -> RemoteExecutor {
        self.shipment = Some(
            Shipment::new(root, source)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        );
        self
    }
}

impl Executor for RemoteExecutor {
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        let need = spec.task.requires.as_deref().cloned().unwrap_or_default();
        let remote = self
            .remote
            .goes_remote_with(&need, &self.remote.remote_need(&spec.task))
            .map_err(|e| LaunchError::Refused(e.to_string()))?;
        if !remote {
            return self.local.launch(spec, link);
        }
        let shipment = match &self.shipment {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(why)) => return Err(LaunchError::Refused(why.clone())),
        };
        self.remote
            .enqueue(&spec, link, shipment)
            .map_err(|e| LaunchError::Refused(e.to_string()))?;
        Ok(None)
    }

    fn not_ready(
        &self,
        task: &Task,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.local.not_ready(task)
    }

    fn clean_up_run(&self, run: &str) -> Result<Vec<String>, String> {
        self.local.clean_up_run(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::{RunnerRecord, RunnerSpec};
    use std::time::Duration;

    fn record(labels: &[&str], lease_until_ms: i64, now_ms: i64, draining: bool) -> RunnerRecord {
        let offer = Offer {
            cpu: 4.0,
            memory: None,
            gpu: 0,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        RunnerRecord {
            spec: RunnerSpec::new("id", "r", offer, 4, "0"),
            registered_ms: 0,
            lease_until_ms,
            draining,
            running: 0,
            alive: lease_until_ms >= now_ms,
        }
    }

    fn need(labels: &[&str]) -> Resources {
        Resources {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..Resources::default()
        }
    }

    #[test]
    fn a_read_runner_list_serves_while_fresh_and_leased() {
        let list = RunnerList::new(&[record(&["ssd"], 10_500, 10_000, false)], 10_000);
        assert!(list.serves_after(&need(&["ssd"]), Duration::ZERO));
        assert!(list.serves_after(&need(&[]), Duration::from_millis(400)));
        // Its lease ran out by the store's clock, counted on.
        assert!(!list.serves_after(&need(&["ssd"]), Duration::from_millis(501)));
        // A label it does not offer.
        assert!(!list.serves_after(&need(&["gpu-box"]), Duration::ZERO));
        // Too old to decide, whatever the lease.
        let long = RunnerList::new(&[record(&[], 1_000_000, 10_000, false)], 10_000);
        assert!(long.serves_after(&need(&[]), RUNNERS_FRESH - Duration::from_millis(1)));
        assert!(!long.serves_after(&need(&[]), RUNNERS_FRESH));
    }

    /// Whether `w` got a wake by now (without waiting).
    fn woken(w: &mut Waiting) -> Option<Wake> {
        match w.woken.try_recv().ok()? {
            Woken::Wake(wake) => Some(wake),
            Woken::Handed(h) => panic!("a wake expected, got {h:?}"),
        }
    }

    /// Whether `w` was handed an attempt by now (without waiting).
    fn handed(w: &mut Waiting) -> Option<Handed> {
        match w.woken.try_recv().ok()? {
            Woken::Handed(h) => Some(h),
            Woken::Wake(wake) => panic!("an attempt expected, got {wake:?}"),
        }
    }

    #[test]
    fn a_queued_attempt_goes_to_a_waiting_claim_and_back_when_it_left() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap());
        for (id, labels) in [("ra", &[][..]), ("rb", &[][..]), ("rg", &["gpu"][..])] {
            let offer = Offer {
                cpu: 4.0,
                memory: None,
                gpu: 0,
                labels: labels.iter().map(|l| l.to_string()).collect(),
            };
            store
                .register_runner(&RunnerSpec::new(id, id, offer, 4, "0"), 60_000)
                .unwrap();
        }
        let remote = Arc::new(Remote::new(store.clone(), 15_000));
        let wait_for = |node: &str| {
            let id = AttemptId::new("run", node, 1);
            let (tx, rx) = mpsc::unbounded_channel();
            remote.waiting.lock().unwrap().insert(id.clone(), tx);
            (id, rx)
        };
        let queued = |id: &AttemptId, labels: &[&str]| {
            QueuedAttempt::new(id.clone(), need(labels), "{}".into())
        };
        // A claim waits: the attempt is claimed for its runner and handed
        // to it; the other claim hears nothing.
        let (a, _ra) = wait_for("a");
        let mut ca = remote.wait_for_attempts("ra");
        let mut cb = remote.wait_for_attempts("rb");
        remote.queue(queued(&a, &[])).unwrap();
        let h = handed(&mut ca).expect("handed to the claim that waited longest");
        assert!(woken(&mut cb).is_none());
        assert_eq!(h.take(4).id, a);
        store.claim_holds(&a, "ra").unwrap();
        // As a read that came up short: its next claim need not read.
        assert!(remote.may_wait("ra").is_some());
        assert_eq!(
            remote.holders.lock().unwrap().get(&a).map(|r| r.as_str()),
            Some("ra")
        );
        // The runner that waits does not fit: it is woken to read, as
        // before, and the attempt waits in the queue.
        let (g, _rg) = wait_for("g");
        remote.queue(queued(&g, &["gpu"])).unwrap();
        let wake = woken(&mut cb).expect("woken, not handed");
        assert!(store.claim_holds(&g, "rb").is_err());
        drop(wake);
        assert_eq!(store.claim("rg", 4, 15_000).unwrap().len(), 1);
        // The claim left before it took the attempt handed to it: put
        // back in the queue, and another waiting claim is woken for it.
        let ca = remote.wait_for_attempts("ra");
        let mut cb = remote.wait_for_attempts("rb");
        let (c, _rc) = wait_for("c");
        remote.queue(queued(&c, &[])).unwrap();
        assert!(store.claim_holds(&c, "ra").is_ok());
        drop(ca);
        let e = store.claim_holds(&c, "ra").unwrap_err();
        assert!(e.to_string().contains("waits in its queue"), "{e}");
        assert!(!remote.holders.lock().unwrap().contains_key(&c));
        let wake = woken(&mut cb).expect("another claim woken for it");
        // (`rb` would leave it to the runners serving its run.)
        let got = store.claim("ra", 4, 15_000).unwrap();
        assert_eq!(got.iter().map(|q| &q.id).collect::<Vec<_>>(), [&c]);
        drop(wake);
    }

    #[test]
    fn a_queued_attempt_wakes_one_claim_and_the_wake_goes_on_until_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
        let remote = Arc::new(Remote::new(Arc::new(store), 15_000));
        let id = AttemptId::new("run", "a", 1);
        let (tx, _rx) = mpsc::unbounded_channel();
        remote.waiting.lock().unwrap().insert(id.clone(), tx);
        let mut a = remote.wait_for_attempts("ra");
        let mut b = remote.wait_for_attempts("rb");
        let mut c = remote.wait_for_attempts("rc");
        remote.wake(id.clone(), Vec::new());
        // One claim, the one that waited longest.
        let wake = woken(&mut a).expect("the first claim is woken");
        assert!(woken(&mut b).is_none() && woken(&mut c).is_none());
        // Its read did not take the attempt: the next runner's claim.
        let mut a2 = remote.wait_for_attempts("ra");
        wake.declined_by("ra");
        let wake = woken(&mut b).expect("handed on");
        // A claim that stops waiting hands on a wake it got: not to the
        // runner that declined it.
        drop(wake);
        assert!(woken(&mut a2).is_none());
        let mut d = remote.wait_for_attempts("rd");
        let mut b2 = remote.wait_for_attempts("rb");
        assert!(woken(&mut d).is_none());
        drop(c);
        let wake = woken(&mut d).expect("handed on by the claim that stopped waiting");
        // Every runner waiting declined: the wake ends.
        wake.declined_by("rd");
        let wake = woken(&mut b2).expect("rb did not decline it");
        wake.declined_by("rb");
        assert!(woken(&mut a2).is_none());
        // Claimed through this server: a wake for it ends at once, and
        // the runner is the one its run's next attempts wake first.
        let mut e = remote.wait_for_attempts("re");
        remote.claimed("rb", std::slice::from_ref(&id));
        remote.wake(id.clone(), Vec::new());
        assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
        let next = AttemptId::new("run", "b", 1);
        let (tx, _rx2) = mpsc::unbounded_channel();
        remote.waiting.lock().unwrap().insert(next.clone(), tx);
        let mut b3 = remote.wait_for_attempts("rb");
        remote.wake(next.clone(), Vec::new());
        let wake = woken(&mut b3).expect("the run's last runner is woken first");
        assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
        // It took it: the wake ends there.
        remote.claimed("rb", std::slice::from_ref(&next));
        wake.declined_by("rb");
        assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
        // Gone: a dropped claim leaves the list.
        drop((a, d, e, a2, b3));
        assert!(remote.claims.lock().unwrap().is_empty());
    }

    #[test]
    fn a_claim_after_a_short_read_waits_until_something_changes_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
        let remote = Remote::new(Arc::new(store), 15_000);
        let now = std::time::Instant::now;
        remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
        assert!(remote.may_wait("ra").is_some());
        assert!(remote.may_wait("rb").is_none());
        // Its heartbeat or an end of its: it reads.
        remote.runner_changed("ra");
        assert!(remote.may_wait("ra").is_none());
        // A runner drained through this server: every runner reads.
        remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
        remote.runners_changed();
        assert!(remote.may_wait("ra").is_none());
        // Another runner took an attempt: it reads too; the taker not.
        remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
        remote.looked("rb", remote.queue_epoch(), now(), 1, 4);
        assert!(remote.may_wait("ra").is_none());
        assert!(remote.may_wait("rb").is_some());
    }

    #[test]
    fn draining_and_dead_runners_serve_nothing() {
        let list = RunnerList::new(
            &[
                record(&[], 20_000, 10_000, true),
                record(&[], 9_000, 10_000, false),
            ],
            10_000,
        );
        assert!(!list.serves_after(&need(&[]), Duration::ZERO));
    }
}
