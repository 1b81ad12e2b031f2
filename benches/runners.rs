//! Runners and the queue (`cargo bench --bench runners`), on SQLite and
//! on PostgreSQL (a throwaway cluster, as the tests start one).
//!
//! 1. `claims`: the store alone. `ORCH_BENCH_ATTEMPTS` (default 20,000)
//!    attempts are queued, then four threads, one per runner (slots 64),
//!    claim them (`max` 1, then 16 a claim) and finish each claim, as a
//!    runner's claim and end do, until the queue is empty: claims/s.
//! 2. `tasks`: real processes over loopback. The release `orch serve`
//!    (`CARGO_BIN_EXE_orch`) on a fresh database, and four `orch runner`
//!    processes (4 slots each) on the same machine; a published workflow
//!    of `ORCH_BENCH_TASKS` (default 400) independent no-op command tasks
//!    (`true`, `max_parallel` 16) is started and waited for through the
//!    API: tasks/s with runners, and the same workflow before any runner
//!    registered (run by the server's local executor). Then a chain of
//!    `ORCH_BENCH_CHAIN` (default 40) `true` tasks, with and without
//!    runners, in the same process: the per-task overhead of a remote
//!    attempt over a local one, as the difference of the per-task times.
//!    Peak RSS (`VmHWM`) of the server and of the runners at the end.
//!
//! 3. `big` (only when asked for: `ORCH_BENCH_ONLY=big`): one run of
//!    `ORCH_BENCH_NODES` (default 100,000, the most one workflow file may
//!    compile to) independent no-op command nodes (`true`), published as
//!    a workflow whose main file includes sub-workflow files of 25,000
//!    tasks (one file parses at most 250,000 values, fewer than 50,000
//!    such tasks; `max_parallel` `ORCH_BENCH_PARALLEL`, default 64), on a fresh server and database with four runners of
//!    `ORCH_BENCH_PARALLEL / 4` slots each, then (`ORCH_BENCH_BIG=local`
//!    or `=remote` for one of them) on another fresh server and database
//!    without runners. Printed: the publish, the start (`POST …/runs`
//!    returns once the registration committed), the run's wall from the
//!    start to its end, tasks/s, and the peak RSS (`VmHWM`) and CPU time
//!    of the server and of each runner; the run must succeed with every
//!    node succeeded.
//!
//! `ORCH_BENCH_ONLY=claims` or `=tasks` runs one part; `ORCH_BENCH_DB=sqlite`
//! or `=postgres` one backend. PostgreSQL: `ORCH_BENCH_PG` is a server's
//! URL without a database (`postgres://postgres@127.0.0.1:5432`); the
//! bench creates a fresh database per part (without it, only SQLite),
//! named `ORCH_BENCH_PG_PREFIX` (default `orch_bench`) `_` the part.
//!
//! For before/after comparisons of `tasks`: `ORCH_BENCH_ORCH` runs
//! another `orch` binary than the one built with the bench;
//! `ORCH_BENCH_CHAINS` (default 1) runs each chain that many times (the
//! means are printed) and prints the server's CPU time per chain task,
//! local and remote; on PostgreSQL `ORCH_BENCH_XACTS=1` also prints the
//! database's transactions per chain task (read 11 s after each chain's
//! runs: PostgreSQL flushes an idle backend's counts within 10 s).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::client::Client;
use orch::exec::resources::Offer;
use orch::exec::AttemptId;
use orch::store::queue::{QueuedAttempt, RunnerSpec};
use orch::store::{PgStore, SqliteStore, Store};
use serde_json::{json, Value};

mod common;
use common::*;

fn wanted(knob: &str, what: &str) -> bool {
    std::env::var(knob)
        .map(|v| v.split(',').any(|w| w.trim() == what))
        .unwrap_or(true)
}

/// Claims per second of four claiming threads over `n` queued attempts.
fn claims(store: Arc<dyn Store>, n: usize, max: usize, tag: &str) -> (f64, f64) {
    let offer = Offer {
        cpu: 4.0,
        memory: None,
        gpu: 0,
        labels: Vec::new(),
    };
    for r in 0..4 {
        let spec = RunnerSpec::new(&format!("{tag}-r{r}"), "bench", offer.clone(), 64, "0");
        store.register_runner(&spec, 600_000).expect("register");
    }
    let t = Instant::now();
    for i in 0..n {
        let id = AttemptId::new(format!("{tag}-run{}", i / 1000), format!("n{i}"), 1);
        store
            .enqueue(&QueuedAttempt::new(id, Default::default(), "{}".into()))
            .expect("enqueue");
    }
    let enqueue = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|r| {
            let store = store.clone();
            let runner = format!("{tag}-r{r}");
            std::thread::spawn(move || {
                let mut got = 0usize;
                loop {
                    let batch = store.claim(&runner, max, 600_000).expect("claim");
                    if batch.is_empty() {
                        return got;
                    }
                    for a in &batch {
                        store.finish_claim(&a.id, &runner).expect("finish");
                    }
                    got += batch.len();
                }
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(total, n, "every attempt claimed exactly once");
    (enqueue, n as f64 / t.elapsed().as_secs_f64())
}

fn claims_on(name: &str, open: &dyn Fn() -> Arc<dyn Store>) {
    let n = env_usize("ORCH_BENCH_ATTEMPTS", 20_000);
    for max in [1, 16] {
        let (enq, rate) = claims(open(), n, max, &format!("m{max}"));
        println!(
            "claims   {name:<10} {n} attempts, 4 claimers, max {max:>2}/claim: {rate:>8.0} claims/s (claim + finish each); enqueue {enq:.0}/s"
        );
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orch(db: &str) -> Command {
    let bin = std::env::var_os("ORCH_BENCH_ORCH")
        .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_orch")));
    let mut c = Command::new(bin);
    c.env("ORCH_DB", db).env_remove("ORCH_LABELS");
    c
}

fn last_line(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn tokens(db: &str, dir: &Path) -> (String, String) {
    let mut add = orch(db)
        .args(["user", "add", "bench", "--role", "admin"])
        .current_dir(dir)
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
    last_line(add.wait_with_output().expect("user add"));
    let admin = last_line(
        orch(db)
            .args(["token", "create", "--user", "bench"])
            .current_dir(dir)
            .output()
            .expect("token"),
    );
    let runner = last_line(
        orch(db)
            .args(["token", "create", "--user", "bench", "--runner"])
            .current_dir(dir)
            .output()
            .expect("token"),
    );
    (admin, runner)
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a first line");
    line.trim().to_string()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `orch serve` on `db`, logging to `dir/server.log`: the process and
/// its address.
fn serve(db: &str, dir: &Path) -> (Proc, String) {
    let mut server = orch(db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("server.log")).expect("log"))
        .spawn()
        .expect("orch serve");
    let base = first_line(&mut server)
        .strip_prefix("listening on ")
        .expect("the server's address")
        .to_string();
    (Proc(server), base)
}

/// Four `orch runner` processes of `slots` slots each, registered with
/// the server at `base`.
fn start_runners(db: &str, base: &str, token: &str, dir: &Path, slots: usize) -> Vec<Proc> {
    (0..4)
        .map(|i| {
            let mut r = orch(db)
                .args(["runner", "--server", base, "--name", &format!("r{i}")])
                .args(["--slots", &slots.to_string(), "--capabilities", "cpus=4"])
                .arg("--dir")
                .arg(dir.join(format!("runner-{i}")))
                .env("ORCH_TOKEN", token)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.join(format!("runner-{i}.log"))).expect("log"))
                .spawn()
                .expect("orch runner");
            let line = first_line(&mut r);
            assert!(line.ends_with("registered"), "{line}");
            Proc(r)
        })
        .collect()
}

/// Publishes `tasks` independent `true` commands (a chain with `chain`)
/// as workflow `name`: the size of the request's body.
fn publish(c: &Client, name: &str, tasks: usize, chain: bool, max_parallel: usize) -> usize {
    let tasks: Vec<_> = (0..tasks)
        .map(|i| {
            if chain && i > 0 {
                json!({"id": format!("t{i}"), "command": "true", "after": [format!("t{}", i - 1)]})
            } else {
                json!({"id": format!("t{i}"), "command": "true"})
            }
        })
        .collect();
    let doc = json!({"name": name, "max_parallel": max_parallel, "tasks": tasks});
    let body = json!({"message": "bench", "files": [{"path": "workflow.json", "content": doc.to_string()}]});
    c.json("PUT", &format!("/api/v1/workflows/{name}"), Some(&body))
        .expect("publish");
    body.to_string().len()
}

/// The most tasks `publish_split` puts in one file: a workflow file's
/// parser takes at most 250,000 values a document (keys count: a `true`
/// task is five, the object and two keys with their strings), so one
/// file holds fewer than 50,000 such tasks; 100,000 take four files of
/// 25,000.
const TASKS_PER_FILE: usize = 25_000;

/// Publishes `tasks` independent `true` commands as workflow `name`: a
/// main file that includes sub-workflow files of at most
/// [`TASKS_PER_FILE`] tasks each (node `pJ.tI`). The size of the
/// request's body.
fn publish_split(c: &Client, name: &str, tasks: usize, max_parallel: usize) -> usize {
    let parts = tasks.div_ceil(TASKS_PER_FILE);
    let mut files = Vec::new();
    let mut main = Vec::new();
    for j in 0..parts {
        let these = (j * TASKS_PER_FILE..tasks.min((j + 1) * TASKS_PER_FILE))
            .map(|i| json!({"id": format!("t{i}"), "command": "true"}))
            .collect::<Vec<_>>();
        let path = format!("part{j}.json");
        let doc = json!({"name": format!("{name}-part{j}"), "tasks": these});
        files.push(json!({"path": path, "content": doc.to_string()}));
        main.push(json!({"id": format!("p{j}"), "workflow": path}));
    }
    let doc = json!({"name": name, "max_parallel": max_parallel, "tasks": main});
    files.push(json!({"path": "workflow.json", "content": doc.to_string()}));
    let body = json!({"message": "bench", "files": files});
    c.json("PUT", &format!("/api/v1/workflows/{name}"), Some(&body))
        .expect("publish");
    body.to_string().len()
}

/// Starts a run of `name`: its id and how long the start took.
fn start(c: &Client, name: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = c
        .post(&format!("/api/v1/workflows/{name}/runs"), &json!({}))
        .expect("execute");
    let run = r["run"].as_str().expect("a run id").to_string();
    (run, t.elapsed())
}

/// Waits for `run` to end, asking for at most `timeout` seconds at a
/// time (`progress` sees each answer before the end): its final status,
/// which must be `succeeded`.
fn wait(c: &Client, run: &str, timeout: u32, mut progress: impl FnMut(&Value)) -> Value {
    loop {
        let w = c
            .get(&format!("/api/v1/runs/{run}/wait?timeout={timeout}"))
            .expect("wait");
        if w["ended"] == true {
            assert_eq!(
                w["status"]["status"], "succeeded",
                "{}",
                w["status"]["reason"]
            );
            return w["status"].clone();
        }
        progress(&w["status"]);
    }
}

/// Starts a run of `name` and waits for it: the wall time.
fn run(c: &Client, name: &str) -> Duration {
    let t = Instant::now();
    let (run, _) = start(c, name);
    wait(c, &run, 60, |_| {});
    t.elapsed()
}

fn tasks_on(name: &str, db: &str, dir: &Path) {
    let n = env_usize("ORCH_BENCH_TASKS", 400);
    let chain = env_usize("ORCH_BENCH_CHAIN", 40);
    let (admin, rtoken) = tokens(db, dir);
    let (server, base) = serve(db, dir);
    let c = Client::new(&base, Some(admin));
    publish(&c, "wide", n, false, 16);
    publish(&c, "chain", chain, true, 16);
    let times = env_usize("ORCH_BENCH_CHAINS", 1).max(1);
    let xacts = db.starts_with("postgres") && std::env::var("ORCH_BENCH_XACTS").is_ok();
    // The chain `times` times: its mean wall time, the server's CPU and
    // the database's transactions (when counted) per task.
    let chains = |c: &Client| {
        let (cpu, tx) = (cpu_s(server.0.id()), xacts.then(|| pg_xacts(db)));
        let total: Duration = (0..times).map(|_| run(c, "chain")).sum();
        let k = (times * chain) as f64;
        let cpu = (cpu_s(server.0.id()) - cpu) * 1e3 / k;
        let tx = tx.map(|before| (pg_xacts(db) - before) as f64 / k);
        (total / times as u32, cpu, tx)
    };
    // Warm up (the server's first run pays for its folders), then local.
    run(&c, "chain");
    let local_wide = run(&c, "wide");
    let (local_chain, local_cpu, local_tx) = chains(&c);
    let runners = start_runners(db, &base, &rtoken, dir, 4);
    run(&c, "chain");
    let remote_wide = run(&c, "wide");
    let (remote_chain, remote_cpu, remote_tx) = chains(&c);
    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e3 / k as f64;
    println!(
        "tasks    {name:<10} {n} independent `true` tasks, max_parallel 16: local {:.0} tasks/s ({:.2} s), 4 runners {:.0} tasks/s ({:.2} s)",
        n as f64 / local_wide.as_secs_f64(),
        local_wide.as_secs_f64(),
        n as f64 / remote_wide.as_secs_f64(),
        remote_wide.as_secs_f64()
    );
    println!(
        "overhead {name:<10} chain of {chain} `true` tasks: local {:.2} ms/task, remote {:.2} ms/task: +{:.2} ms/task ({:.2}x)",
        per(local_chain, chain),
        per(remote_chain, chain),
        per(remote_chain, chain) - per(local_chain, chain),
        remote_chain.as_secs_f64() / local_chain.as_secs_f64()
    );
    if times > 1 || xacts {
        let tx = match (local_tx, remote_tx) {
            (Some(l), Some(r)) => format!("; transactions {l:.2} local, {r:.2} remote a task"),
            _ => String::new(),
        };
        println!(
            "chain    {name:<10} {times} chains each: server CPU {local_cpu:.2} ms/task local, {remote_cpu:.2} remote{tx}"
        );
    }
    let rss: Vec<String> = runners
        .iter()
        .map(|r| format!("{:.0}", peak_rss_mib(r.0.id())))
        .collect();
    println!(
        "rss      {name:<10} peak RSS: server {:.0} MiB, runners {} MiB",
        peak_rss_mib(server.0.id()),
        rss.join("/")
    );
    drop(runners);
    drop(server);
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's name in parentheses: state is field 3, utime
    // and stime fields 14 and 15, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Peak RSS and CPU time of a process: `"P MiB, C s CPU"`.
fn usage(pid: u32) -> String {
    format!("{:.0} MiB, {:.1} s CPU", peak_rss_mib(pid), cpu_s(pid))
}

/// One run of `ORCH_BENCH_NODES` independent `true` commands on a fresh
/// server on `db`, with four runners (`remote`) or without.
fn big_on(name: &str, db: &str, dir: &Path, remote: bool) {
    let n = env_usize("ORCH_BENCH_NODES", 100_000);
    let parallel = env_usize("ORCH_BENCH_PARALLEL", 64).max(4);
    let (admin, rtoken) = tokens(db, dir);
    let (server, base) = serve(db, dir);
    let c = Client::new(&base, Some(admin));
    let t = Instant::now();
    let bytes = publish_split(&c, "big", n, parallel);
    let published = t.elapsed();
    let runners = if remote {
        start_runners(db, &base, &rtoken, dir, parallel / 4)
    } else {
        Vec::new()
    };
    let how = if remote {
        format!("4 runners x {} slots", parallel / 4)
    } else {
        "local (no runners)".to_string()
    };
    let t = Instant::now();
    let (run, started) = start(&c, "big");
    let status = wait(&c, &run, 60, |s| {
        let done = s["nodes"].as_array().map_or(0, |ns| {
            ns.iter().filter(|n| n["state"] == "succeeded").count()
        });
        eprintln!(
            "big      {name:<10} {how}: {done} of {n} succeeded after {:.0} s",
            t.elapsed().as_secs_f64()
        );
    });
    let wall = t.elapsed();
    let nodes = status["nodes"].as_array().expect("the run's nodes");
    let succeeded = nodes.iter().filter(|n| n["state"] == "succeeded").count();
    assert_eq!((nodes.len(), succeeded), (n, n), "every node succeeded");
    println!(
        "big      {name:<10} {n} independent `true` tasks, max_parallel {parallel}, {how}: publish {:.2} s ({:.1} MiB body), start (registration) {:.2} s, start to end {:.1} s: {:.0} tasks/s",
        published.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        started.as_secs_f64(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    let each: Vec<String> = runners.iter().map(|r| usage(r.0.id())).collect();
    println!(
        "big      {name:<10} {how}: server {}{}{}",
        usage(server.0.id()),
        if remote { "; runners " } else { "" },
        each.join(" / ")
    );
    drop(runners);
    drop(server);
}

/// The transactions database `url` committed and rolled back so far, as
/// its statistics say (11 s after its last ones: PostgreSQL flushes an
/// idle backend's counts within 10 s).
fn pg_xacts(url: &str) -> i64 {
    std::thread::sleep(Duration::from_secs(11));
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("the bench's database");
    let n: i64 = c
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .expect("its statistics")
        .get(0);
    n
}

/// A fresh database on the server at `ORCH_BENCH_PG`: its URL.
fn pg_database(base: &str, name: &str) -> String {
    let base = base.trim_end_matches('/');
    let prefix = std::env::var("ORCH_BENCH_PG_PREFIX").unwrap_or_else(|_| "orch_bench".into());
    let name = name.replacen("orch_bench", &prefix, 1);
    let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls)
        .expect("ORCH_BENCH_PG answers");
    // Two statements: neither may run inside a transaction block.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .expect("the old database dropped");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("a fresh database");
    format!("{base}/{name}")
}

fn main() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let pg = std::env::var("ORCH_BENCH_PG")
        .ok()
        .filter(|_| wanted("ORCH_BENCH_DB", "postgres"));
    if pg.is_none() {
        println!("(no ORCH_BENCH_PG: PostgreSQL left out)");
    }
    if wanted("ORCH_BENCH_ONLY", "claims") {
        if wanted("ORCH_BENCH_DB", "sqlite") {
            let path = tmp.path().join("claims.db");
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("sqlite"));
            claims_on("sqlite", &|| store.clone());
        }
        if let Some(base) = &pg {
            let url = pg_database(base, "orch_bench_claims");
            let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).expect("postgres"));
            claims_on("postgres", &|| store.clone());
        }
    }
    if wanted("ORCH_BENCH_ONLY", "tasks") {
        if wanted("ORCH_BENCH_DB", "sqlite") {
            let dir = tmp.path().join("sqlite");
            std::fs::create_dir_all(&dir).expect("folder");
            let db = dir.join("orch.db").display().to_string();
            tasks_on("sqlite", &db, &dir);
        }
        if let Some(base) = &pg {
            let dir = tmp.path().join("postgres");
            std::fs::create_dir_all(&dir).expect("folder");
            let url = pg_database(base, "orch_bench_tasks");
            tasks_on("postgres", &url, &dir);
        }
    }
    // The 100,000-node run takes minutes: only when asked for.
    let big =
        std::env::var("ORCH_BENCH_ONLY").is_ok_and(|v| v.split(',').any(|w| w.trim() == "big"));
    for remote in [true, false] {
        if !big || !wanted("ORCH_BENCH_BIG", if remote { "remote" } else { "local" }) {
            continue;
        }
        let part = if remote { "big" } else { "big_local" };
        if wanted("ORCH_BENCH_DB", "sqlite") {
            let dir = tmp.path().join(format!("sqlite-{part}"));
            std::fs::create_dir_all(&dir).expect("folder");
            let db = dir.join("orch.db").display().to_string();
            big_on("sqlite", &db, &dir, remote);
        }
        if let Some(base) = &pg {
            let dir = tmp.path().join(format!("postgres-{part}"));
            std::fs::create_dir_all(&dir).expect("folder");
            let url = pg_database(base, &format!("orch_bench_{part}"));
            big_on("postgres", &url, &dir, remote);
        }
    }
}
