//! How a run runs, as the caller chooses it ([`RunOptions`]); the run
//! records what it needs to run again as a [`crate::model::RunConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::exec::SharedExecutor;
use crate::model::FailurePolicy;

/// How to run a definition: everything that is not *what* runs. The
/// database is the engine's ([`super::Engine::open`]).
///
/// ```
/// let mut opts = orch::engine::RunOptions::default();
/// opts.max_parallel = 4;
/// opts.live_picture = false;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunOptions {
    /// Where tasks run; relative script paths resolve here (default: the
    /// current directory).
    pub dir: Option<PathBuf>,
    /// The Python interpreter (default: `ORCH_PYTHON`, else `python3`).
    pub python: Option<String>,
    /// How many attempts may run at once (at least 1).
    pub max_parallel: usize,
    /// The timeout of attempts whose task sets none.
    pub default_timeout: Option<Duration>,
    /// Whether to keep `<home>/runs/<run>/live.svg` up to date.
    pub live_picture: bool,
    /// Whether Python attempts are forked from a warm server.
    pub python_fork: bool,
    /// Modules the fork server imports before forking.
    pub python_preload: Vec<String>,
    /// The executor of every attempt, instead of the process executor.
    pub executor: Option<SharedExecutor>,
    /// What a node failing for good does to the rest of the run (default:
    /// fail fast).
    pub failure_policy: FailurePolicy,
    /// The run's id (default: a new one); a second start with the same
    /// id is refused.
    pub run_id: Option<String>,
    /// The fire time of a scheduled run (milliseconds since the Unix
    /// epoch), recorded in its config.
    pub fired_at: Option<u64>,
    /// The run parameters, recorded in its config.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Tasks run in the run's own folder, `<database folder>/runs/<run>/work`
    /// (`ORCH_RUN_DIR`), instead of the workflow's folder: two runs never
    /// see each other's files. Scripts and Python modules still come
    /// from the workflow's folder. Workflow files run this way.
    pub per_run_dir: bool,
    /// The published version the run starts from, recorded in its config
    /// and shown by its export.
    pub source: Option<crate::model::Source>,
    /// The container engine of container tasks: `podman`, `docker` or a
    /// path to either (default: `ORCH_CONTAINER_ENGINE`, else `podman`
    /// when the host has it, else `docker`).
    pub container_engine: Option<String>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            dir: None,
            python: None,
            max_parallel: 1,
            default_timeout: None,
            live_picture: true,
            python_fork: true,
            python_preload: Vec::new(),
            executor: None,
            failure_policy: FailurePolicy::FailFast,
            run_id: None,
            fired_at: None,
            params: serde_json::Map::new(),
            per_run_dir: false,
            source: None,
            container_engine: None,
        }
    }
}
