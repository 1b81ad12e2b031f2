//! A random map: `A` and `B` are registered with the promise
//! `shape(A, B, M*)`; at run time `A` picks k in 0..=8 and adds
//! `M_0 … M_{k-1}` (task `M`) between them. `B` waits for the region
//! through the promise, then sums the `M_i` outputs:
//!
//! ```text
//! A -> M_0 -> B
//! A -> M_1 -> B        (k = 2)
//! A -> B               (k = 0)
//! ```
//!
//! Run: `cargo run --example random_map`, then
//! `cargo run --bin orch -- export latest --format json`.
//! `ORCH_EXAMPLE_K` forces k.
use std::process::ExitCode;

use orch::{Shape, Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("random_map");
    wf.dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/random_map"));
    wf.node("A", Task::python("a.py")).label("pick k");
    wf.node("B", Task::python("b.py")).label("sum");
    wf.map_region("A", "B", Shape::task("M"), 0, None);
    orch::workflow::report(wf.run())
}
