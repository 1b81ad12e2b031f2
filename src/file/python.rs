//! Python pipeline files (`Pipeline`, `PythonTask`, `>>`): evaluated in a
//! subprocess with a time limit, like Airflow's DAG-file processor, which
//! prints each pipeline as a workflow document. A file that hangs, raises
//! or prints garbage is an error carrying its traceback; it never takes
//! the reader down.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::doc::WorkflowDoc;
use super::error::{FileError, Place};

/// How long evaluating a pipeline file may take (`ORCH_PIPELINE_TIMEOUT`,
/// in seconds, overrides it).
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a pipeline file's evaluation may print as its definition.
const MAX_OUTPUT: u64 = 16 << 20;
/// The most of its error output kept for the message.
const MAX_ERRORS: usize = 8 << 10;

/// One pipeline of a Python file, as its evaluation printed it.
#[derive(Debug)]
pub struct PyPipeline {
    /// The workflow document.
    pub doc: WorkflowDoc,
    /// The line that built the `Pipeline`.
    pub line: Option<u64>,
    /// The line that built each `PythonTask`, by task id.
    pub lines: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Printed {
    pipelines: Vec<PrintedPipeline>,
}

#[derive(Deserialize)]
struct PrintedPipeline {
    doc: Value,
    line: Option<u64>,
    #[serde(default)]
    lines: BTreeMap<String, u64>,
}

/// The time limit in force.
fn timeout() -> Duration {
    std::env::var("ORCH_PIPELINE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(PIPELINE_TIMEOUT)
}

/// Evaluates the pipeline file `path` (canonical) and returns its
/// pipelines.
pub fn evaluate(path: &Path) -> Result<Vec<PyPipeline>, FileError> {
    let whole = Place::file(path);
    let fail = |m: String| FileError::new(whole.clone(), m);
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(fail("it is not a regular file".into()));
    }
    let python = crate::exec::resolve_python(&crate::exec::configured_python(None))
        .map_err(|e| fail(format!("cannot evaluate it: {e}")))?;
    let helper = crate::exec::install_helper(&helper_root())
        .map_err(|e| fail(format!("cannot evaluate it: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut cmd = Command::new(&python);
    cmd.args(["-u", "-m", "orch", "pipeline"])
        .arg(path)
        .current_dir(dir)
        .env(
            "PYTHONPATH",
            join_paths(&helper, std::env::var_os("PYTHONPATH")),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The file's folder is not put first on the path before orch is
        // imported (Python 3.11+): a `json.py` beside it cannot stand in
        // for the standard library's while the reader starts; the reader
        // adds the folder itself, after.
        .env("PYTHONSAFEPATH", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", python.display())))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(MAX_OUTPUT + 1).read_to_end(&mut buf);
        // Drain the rest so the file does not block on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Keep the end: a traceback's last lines say what happened.
            if buf.len() > 2 * MAX_ERRORS {
                buf.drain(..buf.len() - MAX_ERRORS);
            }
        }
        buf
    });
    let limit = timeout();
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(format!("waiting for its evaluation failed: {e}"))),
        }
    };
    // Whatever the file started goes with it: a child left holding the
    // pipes would keep the readers (and the time limit) waiting.
    crate::exec::kill_group(child.id());
    if status.is_none() {
        let _ = child.wait();
    }
    // A process that left the group may still hold them: read on for a
    // moment at most, then go on without what it holds back.
    let drained = Instant::now() + Duration::from_secs(2);
    while !(out.is_finished() && err.is_finished()) && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(5));
    }
    let printed = if out.is_finished() {
        out.join().unwrap_or_default()
    } else {
        Vec::new()
    };
    let errors = if err.is_finished() {
        err.join().unwrap_or_default()
    } else {
        Vec::new()
    };
    let errors = tail(&errors);
    let Some(status) = status else {
        return Err(fail(format!(
            "evaluating it took longer than {:.0}s and was stopped (ORCH_PIPELINE_TIMEOUT sets the limit){errors}",
            limit.as_secs_f64()
        )));
    };
    if !status.success() {
        return Err(fail(format!("evaluating it failed ({status}){errors}")));
    }
    if printed.len() as u64 > MAX_OUTPUT {
        return Err(fail(format!(
            "its evaluation printed more than {MAX_OUTPUT} bytes of definition"
        )));
    }
    let text = String::from_utf8(printed)
        .map_err(|_| fail("its evaluation printed something that is not UTF-8".into()))?;
    crate::limits::check_json(&text).map_err(|e| {
        fail(format!(
            "its evaluation printed a definition past the limits: {e}"
        ))
    })?;
    let printed: Printed = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "its evaluation printed no definition orch can read ({e}){errors}"
        ))
    })?;
    let mut out = Vec::new();
    for p in printed.pipelines {
        let at = Place {
            file: path.to_path_buf(),
            at: p.line.map(|l| (l, 1)),
        };
        let json = serde_json::to_string(&p.doc).expect("a value serialises");
        let doc = super::parse(path, &json).map_err(|e| FileError::new(at.clone(), e.message))?;
        out.push(PyPipeline {
            doc,
            line: p.line,
            lines: p.lines,
        });
    }
    Ok(out)
}

/// `\n` and the last lines of what the evaluation wrote on stderr, if
/// anything.
fn tail(errors: &[u8]) -> String {
    let text = String::from_utf8_lossy(errors);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[lines.len().saturating_sub(20)..];
    format!(":\n{}", keep.join("\n"))
}

fn join_paths(first: &Path, rest: Option<std::ffi::OsString>) -> std::ffi::OsString {
    let mut all = vec![first.to_path_buf()];
    if let Some(rest) = rest {
        all.extend(std::env::split_paths(&rest));
    }
    std::env::join_paths(all).unwrap_or_else(|_| first.as_os_str().to_os_string())
}

/// Where the Python helper is installed for evaluating pipeline files:
/// the user's cache folder (`$XDG_CACHE_HOME/orch`, else
/// `$HOME/.cache/orch`), else a folder of this user's under the temporary
/// directory.
fn helper_root() -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()) {
        return PathBuf::from(cache).join("orch");
    }
    if let Some(home) = home {
        return PathBuf::from(home).join(".cache").join("orch");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("orch-helper-{uid}"))
}
