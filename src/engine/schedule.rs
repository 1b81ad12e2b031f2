//! Scheduling decisions, as pure functions of what the run loop knows:
//! when a node is ready, whether the loop may start anything, when the run
//! is over, and with which status. The loop does the I/O around them.

use crate::model::{NodeState, RunStatus};

/// The state a node moves to as its predecessors and gates say, or
/// `None` when it stays: a pending node becomes ready once no predecessor
/// is unmet, no unfilled shape region ending at it gates it and no retry
/// backoff holds it; a ready node goes back to pending when one of those
/// appears (an edge added into it, a region it now closes).
///
/// ```
/// use orch::engine::schedule::readiness;
/// use orch::NodeState;
///
/// assert_eq!(readiness(NodeState::Pending, 0, false, false), Some(NodeState::Ready));
/// assert_eq!(readiness(NodeState::Pending, 1, false, false), None);
/// assert_eq!(readiness(NodeState::Ready, 0, true, false), Some(NodeState::Pending));
/// ```
pub fn readiness(
    state: NodeState,
    unmet: u32,
    gated: bool,
    backing_off: bool,
) -> Option<NodeState> {
    match state {
        NodeState::Pending if unmet == 0 && !gated && !backing_off => Some(NodeState::Ready),
        NodeState::Ready if unmet > 0 || gated => Some(NodeState::Pending),
        _ => None,
    }
}

/// Why a run stops starting attempts, if it does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Halt {
    /// A node failed for good: the reason.
    pub failure: Option<String>,
    /// A promise was broken: the violation.
    pub broken: Option<String>,
    /// The run is being cancelled.
    pub cancelling: bool,
    /// The engine is stopping: nothing new starts; the run stays
    /// resumable.
    pub shutdown: bool,
}

impl Halt {
    /// True while nothing stops the run.
    pub fn going(&self) -> bool {
        self.failure.is_none() && self.broken.is_none() && !self.cancelling && !self.shutdown
    }
}

/// What the loop is waiting for besides reports of running attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Attempts running.
    pub running: usize,
    /// The run is paused (and not being cancelled).
    pub paused: bool,
    /// Nodes wait for input.
    pub waiting: bool,
    /// Nodes wait out a retry backoff.
    pub backing_off: bool,
    /// Ready nodes wait for the executor to get ready.
    pub holding: bool,
}

/// True when the run is over: nothing runs, and nothing it waits for
/// (a pause, an input, a backoff, the executor) can still start a node.
/// Waits other than a pause end with the run once it halts.
///
/// ```
/// use orch::engine::schedule::{over, Halt, Pending};
///
/// let mut p = Pending::default();
/// assert!(over(&Halt::default(), &p));
/// p.waiting = true;
/// assert!(!over(&Halt::default(), &p));
/// let cancel = Halt { cancelling: true, ..Halt::default() };
/// assert!(over(&cancel, &p), "a cancelled run stops waiting for input");
/// ```
pub fn over(halt: &Halt, p: &Pending) -> bool {
    let going = halt.going();
    p.running == 0
        && (!p.paused || halt.cancelling || halt.shutdown)
        && !(p.waiting && going)
        && !(p.backing_off && going)
        && !(p.holding && going)
}

/// True when the loop may start another attempt now.
pub fn may_start(halt: &Halt, status: RunStatus, running: usize, max_parallel: usize) -> bool {
    halt.going() && status == RunStatus::Running && running < max_parallel
}

/// The final status of a run that is over, with its reason: cancelled,
/// else the broken promise, else the failure, else succeeded when every
/// node did, else failed naming (up to ten of) the nodes that never
/// finished.
///
/// ```
/// use orch::engine::schedule::{final_status, Halt};
/// use orch::{NodeState, RunStatus};
///
/// let ok = final_status(&Halt::default(), [("a", NodeState::Succeeded)]);
/// assert_eq!(ok, (RunStatus::Succeeded, None));
/// let stuck = final_status(&Halt::default(), [("a", NodeState::Succeeded), ("b", NodeState::Pending)]);
/// assert_eq!(stuck, (RunStatus::Failed, Some("no node can start; unfinished: b".into())));
/// ```
pub fn final_status<'a>(
    halt: &Halt,
    nodes: impl IntoIterator<Item = (&'a str, NodeState)>,
) -> (RunStatus, Option<String>) {
    if halt.cancelling {
        return (
            RunStatus::Cancelled,
            Some("cancelled on request".to_string()),
        );
    }
    if let Some(b) = &halt.broken {
        return (RunStatus::PromiseBroken, Some(b.clone()));
    }
    if let Some(f) = &halt.failure {
        return (RunStatus::Failed, Some(f.clone()));
    }
    let stuck: Vec<&str> = nodes
        .into_iter()
        .filter(|(_, s)| *s != NodeState::Succeeded)
        .map(|(id, _)| id)
        .take(10)
        .collect();
    if stuck.is_empty() {
        (RunStatus::Succeeded, None)
    } else {
        (
            RunStatus::Failed,
            Some(format!(
                "no node can start; unfinished: {}",
                stuck.join(", ")
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_predecessors_gates_and_backoff() {
        use NodeState::*;
        assert_eq!(readiness(Pending, 0, false, true), None, "backing off");
        assert_eq!(readiness(Pending, 0, true, false), None, "gated");
        assert_eq!(readiness(Ready, 1, false, false), Some(Pending));
        assert_eq!(
            readiness(Ready, 0, false, true),
            None,
            "a ready node stays ready"
        );
        for s in [Running, Waiting, Succeeded, Failed, Cancelled] {
            assert_eq!(readiness(s, 0, false, false), None, "{s:?}");
        }
    }

    #[test]
    fn a_paused_run_is_never_over_unless_cancelled() {
        let p = Pending {
            paused: true,
            ..Pending::default()
        };
        assert!(!over(&Halt::default(), &p));
        let failed = Halt {
            failure: Some("x".into()),
            ..Halt::default()
        };
        assert!(!over(&failed, &p), "a failed run still waits for unpause");
        let cancel = Halt {
            cancelling: true,
            ..Halt::default()
        };
        assert!(over(&cancel, &p));
        let running = Pending {
            running: 1,
            ..Pending::default()
        };
        assert!(!over(&cancel, &running), "running attempts report first");
    }

    #[test]
    fn halts_stop_starts_and_order_the_final_status() {
        let both = Halt {
            failure: Some("f".into()),
            broken: Some("b".into()),
            ..Halt::default()
        };
        let shutdown = Halt {
            shutdown: true,
            ..Halt::default()
        };
        assert!(!may_start(&shutdown, RunStatus::Running, 0, 1));
        let waiting_paused = Pending {
            paused: true,
            waiting: true,
            ..Pending::default()
        };
        assert!(
            over(&shutdown, &waiting_paused),
            "a stopping engine waits for nothing but its attempts"
        );
        assert!(!may_start(&both, RunStatus::Running, 0, 1));
        assert!(!may_start(&Halt::default(), RunStatus::Paused, 0, 1));
        assert!(!may_start(&Halt::default(), RunStatus::Running, 2, 2));
        assert!(may_start(&Halt::default(), RunStatus::Running, 1, 2));
        assert_eq!(
            final_status(&both, []),
            (RunStatus::PromiseBroken, Some("b".into()))
        );
        let many: Vec<(String, NodeState)> = (0..12)
            .map(|i| (format!("n{i}"), NodeState::Pending))
            .collect();
        let (_, reason) = final_status(
            &Halt::default(),
            many.iter().map(|(id, s)| (id.as_str(), *s)),
        );
        assert_eq!(
            reason.unwrap(),
            "no node can start; unfinished: n0, n1, n2, n3, n4, n5, n6, n7, n8, n9"
        );
    }
}
