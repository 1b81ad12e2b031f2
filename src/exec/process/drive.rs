//! Supervising one attempt to its end: its stdin fed, its stdout read as
//! protocol and log, its stderr as log, and its process, timeout and the
//! engine's stops watched; then how it ended.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::logs::{escape_invalid, line_text, without_cut_char, Collector, LineReader, Read};
use super::{kill_group, signal_group, Ctr, Proc};
use crate::exec::escape;
use crate::exec::protocol::{self, Line, Start};
use crate::exec::{AttemptEnd, AttemptLink, AttemptSpec, Exit, Interrupt, Stop, MAX_LINE_BYTES};

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

/// "stdout", "stderr" or "stdout and stderr": the pipes still open.
fn open_pipes(out_done: bool, err_done: bool) -> &'static str {
    match (out_done, err_done) {
        (false, false) => "stdout and stderr were",
        (false, true) => "stdout was",
        _ => "stderr was",
    }
}

/// Runs one attempt to its end: feeds stdin, reads stdout (protocol and
/// log) and stderr (log), and watches the process, its timeout and the
/// engine's stops.
///
/// The attempt ends when its process has exited: its group is killed,
/// then the processes that left the group (found by its [`Mark`](escape::Mark)), then
/// the pipes are read for at most [`DRAIN_AFTER_EXIT`] (or until the
/// timeout, which counts from the start to the end of the attempt).
pub(super) async fn drive(
    proc: Proc,
    spec: AttemptSpec,
    mut link: AttemptLink,
    timeout: Option<Duration>,
) {
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
    let mut out_state = Stdout::default();
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
    let mut status = None;
    // Until when the pipes are read once the process exited.
    let mut drain: Option<tokio::time::Instant> = None;
    // Lines read of stderr, for the notes that name one.
    let mut err_lines = 0u64;
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
                    out_state.line(bytes, pgid, &mut end, &mut logs, &link, &stdin_tx).await;
                }
                Ok(Read::TooLong(prefix)) => {
                    out_state.too_long(&prefix, pgid, &mut end, &mut logs);
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
    settle(
        &mut end,
        status,
        terminated,
        container.as_ref(),
        last_err.as_deref(),
    );
    if let Some(t) = timeout.filter(|_| timed_out) {
        logs.note(format!(
            "killed after its timeout of {:.3}s",
            t.as_secs_f64()
        ));
    }
    end.logs = logs.finish();
    link.finish(end);
}

/// Stdout, read as the protocol and the log: once the protocol broke,
/// the rest is only logged.
#[derive(Default)]
struct Stdout {
    /// Lines read, for the notes that name one.
    lines: u64,
    /// Whether the protocol broke.
    broken: bool,
    /// The seq of the last message.
    last_seq: u64,
}

impl Stdout {
    /// One line of stdout: a log line, or a message answered on `stdin`.
    /// A line that breaks the protocol interrupts the attempt and kills
    /// its group.
    async fn line(
        &mut self,
        bytes: Vec<u8>,
        pgid: u32,
        end: &mut AttemptEnd,
        logs: &mut Collector,
        link: &AttemptLink,
        stdin: &mpsc::UnboundedSender<String>,
    ) {
        self.lines += 1;
        let (line, bad, first_bad) = line_text(bytes);
        if self.broken {
            let kept = logs.push("stdout", line);
            logs.note_invalid("stdout", self.lines, bad, kept);
            return;
        }
        if let Some(at) = first_bad {
            if protocol::is_marked(&line) {
                // A protocol line is data: never guessed at.
                self.broken = true;
                end.interrupt(Interrupt::Broken(format!(
                    "protocol line is not UTF-8 (byte {at} is the first that is not; shown as \\xNN): {}",
                    protocol::quote(&line)
                )));
                kill_group(pgid);
            } else {
                let kept = logs.push("stdout", line);
                logs.note_invalid("stdout", self.lines, bad, kept);
            }
            return;
        }
        match protocol::classify(&line) {
            Line::Log => {
                logs.push("stdout", line);
            }
            Line::Malformed(why) => {
                self.broken = true;
                end.interrupt(Interrupt::Broken(format!(
                    "malformed protocol line ({why}): {}",
                    protocol::quote(&line)
                )));
                kill_group(pgid);
            }
            Line::Message(m) => {
                if m.seq <= self.last_seq {
                    self.broken = true;
                    end.interrupt(Interrupt::Broken(format!(
                        "protocol line has seq {} but the previous one had {}: {}",
                        m.seq,
                        self.last_seq,
                        protocol::quote(&line)
                    )));
                    kill_group(pgid);
                    return;
                }
                self.last_seq = m.seq;
                let reply =
                    crate::exec::answer_message(link, m.seq, m.body, end, |stream, text| {
                        logs.push(stream, text);
                    })
                    .await;
                let _ = stdin.send(reply);
            }
        }
    }

    /// The start of a line over [`MAX_LINE_BYTES`]: logged cut, unless it
    /// begins like a protocol line, which breaks the protocol.
    fn too_long(&mut self, prefix: &[u8], pgid: u32, end: &mut AttemptEnd, logs: &mut Collector) {
        self.lines += 1;
        let (head, bad) = escape_invalid(without_cut_char(prefix));
        if !protocol::is_marked(&head) {
            let kept = logs.push(
                "stdout",
                format!("{head}… [line over {MAX_LINE_BYTES} bytes truncated]"),
            );
            logs.note_invalid("stdout", self.lines, bad, kept);
        } else if !self.broken {
            self.broken = true;
            end.interrupt(Interrupt::Broken(format!(
                "protocol line longer than {MAX_LINE_BYTES} bytes: {}",
                protocol::quote(&head)
            )));
            kill_group(pgid);
        }
    }
}

/// How the attempt ended, once its process has (`status`: its exit
/// code and signal, or why waiting for it failed): a stop it was asked
/// for (`terminated`) and did not survive with exit 0 interrupts it, and
/// exit 125 of a `container` attempt is the engine's own failure, told
/// with the engine's last stderr line (`last_err`).
fn settle(
    end: &mut AttemptEnd,
    status: Option<std::io::Result<(Option<i32>, Option<i32>)>>,
    terminated: bool,
    container: Option<&Ctr>,
    last_err: Option<&str>,
) {
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
    if let (Some(c), Exit::Code(125), None) = (container, end.exit, &end.interrupt) {
        end.interrupt(Interrupt::Broken(format!(
            "{} could not run a container of the image `{}` (exit 125): {}",
            c.engine.name(),
            c.image,
            last_err.unwrap_or("it said nothing on stderr")
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::container::{ContainerEngine, EngineKind};

    fn ended() -> AttemptEnd {
        AttemptEnd::ended(Exit::Unknown)
    }

    #[test]
    fn an_exit_is_a_code_or_a_signal_and_a_failed_wait_breaks_the_attempt() {
        let mut end = ended();
        settle(&mut end, Some(Ok((Some(3), None))), false, None, None);
        assert_eq!((end.exit, end.interrupt), (Exit::Code(3), None));
        let mut end = ended();
        settle(&mut end, Some(Ok((None, Some(9)))), false, None, None);
        assert_eq!((end.exit, end.interrupt), (Exit::Signal(9), None));
        let mut end = ended();
        let gone = std::io::Error::other("gone");
        settle(&mut end, Some(Err(gone)), false, None, None);
        assert_eq!(end.exit, Exit::Unknown);
        assert_eq!(
            end.interrupt,
            Some(Interrupt::Broken(
                "waiting for the process failed: gone".into()
            ))
        );
    }

    #[test]
    fn a_stop_asked_for_interrupts_unless_the_attempt_exited_0() {
        let mut end = ended();
        settle(&mut end, Some(Ok((None, Some(15)))), true, None, None);
        assert_eq!(end.interrupt, Some(Interrupt::Killed));
        let mut end = ended();
        settle(&mut end, Some(Ok((Some(1), None))), true, None, None);
        assert_eq!(end.interrupt, Some(Interrupt::Killed));
        let mut end = ended();
        settle(&mut end, Some(Ok((Some(0), None))), true, None, None);
        assert_eq!((end.exit, end.interrupt), (Exit::Code(0), None));
    }

    #[test]
    fn exit_125_of_a_container_attempt_is_the_engines_failure() {
        let ctr = Ctr {
            engine: ContainerEngine {
                program: "/usr/bin/podman".into(),
                kind: EngineKind::Podman,
                version: "podman version 5.0.0".into(),
            },
            name: "orch-run-node-1".into(),
            image: "alpine".into(),
        };
        let mut end = ended();
        let said = Some("Error: alpine: image not known");
        settle(
            &mut end,
            Some(Ok((Some(125), None))),
            false,
            Some(&ctr),
            said,
        );
        assert_eq!(
            end.interrupt,
            Some(Interrupt::Broken(
                "podman could not run a container of the image `alpine` (exit 125): Error: alpine: image not known".into()
            ))
        );
        let mut end = ended();
        settle(
            &mut end,
            Some(Ok((Some(125), None))),
            false,
            Some(&ctr),
            None,
        );
        assert!(
            matches!(&end.interrupt, Some(Interrupt::Broken(m)) if m.ends_with("it said nothing on stderr"))
        );
        // A task of its own that exits 125 is judged as usual.
        let mut end = ended();
        settle(&mut end, Some(Ok((Some(125), None))), false, None, None);
        assert_eq!((end.exit, end.interrupt), (Exit::Code(125), None));
    }

    #[test]
    fn a_long_line_is_logged_cut_unless_it_begins_like_a_protocol_line() {
        let mut logs = Collector::quiet();
        let mut end = ended();
        let mut out_state = Stdout::default();
        // Group 0 is never signalled.
        out_state.too_long(b"plain \xe2\x82", 0, &mut end, &mut logs);
        assert_eq!(end.interrupt, None);
        out_state.too_long(b" { \"orch\": {\"seq\": 1", 0, &mut end, &mut logs);
        assert!(out_state.broken);
        assert!(matches!(&end.interrupt, Some(Interrupt::Broken(m))
            if m.starts_with(&format!("protocol line longer than {MAX_LINE_BYTES} bytes: "))));
        assert_eq!(out_state.lines, 2);
        let text: Vec<String> = logs.finish().into_iter().map(|l| l.text).collect();
        assert_eq!(
            text,
            [format!(
                "plain … [line over {MAX_LINE_BYTES} bytes truncated]"
            )]
        );
    }
}
