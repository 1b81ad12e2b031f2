//! Signals and control: pause, unpause, cancel and input delivered to
//! waiting nodes; stopping, detaching from and re-attaching to attempts.

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Runner, Running};
use crate::error::Result;
use crate::exec::{AttemptId, AttemptLink, Stop};
use crate::graph::Staging;
use crate::history::EventKind;
use crate::model::{AttemptOutcome, Exec, NodeState, RunStatus};
use crate::store::{LogLine, Signal, SignalId};
use crate::typed::native;

impl Runner {
    /// Stops waiting for the attempts runners hold, leaving them claimed
    /// (the engine stops or lost the run): the engine that drives the run
    /// next re-attaches to them. They stay `running` in the history.
    pub(super) fn detach_remote(&mut self) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        let run = self.state.run.clone();
        let detached: Vec<usize> = self
            .running
            .iter()
            .filter(|(i, r)| remote.detach(&AttemptId::new(&run, self.id(**i), r.attempt)))
            .map(|(i, _)| *i)
            .collect();
        for i in detached {
            if let Some(r) = self.running.remove(&i) {
                info!(run = %run, node = %self.id(i), attempt = r.attempt, "left to its runner for the run's next owner");
            }
        }
    }

    /// Waits again for attempt `attempt` of node `i`, which a runner may
    /// still hold (the run's previous owner sent it to the queue): `true`
    /// when it does and this engine now waits for its reports.
    pub(in crate::engine) fn reattach(&mut self, i: usize, attempt: u32) -> bool {
        let Some(remote) = self.remote.clone() else {
            return false;
        };
        let node = self.id(i);
        let id = AttemptId::new(&self.state.run, &node, attempt);
        let (kill_tx, kill_rx) = mpsc::unbounded_channel();
        let link =
            AttemptLink::new(id.clone(), self.reports_tx.clone(), kill_rx).following_logs(true);
        match remote.reattach(link) {
            Ok(true) => {
                // Lines the previous owner stored are not taken again.
                let streamed = self
                    .store
                    .logs(&self.state.run, &node, Some(attempt))
                    .map(|l| l.iter().map(|l| l.line).max().unwrap_or(0))
                    .unwrap_or(0);
                info!(attempt = %id, "re-attached to an attempt a runner holds");
                self.running.insert(
                    i,
                    Running {
                        attempt,
                        staging: Staging::default(),
                        stop: kill_tx,
                        violated: None,
                        streamed,
                        adopted: true,
                    },
                );
                true
            }
            Ok(false) => false,
            Err(e) => {
                warn!(attempt = %id, error = %e, "cannot tell whether a runner still holds the attempt; it runs again");
                false
            }
        }
    }

    /// Asks every running attempt to be killed (with its process group).
    pub(super) fn kill_running(&mut self) {
        self.stop_running(Stop::Kill);
    }

    /// Asks every running attempt to stop (`how`).
    pub(super) fn stop_running(&mut self, how: Stop) {
        for r in self.running.values() {
            let _ = r.stop.send(how);
        }
    }

    /// Ends the wait of every node waiting for input: `cancelled`.
    pub(super) fn stop_waiting(&mut self, why: &str) {
        for i in std::mem::take(&mut self.waiting) {
            let attempt = self.state.last_attempt(i);
            self.end_attempt(
                i,
                attempt,
                AttemptOutcome::Killed,
                None,
                why.to_string(),
                NodeState::Cancelled,
            );
        }
    }

    /// Acts on a signal; a stored one is marked taken with what it did.
    pub(super) fn take_signal(&mut self, id: Option<SignalId>, signal: Signal) -> Result<()> {
        if let Some(id) = id {
            if !self.seen.insert(id) {
                return Ok(());
            }
            self.taken.push(id);
        }
        info!(run = %self.state.run, signal = signal.as_str(), "signal taken");
        match signal {
            Signal::Pause if self.state.status == RunStatus::Running => {
                self.emit(EventKind::RunStatus {
                    status: RunStatus::Paused,
                    reason: None,
                });
            }
            Signal::Unpause if self.state.status == RunStatus::Paused => {
                self.emit(EventKind::RunStatus {
                    status: RunStatus::Running,
                    reason: None,
                });
            }
            Signal::Cancel if !self.halt.cancelling => {
                self.halt.cancelling = true;
                self.stop_waiting("cancelled while waiting for input");
                self.kill_running();
            }
            Signal::Input { node, value } => {
                let target = self.state.graph.position(&node).filter(|&i| {
                    let n = self.state.graph.node(i);
                    matches!(n.task.exec, Exec::Input { .. }) && !n.state.is_terminal()
                });
                match target {
                    Some(i) if self.waiting.contains(&i) => {
                        self.offer(i, value);
                    }
                    Some(i) => {
                        // Not waiting yet: kept until it does. Taken only
                        // then, so a crash meanwhile loses nothing.
                        if let Some(id) = id {
                            self.taken.retain(|t| *t != id);
                        }
                        self.inbox.entry(i).or_default().push_back((id, value));
                    }
                    None => {
                        warn!(run = %self.state.run, node = %node, "input for a node that no longer waits for one; ignored");
                    }
                }
            }
            _ => {}
        }
        // What the signal did is written with it, before anything else.
        self.flush()
    }

    /// Offers `value` to waiting input node `i`: it becomes the node's
    /// output if it fits the type the node declares; otherwise it is
    /// refused, said in the node's log (a value stored by another process,
    /// `orch input`, which cannot know this binary's types), and the node
    /// waits on. True when delivered.
    pub(super) fn offer(&mut self, i: usize, value: Value) -> bool {
        let misfit = crate::limits::check_value(&value)
            .map_err(|e| e.to_string())
            .and_then(|()| native::check_output(&self.state.graph.node(i).task, &value))
            .err()
            .map(|e| e.replace("the output", "the value"));
        let Some(why) = misfit else {
            self.deliver(i, value);
            return true;
        };
        let node = self.id(i);
        warn!(run = %self.state.run, node = %node, error = %why, "input refused");
        let attempt = self.state.last_attempt(i);
        let line = self.note_line(i, attempt);
        self.logs.push(LogLine {
            node,
            attempt,
            line,
            stream: "orch".into(),
            text: format!("input refused: {why}"),
        });
        false
    }

    /// The next line number of attempt `attempt` of node `i`, whose log
    /// this runner writes itself (it runs no process): after those an
    /// earlier runner wrote.
    fn note_line(&mut self, i: usize, attempt: u32) -> u32 {
        if !self.notes.contains_key(&(i, attempt)) {
            let node = self.id(i);
            let written = self
                .store
                .logs(&self.state.run, &node, Some(attempt))
                .map(|l| l.iter().map(|l| l.line).max().unwrap_or(0))
                .unwrap_or(0);
            self.notes.insert((i, attempt), written);
        }
        let line = self.notes.entry((i, attempt)).or_insert(0);
        *line += 1;
        *line
    }

    /// Makes `value` the output of waiting input node `i`.
    fn deliver(&mut self, i: usize, value: Value) {
        self.waiting.remove(&i);
        let attempt = self.state.last_attempt(i);
        info!(node = %self.state.graph.node(i).id, "input delivered");
        self.succeed(i, attempt, value, None);
    }
}
