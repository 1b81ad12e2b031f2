//! What crosses the wire between the server and its runners: the
//! lease's bounds, the files shipped with an attempt and their limits,
//! an attempt's spec and end as JSON, and why a runner's report is
//! refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::exec::{AttemptEnd, AttemptId, AttemptSpec, Exit, Interrupt, TaskFailure};
use crate::history::LogLine;
use crate::model::Task;

/// The environment variable that sets the lease of runners and their
/// claims, in milliseconds (default [`DEFAULT_LEASE_MS`], between
/// [`MIN_LEASE_MS`] and [`MAX_LEASE_MS`]): short in tests, so that a
/// killed runner's attempts come back quickly.
pub const LEASE_ENV: &str = "ORCH_RUNNER_LEASE_MS";
/// The default lease of runners and claims.
pub const DEFAULT_LEASE_MS: i64 = 15_000;
/// The shortest lease [`LEASE_ENV`] may set.
pub const MIN_LEASE_MS: i64 = 300;
/// The longest lease [`LEASE_ENV`] may set.
pub const MAX_LEASE_MS: i64 = 600_000;

/// The lease of runners and claims: [`LEASE_ENV`] (clamped), else the
/// default.
pub fn lease_ms() -> i64 {
    std::env::var(LEASE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(DEFAULT_LEASE_MS, |v| v.clamp(MIN_LEASE_MS, MAX_LEASE_MS))
}

/// The most files a run ships to runners.
pub const MAX_SHIPPED_FILES: usize = 1024;
/// The largest file a run ships to runners, in bytes.
pub const MAX_SHIPPED_FILE: u64 = 16 << 20;
/// The most bytes a run ships to runners, all files together.
pub const MAX_SHIPPED_BYTES: u64 = 64 << 20;

/// The largest artefact (a file a task declares it `produces`) a runner
/// uploads, in bytes.
pub const MAX_ARTEFACT: u64 = 256 << 20;
/// The most bytes of artefacts one attempt uploads, all files together.
pub const MAX_ARTEFACTS: u64 = 1 << 30;

/// `path` as a relative path of plain names (no root, no `.` or `..`
/// steps, at most 1024 bytes, no control characters), or why not: what a
/// shipped file or an artefact may be called.
pub fn check_relative(path: &str) -> std::result::Result<PathBuf, String> {
    const MAX_PATH: usize = 1024;
    if path.is_empty() || path.len() > MAX_PATH || path.chars().any(char::is_control) {
        return Err(format!(
            "path `{}`: 1 to {MAX_PATH} bytes, no control characters",
            path.escape_debug()
        ));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            std::path::Component::Normal(name) => out.push(name),
            _ => {
                return Err(format!(
                "path `{path}`: only names relative to the folder (no `/` first, no `.` or `..`)"
            ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("path `{path}` names no file"));
    }
    Ok(out)
}

/// Where the artefacts of attempt `attempt` of node `node` are kept,
/// under the run's folder `run_dir`: `artefacts/NODE/ATTEMPT`, the node's
/// id with every character but letters, digits, `_` and `-` written
/// `%XX`.
pub fn artefact_dir(run_dir: &Path, node: &str, attempt: u32) -> PathBuf {
    let mut name = String::with_capacity(node.len());
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    run_dir
        .join("artefacts")
        .join(name)
        .join(attempt.to_string())
}

/// A file of a published workflow that an attempt needs on its runner:
/// its path in the workflow's folder, its content's SHA-256 (hex) and its
/// size. The runner fetches the content by hash
/// (`POST attempts/{run}/{node}/{attempt}/file`), fenced by the attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WireFile {
    /// Its path, relative to the workflow's folder.
    pub path: String,
    /// SHA-256 of its content, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The files a run ships to its runners, read from the workflow's
/// folder on the server (the run's checkout of its commit).
#[derive(Clone, Debug)]
pub struct Shipment {
    root: PathBuf,
    files: Vec<WireFile>,
}

impl Shipment {
    /// The files of `source`, found under `root`: each must exist there,
    /// within the limits ([`MAX_SHIPPED_FILES`], [`MAX_SHIPPED_FILE`],
    /// [`MAX_SHIPPED_BYTES`]).
    pub fn new(root: &Path, source: &crate::model::Source) -> Result<Shipment> {
        let refuse = |message: String| Error::Refused {
            what: format!("the files of commit {} for runners", source.commit),
            message,
        };
        if source.files.len() > MAX_SHIPPED_FILES {
            return Err(refuse(format!(
                "{} files, more than the {MAX_SHIPPED_FILES} a run ships",
                source.files.len()
            )));
        }
        let mut files = Vec::with_capacity(source.files.len());
        let mut total = 0u64;
        for (path, sha256) in &source.files {
            let meta =
                std::fs::metadata(root.join(path)).map_err(|e| refuse(format!("`{path}`: {e}")))?;
            if meta.len() > MAX_SHIPPED_FILE {
                return Err(refuse(format!(
                    "`{path}` is {} bytes, more than the {MAX_SHIPPED_FILE} a file may be",
                    meta.len()
                )));
            }
            total += meta.len();
            files.push(WireFile {
                path: path.clone(),
                sha256: sha256.clone(),
                bytes: meta.len(),
            });
        }
        if total > MAX_SHIPPED_BYTES {
            return Err(refuse(format!(
                "{total} bytes in all, more than the {MAX_SHIPPED_BYTES} a run ships"
            )));
        }
        Ok(Shipment {
            root: root.to_path_buf(),
            files,
        })
    }

    /// The files.
    pub fn files(&self) -> &[WireFile] {
        &self.files
    }

    /// Where the file of content `sha256` is on this machine, and what it
    /// is; `None` when no file of the shipment has that content.
    pub fn find(&self, sha256: &str) -> Option<(PathBuf, WireFile)> {
        self.files
            .iter()
            .find(|f| f.sha256 == sha256)
            .map(|f| (self.root.join(&f.path), f.clone()))
    }
}

/// The label a runner started from a workflow binary advertises, and
/// that the attempts of that binary's native tasks require:
/// `binary=` and the SHA-256 of the file's content, in hex.
#[cfg(any(feature = "server", feature = "client"))]
pub fn binary_label(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{BINARY_LABEL}={hex}"))
}

/// The label key of a workflow binary's content hash ([`binary_label`]).
pub const BINARY_LABEL: &str = "binary";

/// An attempt as a runner receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WireSpec {
    /// Which attempt.
    pub id: AttemptId,
    /// What runs.
    pub task: Task,
    /// Inputs with output references resolved.
    pub inputs: Value,
    /// The output of each direct predecessor.
    pub upstream: serde_json::Map<String, Value>,
    /// The files of the published workflow it runs from: the runner puts
    /// them in a folder of their own and runs the attempt's scripts from
    /// there. Empty for a run without published files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<WireFile>,
}

impl From<&AttemptSpec> for WireSpec {
    fn from(s: &AttemptSpec) -> WireSpec {
        WireSpec {
            id: s.id.clone(),
            task: s.task.clone(),
            inputs: s.inputs.clone(),
            upstream: s.upstream.clone(),
            files: Vec::new(),
        }
    }
}

impl From<WireSpec> for AttemptSpec {
    fn from(w: WireSpec) -> AttemptSpec {
        AttemptSpec::new(w.id, w.task, w.inputs, w.upstream)
    }
}

/// How an attempt ended, as a runner reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WireEnd {
    /// The exit code, if the process exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why it broke, if it did.
    #[serde(default)]
    pub broken: Option<String>,
    /// It was killed after its timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// It was killed on request.
    #[serde(default)]
    pub killed: bool,
    /// The task's own `fail` message and whether it may be retried.
    #[serde(default)]
    pub failure: Option<(String, bool)>,
    /// The last output it sent.
    #[serde(default)]
    pub output: Option<Value>,
    /// Its log lines: (line number from 1, stream, text), in order
    /// (those streamed already may be left out).
    #[serde(default)]
    pub logs: Vec<(u32, String, String)>,
    /// How many of its mutations the engine acknowledged, as the runner
    /// counted them: an engine that re-attached to the attempt after a
    /// takeover checks it against the mutations it saw itself.
    #[serde(default)]
    pub mutations: Option<u32>,
}

impl From<&AttemptEnd> for WireEnd {
    fn from(e: &AttemptEnd) -> WireEnd {
        let (exit_code, signal) = match e.exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
            Exit::Unknown => (None, None),
        };
        WireEnd {
            exit_code,
            signal,
            broken: match &e.interrupt {
                Some(Interrupt::Broken(why)) | Some(Interrupt::Lost(why)) => Some(why.clone()),
                _ => None,
            },
            timed_out: e.interrupt == Some(Interrupt::TimedOut),
            killed: e.interrupt == Some(Interrupt::Killed),
            failure: e.failure.as_ref().map(|f| (f.message.clone(), f.retry)),
            output: e.output.clone(),
            logs: e
                .logs
                .iter()
                .map(|l| (l.line, l.stream.clone(), l.text.clone()))
                .collect(),
            mutations: e.mutations,
        }
    }
}

impl WireEnd {
    /// The end of attempt `id` it describes.
    pub fn into_end(self, id: &AttemptId) -> AttemptEnd {
        let exit = match (self.exit_code, self.signal) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Unknown,
        };
        let mut end = AttemptEnd::ended(exit);
        if let Some(why) = self.broken {
            end.interrupt(Interrupt::Broken(why));
        }
        if self.timed_out {
            end.interrupt(Interrupt::TimedOut);
        }
        if self.killed {
            end.interrupt(Interrupt::Killed);
        }
        end.failure = self
            .failure
            .map(|(message, retry)| TaskFailure { message, retry });
        end.output = self.output;
        end.mutations = self.mutations;
        end.logs = self
            .logs
            .into_iter()
            .map(|(line, stream, text)| LogLine {
                node: id.node.clone(),
                attempt: id.attempt,
                line,
                stream,
                text,
            })
            .collect();
        end
    }
}

/// Why a runner's report was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The store refused it (the fence: the runner does not hold the
    /// attempt), or could not be asked.
    #[error(transparent)]
    Store(#[from] Error),
    /// No engine of this server waits for the attempt (its run is driven
    /// by another server, or its owner is gone): the server forwards the
    /// report to the run's owner, or asks the runner to retry.
    #[error("no engine of this server waits for attempt {0}")]
    NotWaiting(AttemptId),
    /// The attempt's task does not declare that it produces this file.
    #[error("attempt {attempt} may upload only the files its task `produces`, not `{path}`")]
    NotDeclared {
        /// The attempt.
        attempt: AttemptId,
        /// The file.
        path: String,
    },
    /// The attempt's run ships no file of that content.
    #[error("attempt {attempt} needs no file of SHA-256 {sha256}")]
    NoSuchFile {
        /// The attempt.
        attempt: AttemptId,
        /// The content asked for.
        sha256: String,
    },
    /// The report is malformed (the message says which field).
    #[error("{0}")]
    Bad(String),
}
