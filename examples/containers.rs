//! Two tasks in containers: a shell task in a busybox image makes the
//! numbers 1 to 10, a Python function in a Debian image with `python3`
//! sums them up. The protocol runs over each container's stdio; the Python
//! task finds orch's helper mounted read-only, and neither container has
//! a network.
//!
//! ```text
//! generate (localhost/orch-busybox) -> summary (localhost/orch-python)
//! ```
//!
//! The images are built locally (no registry needed) by `.ci/images`, and
//! Podman on some hosts needs the settings of `.ci/containers.conf`:
//!
//! ```text
//! .ci/images
//! CONTAINERS_CONF=$PWD/.ci/containers.conf cargo run --example containers
//! ```
//!
//! `ORCH_CONTAINER_ENGINE=docker` runs it with Docker instead (given the
//! same images). See `docs/containers.md`.
use std::process::ExitCode;
use std::time::Duration;

use orch::model::Container;
use orch::{output_at, Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut wf = Workflow::new("containers");
    wf.dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/containers"));
    // busybox's `seq` joins 1..10 with commas: the list inside the output.
    let line = r#"echo "{\"orch\": 1, \"seq\": 1, \"type\": \"output\", \"value\": {\"numbers\": [$(seq -s , 1 10)]}}""#;
    wf.node(
        "generate",
        Task::container(
            Container::new("localhost/orch-busybox")
                .command(["sh", "-c", line])
                .memory(64 << 20),
        )
        .timeout(Duration::from_secs(120)),
    )
    .label("generate (shell)");
    wf.node(
        "summary",
        Task::container(
            Container::new("localhost/orch-python")
                .python_fn("stats:summary")
                .cpus(1.0),
        )
        .timeout(Duration::from_secs(120)),
    )
    .input("numbers", output_at("generate", "/numbers"))
    .label("summary (python)");
    orch::workflow::report(wf.run())
}
