//! A chain of N Python tasks, each sleeping M ms: the workflow for trying
//! durability by hand.
//!
//! ```text
//! cargo run --example durable_chain -- --tasks 40 --sleep-ms 100
//! # in another shell: kill -9 <its pid>, then
//! cargo run --bin orch -- resume latest
//! ```
//!
//! Every node ends `succeeded` with exactly one successful attempt; the one
//! that was running when the orchestrator died has an earlier attempt
//! marked `killed`. `orch pause|unpause|cancel latest` steer it live.
//! `--dir` runs a copy of `sleep.py` from another folder;
//! `--wait-for-input` ends the chain with a node `approve` that waits for
//! `orch input latest approve '"ok"'`.
use std::process::ExitCode;

use orch::{Task, Workflow};

fn main() -> ExitCode {
    orch::init_tracing();
    let mut tasks = 10u32;
    let mut sleep_ms = 100u64;
    let mut dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/durable_chain").to_string();
    let mut wait_for_input = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--wait-for-input" {
            wait_for_input = true;
            continue;
        }
        let value = args.next();
        let number = value.as_deref().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), number, value) {
            ("--tasks", Some(v), _) => tasks = v as u32,
            ("--sleep-ms", Some(v), _) => sleep_ms = v,
            ("--dir", _, Some(d)) => dir = d,
            _ => {
                eprintln!(
                    "usage: durable_chain [--tasks N] [--sleep-ms M] [--dir SCRIPTS] [--wait-for-input]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let mut wf = Workflow::new("durable_chain");
    wf.dir(dir);
    for i in 0..tasks {
        wf.node(format!("t{i:03}"), Task::python("sleep.py").named("sleep"))
            .input("sleep_ms", sleep_ms);
        if i > 0 {
            wf.edge(format!("t{:03}", i - 1), format!("t{i:03}"));
        }
    }
    if wait_for_input && tasks > 0 {
        // A person approves the chain: `orch input latest approve '"ok"'`.
        wf.node("approve", Task::input());
        wf.edge(format!("t{:03}", tasks - 1), "approve");
    }
    println!("orchestrator pid {}", std::process::id());
    orch::workflow::report(wf.run())
}
