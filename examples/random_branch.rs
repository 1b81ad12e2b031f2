//! A random branch: `choose` picks a side at run time and adds only that
//! branch, joined at the registered `end`. The promise
//! `shape(choose, end, (left_1 → left_2) | right)` makes `end` wait for the
//! branch and guarantees exactly one whole branch:
//!
//! ```text
//! start -> choose -> left_1 -> left_2 -> end      (left)
//! start -> choose -> right -> end                 (right)
//! ```
//!
//! Run: `cargo run --example random_branch` (set `ORCH_EXAMPLE_SEED` to
//! force a side: 0 gives right, 1 gives left).
use std::process::ExitCode;

use orch::{Shape, Task, Workflow};

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
    wf.node("end", Task::python("step.py"));
    wf.edge("start", "choose");
    wf.branch_region(
        "choose",
        "end",
        [
            Shape::seq([Shape::task("left_1"), Shape::task("left_2")]),
            Shape::task("right"),
        ],
    );
    orch::workflow::report(wf.run())
}
