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
    /// The nodes that failed for good, each as its reason (in order).
    pub failures: Vec<String>,
    /// The run keeps going past failures ([`crate::model::FailurePolicy::KeepGoing`]):
    /// only what depends on a failed node is held back.
    pub keep_going: bool,
    /// A promise was broken: the violation.
    pub broken: Option<String>,
    /// The run is being cancelled.
    pub cancelling: bool,
    /// The engine is stopping: nothing new starts; the run stays
    /// resumable.
    pub shutdown: bool,
}

impl Halt {
    /// True while nothing stops the run: no failure (or the run keeps
    /// going past them), no broken promise, no cancel, no shutdown.
    ///
    /// ```
    /// use orch::engine::schedule::Halt;
    /// let failed = Halt { failures: vec!["node `a` failed".into()], ..Halt::default() };
    /// assert!(!failed.going());
    /// assert!(Halt { keep_going: true, ..failed }.going());
    /// ```
    pub fn going(&self) -> bool {
        !self.stopped_by_failure() && self.broken.is_none() && !self.cancelling && !self.shutdown
    }

    /// True once a failure stops the run (failing fast): retries of other
    /// nodes are given up too.
    pub fn stopped_by_failure(&self) -> bool {
        !self.failures.is_empty() && !self.keep_going
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

/// How many names a reason lists before it counts the rest.
const NAMED: usize = 10;

/// `items` joined with `sep`, the first [`NAMED`] of them, then how many
/// more there are.
fn named(items: &[impl AsRef<str>], sep: &str) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(sep);
    if items.len() > NAMED {
        text.push_str(&format!("{sep}and {} more", items.len() - NAMED));
    }
    text
}

/// The final status of a run that is over, with its reason: cancelled,
/// else the broken promise, else the failures (every one named, and how
/// many nodes they held back), else succeeded when every node did, else
/// failed naming the nodes that failed earlier and those that never
/// finished (up to ten of each).
///
/// ```
/// use orch::engine::schedule::{final_status, Halt};
/// use orch::{NodeState, RunStatus};
///
/// let ok = final_status(&Halt::default(), [("a", NodeState::Succeeded)]);
/// assert_eq!(ok, (RunStatus::Succeeded, None));
/// let stuck = final_status(&Halt::default(), [("a", NodeState::Succeeded), ("b", NodeState::Pending)]);
/// assert_eq!(stuck, (RunStatus::Failed, Some("no node can start; unfinished: b".into())));
/// let two = Halt { failures: vec!["node `a` failed".into(), "node `b` failed".into()], keep_going: true, ..Halt::default() };
/// let (status, reason) = final_status(&two, [("c", NodeState::UpstreamFailed)]);
/// assert_eq!(status, RunStatus::Failed);
/// assert_eq!(reason.unwrap(), "2 nodes failed: node `a` failed; node `b` failed (1 node upstream_failed)");
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
    let mut failed = Vec::new();
    let mut held_back = 0usize;
    let mut stuck = Vec::new();
    for (id, state) in nodes {
        match state {
            NodeState::Succeeded => {}
            NodeState::Failed => failed.push(id),
            NodeState::UpstreamFailed => held_back += 1,
            _ => stuck.push(id),
        }
    }
    let held_back = match held_back {
        0 => String::new(),
        1 => " (1 node upstream_failed)".to_string(),
        n => format!(" ({n} nodes upstream_failed)"),
    };
    match halt.failures.as_slice() {
        [] => {}
        [one] if held_back.is_empty() => return (RunStatus::Failed, Some(one.clone())),
        [one] => return (RunStatus::Failed, Some(format!("{one}{held_back}"))),
        many => {
            let reason = format!(
                "{} nodes failed: {}{held_back}",
                many.len(),
                named(many, "; ")
            );
            return (RunStatus::Failed, Some(reason));
        }
    }
    if failed.is_empty() && stuck.is_empty() && held_back.is_empty() {
        return (RunStatus::Succeeded, None);
    }
    // Failures of an earlier session of the run (a resumed or restarted
    // run keeps them).
    let mut parts = Vec::new();
    if !failed.is_empty() {
        parts.push(format!("failed earlier: {}", named(&failed, ", ")));
    }
    if !stuck.is_empty() {
        parts.push(format!(
            "no node can start; unfinished: {}",
            named(&stuck, ", ")
        ));
    }
    let mut reason = parts.join("; ");
    reason.push_str(&held_back);
    (RunStatus::Failed, Some(reason))
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
        for s in [
            Running,
            Waiting,
            Succeeded,
            Failed,
            Cancelled,
            UpstreamFailed,
        ] {
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
            failures: vec!["x".into()],
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
            failures: vec!["f".into()],
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
            "no node can start; unfinished: n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, and 2 more"
        );
    }

    #[test]
    fn keep_going_starts_past_failures_and_names_them_all() {
        let mut halt = Halt {
            keep_going: true,
            ..Halt::default()
        };
        halt.failures.push("node `a` failed".into());
        assert!(
            halt.going(),
            "a failure does not stop a run that keeps going"
        );
        assert!(!halt.stopped_by_failure());
        assert!(may_start(&halt, RunStatus::Running, 0, 1));
        let waiting = Pending {
            waiting: true,
            ..Pending::default()
        };
        assert!(!over(&halt, &waiting), "it still waits for input elsewhere");
        let nodes = [
            ("a", NodeState::Failed),
            ("b", NodeState::UpstreamFailed),
            ("c", NodeState::Succeeded),
        ];
        assert_eq!(
            final_status(&halt, nodes),
            (
                RunStatus::Failed,
                Some("node `a` failed (1 node upstream_failed)".into())
            )
        );
        let many: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        halt.failures = many;
        let (_, reason) = final_status(&halt, []);
        assert_eq!(
            reason.unwrap(),
            "12 nodes failed: n0; n1; n2; n3; n4; n5; n6; n7; n8; n9; and 2 more"
        );
        let fail_fast = Halt {
            failures: vec!["x".into()],
            ..Halt::default()
        };
        assert!(fail_fast.stopped_by_failure() && !fail_fast.going());
    }

    #[test]
    fn a_resumed_run_names_failures_of_earlier_sessions() {
        let nodes = [
            ("a", NodeState::Failed),
            ("b", NodeState::UpstreamFailed),
            ("c", NodeState::Succeeded),
        ];
        assert_eq!(
            final_status(&Halt::default(), nodes),
            (
                RunStatus::Failed,
                Some("failed earlier: a (1 node upstream_failed)".into())
            )
        );
    }
}
