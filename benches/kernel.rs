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
//! - `python chain`: a chain of Python no-op tasks run by orch, beside the
//!   floor: a plain loop spawning the same interpreter on the same script.
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

    // Python chain versus the plain spawn loop.
    let python = match orch::executor::resolve_python(&orch::executor::configured_python(None)) {
        Ok(p) => p,
        Err(e) => {
            println!("python chain     skipped: {e}");
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
    let start_line = "{\"orch\":1,\"type\":\"start\",\"run\":\"r\",\"node\":\"n\",\"attempt\":1,\"task\":{\"name\":\"n\",\"kind\":\"python\",\"script\":\"noop.py\"},\"inputs\":null}\n";
    let floor = time(3, || {
        for _ in 0..chain {
            use std::io::Write;
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
            child.wait_with_output().unwrap();
        }
    });
    let mut k = 0;
    let orch_time = time(3, || {
        k += 1;
        let mut wf = Workflow::new("chain");
        wf.dir(space.path())
            .db(space.path().join(format!("chain{k}.db")));
        for i in 0..chain {
            wf.node(format!("t{i}"), Task::python("noop.py"));
            if i > 0 {
                wf.edge(format!("t{}", i - 1), format!("t{i}"));
            }
        }
        let out = wf.run().unwrap();
        assert!(out.succeeded());
    });
    let per = |d: Duration| d.as_secs_f64() * 1e3 / chain as f64;
    println!(
        "python chain     {chain} tasks: orch {:.1} ms/task, plain spawn loop {:.1} ms/task, ratio {:.2}, overhead {:.2} ms/task",
        per(orch_time),
        per(floor),
        orch_time.as_secs_f64() / floor.as_secs_f64(),
        per(orch_time) - per(floor)
    );
}
