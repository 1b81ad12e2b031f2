//! Executors: how an attempt runs. The runtime hands an executor an
//! [`AttemptSpec`] and an [`AttemptLink`]; the executor starts the attempt
//! and reports through the link: every mutation the task sends (answered
//! by the runtime) and, once, how the attempt ended.
//!
//! [`ProcessExecutor`] runs every [`Exec`] kind as one subprocess in its
//! own process group, speaking the JSON-lines protocol. Other executors
//! (native Rust tasks, containers, wait-for-input) implement
//! [`Executor`] the same way.

pub(crate) mod fork;
pub mod protocol;

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::exec::fork::{ForkExit, ForkServer, Forked, Request};
use crate::exec::protocol::{Body, Line, Start};
use crate::model::{Exec, Mutation, Task};
use crate::store::LogLine;

/// A protocol line (or log line) longer than this fails the attempt (or
/// is truncated in the log): the memory an attempt can take is bounded.
pub const MAX_LINE_BYTES: usize = 32 << 20;
/// Log bytes kept per attempt; the rest is counted and dropped.
pub const MAX_LOG_BYTES: usize = 16 << 20;

/// Everything needed to start one attempt.
#[derive(Clone, Debug)]
pub struct AttemptSpec {
    /// The run id.
    pub run: String,
    /// The node id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// What runs.
    pub task: Task,
    /// Inputs with output references resolved.
    pub inputs: Value,
    /// The output of each direct predecessor, by node id.
    pub upstream: serde_json::Map<String, Value>,
}

/// What an executor reports to the runtime.
#[derive(Debug)]
pub enum Report {
    /// The task sent a mutation; the runtime answers `Ok` (ack) or the
    /// error message.
    Mutation {
        /// The node's position in the graph.
        node: usize,
        /// The attempt number.
        attempt: u32,
        /// The mutation.
        mutation: Mutation,
        /// Where the answer goes.
        reply: oneshot::Sender<std::result::Result<(), String>>,
    },
    /// The attempt ended.
    Finished {
        /// The node's position in the graph.
        node: usize,
        /// The attempt number.
        attempt: u32,
        /// How it ended.
        end: AttemptEnd,
    },
}

/// How an attempt ended, as its executor saw it.
#[derive(Debug, Default)]
pub struct AttemptEnd {
    /// Exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the process.
    pub signal: Option<i32>,
    /// A protocol or start error: the attempt fails with it.
    pub error: Option<String>,
    /// The last `output` the task sent.
    pub output: Option<Value>,
    /// A `fail` message: message and whether retries may try again.
    pub fail: Option<(String, bool)>,
    /// Killed after its timeout.
    pub timed_out: bool,
    /// Killed on the runtime's request.
    pub killed: bool,
    /// The attempt's log lines.
    pub logs: Vec<LogLine>,
}

/// The executor's line back to the runtime, for one attempt.
#[derive(Debug)]
pub struct AttemptLink {
    /// The node's position in the graph.
    pub node: usize,
    /// The attempt number.
    pub attempt: u32,
    /// Reports go here.
    pub reports: mpsc::UnboundedSender<Report>,
    /// Fires when the runtime wants the attempt killed.
    pub kill: oneshot::Receiver<()>,
}

/// Starts attempts.
pub trait Executor: Send + Sync {
    /// Starts the attempt described by `spec`; returns its process id (if
    /// it holds a process). Must report [`Report::Finished`] exactly once
    /// through `link` when it returns `Ok`.
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, String>;

    /// `None` when an attempt of `task` can be launched now without
    /// blocking (the default). Otherwise the executor is still getting
    /// ready for such attempts (a Python fork server importing its
    /// preloads): the runtime leaves the node ready, keeps running
    /// everything else, and asks again once the returned future completes.
    /// `launch` must stay usable anyway: the runtime may be one that never
    /// asks.
    fn not_ready(&self, task: &Task) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let _ = task;
        None
    }
}

/// An executor shared by a workflow and its runs (`Debug` for the
/// builder; see [`crate::Workflow::executor`]).
#[derive(Clone)]
pub struct SharedExecutor(pub Arc<dyn Executor>);

impl std::fmt::Debug for SharedExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedExecutor(..)")
    }
}

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
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    exit: ProcExit,
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
    fn attempt_env(&self, spec: &AttemptSpec) -> Vec<(&'static str, String)> {
        vec![
            ("ORCH_RUN", spec.run.clone()),
            ("ORCH_NODE", spec.node.clone()),
            ("ORCH_ATTEMPT", spec.attempt.to_string()),
            ("ORCH_DB", self.env.db.to_string_lossy().into_owned()),
        ]
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
    fn try_fork(&self, spec: &AttemptSpec) -> Option<Forked> {
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
            debug!(node = %spec.node, "the Python fork server is still starting; this attempt starts a fresh interpreter");
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
            cwd: &env.base_dir,
            env: self.attempt_env(spec),
            run: &spec.run,
            node: &spec.node,
        };
        match server.launch(&request) {
            Ok(forked) => Some(forked),
            Err(e) => {
                warn!(node = %spec.node, error = %e, "fork failed; this attempt starts a fresh interpreter");
                None
            }
        }
    }

    fn command(&self, spec: &AttemptSpec) -> Result<Command, String> {
        let env = &self.env;
        let mut cmd = match &spec.task.exec {
            Exec::Python { script } => {
                let path = env.base_dir.join(script);
                if !path.is_file() {
                    return Err(format!("Python script {} not found", path.display()));
                }
                let python = resolve_python(&env.python).map_err(|e| e.to_string())?;
                let mut c = Command::new(python);
                c.arg("-u").arg(path);
                c
            }
            Exec::PythonFn { module, function } => {
                let python = resolve_python(&env.python).map_err(|e| e.to_string())?;
                let mut c = Command::new(python);
                c.args(["-u", "-m", "orch", "call"])
                    .arg(format!("{module}:{function}"));
                c
            }
            Exec::Input {} => {
                return Err("an input task runs no process; the runtime waits for its value".into())
            }
            Exec::Native { task } => {
                let Some(binary) = &env.native_binary else {
                    return Err(format!(
                        "native task `{task}` runs in the workflow binary, and this run recorded none"
                    ));
                };
                let mut c = Command::new(binary);
                c.env(crate::typed::native::TASK_ENV, task);
                c
            }
            Exec::Command { argv } => {
                let Some(program) = argv.first() else {
                    return Err("command task has an empty argv".to_string());
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
        cmd.current_dir(&env.base_dir)
            .env("PYTHONPATH", self.pythonpath())
            .envs(self.attempt_env(spec))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
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

    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, String> {
        let proc = match self.try_fork(&spec) {
            Some(forked) => from_forked(forked)?,
            None => {
                let mut cmd = self.command(&spec)?;
                let mut child = cmd.spawn().map_err(|e| {
                    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
                    format!("cannot start `{program}`: {e}")
                })?;
                Proc {
                    pgid: child.id().unwrap_or(0),
                    stdin: child.stdin.take().expect("piped stdin"),
                    stdout: child.stdout.take().expect("piped stdout"),
                    stderr: child.stderr.take().expect("piped stderr"),
                    exit: ProcExit::Child(child),
                }
            }
        };
        let pid = Some(proc.pgid).filter(|&p| p > 0);
        let timeout = spec
            .task
            .timeout
            .map(Duration::from_secs_f64)
            .or(self.env.default_timeout);
        tokio::spawn(drive(proc, spec, link, timeout));
        Ok(pid)
    }
}

/// The orchestrator's ends of a forked attempt's pipes, as tokio handles.
fn from_forked(f: Forked) -> Result<Proc, String> {
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
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // has no memory effects.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
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

struct Collector {
    node: String,
    attempt: u32,
    logs: Vec<LogLine>,
    bytes: usize,
    dropped: usize,
}

impl Collector {
    fn push(&mut self, stream: &str, text: String) {
        if self.bytes + text.len() > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += text.len();
        self.logs.push(LogLine {
            node: self.node.clone(),
            attempt: self.attempt,
            line: self.logs.len() as u32 + 1,
            stream: stream.to_string(),
            text,
        });
    }

    fn finish(mut self) -> Vec<LogLine> {
        if self.dropped > 0 {
            self.bytes = 0;
            let n = self.dropped;
            self.push(
                "orch",
                format!("{n} more log lines dropped (over {MAX_LOG_BYTES} bytes)"),
            );
        }
        self.logs
    }
}

async fn drive(proc: Proc, spec: AttemptSpec, mut link: AttemptLink, timeout: Option<Duration>) {
    let Proc {
        pgid,
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
        &spec.run,
        &spec.node,
        spec.attempt,
        &spec.task,
        spec.inputs.clone(),
        spec.upstream.clone(),
    );
    let _ = stdin_tx.send(start.to_line());

    let mut logs = Collector {
        node: spec.node.clone(),
        attempt: spec.attempt,
        logs: Vec::new(),
        bytes: 0,
        dropped: 0,
    };
    let mut end = AttemptEnd::default();
    let mut last_seq = 0u64;
    let mut status = None;
    let (mut out_done, mut err_done, mut kill_done) = (false, false, false);
    let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
    tokio::pin!(sleep);

    while !(out_done && err_done && status.is_some()) {
        tokio::select! {
            r = out.next(), if !out_done => match r {
                Ok(Read::Line(bytes)) => {
                    let line = String::from_utf8_lossy(&bytes).into_owned();
                    if end.error.is_some() {
                        logs.push("stdout", line);
                        continue;
                    }
                    match protocol::classify(&line) {
                        Line::Log => logs.push("stdout", line),
                        Line::Malformed(why) => {
                            end.error = Some(format!("malformed protocol line ({why}): {}", protocol::quote(&line)));
                            kill_group(pgid);
                        }
                        Line::Message(m) => {
                            if m.seq <= last_seq {
                                end.error = Some(format!(
                                    "protocol line has seq {} but the previous one had {last_seq}: {}",
                                    m.seq, protocol::quote(&line)
                                ));
                                kill_group(pgid);
                                continue;
                            }
                            last_seq = m.seq;
                            let reply = match m.body {
                                Body::Mutation(mutation) => {
                                    let (tx, rx) = oneshot::channel();
                                    let sent = link.reports.send(Report::Mutation {
                                        node: link.node,
                                        attempt: link.attempt,
                                        mutation,
                                        reply: tx,
                                    });
                                    match (sent, rx.await) {
                                        (Ok(()), Ok(Ok(()))) => protocol::ack(m.seq),
                                        (Ok(()), Ok(Err(e))) => {
                                            logs.push("orch", format!("rejected: {e}"));
                                            protocol::error(m.seq, &e)
                                        }
                                        _ => protocol::error(m.seq, "the orchestrator is shutting down"),
                                    }
                                }
                                Body::Output(v) => {
                                    end.output = Some(v);
                                    protocol::ack(m.seq)
                                }
                                Body::Log { level, message } => {
                                    logs.push("log", format!("[{level}] {message}"));
                                    protocol::ack(m.seq)
                                }
                                Body::Rejected(e) => {
                                    logs.push("orch", format!("rejected: {e}"));
                                    protocol::error(m.seq, &e)
                                }
                                Body::Fail { message, retry } => {
                                    end.fail = Some((message, retry));
                                    protocol::ack(m.seq)
                                }
                            };
                            let _ = stdin_tx.send(reply);
                        }
                    }
                }
                Ok(Read::TooLong(prefix)) => {
                    let head = String::from_utf8_lossy(&prefix).into_owned();
                    if !protocol::is_marked(&head) {
                        logs.push("stdout", format!("{head}… [line over {MAX_LINE_BYTES} bytes truncated]"));
                    } else if end.error.is_none() {
                        end.error = Some(format!(
                            "protocol line longer than {MAX_LINE_BYTES} bytes: {}",
                            protocol::quote(&head)
                        ));
                        kill_group(pgid);
                    }
                }
                Ok(Read::Eof) => out_done = true,
                Err(e) => {
                    logs.push("orch", format!("reading stdout failed: {e}"));
                    out_done = true;
                }
            },
            r = err.next(), if !err_done => match r {
                Ok(Read::Line(bytes)) => logs.push("stderr", String::from_utf8_lossy(&bytes).into_owned()),
                Ok(Read::TooLong(prefix)) => logs.push(
                    "stderr",
                    format!("{}… [line over {MAX_LINE_BYTES} bytes truncated]", String::from_utf8_lossy(&prefix)),
                ),
                Ok(Read::Eof) => err_done = true,
                Err(e) => {
                    logs.push("orch", format!("reading stderr failed: {e}"));
                    err_done = true;
                }
            },
            s = process.wait(), if status.is_none() => {
                // Stragglers of the group would keep the pipes open.
                kill_group(pgid);
                status = Some(s);
            }
            () = &mut sleep, if deadline.is_some() && !end.timed_out && status.is_none() => {
                end.timed_out = true;
                kill_group(pgid);
            }
            k = &mut link.kill, if !kill_done => {
                kill_done = true;
                if k.is_ok() {
                    end.killed = true;
                    kill_group(pgid);
                }
            }
        }
    }
    drop(stdin_tx);
    match status {
        Some(Ok((code, signal))) => {
            end.exit_code = code;
            end.signal = signal;
        }
        Some(Err(e)) => {
            end.error
                .get_or_insert(format!("waiting for the process failed: {e}"));
        }
        None => unreachable!("loop ends only after the process ended"),
    };
    if let Some(t) = timeout.filter(|_| end.timed_out) {
        logs.push(
            "orch",
            format!("killed after its timeout of {:.3}s", t.as_secs_f64()),
        );
    }
    end.logs = logs.finish();
    let _ = link.reports.send(Report::Finished {
        node: link.node,
        attempt: link.attempt,
        end,
    });
}

static PYTHONS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();

/// The interpreter a workflow uses: the builder's choice, else
/// `ORCH_PYTHON`, else `python3`.
pub fn configured_python(builder: Option<&str>) -> String {
    builder
        .map(str::to_string)
        .or_else(|| std::env::var("ORCH_PYTHON").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "python3".to_string())
}

/// Resolves an interpreter name to the real executable once per process
/// (`sys.executable`), so no version-manager shim runs per task.
pub fn resolve_python(interpreter: &str) -> Result<PathBuf> {
    let cache = PYTHONS.get_or_init(Default::default);
    if let Some(p) = cache.lock().expect("python cache").get(interpreter) {
        return Ok(p.clone());
    }
    let fail = |message: String| Error::Python {
        interpreter: interpreter.to_string(),
        message,
    };
    let out = std::process::Command::new(interpreter)
        .args([
            "-c",
            "import sys; print(sys.executable); sys.exit(0 if sys.version_info >= (3, 8) else 3)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if out.status.code() == Some(3) {
        return Err(fail("Python 3.8 or newer is needed".into()));
    }
    if !out.status.success() {
        return Err(fail(format!(
            "it exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if exe.as_os_str().is_empty() || !exe.is_file() {
        return Err(fail(format!(
            "sys.executable `{}` is not a file",
            exe.display()
        )));
    }
    cache
        .lock()
        .expect("python cache")
        .insert(interpreter.to_string(), exe.clone());
    Ok(exe)
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

/// True while process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

const HELPER_INIT: &str = include_str!("../../python/orch/__init__.py");
const HELPER_MAIN: &str = include_str!("../../python/orch/__main__.py");
const HELPER_FORKSERVER: &str = include_str!("../../python/orch/_forkserver.py");

/// Writes the shipped Python helper package under `root` (once per
/// content version) and returns the folder to put on `PYTHONPATH`.
pub fn install_helper(root: &Path) -> Result<PathBuf> {
    let files = [
        ("__init__.py", HELPER_INIT),
        ("__main__.py", HELPER_MAIN),
        ("_forkserver.py", HELPER_FORKSERVER),
    ];
    let hash = content_hash(files.iter().flat_map(|(_, text)| text.bytes()));
    let dir = root.join(format!("python-{hash}"));
    let pkg = dir.join("orch");
    if files
        .iter()
        .all(|(name, text)| std::fs::read_to_string(pkg.join(name)).ok().as_deref() == Some(*text))
    {
        return Ok(dir);
    }
    std::fs::create_dir_all(&pkg)
        .map_err(|e| Error::io(format!("creating {}", pkg.display()), e))?;
    for (name, text) in files {
        let tmp = pkg.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, pkg.join(name))
            .map_err(|e| Error::io(format!("installing {}", pkg.join(name).display()), e))?;
    }
    Ok(dir)
}
