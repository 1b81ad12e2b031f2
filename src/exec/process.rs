//! The process executor: every attempt is one subprocess in its own
//! process group (a fresh one, or forked from the run's warm Python
//! server), speaking the JSON-lines protocol over its stdio.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::container::{container_name, ContainerEngine, Dirs};
use super::escape::{self, Mark};
use super::fork::{ForkExit, ForkServer, Forked, Request};
use super::protocol::{self, Line, Start};
use super::python::resolve_python;
use super::{
    AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Executor, Exit, Interrupt, LaunchError,
    Report, Stop, LOG_LINE_COST, MAX_LINE_BYTES, MAX_LOG_BYTES,
};
use crate::history::LogLine;
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
    /// [`super::container::ENGINE_ENV`], else what the host has).
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

/// How long the pipes of an attempt are still read after its process
/// exited (and its group and escaped processes were killed). Output its
/// process wrote before it exited is read in that time; a pipe still open
/// after it is held by a process that could not be found, and reading
/// stops, so that the attempt ends.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// [`DRAIN_AFTER_EXIT`], or with the `testing` feature the milliseconds
/// `ORCH_TEST_DRAIN_AFTER_EXIT_MS` says (read once).
fn drain_after_exit() -> Duration {
    #[cfg(feature = "testing")]
    {
        static DRAIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
        *DRAIN.get_or_init(|| {
            std::env::var("ORCH_TEST_DRAIN_AFTER_EXIT_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(DRAIN_AFTER_EXIT, Duration::from_millis)
        })
    }
    #[cfg(not(feature = "testing"))]
    DRAIN_AFTER_EXIT
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

    /// Starts the fork server on its own thread (it may take as long as
    /// its preloads take to import, and the runtime's thread must keep
    /// going meanwhile); the slot is `Starting` until it is up or given
    /// up on.
    fn begin_start(&self, slot: &mut ForkSlot) {
        let (ready_tx, ready_rx) = watch::channel(false);
        let env = Arc::clone(&self.env);
        let pythonpath = self.pythonpath();
        let weak = Arc::downgrade(&self.fork);
        let spawned = std::thread::Builder::new()
            .name("orch-fork-start".into())
            .spawn(move || {
                let started = resolve_python(&env.python).and_then(|python| {
                    ForkServer::start(
                        &python,
                        &env.base_dir,
                        &[("PYTHONPATH", pythonpath)],
                        &env.python_preload,
                    )
                });
                let next = match started {
                    Ok(server) => ForkSlot::Up(server),
                    Err(e) => {
                        warn!(error = %e, "Python tasks start fresh interpreters");
                        ForkSlot::Off
                    }
                };
                // When the executor is gone (the run ended meanwhile), the
                // server is dropped here and exits.
                if let Some(slot) = weak.upgrade() {
                    *slot.lock().expect("fork slot") = next;
                }
                let _ = ready_tx.send(true);
            });
        *slot = match spawned {
            Ok(_) => ForkSlot::Starting(ready_rx),
            Err(e) => {
                warn!(error = %e, "cannot start the Python fork server's thread; Python tasks start fresh interpreters");
                ForkSlot::Off
            }
        };
    }

    /// Forks a Python attempt from the run's server, starting the server
    /// first if needed. `None`: start a fresh interpreter instead (fork is
    /// off, the attempt is not Python, or the server is unusable).
    fn try_fork(&self, spec: &AttemptSpec, mark: &Mark) -> Option<Forked> {
        let env = &self.env;
        let (script, call) = match &spec.task.exec {
            Exec::Python { script } => (Some(env.base_dir.join(script)), None),
            Exec::PythonFn { module, function } => (None, Some(format!("{module}:{function}"))),
            _ => return None,
        };
        let mut slot = self.fork.lock().expect("fork slot");
        if matches!(*slot, ForkSlot::Up(ref s) if !s.is_usable()) {
            warn!(
                "the Python fork server stopped or stalled; Python tasks start fresh interpreters from now on"
            );
            if let ForkSlot::Up(server) = std::mem::replace(&mut *slot, ForkSlot::Off) {
                *slot = ForkSlot::Retired(server);
            }
        }
        if matches!(*slot, ForkSlot::Idle) {
            // A caller that did not ask `not_ready` first: never block it
            // while the server preloads.
            self.begin_start(&mut slot);
        }
        if matches!(*slot, ForkSlot::Starting(_)) {
            debug!(node = %spec.id.node, "the Python fork server is still starting; this attempt starts a fresh interpreter");
            return None;
        }
        let ForkSlot::Up(server) = &*slot else {
            return None;
        };
        if let Some(path) = &script {
            if !path.is_file() {
                // The fresh path reports it.
                return None;
            }
        }
        let argv = match (&script, &call) {
            (Some(path), _) => vec![path.to_string_lossy().into_owned()],
            (None, Some(call)) => vec![
                env.helper_dir
                    .join("orch")
                    .join("__main__.py")
                    .to_string_lossy()
                    .into_owned(),
                "call".into(),
                call.clone(),
            ],
            (None, None) => unreachable!("a Python task has a script or a call"),
        };
        let request = Request {
            script: script.as_deref(),
            call: call.as_deref(),
            argv,
            cwd: self.cwd(),
            env: self.attempt_env(spec, mark),
            run: &spec.id.run,
            node: &spec.id.node,
        };
        match server.launch(&request) {
            Ok(forked) => Some(forked),
            Err(e) => {
                warn!(node = %spec.id.node, error = %e, "fork failed; this attempt starts a fresh interpreter");
                None
            }
        }
    }

    /// The `run` command of a container attempt: its engine's client.
    fn container_command(
        &self,
        c: &crate::model::Container,
        spec: &AttemptSpec,
    ) -> Result<(Command, Ctr), LaunchError> {
        c.check()
            .map_err(|e| LaunchError::Refused(format!("container task: {e}")))?;
        for m in &c.mounts {
            if !Path::new(&m.source).exists() {
                return Err(LaunchError::Missing(format!(
                    "the source {} of the container's mount at {} does not exist",
                    m.source, m.target
                )));
            }
        }
        let dirs = Dirs {
            helper: self.env.helper_dir.clone(),
            workflow: self.env.base_dir.clone(),
        };
        if c.runs_python() {
            for dir in [&dirs.helper, &dirs.workflow] {
                if dir.to_string_lossy().contains(',') {
                    return Err(LaunchError::Refused(format!(
                        "{} holds a comma, which the container engines' mount syntax cannot carry; a Python task in a container needs it mounted",
                        dir.display()
                    )));
                }
            }
        }
        let engine = ContainerEngine::resolve(self.env.container_engine.as_deref())
            .map_err(|e| LaunchError::Missing(e.to_string()))?;
        let mut cmd = Command::new(&engine.program);
        cmd.args(engine.run_args(c, &spec.id, &dirs));
        let ctr = Ctr {
            name: container_name(&spec.id),
            image: c.image.clone(),
            engine,
        };
        Ok((cmd, ctr))
    }

    fn command(
        &self,
        spec: &AttemptSpec,
        mark: &Mark,
    ) -> Result<(Command, Option<Ctr>), LaunchError> {
        let env = &self.env;
        let mut ctr = None;
        let mut cmd = match &spec.task.exec {
            Exec::Container(c) => {
                let (cmd, c) = self.container_command(c, spec)?;
                ctr = Some(c);
                cmd
            }
            Exec::Python { script } => {
                let path = env.base_dir.join(script);
                if !path.is_file() {
                    return Err(LaunchError::Missing(format!(
                        "Python script {} not found",
                        path.display()
                    )));
                }
                let python =
                    resolve_python(&env.python).map_err(|e| LaunchError::Missing(e.to_string()))?;
                let mut c = Command::new(python);
                c.arg("-u").arg(path);
                c
            }
            Exec::PythonFn { module, function } => {
                let python =
                    resolve_python(&env.python).map_err(|e| LaunchError::Missing(e.to_string()))?;
                let mut c = Command::new(python);
                c.args(["-u", "-m", "orch", "call"])
                    .arg(format!("{module}:{function}"));
                c
            }
            Exec::Input { .. } => {
                return Err(LaunchError::Unsupported {
                    kind: "input",
                    why: "an input task runs no process; the engine waits for its value".into(),
                })
            }
            Exec::Native { task } => {
                let Some(binary) = &env.native_binary else {
                    return Err(LaunchError::Missing(format!(
                        "native task `{task}` runs in the workflow binary, and this run recorded none"
                    )));
                };
                let mut c = Command::new(binary);
                c.env(super::NATIVE_TASK_ENV, task);
                c
            }
            Exec::Command { argv } => {
                let Some(program) = argv.first() else {
                    return Err(LaunchError::Refused(
                        "command task has an empty argv".into(),
                    ));
                };
                let program = if program.contains('/') {
                    env.base_dir.join(program)
                } else {
                    PathBuf::from(program)
                };
                let mut c = Command::new(program);
                c.args(&argv[1..]);
                c
            }
        };
        let mut vars = self.attempt_env(spec, mark);
        if ctr.is_some() {
            // The client's own helpers (the container's monitor) leave its
            // process group on purpose and outlive it: they must not be
            // taken for the attempt's escaped processes. The container is
            // stopped by its name instead.
            vars.retain(|(k, _)| *k != super::TOKEN_ENV);
        } else {
            cmd.env("PYTHONPATH", self.pythonpath());
        }
        cmd.current_dir(self.cwd())
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok((cmd, ctr))
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
            if let Some(why) = super::resources::Offer::here().refuses(need) {
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
                mark.forked(&super::fork::marker_name(&spec.id.run, &spec.id.node));
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

/// The orchestrator's ends of a forked attempt's pipes, as tokio handles.
fn from_forked(f: Forked, mark: Mark) -> Result<Proc, String> {
    let wrap = |what: &str, e: std::io::Error| {
        kill_group(f.pid);
        format!("forked attempt {}: {what}: {e}", f.pid)
    };
    let pid = f.pid;
    let stdin = ChildStdin::from_std(std::process::ChildStdin::from(f.stdin))
        .map_err(|e| wrap("stdin", e))?;
    let stdout = ChildStdout::from_std(std::process::ChildStdout::from(f.stdout))
        .map_err(|e| wrap("stdout", e))?;
    let stderr = ChildStderr::from_std(std::process::ChildStderr::from(f.stderr))
        .map_err(|e| wrap("stderr", e))?;
    Ok(Proc {
        pgid: pid,
        container: None,
        mark,
        stdin,
        stdout,
        stderr,
        exit: ProcExit::Forked(ForkedExit {
            pgid: pid,
            rx: f.exit,
            ended: false,
        }),
    })
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

enum Read {
    Line(Vec<u8>),
    TooLong(Vec<u8>),
    Eof,
}

/// Reads lines of bounded length; cancel-safe (all state lives in the
/// struct and is changed only after a read completes).
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    scanned: usize,
    eof: bool,
    skipping: bool,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            scanned: 0,
            eof: false,
            skipping: false,
            max,
        }
    }

    async fn next(&mut self) -> std::io::Result<Read> {
        loop {
            if let Some(p) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + p;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Read::Line(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                let prefix = self.buf[..1024.min(self.buf.len())].to_vec();
                self.buf.clear();
                self.scanned = 0;
                if !std::mem::replace(&mut self.skipping, true) {
                    return Ok(Read::TooLong(prefix));
                }
            }
            if self.eof {
                if self.buf.is_empty() || std::mem::take(&mut self.skipping) {
                    self.buf.clear();
                    return Ok(Read::Eof);
                }
                self.scanned = 0;
                return Ok(Read::Line(std::mem::take(&mut self.buf)));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// `bytes` as text: valid UTF-8 as it is, each byte that is not part of
/// valid UTF-8 as `\xNN` (two lowercase hex digits), and how many bytes
/// were shown so. A backslash already in the text stays as it is, so a
/// valid line is never changed; the log line noting the change (see
/// [`Collector::note_invalid`]) tells the two apart.
pub(crate) fn escape_invalid(bytes: &[u8]) -> (Cow<'_, str>, usize) {
    let mut rest = match std::str::from_utf8(bytes) {
        Ok(text) => return (Cow::Borrowed(text), 0),
        Err(_) => bytes,
    };
    let mut out = String::with_capacity(bytes.len() + 16);
    let mut bad = 0;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                return (Cow::Owned(out), bad);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                let n = e.error_len().unwrap_or(after.len());
                for b in &after[..n] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                bad += n;
                rest = &after[n..];
            }
        }
    }
}

/// A line read from a pipe as text (without a copy when it is valid
/// UTF-8): the text as [`escape_invalid`] gives it, how many bytes it
/// shows as `\xNN`, and the offset of the first of them.
fn line_text(bytes: Vec<u8>) -> (String, usize, Option<usize>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, 0, None),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let (text, bad) = escape_invalid(e.as_bytes());
            (text.into_owned(), bad, Some(at))
        }
    }
}

/// The start of a line cut at a byte count: without a character cut in
/// two at its end (when the rest is valid UTF-8).
fn without_cut_char(prefix: &[u8]) -> &[u8] {
    match std::str::from_utf8(prefix) {
        Err(e) if e.error_len().is_none() => &prefix[..e.valid_up_to()],
        _ => prefix,
    }
}

/// "stdout", "stderr" or "stdout and stderr": the pipes still open.
fn open_pipes(out_done: bool, err_done: bool) -> &'static str {
    match (out_done, err_done) {
        (false, false) => "stdout and stderr were",
        (false, true) => "stdout was",
        _ => "stderr was",
    }
}

struct Collector {
    node: String,
    attempt: u32,
    logs: Vec<LogLine>,
    bytes: usize,
    dropped: usize,
    /// Lines that had bytes that are not UTF-8: the first is noted right
    /// after it, the others counted in a last line.
    not_utf8: usize,
    /// Where each kept line goes as it is written, when logs are followed.
    live: Option<(AttemptId, mpsc::UnboundedSender<Report>)>,
}

impl Collector {
    /// Keeps a line, unless the log is over [`MAX_LOG_BYTES`] (then it is
    /// counted as dropped); true when kept.
    fn push(&mut self, stream: &str, text: String) -> bool {
        let cost = text.len() + LOG_LINE_COST;
        if self.bytes + cost > MAX_LOG_BYTES {
            self.dropped += 1;
            return false;
        }
        self.append(stream, text);
        true
    }

    /// Keeps one of the orchestrator's own lines about the attempt (how it
    /// ended, what it changed), over the cap too: there are few of them.
    fn note(&mut self, text: String) {
        self.append("orch", text);
    }

    fn append(&mut self, stream: &str, text: String) {
        self.bytes += text.len() + LOG_LINE_COST;
        let line = LogLine {
            node: self.node.clone(),
            attempt: self.attempt,
            line: self.logs.len() as u32 + 1,
            stream: stream.to_string(),
            text,
        };
        if let Some((attempt, reports)) = &self.live {
            let _ = reports.send(Report::Log {
                attempt: attempt.clone(),
                line: line.clone(),
            });
        }
        self.logs.push(line);
    }

    /// Logs line `number` of `stream`, its bytes that are not UTF-8 shown
    /// as `\xNN` (and noted).
    fn push_bytes(&mut self, stream: &str, number: u64, bytes: Vec<u8>) {
        let (text, bad, _) = line_text(bytes);
        let kept = self.push(stream, text);
        self.note_invalid(stream, number, bad, kept);
    }

    /// Says that line `number` of `stream` (`kept` or dropped) had `bad`
    /// bytes shown as `\xNN`: the first such kept line of the attempt
    /// right away, the others counted at the end. Never a changed value
    /// without a word.
    fn note_invalid(&mut self, stream: &str, number: u64, bad: usize, kept: bool) {
        if bad == 0 || !kept {
            return;
        }
        self.not_utf8 += 1;
        if self.not_utf8 == 1 {
            let (s, are) = if bad == 1 { ("", "is") } else { ("s", "are") };
            self.note(format!(
                "line {number} of {stream} had {bad} byte{s} that {are} not UTF-8, shown as \\xNN"
            ));
        }
    }

    fn finish(mut self) -> Vec<LogLine> {
        if self.not_utf8 > 1 {
            let n = self.not_utf8 - 1;
            let lines = if n == 1 { "line" } else { "lines" };
            self.note(format!(
                "{n} more {lines} had bytes that are not UTF-8, shown as \\xNN"
            ));
        }
        if self.dropped > 0 {
            let n = self.dropped;
            self.note(format!(
                "{n} more log lines dropped (over {MAX_LOG_BYTES} bytes)"
            ));
        }
        self.logs
    }
}

/// Runs one attempt to its end: feeds stdin, reads stdout (protocol and
/// log) and stderr (log), and watches the process, its timeout and the
/// engine's stops.
///
/// The attempt ends when its process has exited: its group is killed,
/// then the processes that left the group (found by its [`Mark`]), then
/// the pipes are read for at most [`DRAIN_AFTER_EXIT`] (or until the
/// timeout, which counts from the start to the end of the attempt).
async fn drive(proc: Proc, spec: AttemptSpec, mut link: AttemptLink, timeout: Option<Duration>) {
    let Proc {
        pgid,
        container,
        mark,
        mut stdin,
        stdout,
        stderr,
        exit: mut process,
    } = proc;
    let mut out = LineReader::new(stdout, MAX_LINE_BYTES);
    let mut err = LineReader::new(stderr, MAX_LINE_BYTES);
    let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(line) = stdin_rx.recv().await {
            if stdin.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdin.flush().await;
        }
    });
    let start = Start::new(
        &spec.id.run,
        &spec.id.node,
        spec.id.attempt,
        &spec.task,
        spec.inputs.clone(),
        spec.upstream.clone(),
    );
    let _ = stdin_tx.send(start.to_line());

    let mut logs = Collector {
        node: spec.id.node.clone(),
        attempt: spec.id.attempt,
        logs: Vec::new(),
        bytes: 0,
        dropped: 0,
        not_utf8: 0,
        live: link
            .follow_logs
            .then(|| (link.id.clone(), link.reports.clone())),
    };
    let mut end = AttemptEnd::ended(Exit::Unknown);
    // Once broken, the rest of stdout is only logged.
    let mut broken = false;
    // Killed by its timeout (before it exited).
    let mut timed_out = false;
    // The timeout came after it exited, while a pipe was still open.
    let mut cut = false;
    // When a stop asked with a grace period turns into a kill.
    let mut term_deadline: Option<tokio::time::Instant> = None;
    // When the group was killed before the process's end was seen: a
    // forked attempt's end is reported by the fork server, which a task
    // may have stopped; the wait for that report is bounded.
    let mut killed_at: Option<tokio::time::Instant> = None;
    // Whether the engine asked the attempt to stop (SIGTERM).
    let mut terminated = false;
    let mut last_seq = 0u64;
    let mut status = None;
    // Until when the pipes are read once the process exited.
    let mut drain: Option<tokio::time::Instant> = None;
    // Lines read per stream, for the notes that name one.
    let (mut out_lines, mut err_lines) = (0u64, 0u64);
    let (mut out_done, mut err_done, mut kill_done) = (false, false, false);
    // A container attempt's last stderr line: the engine's own complaint
    // when it could not run the container.
    let mut last_err: Option<String> = None;
    let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
    tokio::pin!(sleep);

    while !(out_done && err_done && status.is_some()) {
        tokio::select! {
            r = out.next(), if !out_done => match r {
                Ok(Read::Line(bytes)) => {
                    out_lines += 1;
                    let (line, bad, first_bad) = line_text(bytes);
                    if broken {
                        let kept = logs.push("stdout", line);
                        logs.note_invalid("stdout", out_lines, bad, kept);
                        continue;
                    }
                    if let Some(at) = first_bad {
                        if protocol::is_marked(&line) {
                            // A protocol line is data: never guessed at.
                            broken = true;
                            end.interrupt(Interrupt::Broken(format!(
                                "protocol line is not UTF-8 (byte {at} is the first that is not; shown as \\xNN): {}",
                                protocol::quote(&line)
                            )));
                            kill_group(pgid);
                        } else {
                            let kept = logs.push("stdout", line);
                            logs.note_invalid("stdout", out_lines, bad, kept);
                        }
                        continue;
                    }
                    match protocol::classify(&line) {
                        Line::Log => {
                            logs.push("stdout", line);
                        }
                        Line::Malformed(why) => {
                            broken = true;
                            end.interrupt(Interrupt::Broken(format!("malformed protocol line ({why}): {}", protocol::quote(&line))));
                            kill_group(pgid);
                        }
                        Line::Message(m) => {
                            if m.seq <= last_seq {
                                broken = true;
                                end.interrupt(Interrupt::Broken(format!(
                                    "protocol line has seq {} but the previous one had {last_seq}: {}",
                                    m.seq, protocol::quote(&line)
                                )));
                                kill_group(pgid);
                                continue;
                            }
                            last_seq = m.seq;
                            let reply = super::answer_message(&link, m.seq, m.body, &mut end, |stream, text| {
                                logs.push(stream, text);
                            })
                            .await;
                            let _ = stdin_tx.send(reply);
                        }
                    }
                }
                Ok(Read::TooLong(prefix)) => {
                    out_lines += 1;
                    let (head, bad) = escape_invalid(without_cut_char(&prefix));
                    if !protocol::is_marked(&head) {
                        let kept = logs.push("stdout", format!("{head}… [line over {MAX_LINE_BYTES} bytes truncated]"));
                        logs.note_invalid("stdout", out_lines, bad, kept);
                    } else if !broken {
                        broken = true;
                        end.interrupt(Interrupt::Broken(format!(
                            "protocol line longer than {MAX_LINE_BYTES} bytes: {}",
                            protocol::quote(&head)
                        )));
                        kill_group(pgid);
                    }
                }
                Ok(Read::Eof) => out_done = true,
                Err(e) => {
                    logs.note(format!("reading stdout failed: {e}"));
                    out_done = true;
                }
            },
            r = err.next(), if !err_done => match r {
                Ok(Read::Line(bytes)) => {
                    err_lines += 1;
                    if container.is_some() && !bytes.iter().all(u8::is_ascii_whitespace) {
                        last_err = Some(String::from_utf8_lossy(&bytes[..bytes.len().min(1000)]).into_owned());
                    }
                    logs.push_bytes("stderr", err_lines, bytes);
                }
                Ok(Read::TooLong(prefix)) => {
                    err_lines += 1;
                    let (head, bad) = escape_invalid(without_cut_char(&prefix));
                    let kept = logs.push("stderr", format!("{head}… [line over {MAX_LINE_BYTES} bytes truncated]"));
                    logs.note_invalid("stderr", err_lines, bad, kept);
                }
                Ok(Read::Eof) => err_done = true,
                Err(e) => {
                    logs.note(format!("reading stderr failed: {e}"));
                    err_done = true;
                }
            },
            s = process.wait(), if status.is_none() => {
                // Stragglers of the group would keep the pipes open.
                kill_group(pgid);
                status = Some(s);
                // Then those that left the group: they may hold the pipes
                // too, or run on unseen. Most attempts started no process
                // but their own, which the pid counters tell at once;
                // only the others are looked for in `/proc`, on a
                // blocking thread.
                let sweep = if escape::nothing_to_sweep(&mark, pgid) {
                    Ok(Vec::new())
                } else {
                    let mark = mark.clone();
                    tokio::task::spawn_blocking(move || escape::sweep(&mark, pgid)).await
                };
                match sweep {
                    Ok(found) => {
                        for escaped in found {
                            logs.note(escaped.to_string());
                        }
                    }
                    Err(e) => logs.note(format!("looking for processes that left the attempt's process group failed: {e}")),
                }
                drain = Some(tokio::time::Instant::now() + drain_after_exit());
            }
            () = tokio::time::sleep_until(drain.unwrap_or_else(tokio::time::Instant::now)),
                if drain.is_some() => {
                drain = None;
                logs.note(format!(
                    "{} still open {:.3}s after the process exited (held by a process that could not be found): stopped reading",
                    open_pipes(out_done, err_done),
                    drain_after_exit().as_secs_f64()
                ));
                (out_done, err_done) = (true, true);
            }
            () = &mut sleep, if deadline.is_some() && !timed_out && !cut => {
                if status.is_none() {
                    timed_out = true;
                    end.interrupt(Interrupt::TimedOut);
                    kill_group(pgid);
                    killed_at.get_or_insert_with(tokio::time::Instant::now);
                } else {
                    // It exited within its timeout; the timeout still
                    // bounds how long its pipes are read.
                    cut = true;
                    logs.note(format!(
                        "{} still open at its timeout of {:.3}s, after the process exited: stopped reading",
                        open_pipes(out_done, err_done),
                        timeout.unwrap_or_default().as_secs_f64()
                    ));
                    (out_done, err_done) = (true, true);
                }
            }
            k = link.kill.recv(), if !kill_done => match k {
                Some(Stop::Terminate(grace)) if status.is_none() => {
                    // Asked, not yet killed: an attempt that finishes its
                    // work within the grace period ends as it would have.
                    terminated = true;
                    match &container {
                        // The client passes signals on only while it is
                        // attached; the engine reaches the container
                        // whatever the client does.
                        Some(c) => c.engine.terminate_soon(&c.name),
                        None => signal_group(pgid, libc::SIGTERM),
                    }
                    let at = tokio::time::Instant::now() + grace;
                    term_deadline = Some(term_deadline.map_or(at, |d| d.min(at)));
                }
                // It exited already (its pipes drain): nothing to stop.
                Some(Stop::Terminate(_)) => {}
                Some(_) => {
                    end.interrupt(Interrupt::Killed);
                    kill_group(pgid);
                    if status.is_none() {
                        killed_at.get_or_insert_with(tokio::time::Instant::now);
                    }
                }
                // The engine no longer asks anything of this attempt.
                None => kill_done = true,
            },
            () = tokio::time::sleep_until(term_deadline.unwrap_or_else(tokio::time::Instant::now)),
                if term_deadline.is_some() && status.is_none() => {
                term_deadline = None;
                end.interrupt(Interrupt::Killed);
                logs.note("still running after the grace period of its stop: killed".into());
                kill_group(pgid);
                killed_at.get_or_insert_with(tokio::time::Instant::now);
            }
            () = tokio::time::sleep_until(
                killed_at.map_or_else(tokio::time::Instant::now, |t| t + drain_after_exit()),
            ), if killed_at.is_some() && status.is_none() => {
                // Killed, and still no word of its end (its fork server was
                // stopped, say): the attempt ends without it.
                logs.note(format!(
                    "no word of the process's end {:.3}s after it was killed: the attempt ends without it",
                    drain_after_exit().as_secs_f64()
                ));
                status = Some(Err(std::io::Error::other(
                    "the process's end was never reported after it was killed",
                )));
                (out_done, err_done) = (true, true);
            }
        }
    }
    drop(stdin_tx);
    if let Some(c) = &container {
        // Killing the client leaves its container running: it is killed
        // and removed by name, before the attempt ends, whatever ended it
        // (the `--rm` of a container that exited has removed it already).
        if let Err(e) = c.engine.remove(&c.name).await {
            logs.note(format!("the container {} may still exist: {e}", c.name));
        }
    }
    match status {
        Some(Ok((code, signal))) => {
            end.exit = match (code, signal) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Unknown,
            };
        }
        Some(Err(e)) => {
            end.interrupt(Interrupt::Broken(format!(
                "waiting for the process failed: {e}"
            )));
        }
        None => unreachable!("loop ends only after the process ended"),
    };
    // Ended by the stop it was asked for (a signal, or a failing exit right
    // after it): interrupted, not failed. One that exited 0 finished its
    // work and is judged as usual.
    if terminated && end.exit != Exit::Code(0) {
        end.interrupt(Interrupt::Killed);
    }
    // 125 is the engines' own failure (no such image, a bad option, no
    // runtime), not the task's.
    if let (Some(c), Exit::Code(125), None) = (&container, end.exit, &end.interrupt) {
        end.interrupt(Interrupt::Broken(format!(
            "{} could not run a container of the image `{}` (exit 125): {}",
            c.engine.name(),
            c.image,
            last_err.as_deref().unwrap_or("it said nothing on stderr")
        )));
    }
    if let Some(t) = timeout.filter(|_| timed_out) {
        logs.note(format!(
            "killed after its timeout of {:.3}s",
            t.as_secs_f64()
        ));
    }
    end.logs = logs.finish();
    link.finish(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_kept_as_it_is_and_invalid_bytes_are_shown_as_hex() {
        assert!(matches!(
            escape_invalid(b"caf\xc3\xa9 \\x41"),
            (Cow::Borrowed("café \\x41"), 0)
        ));
        let (text, bad) = escape_invalid(b"a\xffb\xc3(\xe2\x82");
        assert_eq!(text, r"a\xffb\xc3(\xe2\x82");
        assert_eq!(bad, 4, "a lone byte, a broken pair, a cut sequence of two");
        assert_eq!(escape_invalid(b"\x80\x80").1, 2);
    }

    #[test]
    fn a_cut_character_at_the_end_of_a_prefix_is_dropped() {
        assert_eq!(without_cut_char(b"ab\xe2\x82"), b"ab");
        assert_eq!(without_cut_char(b"ab\xe2\x82\xac"), b"ab\xe2\x82\xac");
        assert_eq!(
            without_cut_char(b"\xffab\xe2"),
            b"\xffab\xe2",
            "invalid before"
        );
    }

    #[test]
    fn the_first_line_with_invalid_bytes_is_noted_the_others_counted() {
        let mut logs = Collector {
            node: "n".into(),
            attempt: 1,
            logs: Vec::new(),
            bytes: 0,
            dropped: 0,
            not_utf8: 0,
            live: None,
        };
        logs.push_bytes("stderr", 1, b"fine".to_vec());
        logs.push_bytes("stderr", 2, b"bad \xff\xfe".to_vec());
        logs.push_bytes("stdout", 7, b"\xff".to_vec());
        let text: Vec<String> = logs
            .finish()
            .into_iter()
            .map(|l| format!("{}: {}", l.stream, l.text))
            .collect();
        assert_eq!(
            text,
            [
                "stderr: fine",
                r"stderr: bad \xff\xfe",
                r"orch: line 2 of stderr had 2 bytes that are not UTF-8, shown as \xNN",
                r"stdout: \xff",
                r"orch: 1 more line had bytes that are not UTF-8, shown as \xNN",
            ]
        );
    }
}
