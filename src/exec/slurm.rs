//! Attempts handed to SLURM: what a runner with the `exec=slurm` label
//! does with every attempt it claims.
//!
//! Each attempt gets a folder of its own under the runner's
//! (`.orch-slurm/RUN.NODE.ATTEMPT`, names written `%XX` where needed) and
//! a job script there, submitted with `sbatch --parsable`. The task
//! protocol runs over files, so the job may run on any node that shares
//! the folder: the job feeds the task's stdin from the file `in` (through
//! `tail -f` and a FIFO made on the node), which holds the start message
//! and then every answer the runner appends; the task's stdout goes to
//! `out` and its stderr to `err`, which the runner reads as they grow.
//! The job writes the task's exit code to `exit` last. A job that leaves
//! the queue (`squeue`) without an `exit` ended on SLURM's side: its
//! state comes from `sacct`. Stopping an attempt is `scancel`.
//!
//! Requirements become `--cpus-per-task`, `--mem` (MiB) and
//! `--gres=gpu:N`. Command and Python script tasks go to SLURM; other
//! kinds are refused, saying so. A task's timeout is kept by the runner
//! (`scancel` when it passes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{self, Line};
use super::{
    AttemptEnd, AttemptLink, AttemptSpec, Executor, Exit, Interrupt, LaunchError, Report,
    LOG_LINE_COST, MAX_LINE_BYTES, MAX_LOG_BYTES,
};
use crate::history::LogLine;
use crate::model::Exec;

/// How often a job's files are read.
const POLL: Duration = Duration::from_millis(200);
/// How often (in polls) the queue is asked whether the job still exists.
const ASK_QUEUE_EVERY: u32 = 10;
/// The most bytes of one line of a job's output: a longer one is cut
/// there (and, if a protocol line, fails to parse).
const MAX_LINE: usize = MAX_LINE_BYTES;

/// Where and how jobs run.
#[derive(Clone, Debug)]
pub struct SlurmEnv {
    /// The runner's folder: tasks run in it, jobs' folders are under it.
    pub dir: PathBuf,
    /// The workflow's folder: relative scripts resolve against it.
    pub base_dir: PathBuf,
    /// The Python interpreter for Python tasks.
    pub python: String,
    /// The folder holding the `orch` helper package (on `PYTHONPATH`).
    pub helper_dir: PathBuf,
}

/// Hands attempts to SLURM (see the module's documentation).
#[derive(Clone, Debug)]
pub struct SlurmExecutor {
    env: Arc<SlurmEnv>,
}

impl SlurmExecutor {
    /// An executor submitting jobs as `env` says.
    pub fn new(env: SlurmEnv) -> SlurmExecutor {
        SlurmExecutor { env: Arc::new(env) }
    }
}

/// `text` as one shell word.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` with every byte but letters, digits, `_` and `-` written `%XX`.
fn file_name(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The job script of an attempt running `argv` with `vars`, its files in
/// `job`, in the folder `cwd`.
fn job_script(job: &Path, cwd: &Path, argv: &[String], vars: &[(&str, String)]) -> String {
    let d = sh_quote(&job.to_string_lossy());
    let mut s =
        String::from("#!/bin/sh\n# Written by orch: one attempt, its protocol over files.\n");
    s.push_str(&format!(
        "D={d}\ncd {} || exit 111\n",
        sh_quote(&cwd.to_string_lossy())
    ));
    for (k, v) in vars {
        s.push_str(&format!("{k}={}; export {k}\n", sh_quote(v)));
    }
    s.push_str(
        "rm -f \"$D/stdin\" && mkfifo \"$D/stdin\" || exit 111\n\
         tail -n +1 -f \"$D/in\" > \"$D/stdin\" &\n\
         T=$!\n",
    );
    let words: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    s.push_str(&format!(
        "{} < \"$D/stdin\" > \"$D/out\" 2> \"$D/err\"\n",
        words.join(" ")
    ));
    s.push_str(
        "rc=$?\n\
         kill $T 2>/dev/null\n\
         echo $rc > \"$D/exit.tmp\" && mv \"$D/exit.tmp\" \"$D/exit\"\n",
    );
    s
}

/// Runs a SLURM command; its stdout, or why it failed.
fn slurm(program: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{program}` could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Executor for SlurmExecutor {
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        let env = &self.env;
        let argv: Vec<String> = match &spec.task.exec {
            Exec::Command { argv } if !argv.is_empty() => argv.clone(),
            Exec::Python { script } => vec![
                env.python.clone(),
                env.base_dir.join(script).to_string_lossy().into_owned(),
            ],
            other => {
                return Err(LaunchError::Refused(format!(
                    "a `{}` task cannot be handed to SLURM: only command and python tasks",
                    other.kind()
                )))
            }
        };
        let id = &spec.id;
        let job = env.dir.join(".orch-slurm").join(format!(
            "{}.{}.{}",
            file_name(&id.run),
            file_name(&id.node),
            id.attempt
        ));
        let _ = std::fs::remove_dir_all(&job);
        let start = protocol::Start::new(
            &id.run,
            &id.node,
            id.attempt,
            &spec.task,
            spec.inputs.clone(),
            spec.upstream.clone(),
        );
        let pythonpath = format!(
            "{}:{}",
            env.helper_dir.to_string_lossy(),
            env.base_dir.to_string_lossy()
        );
        let vars = [
            ("ORCH_RUN", id.run.clone()),
            ("ORCH_NODE", id.node.clone()),
            ("ORCH_ATTEMPT", id.attempt.to_string()),
            (
                "ORCH_WORKFLOW_DIR",
                env.base_dir.to_string_lossy().into_owned(),
            ),
            ("PYTHONPATH", pythonpath),
        ];
        let script = job.join("job.sh");
        std::fs::create_dir_all(&job)
            .and_then(|()| std::fs::write(job.join("in"), start.to_line()))
            .and_then(|()| std::fs::write(&script, job_script(&job, &env.dir, &argv, &vars)))
            .map_err(|e| {
                LaunchError::Refused(format!("writing the job of {id} in {}: {e}", job.display()))
            })?;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=orch-{}", file_name(&id.node)),
            format!("--output={}", job.join("slurm.log").display()),
            format!("--chdir={}", env.dir.display()),
        ];
        if let Some(need) = spec.task.requires.as_deref() {
            if let Some(cpu) = need.cpu {
                args.push(format!("--cpus-per-task={}", cpu.ceil().max(1.0) as u64));
            }
            if let Some(mem) = need.memory {
                args.push(format!("--mem={}M", mem.div_ceil(1 << 20).max(1)));
            }
            if let Some(gpu) = need.gpu.filter(|g| *g > 0) {
                args.push(format!("--gres=gpu:{gpu}"));
            }
        }
        args.push(script.to_string_lossy().into_owned());
        let out = slurm("sbatch", &args).map_err(LaunchError::Refused)?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let job_id = out.split(';').next().unwrap_or("").trim().to_string();
        if job_id.is_empty()
            || !job_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(LaunchError::Refused(format!(
                "sbatch answered {out:?}, not a job id"
            )));
        }
        tracing::info!(attempt = %id, job = %job_id, "handed to SLURM");
        let timeout = spec
            .task
            .timeout
            .and_then(|t| Duration::try_from_secs_f64(t).ok());
        tokio::spawn(follow(job, job_id, timeout, link));
        Ok(None)
    }
}

/// The lines of a growing file, read from where the last read stopped.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// The last read reached the end of what is written.
    eof: bool,
}

/// The most bytes one read of a job's file takes (the rest waits for the
/// next).
const CHUNK: u64 = 8 << 20;

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
            eof: false,
        }
    }

    /// The complete lines written since the last read, at most
    /// [`CHUNK`] bytes of them (the unfinished last one too when `all`
    /// and the read reached the end).
    fn lines(&mut self, all: bool) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = f.take(CHUNK).read_to_end(&mut buf);
            }
        }
        self.eof = (buf.len() as u64) < CHUNK;
        let all = all && self.eof;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(at) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            out.push(line[..line.len() - 1].to_vec());
        }
        if self.partial.len() > MAX_LINE {
            out.push(std::mem::take(&mut self.partial));
        }
        if all && !self.partial.is_empty() {
            out.push(std::mem::take(&mut self.partial));
        }
        out.into_iter()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }
}

/// The attempt's log so far: at most [`MAX_LOG_BYTES`] (each line
/// counting [`LOG_LINE_COST`] more); the rest is counted and dropped.
struct Logs {
    node: String,
    attempt: u32,
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: u64,
}

impl Logs {
    fn push(&mut self, link: &AttemptLink, stream: &str, text: String) {
        self.bytes += text.len() + LOG_LINE_COST;
        if self.bytes > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        let line = LogLine {
            node: self.node.clone(),
            attempt: self.attempt,
            line: self.lines.len() as u32 + 1,
            stream: stream.to_string(),
            text,
        };
        if link.follow_logs {
            let _ = link.reports.send(Report::Log {
                attempt: link.id.clone(),
                line: line.clone(),
            });
        }
        self.lines.push(line);
    }
}

/// [`slurm`] off the runtime's workers.
async fn slurm_off(program: &'static str, args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || slurm(program, &args))
        .await
        .map_err(|e| format!("a worker failed: {e}"))?
}

/// `scancel`s the job, logging a failure (`why` says what asked).
async fn cancel(job_id: &str, why: &str) {
    if let Err(e) = slurm_off("scancel", vec![job_id.to_string()]).await {
        tracing::warn!(job = %job_id, error = %e, why, "scancel failed");
    }
}

/// Appends an answer to the job's `in`.
fn answer(job: &Path, line: &str) {
    use std::io::Write;
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(job.join("in"))
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!(job = %job.display(), error = %e, "answering the task failed");
    }
}

/// Follows a submitted job until it ends (or is cancelled), relaying its
/// protocol and logs, then reports its end.
async fn follow(job: PathBuf, job_id: String, timeout: Option<Duration>, mut link: AttemptLink) {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut out = Tail::new(job.join("out"));
    let mut logs = Logs {
        node: link.id.node.clone(),
        attempt: link.id.attempt,
        lines: Vec::new(),
        bytes: 0,
        dropped: 0,
    };
    let mut end = AttemptEnd::ended(Exit::Unknown);
    let mut last_seq = 0u64;
    let mut polls = 0u32;
    let exit = loop {
        let stop = tokio::select! {
            s = link.kill.recv() => Some(s),
            _ = tokio::time::sleep(POLL) => None,
        };
        match stop {
            // The engine no longer waits: nothing to report to.
            Some(None) => {
                cancel(&job_id, "the engine is gone").await;
                return;
            }
            Some(Some(_)) => {
                cancel(&job_id, "stopped").await;
                end.interrupt(Interrupt::Killed);
                break None;
            }
            None => {}
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            cancel(&job_id, "its timeout passed").await;
            end.interrupt(Interrupt::TimedOut);
            break None;
        }
        let done = std::fs::read_to_string(job.join("exit")).ok();
        for line in out.lines(done.is_some()) {
            match protocol::classify(&line) {
                Line::Log => logs.push(&link, "stdout", line),
                Line::Malformed(why) => {
                    end.interrupt(Interrupt::Broken(format!(
                        "malformed protocol line ({why}): {}",
                        protocol::quote(&line)
                    )));
                }
                Line::Message(m) if m.seq <= last_seq => {
                    end.interrupt(Interrupt::Broken(format!(
                        "protocol line has seq {} but the previous one had {last_seq}: {}",
                        m.seq,
                        protocol::quote(&line)
                    )));
                }
                Line::Message(m) => {
                    last_seq = m.seq;
                    let reply =
                        super::answer_message(&link, m.seq, m.body, &mut end, |stream, text| {
                            logs.push(&link, stream, text)
                        })
                        .await;
                    answer(&job, reply.trim_end());
                }
            }
            if end.interrupt.is_some() {
                break;
            }
        }
        if end.interrupt.is_some() {
            cancel(&job_id, "its protocol broke").await;
            break None;
        }
        if let Some(code) = done {
            // Everything it wrote is read: it ended.
            if out.eof {
                break Some(code);
            }
            continue;
        }
        polls += 1;
        if polls.is_multiple_of(ASK_QUEUE_EVERY) {
            let queued = slurm_off(
                "squeue",
                vec![
                    "-h".into(),
                    "-j".into(),
                    job_id.clone(),
                    "-o".into(),
                    "%T".into(),
                ],
            )
            .await
            .unwrap_or_default();
            if queued.is_empty() && !job.join("exit").exists() {
                let state = slurm_off(
                    "sacct",
                    vec![
                        "-n".into(),
                        "-X".into(),
                        "-j".into(),
                        job_id.clone(),
                        "-o".into(),
                        "State".into(),
                    ],
                )
                .await
                .unwrap_or_else(|e| format!("unknown ({e})"));
                end.interrupt(Interrupt::Broken(format!(
                    "SLURM job {job_id} ended {} before the task reported its exit",
                    if state.trim().is_empty() {
                        "unknown"
                    } else {
                        state.trim()
                    }
                )));
                break None;
            }
        }
    };
    if let Some(code) = exit {
        end.exit = match code.trim().parse::<i32>() {
            // A shell reports death by signal N as 128 + N.
            Ok(c) if c > 128 && c < 160 => Exit::Signal(c - 128),
            Ok(c) => Exit::Code(c),
            Err(_) => Exit::Unknown,
        };
    }
    let mut err = Tail::new(job.join("err"));
    loop {
        for line in err.lines(true) {
            logs.push(&link, "stderr", line);
        }
        if err.eof {
            break;
        }
    }
    if logs.dropped > 0 {
        let note = format!(
            "{} more log lines were dropped: an attempt keeps at most {MAX_LOG_BYTES} bytes of log",
            logs.dropped
        );
        logs.bytes = 0;
        logs.push(&link, "orch", note);
    }
    end.logs = logs.lines;
    let _ = link.reports.send(Report::Finished {
        attempt: link.id.clone(),
        end,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_scripts_quote_every_word() {
        let s = job_script(
            Path::new("/j"),
            Path::new("/r"),
            &["sh".into(), "-c".into(), "echo 'hi' $HOME".into()],
            &[("ORCH_NODE", "it's".into())],
        );
        assert!(
            s.contains(r#"'sh' '-c' 'echo '\''hi'\'' $HOME' < "$D/stdin""#),
            "{s}"
        );
        assert!(
            s.contains(r#"ORCH_NODE='it'\''s'; export ORCH_NODE"#),
            "{s}"
        );
        assert_eq!(file_name("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn a_tail_reads_whole_lines_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut t = Tail::new(path.clone());
        assert!(t.lines(false).is_empty());
        std::fs::write(&path, "one\ntw").unwrap();
        assert_eq!(t.lines(false), ["one"]);
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        assert_eq!(t.lines(false), ["two"]);
        assert_eq!(t.lines(true), ["thr"]);
    }
}
