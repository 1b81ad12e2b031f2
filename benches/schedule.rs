//! How soon a schedule fires after its second (`cargo bench --bench
//! schedule`; issue 18 target 5: within 50 ms).
//!
//! One engine over a fresh SQLite database (and, when `ORCH_BENCH_PG`
//! names a PostgreSQL server, over a fresh database there too) and a
//! [`Scheduler`] of `P` workflows, each scheduled every second
//! (`* * * * * *`) with one no-op command node, run for `ORCH_BENCH_SECONDS`
//! seconds (default 20). A fire's latency is its run's recorded start
//! (`created_at`, written by the registration that the fire claims)
//! minus its fire time (`fired_at`, the second of the schedule): the
//! scheduler's wake-up, the fire claim and the run's registration, as a
//! user reading the run list sees them. Each `P` of `ORCH_BENCH_PIPELINES`
//! (default `1,20`) is one case; the first two seconds are left out
//! (the scheduler's start). Prints p50, p99 and the largest latency and
//! how many fires were missed (seconds without a run).

mod common;

use std::sync::Arc;
use std::time::Duration;

use orch::engine::Engine;
use orch::scheduler::Scheduler;
use orch::store::{PgStore, SqliteStore, Store};
use orch::{Task, Workflow};

fn millis(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .as_millisecond()
}

/// Runs `pipelines` every-second workflows on `store` for `secs` seconds:
/// the latencies (ms) of their fires, and the fires missed.
fn case(
    store: Arc<dyn Store>,
    home: &std::path::Path,
    pipelines: usize,
    secs: u64,
) -> (Vec<i64>, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let workflows: Vec<Workflow> = (0..pipelines)
        .map(|i| {
            let mut wf = Workflow::new(format!("tick{i}"));
            wf.schedule("* * * * * *");
            wf.live_picture(false);
            wf.node("a", Task::command(["true"]));
            wf
        })
        .collect();
    let started = jiff::Timestamp::now().as_millisecond();
    rt.block_on(async {
        let engine = Engine::new(store.clone(), home);
        let mut s = Scheduler::for_workflows(engine, &workflows).unwrap();
        let (stop, rx) = tokio::sync::watch::channel(0u32);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.send_modify(|n| *n += 1);
            // Kept until the scheduler is done.
            stop
        });
        s.run_until(rx).await.unwrap();
        drop(stopper.await);
    });
    let ended = jiff::Timestamp::now().as_millisecond();
    // Seconds fully inside the measurement, past the first two.
    let first = (started / 1000 + 2) * 1000;
    let last = (ended / 1000 - 1) * 1000;
    let mut latencies = Vec::new();
    let mut fired = std::collections::HashSet::new();
    for r in store.runs().unwrap() {
        let Some(at) = r.fired_at.as_deref().map(millis) else {
            continue;
        };
        if at < first || at > last {
            continue;
        }
        fired.insert((r.workflow.clone(), at));
        latencies.push(millis(&r.created_at) - at);
    }
    let expected = pipelines * ((last - first) / 1000 + 1) as usize;
    latencies.sort_unstable();
    (latencies, expected.saturating_sub(fired.len()))
}

fn report(backend: &str, pipelines: usize, (lat, missed): (Vec<i64>, usize)) {
    if lat.is_empty() {
        println!("{backend:<10} {pipelines:>3} pipelines: no fires measured");
        return;
    }
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "{backend:<10} {pipelines:>3} pipelines: {:>5} fires  p50 {:>3} ms  p99 {:>3} ms  max {:>3} ms  missed {missed}",
        lat.len(),
        at(0.5),
        at(0.99),
        lat[lat.len() - 1],
    );
}

fn main() {
    let secs = common::env_usize("ORCH_BENCH_SECONDS", 20) as u64;
    let sizes: Vec<usize> = std::env::var("ORCH_BENCH_PIPELINES")
        .unwrap_or_else(|_| "1,20".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pg = std::env::var("ORCH_BENCH_PG").ok();
    println!(
        "schedule fire latency: run start minus fire second, {secs} s a case (load {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    for &p in &sizes {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("orch.db")).unwrap());
        report("sqlite", p, case(store, dir.path(), p, secs));
        if let Some(base) = &pg {
            let name = format!("orch_bench_schedule_{}_{p}", std::process::id());
            let admin = format!("{base}/postgres");
            let mut c =
                postgres::Client::connect(&admin, postgres::NoTls).expect("ORCH_BENCH_PG answers");
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            let store: Arc<dyn Store> =
                Arc::new(PgStore::connect(&format!("{base}/{name}")).unwrap());
            report("postgres", p, case(store, dir.path(), p, secs));
        }
    }
}
