//! Rules and loops: batches the engine commits itself when a rule's
//! predicate holds or a loop's iteration succeeded.

use tracing::{info, warn};

use super::Runner;
use crate::engine::fault::Fault;
use crate::history::EventKind;
use crate::model::{Origin, RunStatus};
use crate::promise::{self, BatchProblem};

impl Runner {
    /// Fires every rule whose predicate holds, in the order they were
    /// declared, until none does (a body may make another rule's
    /// predicate hold). Each firing is one batch with origin `rule:<id>`,
    /// checked like a task's and queued with the events that made it
    /// hold: the commit that records them records the firing, so a rule
    /// fires exactly once across crashes. Nothing fires while the run is
    /// paused or halted.
    pub(super) fn fire_rules(&mut self) {
        if !self.rules_dirty || self.state.graph.rules().is_empty() {
            return;
        }
        self.rules_dirty = false;
        while self.halt.going() && self.state.status == RunStatus::Running {
            let g = &self.state.graph;
            let refused = &self.rules_refused;
            let due = (0..g.rules().len()).find(|&k| {
                !g.rule_fired(k)
                    && !refused.contains(&k)
                    && crate::rule::holds(g, &g.rules()[k].when, Some(k))
            });
            let Some(k) = due else {
                return;
            };
            let rule = &g.rules()[k];
            let id = rule.id.clone();
            let at = format!("rule:{id}");
            let staged = crate::rule::body(g, rule)
                .and_then(|batch| g.stage_all(batch).map_err(|e| e.to_string()))
                .map_err(BatchProblem::BadPromise)
                .and_then(|staging| promise::check_rule_batch(g, &staging, &id).map(|()| staging));
            match staged {
                Ok(staging) => {
                    info!(rule = %id, "rule fired");
                    self.emit(EventKind::BatchCommitted {
                        origin: Origin::Rule { rule: id },
                        mutations: staging.into_mutations(),
                    });
                    self.fault(Fault::BeforeCommit, &at);
                    self.fault(Fault::AfterCommit, &at);
                }
                Err(BatchProblem::Violation(v)) => {
                    self.break_promise(&v, None);
                    return;
                }
                Err(BatchProblem::BadPromise(error)) => {
                    let reason = format!("rule `{id}` could not fire: {error}");
                    warn!(rule = %id, error = %error, "rule could not fire");
                    self.halt.failures.push(reason);
                    self.rules_refused.insert(k);
                    // Failing fast: what runs is stopped like after a
                    // node's failure; keeping going, the rest goes on.
                    return;
                }
            }
        }
    }

    /// Moves every loop whose latest iteration succeeded on (SPEC §10):
    /// the next iteration, or the exit edge to its `to`, as one batch with
    /// origin `loop:<id>` checked against every promise, queued with the
    /// events that decided it; or, at the bound, the run fails naming the
    /// loop. What a loop does next is a pure function of the graph and the
    /// outputs ([`crate::loops::next`]), so a batch lost in a crash is
    /// decided again on resume and a committed one is never repeated.
    pub(super) fn fire_loops(&mut self) {
        if !self.loops_dirty
            || self.state.graph.loops().is_empty()
            || !self.halt.going()
            || self.state.status != RunStatus::Running
        {
            return;
        }
        self.loops_dirty = false;
        let mut k = 0;
        while k < self.state.graph.loops().len() {
            if !self.halt.going() || self.state.status != RunStatus::Running {
                return;
            }
            let l = &self.state.graph.loops()[k];
            if self.loops_refused.contains(&l.id) {
                k += 1;
                continue;
            }
            let id = l.id.clone();
            let (iteration, after, batch) = match crate::loops::next(&self.state, l) {
                crate::loops::Next::Iterate {
                    iteration,
                    after,
                    batch,
                } => (Some(iteration), after, batch),
                crate::loops::Next::Exit { after, batch, .. } => (None, after, batch),
                crate::loops::Next::Capped(reason) => {
                    warn!(r#loop = %id, "{reason}");
                    self.halt.failures.push(reason);
                    self.loops_refused.insert(id);
                    return;
                }
                _ => {
                    k += 1;
                    continue;
                }
            };
            let g = &self.state.graph;
            let at = format!("loop:{after}");
            let staged = g
                .stage_all(batch)
                .map_err(|e| BatchProblem::BadPromise(e.to_string()))
                .and_then(|staging| promise::check_loop_batch(g, &staging, &id).map(|()| staging));
            match staged {
                Ok(staging) => {
                    match iteration {
                        Some(n) => info!(r#loop = %id, iteration = n, "loop iterates"),
                        None => info!(r#loop = %id, after = %after, "loop exits"),
                    }
                    self.emit(EventKind::BatchCommitted {
                        origin: Origin::Loop { id, after },
                        mutations: staging.into_mutations(),
                    });
                    self.fault(Fault::BeforeCommit, &at);
                    self.fault(Fault::AfterCommit, &at);
                    // The same loop again: it has nothing more to do until
                    // the new iteration succeeds, and that is cheap to see.
                }
                Err(BatchProblem::Violation(v)) => {
                    self.break_promise(&v, None);
                    return;
                }
                Err(BatchProblem::BadPromise(error)) => {
                    let reason = format!("loop `{id}` could not go on after `{after}`: {error}");
                    warn!(r#loop = %id, error = %error, "loop could not go on");
                    self.halt.failures.push(reason);
                    self.loops_refused.insert(id);
                    return;
                }
            }
        }
    }
}
