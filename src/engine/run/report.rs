//! What running attempts report: mutations staged and checked on arrival,
//! log lines streamed, ends handed on to be judged.

use tracing::warn;

use super::Runner;
use crate::engine::start::typecheck;
use crate::exec::{AttemptEnd, AttemptId, Report};
use crate::promise;

impl Runner {
    /// The position of the node whose running attempt is `id`; `None` for
    /// an attempt of another run, or one that is not (or no longer) its
    /// node's running attempt.
    fn current(&self, id: &AttemptId) -> Option<usize> {
        if id.run != self.state.run {
            return None;
        }
        let i = self.state.graph.position(&id.node)?;
        self.running
            .get(&i)
            .is_some_and(|r| r.attempt == id.attempt)
            .then_some(i)
    }

    pub(super) fn handle(&mut self, report: Report) {
        match report {
            Report::Mutation {
                attempt: id,
                mutation,
                reply,
            } => {
                let Some(node) = self.current(&id) else {
                    let _ = reply.send(Err("this attempt is no longer running".to_string()));
                    return;
                };
                let attempt = id.attempt;
                let by = id.node;
                let g = &self.state.graph;
                let mut violation = None;
                let answer = match self.running.get_mut(&node) {
                    Some(r) if r.staging.mutations().len() >= self.max_batch => Err(format!(
                        "the attempt's batch already holds {} mutations, the most one attempt may send",
                        self.max_batch
                    )),
                    Some(r) if r.attempt == attempt && r.violated.is_none() => {
                        match typecheck(g, &r.staging, &mutation)
                            .and_then(|()| r.staging.stage(g, mutation).map_err(|e| e.to_string()))
                        {
                            Err(e) => Err(e),
                            Ok(()) => {
                                let staged = r.staging.mutations().last().expect("just staged");
                                match promise::check_mutation(g, &r.staging, &by, staged) {
                                    Ok(()) => Ok(()),
                                    Err(v) => {
                                        r.violated = Some(v.to_string());
                                        let msg = v.to_string();
                                        violation = Some(v);
                                        Err(msg)
                                    }
                                }
                            }
                        }
                    }
                    _ => Err("this attempt is no longer running".to_string()),
                };
                let _ = reply.send(answer);
                if let Some(v) = violation {
                    self.break_promise(&v, Some((node, attempt)));
                }
            }
            // Streamed to the store as they come, in batches (see
            // `run_loop`): the logs of an attempt a crash interrupts are
            // kept up to its last moments.
            Report::Log { attempt: id, line } => {
                let Some(i) = self.current(&id) else {
                    return;
                };
                if let Some(r) = self.running.get_mut(&i) {
                    r.streamed = r.streamed.max(line.line);
                }
                for o in &self.observers {
                    o.log(&self.state.run, &line);
                }
                self.logs.push(line);
            }
            Report::Finished { attempt: id, end } => match self.current(&id) {
                Some(node) => self.finished(node, id.attempt, end),
                // A late report of a superseded attempt: the fence.
                None => {
                    warn!(attempt = %id, "a report of an attempt that is not running was refused")
                }
            },
        }
    }

    /// Judges the end of attempt `attempt` of node `i`; its record names
    /// the runner that ran it, if one did.
    fn finished(&mut self, i: usize, attempt: u32, mut end: AttemptEnd) {
        if let Some(runner) = end.runner.take() {
            self.ran_on.insert((i, attempt), runner);
        }
        self.judge_end(i, attempt, end);
        // Every path records the end (and takes the runner); none is left.
        self.ran_on.remove(&(i, attempt));
    }
}
