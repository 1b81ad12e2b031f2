//! Executors: how an attempt runs. The engine hands an executor an
//! [`AttemptSpec`] and an [`AttemptLink`], both keyed by the attempt's
//! [`AttemptId`] (run, node, attempt number: never a graph position or a
//! pid); the executor starts the attempt and reports through the link:
//! every mutation the task sends (answered by the engine as it arrives)
//! and, once, how the attempt ended ([`AttemptEnd`]). The engine alone
//! turns that end into a verdict ([`crate::engine::verdict`]).
//!
//! [`ProcessExecutor`] runs every [`Exec`](crate::model::Exec) kind as one subprocess in its
//! own process group, speaking the JSON-lines protocol; a container task's
//! subprocess is its engine's client ([`container`]). Other executors
//! (containers, remote runners, test doubles) implement [`Executor`] the
//! same way.

pub mod container;
mod escape;
pub(crate) mod fork;
pub(crate) mod looks;
mod process;
pub mod protocol;
mod python;
pub mod remote;
pub mod resources;
pub mod slurm;
mod wake;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub(crate) use escape::kill_left_behind;
pub use escape::TOKEN_ENV;
pub use process::{is_forked_attempt, kill_group, ProcessEnv, ProcessExecutor, DRAIN_AFTER_EXIT};
pub use python::{configured_python, install_helper, resolve_python};

use crate::history::LogLine;
use crate::model::{Mutation, Task};

/// A protocol line (or log line) longer than this fails the attempt (or
/// is truncated in the log): the memory an attempt can take is bounded.
pub const MAX_LINE_BYTES: usize = 32 << 20;
/// Log bytes kept per attempt; the rest is counted and dropped (with a
/// last line saying how many). Every line counts its text plus
/// [`LOG_LINE_COST`], so a flood of empty lines is bounded too.
pub const MAX_LOG_BYTES: usize = 16 << 20;
/// What a log line costs toward [`MAX_LOG_BYTES`] besides its text (the
/// record around it): at most 16 MiB / 64 = 262,144 lines per attempt.
pub const LOG_LINE_COST: usize = 64;
/// The environment variable that puts a workflow binary in task mode: it
/// names the native task to run.
pub const NATIVE_TASK_ENV: &str = "ORCH_NATIVE_TASK";

/// Names one attempt: the run, the node and the attempt number (from 1).
/// The attempt number is also the fence: a report for an attempt that is
/// not the node's current one is refused.
///
/// ```
/// let id = orch::exec::AttemptId::new("run-1", "extract", 2);
/// assert_eq!(id.to_string(), "run-1/extract#2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    /// The run id.
    pub run: String,
    /// The node id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
}

impl AttemptId {
    /// The id of attempt `attempt` of `node` in `run`.
    pub fn new(run: impl Into<String>, node: impl Into<String>, attempt: u32) -> AttemptId {
        AttemptId {
            run: run.into(),
            node: node.into(),
            attempt,
        }
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.run, self.node, self.attempt)
    }
}

/// Everything needed to start one attempt.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptSpec {
    /// Which attempt.
    pub id: AttemptId,
    /// What runs.
    pub task: Task,
    /// Inputs with output references resolved.
    pub inputs: Value,
    /// The output of each direct predecessor, by node id.
    pub upstream: serde_json::Map<String, Value>,
}

impl AttemptSpec {
    /// A spec (executors receive these; tests and other engines build them).
    pub fn new(
        id: AttemptId,
        task: Task,
        inputs: Value,
        upstream: serde_json::Map<String, Value>,
    ) -> AttemptSpec {
        AttemptSpec {
            id,
            task,
            inputs,
            upstream,
        }
    }
}

/// What an executor reports to the engine.
#[derive(Debug)]
#[non_exhaustive]
pub enum Report {
    /// The task sent a mutation; the engine answers `Ok` (ack) or the
    /// error message.
    Mutation {
        /// The attempt that sent it.
        attempt: AttemptId,
        /// The mutation.
        mutation: Mutation,
        /// Where the answer goes.
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    /// The task wrote a log line (sent as it is written, only when the
    /// link [follows logs](AttemptLink::follow_logs); the end's `logs`
    /// still carry every line).
    Log {
        /// The attempt.
        attempt: AttemptId,
        /// The line.
        line: LogLine,
    },
    /// The attempt ended.
    Finished {
        /// The attempt.
        attempt: AttemptId,
        /// How it ended.
        end: AttemptEnd,
    },
}

/// How an attempt's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Nothing to report: no process ran, or waiting for it failed.
    Unknown,
}

/// Why an attempt ended before its task finished on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// The attempt broke: a malformed protocol line, a start or wait
    /// error. The message says what happened.
    Broken(String),
    /// Killed after its timeout.
    TimedOut,
    /// Killed on the engine's request.
    Killed,
    /// The runner that held it was lost (it missed its heartbeats): the
    /// attempt counts as interrupted and its node runs again. The message
    /// says what happened.
    Lost(String),
}

impl Interrupt {
    /// Which interrupt tells more, when several happened: a break before a
    /// timeout before a kill.
    fn rank(&self) -> u8 {
        match self {
            Interrupt::Lost(_) => 4,
            Interrupt::Broken(_) => 3,
            Interrupt::TimedOut => 2,
            Interrupt::Killed => 1,
        }
    }
}

/// A task's own report of failure (the protocol's `fail` message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// What the task said.
    pub message: String,
    /// Whether retries may try again (`false`: terminal).
    pub retry: bool,
}

/// How an attempt ended, as its executor saw it: the facts, not the
/// verdict (that is the engine's, [`crate::engine::verdict::judge`]).
///
/// ```
/// use orch::exec::{AttemptEnd, Exit, Interrupt};
///
/// let ok = AttemptEnd::exited(0).with_output(serde_json::json!({"rows": 3}));
/// assert_eq!(ok.exit, Exit::Code(0));
/// let mut late = AttemptEnd::exited(1);
/// late.interrupt(Interrupt::Killed);
/// late.interrupt(Interrupt::TimedOut); // tells more than the kill
/// assert_eq!(late.interrupt, Some(Interrupt::TimedOut));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AttemptEnd {
    /// How the process ended.
    pub exit: Exit,
    /// Why it ended early, if it did.
    pub interrupt: Option<Interrupt>,
    /// The task's own `fail` message, if it sent one.
    pub failure: Option<TaskFailure>,
    /// The last `output` the task sent.
    pub output: Option<Value>,
    /// The attempt's log lines.
    pub logs: Vec<LogLine>,
    /// The runner that ran it (its name); `None` when this machine ran it.
    pub runner: Option<String>,
    /// How many of its mutations were acknowledged, when a runner
    /// counted them (remote attempts); `None` for local ones.
    pub mutations: Option<u32>,
}

impl AttemptEnd {
    /// An attempt whose process exited with `code`.
    pub fn exited(code: i32) -> AttemptEnd {
        AttemptEnd::ended(Exit::Code(code))
    }

    /// An attempt whose process ended as `exit`.
    pub fn ended(exit: Exit) -> AttemptEnd {
        AttemptEnd {
            exit,
            interrupt: None,
            failure: None,
            output: None,
            logs: Vec::new(),
            runner: None,
            mutations: None,
        }
    }

    /// An attempt that broke (`message` says how) without an exit to report.
    pub fn broken(message: impl Into<String>) -> AttemptEnd {
        let mut end = AttemptEnd::ended(Exit::Unknown);
        end.interrupt(Interrupt::Broken(message.into()));
        end
    }

    /// The same end with the task's output.
    pub fn with_output(mut self, output: Value) -> AttemptEnd {
        self.output = Some(output);
        self
    }

    /// The same end with the task's log lines.
    pub fn with_logs(mut self, logs: Vec<LogLine>) -> AttemptEnd {
        self.logs = logs;
        self
    }

    /// Records an interrupt, keeping the one that tells more when there
    /// already is one (a break, then a timeout, then a kill).
    pub fn interrupt(&mut self, why: Interrupt) {
        if self
            .interrupt
            .as_ref()
            .is_none_or(|i| why.rank() > i.rank())
        {
            self.interrupt = Some(why);
        }
    }

    /// The exit code, when the process exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }
}

/// What the engine asks of a running attempt it wants gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stop {
    /// Kill it now (its whole process group, `SIGKILL`).
    Kill,
    /// Ask it to stop (`SIGTERM` to its process group), and kill it if it
    /// has not ended after this grace period. A later [`Stop::Kill`]
    /// cuts the grace short.
    Terminate(std::time::Duration),
}

/// The executor's line back to the engine, for one attempt.
#[derive(Debug)]
#[non_exhaustive]
pub struct AttemptLink {
    /// The attempt.
    pub id: AttemptId,
    /// Reports go here.
    pub reports: mpsc::UnboundedSender<Report>,
    /// What the engine asks when it wants the attempt gone (closed once
    /// the engine no longer cares: the attempt ended).
    pub kill: mpsc::UnboundedReceiver<Stop>,
    /// Whether the engine wants each log line as it is written
    /// ([`Report::Log`]): someone follows the logs.
    pub follow_logs: bool,
}

impl AttemptLink {
    /// A link (the engine makes these; tests of executors too).
    pub fn new(
        id: AttemptId,
        reports: mpsc::UnboundedSender<Report>,
        kill: mpsc::UnboundedReceiver<Stop>,
    ) -> AttemptLink {
        AttemptLink {
            id,
            reports,
            kill,
            follow_logs: false,
        }
    }

    /// The same link, asking for each log line as it is written.
    pub fn following_logs(mut self, on: bool) -> AttemptLink {
        self.follow_logs = on;
        self
    }

    /// Reports the attempt's end (at most once: the link is consumed).
    pub fn finish(self, end: AttemptEnd) {
        let _ = self.reports.send(Report::Finished {
            attempt: self.id,
            end,
        });
    }
}

/// Why an attempt could not be started. The attempt then fails with this
/// message (and is retried like any failure).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// What the task needs is missing: a script, an interpreter, the
    /// workflow binary.
    #[error("{0}")]
    Missing(String),
    /// This executor does not run this kind of task.
    #[error("{kind} tasks do not run on this executor: {why}")]
    Unsupported {
        /// The task kind (`python`, `command`, …).
        kind: &'static str,
        /// Why, or where they run instead.
        why: String,
    },
    /// The executor refused for its own reason.
    #[error("{0}")]
    Refused(String),
}

/// Starts attempts.
pub trait Executor: Send + Sync {
    /// Starts the attempt described by `spec`; returns its process id (if
    /// it holds a process). When it returns `Ok` it must report the end
    /// exactly once through `link` ([`AttemptLink::finish`]).
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError>;

    /// `None` when an attempt of `task` can be launched now without
    /// blocking (the default). Otherwise the executor is still getting
    /// ready for such attempts (a Python fork server importing its
    /// preloads): the engine leaves the node ready, keeps running
    /// everything else, and asks again once the returned future completes.
    /// `launch` must stay usable anyway: the engine may be one that never
    /// asks.
    fn not_ready(&self, task: &Task) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let _ = task;
        None
    }

    /// Removes what attempts of `run` may have left when the orchestrator
    /// that drove them stopped without ending them (containers, which
    /// outlive their client): called when the run is taken over, before
    /// any of its attempts start, if the run has tasks that leave such
    /// things. Returns what it removed, for the log. The default removes
    /// nothing.
    fn clean_up_run(&self, run: &str) -> Result<Vec<String>, String> {
        let _ = run;
        Ok(Vec::new())
    }
}

/// An executor shared by a workflow and its runs (`Debug` for the
/// builder; see [`crate::Workflow::executor`]).
#[derive(Clone)]
pub struct SharedExecutor(pub Arc<dyn Executor>);

impl fmt::Debug for SharedExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedExecutor(..)")
    }
}

/// A stable content hash (64-bit FNV-1a, 16 hex digits): the same bytes
/// give the same hash in every build, unlike `std`'s hashers.
pub(crate) fn content_hash(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Answers one protocol message (`body`, numbered `seq`) of attempt
/// `link.id`, the same for every executor that speaks the task protocol:
/// a mutation goes to the engine and its verdict comes back; the output
/// and a failure are kept in `end`; log lines go to `log(stream, text)`.
/// Returns the reply line for the task.
pub(crate) async fn answer_message(
    link: &AttemptLink,
    seq: u64,
    body: protocol::Body,
    end: &mut AttemptEnd,
    mut log: impl FnMut(&str, String),
) -> String {
    use protocol::Body;
    match body {
        Body::Mutation(mutation) => {
            let (tx, rx) = oneshot::channel();
            let sent = link.reports.send(Report::Mutation {
                attempt: link.id.clone(),
                mutation,
                reply: tx,
            });
            match (sent, rx.await) {
                (Ok(()), Ok(Ok(()))) => protocol::ack(seq),
                (Ok(()), Ok(Err(e))) => {
                    log("orch", format!("rejected: {e}"));
                    protocol::error(seq, &e)
                }
                _ => protocol::error(seq, "the orchestrator is shutting down"),
            }
        }
        Body::Output(v) => {
            end.output = Some(v);
            protocol::ack(seq)
        }
        Body::Log { level, message } => {
            log("log", format!("[{level}] {message}"));
            protocol::ack(seq)
        }
        Body::Rejected(e) => {
            log("orch", format!("rejected: {e}"));
            protocol::error(seq, &e)
        }
        Body::Fail { message, retry } => {
            end.failure = Some(TaskFailure { message, retry });
            protocol::ack(seq)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Task;

    #[test]
    fn kinds_are_named_as_the_json_names_them() {
        for task in [
            Task::python("a.py"),
            Task::python_fn("m:f"),
            Task::command(["true"]),
            Task::native("t"),
            Task::input(),
            Task::container("img"),
        ] {
            let json = serde_json::to_value(&task).unwrap();
            assert_eq!(json["kind"], task.exec.kind(), "{json}");
        }
    }

    #[test]
    fn a_container_task_is_flat_json_and_refuses_unknown_fields() {
        let task = Task::container(crate::model::Container::new("img").command(["sh"]));
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "", "kind": "container", "image": "img", "command": ["sh"]})
        );
        assert_eq!(serde_json::from_value::<Task>(json).unwrap(), task);
        let typo = serde_json::json!({"kind": "container", "image": "img", "netwrok": true});
        let e = serde_json::from_value::<Task>(typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("netwrok"), "{e}");
        assert!(
            std::mem::size_of::<crate::model::Exec>() <= 48,
            "the container spec stays boxed"
        );
    }
}
