//! The looks of runners' claims at the queue.

use super::{Looks, Remote};

/// How often a long-polling claim that was not woken looks at the queue
/// again (an attempt another server queued, a rival runner gone), and
/// how long a read that came up short stands for its runner's next
/// claim when nothing changed through this server since
/// ([`Remote::may_wait`]).
pub const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(500);

impl Remote {
    fn looks(&self) -> std::sync::MutexGuard<'_, Looks> {
        self.looks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed through this server that may give a runner's
    /// claim more than its last read found.
    pub(super) fn queue_changed(&self) {
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
}
