//! When a runner's claim need not read the queue.
//!
//! A runner asks again as soon as a claim answered, and in a chain of
//! tasks that next claim nearly always reads an empty queue: one store
//! transaction a task, for nothing. This server knows what it changed:
//! [`Looks`] counts the changes made through it that can give a runner
//! more (an attempt queued, an attempt withdrawn or a lost claim swept, a
//! runner drained, a claim taken by another runner: the queue's
//! *epoch*), and remembers, for each runner, the epoch and the moment
//! at which its last read found less than it asked for. A claim of that
//! runner that comes within [`LOOK_AGAIN`] of that read, the epoch
//! unchanged, waits without reading; it reads when it is woken, and at
//! the latest [`LOOK_AGAIN`] after that last read, as a waiting claim
//! looks anyway. What this server cannot see (an attempt another server
//! queued, a rival runner whose lease ran out) is found by that look,
//! as before: no later than a waiting claim would have found it.
//! A runner's own changes (its heartbeat renewing its lease, the end of
//! one of its claims freeing a slot) make its next claim read.

use std::collections::HashMap;
use std::time::Instant;

pub(crate) use super::remote::LOOK_AGAIN;

/// The most runners whose last empty read is remembered (a runner not
/// remembered reads, as before).
pub(crate) const MAX_RUNNERS: usize = 1024;

/// The queue's epoch on this server and each runner's last read that
/// came up short.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    epoch: u64,
    /// Per runner: the epoch its read began at, and when it began.
    short: HashMap<String, (u64, Instant)>,
}

impl Looks {
    /// The epoch now: take it before a read ([`Looks::read`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Something changed through this server that may give a runner more
    /// than its last read found.
    pub(crate) fn changed(&mut self) {
        self.epoch += 1;
    }

    /// Something changed for `runner` alone (its lease renewed, a slot of
    /// its freed): its next claim reads.
    pub(crate) fn forget(&mut self, runner: &str) {
        self.short.remove(runner);
    }

    /// `runner` read the queue, beginning at `at` when the epoch was
    /// `before`, and took `took` of the `asked` attempts it asked for.
    /// Taking attempts changes what other runners may take (a rival with
    /// fewer free slots holds fewer back): the epoch moves on, but not
    /// for this runner, unless something else changed during its read.
    pub(crate) fn read(
        &mut self,
        runner: &str,
        before: u64,
        at: Instant,
        took: usize,
        asked: usize,
    ) {
        let mut seen = before;
        if took > 0 {
            if self.epoch == before {
                seen += 1;
            }
            self.changed();
        }
        if took >= asked {
            // It may have left more behind.
            self.short.remove(runner);
            return;
        }
        if self.short.len() >= MAX_RUNNERS && !self.short.contains_key(runner) {
            self.short
                .retain(|_, (_, when)| at.saturating_duration_since(*when) < LOOK_AGAIN);
            if self.short.len() >= MAX_RUNNERS {
                return;
            }
        }
        self.short.insert(runner.to_string(), (seen, at));
    }

    /// Whether a claim of `runner` at `now` may wait without reading: the
    /// moment its look is due (its last read and [`LOOK_AGAIN`]), or
    /// `None` when it must read now.
    pub(crate) fn may_wait(&self, runner: &str, now: Instant) -> Option<Instant> {
        let (epoch, at) = self.short.get(runner)?;
        let due = *at + LOOK_AGAIN;
        (*epoch == self.epoch && now < due).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_short_read_stands_until_the_epoch_moves_or_the_look_is_due() {
        let t = Instant::now();
        let mut l = Looks::default();
        assert_eq!(l.may_wait("a", t), None);
        let e = l.epoch();
        l.read("a", e, t, 0, 4);
        assert_eq!(l.may_wait("a", t), Some(t + LOOK_AGAIN));
        assert_eq!(
            l.may_wait("a", t + LOOK_AGAIN - Duration::from_millis(1)),
            Some(t + LOOK_AGAIN)
        );
        assert_eq!(l.may_wait("a", t + LOOK_AGAIN), None);
        // Another runner never read: it reads.
        assert_eq!(l.may_wait("b", t), None);
        // An attempt queued: everybody reads.
        l.changed();
        assert_eq!(l.may_wait("a", t), None);
    }

    #[test]
    fn a_read_that_took_all_it_asked_for_reads_again() {
        let t = Instant::now();
        let mut l = Looks::default();
        l.read("a", 0, t, 0, 1);
        assert!(l.may_wait("a", t).is_some());
        let e = l.epoch();
        l.read("a", e, t, 2, 2);
        assert_eq!(l.may_wait("a", t), None);
    }

    #[test]
    fn a_take_moves_the_epoch_for_the_others_only() {
        let t = Instant::now();
        let mut l = Looks::default();
        l.read("b", l.epoch(), t, 0, 4);
        let e = l.epoch();
        l.read("a", e, t, 1, 4);
        // Its own take does not make `a` read again...
        assert_eq!(l.may_wait("a", t), Some(t + LOOK_AGAIN));
        // ... but `b` (a rival now holds fewer back).
        assert_eq!(l.may_wait("b", t), None);
    }

    #[test]
    fn a_change_during_the_read_makes_the_next_claim_read() {
        let t = Instant::now();
        let mut l = Looks::default();
        // Empty read, an attempt queued while it read.
        let e = l.epoch();
        l.changed();
        l.read("a", e, t, 0, 4);
        assert_eq!(l.may_wait("a", t), None);
        // The same with a take.
        let e = l.epoch();
        l.changed();
        l.read("a", e, t, 1, 4);
        assert_eq!(l.may_wait("a", t), None);
    }

    #[test]
    fn a_runners_own_change_forgets_its_read() {
        let t = Instant::now();
        let mut l = Looks::default();
        l.read("a", 0, t, 0, 4);
        l.read("b", 0, t, 0, 4);
        l.forget("a");
        assert_eq!(l.may_wait("a", t), None);
        assert!(l.may_wait("b", t).is_some());
    }

    #[test]
    fn the_runners_remembered_are_bounded() {
        let t = Instant::now();
        let mut l = Looks::default();
        for i in 0..MAX_RUNNERS {
            l.read(&format!("r{i}"), 0, t, 0, 1);
        }
        // Full of fresh reads: a new one is not remembered (it reads).
        l.read("new", 0, t, 0, 1);
        assert_eq!(l.may_wait("new", t), None);
        assert_eq!(l.short.len(), MAX_RUNNERS);
        // Once they are stale, they make room.
        let later = t + LOOK_AGAIN;
        l.read("new", 0, later, 0, 1);
        assert_eq!(l.may_wait("new", later), Some(later + LOOK_AGAIN));
        assert_eq!(l.short.len(), 1);
    }
}
