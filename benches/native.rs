//! Native Rust tasks against their floor: a plain loop that starts this
//! same binary in task mode, once per task, and speaks the protocol with it
//! (start message, output, ack), beside orch running the equivalent typed
//! workflow with durable history. Floor and orch are measured interleaved,
//! medians of several repetitions; the ratio is orch / floor.
//!
//! ```sh
//! cargo bench --bench native
//! ORCH_BENCH_REPS=7 ORCH_BENCH_CHAIN=200 ORCH_BENCH_MAP=300 cargo bench --bench native
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::Workflow;

mod common;
use common::*;

/// Does nothing: the cost measured is starting it and talking to it.
#[orch::task]
fn noop() {}

/// The collection a map runs over.
#[orch::task]
fn items(n: u32) -> Vec<u32> {
    (0..n).collect()
}

/// One map copy.
#[orch::task]
fn each(x: u32) -> u32 {
    x
}

/// One task-mode process, driven by hand: the floor of one native task.
fn spawn_one(exe: &std::path::Path, task: &str, inputs: &str) {
    let mut child = Command::new(exe)
        .env(orch::native::TASK_ENV, task)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the bench binary starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let start = format!(
        r#"{{"orch":1,"type":"start","run":"floor","node":"n","attempt":1,"task":{{"name":"{task}","kind":"native","task":"{task}"}},"inputs":{inputs},"upstream":{{}}}}"#
    );
    writeln!(stdin, "{start}").expect("start message");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        if line.contains("\"type\":\"output\"") {
            let seq: u64 = serde_json::from_str::<serde_json::Value>(&line).expect("json")["seq"]
                .as_u64()
                .expect("seq");
            writeln!(stdin, r#"{{"orch":1,"type":"ack","seq":{seq}}}"#).expect("ack");
            break;
        }
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

fn floor(n: usize, parallel: usize, task: &str, inputs: &str) -> Duration {
    let exe = std::env::current_exe().expect("current exe");
    let t = Instant::now();
    let per = n.div_ceil(parallel);
    std::thread::scope(|s| {
        for k in 0..parallel {
            let exe = &exe;
            let count = per.min(n.saturating_sub(k * per));
            s.spawn(move || {
                for _ in 0..count {
                    spawn_one(exe, task, inputs);
                }
            });
        }
    });
    t.elapsed()
}

fn orch_chain(n: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wf = Workflow::new("native-chain");
    wf.dir(dir.path())
        .db(dir.path().join("orch.db"))
        .live_picture(false);
    let mut prev = wf.add(noop::call());
    for _ in 1..n {
        prev = wf.add(noop::call().after(&prev));
    }
    let t = Instant::now();
    let outcome = wf.run().expect("run");
    let took = t.elapsed();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    took
}

fn orch_map(n: usize, parallel: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wf = Workflow::new("native-map");
    wf.dir(dir.path())
        .db(dir.path().join("orch.db"))
        .live_picture(false)
        .max_parallel(parallel);
    let xs = wf.add(items::call(n as u32));
    wf.map(&xs, each::call);
    let t = Instant::now();
    let outcome = wf.run().expect("run");
    let took = t.elapsed();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    took
}

fn compare(
    label: &str,
    tasks: usize,
    reps: usize,
    floor_run: impl Fn() -> Duration,
    orch_run: impl Fn() -> Duration,
) {
    let mut f = Vec::new();
    let mut o = Vec::new();
    for _ in 0..reps {
        f.push(floor_run());
        o.push(orch_run());
    }
    let (f, o) = (median(f), median(o));
    let per = |d: Duration| d.as_secs_f64() * 1e3 / tasks as f64;
    println!(
        "{label:<44} orch {:>7.3} ms/task  floor {:>7.3} ms/task  ratio {:>5.2}  overhead {:>+6.3} ms/task",
        per(o),
        per(f),
        o.as_secs_f64() / f.as_secs_f64(),
        per(o) - per(f)
    );
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        orch::init_tracing();
    }
    let reps = env_usize("ORCH_BENCH_REPS", 5);
    let chain = env_usize("ORCH_BENCH_CHAIN", 200);
    let map = env_usize("ORCH_BENCH_MAP", 300);
    println!(
        "native tasks vs their floor (same binary in task mode), medians of {reps}, interleaved"
    );
    compare(
        &format!("chain of {chain}"),
        chain,
        reps,
        || floor(chain, 1, "noop", "null"),
        || orch_chain(chain),
    );
    // The map runs `items`, `orch.map`, the copies and `orch.collect`: the
    // floor starts as many processes.
    let procs = map + 3;
    compare(
        &format!("{map}-wide map added at run time, serial"),
        procs,
        reps,
        || floor(procs, 1, "each", r#"{"x":1}"#),
        || orch_map(map, 1),
    );
    compare(
        &format!("{map}-wide map, max_parallel(2)"),
        procs,
        reps,
        || floor(procs, 2, "each", r#"{"x":1}"#),
        || orch_map(map, 2),
    );
}
