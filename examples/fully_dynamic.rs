//! A fully dynamic workflow: only `root` is registered; every node adds
//! its own children while it runs, two levels deep:
//!
//! ```text
//! root -> root.0 -> root.0.0, root.0.1
//! root -> root.1 -> root.1.0, root.1.1
//! ```
//!
//! Run: `cargo run --example fully_dynamic -- [depth] [fanout]`.
use std::process::ExitCode;

use orch::{Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut args = std::env::args().skip(1);
    let depth: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let fanout: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let mut wf = Workflow::new("fully_dynamic");
    wf.dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fully_dynamic"
    ));
    wf.node("root", Task::python("expand.py").named("expand"))
        .input("depth", depth)
        .input("fanout", fanout);
    orch::workflow::report(wf.run())
}
