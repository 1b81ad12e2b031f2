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
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::looks::Looks;
use super::resources::Offer;
use super::wake::Waiters;
use super::{AttemptId, Report, Stop};
use crate::error::Result;
use crate::model::{Resources, Task};
use crate::store::Store;

mod attempts;
mod claims;
mod executor;
mod looks;
mod reports;
#[cfg(test)]
mod tests;
mod wire;

pub use claims::{Handed, Waiting, Wake, Woken};
pub use executor::RemoteExecutor;
pub use looks::LOOK_AGAIN;
#[cfg(any(feature = "server", feature = "client"))]
pub use wire::binary_label;
pub use wire::{
    artefact_dir, check_relative, lease_ms, ReportError, Shipment, WireEnd, WireFile, WireSpec,
    BINARY_LABEL, DEFAULT_LEASE_MS, LEASE_ENV, MAX_ARTEFACT, MAX_ARTEFACTS, MAX_LEASE_MS,
    MAX_SHIPPED_BYTES, MAX_SHIPPED_FILE, MAX_SHIPPED_FILES, MIN_LEASE_MS,
};

/// How long the runners read for one launch decide the next ones: a
/// launch that a runner read less than this long ago serves (its lease
/// still holding by the store's clock, counted on) goes to the queue
/// without reading the runners again. Only that answer is kept: a launch
/// no known runner serves reads them again, so a runner that just
/// registered is seen at once; a runner asked to drain through another
/// server is seen within this long (through this one, at once:
/// [`Remote::runners_changed`]).
pub const RUNNERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

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
    pub(super) fn remote_need(&self, task: &Task) -> Resources {
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

    /// Whether an attempt needing `need` goes to the queue: a live runner
    /// that is not draining satisfies it, or this machine cannot.
    pub fn goes_remote(&self, need: &Resources) -> Result<bool> {
        self.goes_remote_with(need, need)
    }

    /// Whether an attempt goes to the queue: this machine cannot give it
    /// `here` (its own requirements), or a live runner that is not
    /// draining satisfies `there` (what it requires of a runner).
    pub(super) fn goes_remote_with(&self, here: &Resources, there: &Resources) -> Result<bool> {
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
}
