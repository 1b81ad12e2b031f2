//! Command tasks against their floor (`cargo bench --bench command`):
//! numbers, not assertions.
//!
//! The floor is a plain loop spawning `true` with piped stdio, its own
//! process group and the same working directory, and waiting for it, one
//! at a time. Beside it orch runs, with durable history and the live
//! picture off:
//!
//! - a chain of `ORCH_BENCH_CHAIN` (default 200) `true` tasks;
//! - a map of `ORCH_BENCH_MAP` (default 300) `true` tasks added at run
//!   time: a Python task `A` adds the copies between itself and `B`
//!   (`shape(A, B, M*)`), serial.
//!
//! Floor and orch are interleaved (floor, chain, map, floor, …) so that
//! machine noise hits them alike. The map is timed from the events the run
//! recorded: from `A`'s end to `B`'s start is the 300 copies alone (the
//! Python task that adds them, and its 900 mutations, are timed apart);
//! the chain from its first start to its last end. The whole map run is
//! printed too, per task: it adds what a run of the map costs once (the
//! registration, the fork server the Python task starts, that task and
//! its mutations), spread over the copies. `ORCH_BENCH_REPS` (default 5)
//! sets the repetitions. `ORCH_BENCH_ONLY` (a comma list of `floor`,
//! `chain`, `map`) runs some parts only, for profiling one of them
//! (`perf`, `strace`): ratios are printed only when the floor ran.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::{EventKind, Store as _, Task, Workflow};

mod common;
use common::*;

/// `n` plain spawns of `true`, one at a time.
fn floor(dir: &Path, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let out = Command::new("true")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .output()
            .expect("true starts");
        assert!(out.status.success());
    }
    t.elapsed()
}

fn chain_workflow(n: usize) -> Workflow {
    let mut wf = Workflow::new("chain");
    for i in 0..n {
        wf.node(format!("t{i}"), Task::command(["true"]));
        if i > 0 {
            wf.edge(format!("t{}", i - 1), format!("t{i}"));
        }
    }
    wf
}

/// `A` adds `n` copies of `M` (each `true`) between itself and `B` at run
/// time, under `shape(A, B, M*)`.
fn map_workflow(n: usize) -> Workflow {
    let mut wf = Workflow::new("map");
    wf.node("A", Task::python("fan.py")).input("n", n);
    wf.node("B", Task::command(["true"]));
    wf.map_region("A", "B", orch::Shape::task("M"), 0, None);
    wf
}

/// True unless `ORCH_BENCH_ONLY` is set and leaves `what` out.
fn wanted(what: &str) -> bool {
    std::env::var("ORCH_BENCH_ONLY")
        .map(|v| v.split(',').any(|w| w.trim() == what))
        .unwrap_or(true)
}

/// Milliseconds of an event's commit time.
fn at(e: &orch::Event) -> u64 {
    orch::time::parse_millis(&e.at).expect("event time")
}

/// Runs `wf`; returns the whole run's time and the recorded events.
fn run(dir: &Path, k: usize, mut wf: Workflow) -> (Duration, Vec<orch::Event>) {
    let db = dir.join(format!("c{k}.db"));
    wf.dir(dir).db(&db).live_picture(false);
    let t = Instant::now();
    let outcome = wf.run().expect("run");
    let took = t.elapsed();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let store = orch::SqliteStore::open(&db).expect("store");
    (took, store.events(&outcome.run, None).expect("events"))
}

/// The commit time of the first event that `pick` accepts.
fn when(events: &[orch::Event], what: &str, pick: impl Fn(&EventKind) -> bool) -> u64 {
    at(events
        .iter()
        .find(|e| pick(&e.kind))
        .unwrap_or_else(|| panic!("no event: {what}")))
}

fn started(node: &str) -> impl Fn(&EventKind) -> bool + '_ {
    move |k| matches!(k, EventKind::AttemptStarted { node: n, .. } if n == node)
}

fn finished(node: &str) -> impl Fn(&EventKind) -> bool + '_ {
    move |k| matches!(k, EventKind::AttemptFinished { node: n, .. } if n == node)
}

fn main() {
    let chain = env_usize("ORCH_BENCH_CHAIN", 200);
    let map = env_usize("ORCH_BENCH_MAP", 300);
    let reps = env_usize("ORCH_BENCH_REPS", 5).max(1);
    let space = tempfile::tempdir().expect("temp dir");
    let dir = space.path();
    std::fs::write(
        dir.join("fan.py"),
        "import orch\nctx = orch.start()\nfor i in range(ctx.inputs['n']):\n    ctx.add_node(f'M_{i}', argv=['true'], name='M')\n    ctx.add_edge('A', f'M_{i}')\n    ctx.add_edge(f'M_{i}', 'B')\norch.output(None)\n",
    )
    .expect("fan.py");
    let (mut floors, mut chains, mut maps, mut fans, mut wholes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut k = 0;
    for _ in 0..reps {
        let n = chain.max(map);
        if wanted("floor") {
            floors.push(floor(dir, n) / n as u32);
        }

        if wanted("chain") {
            k += 1;
            let (_, ev) = run(dir, k, chain_workflow(chain));
            let first = when(&ev, "t0 started", started("t0"));
            let last = when(&ev, "last finished", finished(&format!("t{}", chain - 1)));
            chains.push(Duration::from_millis(last - first) / chain as u32);
        }

        if wanted("map") {
            k += 1;
            let (whole, ev) = run(dir, k, map_workflow(map));
            let a_start = when(&ev, "A started", started("A"));
            let a_end = when(&ev, "A finished", finished("A"));
            let b_start = when(&ev, "B started", started("B"));
            maps.push(Duration::from_millis(b_start - a_end) / map as u32);
            fans.push(Duration::from_millis(a_end - a_start));
            wholes.push(whole);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let fl = (!floors.is_empty()).then(|| median(floors));
    println!("command tasks (`true`) vs a plain spawn loop, medians of {reps}, interleaved");
    if let Some(fl) = fl {
        println!(
            "  floor (plain spawn loop)            {:7.3} ms/task",
            ms(fl)
        );
    }
    let line = |label: String, per: Duration| match fl {
        Some(fl) => println!(
            "  {label:<35} {:7.3} ms/task   ratio to floor {:5.2}, overhead {:+.3} ms/task",
            ms(per),
            per.as_secs_f64() / fl.as_secs_f64(),
            ms(per) - ms(fl)
        ),
        None => println!("  {label:<35} {:7.3} ms/task", ms(per)),
    };
    if !chains.is_empty() {
        line(format!("chain of {chain}"), median(chains));
    }
    if !maps.is_empty() {
        line(format!("{map}-wide runtime map, the copies"), median(maps));
        line(
            format!("the whole map run, per task ({})", map + 2),
            median(wholes) / (map as u32 + 2),
        );
        println!(
            "  of which the Python task adding the {map} copies ({} mutations, one reply each): {:.0} ms",
            3 * map,
            ms(median(fans)),
        );
    }
}
