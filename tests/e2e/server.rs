//! `orch serve` over real HTTP on a random loopback port: the seed's
//! calls, the role matrix, workflows under git with runs pinned to their
//! commit, cancel, a kill -9 of the server in the middle of a run, and bad
//! input.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orch::client::{encode, Client};
use orch::Store;
use serde_json::{json, Value};

use crate::util::{alive, kill9, spawn_announcing, Space};

/// A server child process on the space's database.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orch serve --listen 127.0.0.1:0` and reads its address.
pub fn serve(space: &Space, extra: &[&str]) -> Served {
    let log = space.path().join(format!(
        "server-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let announced = spawn_announcing(
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("ORCH_DB", space.db())
            .env("RUST_LOG", "info")
            .current_dir(space.path()),
        &log,
        "listening on ",
        "",
    );
    let (child, base) = (announced.child, announced.said);
    Served { child, base, log }
}

/// Adds a user with the CLI (password on stdin) and makes a token for it.
pub fn user_token(space: &Space, name: &str, role: &str) -> String {
    let mut add = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["user", "add", name, "--role", role])
        .env("ORCH_DB", space.db())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{name}-secret-pw\n").as_bytes())
        .unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = space.cli(&["token", "create", "--user", name, "--name", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("orch_"), "{text}");
    token
}

fn status_of(c: &Client, method: &str, path: &str, body: Option<&Value>) -> u16 {
    c.call(method, path, body)
        .expect("the server answers")
        .status
}

/// Waits for a run to end through the API's `wait`.
fn wait_run(c: &Client, run: &str) -> Value {
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

/// Polls a run's status until `done` holds.
fn wait_status(c: &Client, run: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = c.get(&format!("/api/v1/runs/{run}")).expect("status");
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn publish(c: &Client, name: &str, yaml: &str, message: &str) -> Value {
    c.json(
        "PUT",
        &format!("/api/v1/workflows/{name}"),
        Some(&json!({"message": message, "files": [{"path": "workflow.yaml", "content": yaml}]})),
    )
    .expect("publish")
}

const HELLO_V1: &str = "name: hello\ntasks:\n  - id: greet\n    command: echo hello-v1\n";
const HELLO_V2: &str = "name: hello\ntasks:\n  - id: greet\n    command: echo hello-v2\n";

#[test]
fn the_seed_calls_work_over_http() {
    let space = Space::new();
    let admin = user_token(&space, "ada", "admin");
    let server = serve(&space, &[]);
    let anon = Client::new(&server.base, None);
    let c = Client::new(&server.base, Some(admin.clone()));

    // status and the OpenAPI document need no token.
    let st = anon.get("/api/v1/status").unwrap();
    assert_eq!(st["store"]["ok"], true, "{st}");
    let doc = anon.get("/api/v1/openapi.json").unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/api/v1/runs/{run}/wait"]["get"].is_object());
    // Everything else does.
    assert_eq!(status_of(&anon, "GET", "/api/v1/runs", None), 401);

    // A password login gives a working token.
    let login = anon
        .post(
            "/api/v1/auth/token",
            &json!({"user": "ada", "password": "ada-secret-pw"}),
        )
        .unwrap();
    let t2 = login["token"].as_str().unwrap();
    assert!(Client::new(&server.base, Some(t2.into()))
        .get("/api/v1/runs")
        .is_ok());
    assert_eq!(
        status_of(
            &anon,
            "POST",
            "/api/v1/auth/token",
            Some(&json!({"user": "ada", "password": "wrong-password"}))
        ),
        401
    );

    // Publish = a commit; history hashes are git's own.
    let v1 = publish(&c, "hello", HELLO_V1, "first");
    assert_eq!(v1["changed"], true);
    let c1 = v1["version"]["commit"].as_str().unwrap().to_string();
    assert_eq!(v1["version"]["author"], "ada");
    let run1 = c.post("/api/v1/workflows/hello/runs", &json!({})).unwrap();
    assert_eq!(run1["commit"], c1.as_str());
    let run1 = run1["run"].as_str().unwrap().to_string();
    let v2 = publish(&c, "hello", HELLO_V2, "second");
    let c2 = v2["version"]["commit"].as_str().unwrap().to_string();
    assert_ne!(c1, c2);
    let hist = c.get("/api/v1/workflows/hello/history").unwrap();
    let hashes: Vec<&str> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["commit"].as_str().unwrap())
        .collect();
    let git = Command::new("git")
        .args(["--git-dir"])
        .arg(space.path().join("server/workflows.git"))
        .args(["log", "--format=%H", "--", "workflows/hello"])
        .output()
        .unwrap();
    let git = String::from_utf8(git.stdout).unwrap();
    assert_eq!(hashes, git.lines().collect::<Vec<_>>());
    assert_eq!(hashes, vec![c2.as_str(), c1.as_str()]);

    // The first run stays pinned to the first commit, even after the
    // newer publish: its output is v1's, its export names the commit and
    // the file's hash.
    let done = wait_run(&c, &run1);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["source"]["commit"], c1.as_str());
    let export = c.get(&format!("/api/v1/runs/{run1}/export")).unwrap();
    assert_eq!(export["source"]["commit"], c1.as_str());
    let sha = export["source"]["files"]["workflow.yaml"].as_str().unwrap();
    let old = c.get(&format!("/api/v1/workflows/hello?at={c1}")).unwrap();
    assert_eq!(old["files"][0]["content"], HELLO_V1);
    assert_eq!(old["files"][0]["sha256"], sha);
    let logs = c
        .get(&format!("/api/v1/runs/{run1}/nodes/greet/logs"))
        .unwrap();
    assert!(logs.to_string().contains("hello-v1"), "{logs}");

    // A run of the newest version, and one started at the old commit.
    let run2 = c
        .post("/api/v1/runs", &json!({"workflow": "hello"}))
        .unwrap();
    assert_eq!(run2["commit"], c2.as_str());
    let run2 = run2["run"].as_str().unwrap().to_string();
    wait_run(&c, &run2);
    let logs = c
        .get(&format!("/api/v1/runs/{run2}/nodes/greet/logs"))
        .unwrap();
    assert!(logs.to_string().contains("hello-v2"), "{logs}");
    let run3 = c
        .post(
            "/api/v1/runs",
            &json!({"workflow": "hello", "commit": &c1[..12]}),
        )
        .unwrap();
    assert_eq!(run3["commit"], c1.as_str());
    wait_run(&c, run3["run"].as_str().unwrap());

    // The run list filters and pages.
    let list = c
        .get("/api/v1/runs?workflow=hello&status=succeeded&limit=2")
        .unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    let next = list["next"].as_str().unwrap();
    let rest = c
        .get(&format!(
            "/api/v1/runs?workflow=hello&limit=2&before={next}"
        ))
        .unwrap();
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    // And by creation time: RFC 3339 or milliseconds, at or after, before.
    let all = c.get("/api/v1/runs?workflow=hello").unwrap();
    let all = all["runs"].as_array().unwrap().clone();
    assert_eq!(all.len(), 3, "{all:?}");
    let ms = |r: &Value| orch::time::parse_millis(r["created_at"].as_str().unwrap()).unwrap();
    let ids = |q: &str| -> Vec<String> {
        let l = c.get(&format!("/api/v1/runs?workflow=hello&{q}")).unwrap();
        l["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |f: &dyn Fn(u64) -> bool| -> Vec<String> {
        all.iter()
            .filter(|r| f(ms(r)))
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (newest, oldest) = (ms(&all[0]), ms(&all[2]));
    let newest_text = all[0]["created_at"].as_str().unwrap();
    assert_eq!(
        ids(&format!("created_after={newest_text}")),
        want(&|t| t >= newest)
    );
    assert_eq!(
        ids(&format!("created_after={newest}")),
        want(&|t| t >= newest)
    );
    assert_eq!(
        ids(&format!("created_before={newest}")),
        want(&|t| t < newest)
    );
    assert_eq!(
        ids(&format!(
            "created_after={oldest}&created_before={}",
            newest + 1
        ))
        .len(),
        3
    );
    assert!(ids(&format!("created_after={}", newest + 1)).is_empty());

    // Nodes, events, the outlook and the picture at any event, and the
    // event stream of an ended run (all its events, then the end).
    let nodes = c.get(&format!("/api/v1/runs/{run1}/nodes")).unwrap();
    assert_eq!(nodes[0]["id"], "greet");
    assert_eq!(nodes[0]["state"], "succeeded");
    let events = c.get(&format!("/api/v1/runs/{run1}/events")).unwrap();
    let n = events.as_array().unwrap().len();
    assert!(n >= 4, "{events}");
    let outlook = c.get(&format!("/api/v1/runs/{run1}/outlook?at=2")).unwrap();
    assert!(outlook.is_object());
    let svg = c
        .call("GET", &format!("/api/v1/runs/{run1}/picture"), None)
        .unwrap();
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(svg.body.contains("<svg"));
    let stream = c
        .call("GET", &format!("/api/v1/runs/{run1}/stream"), None)
        .unwrap();
    assert_eq!(
        stream.body.matches("\ndata: ").count() + usize::from(stream.body.starts_with("data: ")),
        n,
        "{}",
        stream.body
    );
    assert_eq!(
        status_of(
            &c,
            "GET",
            &format!("/api/v1/runs/{run1}/outlook?at=9999"),
            None
        ),
        422
    );

    // Runs can also be submitted as a definition (a Rust program's).
    let mut wf = orch::Workflow::new("submitted");
    wf.node("a", orch::Task::command(["echo", "from-rust"]));
    let r = wf.submit(&c).unwrap();
    let done = wait_run(&c, &r);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["source"].is_null());

    // Events and timers.
    let pushed = c
        .post(
            "/api/v1/events",
            &json!({"key": "orders", "payload": {"id": 7}}),
        )
        .unwrap();
    assert_eq!(pushed["key"], "orders");
    let listed = c.get("/api/v1/events").unwrap();
    assert_eq!(listed[0]["payload"]["id"], 7);
    let timer = c
        .post(
            "/api/v1/timers",
            &json!({"workflow": "hello", "cron": "0 0 * * * *", "timezone": "Europe/Paris"}),
        )
        .unwrap();
    assert_eq!(timer["status"], "active");
    assert!(timer["next_fire"].is_string());
    let id = timer["id"].as_i64().unwrap();
    assert_eq!(
        status_of(&c, "DELETE", &format!("/api/v1/timers/{id}"), None),
        204
    );
    assert_eq!(c.get("/api/v1/timers").unwrap()[0]["status"], "stopped");

    // Delete is a commit; every version stays readable.
    let del = c
        .json("DELETE", "/api/v1/workflows/hello?message=retire", None)
        .unwrap();
    assert_eq!(del["deleted"], true);
    assert_eq!(status_of(&c, "GET", "/api/v1/workflows/hello", None), 404);
    assert!(c.get(&format!("/api/v1/workflows/hello?at={c2}")).is_ok());
    assert_eq!(
        c.get("/api/v1/workflows/hello/history").unwrap()["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // An ended run has its end, not an expected one.
    let st = c.get(&format!("/api/v1/runs/{run2}")).unwrap();
    assert!(st["expected"].is_null(), "{st}");

    // No token reached the server's log.
    let log = server.log.clone();
    drop(server);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains(&admin[5..]), "a token is in the log");
    assert!(!log.contains(&t2[5..]), "a token is in the log");
}

#[test]
fn every_route_enforces_its_role() {
    let space = Space::new();
    let tokens = [
        ("admin", user_token(&space, "root", "admin")),
        ("operator", user_token(&space, "olga", "operator")),
        ("viewer", user_token(&space, "vic", "viewer")),
    ];
    // A runner token of the admin's.
    let out = space.cli(&["token", "create", "--user", "root", "--runner"]);
    let runner = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    // Runner calls name a runner the runner token registered (its id
    // starts with the token's), so that only the role decides here.
    let token_id = runner.split('_').nth(1).unwrap().to_string();
    let server = serve(&space, &[]);
    let anon = Client::new(&server.base, None);
    let body = json!({});
    for (method, template, access) in orch::server::auth::ROUTES {
        if *template == "/api/v1/admin/shutdown" {
            continue; // called last, below
        }
        let id = if template.starts_with("/api/v1/runners/") {
            format!("{token_id}-1")
        } else {
            "1".to_string()
        };
        let path = template
            .replace("{run}", "no-such-run")
            .replace("{node}", "n")
            .replace("{name}", "wf")
            .replace("{id}", &id);
        let send = (*method != "GET").then_some(&body);
        let code = status_of(&anon, method, &path, send);
        let needs = match access {
            orch::server::auth::Access::Public => None,
            orch::server::auth::Access::Needs(p) => Some(*p),
        };
        match needs {
            None => assert_ne!(code, 401, "{method} {template} is public"),
            Some(_) => assert_eq!(code, 401, "{method} {template} without a token"),
        }
        let Some(p) = needs else { continue };
        for (role, token) in tokens.iter().chain([&("runner", runner.clone())]) {
            let c = Client::new(&server.base, Some(token.clone()));
            let code = status_of(&c, method, &path, send);
            let allowed = role.parse::<orch::access::Role>().unwrap().grants(p);
            if allowed {
                assert!(
                    code != 401 && code != 403,
                    "{role} may {method} {template}, got {code}"
                );
            } else {
                assert_eq!(code, 403, "{role} may not {method} {template}");
            }
            assert!(code < 500, "{role} {method} {template}: {code}");
        }
    }
    // Viewers and operators cannot shut the server down; an admin can.
    for (role, token) in &tokens[1..] {
        let c = Client::new(&server.base, Some(token.clone()));
        assert_eq!(
            status_of(&c, "POST", "/api/v1/admin/shutdown", None),
            403,
            "{role}"
        );
    }
    let c = Client::new(&server.base, Some(tokens[0].1.clone()));
    assert_eq!(status_of(&c, "POST", "/api/v1/admin/shutdown", None), 202);
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn tokens_are_scoped_revocable_and_expire() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve(&space, &[]);
    let c = Client::new(&server.base, Some(admin));
    // A read-only token of an admin reads but changes nothing.
    let t = c
        .post("/api/v1/tokens", &json!({"name": "ro", "scopes": ["read"]}))
        .unwrap();
    let ro = Client::new(&server.base, Some(t["token"].as_str().unwrap().into()));
    assert!(ro.get("/api/v1/runs").is_ok());
    assert_eq!(
        status_of(&ro, "POST", "/api/v1/events", Some(&json!({"key": "k"}))),
        403
    );
    // It cannot mint itself more.
    assert_eq!(
        status_of(
            &ro,
            "POST",
            "/api/v1/tokens",
            Some(&json!({"scopes": ["operate"]}))
        ),
        403
    );
    // Revoked: refused at once.
    let id = t["id"].as_str().unwrap();
    assert_eq!(
        status_of(&c, "DELETE", &format!("/api/v1/tokens/{id}"), None),
        204
    );
    assert_eq!(status_of(&ro, "GET", "/api/v1/runs", None), 401);
    // Expired: refused.
    let t = c
        .post("/api/v1/tokens", &json!({"expires": "0.001"}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let old = Client::new(&server.base, Some(t["token"].as_str().unwrap().into()));
    assert_eq!(status_of(&old, "GET", "/api/v1/runs", None), 401);
    // Users through the API; a removed user's tokens die with them.
    c.post(
        "/api/v1/users",
        &json!({"name": "bob", "role": "viewer", "password": "bob-password"}),
    )
    .unwrap();
    assert_eq!(
        status_of(
            &c,
            "POST",
            "/api/v1/users",
            Some(&json!({"name": "bob", "role": "viewer", "password": "bob-password"}))
        ),
        409
    );
    let login = Client::new(&server.base, None)
        .post(
            "/api/v1/auth/token",
            &json!({"user": "bob", "password": "bob-password"}),
        )
        .unwrap();
    let bob = Client::new(&server.base, Some(login["token"].as_str().unwrap().into()));
    assert!(bob.get("/api/v1/runs").is_ok());
    let listed = c.get("/api/v1/tokens?user=*").unwrap();
    assert!(!listed
        .to_string()
        .contains(login["token"].as_str().unwrap()));
    assert_eq!(status_of(&c, "DELETE", "/api/v1/users/bob", None), 204);
    assert_eq!(status_of(&bob, "GET", "/api/v1/runs", None), 401);
}

#[test]
fn cancel_kills_running_attempts_in_one_call() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve(&space, &[]);
    let c = Client::new(&server.base, Some(admin));
    publish(
        &c,
        "slow",
        "name: slow\ntasks:\n  - id: nap\n    command: sleep 300\n",
        "a long nap",
    );
    let run = c.post("/api/v1/workflows/slow/runs", &json!({})).unwrap();
    let run = run["run"].as_str().unwrap().to_string();
    let st = wait_status(&c, &run, "the nap starts", |s| {
        s["nodes"][0]["state"] == "running"
    });
    // A running run's status carries its expected times (the nap has no
    // history yet: listed, without times, and said to be partial).
    assert_eq!(st["expected"]["run"], run.as_str(), "{st}");
    assert_eq!(st["expected"]["partial"], true, "{st}");
    assert_eq!(st["expected"]["nodes"][0]["node"], "nap", "{st}");
    let node = c.get(&format!("/api/v1/runs/{run}/nodes/nap")).unwrap();
    let pid = node["attempts"][0]["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    let r = c
        .post(&format!("/api/v1/runs/{run}/cancel"), &json!({}))
        .unwrap();
    assert_eq!(r["signal"], "cancel");
    let done = wait_run(&c, &run);
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        crate::util::gone_within(pid, 10),
        "the attempt's process is gone"
    );
    // A run that ended takes no more signals.
    assert_eq!(
        status_of(&c, "POST", &format!("/api/v1/runs/{run}/cancel"), None),
        409
    );
}

#[test]
fn a_run_survives_a_killed_server_and_ends_once() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let mut server = serve(&space, &[]);
    let c = Client::new(&server.base, Some(admin.clone()));
    let marker = space.path().join("go");
    let yaml = format!(
        "name: chain\ntasks:\n  - id: a\n    command: echo a\n  - id: b\n    command: \"while [ ! -e {m} ]; do sleep 0.05; done; echo b\"\n    after: [a]\n  - id: c\n    command: echo c\n    after: [b]\n",
        m = marker.display()
    );
    publish(&c, "chain", &yaml, "a chain");
    let run = c.post("/api/v1/workflows/chain/runs", &json!({})).unwrap();
    let run = run["run"].as_str().unwrap().to_string();
    wait_status(&c, &run, "b starts", |s| {
        s["nodes"][1]["state"] == "running"
    });
    kill9(&mut server.child);
    // The run is left as the dead server had it; a new server adopts it.
    std::fs::write(&marker, "").unwrap();
    let again = serve(&space, &[]);
    let c = Client::new(&again.base, Some(admin));
    let done = wait_run(&c, &run);
    assert_eq!(done["status"], "succeeded", "{done}");
    let ex = space.export(&run);
    crate::util::assert_each_succeeded_once(&ex, "after the adoption");
    let ended = space
        .store()
        .events(&run, None)
        .unwrap()
        .iter()
        .filter(|e| matches!(&e.kind, orch::EventKind::RunStatus { status, .. } if status.is_terminal()))
        .count();
    assert_eq!(ended, 1, "the run ended exactly once");
    let log = std::fs::read_to_string(&again.log).unwrap();
    assert!(log.contains("adopted"), "{log}");
}

#[test]
fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let space = Space::new();
    let admin = user_token(&space, "root", "admin");
    let server = serve(&space, &[]);
    let c_token = admin.clone();
    let c = Client::new(&server.base, Some(admin));
    let err = |method: &str, path: &str, body: Option<Value>| {
        let r = c.call(method, path, body.as_ref()).unwrap();
        assert!(
            (400..500).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        let v = r.json();
        assert!(
            v["error"]["code"].is_string(),
            "{method} {path}: {}",
            r.body
        );
        (
            r.status,
            v["error"]["message"].as_str().unwrap_or("").to_string(),
        )
    };
    // Unknown fields and wrong types name the field.
    let (s, m) = err(
        "POST",
        "/api/v1/events",
        Some(json!({"key": "k", "colour": 1})),
    );
    assert_eq!(s, 400);
    assert!(m.contains("colour"), "{m}");
    let (_, m) = err("POST", "/api/v1/runs", Some(json!({"workflow": 7})));
    assert!(m.contains("workflow"), "{m}");
    let (_, m) = err(
        "POST",
        "/api/v1/timers",
        Some(json!({"workflow": "w", "cron": "61 * * * *"})),
    );
    assert!(
        m.contains("61") || m.contains("minute") || m.contains("cron"),
        "{m}"
    );
    err("GET", "/api/v1/runs?limit=0", None);
    err("GET", "/api/v1/runs?limit=x", None);
    err("GET", "/api/v1/runs?status=sleeping", None);
    err("GET", "/api/v1/runs?sort=asc", None);
    for bad in [
        "created_after=yesterday",
        "created_after=1969-12-31T23:59:59Z",
        "created_after=99999999999999999999",
        "created_before=2026-11-30",
    ] {
        let (s, m) = err("GET", &format!("/api/v1/runs?{bad}"), None);
        let param = bad.split('=').next().unwrap();
        assert_eq!(s, 400, "{bad}");
        assert!(
            m.contains(&format!("query parameter `{param}`")),
            "{bad}: {m}"
        );
    }
    err("GET", "/api/v1/runs/no-such-run", None);
    err("GET", "/api/v1/runs/no-such-run/wait?timeout=1e9", None);
    err("GET", "/api/v1/nope", None);
    err("PATCH", "/api/v1/runs", None);
    // Not JSON, too deep, too big.
    let r = c.call("POST", "/api/v1/events", None).unwrap();
    assert_eq!(r.status, 415);
    let deep = "[".repeat(100) + &"]".repeat(100);
    let (_, m) = err(
        "POST",
        "/api/v1/events",
        Some(
            json!({"key": "k", "payload": serde_json::from_str::<Value>(&deep).unwrap_or(Value::Null)}),
        ),
    );
    assert!(
        m.contains("depth") || m.contains("deep") || m.contains("nest"),
        "{m}"
    );
    // A body past the limit is refused (the server may answer before the
    // client finished sending it: a broken pipe on the way is fine).
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {c_token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b' '; 2 << 20]);
    });
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    while !reply.contains("payload_too_large") {
        match std::io::Read::read(&mut tcp, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = sender.join();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");
    // Path tricks in workflow names.
    for name in [
        "..",
        "%2E%2E",
        "a%2F..%2Fb",
        "%2Fetc",
        "a%00b",
        ".git",
        "-rf",
    ] {
        let (s, _) = err(
            "PUT",
            &format!("/api/v1/workflows/{name}"),
            Some(
                json!({"message": "m", "files": [{"path": "workflow.yaml", "content": HELLO_V1}]}),
            ),
        );
        assert!(s == 400 || s == 404, "{name}: {s}");
    }
    for path in [
        "../x.py",
        "/etc/passwd",
        "a/../../b",
        "a\\b",
        "a\u{0}b",
        ".git/config",
    ] {
        err(
            "PUT",
            "/api/v1/workflows/ok",
            Some(json!({"message": "m", "files": [
                {"path": "workflow.yaml", "content": HELLO_V1},
                {"path": path, "content": "x"}]})),
        );
    }
    // A workflow that does not compile is refused whole, naming the line.
    let (s, m) = err(
        "PUT",
        "/api/v1/workflows/broken",
        Some(
            json!({"message": "m", "files": [{"path": "workflow.yaml", "content": "name: x\ntasks:\n  - nme: a\n"}]}),
        ),
    );
    assert_eq!(s, 422, "{m}");
    assert!(
        m.contains("`broken` does not load: workflow.yaml:3:5: unknown field `nme`"),
        "{m}"
    );
    // Nothing of that reached the repository.
    assert!(c
        .get("/api/v1/workflows")
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    // Concurrent publishes of one workflow: every one lands, in one line.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let yaml = format!("name: race\ntasks:\n  - id: t\n    command: echo {i}\n");
                publish(&c, "race", &yaml, &format!("version {i}"))
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap()["changed"], true);
    }
    let hist = c.get("/api/v1/workflows/race/history").unwrap();
    assert_eq!(hist["versions"].as_array().unwrap().len(), 6);
    let fsck = Command::new("git")
        .arg("--git-dir")
        .arg(space.path().join("server/workflows.git"))
        .args(["fsck", "--strict"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    // An input for a node that does not exist, a signal for a run that
    // does not exist.
    err("POST", "/api/v1/runs/nope/cancel", None);
    err(
        "POST",
        &format!("/api/v1/runs/{}/nodes/x/input", encode("nope")),
        Some(json!({"value": 1})),
    );
}

/// `orch --server URL …` with `ORCH_TOKEN`.
fn remote(space: &Space, base: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("--server")
        .arg(base)
        .args(args)
        .env("ORCH_TOKEN", token)
        .env_remove("ORCH_DB")
        .current_dir(space.path())
        .output()
        .expect("orch runs")
}

#[test]
fn the_cli_speaks_to_a_server_as_to_a_database() {
    let space = Space::new();
    let token = user_token(&space, "ada", "operator");
    let server = serve(&space, &[]);
    space.write("greet.yaml", HELLO_V1);
    space.write("tool.sh", "echo tool\n");
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = ok(remote(
        &space,
        &server.base,
        &token,
        &["publish", "greet.yaml", "--with", "tool.sh", "-m", "first"],
    ));
    assert!(text.starts_with("published `greet` as "), "{text}");
    let commit = text.trim().rsplit(' ').next().unwrap().to_string();
    let text = ok(remote(&space, &server.base, &token, &["history", "greet"]));
    assert!(text.starts_with(&commit), "{text}");
    assert!(text.contains("ada") && text.contains("first"), "{text}");
    // A run of a file: the exit code is the run's.
    let text = ok(remote(&space, &server.base, &token, &["run", "greet.yaml"]));
    assert!(text.contains(" succeeded"), "{text}");
    let run = text.split_whitespace().nth(1).unwrap().to_string();
    space.write(
        "fails.yaml",
        "name: fails\ntasks:\n  - id: no\n    command: \"exit 3\"\n",
    );
    let out = remote(&space, &server.base, &token, &["run", "fails.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(" failed"));
    // The same listing, show and logs as against the database.
    let listed = ok(remote(
        &space,
        &server.base,
        &token,
        &["runs", "--workflow", "hello"],
    ));
    let local = ok(space.cli(&["runs", "--workflow", "hello"]));
    assert_eq!(
        listed.lines().skip(1).collect::<Vec<_>>(),
        local.lines().skip(1).collect::<Vec<_>>()
    );
    let shown = ok(remote(&space, &server.base, &token, &["show", &run]));
    let local = ok(space.cli(&["show", &run]));
    assert_eq!(shown, local);
    let logs = ok(remote(
        &space,
        &server.base,
        &token,
        &["logs", &run, "greet"],
    ));
    assert!(logs.contains("hello-v1"), "{logs}");
    let svg = ok(remote(
        &space,
        &server.base,
        &token,
        &["export", &run, "--format", "svg"],
    ));
    assert!(svg.contains("<svg"));
    let text = ok(remote(
        &space,
        &server.base,
        &token,
        &["event", "push", "k", "{\"a\":1}"],
    ));
    assert!(text.starts_with("pushed event 1 under `k`"), "{text}");
    // Commands that need a database say so; a bad token is refused.
    let out = remote(&space, &server.base, &token, &["resume", &run]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not with --server"));
    let out = remote(&space, &server.base, "orch_bad", &["runs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
