//! What a run needs to run again, as its `run_started` event records it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a run needs to run again, recorded in its `run_started` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunConfig {
    /// The folder tasks run in.
    pub base_dir: PathBuf,
    /// The Python interpreter as configured.
    pub python: String,
    /// How many attempts may run at once.
    pub max_parallel: usize,
    /// The default attempt timeout, in seconds.
    pub default_timeout: Option<f64>,
    /// Whether the run keeps a live picture.
    #[serde(default = "yes")]
    pub live_picture: bool,
    /// Content hash of each Python script the registered nodes run.
    #[serde(default)]
    pub scripts: BTreeMap<String, String>,
    /// The workflow binary, which native tasks run in task mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_binary: Option<PathBuf>,
    /// Fork Python attempts from a warm server.
    #[serde(default = "yes")]
    pub python_fork: bool,
    /// Modules the fork server preloads.
    #[serde(default)]
    pub python_preload: Vec<String>,
    /// What a node failing for good does to the rest of the run.
    #[serde(default, skip_serializing_if = "FailurePolicy::is_default")]
    pub failure_policy: FailurePolicy,
    /// The fire time of a scheduled (or backfilled) run, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<String>,
    /// The run parameters it was started with (workflow files).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Tasks run in the run's own folder (`ORCH_RUN_DIR`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_run_dir: bool,
    /// The container engine: the program the registration's container
    /// tasks were checked against, else the one configured (`None`:
    /// `ORCH_CONTAINER_ENGINE`, else what the host has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_engine: Option<String>,
    /// The published version the run started from (a server's runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// The published version of a workflow a run started from: the commit of
/// the server's workflow repository and the SHA-256 of each of its files.
/// Recorded when the run starts; editing the workflow later never changes
/// it.
///
/// ```
/// let s = orch::model::Source::new("3f2c…", [("workflow.yaml", "ab12…")]);
/// assert_eq!(s.files["workflow.yaml"], "ab12…");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Source {
    /// The commit.
    pub commit: String,
    /// SHA-256 (hex) of each file, by its path in the workflow's folder.
    pub files: BTreeMap<String, String>,
}

impl Source {
    /// A source.
    pub fn new<'a>(commit: &str, files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Source {
        Source {
            commit: commit.to_string(),
            files: files
                .into_iter()
                .map(|(p, h)| (p.to_string(), h.to_string()))
                .collect(),
        }
    }
}

/// What a node that failed for good (its retries used up) does to the
/// rest of its run.
///
/// ```
/// use orch::model::FailurePolicy;
/// assert_eq!(FailurePolicy::default(), FailurePolicy::FailFast);
/// assert_eq!("keep_going".parse::<FailurePolicy>(), Ok(FailurePolicy::KeepGoing));
/// assert_eq!(FailurePolicy::KeepGoing.to_string(), "keep_going");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Nothing new starts; the attempts running finish, then the run ends
    /// `failed` (the default).
    #[default]
    FailFast,
    /// Everything that does not depend on the failed node runs to the end;
    /// the nodes downstream of it become `upstream_failed`; the run ends
    /// `failed`, naming every node that failed (Snakemake's
    /// `--keep-going`, Airflow's default).
    KeepGoing,
}

impl FailurePolicy {
    /// Its name, as the history records it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailFast => "fail_fast",
            FailurePolicy::KeepGoing => "keep_going",
        }
    }

    fn is_default(&self) -> bool {
        *self == FailurePolicy::FailFast
    }
}

impl std::fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<FailurePolicy, String> {
        match s {
            "fail_fast" => Ok(FailurePolicy::FailFast),
            "keep_going" => Ok(FailurePolicy::KeepGoing),
            other => Err(format!(
                "unknown failure policy `{other}` (expected fail_fast or keep_going)"
            )),
        }
    }
}

fn yes() -> bool {
    true
}

impl RunConfig {
    /// A config running tasks in `base_dir` with the interpreter `python`,
    /// one at a time, with the defaults of a new workflow otherwise.
    ///
    /// ```
    /// let c = orch::model::RunConfig::new("/tmp", "python3");
    /// assert_eq!(c.max_parallel, 1);
    /// ```
    pub fn new(base_dir: impl Into<PathBuf>, python: impl Into<String>) -> RunConfig {
        RunConfig {
            base_dir: base_dir.into(),
            python: python.into(),
            max_parallel: 1,
            default_timeout: None,
            live_picture: true,
            scripts: BTreeMap::new(),
            native_binary: None,
            python_fork: true,
            python_preload: Vec::new(),
            failure_policy: FailurePolicy::FailFast,
            fired_at: None,
            params: serde_json::Map::new(),
            per_run_dir: false,
            container_engine: None,
            source: None,
        }
    }
}
