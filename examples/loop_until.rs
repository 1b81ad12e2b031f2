//! Loop until: a task refines an estimate until it converges or ten
//! iterations pass (SPEC §10).
//!
//! - `start` gives the first estimate of sqrt(2);
//! - the loop `newton` runs `refine#1`, `refine#2`, … one after another,
//!   each a step of Newton's method on the previous one's estimate
//!   (`{"$previous": "/x"}`), until a step moves the estimate by less than
//!   `tol` (its output has `done: true`), at most ten times;
//! - `report` runs after the last iteration and reports the estimate.
//!
//! The run's graph stays acyclic: each iteration is fresh nodes, added by
//! a batch with origin `loop:newton` when the one before did not
//! converge, under the promise that the region between `start` and
//! `report` is `chain(refine, 1, 10)`.
//!
//! Run: `cargo run --example loop_until`, then
//! `cargo run --bin orch -- export latest --format svg` (the loop drawn as
//! a cycle) or with `--expand` (every iteration). `ORCH_EXAMPLE_MAX` sets
//! the bound (at 3 the run fails: the estimate has not converged);
//! `ORCH_EXAMPLE_TOL` the tolerance.
use std::process::ExitCode;

use orch::model::{iteration, previous};
use orch::{Loop, LoopStep, Task, Until, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let env = |k: &str| std::env::var(k).ok();
    let max = env("ORCH_EXAMPLE_MAX").map_or(10, |v| v.parse().expect("a number"));
    let tol: f64 = env("ORCH_EXAMPLE_TOL").map_or(1e-12, |v| v.parse().expect("a number"));
    let mut wf = Workflow::new("loop_until");
    wf.dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/loop_until"));
    wf.node("start", Task::python("start.py")).input("x0", 1.0);
    wf.node("report", Task::python("report.py"));
    let refine = LoopStep::new("refine", Task::python("newton.py"))
        .inputs(serde_json::json!({"x": previous("/x"), "tol": tol, "iteration": iteration()}));
    wf.add_loop(Loop::new("newton", "start", "report", Until::at("/done"), max).step(refine));
    orch::workflow::report(wf.run())
}
