//! Waiting claims, their wakes and hand-offs.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::Remote;
use crate::error::Result;
use crate::exec::AttemptId;
use crate::store::queue::QueuedAttempt;

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
    pub(super) woken: oneshot::Receiver<Woken>,
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

impl Remote {
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
    pub(super) fn wake(self: &Arc<Self>, mut attempt: AttemptId, mut declined: Vec<String>) {
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

    /// Queues attempt `a` (waited for already) and wakes a waiting claim;
    /// or, when a claim waits on this server whose runner a claim would
    /// give it to, claims it for that runner in the same transaction and
    /// hands it to that claim ([`Handed`]).
    pub(super) fn queue(self: &Arc<Self>, a: QueuedAttempt) -> Result<()> {
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
}
