//! Compile-fail tests of `#[orch::task]` and the typed builder
//! (`tests/ui/*.rs`, each with the `.stderr` rustc must print).
//!
//! Compiler messages differ between releases, so these run on the stable
//! toolchain only. After a deliberate change of a message, or a new stable
//! rustc, regenerate the expected output and review the diff:
//!
//! ```sh
//! TRYBUILD=overwrite cargo test --test e2e ui
//! ```

#[test]
fn task_misuse_reads_well() {
    let version =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
    if version.contains("nightly") || version.contains("beta") || version.contains("dev") {
        eprintln!("skipping the compile-fail tests: they expect stable rustc, this is {version}");
        return;
    }
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
