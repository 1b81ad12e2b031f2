//! The scheduler through the `orch` command line: a per-second schedule
//! fires at whole seconds, each fire time once, across a crash and a
//! restart and with two schedulers on one database; `--list` shows import
//! errors without stopping the others; `backfill` runs a range in each
//! reprocessing mode.

use std::collections::BTreeSet;

use orch::store::RunSummary;
use orch::Store as _;
use serde_json::Value;

use crate::util::{kill9, runs_of, start_scheduler, stop_scheduler, wait_for_runs, Space};

const TICK: &str =
    "name: tick\nschedule: \"* * * * * *\"\ntasks:\n  - {id: a, command: [\"true\"]}\n";

/// Every run fired at a whole second, the id carrying it, no fire time
/// twice.
fn assert_fired_once_each(runs: &[RunSummary]) -> Vec<jiff::Timestamp> {
    let mut seen = BTreeSet::new();
    for r in runs {
        let fired = r
            .fired_at
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no fire time", r.id));
        let t: jiff::Timestamp = fired.parse().unwrap();
        assert_eq!(t.subsec_nanosecond(), 0, "{fired} is a whole second");
        let stamp = t.strftime("%Y%m%d-%H%M%S").to_string();
        assert!(
            r.id.starts_with(&stamp),
            "run {} carries its fire time {fired}",
            r.id
        );
        assert!(seen.insert(t), "fire time {fired} ran twice: {runs:?}");
    }
    seen.into_iter().collect()
}

#[test]
fn a_per_second_schedule_fires_each_second_once_across_a_crash_and_a_restart() {
    let space = Space::new();
    std::fs::create_dir(space.path().join("flows")).unwrap();
    space.write("flows/tick.yaml", TICK);
    let mut first = start_scheduler(&space, "flows");
    let before = wait_for_runs(&space, "tick", 3, false);
    kill9(&mut first);
    let before = runs_of(&space, "tick", false).len().max(before.len());
    let second = start_scheduler(&space, "flows");
    wait_for_runs(&space, "tick", before + 3, false);
    stop_scheduler(second);
    let runs = runs_of(&space, "tick", false);
    assert!(runs.len() >= before + 3, "{runs:?}");
    let times = assert_fired_once_each(&runs);
    // The store's record agrees: one fire per time, each with its run.
    let store = space.store();
    let fires = store.fires("tick", 0, i64::MAX).unwrap();
    assert_eq!(fires.len(), times.len());
    for f in &fires {
        assert!(
            runs.iter().any(|r| r.id == f.run),
            "fire {} has its run",
            f.at_ms
        );
        assert_eq!(f.kind, "schedule");
    }
    // A run caught by the kill -9 or the stop stays running, resumable;
    // none failed.
    for r in &runs {
        assert!(
            matches!(r.status.as_str(), "succeeded" | "running"),
            "{r:?}"
        );
    }
}

#[test]
fn two_schedulers_on_one_database_fire_each_time_once() {
    let space = Space::new();
    std::fs::create_dir(space.path().join("flows")).unwrap();
    space.write("flows/tick.yaml", TICK);
    // Both start in the same second, so they want the same fire times.
    let a = start_scheduler(&space, "flows");
    let b = start_scheduler(&space, "flows");
    wait_for_runs(&space, "tick", 4, false);
    stop_scheduler(a);
    stop_scheduler(b);
    let runs = runs_of(&space, "tick", false);
    assert_fired_once_each(&runs);
}

#[test]
fn the_listing_shows_schedules_and_import_errors_and_the_others_still_fire() {
    let space = Space::new();
    std::fs::create_dir(space.path().join("flows")).unwrap();
    space
        .write("flows/tick.yaml", TICK)
        .write("flows/broken.yaml", "name: broken\ntasks:\n  - {id: a}\n")
        .write(
            "flows/raises.py",
            "from orch import Pipeline\nraise RuntimeError('cannot import this')\n",
        )
        .write("flows/helper.py", "def not_a_pipeline(): pass\n")
        .write(
            "flows/zdup.yaml",
            "name: tick\ntasks:\n  - {id: a, command: [\"true\"]}\n",
        );
    let out = space.cli(&["scheduler", "flows", "--list", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "import errors make the listing fail"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_file = |name: &str| {
        lines
            .iter()
            .find(|l| l["file"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} listed: {lines:?}"))
    };
    assert_eq!(lines.len(), 4, "helper.py is no pipeline file: {lines:?}");
    let tick = by_file("tick.yaml");
    assert_eq!(tick["pipeline"], "tick");
    assert_eq!(tick["schedule"], "* * * * * *");
    assert!(tick["next_fire"].as_str().unwrap().ends_with('Z'));
    assert!(by_file("broken.yaml")["error"]
        .as_str()
        .unwrap()
        .contains("task `a`: says nothing to run"));
    assert!(by_file("raises.py")["error"]
        .as_str()
        .unwrap()
        .contains("RuntimeError: cannot import this"));
    assert!(by_file("zdup.yaml")["error"]
        .as_str()
        .unwrap()
        .contains("pipeline `tick` is declared by"));
    // The broken files do not keep the good one from firing.
    let s = start_scheduler(&space, "flows");
    wait_for_runs(&space, "tick", 1, false);
    stop_scheduler(s);
}

#[test]
fn backfill_runs_a_range_in_each_reprocessing_mode() {
    let space = Space::new();
    space.write(
        "hourly.yaml",
        // Runs of files work in their own folders: the flag is found by
        // its full path.
        &format!(
            "name: hourly\nschedule: \"0 0 * * * *\"\ntasks:\n  - {{id: check, command: \"test ! -e {}/fail\"}}\n",
            space.path().display()
        ),
    );
    let range = [
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T03:00:00Z",
    ];
    let backfill = |reprocess: &str| {
        let mut args = vec![
            "backfill",
            "hourly.yaml",
            "--json",
            "--max-active",
            "2",
            "--reprocess",
            reprocess,
        ];
        args.extend(range);
        let out = space.cli(&args);
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code(), lines)
    };
    let statuses = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["status"].as_str().unwrap().to_string())
            .collect()
    };
    space.write("fail", "");
    let (code, lines) = backfill("missing");
    assert_eq!(code, Some(1), "failed runs fail the backfill");
    assert_eq!(statuses(&lines), ["failed"; 4]);
    let times: Vec<&str> = lines
        .iter()
        .map(|l| l["fire_time"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z",
            "2026-01-01T03:00:00Z"
        ]
    );
    let (code, lines) = backfill("missing");
    assert_eq!(code, Some(0), "nothing this backfill ran failed");
    assert_eq!(
        statuses(&lines),
        ["skipped (failed)"; 4],
        "missing leaves what ran"
    );
    std::fs::remove_file(space.path().join("fail")).unwrap();
    let (code, lines) = backfill("failed");
    assert_eq!(code, Some(0));
    assert_eq!(
        statuses(&lines),
        ["succeeded"; 4],
        "failed reruns the failures"
    );
    let (_, lines) = backfill("failed");
    assert_eq!(statuses(&lines), ["skipped (succeeded)"; 4]);
    let (code, lines) = backfill("all");
    assert_eq!(code, Some(0));
    assert_eq!(statuses(&lines), ["succeeded"; 4], "all reruns everything");
    // 12 runs in all, each carrying its fire time; the store records the
    // latest run of each fire time.
    let runs = runs_of(&space, "hourly", false);
    assert_eq!(runs.len(), 12);
    let fires = space.store().fires("hourly", 0, i64::MAX).unwrap();
    assert_eq!(fires.len(), 4);
    assert!(fires.iter().all(|f| f.kind == "backfill"));
    let bad = space.cli(&[
        "backfill",
        "hourly.yaml",
        "--from",
        "soon",
        "--to",
        "2026-01-02",
    ]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--from `soon` is neither an RFC 3339 time")
    );
    let bad = space.cli(&[
        "backfill",
        "hourly.yaml",
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-01",
        "--reprocess",
        "some",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown reprocess mode `some`"));
}

#[test]
fn the_shipped_pipeline_folder_lists_without_import_errors() {
    let space = Space::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pipelines");
    let out = space.cli(&["scheduler", dir, "--list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["`test`", "`test_yaml`", "`thumbnails`"] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert!(
        text.contains("schedule `0 0 * * * *` (UTC), next fire time "),
        "{text}"
    );
}
