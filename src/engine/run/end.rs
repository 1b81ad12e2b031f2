//! Ending attempts: an attempt's end judged ([`crate::engine::verdict`]),
//! its batch validated once more and committed with its output, or its
//! failure recorded and a retry decided; the files it produced kept.

use serde_json::Value;
use tracing::{info, warn};

use super::Runner;
use crate::engine::fault::Fault;
use crate::engine::verdict::{self, Retry, Stopping, Verdict};
use crate::exec::AttemptEnd;
use crate::history::EventKind;
use crate::model::{AttemptOutcome, NodeState, Origin};
use crate::promise::{self, BatchProblem};

impl Runner {
    /// Ends attempt `attempt` of node `i` in success with `output`: the
    /// output, the attempt's end and the node's state, queued together.
    pub(super) fn succeed(
        &mut self,
        i: usize,
        attempt: u32,
        output: Value,
        exit_code: Option<i32>,
    ) {
        self.succeed_with(i, attempt, output, exit_code, Vec::new());
    }

    /// [`Runner::succeed`] with the files the attempt produced.
    fn succeed_with(
        &mut self,
        i: usize,
        attempt: u32,
        output: Value,
        exit_code: Option<i32>,
        files: Vec<crate::history::ProducedFile>,
    ) {
        let node = self.id(i);
        self.emit(EventKind::Output {
            node: node.clone(),
            value: output,
        });
        let runner = self.ran_on.remove(&(i, attempt));
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome: AttemptOutcome::Succeeded,
            exit_code,
            error: None,
            files,
            runner,
        });
        self.emit(EventKind::NodeState {
            node,
            state: NodeState::Succeeded,
        });
    }

    pub(super) fn judge_end(&mut self, i: usize, attempt: u32, mut end: AttemptEnd) {
        let Some(running) = self.running.remove(&i) else {
            return;
        };
        drop(running.stop);
        // Lines the executor did not stream (all of them, for one that
        // streams none).
        end.logs.retain(|l| l.line > running.streamed);
        self.logs.append(&mut end.logs);
        let node = self.id(i);
        self.fault(Fault::AfterExit, &node);
        let stopping = if self.halt.cancelling {
            Some(Stopping::Cancelled)
        } else if self.halt.broken.is_some() {
            Some(Stopping::PromiseBroken)
        } else if self.halt.shutdown {
            Some(Stopping::Shutdown)
        } else {
            None
        };
        let exit_code = end.exit_code();
        if running.adopted && stopping.is_none() {
            let seen = running.staging.mutations().len() as u32;
            if end.mutations != Some(seen) {
                // Mutations the previous owner acknowledged died with it:
                // the batch cannot be committed whole.
                let error = format!(
                    "interrupted: attempt {}/{node}#{attempt} had {} mutations acknowledged, {seen} of them by this engine (the run changed owner while it ran); the node runs again",
                    self.state.run,
                    end.mutations.map_or("an unknown number of".to_string(), |n| n.to_string()),
                );
                self.kill_ended(i, attempt, exit_code, error, NodeState::Ready);
                return;
            }
        }
        let task = &self.state.graph.node(i).task;
        match verdict::judge(&end, task, &node, running.violated.as_deref(), stopping) {
            Verdict::Violated(error) => {
                self.fail_for_good(i, attempt, exit_code, error);
                return;
            }
            // Killed by the engine: the node is ready again when the engine
            // stopped (for whoever takes the run over), cancelled when the
            // run stops.
            Verdict::Interrupted(error) => {
                self.kill_ended(i, attempt, exit_code, error, NodeState::Ready);
                return;
            }
            Verdict::Stopped(error) => {
                self.kill_ended(i, attempt, exit_code, error, NodeState::Cancelled);
                return;
            }
            Verdict::Failed {
                outcome,
                error,
                retryable,
            } => {
                self.fail_attempt(i, attempt, outcome, exit_code, error, retryable);
                return;
            }
            Verdict::Succeeded => {}
        }
        // A runner uploaded its attempt's artefacts before its end; a
        // local attempt's are copied to the same place.
        // (The folder's path is made only for a task that produces files.)
        let produces = &self.state.graph.node(i).task.produces;
        let kept = || crate::exec::remote::artefact_dir(&self.run_home, &node, attempt);
        let files = if produces.is_empty() {
            Ok(Vec::new())
        } else if self.ran_on.contains_key(&(i, attempt)) {
            produced(&kept(), produces)
        } else {
            produced(&self.work_dir, produces)
                .and_then(|files| keep_artefacts(&self.work_dir, &kept(), produces).map(|()| files))
        };
        let files = match files {
            Ok(files) => files,
            Err(error) => {
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, exit_code, error, true);
                return;
            }
        };
        // Other attempts may have committed since the mutations were
        // checked on arrival: validate the whole batch once more.
        let staged = self
            .state
            .graph
            .stage_all(running.staging.into_mutations())
            .map_err(|e| BatchProblem::BadPromise(format!("the batch was rejected at commit: {e}")))
            .and_then(|staging| {
                promise::check_batch(&self.state.graph, &staging, Some(&node)).map(|()| staging)
            });
        let batch = match staged {
            Ok(staging) => staging.into_mutations(),
            Err(BatchProblem::Violation(v)) => {
                self.break_promise(&v, Some((i, attempt)));
                let error = v.to_string();
                self.fail_for_good(i, attempt, exit_code, error);
                return;
            }
            Err(BatchProblem::BadPromise(error)) => {
                self.fail_attempt(i, attempt, AttemptOutcome::Failed, exit_code, error, true);
                return;
            }
        };
        if !batch.is_empty() {
            self.emit(EventKind::BatchCommitted {
                origin: Origin::Attempt {
                    node: node.clone(),
                    attempt,
                },
                mutations: batch,
            });
        }
        let output = end.output.unwrap_or(Value::Null);
        self.succeed_with(i, attempt, output, exit_code, files);
        self.fault(Fault::BeforeCommit, &node);
        info!(node = %node, attempt, "succeeded");
        self.fault(Fault::AfterCommit, &node);
    }

    /// Ends an attempt the engine killed (no retry used); its node goes to
    /// `next`.
    fn kill_ended(
        &mut self,
        i: usize,
        attempt: u32,
        exit_code: Option<i32>,
        error: String,
        next: NodeState,
    ) {
        self.end_attempt(i, attempt, AttemptOutcome::Killed, exit_code, error, next);
    }

    /// Fails an attempt that broke a promise: its node fails, with no
    /// retry (the run ends `promise_broken`).
    fn fail_for_good(&mut self, i: usize, attempt: u32, exit_code: Option<i32>, error: String) {
        let outcome = AttemptOutcome::Failed;
        self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Failed);
    }

    /// Ends an attempt and puts its node in `state` (`ready` again for a
    /// retry).
    pub(in crate::engine) fn end_attempt(
        &mut self,
        i: usize,
        attempt: u32,
        outcome: AttemptOutcome,
        exit_code: Option<i32>,
        error: String,
        state: NodeState,
    ) {
        let node = self.id(i);
        let runner = self.ran_on.remove(&(i, attempt));
        self.emit(EventKind::AttemptFinished {
            node: node.clone(),
            attempt,
            outcome,
            exit_code,
            error: Some(error),
            files: Vec::new(),
            runner,
        });
        self.emit(EventKind::NodeState { node, state });
    }

    pub(super) fn fail_attempt(
        &mut self,
        i: usize,
        attempt: u32,
        outcome: AttemptOutcome,
        exit_code: Option<i32>,
        error: String,
        retryable: bool,
    ) {
        let node = self.id(i);
        warn!(node = %node, attempt, error = %error, "attempt failed");
        let task = &self.state.graph.node(i).task;
        // Interrupted attempts (the orchestrator stopped) use no retry.
        let failures = 1 + self.state.facts[i]
            .attempts
            .iter()
            .filter(|a| {
                matches!(
                    a.outcome,
                    Some(AttemptOutcome::Failed | AttemptOutcome::TimedOut)
                )
            })
            .count() as u32;
        match verdict::retry(task, failures, retryable, self.halt.stopped_by_failure()) {
            Retry::Now => {
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Ready);
                return;
            }
            Retry::After(wait) => {
                info!(node = %node, attempt, wait_s = wait.as_secs_f64(), "retry after backoff");
                self.retry_at.insert(i, tokio::time::Instant::now() + wait);
                self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Pending);
                return;
            }
            Retry::GiveUp => {}
        }
        let reason = format!("node `{node}` failed (attempt {attempt}): {error}");
        self.end_attempt(i, attempt, outcome, exit_code, error, NodeState::Failed);
        if self.halt.keep_going || self.halt.failures.is_empty() {
            self.halt.failures.push(reason);
        }
        if self.halt.keep_going {
            self.fail_downstream([i]);
        }
    }
}

/// Copies the files a local attempt produced (`declared`, checked by
/// [`produced`]) from `dir` to `kept`, where the run keeps its artefacts.
fn keep_artefacts(
    dir: &std::path::Path,
    kept: &std::path::Path,
    declared: &[String],
) -> std::result::Result<(), String> {
    for p in declared {
        let rel = crate::exec::remote::check_relative(p)?;
        let to = kept.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                format!("keeping artefact `{p}`: creating {}: {e}", parent.display())
            })?;
        }
        std::fs::copy(dir.join(&rel), &to)
            .map_err(|e| format!("keeping artefact `{p}` in {}: {e}", to.display()))?;
    }
    Ok(())
}

/// The files a task declares, as its attempt left them in `dir` (the
/// folder it ran in): each must be a regular file there; a path that
/// would leave the folder is refused.
fn produced(
    dir: &std::path::Path,
    declared: &[String],
) -> std::result::Result<Vec<crate::history::ProducedFile>, String> {
    declared
        .iter()
        .map(|p| {
            let rel = std::path::Path::new(p);
            if p.is_empty()
                || rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "declared file `{p}` is not a relative path inside the folder the task runs in"
                ));
            }
            // Not followed: a link could point anywhere.
            match std::fs::symlink_metadata(dir.join(rel)) {
                Ok(m) if m.file_type().is_symlink() => Err(format!(
                    "declared file `{p}` is a symbolic link, not a file the task wrote"
                )),
                Ok(m) if m.is_file() => Ok(crate::history::ProducedFile {
                    path: p.clone(),
                    bytes: m.len(),
                }),
                Ok(_) => Err(format!("declared file `{p}` is not a file")),
                Err(_) => Err(format!("declared file `{p}` was not produced")),
            }
        })
        .collect()
}
