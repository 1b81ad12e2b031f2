//! Runners on loopback: `orch serve` plus `orch runner` subprocesses.
//! Attempts go to the runners whose capabilities satisfy their
//! requirements; a queue no runner serves says so; a runner killed with
//! `kill -9` in the middle of an attempt loses it after its lease, and the
//! next attempt finishes on another runner, exactly once, while a late
//! report of the old attempt is refused. Everything is asserted on the
//! recorded history and the API's answers, not on wall-clock time.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use orch::client::Client;
use serde_json::{json, Value};

use crate::server::{serve, user_token, Served};
use crate::util::{kill9, spawn_announcing, Space};

/// The lease of runners and claims in these tests, in milliseconds.
const LEASE_MS: &str = "1000";

/// An `orch runner` process, killed when dropped.
pub(crate) struct Runner {
    child: Child,
    /// Its id, as the server registered it.
    pub(crate) id: String,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runner_token(space: &Space) -> String {
    runner_token_of(space, "root")
}

/// A runner token minted for `user`.
pub(crate) fn runner_token_of(space: &Space, user: &str) -> String {
    let out = space.cli(&["token", "create", "--user", user, "--runner"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().to_string()
}

/// Starts `orch runner` named `name` with `caps`, in its own folder, and
/// waits for its registration.
pub(crate) fn runner(
    space: &Space,
    server: &Served,
    token: &str,
    name: &str,
    caps: &str,
) -> Runner {
    runner_with(space, server, token, name, caps, &[])
}

/// [`runner`] with more environment variables.
fn runner_with(
    space: &Space,
    server: &Served,
    token: &str,
    name: &str,
    caps: &str,
    vars: &[(&str, std::ffi::OsString)],
) -> Runner {
    let dir = space.path().join(format!("runner-{name}"));
    let log = space.path().join(format!("runner-{name}.log"));
    let announced = spawn_announcing(
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .args([
                "runner",
                "--server",
                &server.base,
                "--name",
                name,
                "--slots",
                "2",
            ])
            .args(["--capabilities", caps])
            .arg("--dir")
            .arg(&dir)
            .env("ORCH_TOKEN", token)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env_remove("ORCH_LABELS"),
        &log,
        "runner ",
        " registered",
    );
    let (child, id) = (announced.child, announced.said);
    Runner { child, id }
}

fn serve_with_short_leases(space: &Space) -> Served {
    // Servers inherit it; only servers with runners read it, and every
    // test here sets the same value.
    std::env::set_var("ORCH_RUNNER_LEASE_MS", LEASE_MS);
    serve(space, &[])
}

fn publish(c: &Client, name: &str, yaml: &str) {
    c.json(
        "PUT",
        &format!("/api/v1/workflows/{name}"),
        Some(&json!({"message": "test", "files": [{"path": "workflow.yaml", "content": yaml}]})),
    )
    .expect("publish");
}

fn start(c: &Client, name: &str) -> String {
    let r = c
        .post(&format!("/api/v1/workflows/{name}/runs"), &json!({}))
        .expect("execute");
    r["run"].as_str().unwrap().to_string()
}

fn wait_end(c: &Client, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w = c
            .get(&format!("/api/v1/runs/{run}/wait?timeout=30"))
            .expect("wait");
        if w["ended"] == true {
            return w["status"].clone();
        }
        assert!(Instant::now() < deadline, "run {run} did not end: {w}");
    }
}

fn poll(what: &str, mut done: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(c: &Client, run: &str, node: &str) -> String {
    let r = c
        .call(
            "GET",
            &format!("/api/v1/runs/{run}/nodes/{node}/logs"),
            None,
        )
        .unwrap();
    r.body
}

#[test]
fn attempts_run_on_the_runners_their_requirements_name() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let _blue = runner(&space, &server, &token, "blue", "cpus=1,blue");
    let _plain = runner(&space, &server, &token, "plain", "cpus=1");
    let runners = c.get("/api/v1/runners").unwrap();
    let names: Vec<&str> = runners
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue", "plain"], "{runners}");
    assert_eq!(runners[0]["capabilities"]["labels"], json!(["blue"]));
    let status = Client::new(&server.base, None)
        .get("/api/v1/status")
        .unwrap();
    assert_eq!(status["runners"], json!(["blue", "plain"]), "{status}");

    publish(
        &c,
        "routed",
        "name: routed\ntasks:\n  - id: any\n    command: pwd\n  - id: tinted\n    command: pwd\n    requires: {labels: [blue]}\n    after: [any]\n",
    );
    let run = start(&c, "routed");
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    // The labelled task ran in the blue runner's folder.
    let tinted = logs(&c, &run, "tinted");
    assert!(tinted.contains("runner-blue"), "{tinted}");
    let any = logs(&c, &run, "any");
    assert!(any.contains("runner-"), "ran on a runner: {any}");

    // A queue no runner can serve says so, and clearing it fails its
    // attempt.
    publish(
        &c,
        "stranded",
        "name: stranded\ntasks:\n  - id: red\n    command: 'true'\n    requires: {labels: [red]}\n",
    );
    let run = start(&c, "stranded");
    let q = poll("the red queue appears", || {
        let qs = c.get("/api/v1/queues").unwrap();
        qs.as_array()
            .unwrap()
            .iter()
            .find(|q| q["key"] == "labels=red")
            .cloned()
    });
    assert_eq!(q["unservable"], true, "{q}");
    assert_eq!(q["serving"], json!([]), "{q}");
    assert_eq!(q["depth"], 1, "{q}");
    assert_eq!(q["requires"]["labels"], json!(["red"]));
    let status = poll("status counts the waiting attempt", || {
        let s = Client::new(&server.base, None)
            .get("/api/v1/status")
            .unwrap();
        (s["queued"] == 1).then_some(s)
    });
    assert_eq!(status["claimed"], 0, "{status}");
    let cleared = c
        .post("/api/v1/queues/labels=red/clear", &json!({}))
        .unwrap();
    assert_eq!(cleared["attempts"][0]["node"], "red", "{cleared}");
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "failed", "{done}");
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/red")).unwrap();
    let error = node["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cleared from queue `labels=red`"), "{node}");
}

#[test]
fn a_killed_runner_loses_its_attempt_to_another_exactly_once() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let rc = Client::new(&server.base, Some(token.clone()));
    let mut first = runner(&space, &server, &token, "first", "cpus=1");
    publish(
        &c,
        "nap",
        "name: nap\ntasks:\n  - id: nap\n    command: sh -c 'sleep 2; echo woke in $(pwd)'\n",
    );
    let run = start(&c, "nap");
    poll("the first runner claims the nap", || {
        let qs = c.get("/api/v1/queues").unwrap();
        (qs[0]["running"] == 1).then_some(qs)
    });
    kill9(&mut first.child);
    let second = runner(&space, &server, &token, "second", "cpus=1");
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");

    let node = c.get(&format!("/api/v1/runs/{run}/nodes/nap")).unwrap();
    let attempts = node["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{node}");
    assert_eq!(attempts[0]["outcome"], "killed", "{node}");
    let why = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("lost its runner"), "{node}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{node}");
    // Each attempt's record names the runner that ran it, the lost one
    // too.
    assert_eq!(attempts[0]["runner"], "first", "{node}");
    assert_eq!(attempts[1]["runner"], "second", "{node}");
    let text = logs(&c, &run, "nap");
    assert!(text.contains("runner-second"), "{text}");

    // The killed runner's report of attempt 1 comes too late.
    let late = rc
        .call(
            "POST",
            &format!("/api/v1/attempts/{run}/nap/1/report"),
            Some(&json!({"runner": first.id, "end": {"exit_code": 0}})),
        )
        .unwrap();
    assert_eq!(late.status, 409, "{}", late.body);
    // So does a report of the finished attempt 2, even by its runner.
    let again = rc
        .call(
            "POST",
            &format!("/api/v1/attempts/{run}/nap/2/report"),
            Some(&json!({"runner": second.id, "end": {"exit_code": 0}})),
        )
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.body);
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/nap")).unwrap();
    assert_eq!(node["attempts"].as_array().unwrap().len(), 2, "{node}");
}

#[test]
fn a_runner_drains_on_sigterm_and_when_the_server_asks() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let mut r = runner(&space, &server, &token, "drained", "cpus=1");
    publish(
        &c,
        "short",
        "name: short\ntasks:\n  - id: s\n    command: sh -c 'sleep 1; echo finished'\n",
    );
    let run = start(&c, "short");
    poll("the runner claims it", || {
        let qs = c.get("/api/v1/queues").unwrap();
        (qs[0]["running"] == 1).then_some(qs)
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let done = wait_end(&c, &run);
    assert_eq!(
        done["status"], "succeeded",
        "the drained attempt finished: {done}"
    );

    let other = runner(&space, &server, &token, "other", "cpus=1");
    let answer = c
        .call(
            "POST",
            &format!("/api/v1/runners/{}/shutdown", other.id),
            None,
        )
        .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.body);
    let mut other = other;
    let status = other.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let missing = c
        .call("POST", "/api/v1/runners/nobody/shutdown", None)
        .unwrap();
    assert_eq!(missing.status, 404);
}

/// A remote task that grows its run: each mutation goes through the
/// runner to the engine, which answers it as it arrives.
const GROW: &str = r#"name: grow
tasks:
  - id: grow
    command:
      - sh
      - -c
      - |
        head -n 1 >/dev/null
        echo '{"orch": 1, "type": "add_node", "seq": 1, "id": "child", "task": {"kind": "command", "argv": ["pwd"]}}'
        head -n 1 | sed 's/^/got /'
        echo '{"orch": 1, "type": "add_node", "seq": 2, "id": "grow", "task": {"kind": "command", "argv": ["true"]}}'
        head -n 1 | sed 's/^/got /'
"#;

#[test]
fn a_remote_tasks_mutations_are_answered_as_they_arrive() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let _r = runner(&space, &server, &token, "grower", "cpus=1");
    publish(&c, "grow", GROW);
    let run = start(&c, "grow");
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    // The task read the engine's answers: an ack, then the refusal of a
    // node that exists already.
    let text = logs(&c, &run, "grow");
    assert!(
        text.contains(r#"got {\"orch\":1,\"type\":\"ack\",\"seq\":1}"#),
        "{text}"
    );
    assert!(text.contains(r#"\"seq\":2,\"type\":\"error\""#), "{text}");
    let nodes = c.get(&format!("/api/v1/runs/{run}/nodes")).unwrap();
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{nodes}");
    assert!(ids.contains(&"child"), "{nodes}");
    // The node it added ran on the runner too.
    let child = logs(&c, &run, "child");
    assert!(child.contains("runner-grower"), "{child}");
}

#[test]
fn cancel_kills_an_attempt_a_runner_holds() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let _r = runner(&space, &server, &token, "napper", "cpus=1");
    publish(
        &c,
        "long",
        "name: long\ntasks:\n  - id: nap\n    command: sh -c 'echo $$ > nap.pid; exec sleep 300'\n",
    );
    let run = start(&c, "long");
    let pid_file = space.path().join("runner-napper").join("nap.pid");
    let pid = poll("the nap starts on the runner", || {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        text.trim().parse::<u64>().ok().map(Value::from)
    });
    let pid = pid.as_u64().unwrap() as u32;
    assert!(crate::util::alive(pid));
    c.post(&format!("/api/v1/runs/{run}/cancel"), &json!({}))
        .unwrap();
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        crate::util::gone_within(pid, 20),
        "the runner killed the attempt's process"
    );
    let qs = c.get("/api/v1/queues").unwrap();
    assert_eq!(qs, json!([]), "nothing left queued or held");
}

#[test]
fn a_remote_attempts_logs_can_be_read_while_it_runs() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let _r = runner(&space, &server, &token, "talker", "cpus=1");
    publish(
        &c,
        "talk",
        "name: talk\ntasks:\n  - id: talk\n    command: sh -c 'echo first; while [ ! -e go ]; do sleep 0.05; done; echo second'\n",
    );
    let run = start(&c, "talk");
    // The first line arrives while the attempt still waits for `go`.
    poll("the first line is streamed", || {
        let text = logs(&c, &run, "talk");
        text.contains("first").then_some(Value::from(text))
    });
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/talk")).unwrap();
    assert_eq!(node["state"], "running", "{node}");
    std::fs::write(space.path().join("runner-talker").join("go"), "").unwrap();
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    let lines = c
        .get(&format!("/api/v1/runs/{run}/nodes/talk/logs"))
        .unwrap();
    let texts: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"], "each line once: {lines}");
}

#[test]
fn a_runner_paused_past_its_lease_is_refused_when_it_wakes() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let sleeper = runner(&space, &server, &token, "sleeper", "cpus=1");
    publish(
        &c,
        "pause",
        "name: pause\ntasks:\n  - id: p\n    command: sh -c 'sleep 1; echo done in $(pwd)'\n",
    );
    let run = start(&c, "pause");
    poll("the sleeper claims it", || {
        let qs = c.get("/api/v1/queues").unwrap();
        (qs[0]["running"] == 1).then_some(qs)
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sleeper.child.id() as libc::pid_t, libc::SIGSTOP) };
    let _awake = runner(&space, &server, &token, "awake", "cpus=1");
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    // SAFETY: as above.
    unsafe { libc::kill(sleeper.child.id() as libc::pid_t, libc::SIGCONT) };
    // Awake again, the sleeper learns the attempt is not its own; the end
    // it reports is refused.
    let log = space.path().join("runner-sleeper.log");
    poll("the sleeper's end is refused", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("the server refused the end")
            .then_some(Value::from(text))
    });
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/p")).unwrap();
    let attempts = node["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{node}");
    assert_eq!(attempts[0]["outcome"], "killed", "{node}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{node}");
    let text = logs(&c, &run, "p");
    assert!(text.contains("runner-awake"), "{text}");
    assert!(!text.contains("runner-sleeper"), "{text}");
}

#[test]
fn a_runner_token_acts_only_for_the_runners_it_registered() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let mine = runner_token(&space);
    let theirs = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let own = runner(&space, &server, &mine, "own", "cpus=1,own");
    publish(
        &c,
        "owned",
        "name: owned\ntasks:\n  - id: o\n    command: sh -c 'echo $$ > o.pid; exec sleep 300'\n    requires: {labels: [own]}\n",
    );
    let run = start(&c, "owned");
    poll("the own runner claims it", || {
        let qs = c.get("/api/v1/queues").unwrap();
        (qs[0]["running"] == 1).then_some(qs)
    });

    // Another token registers its own runner and acts for it freely.
    let other = Client::new(&server.base, Some(theirs.clone()));
    let reg = other
        .post(
            "/api/v1/runners/register",
            &json!({"name": "intruder", "capabilities": {"cpu": 1.0}, "slots": 1}),
        )
        .unwrap();
    let intruder = reg["runner"]["id"].as_str().unwrap().to_string();
    assert_ne!(intruder, own.id);
    let beat = other
        .call(
            "POST",
            &format!("/api/v1/runners/{intruder}/heartbeat"),
            Some(&json!({})),
        )
        .unwrap();
    assert_eq!(beat.status, 200, "{}", beat.body);

    // But not for the runner the first token registered: every call is
    // refused, naming that runner.
    let refused = |path: String, body: Value| {
        let answer = other.call("POST", &path, Some(&body)).unwrap();
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert!(answer.body.contains(&own.id), "{path}: {}", answer.body);
    };
    refused(
        format!("/api/v1/runners/{}/heartbeat", own.id),
        json!({"holding": []}),
    );
    refused(
        format!("/api/v1/runners/{}/claim", own.id),
        json!({"max": 1}),
    );
    refused(
        format!("/api/v1/attempts/{run}/o/1/report"),
        json!({"runner": own.id, "end": {"exit_code": 0}}),
    );
    refused(
        format!("/api/v1/attempts/{run}/o/1/report"),
        json!({"runner": own.id, "logs": [[1, "stdout", "forged"]]}),
    );
    // A made-up id is refused the same way (it names no token's runner).
    let made_up = other
        .call("POST", "/api/v1/runners/nobody/heartbeat", Some(&json!({})))
        .unwrap();
    assert_eq!(made_up.status, 403, "{}", made_up.body);

    // The attempt is untouched: still held by its runner, no forged line.
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/o")).unwrap();
    assert_eq!(node["state"], "running", "{node}");
    assert!(!logs(&c, &run, "o").contains("forged"));
    c.post(&format!("/api/v1/runs/{run}/cancel"), &json!({}))
        .unwrap();
    let done = wait_end(&c, &run);
    assert_eq!(done["status"], "cancelled", "{done}");
}

#[test]
fn the_export_names_the_runner_of_every_attempt() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    publish(
        &c,
        "where",
        "name: where\ntasks:\n  - id: w\n    command: pwd\n",
    );
    // No runner yet: the server runs it itself.
    let here = start(&c, "where");
    assert_eq!(wait_end(&c, &here)["status"], "succeeded");
    let _r = runner(&space, &server, &token, "far-away", "cpus=1");
    let there = start(&c, "where");
    assert_eq!(wait_end(&c, &there)["status"], "succeeded");
    assert!(logs(&c, &there, "w").contains("runner-far-away"));

    let attempt = |run: &str| {
        let export = c.get(&format!("/api/v1/runs/{run}/export")).unwrap();
        export["nodes"][0]["attempts"][0].clone()
    };
    assert_eq!(attempt(&here)["runner"], "local", "{}", attempt(&here));
    assert_eq!(attempt(&there)["runner"], "far-away", "{}", attempt(&there));
    // The node's API shows it too, and so do `orch show` and `orch logs`.
    let node = c.get(&format!("/api/v1/runs/{there}/nodes/w")).unwrap();
    assert_eq!(node["attempts"][0]["runner"], "far-away", "{node}");
    let show = space.cli(&["show", &there]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("attempts run by runners:\n  w attempt 1: far-away"),
        "{text}"
    );
    let show = space.cli(&["show", &here]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(!text.contains("attempts run by runners"), "{text}");
    let out = space.cli(&["logs", &there, "w"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("--- w attempt 1 (pid -, runner far-away, succeeded)"),
        "{text}"
    );
}

#[test]
fn a_published_workflows_scripts_are_shipped_to_the_runner() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let r = runner(&space, &server, &token, "shipper", "cpus=1");
    let files = json!([
        {"path": "workflow.yaml", "content": "name: shipped\ntasks:\n  - id: hello\n    python: hello.py\n"},
        {"path": "hello.py", "content": "import os\nfrom lib import greet\nprint(greet.hello(), 'in', os.getcwd())\n"},
        {"path": "lib/greet.py", "content": "def hello():\n    return 'hello from lib/greet.py'\n"},
    ]);
    c.json(
        "PUT",
        "/api/v1/workflows/shipped",
        Some(&json!({"message": "scripts", "files": files})),
    )
    .expect("publish");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let run = start(&c, "shipped");
        let done = wait_end(&c, &run);
        assert_eq!(
            done["status"],
            "succeeded",
            "{done}: {}",
            logs(&c, &run, "hello")
        );
        let text = logs(&c, &run, "hello");
        assert!(text.contains("hello from lib/greet.py in"), "{text}");
        assert!(
            text.contains("runner-shipper"),
            "ran in the runner's folder: {text}"
        );
        let node = c.get(&format!("/api/v1/runs/{run}/nodes/hello")).unwrap();
        assert_eq!(node["attempts"][0]["runner"], "shipper", "{node}");
        runs.push(run);
    }
    // Both runs used one folder of those files, fetched once.
    let dir = space.path().join("runner-shipper");
    let trees: Vec<_> = std::fs::read_dir(dir.join(".orch-trees"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    assert!(trees[0].join("lib/greet.py").is_file());
    assert_eq!(
        std::fs::read_dir(dir.join(".orch-files")).unwrap().count(),
        3
    );
    // The files are the attempt's runner's while it holds the attempt
    // only.
    let rc = Client::new(&server.base, Some(token));
    let late = rc
        .call(
            "POST",
            &format!("/api/v1/attempts/{}/hello/1/file", runs[0]),
            Some(&json!({"runner": r.id, "sha256": "0".repeat(64)})),
        )
        .unwrap();
    assert_eq!(late.status, 409, "{}", late.body);
    let bad = rc
        .call(
            "POST",
            &format!("/api/v1/attempts/{}/hello/1/file", runs[0]),
            Some(&json!({"runner": r.id, "sha256": "../../etc/passwd"})),
        )
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn artefacts_are_kept_with_the_run_wherever_its_attempts_ran() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    publish(
        &c,
        "made",
        "name: made\ntasks:\n  - id: rep\n    command: sh -c 'mkdir -p out && echo made in $(pwd) > out/report.txt'\n    produces: [out/report.txt]\n",
    );
    let artefacts = |run: &str| c.get(&format!("/api/v1/runs/{run}/artefacts")).unwrap();
    let download = |run: &str, path: &str| {
        c.call(
            "GET",
            &format!(
                "/api/v1/runs/{run}/artefacts/rep/1?path={}",
                orch::client::encode(path)
            ),
            None,
        )
        .unwrap()
    };
    // No runner: the server ran it and kept its artefact.
    let here = start(&c, "made");
    assert_eq!(wait_end(&c, &here)["status"], "succeeded");
    let listed = artefacts(&here);
    assert_eq!(listed[0]["node"], "rep", "{listed}");
    assert_eq!(listed[0]["path"], "out/report.txt", "{listed}");
    assert_eq!(listed[0]["runner"], "local", "{listed}");
    let got = download(&here, "out/report.txt");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.starts_with("made in "), "{}", got.body);
    assert!(!got.body.contains("runner-"), "{}", got.body);

    // On a runner: uploaded before its end, listed and read the same way.
    let r = runner(&space, &server, &token, "maker", "cpus=1");
    let there = start(&c, "made");
    assert_eq!(wait_end(&c, &there)["status"], "succeeded");
    let listed = artefacts(&there);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["runner"], "maker", "{listed}");
    let got = download(&there, "out/report.txt");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("runner-maker"), "{}", got.body);
    assert_eq!(
        listed[0]["bytes"].as_u64().unwrap(),
        got.body.len() as u64,
        "{listed}"
    );
    // Only listed artefacts are served.
    assert_eq!(download(&there, "../../orch.db").status, 404);
    assert_eq!(download(&there, "out/other.txt").status, 404);

    // Uploads: only by the holder, only what the task produces.
    publish(
        &c,
        "held",
        "name: held\ntasks:\n  - id: h\n    command: sh -c 'echo $$ > h.pid; exec sleep 300'\n    produces: [h.txt]\n",
    );
    let run = start(&c, "held");
    poll("the runner holds it", || {
        let node = c.get(&format!("/api/v1/runs/{run}/nodes/h")).unwrap();
        (node["state"] == "running"
            && std::fs::metadata(space.path().join("runner-maker/h.pid")).is_ok())
        .then_some(node)
    });
    let rc = Client::new(&server.base, Some(token.clone()));
    let upload = |path: &str, runner: &str| {
        let url = format!(
            "/api/v1/attempts/{run}/h/1/artefact?runner={}&path={}",
            orch::client::encode(runner),
            orch::client::encode(path)
        );
        rc.post_raw(&url, b"forged".to_vec())
    };
    let e = upload("../../escape.txt", &r.id).unwrap_err().to_string();
    assert!(
        e.contains("400") || e.contains("only the files its task `produces`"),
        "{e}"
    );
    let e = upload("h.txt", "someone-else").unwrap_err().to_string();
    assert!(e.contains("someone-else"), "{e}");
    c.post(&format!("/api/v1/runs/{run}/cancel"), &json!({}))
        .unwrap();
    assert_eq!(wait_end(&c, &run)["status"], "cancelled");
    // A late upload is fenced.
    let e = upload("h.txt", &r.id).unwrap_err().to_string();
    assert!(e.contains("409") || e.contains("no attempt"), "{e}");
    assert_eq!(artefacts(&run), json!([]));
}

/// Stand-ins for SLURM's `sbatch`, `squeue`, `sacct` and `scancel`
/// (SLURM is not installed here): `sbatch` runs the job script in the
/// background in a session of its own, the others read and write its
/// state in a folder (`FAKE_SLURM_STATE`), and every call is logged in
/// `calls`. Returns the folder to put first on `PATH` and the state
/// folder.
fn fake_slurm(space: &Space) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = space.path().join("fake-slurm/bin");
    let state = space.path().join("fake-slurm/state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let scripts = [
        (
            "sbatch",
            r#"#!/bin/sh
S="$FAKE_SLURM_STATE"; out=/dev/null; script=
echo "sbatch $*" >> "$S/calls"
for a in "$@"; do
  case "$a" in
    --output=*) out="${a#--output=}";;
    --chdir=*) cd "${a#--chdir=}" || exit 1;;
    --*) ;;
    *) script="$a";;
  esac
done
n=$(( $(cat "$S/next" 2>/dev/null || echo 0) + 1 )); echo $n > "$S/next"
echo RUNNING > "$S/$n.state"
setsid sh -c 'sh "$1" > "$2" 2>&1; s=$?; if [ "$(cat "$3")" = RUNNING ]; then if [ $s = 0 ]; then echo COMPLETED; else echo FAILED; fi > "$3"; fi' _ "$script" "$out" "$S/$n.state" < /dev/null > /dev/null 2>&1 &
echo $! > "$S/$n.pid"
echo "$n"
"#,
        ),
        (
            "squeue",
            r#"#!/bin/sh
S="$FAKE_SLURM_STATE"; id=
while [ $# -gt 0 ]; do case "$1" in -j) id="$2"; shift;; esac; shift; done
if [ "$(cat "$S/$id.state" 2>/dev/null)" = RUNNING ] && kill -0 "$(cat "$S/$id.pid")" 2>/dev/null; then echo RUNNING; fi
exit 0
"#,
        ),
        (
            "sacct",
            r#"#!/bin/sh
S="$FAKE_SLURM_STATE"; id=
while [ $# -gt 0 ]; do case "$1" in -j) id="$2"; shift;; esac; shift; done
state=$(cat "$S/$id.state" 2>/dev/null)
# Its processes died under it (a node failed).
if [ "$state" = RUNNING ] && ! kill -0 "$(cat "$S/$id.pid")" 2>/dev/null; then state=NODE_FAIL; fi
echo "$state"
exit 0
"#,
        ),
        (
            "scancel",
            r#"#!/bin/sh
S="$FAKE_SLURM_STATE"
echo "scancel $*" >> "$S/calls"
echo CANCELLED > "$S/$1.state"
kill -TERM -- -"$(cat "$S/$1.pid")" 2>/dev/null
exit 0
"#,
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, state)
}

/// A task that speaks the protocol over the job's files: a mutation,
/// answered by the engine, then its output.
const BATCH: &str = r#"name: batch
tasks:
  - id: batch
    requires: {labels: [exec=slurm], cpu: 2}
    command:
      - sh
      - -c
      - |
        head -n 1 >/dev/null
        echo "on the batch system as $ORCH_NODE"
        echo '{"orch": 1, "type": "add_node", "seq": 1, "id": "child", "task": {"kind": "command", "argv": ["true"]}}'
        head -n 1 | sed 's/^/got /'
        echo '{"orch": 1, "type": "output", "seq": 2, "value": {"n": 7}}'
        echo to stderr >&2
"#;

#[test]
fn an_exec_slurm_runner_hands_its_attempts_to_slurm() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve_with_short_leases(&space);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let (bin, state) = fake_slurm(&space);
    let mut path = std::ffi::OsString::from(&bin);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let _r = runner_with(
        &space,
        &server,
        &token,
        "hpc",
        "cpus=4,exec=slurm",
        &[("PATH", path), ("FAKE_SLURM_STATE", state.clone().into())],
    );
    publish(&c, "batch", BATCH);
    let run = start(&c, "batch");
    let done = wait_end(&c, &run);
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}: {}",
        logs(&c, &run, "batch")
    );
    let text = logs(&c, &run, "batch");
    assert!(text.contains("on the batch system as batch"), "{text}");
    assert!(
        text.contains(r#"got {\"orch\":1,\"type\":\"ack\",\"seq\":1}"#),
        "the engine's answer came back through the job's files: {text}"
    );
    assert!(text.contains("to stderr"), "{text}");
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/batch")).unwrap();
    assert_eq!(node["output"], json!({"n": 7}), "{node}");
    assert_eq!(node["attempts"][0]["runner"], "hpc", "{node}");
    let child = c.get(&format!("/api/v1/runs/{run}/nodes/child")).unwrap();
    assert_eq!(child["state"], "succeeded", "{child}");
    // Both attempts were submitted, the first with its requirements.
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    let submitted: Vec<&str> = calls.lines().filter(|l| l.starts_with("sbatch")).collect();
    assert_eq!(submitted.len(), 2, "{calls}");
    assert!(submitted[0].contains("--parsable"), "{calls}");
    assert!(submitted[0].contains("--cpus-per-task=2"), "{calls}");

    // Cancelling the run cancels the job.
    publish(
        &c,
        "long",
        "name: long\ntasks:\n  - id: nap\n    command: sh -c 'echo napping; exec sleep 300'\n    requires: {labels: [exec=slurm]}\n",
    );
    let run = start(&c, "long");
    poll("the job runs", || {
        let text = logs(&c, &run, "nap");
        text.contains("napping").then_some(Value::from(text))
    });
    c.post(&format!("/api/v1/runs/{run}/cancel"), &json!({}))
        .unwrap();
    assert_eq!(wait_end(&c, &run)["status"], "cancelled");
    poll("the runner cancels the job", || {
        let calls = std::fs::read_to_string(state.join("calls")).unwrap_or_default();
        calls.contains("scancel 3").then_some(Value::from(calls))
    });
    assert_eq!(
        std::fs::read_to_string(state.join("3.state"))
            .unwrap()
            .trim(),
        "CANCELLED"
    );

    // A job that leaves the queue without the task's exit ended on
    // SLURM's side: the attempt breaks, with the state `sacct` gives.
    publish(
        &c,
        "lost",
        "name: lost\ntasks:\n  - id: gone\n    command: sh -c 'kill -9 0'\n    requires: {labels: [exec=slurm]}\n",
    );
    let run = start(&c, "lost");
    assert_eq!(wait_end(&c, &run)["status"], "failed");
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/gone")).unwrap();
    let error = node["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SLURM job 4 ended NODE_FAIL before the task reported its exit"),
        "{node}"
    );
}

#[test]
fn a_pipeline_folders_files_are_shipped_to_the_runner() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let folder = space.path().join("pipelines");
    std::fs::create_dir_all(folder.join("lib")).unwrap();
    std::fs::write(
        folder.join("folded.yaml"),
        "name: folded\nevents: [folded.go]\ntasks:\n  - id: hello\n    python: hello.py\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("hello.py"),
        "import os\nfrom lib import greet\nprint(greet.hello(), 'in', os.getcwd())\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("lib/greet.py"),
        "def hello():\n    return 'hello from the folder'\n",
    )
    .unwrap();
    std::env::set_var("ORCH_RUNNER_LEASE_MS", LEASE_MS);
    let server = serve(&space, &["--pipelines", folder.to_str().unwrap()]);
    let token = runner_token(&space);
    let c = Client::new(&server.base, Some(admin));
    let _r = runner(&space, &server, &token, "folder-fed", "cpus=1");
    c.post("/api/v1/events", &json!({"key": "folded.go"}))
        .expect("push");
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let runs = c.get("/api/v1/runs?workflow=folded").unwrap();
        if let Some(id) = runs["runs"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the event started no run: {runs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let done = wait_end(&c, &run);
    let text = logs(&c, &run, "hello");
    assert_eq!(done["status"], "succeeded", "{done}: {text}");
    assert!(text.contains("hello from the folder in"), "{text}");
    assert!(
        text.contains("runner-folder-fed"),
        "ran in the runner's folder: {text}"
    );
    let export = c.get(&format!("/api/v1/runs/{run}/export")).unwrap();
    let source = &export["source"];
    assert!(
        source["commit"]
            .as_str()
            .unwrap_or_default()
            .starts_with("folder:"),
        "{source}"
    );
    let mut shipped: Vec<&str> = source["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    shipped.sort();
    assert_eq!(shipped, ["folded.yaml", "hello.py", "lib/greet.py"]);
}
