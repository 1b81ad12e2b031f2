//! Typed errors of the library.

use std::path::PathBuf;

use thiserror::Error;

/// A mutation that breaks a structural rule (SPEC §4). Names the mutation
/// and the node ids at fault.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{mutation}: {reason}")]
pub struct StructuralError {
    /// The mutation, e.g. ``add_edge `a` -> `b` ``.
    pub mutation: String,
    /// Why it was refused.
    pub reason: String,
}

/// Errors of the orch library.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The registration batch broke a structural rule.
    #[error("workflow `{workflow}` cannot be registered: {source}")]
    Registration {
        /// The workflow's name.
        workflow: String,
        /// The rule that was broken.
        #[source]
        source: StructuralError,
    },
    /// The store failed.
    #[error("database {path}: {source}")]
    Store {
        /// The database file (or URL).
        path: PathBuf,
        /// What the database said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A workflow file cannot be used (file, line, column, why).
    #[cfg(feature = "files")]
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    /// The engine could not drive a run to its end.
    #[error("run `{run}`: {message}")]
    Engine {
        /// The run id.
        run: String,
        /// What happened.
        message: String,
    },
    /// A run is owned by a live engine and its lease holds.
    #[error("run `{run}` is owned elsewhere: {owner}; stop that engine, wait for its lease to expire, or force")]
    Owned {
        /// The run id.
        run: String,
        /// Who owns it, and until when.
        owner: String,
    },
    /// This engine's lease on a run was taken over: it wrote nothing and
    /// stops driving the run.
    #[error("run `{run}` was taken over while this engine drove it (its epoch {epoch} is stale: {owner}); this engine stops driving it and wrote nothing more")]
    Fenced {
        /// The run id.
        run: String,
        /// The epoch this engine held.
        epoch: u64,
        /// Who holds it now.
        owner: String,
    },
    /// The database holds something this version cannot read.
    #[error("database {path}: {message}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No run matches the given id.
    #[error("no run `{0}` in the database")]
    UnknownRun(String),
    /// No runner is registered under this id (it never was, or it was
    /// forgotten).
    #[error("no runner `{0}` is registered; register again")]
    UnknownRunner(String),
    /// A report for an attempt that is not held by the runner that sent
    /// it (superseded by a later attempt, expired, cleared, or never
    /// claimed): it is refused.
    #[error("attempt {attempt} is fenced: {why}; its report is refused")]
    AttemptFenced {
        /// The attempt (`run/node#n`).
        attempt: String,
        /// Why it is not the runner's.
        why: String,
    },
    /// A control was asked of a run that already ended.
    #[error("run `{run}` already ended ({status}); there is nothing to {control}")]
    RunEnded {
        /// The run id.
        run: String,
        /// Its final status.
        status: String,
        /// What was asked.
        control: String,
    },
    /// Input was delivered to a node that does not wait for input.
    #[error("node `{node}` of run `{run}` runs a `{kind}` task, not an input task; only input tasks take delivered values")]
    NotInput {
        /// The run id.
        run: String,
        /// The node id.
        node: String,
        /// Its task kind.
        kind: String,
    },
    /// A run cannot be resumed.
    #[error("run `{run}` cannot be resumed: {message}")]
    Resume {
        /// The run id.
        run: String,
        /// Why.
        message: String,
    },
    /// A run id prefix matches several runs.
    #[error("run id `{prefix}` is ambiguous: it matches {matches}; give more of the id")]
    AmbiguousRun {
        /// The prefix given.
        prefix: String,
        /// Some of the runs it matches.
        matches: String,
    },
    /// No node with this id in the run.
    #[error("run `{run}` has no node `{node}`")]
    UnknownNode {
        /// The run id.
        run: String,
        /// The node id that was asked for.
        node: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Python interpreter could not be found or run.
    #[error("Python interpreter `{interpreter}` cannot be used: {message} (install Python 3, or set ORCH_PYTHON or Workflow::python to an interpreter path)")]
    Python {
        /// The interpreter as configured.
        interpreter: String,
        /// What went wrong.
        message: String,
    },
    /// The orchestrator refused a message of a native task (a mutation
    /// that breaks a rule or a promise, inputs of the wrong type), or the
    /// protocol stream broke.
    #[error("{what} was refused: {message}")]
    Refused {
        /// What was sent, e.g. ``add_node `sq.3` ``.
        what: String,
        /// The orchestrator's answer.
        message: String,
    },
    /// Two `#[orch::task]` functions of this binary have the same task
    /// name: a child started for it could run either.
    #[error("two #[orch::task] functions are named `{name}`: one in `{first}`, one in `{second}`; give one another name with #[task(name = \"...\")]")]
    DuplicateTask {
        /// The task name.
        name: String,
        /// The module of the first definition.
        first: String,
        /// The module of the second.
        second: String,
    },
    /// This process was started to run a native task that no `#[task]`
    /// of this binary defines; it refuses to orchestrate instead.
    #[error("this process was started to run the native task `{task}` (ORCH_NATIVE_TASK), but this binary defines no `#[orch::task]` of that name; known tasks: {known}")]
    UnknownNativeTask {
        /// The task name asked for.
        task: String,
        /// The names this binary defines.
        known: String,
    },
    /// The warm Python fork server could not start or stopped answering;
    /// Python tasks then start fresh interpreters (never shown to users
    /// except in the warning that says so).
    #[error("the Python fork server is unusable: {message}")]
    ForkServer {
        /// Why.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
