//! The process executor: every attempt is one subprocess in its own
//! process group (a fresh one, or forked from the run's warm Python
//! server), speaking the JSON-lines protocol over its stdio.

mod command;
mod drive;
mod forked;
mod logs;

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{oneshot, watch};

pub use drive::DRAIN_AFTER_EXIT;
pub(crate) use logs::escape_invalid;

use drive::drive;
use forked::from_forked;

use super::container::ContainerEngine;
use super::escape::Mark;
use super::fork::{ForkExit, ForkServer};
use super::{AttemptLink, AttemptSpec, Executor, LaunchError};
use crate::model::{Exec, Task};

/// Where and how processes run.
#[derive(Clone, Debug)]
pub struct ProcessEnv {
    /// Working directory of every task; relative script paths resolve
    /// against it.
    pub base_dir: PathBuf,
    /// The Python interpreter as configured (resolved on first use).
    pub python: String,
    /// The folder holding the `orch` helper package.
    pub helper_dir: PathBuf,
    /// The database path, passed on as `ORCH_DB`.
    pub db: PathBuf,
    /// Per-attempt timeout when the task sets none.
    pub default_timeout: Option<Duration>,
    /// The workflow binary: native tasks run it again in task mode.
    pub native_binary: Option<PathBuf>,
    /// Whether Python attempts are forked from a warm server (see
    /// `docs/python.md`); `ORCH_PYTHON_FORK=0` turns it off regardless.
    pub python_fork: bool,
    /// Modules the fork server imports before it forks any attempt.
    pub python_preload: Vec<String>,
    /// The run's own folder (`ORCH_RUN_DIR`), and whether tasks run in it
    /// instead of `base_dir`.
    pub run_dir: Option<(PathBuf, bool)>,
    /// The container engine as configured (a name or a path; `None`:
    /// [`crate::exec::container::ENGINE_ENV`], else what the host has).
    pub container_engine: Option<String>,
}

/// The run's fork server, started on the first Python attempt.
enum ForkSlot {
    /// Not needed yet.
    Idle,
    /// Starting on its own thread (importing the preloads); the receiver
    /// turns `true` once it is up or given up on.
    Starting(watch::Receiver<bool>),
    /// Forking attempts.
    Up(ForkServer),
    /// Turned off or unusable: every Python attempt starts a fresh
    /// interpreter.
    Off,
    /// Like `Off`, but the server that stopped or stalled is kept until
    /// the run ends, so the attempts it still runs report their end.
    Retired(#[allow(dead_code)] ForkServer),
}

/// Runs each attempt as a subprocess speaking the protocol. Python
/// attempts are forked from a warm server when the environment allows it
/// (else each starts a fresh interpreter); the server stops when the last
/// clone of the executor is dropped.
#[derive(Clone)]
pub struct ProcessExecutor {
    env: Arc<ProcessEnv>,
    fork: Arc<Mutex<ForkSlot>>,
}

impl std::fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessExecutor")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// False when `ORCH_PYTHON_FORK` is `0` (or `false`, `no`, `off`): the
/// operator's switch to fresh interpreters.
fn fork_allowed_by_env() -> bool {
    !matches!(
        std::env::var("ORCH_PYTHON_FORK")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// How one attempt's process was started.
struct Proc {
    pgid: u32,
    /// The container of a container attempt (`pgid` is its engine's
    /// client).
    container: Option<Ctr>,
    /// What marks its processes, to find those that leave its group.
    mark: Mark,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    exit: ProcExit,
}

/// The container an attempt's process (the engine's client) runs.
struct Ctr {
    engine: ContainerEngine,
    name: String,
    image: String,
}

/// Where the end of an attempt's process is observed.
enum ProcExit {
    /// Our own child (killed if dropped before it ended: `kill_on_drop`).
    Child(Child),
    /// Forked by the server, which reports the end.
    Forked(ForkedExit),
}

/// The end of a forked attempt, as the server reports it. Dropped before
/// that (the orchestrator gave up on the run), it kills the attempt's
/// group, as `kill_on_drop` does for a child of our own.
struct ForkedExit {
    pgid: u32,
    rx: oneshot::Receiver<ForkExit>,
    ended: bool,
}

impl Drop for ForkedExit {
    fn drop(&mut self) {
        if !self.ended {
            kill_group(self.pgid);
        }
    }
}

impl ProcExit {
    /// Waits for the end: (exit code, signal). Cancel-safe.
    async fn wait(&mut self) -> std::io::Result<(Option<i32>, Option<i32>)> {
        match self {
            ProcExit::Child(c) => c.wait().await.map(|s| (s.code(), s.signal())),
            ProcExit::Forked(f) => {
                let end = (&mut f.rx).await;
                f.ended = true;
                match end {
                    Ok(e) => Ok((e.code, e.signal)),
                    Err(_) => Err(std::io::Error::other(
                        "the Python fork server stopped before it reported how the process ended",
                    )),
                }
            }
        }
    }
}

impl ProcessExecutor {
    /// An executor for this environment.
    pub fn new(env: ProcessEnv) -> ProcessExecutor {
        let slot = if !env.python_fork {
            ForkSlot::Off
        } else if !fork_allowed_by_env() {
            tracing::info!("ORCH_PYTHON_FORK=0: Python tasks start fresh interpreters");
            ForkSlot::Off
        } else {
            ForkSlot::Idle
        };
        ProcessExecutor {
            env: Arc::new(env),
            fork: Arc::new(Mutex::new(slot)),
        }
    }

    /// `PYTHONPATH` of Python tasks: the helper, the base directory, then
    /// the orchestrator's own.
    fn pythonpath(&self) -> std::ffi::OsString {
        let env = &self.env;
        let mut pythonpath = std::ffi::OsString::from(&env.helper_dir);
        pythonpath.push(":");
        pythonpath.push(&env.base_dir);
        if let Some(old) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            pythonpath.push(":");
            pythonpath.push(old);
        }
        pythonpath
    }

    /// Variables every attempt gets.
    fn attempt_env(&self, spec: &AttemptSpec, mark: &Mark) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("ORCH_RUN", spec.id.run.clone()),
            ("ORCH_NODE", spec.id.node.clone()),
            ("ORCH_ATTEMPT", spec.id.attempt.to_string()),
            ("ORCH_DB", self.env.db.to_string_lossy().into_owned()),
            mark.env(),
        ];
        if let Some((dir, _)) = &self.env.run_dir {
            vars.push(("ORCH_RUN_DIR", dir.to_string_lossy().into_owned()));
        }
        // Where the workflow's own files are, for a task running in the
        // run's folder (`python3 "$ORCH_WORKFLOW_DIR/tool.py"`).
        vars.push((
            "ORCH_WORKFLOW_DIR",
            self.env.base_dir.to_string_lossy().into_owned(),
        ));
        vars
    }

    /// The folder attempts run in.
    fn cwd(&self) -> &Path {
        match &self.env.run_dir {
            Some((dir, true)) => dir,
            _ => &self.env.base_dir,
        }
    }
}

impl Executor for ProcessExecutor {
    /// A Python attempt waits (the runtime keeps going) while the fork
    /// server starts, so that it forks from the preloaded server like every
    /// later attempt; the first one starts the server.
    fn not_ready(&self, task: &Task) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        if !matches!(task.exec, Exec::Python { .. } | Exec::PythonFn { .. }) {
            return None;
        }
        let mut slot = self.fork.lock().expect("fork slot");
        if matches!(*slot, ForkSlot::Idle) {
            self.begin_start(&mut slot);
        }
        let ForkSlot::Starting(rx) = &*slot else {
            return None;
        };
        let mut rx = rx.clone();
        Some(Box::pin(async move {
            // An error means the starting thread is gone: ready either way.
            let _ = rx.wait_for(|&ready| ready).await;
        }))
    }

    /// Removes the run's containers (by their `orch.run` label).
    fn clean_up_run(&self, run: &str) -> Result<Vec<String>, String> {
        let engine = ContainerEngine::resolve(self.env.container_engine.as_deref())
            .map_err(|e| e.to_string())?;
        engine.remove_run(run)
    }

    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        if let Some(need) = &spec.task.requires {
            if let Some(why) = crate::exec::resources::Offer::here().refuses(need) {
                return Err(LaunchError::Refused(why));
            }
        }
        // Checked before anything starts: a task may carry any number.
        let timeout = match spec.task.timeout {
            Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| {
                LaunchError::Refused(format!(
                    "the task's timeout must be a non-negative number of seconds, not {t}"
                ))
            })?),
            None => self.env.default_timeout,
        };
        let mut mark = Mark::new();
        let proc = match self.try_fork(&spec, &mark) {
            Some(forked) => {
                mark.forked(&crate::exec::fork::marker_name(&spec.id.run, &spec.id.node));
                from_forked(forked, mark).map_err(LaunchError::Refused)?
            }
            None => {
                let (mut cmd, container) = self.command(&spec, &mark)?;
                let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
                    program: cmd.as_std().get_program().to_string_lossy().into_owned(),
                    source,
                })?;
                Proc {
                    pgid: child.id().unwrap_or(0),
                    container,
                    mark,
                    stdin: child.stdin.take().expect("piped stdin"),
                    stdout: child.stdout.take().expect("piped stdout"),
                    stderr: child.stderr.take().expect("piped stderr"),
                    exit: ProcExit::Child(child),
                }
            }
        };
        let pid = Some(proc.pgid).filter(|&p| p > 0);
        tokio::spawn(drive(proc, spec, link, timeout));
        Ok(pid)
    }
}

/// True when process `pid` is a Python attempt of `node` in `run` forked
/// by the fork server: it holds the attempt's marker open. (A forked
/// child's `/proc/<pid>/environ` is the server's, so it cannot say.)
pub fn is_forked_attempt(pid: u32, run: &str, node: &str) -> bool {
    crate::exec::fork::holds_marker(pid, run, node)
}

/// Kills a whole process group.
pub fn kill_group(pgid: u32) {
    signal_group(pgid, libc::SIGKILL);
}

/// Sends `signal` to process group `pgid` (never to group 0 or 1).
fn signal_group(pgid: u32, signal: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // has no memory effects.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), signal);
        }
    }
}
