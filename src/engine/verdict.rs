//! Attempt verdicts, as pure functions: what an attempt's end means for
//! its node ([`judge`]), and whether a failure is tried again ([`retry`]).
//! The run loop applies them; nothing here does I/O.

use std::time::Duration;

use serde_json::Value;

use crate::exec::{AttemptEnd, Exit, Interrupt};
use crate::model::{AttemptOutcome, Task};
use crate::typed::native;

/// Why a run stops starting and committing attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopping {
    /// The run is being cancelled.
    Cancelled,
    /// A batch broke a promise.
    PromiseBroken,
    /// The engine stops (SIGTERM, Ctrl-C, `Engine::shutdown`): the run
    /// stays resumable.
    Shutdown,
}

/// What an attempt's end means.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The attempt broke a promise while it ran: it fails for good, with
    /// the violation as its error (the run ends `promise_broken`).
    Violated(String),
    /// The run stops: the attempt counts as killed, its node is cancelled.
    Stopped(String),
    /// The engine stopped the attempt: it counts as killed (no retry used)
    /// and its node is ready again, to run when the run is taken over.
    Interrupted(String),
    /// The attempt failed; `retryable` says whether retries may try again.
    Failed {
        /// How it ended.
        outcome: AttemptOutcome,
        /// Why, as the history records it.
        error: String,
        /// False for a task's terminal failure.
        retryable: bool,
    },
    /// The attempt succeeded: its batch is checked once more and committed
    /// with its output.
    Succeeded,
}

/// The verdict on attempt of `node` running `task` that ended as `end`;
/// `violated` is the promise it broke while running, `stopping` why the
/// run stops, if it does. In order: a violation, a stopping run, a broken
/// attempt, a timeout, a kill, the task's own failure, a signal, a
/// non-zero exit, a missing declared output, an output past the limits
/// ([`crate::limits`]), an output of the wrong type; else success.
///
/// ```
/// use orch::engine::verdict::{judge, Verdict};
/// use orch::exec::AttemptEnd;
/// use orch::model::AttemptOutcome;
/// use orch::Task;
///
/// let task = Task::command(["true"]);
/// assert_eq!(judge(&AttemptEnd::exited(0), &task, "a", None, None), Verdict::Succeeded);
/// assert_eq!(
///     judge(&AttemptEnd::exited(3), &task, "a", None, None),
///     Verdict::Failed { outcome: AttemptOutcome::Failed, error: "exited with code 3".into(), retryable: true }
/// );
/// ```
pub fn judge(
    end: &AttemptEnd,
    task: &Task,
    node: &str,
    violated: Option<&str>,
    stopping: Option<Stopping>,
) -> Verdict {
    if let Some(v) = violated {
        return Verdict::Violated(v.to_string());
    }
    match stopping {
        Some(Stopping::Cancelled) => {
            return Verdict::Stopped("killed: the run was cancelled".into())
        }
        Some(Stopping::PromiseBroken) => {
            return Verdict::Stopped("stopped: the run broke a promise".into())
        }
        // Only what the stop killed is interrupted: an attempt that ended
        // on its own meanwhile is judged as usual (its success commits).
        Some(Stopping::Shutdown) if end.interrupt == Some(Interrupt::Killed) => {
            return Verdict::Interrupted(
                "interrupted: the engine stopped; the node runs again when the run is resumed"
                    .into(),
            )
        }
        Some(Stopping::Shutdown) | None => {}
    }
    let failed = |outcome, error: String| Verdict::Failed {
        outcome,
        error,
        retryable: true,
    };
    match &end.interrupt {
        Some(Interrupt::Lost(why)) => return Verdict::Interrupted(why.clone()),
        Some(Interrupt::Broken(why)) => return failed(AttemptOutcome::Failed, why.clone()),
        Some(Interrupt::TimedOut) => return failed(AttemptOutcome::TimedOut, "timed out".into()),
        Some(Interrupt::Killed) => {
            return failed(AttemptOutcome::Killed, "killed by the orchestrator".into())
        }
        None => {}
    }
    if let Some(f) = &end.failure {
        return Verdict::Failed {
            outcome: AttemptOutcome::Failed,
            error: format!("the task failed: {}", f.message),
            retryable: f.retry,
        };
    }
    match end.exit {
        Exit::Signal(sig) => {
            return failed(AttemptOutcome::Failed, format!("killed by signal {sig}"))
        }
        Exit::Code(0) => {}
        Exit::Code(code) => {
            return failed(AttemptOutcome::Failed, format!("exited with code {code}"))
        }
        Exit::Unknown => return failed(AttemptOutcome::Failed, "exited with code ?".into()),
    }
    if end.output.is_none() && task.output_required {
        return failed(
            AttemptOutcome::Failed,
            "exited 0 without the output its task declares".into(),
        );
    }
    // What any executor reports is stored and read back: it keeps the
    // limits a task's protocol lines keep.
    if let Some(Err(e)) = end.output.as_ref().map(crate::limits::check_value) {
        return failed(
            AttemptOutcome::Failed,
            format!("node `{node}`: output refused: {e}"),
        );
    }
    if let Err(e) = native::check_output(task, end.output.as_ref().unwrap_or(&Value::Null)) {
        return failed(AttemptOutcome::Failed, format!("node `{node}`: {e}"));
    }
    Verdict::Succeeded
}

/// Whether a failed attempt is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// At once: the node is ready again.
    Now,
    /// After a backoff: the node waits (pending), then is ready again.
    After(Duration),
    /// No: the node failed for good.
    GiveUp,
}

/// The retry decision for the `failures`-th failure (counting this one;
/// interrupted attempts count none) of an attempt of `task`, given whether
/// the failure is `retryable` and whether the run already failed.
///
/// ```
/// use std::time::Duration;
/// use orch::engine::verdict::{retry, Retry};
/// use orch::Task;
///
/// let task = Task::command(["false"]).retries(2).retry_delay(Duration::from_secs(1));
/// assert_eq!(retry(&task, 1, true, false), Retry::After(Duration::from_secs(1)));
/// assert_eq!(retry(&task, 2, true, false), Retry::After(Duration::from_secs(2)));
/// assert_eq!(retry(&task, 3, true, false), Retry::GiveUp);
/// assert_eq!(retry(&task, 1, false, false), Retry::GiveUp);
/// ```
pub fn retry(task: &Task, failures: u32, retryable: bool, run_failed: bool) -> Retry {
    if !retryable || failures > task.retries || run_failed {
        return Retry::GiveUp;
    }
    match task.backoff(failures) {
        wait if wait.is_zero() => Retry::Now,
        wait => Retry::After(wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::TaskFailure;
    use serde_json::json;

    fn failed(outcome: AttemptOutcome, error: &str, retryable: bool) -> Verdict {
        Verdict::Failed {
            outcome,
            error: error.into(),
            retryable,
        }
    }

    #[test]
    fn an_output_past_the_limits_fails_whatever_reported_it() {
        let task = Task::command(["x"]);
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "a": deep });
        }
        let mut end = AttemptEnd::exited(0);
        end.output = Some(deep);
        match judge(&end, &task, "n", None, None) {
            Verdict::Failed { error, .. } => {
                assert!(error.starts_with("node `n`: output refused: "), "{error}");
                assert!(error.contains("64"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_order_of_causes() {
        let task = Task::command(["x"]);
        let judge = |end: &AttemptEnd| judge(end, &task, "n", None, None);
        let mut end = AttemptEnd::exited(0);
        end.failure = Some(TaskFailure {
            message: "bad".into(),
            retry: false,
        });
        assert_eq!(
            judge(&end),
            failed(AttemptOutcome::Failed, "the task failed: bad", false)
        );
        end.interrupt(Interrupt::Killed);
        assert_eq!(
            judge(&end),
            failed(AttemptOutcome::Killed, "killed by the orchestrator", true)
        );
        end.interrupt(Interrupt::TimedOut);
        assert_eq!(
            judge(&end),
            failed(AttemptOutcome::TimedOut, "timed out", true)
        );
        end.interrupt(Interrupt::Broken("malformed".into()));
        assert_eq!(
            judge(&end),
            failed(AttemptOutcome::Failed, "malformed", true)
        );
        assert_eq!(
            judge(&AttemptEnd::ended(Exit::Signal(9))),
            failed(AttemptOutcome::Failed, "killed by signal 9", true)
        );
        assert_eq!(
            judge(&AttemptEnd::ended(Exit::Unknown)),
            failed(AttemptOutcome::Failed, "exited with code ?", true)
        );
    }

    #[test]
    fn the_run_and_promises_come_first() {
        let task = Task::command(["x"]);
        let end = AttemptEnd::exited(0);
        assert_eq!(
            judge(
                &end,
                &task,
                "n",
                Some("broke it"),
                Some(Stopping::Cancelled)
            ),
            Verdict::Violated("broke it".into())
        );
        assert_eq!(
            judge(&end, &task, "n", None, Some(Stopping::Cancelled)),
            Verdict::Stopped("killed: the run was cancelled".into())
        );
        assert_eq!(
            judge(&end, &task, "n", None, Some(Stopping::PromiseBroken)),
            Verdict::Stopped("stopped: the run broke a promise".into())
        );
    }

    #[test]
    fn a_stopping_engine_interrupts_only_what_it_killed() {
        let task = Task::command(["x"]);
        let mut killed = AttemptEnd::ended(Exit::Signal(15));
        killed.interrupt(Interrupt::Killed);
        assert!(matches!(
            judge(&killed, &task, "n", None, Some(Stopping::Shutdown)),
            Verdict::Interrupted(_)
        ));
        assert_eq!(
            judge(
                &AttemptEnd::exited(0),
                &task,
                "n",
                None,
                Some(Stopping::Shutdown)
            ),
            Verdict::Succeeded,
            "what finished on its own commits"
        );
    }

    #[test]
    fn declared_outputs_are_required() {
        let task = Task::command(["x"]).requires_output();
        assert_eq!(
            judge(&AttemptEnd::exited(0), &task, "n", None, None),
            failed(
                AttemptOutcome::Failed,
                "exited 0 without the output its task declares",
                true
            )
        );
        let ok = AttemptEnd::exited(0).with_output(json!(1));
        assert_eq!(judge(&ok, &task, "n", None, None), Verdict::Succeeded);
    }

    #[test]
    fn retries_back_off_and_stop() {
        let task = Task::command(["x"]).retries(1);
        assert_eq!(retry(&task, 1, true, false), Retry::Now);
        assert_eq!(retry(&task, 2, true, false), Retry::GiveUp);
        assert_eq!(
            retry(&task, 1, true, true),
            Retry::GiveUp,
            "the run already failed"
        );
    }
}
