//! A typed workflow of native Rust tasks: produce a collection, map a task
//! over it (one node per item, added at run time), reduce.
//!
//! ```sh
//! cargo run --example typed_map -- [--count N] [--dir D]
//! ```
//!
//! Every task runs as its own process: this binary started again in task
//! mode. The map is `Workflow::map`: a `repeat` shape region between a
//! built-in node that adds the copies and a node that collects them.

use std::process::ExitCode;

use orch::{Context, Workflow};

/// The numbers 1..=count.
#[orch::task]
fn numbers(count: u64) -> Vec<u64> {
    (1..=count).collect()
}

/// One square, logged from its own process.
#[orch::task(retries = 1, timeout = "30s")]
fn square(ctx: &mut Context, x: u64) -> orch::Result<u64> {
    ctx.log(format!("squaring {x} in process {}", std::process::id()))?;
    Ok(x * x)
}

/// The sum of the squares.
#[orch::task]
async fn total(squares: Vec<u64>) -> u64 {
    squares.iter().sum()
}

fn main() -> ExitCode {
    orch::init_tracing();
    let mut count = 5u64;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--count" => count = args.next().and_then(|v| v.parse().ok()).unwrap_or(count),
            "--dir" => dir = args.next(),
            other => {
                eprintln!("unknown argument `{other}`; usage: typed_map [--count N] [--dir D]");
                return ExitCode::from(2);
            }
        }
    }
    let mut wf = Workflow::new("typed_map");
    if let Some(d) = &dir {
        if let Err(e) = std::fs::create_dir_all(d) {
            eprintln!("error: cannot create {d}: {e}");
            return ExitCode::FAILURE;
        }
        wf.dir(d).db(std::path::Path::new(d).join("orch.db"));
    }
    let xs = wf.add(numbers::call(count));
    let squares = wf.map(&xs, square::call);
    let sum = wf.add(total::call(squares.output()));
    println!("registered: {} -> map(square) -> {}", xs.id(), sum.id());
    orch::workflow::report(wf.run())
}
