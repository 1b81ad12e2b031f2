//! The process executor: every attempt is one subprocess in its own
//! process group (a fresh one, or forked from the run's warm Python
//! server), speaking the JSON-lines protocol over its stdio.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::fork::{ForkExit, ForkServer, Forked, Request};
use super::protocol::{self, Body, Line, Start};
use super::python::resolve_python;
use super::{
    AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Executor, Exit, Interrupt, LaunchError,
    Report, Stop, TaskFailure, LOG_LINE_COST, MAX_LINE_BYTES, MAX_LOG_BYTES,
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
            ("ORCH_RUN", spec.id.run.clone()),
            ("ORCH_NODE", spec.id.node.clone()),
            ("ORCH_ATTEMPT", spec.id.attempt.to_string()),
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
            cwd: &env.base_dir,
            env: self.attempt_env(spec),
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

    fn command(&self, spec: &AttemptSpec) -> Result<Command, LaunchError> {
        let env = &self.env;
        let mut cmd = match &spec.task.exec {
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
            Exec::Input {} => {
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

    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        // Checked before anything starts: a task may carry any number.
        let timeout = match spec.task.timeout {
            Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| {
                LaunchError::Refused(format!(
                    "the task's timeout must be a non-negative number of seconds, not {t}"
                ))
            })?),
            None => self.env.default_timeout,
        };
        let proc = match self.try_fork(&spec) {
            Some(forked) => from_forked(forked).map_err(LaunchError::Refused)?,
            None => {
                let mut cmd = self.command(&spec)?;
                let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
                    program: cmd.as_std().get_program().to_string_lossy().into_owned(),
                    source,
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

struct Collector {
    node: String,
    attempt: u32,
    logs: Vec<LogLine>,
    bytes: usize,
    dropped: usize,
    /// Where each kept line goes as it is written, when logs are followed.
    live: Option<(AttemptId, mpsc::UnboundedSender<Report>)>,
}

impl Collector {
    fn push(&mut self, stream: &str, text: String) {
        let cost = text.len() + LOG_LINE_COST;
        if self.bytes + cost > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += cost;
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
        live: link
            .follow_logs
            .then(|| (link.id.clone(), link.reports.clone())),
    };
    let mut end = AttemptEnd::ended(Exit::Unknown);
    // Once broken, the rest of stdout is only logged.
    let mut broken = false;
    let mut timed_out = false;
    // When a stop asked with a grace period turns into a kill.
    let mut term_deadline: Option<tokio::time::Instant> = None;
    // Whether the engine asked the attempt to stop (SIGTERM).
    let mut terminated = false;
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
                    if broken {
                        logs.push("stdout", line);
                        continue;
                    }
                    match protocol::classify(&line) {
                        Line::Log => logs.push("stdout", line),
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
                            let reply = match m.body {
                                Body::Mutation(mutation) => {
                                    let (tx, rx) = oneshot::channel();
                                    let sent = link.reports.send(Report::Mutation {
                                        attempt: link.id.clone(),
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
                                    end.failure = Some(TaskFailure { message, retry });
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
            () = &mut sleep, if deadline.is_some() && !timed_out && status.is_none() => {
                timed_out = true;
                end.interrupt(Interrupt::TimedOut);
                kill_group(pgid);
            }
            k = link.kill.recv(), if !kill_done => match k {
                Some(Stop::Terminate(grace)) if status.is_none() => {
                    // Asked, not yet killed: an attempt that finishes its
                    // work within the grace period ends as it would have.
                    terminated = true;
                    signal_group(pgid, libc::SIGTERM);
                    let at = tokio::time::Instant::now() + grace;
                    term_deadline = Some(term_deadline.map_or(at, |d| d.min(at)));
                }
                // It exited already (its pipes drain): nothing to stop.
                Some(Stop::Terminate(_)) => {}
                Some(_) => {
                    end.interrupt(Interrupt::Killed);
                    kill_group(pgid);
                }
                // The engine no longer asks anything of this attempt.
                None => kill_done = true,
            },
            () = tokio::time::sleep_until(term_deadline.unwrap_or_else(tokio::time::Instant::now)),
                if term_deadline.is_some() && status.is_none() => {
                term_deadline = None;
                end.interrupt(Interrupt::Killed);
                logs.push("orch", "still running after the grace period of its stop: killed".into());
                kill_group(pgid);
            }
        }
    }
    drop(stdin_tx);
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
    if let Some(t) = timeout.filter(|_| timed_out) {
        logs.push(
            "orch",
            format!("killed after its timeout of {:.3}s", t.as_secs_f64()),
        );
    }
    end.logs = logs.finish();
    link.finish(end);
}
