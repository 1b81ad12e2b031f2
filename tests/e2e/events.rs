//! Events and timers: `orch event push` starts subscribed workflows under
//! a scheduler (the payload as parameters, once per event even across a
//! restart) and feeds input nodes that listen for the key; `orch timer`
//! fires a workflow once or on a cron schedule; a Rust program hosts a
//! scheduler of its own workflows.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::scheduler::Scheduler;
use orch::store::RunSummary;
use orch::{Engine, NodeState, RunStatus, SqliteStore, Store as _, Task, Workflow};
use serde_json::{json, Value};

use crate::util::{start_scheduler, stop_scheduler, wait_for, wait_for_runs, Space};

/// Waits until the scheduler has read the folder: it wrote the database.
fn wait_for_db(space: &Space) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while SqliteStore::open_read_only(space.db()).is_err() {
        assert!(
            Instant::now() < deadline,
            "the scheduler never opened its database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_pushed_event_starts_each_subscribed_workflow_once_with_its_payload_as_params() {
    let space = Space::new();
    std::fs::create_dir(space.path().join("flows")).unwrap();
    space.write(
        "flows/on_order.yaml",
        "name: on_order\nevents: [orders.new]\nparams:\n  order: {}\ntasks:\n  - {id: handle, command: [\"echo\", \"order {{order}}\"]}\n",
    );
    let s = start_scheduler(&space, "flows");
    wait_for_db(&space);
    let push = space.cli(&["event", "push", "orders.new", r#"{"order": 42}"#]);
    assert!(push.status.success(), "{}", text(&push));
    assert!(text(&push).starts_with("pushed event 1 under `orders.new`"));
    let runs = wait_for_runs(&space, "on_order", 1, true);
    assert_eq!(runs[0].status, "succeeded");
    let logs = space.cli(&["logs", &runs[0].id, "handle"]);
    assert!(text(&logs).contains("order 42"), "{}", text(&logs));
    // Payloads that do not fit the workflow (an unknown field, none of
    // the parameter that has no default, not an object) start nothing;
    // the next one does.
    space.cli(&["event", "push", "orders.new", r#"{"nope": 1}"#]);
    space.cli(&["event", "push", "orders.new", "{}"]);
    space.cli(&["event", "push", "orders.new", "null"]);
    space.cli(&[
        "event",
        "push",
        "orders.new",
        r#"{"order": {"$output": "handle"}}"#,
    ]);
    space.cli(&["event", "push", "orders.new", r#"{"order": 43}"#]);
    let runs = wait_for_runs(&space, "on_order", 2, true);
    stop_scheduler(s);
    // A restarted scheduler does not start the same events again.
    let s = start_scheduler(&space, "flows");
    space.cli(&["event", "push", "orders.new", r#"{"order": 44}"#]);
    let after = wait_for_runs(&space, "on_order", 3, true);
    stop_scheduler(s);
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(runs.len(), 2);
    let params: Vec<Value> = after
        .iter()
        .map(|r| {
            let ex = space.store().events(&r.id, Some(1)).unwrap();
            match &ex[0].kind {
                orch::EventKind::RunStarted { config, .. } => Value::Object(config.params.clone()),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        params,
        [
            json!({"order": 42}),
            json!({"order": 43}),
            json!({"order": 44})
        ]
    );
}

#[test]
fn an_input_node_listening_for_a_key_takes_the_payload_of_a_pushed_event() {
    let space = Space::new();
    space.write(
        "approve.yaml",
        "name: approve\ntasks:\n  - {id: ask, input: true, listen: approvals}\n  - {id: after, command: [\"true\"], inputs: {answer: {\"$output\": ask}}}\n",
    );
    let mut run = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "approve.yaml"])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&space, "`ask` to wait", |ex| {
        ex.node("ask")
            .is_some_and(|n| n.state == NodeState::Waiting)
    });
    let push = space.cli(&["event", "push", "approvals", r#"{"ok": true}"#]);
    assert!(
        text(&push).contains("delivered to node `ask` of run "),
        "{}",
        text(&push)
    );
    assert!(run.wait().unwrap().success());
    let id = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&id);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.node("ask").unwrap().output, Some(json!({"ok": true})));
    // Nothing listens any more.
    let push = space.cli(&["event", "push", "approvals", "1"]);
    assert!(!text(&push).contains("delivered"), "{}", text(&push));
}

#[test]
fn timers_fire_once_or_on_a_cron_schedule_until_stopped() {
    let space = Space::new();
    std::fs::create_dir(space.path().join("flows")).unwrap();
    space.write(
        "flows/ping.yaml",
        "name: ping\ntasks:\n  - {id: a, command: [\"true\"]}\n",
    );
    let s = start_scheduler(&space, "flows");
    wait_for_db(&space);
    let once = space.cli(&["timer", "start", "ping", "--after", "0"]);
    assert_eq!(text(&once).trim(), "timer 1 fires `ping`");
    let runs = wait_for_runs(&space, "ping", 1, true);
    assert!(
        runs[0].fired_at.is_some(),
        "a timer's run carries its fire time"
    );
    let every = space.cli(&["timer", "start", "ping", "--cron", "* * * * * *"]);
    assert_eq!(text(&every).trim(), "timer 2 fires `ping`");
    wait_for_runs(&space, "ping", 3, true);
    let stopped = space.cli(&["timer", "stop", "2"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let list = space.cli(&["timer", "list", "--json"]);
    let timers: Vec<Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(timers[0]["status"], "done");
    assert_eq!(timers[1]["status"], "stopped");
    stop_scheduler(s);
    // Each fire time of each timer ran once.
    let store = space.store();
    assert_eq!(store.fires("timer:1", 0, i64::MAX).unwrap().len(), 1);
    let fires = store.fires("timer:2", 0, i64::MAX).unwrap();
    assert!(fires.len() >= 2);
    let again = space.cli(&["timer", "stop", "2"]);
    assert!(
        text(&again).contains("timer 2 does not run"),
        "{}",
        text(&again)
    );
    let bad = space.cli(&["timer", "start", "ping", "--cron", "0 99 * * *"]);
    assert!(
        text(&bad).contains("the hour field `99` is wrong"),
        "{}",
        text(&bad)
    );
}

/// A Rust program hosts a scheduler of its own workflows: a schedule, an
/// event subscription with a parameter, driven here by `tick` with fixed
/// clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_program_schedules_its_own_workflows() {
    let space = Space::new();
    let mut every = Workflow::new("every_second");
    every
        .dir(space.path())
        .schedule("* * * * * *")
        .live_picture(false);
    every.node("a", Task::command(["true"]));
    let mut on_event = Workflow::new("greet");
    on_event
        .dir(space.path())
        .on_event("hello")
        .param("who", json!("nobody"))
        .live_picture(false);
    on_event
        .node("say", Task::command(["sh", "-c", "head -n 1 > said.json"]))
        .input("who", json!({"$param": "who"}));
    let engine = Engine::open(space.db()).unwrap();
    let store = engine.store().clone();
    let mut s = Scheduler::for_workflows(engine, &[every, on_event]).unwrap();
    let t = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
    assert_eq!(
        s.tick(t("2030-01-01T00:00:00.200Z")).await.unwrap(),
        0,
        "watching starts"
    );
    assert_eq!(s.tick(t("2030-01-01T00:00:01.100Z")).await.unwrap(), 1);
    assert_eq!(
        s.tick(t("2030-01-01T00:00:01.900Z")).await.unwrap(),
        0,
        "once per fire time"
    );
    assert_eq!(
        s.tick(t("2030-01-01T00:00:03.050Z")).await.unwrap(),
        1,
        "the latest only"
    );
    let fires: Vec<i64> = store
        .fires("every_second", 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|f| f.at_ms)
        .collect();
    assert_eq!(
        fires,
        [
            t("2030-01-01T00:00:01Z").as_millisecond(),
            t("2030-01-01T00:00:03Z").as_millisecond()
        ]
    );
    store.push_event("hello", &json!({"who": "ann"})).unwrap();
    assert_eq!(s.tick(t("2030-01-01T00:00:03.500Z")).await.unwrap(), 1);
    let greet = tokio::task::block_in_place(|| wait_until_ended(&store, "greet"));
    assert_eq!(greet.status, "succeeded");
    let said: Value =
        serde_json::from_str(&std::fs::read_to_string(space.path().join("said.json")).unwrap())
            .unwrap();
    assert_eq!(
        said["inputs"],
        json!({"who": "ann"}),
        "the payload took the parameter's place"
    );
}

fn wait_until_ended(store: &std::sync::Arc<dyn orch::Store>, workflow: &str) -> RunSummary {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = store
            .runs()
            .unwrap()
            .into_iter()
            .find(|r| r.workflow == workflow && r.status != "running")
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{workflow} never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}
