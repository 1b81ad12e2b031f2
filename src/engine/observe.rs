//! Observers of committed events: the live picture, log followers, tests
//! waiting for a state. The run loop calls them after each commit, with
//! the state as of that commit, so nothing polls the store for what
//! happens in this process.

use std::sync::Mutex;

use crate::history::{Event, LogLine, RunState};
use crate::picture::live::LivePicture;

/// Sees every commit of the runs an engine drives
/// ([`super::Engine::observe`]). Called on the run's task right after the
/// commit, in commit order per run: keep it quick (hand heavy work to a
/// thread or a channel).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use orch::engine::Observer;
/// use orch::{Event, RunState};
///
/// /// Counts the events of every run.
/// #[derive(Default)]
/// struct Count(Mutex<usize>);
/// impl Observer for Count {
///     fn committed(&self, _state: &RunState, events: &[Event]) {
///         *self.0.lock().unwrap() += events.len();
///     }
/// }
/// let count = Arc::new(Count::default());
/// # let _: Arc<dyn Observer> = count;
/// ```
pub trait Observer: Send + Sync {
    /// `events` were committed; `state` is the run's state including them.
    fn committed(&self, state: &RunState, events: &[Event]);

    /// The run has been idle for a moment: no attempt runs and nothing
    /// happened for 50 ms (it waits for input, a signal, a backoff, an
    /// unpause), with everything committed; `state` is its state. Called
    /// on the run's task once per such quiet spell: a place to catch up on
    /// work skipped for pacing.
    fn idle(&self, state: &RunState) {
        let _ = state;
    }

    /// A task of run `run` wrote `line`, not committed yet: lines are
    /// written to the store in batches while the attempt runs (within
    /// 200 ms, or with the next commit). Called on the run's task as lines
    /// arrive.
    fn log(&self, run: &str, line: &LogLine) {
        let _ = (run, line);
    }
}

/// The live picture as an observer of its run.
pub(crate) struct Picture(pub(crate) Mutex<LivePicture>);

impl Observer for Picture {
    fn committed(&self, state: &RunState, _events: &[Event]) {
        let mut p = self.0.lock().unwrap_or_else(|p| p.into_inner());
        p.update(state, state.status.is_terminal());
    }

    /// A redraw the pacing skipped is drawn now: the picture of a run that
    /// waits (for input, say) shows it waiting.
    fn idle(&self, state: &RunState) {
        let mut p = self.0.lock().unwrap_or_else(|p| p.into_inner());
        p.catch_up(state);
    }
}
