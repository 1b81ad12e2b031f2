//! The Python interpreter a run uses, and the helper package every Python
//! task finds on its `PYTHONPATH`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use super::content_hash;
use crate::error::{Error, Result};

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

const HELPER_INIT: &str = include_str!("../../python/orch/__init__.py");
const HELPER_MAIN: &str = include_str!("../../python/orch/__main__.py");
const HELPER_FORKSERVER: &str = include_str!("../../python/orch/_forkserver.py");
const HELPER_BUILTINS: &str = include_str!("../../python/orch/_builtins.py");
const HELPER_PIPELINE: &str = include_str!("../../python/orch/pipeline.py");

/// Writes the shipped Python helper package under `root` (once per
/// content version) and returns the folder to put on `PYTHONPATH`.
pub fn install_helper(root: &Path) -> Result<PathBuf> {
    let files = [
        ("__init__.py", HELPER_INIT),
        ("__main__.py", HELPER_MAIN),
        ("_forkserver.py", HELPER_FORKSERVER),
        ("_builtins.py", HELPER_BUILTINS),
        ("pipeline.py", HELPER_PIPELINE),
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
    // A name of its own per write: two engines of one process may install
    // at the same moment (each rename is atomic; both put the same bytes).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for (name, text) in files {
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = pkg.join(format!(".{name}.{}.{n}", std::process::id()));
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, pkg.join(name))
            .map_err(|e| Error::io(format!("installing {}", pkg.join(name).display()), e))?;
    }
    Ok(dir)
}
