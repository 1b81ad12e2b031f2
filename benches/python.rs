//! Python tasks against their floor (`cargo bench --bench python`):
//! numbers, not assertions.
//!
//! The floor is a plain loop spawning the same resolved interpreter on the
//! same no-op script (answering its one protocol message), one at a time,
//! or two at a time for the `max_parallel(2)` case. Beside it, orch runs
//! the equivalent workflow twice: with the warm fork server (the default)
//! and with a fresh interpreter per attempt (`python_fork(false)`). The
//! three are measured interleaved (floor, fork, fresh, floor, …) so that
//! machine noise hits them alike; each line prints medians, the orch/floor
//! ratios and the per-task overhead over the floor.
//!
//! Cases: a chain of `ORCH_BENCH_CHAIN` tasks (default 200); a 300-wide
//! map added at run time (`shape(A, B, M*)`), serial and with
//! `max_parallel(2)`. `ORCH_BENCH_REPS` (default 5) sets the repetitions;
//! `ORCH_BENCH_LIVE=1` turns the live picture on (off by default here, on
//! by default in a workflow).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::{Task, Workflow};

mod common;
use common::*;

/// One plain spawn of the no-op script, fed the start message and the ack
/// of its output, as orch would.
fn spawn_noop(python: &Path, dir: &Path, helper: &Path) -> std::process::Child {
    use std::io::Write;
    let start_line = "{\"orch\":1,\"type\":\"start\",\"run\":\"r\",\"node\":\"n\",\"attempt\":1,\"task\":{\"name\":\"n\",\"kind\":\"python\",\"script\":\"noop.py\"},\"inputs\":null}\n";
    let mut child = Command::new(python)
        .arg("-u")
        .arg("noop.py")
        .current_dir(dir)
        .env("PYTHONPATH", helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(start_line.as_bytes()).expect("start");
    stdin
        .write_all(b"{\"orch\":1,\"type\":\"ack\",\"seq\":1}\n")
        .expect("ack");
    drop(stdin);
    child
}

/// `n` plain spawns, at most `width` at a time.
fn floor(python: &Path, dir: &Path, helper: &Path, n: usize, width: usize) {
    let mut left = n;
    while left > 0 {
        let batch: Vec<_> = (0..width.min(left))
            .map(|_| spawn_noop(python, dir, helper))
            .collect();
        left -= batch.len();
        for c in batch {
            let out = c.wait_with_output().expect("waited");
            assert!(out.status.success(), "the no-op script failed");
        }
    }
}

fn chain_workflow(n: usize) -> Workflow {
    let mut wf = Workflow::new("chain");
    for i in 0..n {
        wf.node(format!("t{i}"), Task::python("noop.py"));
        if i > 0 {
            wf.edge(format!("t{}", i - 1), format!("t{i}"));
        }
    }
    wf
}

/// `A` adds 300 copies of `M` between itself and `B` at run time, under
/// `shape(A, B, M*)`.
fn map_workflow(parallel: usize) -> Workflow {
    let mut wf = Workflow::new("map");
    wf.max_parallel(parallel);
    wf.node("A", Task::python("fan.py")).input("n", 300);
    wf.node("B", Task::python("noop.py"));
    wf.map_region("A", "B", orch::Shape::task("M"), 0, None);
    wf
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let chain = env_usize("ORCH_BENCH_CHAIN", 200);
    let reps = env_usize("ORCH_BENCH_REPS", 5).max(1);
    let python = match orch::exec::resolve_python(&orch::exec::configured_python(None)) {
        Ok(p) => p,
        Err(e) => {
            println!("python bench skipped: {e}");
            return;
        }
    };
    println!("interpreter {}", python.display());
    let space = tempfile::tempdir().expect("temp dir");
    let dir = space.path();
    let helper = orch::exec::install_helper(dir).expect("helper");
    std::fs::write(
        dir.join("noop.py"),
        "import orch\norch.start()\norch.output(None)\n",
    )
    .expect("noop.py");
    std::fs::write(
        dir.join("fan.py"),
        "import orch\nctx = orch.start()\nfor i in range(ctx.inputs['n']):\n    ctx.add_node(f'M_{i}', script='noop.py', name='M')\n    ctx.add_edge('A', f'M_{i}')\n    ctx.add_edge(f'M_{i}', 'B')\norch.output(None)\n",
    )
    .expect("fan.py");

    // The live picture (on by default) is off unless ORCH_BENCH_LIVE=1.
    let live = std::env::var("ORCH_BENCH_LIVE").as_deref() == Ok("1");
    let mut k = 0;
    let mut run = |mut wf: Workflow, fork: bool| {
        k += 1;
        wf.dir(dir)
            .db(dir.join(format!("b{k}.db")))
            .live_picture(live)
            .python_fork(fork);
        let outcome = wf.run().expect("run");
        assert!(outcome.succeeded(), "{:?}", outcome.reason);
    };
    /// Name, tasks, floor width, and how to build the workflow.
    type Case = (String, usize, usize, Box<dyn Fn() -> Workflow>);
    let cases: Vec<Case> = vec![
        (
            format!("chain of {chain}"),
            chain,
            1,
            Box::new(move || chain_workflow(chain)),
        ),
        (
            "300-wide runtime map".into(),
            302,
            1,
            Box::new(|| map_workflow(1)),
        ),
        (
            "300-wide runtime map, max_parallel(2)".into(),
            302,
            2,
            Box::new(|| map_workflow(2)),
        ),
    ];
    for (name, tasks, width, make) in &cases {
        let (mut f, mut forked, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            floor(&python, dir, &helper, *tasks, *width);
            f.push(t.elapsed());
            let t = Instant::now();
            run(make(), true);
            forked.push(t.elapsed());
            let t = Instant::now();
            run(make(), false);
            fresh.push(t.elapsed());
        }
        let spread = |xs: &[Duration]| {
            let ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            let lo = ms.iter().cloned().fold(f64::MAX, f64::min);
            let hi = ms.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.0}–{hi:.0} ms")
        };
        let per = |d: Duration| d.as_secs_f64() * 1e3 / *tasks as f64;
        let (fl, fo, fr) = (
            median(f.clone()),
            median(forked.clone()),
            median(fresh.clone()),
        );
        println!("python {name}: {tasks} tasks, medians of {reps}, interleaved");
        println!(
            "  floor (plain spawn loop)  {:8.1} ms  {:6.2} ms/task   (range {})",
            fl.as_secs_f64() * 1e3,
            per(fl),
            spread(&f)
        );
        for (label, d, all) in [
            ("orch, fork server", fo, &forked),
            ("orch, fresh interpreters", fr, &fresh),
        ] {
            let ratio = d.as_secs_f64() / fl.as_secs_f64();
            let verdict = if ratio < 1.0 {
                format!("{:.1}× faster than the floor", 1.0 / ratio)
            } else {
                format!("{:.0}% slower than the floor", (ratio - 1.0) * 100.0)
            };
            println!(
                "  {label:<25} {:8.1} ms  {:6.2} ms/task   ratio to floor {ratio:.3} ({verdict}), overhead {:+.2} ms/task   (range {})",
                d.as_secs_f64() * 1e3,
                per(d),
                per(d) - per(fl),
                spread(all)
            );
        }
    }
}
