//! A typed branch: a task decides at run time which of two branches runs.
//!
//! ```sh
//! cargo run --example typed_branch -- [--value small|large|<n>] [--dir D]
//! ```
//!
//! `measure` returns a size class. `Workflow::branch` registers a switch
//! node, a join node and the promise `shape(switch, join, case₁ | case₂ |
//! …)`: the picture shows both cases as dashed futures until the switch
//! adds exactly one of them; the join passes the chosen case's result on.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// How big the input is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Size {
    Small,
    Large,
}

/// Classifies `n` (random when not given).
#[orch::task]
fn measure(n: Option<u64>) -> Size {
    let n = n.unwrap_or_else(|| std::process::id() as u64 % 200);
    println!("measured {n}");
    if n < 100 {
        Size::Small
    } else {
        Size::Large
    }
}

/// The small case: one step.
#[orch::task]
fn quick(size: Size) -> String {
    format!("{size:?}: done in one step")
}

/// The large case, first step: split the work.
#[orch::task]
fn split(parts: u32) -> Vec<u32> {
    (0..parts).collect()
}

/// The large case, second step: combine it.
#[orch::task]
fn combine(parts: Vec<u32>) -> String {
    format!("Large: combined {} parts", parts.len())
}

/// Prints the result.
#[orch::task]
fn report(result: String) -> String {
    println!("{result}");
    result
}

fn main() -> ExitCode {
    orch::init_tracing();
    let mut value = None;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--value" => {
                value = match args.next().as_deref() {
                    Some("small") => Some(10),
                    Some("large") => Some(150),
                    Some(n) => n.parse().ok(),
                    None => None,
                }
            }
            "--dir" => dir = args.next(),
            other => {
                eprintln!("unknown argument `{other}`; usage: typed_branch [--value small|large|<n>] [--dir D]");
                return ExitCode::from(2);
            }
        }
    }
    let mut wf = orch::Workflow::new("typed_branch");
    if let Some(d) = &dir {
        if let Err(e) = std::fs::create_dir_all(d) {
            eprintln!("error: cannot create {d}: {e}");
            return ExitCode::FAILURE;
        }
        wf.dir(d).db(std::path::Path::new(d).join("orch.db"));
    }
    let size = wf.add(measure::call(value));
    let result = wf
        .branch(&size)
        .case(Size::Small, |b, size| b.add(quick::call(size)))
        .case(Size::Large, |b, _| {
            let parts = b.add(split::call(4));
            b.add(combine::call(parts.output()))
        })
        .join();
    wf.add(report::call(result.output()));
    orch::workflow::report(wf.run())
}
