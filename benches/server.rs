//! `orch serve` under load from a second process, over loopback (`cargo
//! bench --bench server`).
//!
//! 1. `seed`: a database gets `ORCH_BENCH_RUNS` (default 10,000) ended
//!    runs, started in this process by the library (one [`Engine`], the
//!    runs' attempts finished at once by the benchmark-only [`Scripted`]
//!    executor, so that seeding takes seconds and not 30,000 `fork`s):
//!    five workflows of 3–5 command nodes each, about 75% `succeeded`,
//!    17% `failed` (one node exits 1) and 8% `cancelled` (an input node
//!    that waits, then a cancel), so the status filters select something
//!    and something rare. Their history is real: registration, node
//!    states, attempts, ends, written by the engine as any run's.
//! 2. `orch serve --listen 127.0.0.1:0` runs as a separate process: the
//!    release binary Cargo builds for this bench (`CARGO_BIN_EXE_orch`,
//!    `target/release/orch`), `RUST_LOG=warn`; an admin token is made with
//!    `orch user add` and `orch token create` as a person would.
//! 3. Calls from this process, `ORCH_BENCH_CLIENTS` (default 4) threads,
//!    each with its own keep-alive connection ([`orch::client::Client`],
//!    ureq): the server's `status`, a run's status (random seeded runs),
//!    the newest page of runs, a page filtered by workflow and status
//!    (common and rare status), and a page deep in the list (`before` the
//!    1,000th oldest run). For each: saturation (closed loop, every thread
//!    calls back to back for `ORCH_BENCH_SECS`, default 3 s): requests/s,
//!    p50, p99 and the server's CPU per request (`/proc/<pid>/stat`); then
//!    a fixed rate of `ORCH_BENCH_RATE` (default 500) requests/s for
//!    `ORCH_BENCH_RATE_SECS` (default 4 s), open loop: every request has a
//!    scheduled time, its latency counts from that time (a late send is
//!    counted as waiting), spread over 8 pacing threads. Last, all six
//!    calls mixed at that rate.
//! 4. Runs started through the API: a one-command workflow (`true`) is
//!    published, and `ORCH_BENCH_API_RUNS` (default 100) runs are started
//!    with `POST /api/v1/workflows/{name}/runs` and waited for with
//!    `GET /runs/{run}/wait`, one at a time, then as many again by the
//!    client threads at once; the same file's runs are started in this
//!    process by `Engine::start` (the server's options: a folder per run,
//!    no live picture, 4 slots) over a copy of the seeded database, the
//!    same ways. Printed: runs/s, and the API's per-run overhead and
//!    ratio against the library (the floor).
//!
//! Loopback only; every loop is bounded in count and in time. With
//! `ORCH_BENCH_KEEP=1` the database folder is kept (its path is printed),
//! e.g. for `EXPLAIN QUERY PLAN`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::client::{encode, Client};
use orch::exec::{AttemptEnd, AttemptLink, AttemptSpec, Executor, LaunchError, SharedExecutor};
use orch::model::Exec;
use orch::store::Signal;
use orch::{Engine, RunStatus, Task, Workflow};
use serde_json::{json, Map};

mod common;
use common::*;

/// BENCHMARK ONLY: every attempt ends at once without running anything,
/// exit code 1 for a command `false`, 0 otherwise; plugged in through the
/// public `RunOptions::executor`. Only the seed uses it.
struct Scripted;

impl Executor for Scripted {
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        let code = match &spec.task.exec {
            Exec::Command { argv } if argv.first().map(String::as_str) == Some("false") => 1,
            _ => 0,
        };
        link.finish(AttemptEnd::exited(code));
        Ok(None)
    }
}

const WORKFLOWS: [&str; 5] = ["ingest", "report", "train", "backup", "deploy"];

/// Run `i` of the seed: its workflow and how it ends.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Succeed,
    Fail,
    Cancel,
}

fn fate(i: usize) -> Fate {
    // A fixed mix, spread evenly: 75 / 17 / 8 of every 100.
    match (i * 37) % 100 {
        0..=74 => Fate::Succeed,
        75..=91 => Fate::Fail,
        _ => Fate::Cancel,
    }
}

/// A workflow of the seed: `extract -> (transform, validate…) -> load`,
/// 3 to 5 nodes, with `validate` failing or `load` an input that waits.
fn seed_workflow(w: usize, fate: Fate) -> Workflow {
    let mut wf = Workflow::new(WORKFLOWS[w]);
    wf.node("extract", Task::command(["true"]));
    let middle: Vec<String> = (0..1 + w % 3)
        .map(|k| {
            if k == 0 {
                "validate".to_string()
            } else {
                format!("transform{k}")
            }
        })
        .collect();
    for m in &middle {
        let argv = if fate == Fate::Fail && m == "validate" {
            "false"
        } else {
            "true"
        };
        wf.node(m.as_str(), Task::command([argv]));
        wf.edge("extract", m.as_str());
    }
    if fate == Fate::Cancel {
        wf.node("load", Task::input());
    } else {
        wf.node("load", Task::command(["true"]));
    }
    for m in &middle {
        wf.edge(m.as_str(), "load");
    }
    wf.live_picture(false);
    wf
}

/// Seeds `db` with `n` ended runs; returns their ids, oldest first, and
/// how long it took.
fn seed(db: &Path, n: usize) -> (Vec<String>, Duration, [usize; 3]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = Instant::now();
    let (ids, counts) = rt.block_on(async {
        let engine = Engine::open(db).expect("engine");
        let exec = SharedExecutor(Arc::new(Scripted));
        let defs: Vec<Vec<_>> = (0..WORKFLOWS.len())
            .map(|w| {
                [Fate::Succeed, Fate::Fail, Fate::Cancel]
                    .into_iter()
                    .map(|f| {
                        let wf = seed_workflow(w, f);
                        let mut opts = wf.options().clone();
                        opts.executor = Some(exec.clone());
                        (wf.definition().clone(), opts)
                    })
                    .collect()
            })
            .collect();
        let window = Arc::new(tokio::sync::Semaphore::new(64));
        let mut ids = Vec::with_capacity(n);
        let mut waits = Vec::with_capacity(n);
        for i in 0..n {
            let f = fate(i);
            let (def, opts) = &defs[i % WORKFLOWS.len()][f as usize];
            let permit = window.clone().acquire_owned().await.expect("open");
            let h = engine.start(def, opts).await.expect("start");
            ids.push(h.id().to_string());
            if f == Fate::Cancel {
                engine.signal(h.id(), Signal::Cancel).await.expect("cancel");
            }
            waits.push(tokio::spawn(async move {
                let out = h.wait().await.expect("run");
                drop(permit);
                out.status
            }));
        }
        let mut counts = [0usize; 3];
        for (i, w) in waits.into_iter().enumerate() {
            let status = w.await.expect("wait task");
            let want = match fate(i) {
                Fate::Succeed => RunStatus::Succeeded,
                Fate::Fail => RunStatus::Failed,
                Fate::Cancel => RunStatus::Cancelled,
            };
            assert_eq!(status, want, "run {i}");
            counts[fate(i) as usize] += 1;
        }
        (ids, counts)
    });
    drop(rt);
    (ids, t.elapsed(), counts)
}

/// The server child process; killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn orch_cmd(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
    c.env("ORCH_DB", db);
    c
}

/// `orch user add bench --role admin`, then `orch token create`.
fn admin_token(db: &Path) -> String {
    let mut add = orch_cmd(db)
        .args(["user", "add", "bench", "--role", "admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orch user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"bench-secret-password\n")
        .expect("password");
    let out = add.wait_with_output().expect("orch user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = orch_cmd(db)
        .args(["token", "create", "--user", "bench", "--name", "bench"])
        .output()
        .expect("orch token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text.lines().last().unwrap_or("").trim().to_string();
    assert!(token.starts_with("orch_"), "{text}");
    token
}

/// `orch serve --listen 127.0.0.1:0`, its address read from its stdout.
fn serve(db: &Path, log: &Path) -> Served {
    let mut child = orch_cmd(db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .current_dir(db.parent().expect("db folder"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("orch serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server's first line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "the server printed {line:?}; log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    Served { child, base }
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's `)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf only reads a constant.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks: u64 = f.iter().sum();
    Duration::from_micros(ticks * 1_000_000 / tck)
}

/// The `q` quantile (0..=1) of sorted durations, in ms.
fn q_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One kind of call: a name and the paths it cycles through.
struct Call {
    name: &'static str,
    paths: Vec<String>,
}

/// Calls `path` and checks the answer is 200.
fn get(c: &Client, path: &str) {
    let r = c.call("GET", path, None).expect("the server answers");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
}

/// Closed loop: `threads` threads call back to back for `secs` (at most
/// `cap` calls each). Returns (calls/s, sorted latencies).
fn saturate(clients: &[Client], call: &Call, secs: f64, cap: usize) -> (f64, Vec<Duration>) {
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(k, c)| {
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = k * 7919;
                    while Instant::now() < end && lat.len() < cap {
                        let p = &call.paths[i % call.paths.len()];
                        i += 1;
                        let t = Instant::now();
                        get(c, p);
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    let took = t0.elapsed().as_secs_f64();
    lat.sort();
    (lat.len() as f64 / took, lat)
}

/// Open loop at `rate` calls/s for `secs`: call `i` is due at
/// `t0 + i / rate`, sent by pacer `i % pacers`; its latency counts from
/// when it was due. Returns (achieved calls/s, sorted latencies).
fn paced(clients: &[Client], calls: &[&Call], rate: f64, secs: f64) -> (f64, Vec<Duration>) {
    let total = (rate * secs).round() as usize;
    let pacers = clients.len();
    let t0 = Instant::now() + Duration::from_millis(20);
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(k, c)| {
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = k;
                    while i < total {
                        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let call = calls[i % calls.len()];
                        let p = &call.paths[(i / calls.len()) % call.paths.len()];
                        get(c, p);
                        lat.push(due.elapsed());
                        i += pacers;
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("pacer thread"))
            .collect()
    });
    let took = (Instant::now() - t0).as_secs_f64();
    lat.sort();
    (lat.len() as f64 / took, lat)
}

const ONE: &str = "name: bench-one\ntasks:\n  - id: one\n    command: \"true\"\n";

/// Starts `k` runs through the API, `threads` at a time (each thread one
/// run after the other: start, wait). Returns the time taken.
fn api_runs(clients: &[Client], k: usize) -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        for (j, c) in clients.iter().enumerate() {
            s.spawn(move || {
                let mut i = j;
                while i < k {
                    let started = c
                        .post("/api/v1/workflows/bench-one/runs", &json!({}))
                        .expect("start");
                    let run = started["run"].as_str().expect("run id").to_string();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        let w = c
                            .get(&format!("/api/v1/runs/{}/wait?timeout=60", encode(&run)))
                            .expect("wait");
                        if w["ended"] == true {
                            assert_eq!(w["status"]["status"], "succeeded", "{w}");
                            break;
                        }
                        assert!(Instant::now() < deadline, "run {run} did not end");
                    }
                    i += clients.len();
                }
            });
        }
    });
    t.elapsed()
}

/// The same runs by the library: `tasks` tokio tasks, each one run after
/// the other (`Engine::start`, then its handle's `wait`).
fn lib_runs(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    file: &Path,
    k: usize,
    tasks: usize,
) -> Duration {
    let compiled = orch::file::load(file, &Map::new()).expect("the workflow file loads");
    let mut opts = compiled.options();
    opts.per_run_dir = true;
    opts.live_picture = false;
    if compiled.max_parallel.is_none() {
        opts.max_parallel = 4;
    }
    let def = Arc::new(compiled.definition);
    let opts = Arc::new(opts);
    rt.block_on(async {
        let t = Instant::now();
        let mut hs = Vec::new();
        for j in 0..tasks {
            let (engine, def, opts) = (engine.clone(), def.clone(), opts.clone());
            hs.push(tokio::spawn(async move {
                let mut i = j;
                while i < k {
                    let h = engine.start(&def, &opts).await.expect("start");
                    let out = h.wait().await.expect("run");
                    assert_eq!(out.status, RunStatus::Succeeded, "{out:?}");
                    i += tasks;
                }
            }));
        }
        for h in hs {
            h.await.expect("task");
        }
        t.elapsed()
    })
}

fn copy_db(from: &Path, to: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{ext}", from.display()));
        if f.exists() {
            std::fs::copy(&f, format!("{}{ext}", to.display())).expect("copy the database");
        }
    }
}

/// The store calls behind each call, timed alone in this process on the
/// seeded database (no HTTP, no server): where a handler's time goes.
fn store_calls(db: &Path, ids: &[String]) {
    use orch::store::RunFilter;
    use orch::Store;
    let store = orch::SqliteStore::open_existing(db).expect("store");
    let run = &ids[ids.len() / 2];
    let wf = store.export(run).expect("export").workflow;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let reps = 50;
    let counts = time(reps, || store.run_counts().expect("counts"));
    let resolve = time(reps, || store.resolve_run(run).expect("resolve"));
    let export = time(reps, || store.export(run).expect("export"));
    let replay = time(reps, || store.replay(run, None).expect("replay"));
    let tasks = time(reps, || {
        store
            .task_durations(
                &wf,
                orch::estimate::SAMPLE_RUNS,
                orch::estimate::SAMPLES_PER_TASK,
            )
            .expect("task durations")
    });
    let runs = time(reps, || {
        store
            .run_durations(&wf, orch::estimate::RUN_SAMPLES)
            .expect("run durations")
    });
    let now = orch::time::unix_millis() as i64;
    let estimate = time(reps, || {
        orch::estimate::for_run(&store, run, now).expect("estimate")
    });
    let store = &store;
    let page = |f: RunFilter| time(reps, move || store.runs_page(&f).expect("page"));
    let newest = page(RunFilter::newest(51));
    let mut f = RunFilter::newest(51);
    f.workflow = Some(WORKFLOWS[0].into());
    f.status = Some(RunStatus::Succeeded);
    let common = page(f.clone());
    f.status = Some(RunStatus::Cancelled);
    let rare = page(f);
    let mut f = RunFilter::newest(51);
    f.before = Some(ids[1_000].clone());
    let deep = page(f);
    println!(
        "store calls      alone, medians of {reps}, µs: run_counts {:.0} (GET /status) | resolve_run {:.0} + export {:.0} + estimate::for_run {:.0} (= resolve {:.0} + replay {:.0} + task_durations {:.0} + run_durations {:.0}) (GET /runs/{{run}}) | runs_page newest {:.0}, workflow+succeeded {:.0}, workflow+cancelled {:.0}, before the 1,000th oldest {:.0}",
        us(counts), us(resolve), us(export), us(estimate), us(resolve), us(replay), us(tasks), us(runs),
        us(newest), us(common), us(rare), us(deep),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env_usize("ORCH_BENCH_RUNS", 10_000).max(2_000);
    let nclients = env_usize("ORCH_BENCH_CLIENTS", 4).max(1);
    let secs = env_usize("ORCH_BENCH_SECS", 3).max(1) as f64;
    let rate = env_usize("ORCH_BENCH_RATE", 500).max(1) as f64;
    let rate_secs = env_usize("ORCH_BENCH_RATE_SECS", 4).max(1) as f64;
    let k = env_usize("ORCH_BENCH_API_RUNS", 100).max(4);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("server");
    let lib_dir = tmp.path().join("library");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::create_dir_all(&lib_dir).expect("dir");
    let db = dir.join("orch.db");

    // 1. seed
    let (ids, seeded, counts) = seed(&db, n);
    let lib_db = lib_dir.join("orch.db");
    copy_db(&db, &lib_db);
    let db_mib = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "seed             {n} runs ({} succeeded, {} failed, {} cancelled; 5 workflows of 3-5 nodes) by one Engine in {:.1} s ({:.0} runs/s); database {db_mib:.1} MiB",
        counts[0],
        counts[1],
        counts[2],
        seeded.as_secs_f64(),
        n as f64 / seeded.as_secs_f64(),
    );

    store_calls(&db, &ids);

    // 2. the server, a separate process
    let token = admin_token(&db);
    let t = Instant::now();
    let server = serve(&db, &tmp.path().join("server.log"));
    println!(
        "server           {} (release binary {}), listening after {:.0} ms",
        server.base,
        env!("CARGO_BIN_EXE_orch"),
        t.elapsed().as_secs_f64() * 1e3
    );
    let pid = server.child.id();
    let clients: Vec<Client> = (0..nclients)
        .map(|_| Client::new(&server.base, Some(token.clone())))
        .collect();
    let pacers: Vec<Client> = (0..8)
        .map(|_| Client::new(&server.base, Some(token.clone())))
        .collect();

    // 3. calls
    let some: Vec<String> = (0..200)
        .map(|j| ids[(j * 7_919 + 13) % ids.len()].clone())
        .collect();
    let deep = &ids[1_000];
    let calls = [
        Call {
            name: "GET /status",
            paths: vec!["/api/v1/status".into()],
        },
        Call {
            name: "GET /runs/{run}",
            paths: some.iter().map(|r| format!("/api/v1/runs/{r}")).collect(),
        },
        Call {
            name: "GET /runs?limit=50",
            paths: vec!["/api/v1/runs?limit=50".into()],
        },
        Call {
            name: "  &workflow&status=succeeded",
            paths: WORKFLOWS
                .iter()
                .map(|w| format!("/api/v1/runs?status=succeeded&workflow={w}&limit=50"))
                .collect(),
        },
        Call {
            name: "  &workflow&status=cancelled",
            paths: WORKFLOWS
                .iter()
                .map(|w| format!("/api/v1/runs?status=cancelled&workflow={w}&limit=50"))
                .collect(),
        },
        Call {
            name: "  &before (page 180 of 200)",
            paths: vec![format!("/api/v1/runs?limit=50&before={deep}")],
        },
    ];
    // What each call returns, once (a check that the filters filter).
    let page = clients[0].get(&calls[4].paths[0]).expect("filtered page");
    let rare = page["runs"].as_array().map_or(0, Vec::len);
    assert!(rare > 0, "{page}");
    let deep_page = clients[0].get(&calls[5].paths[0]).expect("deep page");
    assert_eq!(deep_page["runs"].as_array().map_or(0, Vec::len), 50);

    println!(
        "\n{:<30} | {:>9} {:>8} {:>8} {:>10} | {:>5} {:>8} {:>8} {:>8}",
        "call (10k runs stored)",
        "sat req/s",
        "p50 ms",
        "p99 ms",
        "srv CPU/req",
        "rate",
        "p50 ms",
        "p99 ms",
        "max ms",
    );
    let mut worst_p99 = 0.0f64;
    for call in &calls {
        // Warm-up: connections, caches.
        saturate(&clients, call, 0.3, 500);
        let cpu0 = cpu_of(pid);
        let (rps, lat) = saturate(&clients, call, secs, 200_000);
        let cpu = cpu_of(pid) - cpu0;
        let (got, plat) = paced(&pacers, &[call], rate, rate_secs);
        let p99 = q_ms(&plat, 0.99);
        worst_p99 = worst_p99.max(p99);
        println!(
            "{:<30} | {:>9.0} {:>8.2} {:>8.2} {:>8.0}µs | {:>5.0} {:>8.2} {:>8.2} {:>8.1}",
            call.name,
            rps,
            q_ms(&lat, 0.5),
            q_ms(&lat, 0.99),
            cpu.as_secs_f64() * 1e6 / lat.len() as f64,
            got,
            q_ms(&plat, 0.5),
            p99,
            q_ms(&plat, 1.0),
        );
    }
    let all: Vec<&Call> = calls.iter().collect();
    let (got, plat) = paced(&pacers, &all, rate, rate_secs);
    let mixed_p99 = q_ms(&plat, 0.99);
    worst_p99 = worst_p99.max(mixed_p99);
    println!(
        "{:<30} | {:>9} {:>8} {:>8} {:>10} | {:>5.0} {:>8.2} {:>8.2} {:>8.1}",
        "the six mixed",
        "",
        "",
        "",
        "",
        got,
        q_ms(&plat, 0.5),
        mixed_p99,
        q_ms(&plat, 1.0),
    );
    println!(
        "(saturation: {nclients} client threads back to back, {secs:.0} s per call; rate: {rate:.0} req/s open loop, {rate_secs:.0} s, latency from the scheduled send, 8 pacing threads)"
    );
    println!(
        "target p99 < 10 ms at {rate:.0} req/s on status and run lists: {} (worst p99 {worst_p99:.2} ms)",
        if worst_p99 < 10.0 { "met" } else { "missed" }
    );

    // 4. runs started through the API, against the library.
    let wf_file = lib_dir.join("bench-one").join("workflow.yaml");
    std::fs::create_dir_all(wf_file.parent().expect("folder")).expect("dir");
    std::fs::write(&wf_file, ONE).expect("workflow file");
    clients[0]
        .json(
            "PUT",
            "/api/v1/workflows/bench-one",
            Some(
                &json!({"message": "bench", "files": [{"path": "workflow.yaml", "content": ONE}]}),
            ),
        )
        .expect("publish");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let engine = rt
        .block_on(async { Engine::open(&lib_db) })
        .expect("engine");
    // Warm-up of both: a few runs each.
    api_runs(&clients[..1], 3);
    lib_runs(&rt, &engine, &wf_file, 3, 1);
    let api_seq = api_runs(&clients[..1], k);
    let lib_seq = lib_runs(&rt, &engine, &wf_file, k, 1);
    let api_par = api_runs(&clients, k);
    let lib_par = lib_runs(&rt, &engine, &wf_file, k, nclients);
    let per = |d: Duration| d.as_secs_f64() * 1e3 / k as f64;
    println!(
        "\nruns of a one-command workflow (`true`), {k} each | API (POST /workflows/bench-one/runs + /wait) | library (Engine::start + wait) | ratio | API overhead"
    );
    for (what, api, lib) in [
        ("one at a time", api_seq, lib_seq),
        ("concurrently", api_par, lib_par),
    ] {
        println!(
            "{what:<14} {:>4} at once | {:>6.1} runs/s, {:>6.2} ms/run | {:>6.1} runs/s, {:>6.2} ms/run | {:>5.2} | {:+.2} ms/run",
            if what == "one at a time" { 1 } else { nclients },
            k as f64 / api.as_secs_f64(),
            per(api),
            k as f64 / lib.as_secs_f64(),
            per(lib),
            api.as_secs_f64() / lib.as_secs_f64(),
            per(api) - per(lib),
        );
    }
    drop(engine);
    drop(rt);
    drop(server);
    if std::env::var("ORCH_BENCH_KEEP").as_deref() == Ok("1") {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
}
