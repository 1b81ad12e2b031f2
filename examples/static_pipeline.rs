//! A fully static workflow: the whole DAG is registered up front with the
//! promise `static`, so no task may add anything at run time.
//!
//! ```text
//! start -> 1
//! start -> 2 -> end
//! ```
//!
//! Run: `cargo run --example static_pipeline`, then
//! `cargo run --bin orch -- show latest`.
use std::process::ExitCode;

use orch::{Promise, Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("static_pipeline");
    wf.dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/static_pipeline"
    ));
    for id in ["start", "1", "2", "end"] {
        wf.node(id, Task::python("step.py").named("step")).label(id);
    }
    wf.edge("start", "1");
    wf.edge("start", "2");
    wf.edge("2", "end");
    // Nothing is added at run time, and the runtime holds every task to it.
    wf.promise(Promise::Static {});
    orch::workflow::report(wf.run())
}
