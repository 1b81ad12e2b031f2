//! Native Rust tasks on runners: this one binary is the server that runs
//! a typed workflow *and* the runners that serve its native tasks.
//!
//! ```sh
//! # A database with a runner token (the orch CLI):
//! export ORCH_DB=/tmp/nr/orch.db
//! printf 'a long password\n' | orch user add ada --role admin
//! export ORCH_TOKEN=$(orch token create --user ada --runner | tail -n 1)
//! # The server: waits for a runner of this very binary, then runs.
//! cargo run --example native_runners -- serve /tmp/nr/orch.db 5 &
//! # A runner (prints `runner ID registered`):
//! cargo run --example native_runners -- runner http://127.0.0.1:PORT /tmp/nr/runner
//! ```
//!
//! In runner mode the binary calls `orch::runner::serve_native`: it
//! advertises `binary=<SHA-256 of itself>`, and the server (started from
//! the same file) requires that label of its native tasks' attempts.

use std::process::ExitCode;
use std::time::Duration;

use orch::{Context, Workflow};

/// The numbers 1..=count.
#[orch::task]
fn numbers(count: u64) -> Vec<u64> {
    (1..=count).collect()
}

/// One square; logs the folder it runs in (a runner's `--dir`).
#[orch::task]
fn square(ctx: &mut Context, x: u64) -> orch::Result<u64> {
    let here = std::env::current_dir().map(|d| d.display().to_string());
    ctx.log(format!("squaring {x} in {}", here.unwrap_or_default()))?;
    Ok(x * x)
}

/// The sum of the squares.
#[orch::task]
fn total(squares: Vec<u64>) -> u64 {
    squares.iter().sum()
}

fn usage() -> ExitCode {
    eprintln!("usage: native_runners serve DB COUNT | native_runners runner URL DIR");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    orch::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["runner", url, dir] => {
            let Ok(token) = std::env::var("ORCH_TOKEN") else {
                eprintln!("error: set ORCH_TOKEN to a runner token");
                return ExitCode::from(2);
            };
            let mut opts = orch::runner::RunnerOptions::new(url, &token, dir);
            opts.name = "native".into();
            opts.slots = 2;
            match orch::runner::serve_native(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ["serve", db, count] => {
            let Ok(count) = count.parse::<u64>() else {
                return usage();
            };
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            match runtime.block_on(serve(db, count)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

/// Serves `db`, waits for a live runner of this binary, runs the
/// workflow and prints how it ended.
async fn serve(db: &str, count: u64) -> orch::Result<bool> {
    let mut opts = orch::server::ServeOptions::new(db);
    opts.listen = "127.0.0.1:0".parse().expect("an address");
    let server = orch::server::Server::start(opts).await?;
    println!("listening on http://{}", server.addr());
    let label = std::env::current_exe()
        .and_then(|exe| orch::exec::remote::binary_label(&exe))
        .map_err(|e| orch::Error::Io {
            context: "hashing this binary".into(),
            source: e,
        })?;
    let store = server.state().store.clone();
    loop {
        let (runners, _) = store.runners()?;
        if runners
            .iter()
            .any(|r| r.alive && r.spec.capabilities.labels.contains(&label))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut wf = Workflow::new("native_runners");
    let xs = wf.add(numbers::call(count));
    let squares = wf.map(&xs, square::call);
    wf.add(total::call(squares.output()));
    let engine = &server.state().engine;
    let handle = engine.start(wf.definition(), wf.options()).await?;
    let outcome = handle.wait().await?;
    println!("run {} {}", outcome.run, outcome.status);
    server.stop(Duration::from_secs(5));
    server.wait().await?;
    Ok(outcome.succeeded())
}
