//! A broken promise: the workflow promises that `worker` adds no nodes,
//! and `worker`'s task tries to add one anyway.
//!
//! ```text
//! start -> worker -> end        promise: no_new_nodes(by worker)
//! ```
//!
//! The runtime refuses the mutation on arrival, records the violation
//! (which promise, which mutation, which node's task, which attempt), stops
//! the run as `promise_broken` and never starts `end`. The program exits
//! non-zero. Run: `cargo run --example broken_promise`, then
//! `cargo run --bin orch -- show latest`.
use std::process::ExitCode;

use orch::{Promise, Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("broken_promise");
    wf.dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/broken_promise"
    ));
    wf.node("start", Task::python("step.py"));
    wf.node("worker", Task::python("worker.py"));
    wf.node("end", Task::python("step.py"));
    wf.edge("start", "worker");
    wf.edge("worker", "end");
    wf.promise(Promise::NoNewNodes {
        by: Some("worker".into()),
    });
    orch::workflow::report(wf.run())
}
