//! How a run stops: a broken promise, failures held downstream, regions
//! never filled, and the final status once nothing runs.

use tracing::{info, warn};

use super::Runner;
use crate::engine::schedule;
use crate::history::{EventKind, ViolationRecord};
use crate::model::{NodeState, RunStatus};
use crate::promise::{Promise, Violation};

impl Runner {
    /// Records a violation: the run ends `promise_broken`, nothing starts
    /// any more, and every running attempt is stopped.
    pub(super) fn break_promise(&mut self, v: &Violation, by: Option<(usize, u32)>) {
        let by = by.map(|(i, a)| {
            let n = self.state.graph.node(i);
            (n.id.clone(), n.task.name.clone(), a)
        });
        warn!(violation = %v, "promise broken");
        self.emit(EventKind::PromiseBroken {
            violation: ViolationRecord::new(v, by),
        });
        self.halt.broken.get_or_insert_with(|| v.to_string());
        self.kill_running();
    }

    /// Keeping going past failures: every node not started downstream of
    /// `failed` becomes `upstream_failed` (it can never start), and so on
    /// downstream of it. Independent branches are untouched.
    pub(super) fn fail_downstream(&mut self, failed: impl IntoIterator<Item = usize>) {
        let mut stack: Vec<usize> = failed.into_iter().collect();
        while let Some(v) = stack.pop() {
            let g = &self.state.graph;
            let held: Vec<usize> = g
                .successors(v)
                .filter(|&s| g.node(s).state.not_started())
                .collect();
            for s in held {
                let node = self.id(s);
                info!(node = %node, "upstream failed");
                self.emit(EventKind::NodeState {
                    node,
                    state: NodeState::UpstreamFailed,
                });
                stack.push(s);
            }
        }
    }

    /// Once nothing runs: a shape region still unfilled can never be
    /// filled, and its `to` can never start.
    fn check_unfilled(&mut self) {
        let g = &self.state.graph;
        let found = g.promises().iter().enumerate().find_map(|(index, p)| match p {
            Promise::Shape { from, to, .. }
                if g.get(to).is_some_and(|n| n.state == NodeState::Pending)
                    && g.region_unfilled(index) == Some(true) =>
            {
                Some(Violation {
                    index,
                    promise: p.clone(),
                    mutation: format!("waiting for `{to}`"),
                    message: format!(
                        "the region between `{from}` and `{to}` was never filled (not even the edge `{from}` -> `{to}`), so `{to}` can never start"
                    ),
                })
            }
            _ => None,
        });
        if let Some(v) = found {
            self.break_promise(&v, None);
        }
    }

    /// Decides the final status once nothing runs.
    pub(super) fn finish(&mut self) -> RunStatus {
        if self.halt.shutdown
            && !self.halt.stopped_by_failure()
            && self.halt.broken.is_none()
            && !self.halt.cancelling
            && !self
                .state
                .graph
                .nodes()
                .iter()
                .all(|n| n.state.is_terminal())
        {
            // The engine stopped: the run stays `running`, its interrupted
            // attempts recorded, for whoever takes it over next; nodes
            // waiting for input still wait.
            info!(run = %self.state.run, "run interrupted: the engine stopped");
            return RunStatus::Running;
        }
        // A run that ends while nodes wait for input stops waiting for them.
        self.stop_waiting("the run ended while it waited for input");
        if self.halt.cancelling {
            // Nothing that had not started will run.
            let unfinished: Vec<String> = self
                .state
                .graph
                .nodes()
                .iter()
                .filter(|n| n.state.not_started())
                .map(|n| n.id.clone())
                .collect();
            for node in unfinished {
                self.emit(EventKind::NodeState {
                    node,
                    state: NodeState::Cancelled,
                });
            }
        } else if self.halt.broken.is_none() && self.halt.failures.is_empty() {
            self.check_unfilled();
        }
        if self.halt.keep_going && self.halt.broken.is_none() && !self.halt.cancelling {
            // Edges added after a failure may have put more nodes behind
            // it (or behind one it held back).
            let g = &self.state.graph;
            let behind: Vec<usize> = (0..g.len())
                .filter(|&i| {
                    matches!(
                        g.node(i).state,
                        NodeState::Failed | NodeState::UpstreamFailed
                    )
                })
                .collect();
            self.fail_downstream(behind);
        }
        let nodes = self.state.graph.nodes().iter();
        let (status, reason) =
            schedule::final_status(&self.halt, nodes.map(|n| (n.id.as_str(), n.state)));
        info!(run = %self.state.run, status = %status, "run finished");
        self.emit(EventKind::RunStatus { status, reason });
        status
    }
}
