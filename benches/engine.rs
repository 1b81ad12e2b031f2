//! One [`Engine`] holding many runs that wait for input (`cargo bench
//! --bench engine`). Each run is the same two-node workflow: an input node
//! `a` and, after it, a second input node `b`. Nothing ever starts a
//! process, so the numbers are the engine's (registration, the waiting
//! runs' memory and threads, a signal's way to its run's commit, the ends
//! of the runs) and not `fork`/`exec`: with `b` a command `true`, ending
//! 10,000 runs would measure 10,000 process starts (about 1 ms each here,
//! `benches/native.rs`), and attempts in flight would share the cores with
//! the signals being timed. `b` also makes every run take a second node
//! from `pending` to `waiting` after a signal, and the `finish` case
//! exercises a value that arrives before its node waits. Live picture off
//! (`wf.live_picture(false)`): one SVG file per run is not what an engine
//! holding 10,000 runs is about, and `benches/kernel.rs` measures it.
//!
//! The measurement runs in a child process (this bench re-executed, as
//! the kernel bench's `run` case does), once per repetition, so that its
//! memory is the engine's alone. In the child, one engine over a fresh
//! SQLite database and a multi-thread tokio runtime (one worker per core):
//!
//! 1. `start`: the runs are started one after the other (`engine.start`
//!    returns once the registration committed); then the bench waits until
//!    every `a` waits (an observer counts the commits). `VmRSS`, `Threads`
//!    and open file descriptors before and after;
//! 2. `idle`: CPU time of the process while they all wait, and the engine's
//!    two periodic store calls timed directly (the stored-signal poll, every
//!    200 ms; the lease renewal of every run, every 10 s), as well as two
//!    store calls every `engine.signal` makes (`resolve_run`, `export`);
//! 3. `latency`: signals to `a` of distinct random runs, one at a time:
//!    from `engine.signal` to the observer seeing the committed output;
//! 4. `burst`: as many signals again, sent back to back, until the last
//!    output is committed;
//! 5. `finish`: `a` to every other run, then `b` to every run, until every
//!    run ended; then the renewal and `resolve_run` again, with every run
//!    ended.
//!
//! The parent runs the child `ORCH_BENCH_REPS` times (default 3) at
//! `ORCH_BENCH_RUNS` runs (default 10,000) and as often at a tenth of it,
//! and prints medians; the two sizes separate the memory every run costs
//! from what the engine costs once, and show what grows with the number of
//! runs. `ORCH_BENCH_SIGNALS` (default 1,000, at most a third of the runs)
//! sets the number of signals of the latency and burst cases,
//! `ORCH_BENCH_IDLE_MS` (default 2,000) the idle window.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::engine::Observer;
use orch::store::{Lease, Signal};
use orch::{Engine, Event, EventKind, NodeState, RunState, RunStatus, Task, Workflow};
use serde_json::json;
use tokio::sync::mpsc;

mod common;
use common::*;

/// Sees the commits of every run: counts the `a` nodes that wait, and
/// timestamps the committed outputs of `a` while `timing`.
struct Probe {
    waiting: AtomicUsize,
    timing: AtomicBool,
    outputs: mpsc::UnboundedSender<(String, Instant)>,
}

impl Observer for Probe {
    fn committed(&self, state: &RunState, events: &[Event]) {
        for e in events {
            match &e.kind {
                EventKind::NodeState {
                    node,
                    state: NodeState::Waiting,
                } if node == "a" => {
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                }
                EventKind::Output { node, .. }
                    if node == "a" && self.timing.load(Ordering::Relaxed) =>
                {
                    let _ = self.outputs.send((state.run.clone(), Instant::now()));
                }
                _ => {}
            }
        }
    }
}

/// A field of `/proc/self/status` in kB (or a count), e.g. `VmRSS`.
fn status_field(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `q` quantile (0..=1) of some durations, in µs.
fn quantile_us(xs: &mut [Duration], q: f64) -> f64 {
    xs.sort();
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    xs[i].as_secs_f64() * 1e6
}

/// Waits for the committed output of `a` in each of `runs`, in any order;
/// returns when each was seen.
async fn outputs_of(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    mut runs: usize,
) -> Vec<Instant> {
    let mut seen = Vec::with_capacity(runs);
    while runs > 0 {
        let (_, at) = rx.recv().await.expect("the probe lives");
        seen.push(at);
        runs -= 1;
    }
    seen
}

/// The child: one engine, `n` waiting runs; prints `key value` lines.
fn child(n: usize) {
    let signals = env_usize("ORCH_BENCH_SIGNALS", 1_000).min(n / 3).max(1);
    let idle = Duration::from_millis(env_usize("ORCH_BENCH_IDLE_MS", 2_000) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut out: Vec<(&str, f64)> = Vec::new();
    rt.block_on(async {
        let engine = Engine::open(dir.path().join("orch.db")).expect("engine");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe {
            waiting: AtomicUsize::new(0),
            timing: AtomicBool::new(true),
            outputs: tx,
        });
        engine.observe(probe.clone());
        let mut wf = Workflow::new("wait");
        wf.node("a", Task::input());
        wf.node("b", Task::input());
        wf.edge("a", "b");
        wf.live_picture(false);

        // 1. start
        out.push(("rss_before_kib", status_field("VmRSS")));
        out.push(("threads_before", status_field("Threads")));
        out.push(("fds_before", open_fds() as f64));
        let mut handles = Vec::with_capacity(n);
        let mut max_threads = 0.0f64;
        let mut collisions = 0;
        let tenth = (n / 10).max(1);
        let mut tenths = Vec::new();
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let mut lap = t0;
        for i in 0..n {
            // A new run id has 24 random bits per second of its start
            // time (`orch::time::new_run_id`): at this rate two runs
            // sometimes get the same one, and the second registration
            // fails on the events' primary key. Counted, and started again.
            let h = loop {
                match engine.start(wf.definition(), wf.options()).await {
                    Ok(h) => break h,
                    Err(e) if format!("{e:?}").contains("UNIQUE constraint failed: events") => {
                        collisions += 1;
                    }
                    Err(e) => panic!("start: {e:?}"),
                }
            };
            handles.push(h);
            if (i + 1) % tenth == 0 {
                tenths.push(lap.elapsed());
                lap = Instant::now();
                max_threads = max_threads.max(status_field("Threads"));
            }
        }
        let started = t0.elapsed();
        while probe.waiting.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waiting = t0.elapsed();
        out.push(("run_id_collisions", collisions as f64));
        out.push(("start_cpu_ms", (cpu_time() - cpu0).as_secs_f64() * 1e3));
        let per = |d: Duration| d.as_secs_f64() * 1e6 / tenth as f64;
        out.push(("start_ms", started.as_secs_f64() * 1e3));
        out.push(("all_waiting_ms", waiting.as_secs_f64() * 1e3));
        out.push(("start_first_tenth_us", per(tenths[0])));
        out.push(("start_last_tenth_us", per(*tenths.last().unwrap())));
        out.push(("threads_during_start_max", max_threads));
        out.push(("rss_waiting_kib", status_field("VmRSS")));
        out.push(("threads_waiting", status_field("Threads")));
        out.push(("fds_waiting", open_fds() as f64));
        out.push(("hosted", engine.hosted().len() as f64));

        // 2. idle
        let cpu = cpu_time();
        let t = Instant::now();
        tokio::time::sleep(idle).await;
        let cpu = cpu_time() - cpu;
        out.push((
            "idle_cpu_pct",
            cpu.as_secs_f64() / t.elapsed().as_secs_f64() * 100.0,
        ));
        let store = engine.store();
        let poll = time(5, || store.pending().expect("pending"));
        out.push(("poll_us", poll.as_secs_f64() * 1e6));
        let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
        let leases: Vec<Lease> = ids
            .iter()
            .map(|r| Lease::new(r.as_str(), engine.owner().id.as_str(), 1))
            .collect();
        let renew = time(3, || {
            let lost = store.renew(engine.owner(), &leases).expect("renew");
            assert!(lost.is_empty(), "{lost:?}");
        });
        out.push(("renew_ms", renew.as_secs_f64() * 1e3));
        // Two store calls of every `engine.signal`, timed alone: finding
        // the run by id (or prefix) and reading the run to check the input
        // node.
        let some = &ids[n / 2];
        let resolve = time(200, || store.resolve_run(some).expect("resolve"));
        out.push(("resolve_us", resolve.as_secs_f64() * 1e6));
        let export = time(200, || store.export(some).expect("export"));
        out.push(("export_us", export.as_secs_f64() * 1e6));

        // 3. latency, 4. burst: `a` of distinct random runs.
        let mut order: Vec<usize> = (0..n).collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..n).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let input = |v: usize| Signal::Input {
            node: "a".into(),
            value: json!(v),
        };
        let (mut lat, mut call) = (Vec::new(), Vec::new());
        for (k, &r) in order[..signals].iter().enumerate() {
            let t = Instant::now();
            engine.signal(&ids[r], input(k)).await.expect("signal");
            call.push(t.elapsed());
            let (run, at) = rx.recv().await.expect("the probe lives");
            assert_eq!(run, ids[r]);
            lat.push(at - t);
        }
        let slow = lat
            .iter()
            .filter(|d| **d > Duration::from_millis(2))
            .count();
        out.push(("signal_slow_pct", slow as f64 * 100.0 / lat.len() as f64));
        out.push(("signal_p50_us", quantile_us(&mut lat, 0.5)));
        out.push(("signal_p99_us", quantile_us(&mut lat, 0.99)));
        out.push(("signal_max_us", quantile_us(&mut lat, 1.0)));
        out.push(("signal_call_p50_us", quantile_us(&mut call, 0.5)));
        out.push(("signal_call_p99_us", quantile_us(&mut call, 0.99)));

        let t = Instant::now();
        for (k, &r) in order[signals..2 * signals].iter().enumerate() {
            engine.signal(&ids[r], input(k)).await.expect("signal");
        }
        let sent = t.elapsed();
        let last = outputs_of(&mut rx, signals)
            .await
            .into_iter()
            .max()
            .unwrap();
        out.push(("burst_send_ms", sent.as_secs_f64() * 1e3));
        out.push(("burst_ms", (last - t).as_secs_f64() * 1e3));

        // 5. finish: `a` to the others, `b` to all.
        probe.timing.store(false, Ordering::Relaxed);
        let t = Instant::now();
        for &r in &order[2 * signals..] {
            engine.signal(&ids[r], input(r)).await.expect("signal");
        }
        for id in &ids {
            let b = Signal::Input {
                node: "b".into(),
                value: json!(null),
            };
            engine.signal(id, b).await.expect("signal");
        }
        let sent = t.elapsed();
        for h in handles {
            let outcome = h.wait().await.expect("run");
            assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}");
        }
        out.push(("finish_signals", (2 * n - 2 * signals) as f64));
        out.push(("finish_send_ms", sent.as_secs_f64() * 1e3));
        out.push(("finish_ms", t.elapsed().as_secs_f64() * 1e3));
        // What stays once no run is hosted: both calls read every run the
        // database holds, ended ones included.
        let renew = time(3, || store.renew(engine.owner(), &[]).expect("renew"));
        out.push(("renew_ended_ms", renew.as_secs_f64() * 1e3));
        let resolve = time(200, || store.resolve_run(some).expect("resolve"));
        out.push(("resolve_ended_us", resolve.as_secs_f64() * 1e6));
        out.push(("rss_finished_kib", status_field("VmRSS")));
        // Whether what the ended runs freed is still in use or only kept
        // by the allocator (glibc keeps freed memory in its arenas).
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's free lists.
        unsafe {
            libc::malloc_trim(0);
        }
        out.push(("rss_trimmed_kib", status_field("VmRSS")));
        out.push(("threads_finished", status_field("Threads")));
    });
    out.push(("peak_rss_kib", status_field("VmHWM")));
    for (k, v) in out {
        println!("{k} {v}");
    }
}

/// Runs the child `reps` times at `n` runs: the median of every value,
/// but the total of `run_id_collisions` (rare events, not a level).
fn measure(n: usize, reps: usize) -> HashMap<String, f64> {
    let exe = std::env::current_exe().expect("bench executable");
    let mut all: HashMap<String, Vec<f64>> = HashMap::new();
    for _ in 0..reps {
        let out = Command::new(&exe)
            .env("ORCH_BENCH_CHILD", "engine")
            .env("ORCH_BENCH_RUNS", n.to_string())
            .output()
            .expect("child bench");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once(' ') {
                let v: f64 = v.parse().expect("a number");
                all.entry(k.to_string()).or_default().push(v);
            }
        }
    }
    all.into_iter()
        .map(|(k, mut v)| {
            if k == "run_id_collisions" {
                return (k, v.iter().sum());
            }
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let n = env_usize("ORCH_BENCH_RUNS", 10_000).max(10);
    if std::env::var("ORCH_BENCH_CHILD").as_deref() == Ok("engine") {
        child(n);
        return;
    }
    let reps = env_usize("ORCH_BENCH_REPS", 3).max(1);
    let small = n / 10;
    let s = measure(small, reps);
    let m = measure(n, reps);
    let mib = |kib: f64| kib / 1024.0;
    let per_run = |m: &HashMap<String, f64>, runs: usize| {
        (m["rss_waiting_kib"] - m["rss_before_kib"]) * 1024.0 / runs as f64
    };
    println!(
        "start            {n} runs (input `a` -> input `b`), one after the other: {:.0} ms ({:.0} runs/s, {:.0} µs of CPU per run), all `a` waiting after {:.0} ms; {:.0} µs/run in the first tenth, {:.0} in the last",
        m["start_ms"],
        n as f64 / m["start_ms"] * 1e3,
        m["start_cpu_ms"] * 1e3 / n as f64,
        m["all_waiting_ms"],
        m["start_first_tenth_us"],
        m["start_last_tenth_us"],
    );
    println!(
        "memory           {n} waiting: VmRSS {:.1} -> {:.1} MiB, {:.0} bytes/run; {small} waiting: {:.1} -> {:.1} MiB, {:.0} bytes/run; marginal ({small} -> {n}) {:.0} bytes/run; peak {:.1} MiB, {:.1} MiB once all ended ({:.1} MiB after malloc_trim)",
        mib(m["rss_before_kib"]),
        mib(m["rss_waiting_kib"]),
        per_run(&m, n),
        mib(s["rss_before_kib"]),
        mib(s["rss_waiting_kib"]),
        per_run(&s, small),
        (m["rss_waiting_kib"] - s["rss_waiting_kib"]) * 1024.0 / (n - small) as f64,
        mib(m["peak_rss_kib"]),
        mib(m["rss_finished_kib"]),
        mib(m["rss_trimmed_kib"]),
    );
    println!(
        "threads          before {:.0}, while starting at most {:.0}, {n} waiting {:.0} ({small} waiting {:.0}), all ended {:.0}; open fds {:.0} -> {:.0}",
        m["threads_before"],
        m["threads_during_start_max"],
        m["threads_waiting"],
        s["threads_waiting"],
        m["threads_finished"],
        m["fds_before"],
        m["fds_waiting"],
    );
    println!(
        "idle             {n} waiting: {:.1}% of a core; stored-signal poll {:.0} µs (every 200 ms), lease renewal of {n} runs {:.1} ms (every 10 s; {:.1} ms with {n} ended runs in the database and none hosted)",
        m["idle_cpu_pct"], m["poll_us"], m["renew_ms"], m["renew_ended_ms"],
    );
    let signals = env_usize("ORCH_BENCH_SIGNALS", 1_000).min(n / 3).max(1);
    println!(
        "store calls      of every signal, alone: resolve_run {:.0} µs ({small} runs: {:.0} µs; {n} ended runs: {:.0} µs), export {:.0} µs ({small} runs: {:.0} µs)",
        m["resolve_us"], s["resolve_us"], m["resolve_ended_us"], m["export_us"], s["export_us"],
    );
    println!(
        "signal           one at a time to random waiting runs ({signals}): signal -> committed output p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, {:.1}% over 2 ms (engine.signal returns after p50 {:.0} µs, p99 {:.0} µs)",
        m["signal_p50_us"],
        m["signal_p99_us"],
        m["signal_max_us"],
        m["signal_slow_pct"],
        m["signal_call_p50_us"],
        m["signal_call_p99_us"],
    );
    println!(
        "burst            {signals} signals back to back: all outputs committed after {:.0} ms ({:.0} signals/s; sending took {:.0} ms)",
        m["burst_ms"],
        signals as f64 / m["burst_ms"] * 1e3,
        m["burst_send_ms"],
    );
    println!(
        "finish           the other {:.0} inputs, then every run ends: {:.0} ms ({:.0} runs/s; sending took {:.0} ms)",
        m["finish_signals"],
        m["finish_ms"],
        n as f64 / m["finish_ms"] * 1e3,
        m["finish_send_ms"],
    );
    println!(
        "run ids          {:.0} starts of {} failed on a run id already taken (started again)",
        m["run_id_collisions"] + s["run_id_collisions"],
        reps * (n + small),
    );
    println!("(medians of {reps} child processes per size)");
}
