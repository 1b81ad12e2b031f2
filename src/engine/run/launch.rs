//! Starting attempts: ready nodes started while slots are free, input
//! nodes set waiting, nodes released from a retry backoff.

use std::collections::VecDeque;

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::{Runner, Running};
use crate::engine::fault::Fault;
use crate::engine::schedule;
use crate::error::Result;
use crate::exec::{AttemptId, AttemptLink, AttemptSpec};
use crate::graph::Staging;
use crate::history::EventKind;
use crate::model::{resolve_refs, AttemptOutcome, Exec, NodeState};
use crate::promise::{self, Promise, RegionState, Violation};
use crate::typed::native;

impl Runner {
    /// The shape promises whose region ends at node `i`.
    fn shapes_into(&self, i: usize) -> Vec<(usize, Promise)> {
        let g = &self.state.graph;
        g.shapes_into(i)
            .map(|k| (k, g.promises()[k].clone()))
            .collect()
    }

    /// True while a shape region ending at `i` is unfilled: the region's
    /// `to` waits for it through the promise itself.
    pub(super) fn gated(&self, i: usize) -> bool {
        let g = &self.state.graph;
        g.shapes_into(i).any(|k| g.region_unfilled(k) == Some(true))
    }

    /// Makes nodes whose retry backoff is over ready again.
    pub(super) fn release_retries(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<usize> = self
            .retry_at
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            self.retry_at.remove(&i);
            self.refresh(i);
        }
    }

    /// Starts ready nodes while slots are free, lowest position first.
    pub(super) fn schedule(&mut self) -> Result<()> {
        let mut from = 0;
        while schedule::may_start(
            &self.halt,
            self.state.status,
            self.running.len(),
            self.max_parallel,
        ) {
            let Some(&i) = self.ready.range(from..).next() else {
                break;
            };
            if let Some(until) = self.executor.not_ready(&self.state.graph.node(i).task) {
                // The executor cannot start it without blocking yet (the
                // fork server preloads): it stays ready, the others start,
                // and the loop comes back when the executor is ready.
                self.hold = Some(until);
                from = i + 1;
                continue;
            }
            // What this start depends on (the node's creation, its
            // predecessors' success and outputs) is committed first.
            let g = &self.state.graph;
            if self.enablers.contains(&i) || g.predecessors(i).any(|p| self.enablers.contains(&p)) {
                self.flush()?;
            }
            self.start(i);
        }
        Ok(())
    }

    fn start(&mut self, i: usize) {
        let node = self.id(i);
        // The final check of every region that ends here: it can no longer
        // grow once its `to` starts.
        for (index, p) in self.shapes_into(i) {
            let Promise::Shape { from, to, shape } = &p else {
                continue;
            };
            let Some(region) = promise::shape_region(&self.state.graph, index) else {
                continue;
            };
            if let RegionState::Mismatch(why) = promise::region_state(&region, shape) {
                let v = Violation {
                    index,
                    promise: p.clone(),
                    mutation: format!("starting `{node}`"),
                    message: format!("between `{from}` and `{to}`: {why}"),
                };
                self.break_promise(&v, None);
                return;
            }
        }
        let attempt = self.state.next_attempt(i);
        let n = self.state.graph.node(i);
        let task = crate::Task::clone(&n.task);
        if matches!(task.exec, Exec::Input { .. }) {
            // No process: the node waits for a delivered value.
            self.emit(EventKind::NodeState {
                node: node.clone(),
                state: NodeState::Waiting,
            });
            self.emit(EventKind::AttemptStarted {
                node,
                attempt,
                pid: None,
            });
            self.waiting.insert(i);
            // A value that arrived before the node waited is its output (the
            // first one that fits its type).
            while let Some((id, value)) = self.inbox.get_mut(&i).and_then(VecDeque::pop_front) {
                self.taken.extend(id);
                if self.offer(i, value) {
                    break;
                }
            }
            return;
        }
        let inputs =
            resolve_refs(&n.inputs, &|id| self.state.output_of(id).cloned()).and_then(|v| {
                match native::check_resolved_inputs(&task, &v) {
                    Ok(()) => Ok(v),
                    Err(e) => Err(format!("the inputs do not fit the task's types: {e}")),
                }
            });
        let upstream = self
            .state
            .graph
            .predecessors(i)
            .map(|p| {
                let id = self.id(p);
                let out = self.state.output_of(&id).cloned().unwrap_or(Value::Null);
                (id, out)
            })
            .collect();
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let id = AttemptId::new(&self.state.run, &node, attempt);
        let launched = inputs.and_then(|inputs| {
            self.executor
                .launch(
                    AttemptSpec::new(id.clone(), task, inputs, upstream),
                    AttemptLink::new(id, self.reports_tx.clone(), kill_rx).following_logs(true),
                )
                .map_err(|e| e.to_string())
        });
        let before = self.queued.len();
        self.emit(EventKind::NodeState {
            node: node.clone(),
            state: NodeState::Running,
        });
        match launched {
            Ok(pid) => {
                debug!(node = %node, attempt, pid, "attempt started");
                self.emit(EventKind::AttemptStarted {
                    node: node.clone(),
                    attempt,
                    pid,
                });
                // A local process is found by its environment should a
                // crash keep its start from being written: the start may
                // wait for the next commit (see `START_DELAY`).
                if pid.is_some() && self.queued.len() == before + 2 {
                    self.deferred += 2;
                }
                self.fault(Fault::AfterSpawn, &node);
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        stop: kill_tx,
                        violated: None,
                        streamed: 0,
                        adopted: false,
                    },
                );
            }
            Err(error) => {
                self.emit(EventKind::AttemptStarted {
                    node,
                    attempt,
                    pid: None,
                });
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, None, error, true);
            }
        }
    }
}
