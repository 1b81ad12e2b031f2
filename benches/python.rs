//! Python tasks against their floor (`cargo bench --bench python`):
//! numbers, not assertions.
//!
//! Two floors, each one at a time, or two at a time for the
//! `max_parallel(2)` case:
//!
//! - the **spawn floor**, a plain loop spawning the same resolved
//!   interpreter on the same no-op script (answering its one protocol
//!   message): the floor of a fresh interpreter per attempt;
//! - the **fork floor**, a warm interpreter (the helper imported) that
//!   forks one child per task itself, with no orchestrator and no fork
//!   server: the child is set up and runs the script exactly as a forked
//!   attempt (`_forkserver._child`), over pipes the loop answers. Its time
//!   is the task's own run plus the kernel's fork, exit and wait; what a
//!   forked attempt costs beyond it is orch's.
//!
//! Beside them, orch runs the equivalent workflow twice: with the warm fork
//! server (the default) and with a fresh interpreter per attempt
//! (`python_fork(false)`), both with the fork server's spares
//! (`ORCH_FORK_SPARES=2`, the default, or the value set outside) and
//! without (`ORCH_FORK_SPARES=0`: it forks for each attempt while the
//! orchestrator waits). All are measured interleaved (floors, fork
//! and no spares in turn first, fresh, floors, …) so that machine noise
//! hits them alike; each line
//! prints medians, the orch/floor ratio and the per-task overhead over the
//! floor, and the last lines the gain of two workers over one (serial map
//! time / `max_parallel(2)` map time) for each.
//!
//! Cases: a chain of `ORCH_BENCH_CHAIN` tasks (default 200); a 300-wide
//! map added at run time (`shape(A, B, M*)`), serial and with
//! `max_parallel(2)`. `ORCH_BENCH_ONLY` picks some of `chain`, `map`,
//! `map2` (comma list); `ORCH_BENCH_FRESH=0` skips the fresh interpreters
//! and their spawn floor (30 ms a task: most of the bench's time).
//! `ORCH_BENCH_REPS` (default 5) sets the repetitions; `ORCH_BENCH_LIVE=1`
//! turns the live picture on (off by default here, on by default in a
//! workflow).

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

/// The fork floor: `n` tasks forked `width` at a time by a warm
/// interpreter running `forkloop.py`; the time it measured itself (its own
/// start and imports are not counted).
fn fork_floor(python: &Path, dir: &Path, helper: &Path, n: usize, width: usize) -> Duration {
    let out = Command::new(python)
        .arg("forkloop.py")
        .arg(n.to_string())
        .arg(width.to_string())
        .current_dir(dir)
        .env("PYTHONPATH", helper)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("python starts");
    assert!(out.status.success(), "the fork loop failed");
    let ms: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the fork loop prints its time");
    Duration::from_secs_f64(ms / 1e3)
}

/// The fork floor's loop (see [`fork_floor`]).
const FORK_LOOP: &str = r#"
import os, sys, time
import orch, orch.__main__, orch._forkserver as server

n, width = int(sys.argv[1]), int(sys.argv[2])
script = os.path.abspath("noop.py")
stdio = [(s.encoding, s.errors) if s is not None else ("utf-8", "strict")
         for s in (sys.stdin, sys.stdout, sys.stderr)]
START = (b'{"orch":1,"type":"start","run":"r","node":"n","attempt":1,'
         b'"task":{"name":"n","kind":"python","script":"noop.py"},"inputs":null}\n')
ACK = b'{"orch":1,"type":"ack","seq":1}\n'

def launch():
    (i_r, i_w), (o_r, o_w), (e_r, e_w) = os.pipe(), os.pipe(), os.pipe()
    marker = os.memfd_create("orch:floor:0")
    pid = os.fork()
    if pid == 0:
        for fd in (i_w, o_r, e_r):
            os.close(fd)
        server._detach()
        server._child({"script": script, "argv": [script], "cwd": os.getcwd(),
                       "env": {}}, [i_r, o_w, e_w, marker], stdio)
    for fd in (i_r, o_w, e_w, marker):
        os.close(fd)
    os.write(i_w, START)
    return pid, i_w, o_r, e_r

def finish(pid, i_w, o_r, e_r):
    out = b""
    while b"\n" not in out:
        chunk = os.read(o_r, 65536)
        if not chunk:
            break
        out += chunk
    os.write(i_w, ACK)
    os.close(i_w)
    while os.read(o_r, 65536):
        pass
    while os.read(e_r, 65536):
        pass
    os.close(o_r)
    os.close(e_r)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status

t = time.perf_counter()
left = n
while left:
    batch = [launch() for _ in range(min(width, left))]
    left -= len(batch)
    for b in batch:
        finish(*b)
print((time.perf_counter() - t) * 1e3)
"#;

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
    std::fs::write(dir.join("forkloop.py"), FORK_LOOP).expect("forkloop.py");

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
    /// Key, name, tasks, floor width, and how to build the workflow.
    type Case = (
        &'static str,
        String,
        usize,
        usize,
        Box<dyn Fn() -> Workflow>,
    );
    let cases: Vec<Case> = vec![
        (
            "chain",
            format!("chain of {chain}"),
            chain,
            1,
            Box::new(move || chain_workflow(chain)),
        ),
        (
            "map",
            "300-wide runtime map".into(),
            302,
            1,
            Box::new(|| map_workflow(1)),
        ),
        (
            "map2",
            "300-wide runtime map, max_parallel(2)".into(),
            302,
            2,
            Box::new(|| map_workflow(2)),
        ),
    ];
    let only = std::env::var("ORCH_BENCH_ONLY").unwrap_or_default();
    let want = |key: &str| only.is_empty() || only.split(',').any(|k| k.trim() == key);
    let fresh_too = std::env::var("ORCH_BENCH_FRESH").as_deref() != Ok("0");
    // Medians by case and kind, for the gains of two workers.
    let mut medians: std::collections::HashMap<(&str, &str), Duration> = Default::default();
    for (key, name, tasks, width, make) in &cases {
        if !want(key) {
            continue;
        }
        let (mut f, mut ff, mut forked, mut bare, mut fresh) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Whatever the server's spares are set to outside the bench (else
        // two, the server's default).
        let spares = std::env::var_os("ORCH_FORK_SPARES");
        for rep in 0..reps {
            if fresh_too {
                let t = Instant::now();
                floor(&python, dir, &helper, *tasks, *width);
                f.push(t.elapsed());
            }
            ff.push(fork_floor(&python, dir, &helper, *tasks, *width));
            // With spares and without (the server forks for each request
            // and the orchestrator waits for the pid), in turn first: the
            // first run after the floors is slower whatever it is (measured
            // with spares off in both). The server reads ORCH_FORK_SPARES
            // from the environment it inherits; the runs are one after the
            // other, nothing else reads it meanwhile.
            let order = if rep % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for bare_run in order {
                match (&spares, bare_run) {
                    (_, true) => std::env::set_var("ORCH_FORK_SPARES", "0"),
                    (Some(v), false) => std::env::set_var("ORCH_FORK_SPARES", v),
                    (None, false) => std::env::set_var("ORCH_FORK_SPARES", "2"),
                }
                let t = Instant::now();
                run(make(), true);
                if bare_run { &mut bare } else { &mut forked }.push(t.elapsed());
            }
            match &spares {
                Some(v) => std::env::set_var("ORCH_FORK_SPARES", v),
                None => std::env::remove_var("ORCH_FORK_SPARES"),
            }
            if fresh_too {
                let t = Instant::now();
                run(make(), false);
                fresh.push(t.elapsed());
            }
        }
        let spread = |xs: &[Duration]| {
            let ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            let lo = ms.iter().cloned().fold(f64::MAX, f64::min);
            let hi = ms.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.0}–{hi:.0} ms")
        };
        let per = |d: Duration| d.as_secs_f64() * 1e3 / *tasks as f64;
        println!("python {name}: {tasks} tasks, medians of {reps}, interleaved");
        let line = |label: &str, d: Duration, all: &[Duration], floor: Option<(&str, Duration)>| {
            let against = floor.map_or(String::new(), |(which, fl)| {
                let ratio = d.as_secs_f64() / fl.as_secs_f64();
                let verdict = if ratio < 1.0 {
                    format!("{:.1}× faster", 1.0 / ratio)
                } else {
                    format!("{:.0}% slower", (ratio - 1.0) * 100.0)
                };
                format!(
                    "   ratio to the {which} {ratio:.3} ({verdict}), overhead {:+.2} ms/task",
                    per(d) - per(fl)
                )
            });
            println!(
                "  {label:<26} {:8.1} ms  {:6.2} ms/task{against}   (range {})",
                d.as_secs_f64() * 1e3,
                per(d),
                spread(all)
            );
        };
        let ffl = median(ff.clone());
        medians.insert((key, "fork floor"), ffl);
        line("fork floor (warm fork loop)", ffl, &ff, None);
        let fo = median(forked.clone());
        medians.insert((key, "orch, spares"), fo);
        line("orch, spares", fo, &forked, Some(("fork floor", ffl)));
        let fb = median(bare.clone());
        medians.insert((key, "orch, no spares"), fb);
        line("orch, no spares", fb, &bare, Some(("fork floor", ffl)));
        if fresh_too {
            let fl = median(f.clone());
            medians.insert((key, "spawn floor"), fl);
            line("spawn floor (plain loop)", fl, &f, None);
            line("orch, no spares", fb, &bare, Some(("spawn floor", fl)));
            let fr = median(fresh.clone());
            medians.insert((key, "orch, fresh interpreters"), fr);
            line(
                "orch, fresh interpreters",
                fr,
                &fresh,
                Some(("spawn floor", fl)),
            );
        }
    }
    if want("map") && want("map2") {
        println!("gain of two workers (300-wide map: serial time / max_parallel(2) time)");
        for kind in [
            "spawn floor",
            "fork floor",
            "orch, spares",
            "orch, no spares",
            "orch, fresh interpreters",
        ] {
            if let (Some(one), Some(two)) =
                (medians.get(&("map", kind)), medians.get(&("map2", kind)))
            {
                println!("  {kind:<30} {:.2}×", one.as_secs_f64() / two.as_secs_f64());
            }
        }
    }
}
