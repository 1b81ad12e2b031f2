//! Stopping on `SIGINT` (Ctrl-C) and `SIGTERM` (`docker stop`, `systemctl
//! stop`) while a run is driven by [`crate::Workflow::run`] or a takeover
//! (`orch resume`, `orch restart`): the first signal stops the engine
//! gracefully ([`Engine::shutdown`] with a grace period), a second one at
//! once. The run is left resumable, its stopped attempts recorded as
//! interrupted.
//!
//! The handlers are installed only while such a run is driven, and only
//! for a signal the program left at its default disposition (a program
//! with handlers of its own keeps them, and calls [`Engine::shutdown`]
//! itself; a signal ignored, as `SIGINT` is for a job a shell starts in
//! the background, stays ignored); the defaults come back afterwards.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use super::{Engine, RunHandle, RunOutcome};
use crate::error::Result;

/// The grace period of the first signal: `ORCH_STOP_GRACE` (seconds), else
/// 5 s (shorter than the 10 s `docker stop` and systemd give before their
/// own `SIGKILL`).
pub fn stop_grace() -> Duration {
    parse_grace(std::env::var("ORCH_STOP_GRACE").ok().as_deref())
}

/// A grace period in seconds; 5 s when absent or not a non-negative
/// number (with a warning).
fn parse_grace(text: Option<&str>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(5);
    let Some(text) = text else {
        return DEFAULT;
    };
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
        _ => {
            warn!(
                value = text,
                "ORCH_STOP_GRACE is not a number of seconds from 0 to 86400; using 5"
            );
            DEFAULT
        }
    }
}

/// Waits until the run of `handle` ends; on `SIGINT` or `SIGTERM` (when
/// the program has no handlers of its own), stops `engine` gracefully,
/// then at once on a second signal.
pub(crate) async fn wait_or_stop(engine: &Engine, handle: RunHandle) -> Result<RunOutcome> {
    let Some(mut signals) = Handlers::install() else {
        return handle.wait().await;
    };
    let wait = handle.wait();
    tokio::pin!(wait);
    let mut seen = 0;
    loop {
        tokio::select! {
            outcome = &mut wait => return outcome,
            Some(signal) = signals.rx.recv() => {
                seen += 1;
                let grace = if seen == 1 { stop_grace() } else { Duration::ZERO };
                warn!(
                    signal,
                    grace_s = grace.as_secs_f64(),
                    "stopping: running tasks are asked to stop, then killed after the grace period; the run stays resumable (a second signal kills them now)"
                );
                engine.shutdown(grace);
            }
        }
    }
}

/// `SIGINT` and `SIGTERM` for a long-lived host (the scheduler): while
/// this value lives, the signals arrive through [`StopSignals::next`]
/// instead of ending the process, if the program left them at their
/// default disposition (otherwise `next` never returns and the program's
/// own handlers stay).
pub struct StopSignals(Option<Handlers>);

impl StopSignals {
    /// Installs the handlers when it can.
    pub fn install() -> StopSignals {
        StopSignals(Handlers::install())
    }

    /// The next signal's number.
    pub async fn next(&mut self) -> i32 {
        match &mut self.0 {
            Some(h) => match h.rx.recv().await {
                Some(signal) => signal,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// The write end of the process's signal pipe (`-1` until created).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Where the pipe's reader thread forwards signal numbers: the current
/// [`Handlers`], if any.
static SUBSCRIBER: Mutex<Option<mpsc::UnboundedSender<i32>>> = Mutex::new(None);

/// The handler: async-signal-safe, it only writes the signal number into
/// the pipe.
extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe and the pipe does not block
        // (a full pipe drops the byte: signals waiting to be read say the
        // same); the buffer is a local; errno is saved and put back, as
        // the interrupted code may be reading it.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Creates the pipe and its reader thread once per process; false if it
/// cannot.
fn pipe_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two descriptors it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return false;
        }
        let read = fds[0];
        // SAFETY: fcntl on the descriptor just made: the handler's writes
        // never block.
        unsafe {
            libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
        }
        let spawned = std::thread::Builder::new()
            .name("orch-signals".into())
            .spawn(move || loop {
                let mut byte = 0u8;
                // SAFETY: reads one byte into a local.
                let n = unsafe { libc::read(read, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    let subscriber = SUBSCRIBER.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tx) = subscriber.as_ref() {
                        let _ = tx.send(byte as i32);
                    }
                } else if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                } else {
                    return;
                }
            });
        if spawned.is_err() {
            return false;
        }
        PIPE_WRITE.store(fds[1], Ordering::Relaxed);
        true
    })
}

/// `SIGINT` and `SIGTERM` handlers for as long as this value lives.
struct Handlers {
    rx: mpsc::UnboundedReceiver<i32>,
    /// The signals it handles (those that were at their default).
    handled: Vec<libc::c_int>,
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

impl Handlers {
    /// Installs a handler for each of the two signals that has its
    /// default disposition (one the program handles or ignores is left
    /// alone: a job started in the background of a shell has `SIGINT`
    /// ignored, and still stops gracefully on `SIGTERM`), if no other
    /// `Handlers` lives; `None` when it handles neither.
    fn install() -> Option<Handlers> {
        let mut subscriber = SUBSCRIBER.lock().unwrap_or_else(|p| p.into_inner());
        if subscriber.is_some() || !pipe_ready() {
            return None;
        }
        let handled: Vec<libc::c_int> = SIGNALS.into_iter().filter(|&s| is_default(s)).collect();
        if handled.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *subscriber = Some(tx);
        for &s in &handled {
            set_action(
                s,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        Some(Handlers { rx, handled })
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        for &s in &self.handled {
            set_action(s, libc::SIG_DFL);
        }
        *SUBSCRIBER.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// True when `signal` has its default disposition.
fn is_default(signal: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
    }
}

/// Sets `signal`'s handler (restarting interrupted system calls).
fn set_action(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with an empty mask and a handler that is
    // async-signal-safe (or SIG_DFL).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_parse_with_a_default() {
        assert_eq!(parse_grace(None), Duration::from_secs(5));
        assert_eq!(parse_grace(Some("0.25")), Duration::from_millis(250));
        assert_eq!(parse_grace(Some(" 0 ")), Duration::ZERO);
        for bad in ["-1", "soon", "NaN", "inf", "1e9"] {
            assert_eq!(parse_grace(Some(bad)), Duration::from_secs(5), "{bad}");
        }
    }
}
