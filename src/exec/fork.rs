//! The warm Python fork server (see `docs/python.md`): one Python process
//! per run that has imported the helper and the workflow's preloaded
//! modules and forks one child per Python task attempt.
//!
//! The orchestrator creates each attempt's pipes itself and hands the
//! child's ends to the server over a `SOCK_SEQPACKET` Unix socket
//! (`SCM_RIGHTS`), together with a marker: a memfd named after the run
//! and node that the child keeps open, so that `resume` can recognise a
//! leftover forked child (whose `/proc/<pid>/environ` is the server's, not
//! the task's). The server reports each child's pid, and later how it
//! ended, since it is the child's parent.
//!
//! By default (two; `ORCH_FORK_SPARES=N` keeps `N`, `0` none: see
//! `docs/python.md`), the server forks **spares** ahead of time and
//! announces their pids, each with our end of a socket to it. An attempt
//! takes the oldest announced spare: [`ForkServer::launch`] sends the
//! request straight to the spare, tells the server which spare took which
//! attempt, and returns the spare's pid without waiting for any answer, so
//! neither the orchestrator's thread nor the attempt waits for the server.
//! Only when no spare is announced (the first attempts, or more attempts
//! at once than spares) does a request ask for a fork and wait for its pid.
//!
//! The server's protocol is described in `python/orch/_forkserver.py`.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::exec::content_hash;

/// How long the server may take to import the helper and the preloaded
/// modules before the run gives up on it (and starts fresh interpreters).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the orchestrator's thread waits for the pid of a fork before
/// it gives up on the server (a healthy one answers in about a
/// millisecond; this wait holds up the whole run, so it is short).
const START_TIMEOUT: Duration = Duration::from_secs(1);
/// The file descriptor the server reads its control socket from.
const CONTROL_FD: RawFd = 3;
/// Largest packet the server sends.
const MAX_PACKET: usize = 64 * 1024;

/// How a forked child ended, as the server saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForkExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when a signal ended it.
    pub signal: Option<i32>,
}

/// A forked attempt: its pid (also its process group), the orchestrator's
/// ends of its stdio pipes, and where its end is reported.
pub(crate) struct Forked {
    pub pid: u32,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub exit: oneshot::Receiver<ForkExit>,
}

/// What one forked attempt runs.
pub(crate) struct Request<'a> {
    /// The script to run as `__main__`, or `None` for a call.
    pub script: Option<&'a Path>,
    /// `module:function` for a call.
    pub call: Option<&'a str>,
    /// `sys.argv`.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: &'a Path,
    /// Environment variables set in the child.
    pub env: Vec<(&'static str, String)>,
    /// The run and node, named by the attempt's marker.
    pub run: &'a str,
    /// The node id.
    pub node: &'a str,
}

/// Waiters for the server's answers, by request id.
#[derive(Default)]
struct Table {
    /// The server is gone (EOF on the control socket).
    closed: bool,
    /// A fork went unanswered: no new forks, though the children it runs
    /// still report how they end.
    abandoned: bool,
    starts: HashMap<u64, std_mpsc::Sender<std::result::Result<u32, String>>>,
    exits: HashMap<u64, oneshot::Sender<ForkExit>>,
    /// Spares the server announced and no request named yet, oldest
    /// first, with our end of each one's socket (the only one: dropping
    /// it makes the spare exit). Each is its own process group already,
    /// and the server does not reap one before a request names it, so its
    /// pid stays its own.
    spares: VecDeque<(u32, OwnedFd)>,
}

/// A running fork server. Dropping it closes the control socket: the
/// server exits and is reaped.
pub(crate) struct ForkServer {
    sock: Arc<OwnedFd>,
    process: Option<Child>,
    table: Arc<Mutex<Table>>,
    next: AtomicU64,
}

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn fail(message: impl Into<String>) -> Error {
    Error::ForkServer {
        message: message.into(),
    }
}

/// A pipe whose two ends are close-on-exec: (read, write).
fn pipe() -> std::result::Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_os_error("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pair of connected packet sockets, both close-on-exec.
fn packet_pair() -> std::result::Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(last_os_error("socketpair"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The name of the memfd a forked attempt of `node` in `run` holds open.
pub(crate) fn marker_name(run: &str, node: &str) -> String {
    format!("orch:{run}:{}", content_hash(node.bytes()))
}

/// True when process `pid` holds the marker of an attempt of `node` in
/// `run` (a forked child keeps it open for its whole life).
pub(crate) fn holds_marker(pid: u32, run: &str, node: &str) -> bool {
    let want = format!("/memfd:{}", marker_name(run, node));
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            t == want || t.strip_suffix(" (deleted)") == Some(want.as_str())
        })
    })
}

fn memfd(name: &str) -> std::result::Result<OwnedFd, String> {
    let c = std::ffi::CString::new(name).map_err(|e| format!("marker name: {e}"))?;
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(last_os_error("memfd_create"));
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one packet with file descriptors attached (none: a plain packet).
fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::result::Result<(), String> {
    if fds.is_empty() {
        // SAFETY: send reads data.len() bytes from data.
        return sent(|| unsafe {
            libc::send(
                sock,
                data.as_ptr() as *const libc::c_void,
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        });
    }
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let msg = header(&mut iov, &mut control, space);
    // SAFETY: the control buffer is large enough (CMSG_SPACE) and aligned
    // for cmsghdr, so its first header and the fds fit in it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), fd_bytes);
    }
    // SAFETY: every pointer in msg (iov, data, control) outlives the call.
    sent(|| unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) })
}

/// Makes a sending call (`send`, `sendmsg`) again while a signal
/// interrupts it.
fn sent(mut call: impl FnMut() -> isize) -> std::result::Result<(), String> {
    loop {
        if call() >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("sending to the fork server: {e}"));
        }
    }
}

/// A message header over one buffer (`iov`) and a control buffer of
/// `space` bytes; both must outlive the calls that use it.
fn header(iov: &mut libc::iovec, control: &mut [u64], space: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data, for which all zeroes is a value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    msg
}

/// Receives one packet and the file descriptor attached to it, if any
/// (close-on-exec; more than one are closed by the kernel); `None` at EOF
/// or on an error.
fn recv_packet_fd(sock: RawFd, buf: &mut [u8]) -> Option<(Value, Option<OwnedFd>)> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut msg = header(&mut iov, &mut control, space);
        // SAFETY: recvmsg writes at most buf.len() bytes into buf and at
        // most `space` bytes into the control buffer (aligned for
        // cmsghdr), and the header walk stays within what it reported.
        unsafe {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            let mut fd = None;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if n >= 0
                && !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize
            {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            if n <= 0 {
                return None;
            }
            let value = serde_json::from_slice(&buf[..n as usize]).unwrap_or_else(|_| {
                warn!("the fork server sent an unreadable packet");
                Value::Null
            });
            return Some((value, fd));
        }
    }
}

/// Waits until `sock` is readable or `timeout` passes.
fn readable(sock: RawFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll reads and writes the one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

impl ForkServer {
    /// Starts a server with `python` in `cwd` and environment `env` (the
    /// tasks' environment minus the per-attempt variables), imports the
    /// helper and `preload`, and waits until it is ready.
    pub(crate) fn start(
        python: &Path,
        cwd: &Path,
        env: &[(&str, std::ffi::OsString)],
        preload: &[String],
    ) -> Result<ForkServer> {
        let (ours, theirs) = packet_pair().map_err(fail)?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(python);
        cmd.args([
            "-u",
            "-c",
            "import sys, orch._forkserver as s; sys.exit(s.main())",
        ])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "ORCH_FORK_PRELOAD",
            serde_json::to_string(preload).expect("strings serialise"),
        )
        // Its forks' kernel environment is this one: the mark says so
        // (see `escape.rs`).
        .env(crate::exec::escape::FORK_SERVER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: a terminal's Ctrl-C reaches the orchestrator, and
        // the server then ends by the EOF of its control socket.
        .process_group(0);
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = if their_fd == CONTROL_FD {
                    libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(their_fd, CONTROL_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut process = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start `{}`: {e}", python.display())))?;
        drop(theirs);
        if let Some(stderr) = process.stderr.take() {
            let pid = process.id();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    warn!(server = pid, "Python fork server: {line}");
                }
            });
        }
        let sock = ours.as_raw_fd();
        let mut buf = vec![0u8; MAX_PACKET];
        let first = if readable(sock, READY_TIMEOUT) {
            recv_packet_fd(sock, &mut buf).map(|(v, _)| v)
        } else {
            Some(
                json!({"type": "unusable", "message": format!("not ready after {}s", READY_TIMEOUT.as_secs())}),
            )
        };
        let problem = match &first {
            Some(v) if v["type"] == "ready" => None,
            Some(v) if v["type"] == "unusable" => {
                Some(v["message"].as_str().unwrap_or("unusable").to_string())
            }
            _ => Some("it exited before it was ready (see its stderr above)".to_string()),
        };
        if let Some(problem) = problem {
            let _ = process.kill();
            let _ = process.wait();
            return Err(fail(problem));
        }
        debug!(pid = process.id(), "Python fork server ready");
        let sock = Arc::new(ours);
        let table = Arc::new(Mutex::new(Table::default()));
        let (reader_sock, reader_table) = (Arc::clone(&sock), Arc::clone(&table));
        std::thread::spawn(move || read_replies(&reader_sock, &reader_table));
        Ok(ForkServer {
            sock,
            process: Some(process),
            table,
            next: AtomicU64::new(1),
        })
    }

    /// True until the server stopped, or left a fork unanswered.
    pub(crate) fn is_usable(&self) -> bool {
        let t = self.table.lock().expect("fork table");
        !t.closed && !t.abandoned
    }

    /// Starts a child for one attempt: hands it to the oldest announced
    /// spare that is still there and returns at once, or, with none,
    /// asks the server to fork and blocks until it reports the pid. An
    /// error means no child runs the attempt.
    pub(crate) fn launch(&self, req: &Request<'_>) -> std::result::Result<Forked, String> {
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let marker = memfd(&marker_name(req.run, req.node))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let packet = json!({
            "id": id,
            "script": req.script.map(|p| p.to_string_lossy().into_owned()),
            "call": req.call,
            "argv": req.argv,
            "cwd": req.cwd.to_string_lossy(),
            "env": req.env.iter().cloned().collect::<HashMap<_, _>>(),
            "spare": null,
        })
        .to_string();
        let child_fds = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            marker.as_raw_fd(),
        ];
        let (exit_tx, exit_rx) = oneshot::channel();
        let mut exit_tx = Some(exit_tx);
        while let Some((pid, end)) = {
            let mut t = self.table.lock().expect("fork table");
            if t.closed || t.abandoned {
                return Err("the fork server stopped".into());
            }
            t.spares.pop_front()
        } {
            // Straight to the spare: it becomes the attempt on receipt.
            // It fails only if the spare is gone (killed from outside):
            // then the next one, or a fork.
            if let Err(e) = send_with_fds(end.as_raw_fd(), packet.as_bytes(), &child_fds) {
                debug!(pid, error = %e, "a spare is gone; trying the next");
                continue;
            }
            drop(end);
            // Its end is reported by the server (its parent), once it hears
            // which attempt the spare took.
            self.table
                .lock()
                .expect("fork table")
                .exits
                .insert(id, exit_tx.take().expect("one spare takes the attempt"));
            let taken = json!({"id": id, "spare": pid}).to_string();
            if let Err(e) = send_with_fds(self.sock.as_raw_fd(), taken.as_bytes(), &[]) {
                // The server is gone: so is the report of this attempt's
                // end, which the attempt learns from the dropped sender.
                warn!(pid, error = %e, "the fork server did not hear which attempt a spare took");
                self.table.lock().expect("fork table").exits.remove(&id);
            }
            debug!(pid, "attempt handed to a spare");
            return Ok(Forked {
                pid,
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
                exit: exit_rx,
            });
        }
        let (start_tx, start_rx) = std_mpsc::channel();
        {
            let mut t = self.table.lock().expect("fork table");
            t.starts.insert(id, start_tx);
            t.exits
                .insert(id, exit_tx.take().expect("no spare took the attempt"));
        }
        let sent = send_with_fds(self.sock.as_raw_fd(), packet.as_bytes(), &child_fds);
        // The child has its own copies now (or never will).
        drop((stdin_r, stdout_w, stderr_w, marker));
        let forget = |t: &Mutex<Table>| {
            let mut t = t.lock().expect("fork table");
            t.starts.remove(&id);
            t.exits.remove(&id);
        };
        if let Err(e) = sent {
            forget(&self.table);
            return Err(e);
        }
        match start_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(pid)) => Ok(Forked {
                pid,
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
                exit: exit_rx,
            }),
            Ok(Err(e)) => {
                forget(&self.table);
                Err(e)
            }
            Err(_) => {
                // A fork that does not answer: stop forking from this
                // server (its running children still report their end).
                // Should the child start after all, the reader kills it:
                // this attempt starts a fresh interpreter instead.
                let mut t = self.table.lock().expect("fork table");
                t.abandoned = true;
                t.starts.remove(&id);
                t.exits.remove(&id);
                Err(format!(
                    "the fork server did not answer within {}s",
                    START_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

/// The reader thread: dispatches the server's answers until EOF, then
/// fails every waiter (their attempts learn the server is gone).
fn read_replies(sock: &OwnedFd, table: &Mutex<Table>) {
    let mut buf = vec![0u8; MAX_PACKET];
    while let Some((msg, fd)) = recv_packet_fd(sock.as_raw_fd(), &mut buf) {
        if msg["type"] == "spare" || msg["type"] == "gone" {
            let Some(pid) = msg["pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| p > 1)
            else {
                warn!("the fork server sent a spare without a pid");
                continue;
            };
            let mut t = table.lock().expect("fork table");
            if msg["type"] == "spare" {
                match fd {
                    Some(end) => t.spares.push_back((pid, end)),
                    None => warn!(pid, "the fork server sent a spare without its socket"),
                }
            } else {
                // Died before any attempt named it (killed from outside).
                t.spares.retain(|(p, _)| *p != pid);
            }
            continue;
        }
        let Some(id) = msg["id"].as_u64() else {
            continue;
        };
        let mut t = table.lock().expect("fork table");
        match msg["type"].as_str() {
            Some("started") => {
                let pid = msg["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
                if let Some(tx) = t.starts.remove(&id) {
                    let _ = tx.send(pid.ok_or_else(|| "the fork server sent no pid".into()));
                } else if let Some(pid) = pid {
                    // A fork answered too late: its attempt already
                    // started elsewhere, so this copy must not run.
                    warn!(pid, "a late fork is killed");
                    crate::exec::kill_group(pid);
                }
            }
            Some("failed") => {
                if let Some(tx) = t.starts.remove(&id) {
                    let why = msg["message"].as_str().unwrap_or("fork failed");
                    let _ = tx.send(Err(why.to_string()));
                }
                t.exits.remove(&id);
            }
            Some("exit") => {
                if let Some(tx) = t.exits.remove(&id) {
                    let int = |k: &str| msg[k].as_i64().and_then(|v| i32::try_from(v).ok());
                    let _ = tx.send(ForkExit {
                        code: int("code"),
                        signal: int("signal"),
                    });
                }
            }
            other => warn!(kind = ?other, "the fork server sent an unknown answer"),
        }
    }
    let mut t = table.lock().expect("fork table");
    t.closed = true;
    t.spares.clear();
    for (_, tx) in t.starts.drain() {
        let _ = tx.send(Err("the fork server stopped".into()));
    }
    // Dropping the senders tells each forked attempt's driver.
    t.exits.clear();
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // EOF on the control socket: the server exits (and the reader
        // thread's recv returns 0).
        // SAFETY: shutdown(2) on a socket we own.
        unsafe {
            libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(mut process) = self.process.take() {
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    match process.try_wait() {
                        Ok(Some(_)) | Err(_) => return,
                        Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                warn!(
                    pid = process.id(),
                    "the Python fork server did not exit; killed"
                );
                let _ = process.kill();
                let _ = process.wait();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_carries_a_close_on_exec_descriptor_or_none() {
        let (a, b) = packet_pair().expect("socketpair");
        let (read_end, write_end) = pipe().expect("pipe");
        send_with_fds(
            a.as_raw_fd(),
            br#"{"type":"spare","pid":7}"#,
            &[write_end.as_raw_fd()],
        )
        .expect("sent with a descriptor");
        drop(write_end);
        let mut buf = vec![0u8; 1024];
        let (msg, fd) = recv_packet_fd(b.as_raw_fd(), &mut buf).expect("a packet");
        assert_eq!(msg["pid"], 7);
        let fd = fd.expect("the descriptor came along");
        // SAFETY: fcntl(F_GETFD) on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "close-on-exec");
        // It is the pipe's write end.
        let mut out = std::fs::File::from(fd);
        std::io::Write::write_all(&mut out, b"x").expect("write");
        drop(out);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read_end), &mut got).expect("read");
        assert_eq!(got, "x");
        send_with_fds(a.as_raw_fd(), br#"{"id":1,"spare":7}"#, &[]).expect("sent plain");
        let (msg, fd) = recv_packet_fd(b.as_raw_fd(), &mut buf).expect("a packet");
        assert_eq!(msg["spare"], 7);
        assert!(fd.is_none(), "no descriptor");
        drop(a);
        assert!(recv_packet_fd(b.as_raw_fd(), &mut buf).is_none(), "EOF");
    }

    #[test]
    fn only_the_holder_of_the_exact_marker_is_recognised() {
        let me = std::process::id();
        assert!(!holds_marker(me, "run-a", "node/1"), "no marker yet");
        let marker = memfd(&marker_name("run-a", "node/1")).expect("memfd");
        assert!(holds_marker(me, "run-a", "node/1"));
        assert!(!holds_marker(me, "run-a", "node/2"), "another node");
        assert!(!holds_marker(me, "run-b", "node/1"), "another run");
        // A process that never held it (a recycled pid, say) is not one.
        let mut other = Command::new("sleep").arg("5").spawn().expect("sleep");
        assert!(!holds_marker(other.id(), "run-a", "node/1"));
        let _ = other.kill();
        let _ = other.wait();
        drop(marker);
        assert!(!holds_marker(me, "run-a", "node/1"), "closed: gone");
        assert!(
            !holds_marker(u32::MAX, "run-a", "node/1"),
            "no such process"
        );
    }
}
