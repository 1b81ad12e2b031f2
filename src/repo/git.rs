//! Running the `git` program: one bounded, timed call at a time.
//!
//! Every call gets a clean environment (no `GIT_*` variable of the
//! server's own environment leaks in, no system or global config, no
//! hooks, no prompts, literal pathspecs), its stdout read up to a cap (a
//! call that says more is stopped and refused), its stderr kept up to a
//! few KiB for the error message, and a time limit after which the process
//! is killed. Arguments never come from a user unchecked: the callers pass
//! only fixed options, validated hex, validated names after `--`, or data
//! on stdin.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RepoError;

/// How much of a failed call's stderr is kept for its error message.
const STDERR_KEEP: usize = 4 * 1024;

/// What a finished call returned.
#[derive(Debug)]
pub(crate) struct Out {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// One call: arguments after the fixed options, data for stdin, extra
/// environment, the stdout cap.
pub(crate) struct Call<'a> {
    args: Vec<OsString>,
    stdin: Option<&'a [u8]>,
    env: Vec<(&'static str, OsString)>,
    max_out: usize,
}

impl<'a> Call<'a> {
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Call {
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            env: Vec::new(),
            max_out: 1024 * 1024,
        }
    }

    pub fn stdin(mut self, data: &'a [u8]) -> Self {
        self.stdin = Some(data);
        self
    }

    pub fn env(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    pub fn max_out(mut self, bytes: usize) -> Self {
        self.max_out = bytes;
        self
    }

    /// The subcommand, for messages and logs (never user data: callers
    /// put the subcommand first).
    fn what(&self) -> String {
        self.args
            .first()
            .map(|a| format!("git {}", a.to_string_lossy()))
            .unwrap_or_else(|| "git".into())
    }
}

/// A handle on one bare repository.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    dir: PathBuf,
    timeout: Duration,
}

impl Git {
    pub fn new(dir: &Path, timeout: Duration) -> Self {
        Git {
            dir: dir.to_path_buf(),
            timeout,
        }
    }

    /// A `git` command with the clean environment, not yet bound to the
    /// repository (for `git --version` and `git init`).
    pub fn bare_command() -> Command {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C")
            .arg("-c")
            .arg("core.hooksPath=/dev/null")
            .arg("-c")
            .arg("core.fsync=committed");
        cmd
    }

    /// Runs `call` against the repository and returns what it said,
    /// whatever its exit code; errors only when it could not run, ran out
    /// of time, or said more than its cap.
    pub fn run(&self, call: Call<'_>) -> Result<Out, RepoError> {
        let mut cmd = Self::bare_command();
        let mut git_dir = OsString::from("--git-dir=");
        git_dir.push(self.dir.as_os_str());
        cmd.arg(git_dir).args(&call.args);
        for (k, v) in &call.env {
            cmd.env(k, v);
        }
        run_command(cmd, &call, self.timeout)
    }

    /// Runs `call` and requires exit code 0.
    pub fn ok(&self, call: Call<'_>) -> Result<Vec<u8>, RepoError> {
        let what = call.what();
        let out = self.run(call)?;
        if out.ok() {
            Ok(out.stdout)
        } else {
            Err(RepoError::Git {
                command: what,
                code: out.code,
                stderr: out.stderr,
            })
        }
    }

    /// Runs `call`, requires exit code 0, returns stdout as one trimmed
    /// line.
    pub fn line(&self, call: Call<'_>) -> Result<String, RepoError> {
        let what = call.what();
        let out = self.ok(call)?;
        String::from_utf8(out)
            .map(|s| s.trim_end().to_string())
            .map_err(|_| RepoError::Unexpected {
                command: what,
                detail: "output is not UTF-8".into(),
            })
    }
}

/// Spawns `cmd`, feeds stdin, reads stdout (capped) and stderr (kept in
/// part) on their own threads, and waits at most `timeout`.
pub(crate) fn run_command(
    mut cmd: Command,
    call: &Call<'_>,
    timeout: Duration,
) -> Result<Out, RepoError> {
    let what = call.what();
    let started = Instant::now();
    cmd.stdin(if call.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Its own process group: on a timeout the whole group is killed, so
    // nothing git started keeps our pipes open and the readers return.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            RepoError::GitMissing { source }
        } else {
            RepoError::Spawn {
                command: what.clone(),
                source,
            }
        }
    })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let max_out = call.max_out;
    let outcome = std::thread::scope(|scope| {
        if let (Some(mut pipe), Some(data)) = (stdin, call.stdin) {
            scope.spawn(move || {
                // A git that exits early (an error) closes its stdin: the
                // broken pipe is its exit code's business, not ours.
                let _ = pipe.write_all(data);
            });
        }
        let out_reader = scope.spawn(move || {
            let mut buf = Vec::new();
            let Some(pipe) = stdout else {
                return (buf, false);
            };
            let mut limited = pipe.take(max_out as u64 + 1);
            let _ = limited.read_to_end(&mut buf);
            // Dropping the pipe here stops a git that says too much: its
            // next write fails with a broken pipe.
            let over = buf.len() > max_out;
            buf.truncate(max_out);
            (buf, over)
        });
        let err_reader = scope.spawn(move || {
            let mut kept = Vec::new();
            let Some(mut pipe) = stderr else {
                return kept;
            };
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = STDERR_KEEP.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
            kept
        });
        let mut pause = Duration::from_micros(200);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(source) => {
                    kill_group(&mut child);
                    break Err(RepoError::Spawn {
                        command: what.clone(),
                        source,
                    });
                }
            }
            if started.elapsed() >= timeout {
                kill_group(&mut child);
                break Err(RepoError::GitTimeout {
                    command: what.clone(),
                    after: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        };
        let (stdout, over) = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        (status, stdout, over, stderr)
    });
    let (status, stdout, over, stderr) = outcome;
    let status = status?;
    tracing::trace!(command = %what, code = ?status.code(), elapsed_ms = started.elapsed().as_millis() as u64, "git");
    if over {
        return Err(RepoError::GitOutputTooLarge {
            command: what,
            limit: max_out,
        });
    }
    Ok(Out {
        code: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
    })
}

/// Kills the child's process group (the child leads it) and reaps the
/// child. The child is not yet reaped, so its id cannot have been reused.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with the negated id of a group this call created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
