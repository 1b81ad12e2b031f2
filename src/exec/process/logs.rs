//! What an attempt's pipes hold: lines read with a bounded length, their
//! bytes as text (invalid UTF-8 shown as `\xNN`), and the attempt's log
//! they are kept in, capped at [`MAX_LOG_BYTES`].

use std::borrow::Cow;
use std::fmt::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::exec::{AttemptId, Report, LOG_LINE_COST, MAX_LOG_BYTES};
use crate::history::LogLine;

pub(super) enum Read {
    Line(Vec<u8>),
    TooLong(Vec<u8>),
    Eof,
}

/// Reads lines of bounded length; cancel-safe (all state lives in the
/// struct and is changed only after a read completes).
pub(super) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    scanned: usize,
    eof: bool,
    skipping: bool,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            scanned: 0,
            eof: false,
            skipping: false,
            max,
        }
    }

    pub(super) async fn next(&mut self) -> std::io::Result<Read> {
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
pub(super) fn line_text(bytes: Vec<u8>) -> (String, usize, Option<usize>) {
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
pub(super) fn without_cut_char(prefix: &[u8]) -> &[u8] {
    match std::str::from_utf8(prefix) {
        Err(e) if e.error_len().is_none() => &prefix[..e.valid_up_to()],
        _ => prefix,
    }
}

pub(super) struct Collector {
    pub(super) node: String,
    pub(super) attempt: u32,
    pub(super) logs: Vec<LogLine>,
    pub(super) bytes: usize,
    pub(super) dropped: usize,
    /// Lines that had bytes that are not UTF-8: the first is noted right
    /// after it, the others counted in a last line.
    pub(super) not_utf8: usize,
    /// Where each kept line goes as it is written, when logs are followed.
    pub(super) live: Option<(AttemptId, mpsc::UnboundedSender<Report>)>,
}

impl Collector {
    /// Keeps a line, unless the log is over [`MAX_LOG_BYTES`] (then it is
    /// counted as dropped); true when kept.
    pub(super) fn push(&mut self, stream: &str, text: String) -> bool {
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
    pub(super) fn note(&mut self, text: String) {
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
    pub(super) fn push_bytes(&mut self, stream: &str, number: u64, bytes: Vec<u8>) {
        let (text, bad, _) = line_text(bytes);
        let kept = self.push(stream, text);
        self.note_invalid(stream, number, bad, kept);
    }

    /// Says that line `number` of `stream` (`kept` or dropped) had `bad`
    /// bytes shown as `\xNN`: the first such kept line of the attempt
    /// right away, the others counted at the end. Never a changed value
    /// without a word.
    pub(super) fn note_invalid(&mut self, stream: &str, number: u64, bad: usize, kept: bool) {
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

    pub(super) fn finish(mut self) -> Vec<LogLine> {
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

#[cfg(test)]
impl Collector {
    /// The log of node `n`'s first attempt, not followed live.
    pub(super) fn quiet() -> Collector {
        Collector {
            node: "n".into(),
            attempt: 1,
            logs: Vec::new(),
            bytes: 0,
            dropped: 0,
            not_utf8: 0,
            live: None,
        }
    }
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
        let mut logs = Collector::quiet();
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
