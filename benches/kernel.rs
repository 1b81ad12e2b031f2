//! Kernel benchmarks (`cargo bench --bench kernel`): numbers, not
//! assertions. Each case prints the median of several repetitions.
//!
//! - `validate+apply`: a layered static DAG (rows of 100, each node with
//!   1–3 parents in the row above) validated as one registration batch and
//!   applied to a graph, in memory;
//! - `store commit`: the same registration written to SQLite as one event
//!   plus its materialized rows;
//! - `run`: that DAG registered and run to completion by `Workflow::run`
//!   with durable history (WAL, `synchronous=NORMAL`) and the
//!   benchmark-only [`NoWork`] executor, in a child process (this bench
//!   re-executed) so that its peak RSS (`VmHWM`) is the run's alone:
//!   registration time (until the first task starts), tasks/s, peak RSS;
//!   once without the live picture and once with it (the default);
//! - `overhead`: orchestration cost per task (no-work executor, durable
//!   history): a chain and a wide fan of independent nodes;
//! - `shape check`: a 10,000-copy map filled in one batch, checked against
//!   `shape(A, B, M*)`;
//! - `promise curve`: 1,000 batches, each staged, checked and applied
//!   against 100 `shape` promises in force, time per batch by blocks of
//!   100 (flat = no super-linear growth);
//! - `picture`: the outlook and SVG of the 10,000-copy map, collapsed;
//! - `live`: what the live picture costs a run: layered DAGs of 100 to
//!   10,000 nodes (`ORCH_BENCH_LIVE_SIZES`, a comma list) run without and
//!   with it, alternately, in child processes (`ORCH_BENCH_REPS` each,
//!   default 5); the ratios with/without of the time until the outcome,
//!   until the final picture landed, and of the whole process (wall and
//!   CPU time: the CPU ratio is the steadier one on a busy machine).
//!
//! Set `ORCH_BENCH_NODES` (default 100000) to change the DAG size,
//! `ORCH_BENCH_PARALLEL` (default 1) the `max_parallel` of the run case,
//! and `ORCH_BENCH_OWNED=1` to run it with `Workflow::run_owned` (the
//! workflow given up to the run) instead of `Workflow::run`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orch::exec::{AttemptEnd, AttemptLink, AttemptSpec, Executor, LaunchError};
use orch::graph::Graph;
use orch::history::{Event, EventKind};
use orch::{Attrs, Mutation, Origin, SqliteStore, Store, Task, Workflow};

mod common;
use common::*;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// BENCHMARK ONLY, not for real workflows: every attempt "succeeds" at
/// once, runs nothing and outputs nothing, so that a run measures the
/// orchestrator alone (validation, scheduling, durable history). Plugged
/// in through the public extension point [`Workflow::executor`].
#[derive(Default)]
struct NoWork {
    /// When the first attempt was launched: registration is over.
    first: Mutex<Option<Instant>>,
}

impl Executor for NoWork {
    fn launch(&self, _spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        self.first
            .lock()
            .expect("no poisoning")
            .get_or_insert_with(Instant::now);
        link.finish(AttemptEnd::exited(0));
        Ok(None)
    }
}

/// One run with the no-work executor: (registration, run after it).
fn run_no_work(wf: &mut Workflow, db: &Path) -> (Duration, Duration) {
    run_no_work_as(wf, db, false)
}

/// [`run_no_work`], with [`Workflow::run_owned`] when `owned` (the
/// workflow is left empty).
fn run_no_work_as(wf: &mut Workflow, db: &Path, owned: bool) -> (Duration, Duration) {
    let exec = Arc::new(NoWork::default());
    // The child of the `run` case is told which; other cases draw nothing.
    let live = std::env::var("ORCH_BENCH_LIVE").as_deref() == Ok("1");
    wf.db(db).live_picture(live).executor(exec.clone());
    let t = Instant::now();
    let outcome = if owned {
        std::mem::replace(wf, Workflow::new("taken")).run_owned()
    } else {
        wf.run()
    }
    .expect("run");
    let end = Instant::now();
    assert!(outcome.succeeded(), "{outcome:?}");
    // Before the database's folder goes: the final picture lands there.
    outcome.final_picture();
    let first = exec.first.lock().unwrap().expect("a task ran");
    (first - t, end - first)
}

/// The child side of the `live` case: runs the layered DAG once and
/// prints `run_ms landed_ms`: until `Workflow::run` returned (from
/// before registration), and until the final live picture was on disk
/// (the same as `run_ms` without the picture).
fn child_live(n: usize) {
    let live = std::env::var("ORCH_BENCH_LIVE").as_deref() == Ok("1");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wf = Workflow::new("layered");
    for m in layered(n) {
        wf.mutate(m);
    }
    wf.db(dir.path().join("run.db"))
        .live_picture(live)
        .executor(Arc::new(NoWork::default()));
    let t = Instant::now();
    let outcome = wf.run().expect("run");
    let ran = t.elapsed();
    assert!(outcome.succeeded(), "{outcome:?}");
    if let Some(path) = outcome.final_picture() {
        let landed = t.elapsed();
        let svg = std::fs::read_to_string(path).expect("the final picture landed");
        assert!(svg.contains(" · succeeded · "), "the final state is drawn");
        // The layout the picture's budget allowed (see `picture::live`).
        let layout = svg
            .split_once("orch live picture: ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?");
        println!("{} {} {layout}", ms(ran), ms(landed));
    } else {
        println!("{} {} -", ms(ran), ms(ran));
    }
}

/// User and system CPU time of the ended child processes so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `live` case: for each size, child processes alternately without
/// and with the live picture; prints the medians and the ratios with to
/// without (the floor, measured in the same run) of the time until the
/// run's outcome, until the final picture landed, and of the whole
/// process (start to exit, which waits for any final picture).
fn live_case() {
    let exe = std::env::current_exe().expect("bench executable");
    let reps = env_usize("ORCH_BENCH_REPS", 5);
    let sizes: Vec<usize> = std::env::var("ORCH_BENCH_LIVE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 500, 1_000, 2_000, 2_100, 10_000]);
    for n in sizes {
        // [without, with] × (run, landed, process, process CPU)
        let mut m: [[Vec<Duration>; 4]; 2] = Default::default();
        // The final picture's layout in each run with the picture.
        let mut layouts: Vec<String> = Vec::new();
        for _ in 0..reps {
            for (k, live) in ["0", "1"].into_iter().enumerate() {
                let t = Instant::now();
                let cpu = children_cpu();
                let out = std::process::Command::new(&exe)
                    .env("ORCH_BENCH_CHILD", "live")
                    .env("ORCH_BENCH_NODES", n.to_string())
                    .env("ORCH_BENCH_LIVE", live)
                    .output()
                    .expect("child bench");
                let process = t.elapsed();
                let cpu = children_cpu() - cpu;
                assert!(out.status.success(), "{out:?}");
                let text = String::from_utf8_lossy(&out.stdout);
                let v: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if k == 1 {
                    let layout = text.split_whitespace().nth(2).unwrap_or("?");
                    layouts.push(layout.to_string());
                }
                m[k][0].push(Duration::from_secs_f64(v[0] / 1e3));
                m[k][1].push(Duration::from_secs_f64(v[1] / 1e3));
                m[k][2].push(process);
                m[k][3].push(cpu);
            }
        }
        let [off, on] = m.map(|c| c.map(median));
        let ratio = |k: usize| on[k].as_secs_f64() / off[k].as_secs_f64();
        println!(
            "live             {n:>6}-node layered DAG, no-work executor: outcome {:.1} ms / {:.1} ms with the picture (x{:.2}), final picture landed {:.1} ms (x{:.2}), whole process {:.1} / {:.1} ms (x{:.2}), its CPU {:.1} / {:.1} ms (x{:.2}) (medians of {reps}, target x1.10); final layouts {}",
            ms(off[0]),
            ms(on[0]),
            ratio(0),
            ms(on[1]),
            ratio(1),
            ms(off[2]),
            ms(on[2]),
            ratio(2),
            ms(off[3]),
            ms(on[3]),
            ratio(3),
            layouts.join(","),
        );
    }
}

/// A layered DAG of `n` nodes as mutations: rows of 100, each node after
/// the first row with 1–3 distinct parents in the row above.
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
        muts.push(Mutation::add_node(format!("n{i}"), Task::command(["true"])));
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

/// Peak resident set size of this process, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The child side of the `run` case: registers and runs the layered DAG
/// once, prints `registration_ms run_ms peak_rss_mib`.
fn child_run(n: usize) {
    let parallel = env_usize("ORCH_BENCH_PARALLEL", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wf = Workflow::new("layered");
    for m in layered(n) {
        wf.mutate(m);
    }
    wf.max_parallel(parallel);
    let owned = std::env::var("ORCH_BENCH_OWNED").as_deref() == Ok("1");
    let (reg, run) = run_no_work_as(&mut wf, &dir.path().join("run.db"), owned);
    println!("{} {} {}", ms(reg), ms(run), peak_rss_mib());
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env_usize("ORCH_BENCH_NODES", 100_000);
    match std::env::var("ORCH_BENCH_CHILD").as_deref() {
        Ok("run") => return child_run(n),
        Ok("live") => return child_live(n),
        _ => {}
    }
    let only = std::env::var("ORCH_BENCH_ONLY").unwrap_or_default();
    let want = |case: &str| only.is_empty() || only.split(',').any(|c| c == case);

    let muts = layered(n);
    let edges = muts.len() - n;
    if want("validate") {
        let d = time(5, || {
            let mut g = Graph::new();
            g.commit(&muts).expect("valid DAG")
        });
        println!(
            "validate+apply   {n} nodes, {edges} edges: {:.1} ms median of 5 ({:.0} nodes/s)",
            ms(d),
            n as f64 / d.as_secs_f64()
        );
    }

    if want("store") {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut k = 0;
        let d = time(3, || {
            k += 1;
            let store = SqliteStore::open(dir.path().join(format!("b{k}.db"))).unwrap();
            let started = Event {
                seq: 1,
                at: orch::time::now(),
                kind: EventKind::RunStarted {
                    workflow: "bench".into(),
                    orchestrator_pid: std::process::id(),
                    config: orch::model::RunConfig::new(".", "python3"),
                },
            };
            let at = orch::time::now();
            let registration = orch::store::Registration {
                run: "bench",
                started: &started,
                batch: (2, &at),
                mutations: &muts,
            };
            store
                .register(
                    &orch::store::Owner::this_process(),
                    registration,
                    &mut || true,
                )
                .unwrap()
                .expect("kept");
        });
        println!(
            "store commit     {n} nodes, {edges} edges in one transaction: {:.1} ms median of 3",
            ms(d)
        );
    }
    drop(muts);

    if want("run") {
        // A child process per repetition: its peak RSS is the run's alone.
        // Without the live picture (the orchestrator alone), then with it
        // (the default: beyond 2,000 nodes it counts nodes by state).
        let exe = std::env::current_exe().expect("bench executable");
        for (live, what) in [("0", "no picture"), ("1", "live picture")] {
            let (mut regs, mut runs, mut rss, mut whole) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..3 {
                let t = Instant::now();
                let out = std::process::Command::new(&exe)
                    .env("ORCH_BENCH_CHILD", "run")
                    .env("ORCH_BENCH_LIVE", live)
                    .output()
                    .expect("child bench");
                whole.push(t.elapsed());
                assert!(out.status.success(), "{out:?}");
                let text = String::from_utf8_lossy(&out.stdout);
                let v: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                regs.push(Duration::from_secs_f64(v[0] / 1e3));
                runs.push(Duration::from_secs_f64(v[1] / 1e3));
                rss.push(v[2]);
            }
            rss.sort_by(f64::total_cmp);
            let (reg, run, whole) = (median(regs), median(runs), median(whole));
            println!(
                "run              {n}-node layered DAG, no-work executor, durable, {what}, {}, max_parallel {}: registration {:.0} ms, run {:.0} ms ({:.0} tasks/s), whole process {:.0} ms ({:.0} tasks/s; start to exit, the workflow built, registered and run), peak RSS {:.0} MiB (medians of 3 child processes)",
                if std::env::var("ORCH_BENCH_OWNED").as_deref() == Ok("1") {
                    "Workflow::run_owned"
                } else {
                    "Workflow::run"
                },
                env_usize("ORCH_BENCH_PARALLEL", 1),
                ms(reg),
                ms(run),
                n as f64 / run.as_secs_f64(),
                ms(whole),
                n as f64 / whole.as_secs_f64(),
                rss[1]
            );
        }
    }

    if want("live") {
        live_case();
    }

    if want("overhead") {
        let tasks = 2_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut k = 0;
        for (name, chain) in [("chain", true), ("wide", false)] {
            let mut per = Vec::new();
            for _ in 0..5 {
                k += 1;
                let mut wf = Workflow::new(name);
                for i in 0..tasks {
                    wf.node(format!("t{i}"), Task::command(["true"]));
                    if chain && i > 0 {
                        wf.edge(format!("t{}", i - 1), format!("t{i}"));
                    }
                }
                let (_, run) = run_no_work(&mut wf, &dir.path().join(format!("o{k}.db")));
                per.push(run / tasks as u32);
            }
            println!(
                "overhead         {name} of {tasks}, no-work executor, durable: {:.1} µs/task median of 5",
                median(per).as_secs_f64() * 1e6
            );
        }
    }

    // A 10,000-copy map: the shape check of the batch that fills it, and
    // the picture (collapsed into one stacked node).
    let copies = 10_000;
    let mut reg = vec![node("A", "A"), node("B", "B")];
    reg.push(Mutation::AddPromise {
        promise: orch::Promise::shape("A", "B", "M*".parse().unwrap()),
    });
    let mut fill = Vec::new();
    for i in 0..copies {
        let id = format!("M_{i}");
        fill.push(node(&id, "M"));
        fill.push(edge("A", &id));
        fill.push(edge(&id, "B"));
    }
    if want("shape") {
        let mut g = Graph::new();
        g.commit(&reg).unwrap();
        let d = time(5, || {
            let staging = g.stage_all(fill.clone()).unwrap();
            orch::promise::check_batch(&g, &staging, Some("A")).unwrap()
        });
        println!(
            "shape check      {copies} copies of M* filled in one batch (staging + check): {:.1} ms median of 5",
            ms(d)
        );
    }

    if want("curve") {
        promise_curve();
    }

    if want("picture") {
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
            let o =
                orch::picture::outlook::outlook(&state, orch::picture::outlook::Options::default());
            orch::picture::render::svg(&o)
        });
        println!(
            "picture          {copies}-copy map, collapsed (outlook + SVG): {:.1} ms median of 3",
            ms(d)
        );
    }
}

/// 1,000 batches against 100 `shape` promises: a pipeline of stages
/// `A_0 … A_100` with `shape(A_j, A_{j+1}, M*)` between each pair, plus a
/// side chain that every batch grows by 10 nodes. Every 10th batch (sent
/// by `A_j`) also fills region `j` with 10 copies of `M`. Each batch is
/// staged, checked against every promise in force and applied; the graph
/// grows to about 11,000 nodes. Prints the median time per batch in each
/// block of 100 batches.
fn promise_curve() {
    let (stages, batches, blocks) = (100, 1_000, 10);
    let mut reps: Vec<Vec<Duration>> = vec![Vec::new(); blocks];
    for _ in 0..3 {
        let mut reg: Vec<Mutation> = (0..=stages).map(|j| node(format!("A_{j}"), "A")).collect();
        reg.push(node("G", "G"));
        for j in 0..stages {
            reg.push(Mutation::AddPromise {
                promise: orch::Promise::shape(
                    &format!("A_{j}"),
                    &format!("A_{}", j + 1),
                    "M*".parse().unwrap(),
                ),
            });
        }
        let mut g = Graph::new();
        g.commit(&reg).unwrap();
        let mut prev = "G".to_string();
        let mut block = Duration::ZERO;
        for b in 0..batches {
            let mut muts = Vec::new();
            for k in 0..10 {
                let id = format!("X_{b}_{k}");
                muts.push(node(id.clone(), "X"));
                muts.push(edge(&prev, &id));
                prev = id;
            }
            let by = if b % 10 == 0 {
                let j = b / 10;
                let (from, to) = (format!("A_{j}"), format!("A_{}", j + 1));
                for k in 0..10 {
                    let id = format!("M_{j}_{k}");
                    muts.push(node(id.clone(), "M"));
                    muts.push(edge(&from, &id));
                    muts.push(edge(&id, &to));
                }
                from
            } else {
                "G".to_string()
            };
            let t = Instant::now();
            let staging = g.stage_all(muts).expect("valid batch");
            orch::promise::check_batch(&g, &staging, Some(&by)).expect("keeps its promises");
            g.apply_unchecked(staging.mutations());
            block += t.elapsed();
            if (b + 1) % (batches / blocks) == 0 {
                reps[b / (batches / blocks)].push(block / (batches / blocks) as u32);
                block = Duration::ZERO;
            }
        }
    }
    let curve: Vec<String> = reps
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            format!(
                "{}: {:.0}",
                (k + 1) * batches / blocks,
                median(r).as_secs_f64() * 1e6
            )
        })
        .collect();
    println!(
        "promise curve    {batches} batches against {stages} shape promises, µs per batch by block of {} (median of 3): {}",
        batches / blocks,
        curve.join(", ")
    );
}

/// A node running task `task` (the bench never runs it).
fn node(id: impl Into<String>, task: &str) -> Mutation {
    Mutation::add_node(id, Task::command(["true"]).named(task))
}

/// The edge `a -> b`.
fn edge(a: &str, b: &str) -> Mutation {
    Mutation::AddEdge {
        from: a.into(),
        to: b.into(),
        attrs: Attrs::new(),
    }
}
