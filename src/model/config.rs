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
        }
    }
}
