//! Which long-polling claim an attempt queued on this server wakes.
//!
//! Each queued attempt wakes **one** waiting claim, not all of them (with
//! four runners, three of four woken claims used to run a claim
//! transaction that found nothing). The wake goes to the claim of the
//! runner that last claimed an attempt of the same run through this
//! server, if it waits (the store's `pick` leaves a run's attempts to
//! that runner anyway), else to the claim that has waited longest. A
//! woken claim reads the queue; when its read does not take the attempt
//! (its requirements do not fit, the runner is full, or `pick` leaves it
//! to another runner) the wake goes on to a claim of a runner that has
//! not declined it yet, and ends when every waiting runner has. A wake
//! whose attempt was claimed through this server, or that this server no
//! longer waits for, ends at once. A claim that stops waiting (its long
//! poll ran out, its connection dropped) passes on a wake it holds
//! undecided. An attempt whose wake ended unclaimed is found by the next
//! claim's read (a claim reads before it waits) or by a waiting claim's
//! look every half second.

use std::collections::VecDeque;

/// How many runs the choice of a wake remembers the last claiming runner
/// of (most recent first).
pub(crate) const MAX_RECENT: usize = 128;

/// A waiting claim: its key (to leave the list) and its runner.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    pub(crate) key: u64,
    pub(crate) runner: String,
    pub(crate) to: T,
}

/// The claims waiting on this server, in the order they began to wait,
/// and the runner that last claimed from each recent run.
#[derive(Debug)]
pub(crate) struct Waiters<T> {
    next: u64,
    list: VecDeque<Waiter<T>>,
    recent: VecDeque<(String, String)>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            next: 0,
            list: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }
}

impl<T> Waiters<T> {
    /// Adds a claim of `runner`, reached through `to`; its key.
    pub(crate) fn add(&mut self, runner: &str, to: T) -> u64 {
        self.next += 1;
        self.list.push_back(Waiter {
            key: self.next,
            runner: runner.to_string(),
            to,
        });
        self.next
    }

    /// Removes the claim of key `key`, if it still waits.
    pub(crate) fn remove(&mut self, key: u64) -> Option<Waiter<T>> {
        let i = self.list.iter().position(|w| w.key == key)?;
        self.list.remove(i)
    }

    /// No claim waits.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Notes that `runner` claimed an attempt of `run`.
    pub(crate) fn claimed(&mut self, run: &str, runner: &str) {
        if let Some(i) = self.recent.iter().position(|(r, _)| r == run) {
            self.recent.remove(i);
        }
        self.recent
            .push_front((run.to_string(), runner.to_string()));
        self.recent.truncate(MAX_RECENT);
    }

    /// Takes the claim a wake for an attempt of `run` goes to: of the
    /// claims whose runner is not in `declined`, the one of the runner
    /// that last claimed from `run`, else the one that waited longest.
    pub(crate) fn take_for(&mut self, run: &str, declined: &[String]) -> Option<Waiter<T>> {
        let open = |w: &&Waiter<T>| !declined.contains(&w.runner);
        let last = self
            .recent
            .iter()
            .find(|(r, _)| r == run)
            .map(|(_, runner)| runner.as_str());
        let chosen = last
            .and_then(|last| self.list.iter().filter(open).find(|w| w.runner == last))
            .or_else(|| self.list.iter().find(open))?
            .key;
        self.remove(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runners(w: &Waiters<()>) -> Vec<&str> {
        w.list.iter().map(|w| w.runner.as_str()).collect()
    }

    #[test]
    fn a_wake_goes_to_the_claim_that_waited_longest() {
        let mut w = Waiters::default();
        for r in ["a", "b", "c"] {
            w.add(r, ());
        }
        assert_eq!(w.take_for("run", &[]).map(|w| w.runner), Some("a".into()));
        assert_eq!(w.take_for("run", &[]).map(|w| w.runner), Some("b".into()));
        assert_eq!(runners(&w), ["c"]);
    }

    #[test]
    fn a_wake_prefers_the_runner_that_claimed_from_its_run_last() {
        let mut w = Waiters::default();
        for r in ["a", "b", "c"] {
            w.add(r, ());
        }
        w.claimed("run1", "a");
        w.claimed("run1", "c");
        w.claimed("run2", "b");
        assert_eq!(w.take_for("run1", &[]).map(|w| w.runner), Some("c".into()));
        // Not waiting (its claim was taken), the longest waiting one.
        assert_eq!(w.take_for("run1", &[]).map(|w| w.runner), Some("a".into()));
        assert_eq!(w.take_for("run2", &[]).map(|w| w.runner), Some("b".into()));
        assert!(w.take_for("run2", &[]).is_none());
    }

    #[test]
    fn a_wake_skips_the_runners_that_declined_it_and_ends_with_them() {
        let mut w = Waiters::default();
        let a = w.add("a", ());
        w.add("b", ());
        w.add("a", ());
        w.claimed("run", "a");
        let declined = vec!["a".to_string()];
        assert_eq!(
            w.take_for("run", &declined).map(|w| w.runner),
            Some("b".into())
        );
        // Only claims of runners that declined wait: the wake ends.
        assert!(w.take_for("run", &declined).is_none());
        assert_eq!(runners(&w), ["a", "a"]);
        assert_eq!(w.remove(a).map(|w| w.key), Some(a));
        assert!(w.remove(a).is_none());
    }

    #[test]
    fn recent_runs_are_bounded() {
        let mut w: Waiters<()> = Waiters::default();
        for i in 0..(MAX_RECENT + 10) {
            w.claimed(&format!("run{i}"), "a");
        }
        w.claimed("run20", "b");
        assert_eq!(w.recent.len(), MAX_RECENT);
        assert_eq!(w.recent[0], ("run20".to_string(), "b".to_string()));
        w.add("a", ());
        w.add("b", ());
        assert_eq!(w.take_for("run20", &[]).map(|w| w.runner), Some("b".into()));
        // Forgotten: the longest waiting.
        w.add("b", ());
        assert_eq!(w.take_for("run0", &[]).map(|w| w.runner), Some("a".into()));
    }
}
