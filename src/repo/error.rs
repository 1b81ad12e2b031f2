//! What can go wrong in the workflow repository, and which kind of
//! answer (not found, invalid, conflict, internal) it deserves.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// The class of a [`RepoError`], for a server to choose its status code:
/// `NotFound` 404, `Invalid` 400 (or 422), `Conflict` 409, `Internal` 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RepoErrorKind {
    /// The workflow, the commit, or the workflow at that commit does not
    /// exist.
    NotFound,
    /// The request is malformed: a name, path, file set, message, author,
    /// commit or limit breaks a rule. The message names it and the rule.
    Invalid,
    /// The repository was busy or moved under the operation too often;
    /// retrying later may succeed.
    Conflict,
    /// git is missing or failed, the disk failed, or the repository holds
    /// something this code did not write. Not the caller's fault.
    Internal,
}

/// An error of the workflow repository. Its message names the workflow,
/// the path, the commit or the git command at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The `git` program is not on `PATH`.
    #[error("the `git` program was not found on PATH (install git to keep workflows under git): {source}")]
    GitMissing {
        /// What starting it said.
        #[source]
        source: std::io::Error,
    },
    /// git could not be started or waited for.
    #[error("{command}: could not run: {source}")]
    Spawn {
        /// The git subcommand.
        command: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A git call failed.
    #[error("{command} failed (exit code {}): {}", code.map_or_else(|| "none, killed by a signal".to_string(), |c| c.to_string()), if stderr.is_empty() { "no message" } else { stderr })]
    Git {
        /// The git subcommand.
        command: String,
        /// Its exit code, `None` when a signal ended it.
        code: Option<i32>,
        /// The start of what it wrote to stderr.
        stderr: String,
    },
    /// A git call ran out of time and was killed.
    #[error("{command} took longer than {after:?} and was killed")]
    GitTimeout {
        /// The git subcommand.
        command: String,
        /// The time limit.
        after: Duration,
    },
    /// A git call wrote more than its cap and was stopped.
    #[error("{command} wrote more than {limit} bytes and was stopped")]
    GitOutputTooLarge {
        /// The git subcommand.
        command: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// git said something this code does not understand.
    #[error("{command}: unexpected output: {detail}")]
    Unexpected {
        /// The git subcommand.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The directory exists but is not a bare git repository this code
    /// can use.
    #[error("{}: not a workflow repository: {reason}", dir.display())]
    NotARepository {
        /// The directory.
        dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Another process held the repository's lock for too long.
    #[error("{}: the repository is busy (its lock was held for more than {after:?}); try again", dir.display())]
    Busy {
        /// The repository.
        dir: PathBuf,
        /// How long this call waited.
        after: Duration,
    },
    /// The branch moved under a publish or delete more often than it
    /// retried (something other than orch writes to the repository).
    #[error("workflow `{}`: the branch moved under the change {attempts} times in a row; nothing was written, try again", Shown(workflow))]
    Conflict {
        /// The workflow.
        workflow: String,
        /// How many times it tried.
        attempts: u32,
    },
    /// A workflow name breaks the naming rule.
    #[error("workflow name `{}` is invalid: {reason}", Shown(name))]
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A file path of a workflow breaks the path rules.
    #[error(
        "workflow `{}`: file path `{}` is invalid: {reason}",
        Shown(workflow),
        Shown(path)
    )]
    InvalidPath {
        /// The workflow.
        workflow: String,
        /// The path as given.
        path: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The set of files of a workflow breaks a rule (count, sizes, main
    /// file).
    #[error("workflow `{}`: {reason}", Shown(workflow))]
    InvalidFiles {
        /// The workflow.
        workflow: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A commit message breaks a rule.
    #[error(
        "workflow `{}`: the commit message is invalid: {reason}",
        Shown(workflow)
    )]
    InvalidMessage {
        /// The workflow.
        workflow: String,
        /// The rule it breaks.
        reason: String,
    },
    /// An author's name or email breaks a rule.
    #[error("author {field} `{}` is invalid: {reason}", Shown(value))]
    InvalidAuthor {
        /// `name` or `email`.
        field: &'static str,
        /// The value as given.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A commit id is not 4 to 40 hexadecimal digits, or a prefix
    /// matches more than one object.
    #[error("commit `{}` is invalid: {reason}", Shown(commit))]
    InvalidCommit {
        /// The commit as given.
        commit: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A history page size out of range.
    #[error("history limit {limit} is out of range (1 to {max})")]
    InvalidLimit {
        /// The limit asked for.
        limit: usize,
        /// The largest allowed.
        max: usize,
    },
    /// No workflow of that name at the head of the repository.
    #[error("workflow `{}` does not exist", Shown(workflow))]
    WorkflowNotFound {
        /// The workflow.
        workflow: String,
    },
    /// No commit with that id in the repository's history.
    #[error(
        "commit `{}` is not in the workflow repository's history",
        Shown(commit)
    )]
    CommitNotFound {
        /// The commit as given.
        commit: String,
    },
    /// The workflow does not exist at that commit.
    #[error("workflow `{}` does not exist at commit {commit}", Shown(workflow))]
    NotFoundAt {
        /// The workflow.
        workflow: String,
        /// The full commit id.
        commit: String,
    },
    /// The repository holds an entry this code never writes (a symbolic
    /// link, a submodule, an oversized file) where a workflow file was
    /// expected.
    #[error("workflow `{}` at commit {commit}: {reason}", Shown(workflow))]
    Corrupt {
        /// The workflow.
        workflow: String,
        /// The full commit id.
        commit: String,
        /// What is wrong.
        reason: String,
    },
}

impl RepoError {
    /// The class of this error, for a status code.
    ///
    /// ```
    /// use orch::repo::{validate_name, RepoErrorKind};
    /// let e = validate_name("../etc").unwrap_err();
    /// assert_eq!(e.kind(), RepoErrorKind::Invalid);
    /// assert!(e.to_string().contains("`../etc`"));
    /// ```
    pub fn kind(&self) -> RepoErrorKind {
        use RepoError::*;
        match self {
            WorkflowNotFound { .. } | CommitNotFound { .. } | NotFoundAt { .. } => {
                RepoErrorKind::NotFound
            }
            InvalidName { .. }
            | InvalidPath { .. }
            | InvalidFiles { .. }
            | InvalidMessage { .. }
            | InvalidAuthor { .. }
            | InvalidCommit { .. }
            | InvalidLimit { .. } => RepoErrorKind::Invalid,
            Busy { .. } | Conflict { .. } => RepoErrorKind::Conflict,
            GitMissing { .. }
            | Spawn { .. }
            | Git { .. }
            | GitTimeout { .. }
            | GitOutputTooLarge { .. }
            | Unexpected { .. }
            | Io { .. }
            | NotARepository { .. }
            | Corrupt { .. } => RepoErrorKind::Internal,
        }
    }
}

/// User text in a message: control characters escaped, cut at 200
/// characters, so a hostile name cannot forge log lines or flood them.
pub(crate) struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}
