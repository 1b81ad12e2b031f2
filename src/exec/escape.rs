//! Processes that escaped an attempt's process group.
//!
//! Every attempt runs in its own process group, and the group is killed
//! when the attempt ends. A descendant that left the group (`setsid`,
//! `setpgid`, a daemonising tool) survives that kill. To find such
//! processes without making the orchestrator a child subreaper (orch is a
//! library: `PR_SET_CHILD_SUBREAPER` would change its host process and
//! take over the children its other code waits for), every attempt's
//! environment carries a [`TOKEN_ENV`] marker unique to the attempt, which
//! its descendants inherit through `exec`. At the end of the attempt,
//! [`sweep`] looks through `/proc` for processes that carry the marker
//! (and for their own descendants, which may have dropped it), started no
//! earlier than the attempt, outside its group, and kills them.
//!
//! A forked Python attempt's own `/proc/<pid>/environ` is the fork
//! server's (the marker is set in `os.environ`, which programs it runs
//! inherit, not in the block the kernel shows): a process whose
//! environment is the server's ([`FORK_SERVER_ENV`]) counts when it holds
//! the attempt's marker file open (see `fork.rs`).
//!
//! The scan is cheap: only the pids the kernel handed out since the
//! attempt started are looked at (from the pid counters in `/proc/loadavg`
//! and `/proc/stat`; every pid when the counter may have gone round), none
//! at all when the attempt's own process is the only one; of those,
//! `/proc/<pid>/stat` first, and the environment only of processes that
//! started no earlier than the attempt. Linux only; on other systems
//! nothing is found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The environment variable that marks an attempt's processes: its value
/// is a space-separated list of tokens, the attempt's own last (an
/// orchestrator running inside a task keeps the outer attempts' tokens,
/// so the outer attempt's end finds the inner one's processes too).
pub const TOKEN_ENV: &str = "ORCH_ATTEMPT_TOKEN";
/// Set in the Python fork server's environment: a process whose kernel
/// environment carries it is the server or a fork of it.
pub(crate) const FORK_SERVER_ENV: &str = "ORCH_FORK_SERVER";
/// How much of an escaped process's command line its log line shows.
const MAX_COMMAND: usize = 200;
/// Scans per sweep: a process forked while the previous scan ran is found
/// by the next one.
const PASSES: usize = 3;

/// What marks one attempt's processes.
#[derive(Clone, Debug)]
pub(crate) struct Mark {
    /// This attempt's token (unique on the host).
    token: String,
    /// The value of [`TOKEN_ENV`] the attempt gets: inherited tokens, then
    /// this one.
    value: String,
    /// The boot-time clock in ticks (the unit of `/proc/<pid>/stat` field
    /// 22) just before the attempt started, less one tick.
    since: u64,
    /// For a forked attempt: the target of its marker file's link in
    /// `/proc/<pid>/fd`.
    fork_marker: Option<String>,
    /// The pid counters just before the attempt started: only the pids
    /// handed out since need a look.
    counters: Option<Counters>,
}

/// The kernel's pid counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    /// The last pid handed out in this pid namespace (`/proc/loadavg`,
    /// field 5).
    last_pid: u32,
    /// Processes and threads that exist (`/proc/loadavg`, field 4 after
    /// the `/`).
    tasks: u64,
    /// Processes and threads created since boot, in every namespace
    /// (`/proc/stat`, `processes`).
    forks: u64,
}

/// Pids below this are never handed out again once the counter went
/// round (the kernel's `RESERVED_PIDS`).
const RESERVED_PIDS: u64 = 300;

impl Counters {
    /// Now; `None` where `/proc` does not say. Read before every attempt
    /// and at its end, so each file is read in one go into a buffer
    /// sized for it (`read_to_string` probes the size of a `/proc` file
    /// with a `statx` and a handful of growing reads).
    fn read() -> Option<Counters> {
        let taken = boottime_ns();
        let load = read_proc("/proc/loadavg", 128)?;
        let stat = read_proc("/proc/stat", 4096)?;
        let counters = parse_counters(&load, &stat)?;
        *LATEST.lock().unwrap_or_else(|e| e.into_inner()) = Some((taken, counters));
        Some(counters)
    }

    /// Counters from no later than now, for an attempt about to start: the
    /// latest reading of this process when it is recent (see
    /// [`REUSE_WITHIN_NS`]), else a fresh one. The end of one attempt
    /// reads them just before the next attempt of a chain starts: one
    /// reading of `/proc/stat` (which the kernel builds from every CPU's
    /// and interrupt's counts) serves both.
    fn before() -> Option<Counters> {
        let latest = *LATEST.lock().unwrap_or_else(|e| e.into_inner());
        reusable(latest, boottime_ns()).or_else(Counters::read)
    }

    /// The pids handed out between `self` and `later`, as a cyclic range
    /// `(after, upto]`; `None` when the counter may have gone all the way
    /// round (then any pid may be new). A pid is handed out by counting up
    /// from the last one and wrapping to [`RESERVED_PIDS`] at `pid_max`,
    /// skipping pids in use: fewer creations than the free pids cannot go
    /// round.
    fn since(&self, later: &Counters, pid_max: u64) -> Option<(u32, u32)> {
        let created = later.forks.saturating_sub(self.forks);
        let free = pid_max.saturating_sub(RESERVED_PIDS + 2 * self.tasks.max(later.tasks));
        (created < free).then_some((self.last_pid, later.last_pid))
    }
}

/// The latest counters this process read, and when (`CLOCK_BOOTTIME`,
/// in nanoseconds).
static LATEST: Mutex<Option<(u64, Counters)>> = Mutex::new(None);

/// How old a reading of the counters may be and still serve as an
/// attempt's counters from before it started. Any earlier reading is
/// correct: it only widens the range of pids the sweep looks at (and
/// counts more creations against the counter going round); a recent one
/// keeps that range to the attempt's own pid when nothing else started
/// meanwhile, which the sweep needs to skip its scan.
const REUSE_WITHIN_NS: u64 = 50_000_000;

/// `latest` (taken at the boot-time nanosecond it carries) when it is at
/// most [`REUSE_WITHIN_NS`] older than `now`.
fn reusable(latest: Option<(u64, Counters)>, now: u64) -> Option<Counters> {
    latest
        .filter(|&(taken, _)| taken <= now && now - taken <= REUSE_WITHIN_NS)
        .map(|(_, c)| c)
}

/// A `/proc` file's text, read into a buffer of `capacity` bytes (grown
/// if the file is longer), at most [`MAX_PROC_FILE`] bytes of it.
fn read_proc(path: &str, capacity: usize) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::with_capacity(capacity);
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// How much of a `/proc` counters file is read (`/proc/stat` grows with
/// the number of CPUs and interrupts; its `processes` line comes after
/// those).
const MAX_PROC_FILE: u64 = 1 << 20;

/// Parses `/proc/loadavg` and `/proc/stat`.
fn parse_counters(loadavg: &str, stat: &str) -> Option<Counters> {
    let mut fields = loadavg.split_ascii_whitespace().skip(3);
    let tasks = fields.next()?.split_once('/')?.1.parse().ok()?;
    let last_pid = fields.next()?.parse().ok()?;
    let forks = stat
        .lines()
        .find_map(|l| l.strip_prefix("processes "))?
        .trim()
        .parse()
        .ok()?;
    Some(Counters {
        last_pid,
        tasks,
        forks,
    })
}

/// True when `pid` is in the cyclic range `(after, upto]`.
fn in_range(pid: u32, (after, upto): (u32, u32)) -> bool {
    if after <= upto {
        pid > after && pid <= upto
    } else {
        pid > after || pid <= upto
    }
}

/// `upto` moved on by a few thousand pids, going round at `pid_max` the
/// way the kernel does (past its reserved pids).
fn widen(upto: u32, pid_max: u64) -> u32 {
    let wide = u64::from(upto) + 4096;
    if wide < pid_max {
        wide as u32
    } else {
        (wide - pid_max + RESERVED_PIDS).min(pid_max - 1) as u32
    }
}

/// `/proc/sys/kernel/pid_max` (read once).
fn pid_max() -> u64 {
    static MAX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(32768)
    })
}

impl Mark {
    /// A fresh mark, taken just before the attempt starts.
    pub(crate) fn new() -> Mark {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let counters = if cfg!(target_os = "linux") {
            Counters::before()
        } else {
            None
        };
        let now = boottime_ns();
        let token = format!(
            "{}.{}.{:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            now
        );
        let value = match std::env::var(TOKEN_ENV) {
            Ok(outer) if !outer.trim().is_empty() => format!("{} {token}", outer.trim()),
            _ => token.clone(),
        };
        Mark {
            token,
            value,
            since: ns_to_ticks(now, clock_ticks()).saturating_sub(1),
            fork_marker: None,
            counters,
        }
    }

    /// The pids handed out since the mark was taken, as a cyclic range
    /// `(after, upto]`; `None` when unknown or possibly gone round.
    fn new_pids(&self) -> Option<(u32, u32)> {
        self.counters
            .zip(Counters::read())
            .and_then(|(before, now)| before.since(&now, pid_max()))
    }

    /// The variable the attempt's process gets.
    pub(crate) fn env(&self) -> (&'static str, String) {
        (TOKEN_ENV, self.value.clone())
    }

    /// The attempt is forked: its processes may also be recognised by
    /// holding the marker file `name` open.
    pub(crate) fn forked(&mut self, name: &str) {
        self.fork_marker = Some(format!("/memfd:{name}"));
    }
}

/// One process found outside the attempt's group at its end, and killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Escaped {
    /// Its pid.
    pub pid: u32,
    /// Its command line (or command name), at most [`MAX_COMMAND`] bytes.
    pub command: String,
}

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {} ({}) had left the attempt's process group and still ran at its end: killed",
            self.pid, self.command
        )
    }
}

/// What the sweep needs of one process's `/proc/<pid>/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stat {
    /// The command name (field 2).
    comm: String,
    /// State (field 3): `Z` and `X` are dead.
    state: u8,
    /// Parent (field 4).
    ppid: u32,
    /// Process group (field 5).
    pgrp: u32,
    /// Start time in ticks after boot (field 22).
    start: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name is in parentheses
/// and may hold spaces and parentheses itself, so the other fields are
/// counted after the last `)`.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the `)`: field 3 (state) is index 0, field 22 index 19.
    let state = *fields.first()?.as_bytes().first()?;
    Some(Stat {
        comm,
        state,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// True when the NUL-separated `environ` sets `name` to a value that
/// holds `token` as one of its space-separated words.
fn environ_has(environ: &[u8], name: &str, token: &str) -> bool {
    environ.split(|&b| b == 0).any(|entry| {
        entry
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
            .is_some_and(|value| {
                value
                    .split(|&b| b == b' ')
                    .any(|word| word == token.as_bytes())
            })
    })
}

/// True when the NUL-separated `environ` sets `name` at all.
fn environ_sets(environ: &[u8], name: &str) -> bool {
    environ.split(|&b| b == 0).any(|entry| {
        entry
            .strip_prefix(name.as_bytes())
            .is_some_and(|r| r.first() == Some(&b'='))
    })
}

/// A process's command line for a log line: the NUL-separated `cmdline`
/// joined by spaces, or `[comm]` when it is empty; at most
/// [`MAX_COMMAND`] bytes, bytes that are not UTF-8 shown as `\xNN`.
fn command_text(cmdline: &[u8], comm: &str) -> String {
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    if args.is_empty() {
        return format!("[{comm}]");
    }
    let joined = args.join(&b' ');
    let (text, _) = super::process::escape_invalid(&joined);
    if text.len() <= MAX_COMMAND {
        return text.into_owned();
    }
    let mut end = MAX_COMMAND;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// One process seen by a scan.
#[derive(Clone, Debug)]
struct Seen {
    stat: Stat,
    /// It carries the attempt's mark (its token, or the fork marker).
    marked: bool,
}

/// The escaped processes among `seen` (by pid): alive, started no
/// earlier than `since`, outside group `pgid`, and marked or descended
/// (by parent links among such processes) from a marked one.
fn escaped(seen: &BTreeMap<u32, Seen>, pgid: u32, since: u64) -> BTreeSet<u32> {
    let candidate = |s: &Seen| {
        s.stat.start >= since && s.stat.pgrp != pgid && !matches!(s.stat.state, b'Z' | b'X')
    };
    let mut found: BTreeSet<u32> = seen
        .iter()
        .filter(|(_, s)| s.marked && candidate(s))
        .map(|(&pid, _)| pid)
        .collect();
    // Descendants that dropped the mark (`env -i`): a process is found
    // when its parent is. Parents start before their children, so one
    // pass per generation; stop when a pass adds nothing.
    loop {
        let more: Vec<u32> = seen
            .iter()
            .filter(|(pid, s)| !found.contains(pid) && candidate(s) && found.contains(&s.stat.ppid))
            .map(|(&pid, _)| pid)
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

/// Finds the processes of the attempt marked by `mark` that left its
/// process group `pgid`, kills them (SIGKILL), and returns them. Call it
/// after the group was killed. Blocking (it reads `/proc`).
pub(crate) fn sweep(mark: &Mark, pgid: u32) -> Vec<Escaped> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    let me = std::process::id();
    let mut killed: BTreeMap<(u32, u64), Escaped> = BTreeMap::new();
    for _ in 0..PASSES {
        // Only the pids handed out since the attempt started can be its
        // processes; none but its own: nothing to look at.
        let new = mark.new_pids();
        if only_own(new, pgid) {
            break;
        }
        // Pids handed out while the scan runs count too: a process that
        // keeps forking moves past the counter read above.
        let new = new.map(|(after, upto)| (after, widen(upto, pid_max())));
        let seen = scan(mark, me, new);
        // The orchestrator's own group, never to be signalled.
        // SAFETY: getpgrp has no preconditions.
        let own_group = unsafe { libc::getpgrp() } as u32;
        let mut more = 0;
        for pid in escaped(&seen, pgid, mark.since) {
            let stat = &seen[&pid].stat;
            if killed.contains_key(&(pid, stat.start)) {
                // Killed by an earlier pass; not dead yet.
                continue;
            }
            // Found: another pass looks again, even if it is gone by the
            // time it is signalled (a process that keeps forking and
            // exiting moves to a new pid all the time).
            more += 1;
            // Read first: a killed process's command line is empty.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // An escapee that leads a group of its own (it called setsid
            // or setpgid) takes its group along: what it forks keeps the
            // group, whatever pid it moves to.
            let killed_it = kill(pid, stat.start);
            let leads =
                stat.pgrp == pid && stat.pgrp != own_group && stat.pgrp != pgid && stat.pgrp > 1;
            if leads {
                signal_group(stat.pgrp);
            }
            if !killed_it && !leads {
                continue;
            }
            killed.insert(
                (pid, stat.start),
                Escaped {
                    pid,
                    command: command_text(&cmdline, &stat.comm),
                },
            );
        }
        if more == 0 {
            break;
        }
    }
    killed.into_values().collect()
}

/// True when the pids handed out since the attempt started, `new`, are
/// only its own process's, `pgid`.
fn only_own(new: Option<(u32, u32)>, pgid: u32) -> bool {
    pgid.checked_sub(1)
        .is_some_and(|before| new == Some((before, pgid)))
}

/// True when [`sweep`] has nothing to look at: no pid but the attempt's
/// own process's (`pgid`) was handed out since the attempt started, so
/// none of its processes can have left its group. Cheap (it reads the
/// pid counters, no directory of `/proc`): the end of most attempts
/// needs no sweep on a blocking thread.
pub(crate) fn nothing_to_sweep(mark: &Mark, pgid: u32) -> bool {
    cfg!(target_os = "linux") && only_own(mark.new_pids(), pgid)
}

/// The pids listed in `/proc` (none where it cannot be read).
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

/// Every process but `me` (with a pid in the range `new`, when known),
/// with whether it carries `mark`; the environment is read only of those
/// that started no earlier than the mark.
fn scan(mark: &Mark, me: u32, new: Option<(u32, u32)>) -> BTreeMap<u32, Seen> {
    let mut seen = BTreeMap::new();
    for pid in proc_pids() {
        if pid == me || new.is_some_and(|range| !in_range(pid, range)) {
            continue;
        }
        let Some(stat) = std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        let mut marked = false;
        if stat.start >= mark.since && !matches!(stat.state, b'Z' | b'X') {
            // Another user's process is unreadable, and not ours to kill.
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            marked = environ_has(&environ, TOKEN_ENV, &mark.token)
                || mark.fork_marker.as_deref().is_some_and(|target| {
                    environ_sets(&environ, FORK_SERVER_ENV) && holds(pid, target)
                });
        }
        seen.insert(pid, Seen { stat, marked });
    }
    seen
}

/// Kills (`SIGKILL`, with the groups they lead) every process on this
/// host that belongs to an attempt of one of `nodes` in `run`: its
/// environment names the run and the node (`ORCH_RUN`, `ORCH_NODE`, which
/// every local attempt's process and its descendants inherit), or, for a
/// process forked by the Python fork server, it holds the attempt's marker
/// file open. Returns them. For a takeover: an attempt whose start a crash
/// kept from being written is found this way, without a recorded pid.
/// Blocking (it reads `/proc`).
pub(crate) fn kill_left_behind(run: &str, nodes: &BTreeSet<String>) -> Vec<Escaped> {
    if !cfg!(target_os = "linux") || nodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() } as u32;
    let markers: BTreeSet<String> = nodes
        .iter()
        .map(|node| format!("/memfd:{}", super::fork::marker_name(run, node)))
        .collect();
    let mut killed = Vec::new();
    for pid in proc_pids() {
        if pid == me {
            continue;
        }
        // Another user's process is unreadable, and not ours to kill.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let ours = names_attempt_of(&environ, run, nodes)
            || (environ_sets(&environ, FORK_SERVER_ENV) && holds_any(pid, &markers));
        if !ours {
            continue;
        }
        let Some(stat) = std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        if matches!(stat.state, b'Z' | b'X') {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let killed_it = kill(pid, stat.start);
        if stat.pgrp == pid && stat.pgrp != own_group && stat.pgrp > 1 {
            signal_group(stat.pgrp);
        }
        if killed_it {
            killed.push(Escaped {
                pid,
                command: command_text(&cmdline, &stat.comm),
            });
        }
    }
    killed
}

/// True when the NUL-separated `environ` sets `ORCH_RUN` to `run` and
/// `ORCH_NODE` to one of `nodes`.
fn names_attempt_of(environ: &[u8], run: &str, nodes: &BTreeSet<String>) -> bool {
    let value = |name: &str| {
        environ.split(|&b| b == 0).find_map(|entry| {
            entry
                .strip_prefix(name.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
        })
    };
    value("ORCH_RUN") == Some(run.as_bytes())
        && value("ORCH_NODE")
            .and_then(|node| std::str::from_utf8(node).ok())
            .is_some_and(|node| nodes.contains(node))
}

/// True when process `pid` has a file descriptor whose link is one of
/// `targets`.
fn holds_any(pid: u32, targets: &BTreeSet<String>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| {
            let l = link.to_string_lossy();
            targets.contains(l.as_ref())
                || l.strip_suffix(" (deleted)")
                    .is_some_and(|l| targets.contains(l))
        })
    })
}

/// True when process `pid` has a file descriptor whose link is `target`.
fn holds(pid: u32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| {
            let l = link.to_string_lossy();
            l == target || l.strip_suffix(" (deleted)") == Some(target)
        })
    })
}

/// Kills the process group `pgrp` (`SIGKILL`).
fn signal_group(pgrp: u32) {
    // SAFETY: kill(2) with a negative pid signals that group only.
    unsafe {
        libc::kill(-(pgrp as libc::pid_t), libc::SIGKILL);
    }
}

/// Kills process `pid` if it is still the one that started at `start`
/// (through a pidfd where the kernel has them, so a pid reused meanwhile
/// is never hit). True when the signal was sent.
fn kill(pid: u32, start: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            let fd = fd as libc::c_int;
            // The pidfd pins the process: check it is still the one seen.
            let same = crate::host::process_start(pid) == Some(start);
            let sent = same
                // SAFETY: pidfd_send_signal on the fd we own; no siginfo.
                && unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd,
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                } == 0;
            // SAFETY: closing the fd we own.
            unsafe {
                libc::close(fd);
            }
            return sent;
        }
    }
    if crate::host::process_start(pid) != Some(start) {
        return false;
    }
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) == 0 }
}

/// `CLOCK_BOOTTIME` in nanoseconds (the clock of `/proc/<pid>/stat`'s
/// start times).
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_MONOTONIC;
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 almost always).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Nanoseconds to ticks, rounded down as the kernel does.
fn ns_to_ticks(ns: u64, ticks_per_second: u64) -> u64 {
    ns / (1_000_000_000 / ticks_per_second.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = b"4242 (a) (b c) S 7 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.comm, "a) (b c");
        assert_eq!((s.state, s.ppid, s.pgrp, s.start), (b'S', 7, 4242, 123456));
        assert_eq!(parse_stat(b"12 (x) S 1"), None, "too short");
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn the_token_is_matched_as_a_whole_word_of_its_own_variable() {
        let env = b"A=1\0ORCH_ATTEMPT_TOKEN=outer.1 me.2\0B=me.3\0";
        assert!(environ_has(env, TOKEN_ENV, "me.2"));
        assert!(environ_has(env, TOKEN_ENV, "outer.1"));
        assert!(!environ_has(env, TOKEN_ENV, "me"), "a prefix is not it");
        assert!(!environ_has(env, TOKEN_ENV, "me.3"), "another variable");
        assert!(!environ_has(
            b"ORCH_ATTEMPT_TOKEN_X=me.2\0",
            TOKEN_ENV,
            "me.2"
        ));
        assert!(environ_sets(b"X=1\0ORCH_FORK_SERVER=1\0", FORK_SERVER_ENV));
        assert!(!environ_sets(b"ORCH_FORK_SERVERS=1\0", FORK_SERVER_ENV));
    }

    #[test]
    fn a_left_behind_attempt_is_named_by_its_run_and_one_of_the_nodes() {
        let nodes: BTreeSet<String> = ["b".to_string(), "c d".to_string()].into();
        let env = |s: &str| s.replace('|', "\0").into_bytes();
        assert!(names_attempt_of(
            &env("X=1|ORCH_RUN=r1|ORCH_NODE=b"),
            "r1",
            &nodes
        ));
        assert!(names_attempt_of(
            &env("ORCH_NODE=c d|ORCH_RUN=r1"),
            "r1",
            &nodes
        ));
        assert!(
            !names_attempt_of(&env("ORCH_RUN=r1|ORCH_NODE=a"), "r1", &nodes),
            "another node"
        );
        assert!(
            !names_attempt_of(&env("ORCH_RUN=r12|ORCH_NODE=b"), "r1", &nodes),
            "another run"
        );
        assert!(
            !names_attempt_of(&env("ORCH_RUN=r1"), "r1", &nodes),
            "no node"
        );
        assert!(!names_attempt_of(
            &env("ORCH_RUNX=r1|ORCH_NODE=b"),
            "r1",
            &nodes
        ));
    }

    #[test]
    fn command_lines_are_joined_bounded_and_never_empty() {
        assert_eq!(command_text(b"sleep\x001000\0", "sleep"), "sleep 1000");
        assert_eq!(command_text(b"", "kworker"), "[kworker]");
        assert_eq!(command_text(b"a\xff\0", "a"), r"a\xff");
        let long = command_text(&vec![b'x'; 1000], "x");
        assert!(long.len() <= MAX_COMMAND + '…'.len_utf8() && long.ends_with('…'));
    }

    fn seen(ppid: u32, pgrp: u32, start: u64, state: u8, marked: bool) -> Seen {
        Seen {
            stat: Stat {
                comm: "c".into(),
                state,
                ppid,
                pgrp,
                start,
            },
            marked,
        }
    }

    #[test]
    fn escapees_are_marked_new_alive_outside_the_group_or_their_children() {
        let (pgid, since) = (100, 50);
        let all: BTreeMap<u32, Seen> = [
            (100, seen(1, 100, 50, b'S', true)),    // the group itself
            (101, seen(100, 100, 51, b'S', true)),  // in the group
            (200, seen(1, 200, 60, b'S', true)),    // setsid: escaped
            (201, seen(200, 200, 61, b'S', false)), // its child, env cleared
            (202, seen(201, 202, 62, b'S', false)), // grandchild
            (300, seen(1, 300, 40, b'S', true)),    // older than the attempt
            (301, seen(300, 301, 70, b'S', false)), // child of an old one
            (400, seen(1, 400, 70, b'Z', true)),    // already dead
            (500, seen(1, 500, 70, b'S', false)),   // someone else's
        ]
        .into_iter()
        .collect();
        assert_eq!(
            escaped(&all, pgid, since).into_iter().collect::<Vec<_>>(),
            vec![200, 201, 202]
        );
    }

    #[test]
    fn new_pids_are_the_range_since_the_last_one_unless_it_went_round() {
        let load = "0.50 0.40 0.30 2/88 7805\n";
        let stat = "cpu  1 2 3\nintr 5 6\nctxt 9\nbtime 1\nprocesses 123456\nprocs_running 2\n";
        let c = parse_counters(load, stat).expect("parses");
        assert_eq!(
            c,
            Counters {
                last_pid: 7805,
                tasks: 88,
                forks: 123456
            }
        );
        assert_eq!(parse_counters("0.1 0.1 0.1 2/88\n", stat), None);
        let later = |last_pid, forks| Counters {
            last_pid,
            tasks: 90,
            forks,
        };
        assert_eq!(c.since(&later(7900, 123551), 32768), Some((7805, 7900)));
        // Wrapped past pid_max: still a range, (7805, 32767] and [300, 400].
        let wrapped = c
            .since(&later(400, 123456 + 25_000), 32768)
            .expect("less than a round");
        assert!(in_range(32000, wrapped) && in_range(300, wrapped) && in_range(400, wrapped));
        assert!(!in_range(401, wrapped) && !in_range(7805, wrapped));
        // As many creations as free pids: it may have gone round.
        assert_eq!(c.since(&later(7900, 123456 + 32_768), 32768), None);
        assert!(!in_range(7805, (7805, 7805)), "nothing new");
        assert!(in_range(7806, (7805, 7806)) && !in_range(7805, (7805, 7806)));
    }

    #[test]
    fn a_recent_reading_serves_as_the_counters_before_an_attempt() {
        let c = Counters {
            last_pid: 7805,
            tasks: 200,
            forks: 123456,
        };
        let now = 10_000_000_000;
        assert_eq!(reusable(Some((now - 1_000_000, c)), now), Some(c));
        assert_eq!(reusable(Some((now - REUSE_WITHIN_NS, c)), now), Some(c));
        assert_eq!(reusable(Some((now - REUSE_WITHIN_NS - 1, c)), now), None);
        // Stamped later than now: not known to be from before.
        assert_eq!(reusable(Some((now + 1, c)), now), None);
        assert_eq!(reusable(None, now), None);
    }

    #[test]
    fn the_start_bound_is_in_the_units_of_proc_stat() {
        assert_eq!(ns_to_ticks(1_234_567_890, 100), 123);
        let mark = Mark::new();
        let me = crate::host::process_start(std::process::id()).expect("own stat");
        // One tick of slack below the clock.
        assert!(mark.since + 1 >= me, "this process started before the mark");
        assert!(
            mark.since < me + 100 * 3600 * clock_ticks(),
            "the same units: this test process started less than 100 hours ago"
        );
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep");
        let started = crate::host::process_start(child.id()).expect("child's stat");
        assert!(started >= mark.since, "a later child starts after it");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_sweep_kills_a_process_that_carries_the_mark_outside_the_group() {
        let mark = Mark::new();
        let (name, value) = mark.env();
        let mut inside = std::process::Command::new("sleep")
            .arg("1000")
            .env(name, &value)
            .spawn()
            .expect("sleep");
        let mut unmarked = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep");
        // A child is seen with its own environment only once it has exec'd
        // (before, /proc shows the forked copy of this process): wait for
        // that, bounded, on a busy machine.
        for pid in [inside.id(), unmarked.id()] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
                != b"sleep\x001000\x00"
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "sleep {pid} never exec'd"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        // Neither is in a group of its own: both are in this test's group,
        // so with that group as the attempt's nothing escaped...
        let own_group = {
            // SAFETY: getpgrp has no effects.
            unsafe { libc::getpgrp() as u32 }
        };
        assert!(sweep(&mark, own_group).is_empty());
        // ...and with another group, the marked one did.
        let found = sweep(&mark, u32::MAX);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, inside.id());
        assert_eq!(found[0].command, "sleep 1000");
        assert!(inside.wait().expect("wait").signal() == Some(libc::SIGKILL));
        let _ = unmarked.kill();
        let _ = unmarked.wait();
    }

    use std::os::unix::process::ExitStatusExt;
}
