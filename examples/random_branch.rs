//! A random branch: `choose` picks a side at run time and adds only that
//! branch, joined at `end`:
//!
//! ```text
//! start -> choose -> left_1 -> left_2 -> end      (left)
//! start -> choose -> right -> end                 (right)
//! ```
//!
//! Run: `cargo run --example random_branch` (set `ORCH_EXAMPLE_SEED` to
//! force a side: 0 gives right, 1 gives left).
use std::process::ExitCode;

use orch::{Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("random_branch");
    wf.dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/random_branch"
    ));
    wf.node("start", Task::python("step.py"));
    wf.node("choose", Task::python("choose.py"))
        .label("choose a side");
    wf.edge("start", "choose");
    orch::workflow::report(wf.run())
}
