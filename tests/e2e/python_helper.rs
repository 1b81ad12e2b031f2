//! The Python helper's own unittest suite, run by `cargo test`.

use std::process::Command;

#[test]
fn python_helper_unittests_pass() {
    let python = orch::exec::configured_python(None);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(dir)
        .env("PYTHONPATH", dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{python}` (install Python 3 or set ORCH_PYTHON): {e}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python unittests failed:\n{stderr}");
    assert!(stderr.contains("OK"), "{stderr}");
}
