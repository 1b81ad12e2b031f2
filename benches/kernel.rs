//! Kernel benchmarks (`cargo bench --bench kernel`): numbers, not
//! assertions. Each case prints the median of several repetitions.
//!
//! - `validate+apply`: a layered static DAG (each node with 1–3 parents)
//!   validated as one registration batch and applied to a graph;
//! - `store commit`: the same registration written to SQLite as one event
//!   plus its materialized rows;
//! - `shape check`: a 10,000-copy map filled in one batch, checked against
//!   `shape(A, B, M*)`;
//! - `picture`: the outlook and SVG of that map, collapsed;
//! - `python …`: Python no-op tasks run by orch (a chain; a 300-wide map
//!   added at run time, serial and `max_parallel(2)`), each beside its
//!   floor: a plain loop spawning the same interpreter on the same script
//!   (two at a time for the parallel case), interleaved.
//!
//! Set `ORCH_BENCH_NODES` (default 100000) and `ORCH_BENCH_CHAIN` (default
//! 50) to change the sizes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::graph::Graph;
use orch::state::{Event, EventKind};
use orch::{Attrs, Mutation, Origin, Store, Task, Workflow};
use serde_json::Value;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn layered(n: usize) -> Vec<Mutation> {
    let mut muts = Vec::with_capacity(n * 3);
    let width = 100;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..n {
        muts.push(Mutation::AddNode {
            id: format!("n{i}"),
            task: Task::command(["true"]),
            inputs: Value::Null,
            attrs: Attrs::new(),
        });
        if i >= width {
            let layer_start = (i / width - 1) * width;
            let parents = 1 + (rnd() % 3) as usize;
            let mut seen = Vec::new();
            for _ in 0..parents {
                let p = layer_start + (rnd() as usize % width);
                if !seen.contains(&p) {
                    seen.push(p);
                    muts.push(Mutation::AddEdge {
                        from: format!("n{p}"),
                        to: format!("n{i}"),
                        attrs: Attrs::new(),
                    });
                }
            }
        }
    }
    muts
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n: usize = std::env::var("ORCH_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let chain: usize = std::env::var("ORCH_BENCH_CHAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);

    let muts = layered(n);
    let edges = muts.len() - n;
    let d = time(5, || {
        let mut g = Graph::new();
        g.commit(&muts).expect("valid DAG")
    });
    println!(
        "validate+apply   {n} nodes, {edges} edges: {:.1} ms median of 5 ({:.0} nodes/s)",
        d.as_secs_f64() * 1e3,
        n as f64 / d.as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let mut k = 0;
    let d = time(3, || {
        k += 1;
        let mut store = Store::open(dir.path().join(format!("b{k}.db"))).unwrap();
        let events = [
            Event {
                seq: 1,
                at: orch::time::now(),
                kind: EventKind::RunStarted {
                    workflow: "bench".into(),
                    orchestrator_pid: std::process::id(),
                    config: Value::Null,
                },
            },
            Event {
                seq: 2,
                at: orch::time::now(),
                kind: EventKind::BatchCommitted {
                    origin: Origin::Registration,
                    mutations: muts.clone(),
                },
            },
        ];
        store.commit("bench", &events, &[]).unwrap()
    });
    println!(
        "store commit     {n} nodes, {edges} edges in one transaction: {:.1} ms median of 3",
        d.as_secs_f64() * 1e3
    );

    // A 10,000-copy map: the shape check of the batch that fills it, and
    // the picture (collapsed into one stacked node).
    let copies = 10_000;
    let mut reg = vec![
        Mutation::AddNode {
            id: "A".into(),
            task: Task::command(["true"]),
            inputs: Value::Null,
            attrs: Attrs::new(),
        },
        Mutation::AddNode {
            id: "B".into(),
            task: Task::command(["true"]),
            inputs: Value::Null,
            attrs: Attrs::new(),
        },
    ];
    reg.push(Mutation::AddPromise {
        promise: orch::Promise::shape("A", "B", "M*".parse().unwrap()),
    });
    let mut fill = Vec::new();
    for i in 0..copies {
        let id = format!("M_{i}");
        fill.push(Mutation::AddNode {
            id: id.clone(),
            task: Task::command(["true"]).named("M"),
            inputs: Value::Null,
            attrs: Attrs::new(),
        });
        for (a, b) in [("A", id.as_str()), (id.as_str(), "B")] {
            fill.push(Mutation::AddEdge {
                from: a.into(),
                to: b.into(),
                attrs: Attrs::new(),
            });
        }
    }
    let mut g = Graph::new();
    g.commit(&reg).unwrap();
    let d = time(5, || {
        let staging = g.stage_all(fill.clone()).unwrap();
        orch::promise::check_batch(&g, &staging, Some("A")).unwrap()
    });
    println!(
        "shape check      {copies} copies of M* filled in one batch (staging + check): {:.1} ms median of 5",
        d.as_secs_f64() * 1e3
    );
    let mut state = orch::RunState::new("bench");
    let mk = |seq, kind| Event {
        seq,
        at: orch::time::now(),
        kind,
    };
    state.apply(&mk(
        1,
        EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations: reg.clone(),
        },
    ));
    state.apply(&mk(
        2,
        EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations: fill.clone(),
        },
    ));
    let d = time(3, || {
        let o = orch::outlook::outlook(&state, orch::outlook::Options::default());
        orch::render::svg(&o)
    });
    println!(
        "picture          {copies}-copy map, collapsed (outlook + SVG): {:.1} ms median of 3",
        d.as_secs_f64() * 1e3
    );

    // Python tasks versus the floor: a plain loop spawning the same
    // interpreter on the same script, measured interleaved with orch (floor,
    // orch, floor, orch, …) so that machine noise hits both alike.
    let python = match orch::executor::resolve_python(&orch::executor::configured_python(None)) {
        Ok(p) => p,
        Err(e) => {
            println!("python           skipped: {e}");
            return;
        }
    };
    let space = tempfile::tempdir().unwrap();
    let helper = orch::executor::install_helper(space.path()).unwrap();
    std::fs::write(
        space.path().join("noop.py"),
        "import orch\norch.start()\norch.output(None)\n",
    )
    .unwrap();
    std::fs::write(
        space.path().join("fan.py"),
        "import orch\nctx = orch.start()\nfor i in range(ctx.inputs['n']):\n    ctx.add_node(f'M_{i}', script='noop.py', name='M')\n    ctx.add_edge('A', f'M_{i}')\n    ctx.add_edge(f'M_{i}', 'B')\norch.output(None)\n",
    )
    .unwrap();
    let spawn_noop = || {
        use std::io::Write;
        let start_line = "{\"orch\":1,\"type\":\"start\",\"run\":\"r\",\"node\":\"n\",\"attempt\":1,\"task\":{\"name\":\"n\",\"kind\":\"python\",\"script\":\"noop.py\"},\"inputs\":null}\n";
        let mut child = Command::new(&python)
            .arg("-u")
            .arg("noop.py")
            .current_dir(space.path())
            .env("PYTHONPATH", &helper)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(start_line.as_bytes()).unwrap();
        // The helper waits for the ack of its output message.
        stdin
            .write_all(b"{\"orch\":1,\"type\":\"ack\",\"seq\":1}\n")
            .unwrap();
        drop(stdin);
        child
    };
    // `n` spawns, at most `width` at a time.
    let floor = |n: usize, width: usize| {
        let mut left = n;
        while left > 0 {
            let batch: Vec<_> = (0..width.min(left)).map(|_| spawn_noop()).collect();
            left -= batch.len();
            for c in batch {
                c.wait_with_output().unwrap();
            }
        }
    };
    let mut k = 0;
    let mut run = |wf: &mut Workflow| {
        k += 1;
        wf.dir(space.path())
            .db(space.path().join(format!("b{k}.db")))
            .live_picture(false);
        assert!(wf.run().unwrap().succeeded());
    };
    let reps = 5;
    /// Name, tasks, floor width, and how to build the workflow.
    type Case = (String, usize, usize, Box<dyn Fn() -> Workflow>);
    let cases: Vec<Case> = vec![
        (
            format!("chain of {chain}"),
            chain,
            1,
            Box::new(move || {
                let mut wf = Workflow::new("chain");
                for i in 0..chain {
                    wf.node(format!("t{i}"), Task::python("noop.py"));
                    if i > 0 {
                        wf.edge(format!("t{}", i - 1), format!("t{i}"));
                    }
                }
                wf
            }),
        ),
        (
            "300-wide runtime map".to_string(),
            302,
            1,
            Box::new(|| map_workflow(1)),
        ),
        (
            "300-wide runtime map, max_parallel(2)".to_string(),
            302,
            2,
            Box::new(|| map_workflow(2)),
        ),
    ];
    for (name, tasks, width, make) in &cases {
        let (mut f, mut o) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            floor(*tasks, *width);
            f.push(t.elapsed());
            let t = Instant::now();
            run(&mut make());
            o.push(t.elapsed());
        }
        let (f, o) = (median(f), median(o));
        let per = |d: Duration| d.as_secs_f64() * 1e3 / *tasks as f64;
        println!(
            "python {name:<38} {tasks} tasks: orch {:.1} ms/task, floor {:.1} ms/task, ratio {:.2}, overhead {:.2} ms/task (medians of {reps}, interleaved)",
            per(o),
            per(f),
            o.as_secs_f64() / f.as_secs_f64(),
            per(o) - per(f)
        );
    }
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
