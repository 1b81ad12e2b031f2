//! The `orch` CLI over a real database.

use orch::Task;
use serde_json::Value;

use crate::util::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn runs_show_logs_and_export() {
    let space = Space::new();
    space.write(
        "step.py",
        "import orch\nctx = orch.start()\nprint('working on', ctx.node)\nctx.output({'node': ctx.node})\n",
    );
    let mut wf = space.workflow("cli_flow");
    wf.node("a", Task::python("step.py")).label("first");
    wf.node("b", Task::python("step.py"));
    wf.edge("a", "b");
    wf.promise(orch::Promise::Static {});
    let outcome = wf.run().unwrap();

    let runs = space.cli(&["runs"]);
    assert!(runs.status.success(), "{}", text(&runs));
    assert!(text(&runs).contains(&outcome.run));
    assert!(text(&runs).contains("cli_flow"));

    let show = space.cli(&["show", "latest"]);
    let t = text(&show);
    assert!(t.contains("status    succeeded"), "{t}");
    assert!(t.contains("2 nodes, 1 edges, 1 promises"), "{t}");

    let logs = space.cli(&["logs", &outcome.run[..17], "b"]);
    let t = text(&logs);
    assert!(t.contains("--- b attempt 1"), "{t}");
    assert!(t.contains("working on b"), "{t}");

    let export = space.cli(&["export", "latest", "--format", "json"]);
    assert!(export.status.success(), "{}", text(&export));
    let v: Value = serde_json::from_slice(&export.stdout).unwrap();
    for key in [
        "run",
        "workflow",
        "status",
        "orchestrator_pid",
        "nodes",
        "edges",
        "promises",
        "violations",
    ] {
        assert!(v.get(key).is_some(), "export lacks `{key}`");
    }
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["orchestrator_pid"], std::process::id());
    let a = &v["nodes"][0];
    for key in [
        "id",
        "task",
        "state",
        "attrs",
        "started_at",
        "finished_at",
        "attempts",
    ] {
        assert!(a.get(key).is_some(), "node lacks `{key}`");
    }
    let attempt = &a["attempts"][0];
    for key in ["pid", "exit_code", "started_at", "finished_at"] {
        assert!(attempt.get(key).is_some(), "attempt lacks `{key}`");
    }
    assert_ne!(attempt["pid"], std::process::id());
    assert_eq!(a["attrs"]["label"], "first");
    assert_eq!(v["edges"][0]["from"], "a");
    assert_eq!(v["edges"][0]["to"], "b");
    assert_eq!(v["promises"][0], serde_json::json!({"static": {}}));
    let ts = a["started_at"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
        "{ts}"
    );

    // Any moment of history: right after registration nothing had run.
    let at = space.cli(&["export", "latest", "--registered"]);
    let reg: Value = serde_json::from_slice(&at.stdout).unwrap();
    assert_eq!(reg["status"], "running");
    assert!(reg["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["attempts"].as_array().unwrap().is_empty()));

    let events = space.cli(&["events", "latest"]);
    let first: Value = serde_json::from_str(text(&events).lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "run_started");
}

#[test]
fn errors_name_what_is_missing() {
    let space = Space::new();
    let none = space.cli(&["runs"]);
    assert!(!none.status.success());
    assert!(
        text(&none).contains("no orch database at"),
        "{}",
        text(&none)
    );

    space.write("noop.py", "import orch\norch.start()\n");
    let mut wf = space.workflow("w");
    wf.node("a", Task::python("noop.py"));
    wf.run().unwrap();
    let unknown = space.cli(&["show", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no run `nope`"),
        "{}",
        text(&unknown)
    );
    let node = space.cli(&["logs", "latest", "zzz"]);
    assert!(text(&node).contains("has no node `zzz`"), "{}", text(&node));
}

/// Commands that only read leave a file that is not an orch database as it
/// was (an empty file, another application's SQLite database), and say
/// what the file is; no command creates orch's tables in it.
#[test]
fn a_file_that_is_not_an_orch_database_is_named_and_left_alone() {
    let space = Space::new();
    let empty = space.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let other = space.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = std::fs::read(&other).unwrap();
    for args in [
        &["runs"][..],
        &["show", "latest"],
        &["export", "latest"],
        &["events", "latest"],
        &["logs", "latest", "a"],
        &["pause", "latest"],
        &["input", "latest", "a", "1"],
        &["resume", "latest"],
    ] {
        for (db, what) in [(&empty, "it is empty"), (&other, "another application's")] {
            let mut cmd = vec!["--db", db.to_str().unwrap()];
            cmd.extend_from_slice(args);
            let out = space.cli(&cmd);
            let t = text(&out);
            assert!(!out.status.success(), "{cmd:?}: {t}");
            assert!(
                t.contains("not an orch database") && t.contains(what),
                "{cmd:?}: {t}"
            );
            assert!(t.contains(db.to_str().unwrap()), "names the file: {t}");
            assert_eq!(t.lines().count(), 1, "one error: {t}");
        }
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!(std::fs::read(&other).unwrap(), before, "not written to");
}

/// `export --at` outside the run's events says which events there are;
/// resuming a run that ended says so once.
#[test]
fn out_of_range_events_and_resumes_of_ended_runs_say_so_once() {
    let space = Space::new();
    let mut wf = space.workflow("short");
    wf.node("a", Task::command(["true"]));
    let outcome = wf.run().unwrap();
    let last = space.store_events_len(&outcome.run);
    for at in ["0", &(last + 1).to_string()] {
        let out = space.cli(&["export", "latest", "--at", at]);
        let t = text(&out);
        assert!(!out.status.success());
        assert!(
            t.contains(&format!(
                "--at {at}: run {} has events 1 to {last}",
                outcome.run
            )),
            "{t}"
        );
    }
    let fine = space.cli(&["export", "latest", "--at", &last.to_string()]);
    assert!(fine.status.success(), "{}", text(&fine));

    let out = space.cli(&["resume", "latest"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("already ended (succeeded)"), "{t}");
    assert_eq!(
        t.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one message, no contradiction: {t}"
    );
}
