//! Two `orch serve` processes on one PostgreSQL database and three
//! `orch runner` processes with different capabilities, all real
//! processes over loopback. The runners talk to server B; the run is
//! started on server A, so every report they send crosses from B to A
//! (forwarded to the run's owner). A runner is killed with `kill -9` in
//! the middle of an attempt, another is paused (SIGSTOP) past its lease
//! and woken, and server A is killed with `kill -9` while a runner holds
//! an attempt: server B adopts the run, re-attaches to that attempt
//! instead of running it again, and finishes the run. Every node ends
//! with exactly one successful attempt, each attempt ran on a runner
//! whose capabilities satisfy its requirements, and no late report is
//! accepted. Everything is asserted on the recorded history, the
//! runners' logs and the API's answers, never on wall-clock time.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch::client::Client;
use orch::store::PgStore;
use orch::{AttemptOutcome, RunStatus, Store};
use serde_json::{json, Value};

use crate::util::{kill9, spawn_announcing, Space};

/// Runner and claim leases (ms): short, with room for a loaded machine.
const RUNNER_LEASE_MS: &str = "3000";
/// Run leases (ms) of the servers.
const RUN_LEASE_MS: &str = "5000";

struct Proc {
    child: Child,
    /// The first line it printed, past its prefix (a URL, a runner id).
    said: String,
    log: PathBuf,
    /// The rest of its stdout.
    out: BufReader<std::process::ChildStdout>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; a paused one is woken first
        // so that it can be reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn orch(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
    c.env("ORCH_DB", url)
        .env("ORCH_RUNNER_LEASE_MS", RUNNER_LEASE_MS)
        .env("ORCH_RUN_LEASE_MS", RUN_LEASE_MS)
        .env("RUST_LOG", "info")
        .env_remove("ORCH_LABELS");
    c
}

/// Starts `cmd`, logging to `log`, and reads its first line past `prefix`.
fn spawn(mut cmd: Command, log: PathBuf, prefix: &str, suffix: &str) -> Proc {
    let a = spawn_announcing(&mut cmd, &log, prefix, suffix);
    Proc {
        child: a.child,
        said: a.said,
        log,
        out: a.out,
    }
}

fn server(space: &Space, url: &str, name: &str) -> Proc {
    let dir = space.path().join(format!("server-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = orch(url);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&dir);
    spawn(
        cmd,
        space.path().join(format!("server-{name}.log")),
        "listening on ",
        "",
    )
}

fn runner(space: &Space, url: &str, base: &str, token: &str, name: &str, caps: &str) -> Proc {
    let mut cmd = orch(url);
    cmd.args(["runner", "--server", base, "--name", name, "--slots", "2"])
        .args(["--capabilities", caps])
        .arg("--dir")
        .arg(space.path().join(format!("runner-{name}")))
        .env("ORCH_TOKEN", token);
    spawn(
        cmd,
        space.path().join(format!("runner-{name}.log")),
        "runner ",
        " registered",
    )
}

/// A token for a new user (`runner`: a runner token).
fn token(url: &str, space: &Space, user: Option<&str>, runner: bool) -> String {
    if let Some(user) = user {
        let mut add = orch(url)
            .args(["user", "add", user, "--role", "admin"])
            .current_dir(space.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        add.stdin
            .take()
            .unwrap()
            .write_all(b"a long enough password\n")
            .unwrap();
        let out = add.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut args = vec!["token", "create", "--user", "root"];
    if runner {
        args.push("--runner");
    }
    let out = orch(url)
        .args(&args)
        .current_dir(space.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().to_string()
}

fn poll<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines `ran` holds: one per process a task started, `node attempt
/// runner-folder`.
fn ran(gates: &Path) -> Vec<(String, u32, String)> {
    std::fs::read_to_string(gates.join("ran"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().unwrap().to_string(),
                w.next().unwrap().parse().unwrap(),
                w.next().unwrap().to_string(),
            )
        })
        .collect()
}

fn started(gates: &Path, node: &str, attempt: u32) -> Option<String> {
    ran(gates)
        .into_iter()
        .find(|(n, a, _)| n == node && *a == attempt)
        .map(|(_, _, r)| r)
}

/// A task that records where it runs, then waits for its gate file.
fn gated(gates: &Path) -> String {
    gated_doing(gates, "")
}

/// [`gated`], running `each` (a shell command and `;`) every 50 ms while
/// it waits.
fn gated_doing(gates: &Path, each: &str) -> String {
    format!(
        "{}; while [ ! -e {g}/go-$ORCH_NODE ]; do {each} sleep 0.05; done; echo done",
        plain(gates),
        g = gates.display()
    )
}

fn open(gates: &Path, node: &str) {
    std::fs::write(gates.join(format!("go-{node}")), "").unwrap();
}

fn attempts(c: &Client, run: &str, node: &str) -> Vec<Value> {
    let n = c.get(&format!("/api/v1/runs/{run}/nodes/{node}")).unwrap();
    n["attempts"].as_array().cloned().unwrap_or_default()
}

/// A task that records where it runs and ends.
fn plain(gates: &Path) -> String {
    format!(
        "echo \"$ORCH_NODE $ORCH_ATTEMPT $(basename \"$(pwd)\")\" >> {}/ran",
        gates.display()
    )
}

/// Publishes `workflow` (its JSON, named `name`) and starts a run of it.
fn publish_and_start(c: &Client, name: &str, workflow: &Value) -> String {
    let content = serde_json::to_string(workflow).unwrap();
    c.json(
        "PUT",
        &format!("/api/v1/workflows/{name}"),
        Some(&json!({"message": "test", "files": [{"path": "workflow.json", "content": content}]})),
    )
    .expect("publish");
    c.post(&format!("/api/v1/workflows/{name}/runs"), &json!({}))
        .expect("execute")["run"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How `run` ended, asked of `c` (an answer that is no JSON, a server
/// coming back, is asked again); `log` is shown if it does not end.
fn ended(c: &Client, run: &str, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(w) = c.get(&format!("/api/v1/runs/{run}/wait?timeout=10")) {
            if w["ended"] == true {
                return w["status"].clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "run {run} did not end; {}: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_servers_and_three_runners_run_a_mixed_workflow_on_postgres() {
    let url = crate::postgres::cluster().new_database().unwrap();
    let space = Space::new();
    let gates = space.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let admin = token(&url, &space, Some("root"), false);
    let rtoken = token(&url, &space, None, true);
    let mut a = server(&space, &url, "a");
    let b = server(&space, &url, "b");
    let ca = Client::new(&a.said, Some(admin.clone()));
    let cb = Client::new(&b.said, Some(admin.clone()));
    let rb = Client::new(&b.said, Some(rtoken.clone()));

    // The runner that serves both labels talks to server A; it is there
    // first, so it claims `k`.
    let mut both = runner(&space, &url, &a.said, &rtoken, "both", "cpus=1,alpha,beta");
    let g = gated(&gates);
    let grow = format!(
        "echo \"$ORCH_NODE $ORCH_ATTEMPT $(basename \"$(pwd)\")\" >> {gd}/ran; head -n 1 >/dev/null; echo '{{\"orch\": 1, \"type\": \"add_node\", \"seq\": 1, \"id\": \"child\", \"task\": {{\"kind\": \"command\", \"argv\": [\"sh\", \"-c\", \"echo \\\"$ORCH_NODE $ORCH_ATTEMPT $(basename $(pwd))\\\" >> {gd}/ran\"]}}}}'; head -n 1 | sed 's/^/got /'",
        gd = gates.display()
    );
    let plain = plain(&gates);
    let mixed = json!({
        "name": "mixed",
        "tasks": [
            {"id": "k", "command": ["sh", "-c", g], "requires": {"labels": ["alpha"]}},
            {"id": "p1", "command": ["sh", "-c", plain]},
            {"id": "p2", "command": ["sh", "-c", plain]},
            {"id": "s", "command": ["sh", "-c", g], "requires": {"labels": ["beta"]}, "after": ["k"]},
            {"id": "g", "command": ["sh", "-c", grow], "requires": {"labels": ["alpha"]}, "after": ["s"]},
            {"id": "f", "command": ["sh", "-c", g], "requires": {"labels": ["alpha"]}, "after": ["g"]},
            {"id": "m", "command": ["sh", "-c", plain], "after": ["f", "p1", "p2"]},
        ]
    });
    let run = publish_and_start(&ca, "mixed", &mixed);

    // `k` runs on `both`, which is killed in the middle of it.
    let on = poll("k starts", || started(&gates, "k", 1));
    assert_eq!(on, "runner-both");
    let both_id = both.said.clone();
    kill9(&mut both.child);
    // The others join, both on server B.
    let alpha = runner(&space, &url, &b.said, &rtoken, "alpha", "cpus=1,alpha");
    let beta = runner(&space, &url, &b.said, &rtoken, "beta", "cpus=1,beta");
    open(&gates, "k");
    // k#1 is lost with its runner; k#2 runs on `alpha`, the only live
    // runner with its label, and reports through B to A.
    poll("k#2 starts", || started(&gates, "k", 2));
    let late = rb
        .call(
            "POST",
            &format!("/api/v1/attempts/{run}/k/1/report"),
            Some(&json!({"runner": both_id, "end": {"exit_code": 0}})),
        )
        .unwrap();
    assert_eq!(
        late.status, 409,
        "the killed runner's report: {}",
        late.body
    );

    // `s` runs on `beta`, which is paused past its lease: s#1 is lost.
    poll("s starts", || started(&gates, "s", 1));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(beta.child.id() as libc::pid_t, libc::SIGSTOP) };
    poll("s#1 is lost with its paused runner", || {
        let a = attempts(&cb, &run, "s");
        (a.first()?["outcome"] == "killed").then_some(())
    });
    let s1 = attempts(&cb, &run, "s");
    assert!(
        s1[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("lost its runner"),
        "{s1:?}"
    );
    // Its task ends while it sleeps; awake, its end is refused, and it
    // runs s#2 (no other runner has `beta`).
    open(&gates, "s");
    // SAFETY: as above.
    unsafe { libc::kill(beta.child.id() as libc::pid_t, libc::SIGCONT) };
    poll("the paused runner's late end is refused", || {
        let text = std::fs::read_to_string(&beta.log).unwrap_or_default();
        text.contains("the server refused the end").then_some(())
    });

    // `g` grows the run through B to A: its mutation is answered by A.
    // Then `f` runs on `alpha`, and server A (the run's owner) dies.
    poll("f starts", || started(&gates, "f", 1));
    let owner = {
        let store = PgStore::connect(&url).unwrap();
        store.owner(&run).unwrap()
    };
    assert!(
        owner.owner.as_ref().and_then(|o| o.url.as_deref()) == Some(a.said.as_str()),
        "server A owns the run until it dies: {owner:?}"
    );
    kill9(&mut a.child);
    // B adopts the run and re-attaches to f#1: it finishes, not run again.
    poll("server B adopts the run", || {
        let text = std::fs::read_to_string(&b.log).unwrap_or_default();
        text.contains("re-attached to an attempt a runner holds")
            .then_some(())
    });
    open(&gates, "f");
    let status = ended(&cb, &run, &b.log);
    assert_eq!(status["status"], "succeeded", "{status}");

    // The history, rebuilt from its events, agrees with the views.
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).unwrap());
    let ex = crate::postgres::export(store.as_ref(), &run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let needs: BTreeMap<&str, &[&str]> = [
        ("k", &["alpha"][..]),
        ("s", &["beta"][..]),
        ("g", &["alpha"][..]),
        ("f", &["alpha"][..]),
    ]
    .into_iter()
    .collect();
    let caps: BTreeMap<&str, &[&str]> = [
        ("runner-both", &["alpha", "beta"][..]),
        ("runner-alpha", &["alpha"][..]),
        ("runner-beta", &["beta"][..]),
    ]
    .into_iter()
    .collect();
    let processes = ran(&gates);
    for n in &ex.nodes {
        let ok: Vec<_> = n
            .attempts
            .iter()
            .filter(|a| a.outcome == Some(AttemptOutcome::Succeeded))
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "node {} succeeded once: {:?}",
            n.id,
            n.attempts
        );
        assert_eq!(
            n.attempts.last().unwrap().outcome,
            Some(AttemptOutcome::Succeeded),
            "{}",
            n.id
        );
        // Exactly once: at most one process per recorded attempt (one
        // claimed but not started when its runner died has none), one for
        // the attempt that succeeded, each on a runner that satisfies the
        // node's requirements.
        let mine: Vec<_> = processes.iter().filter(|(p, _, _)| *p == n.id).collect();
        for a in &n.attempts {
            let of: Vec<_> = mine.iter().filter(|(_, at, _)| *at == a.attempt).collect();
            assert!(of.len() <= 1, "{}#{} ran twice: {of:?}", n.id, a.attempt);
            if a.outcome == Some(AttemptOutcome::Succeeded) {
                assert_eq!(of.len(), 1, "{}#{}: {mine:?}", n.id, a.attempt);
            }
        }
        assert!(
            mine.iter()
                .all(|(_, at, _)| n.attempts.iter().any(|a| a.attempt == *at)),
            "node {}: processes {mine:?} of attempts not recorded: {:?}",
            n.id,
            n.attempts
        );
        for (_, attempt, dir) in &mine {
            let have = caps[dir.as_str()];
            for label in needs.get(n.id.as_str()).copied().unwrap_or(&[]) {
                assert!(
                    have.contains(label),
                    "{}#{attempt} ran on {dir}, which lacks {label}",
                    n.id
                );
            }
        }
    }
    let count = |node: &str| {
        ex.nodes
            .iter()
            .find(|n| n.id == node)
            .unwrap_or_else(|| panic!("node {node}"))
            .attempts
            .len()
    };
    // k and s ran again after their runners were lost (a loaded machine
    // may lose more, never fewer); f, held across its server's death,
    // did not.
    for node in ["k", "s"] {
        let a = &ex.nodes.iter().find(|n| n.id == node).unwrap().attempts;
        assert!(a.len() >= 2, "{node}: {a:?}");
        assert_eq!(a[0].outcome, Some(AttemptOutcome::Killed), "{node}: {a:?}");
        let why = a[0].error.as_deref().unwrap_or_default();
        assert!(why.contains("lost its runner"), "{node}: {a:?}");
    }
    assert_eq!(count("f"), 1, "f survived its server's death");
    assert_eq!(
        processes.iter().filter(|(n, _, _)| n == "f").count(),
        1,
        "f's task ran once: {processes:?}"
    );
    // g's mutation reached the owner (forwarded B -> A): the node exists.
    assert!(count("child") >= 1);
    // g read the owner's answer to its mutation (forwarded B -> A).
    let glogs = store.logs(&run, "g", None).unwrap();
    assert!(
        glogs.iter().any(|l| l.text.contains(r#""type":"ack""#)),
        "{glogs:?}"
    );
    // A late report of an attempt that ended is refused by the server
    // left, whoever ran it.
    let again = rb
        .call(
            "POST",
            &format!("/api/v1/attempts/{run}/f/1/report"),
            Some(&json!({"runner": alpha.said, "end": {"exit_code": 0}})),
        )
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.body);
    let f = &ex.nodes.iter().find(|n| n.id == "f").unwrap().attempts;
    assert_eq!(f.len(), 1, "{f:?}");
    drop(a);
}

/// A free port on loopback (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_restarted_server_reattaches_to_the_attempt_a_runner_holds() {
    // SQLite, one server: stopped gracefully while a runner holds an
    // attempt, then started again on the same address.
    let space = Space::new();
    let db = space.db().display().to_string();
    let gates = space.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let admin = token(&db, &space, Some("root"), false);
    let rtoken = token(&db, &space, None, true);
    let listen = format!("127.0.0.1:{}", free_port());
    let start = || {
        let mut cmd = orch(&db);
        // Leases long enough to outlast the restart.
        cmd.env("ORCH_RUNNER_LEASE_MS", "10000")
            .args(["serve", "--listen", &listen])
            .current_dir(space.path());
        spawn(
            cmd,
            space.path().join(format!("server-{}.log", free_port())),
            "listening on ",
            "",
        )
    };
    let mut first = start();
    let c = Client::new(&first.said, Some(admin.clone()));
    let _r = runner(&space, &db, &first.said, &rtoken, "keeper", "cpus=1");
    let held = json!({
        "name": "held",
        "tasks": [{"id": "h", "command": ["sh", "-c", gated(&gates)]}],
    });
    let run = publish_and_start(&c, "held", &held);
    poll("h starts on the runner", || started(&gates, "h", 1));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.child.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = first.child.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
    let log = std::fs::read_to_string(&first.log).unwrap();
    assert!(log.contains("left to its runner"), "{log}");
    let second = start();
    poll("the new server re-attaches", || {
        let text = std::fs::read_to_string(&second.log).unwrap_or_default();
        text.contains("re-attached to an attempt a runner holds")
            .then_some(())
    });
    open(&gates, "h");
    let c = Client::new(&second.said, Some(admin));
    let status = ended(&c, &run, &second.log);
    assert_eq!(status["status"], "succeeded", "{status}");
    let h = attempts(&c, &run, "h");
    assert_eq!(h.len(), 1, "the held attempt was not run again: {h:?}");
    assert_eq!(h[0]["outcome"], "succeeded", "{h:?}");
    assert_eq!(ran(&gates).len(), 1, "{:?}", ran(&gates));
}

#[test]
fn a_workflow_binary_in_runner_mode_serves_its_own_native_tasks() {
    let space = Space::new();
    let db = space.db().display().to_string();
    // Users and tokens first (the example's server opens the same file).
    let _admin = token(&db, &space, Some("root"), false);
    let rtoken = token(&db, &space, None, true);
    let example = crate::util::example_path("native_runners");
    let mut serve = Command::new(&example);
    serve
        .args(["serve", &db, "4"])
        .env("ORCH_RUNNER_LEASE_MS", RUNNER_LEASE_MS)
        .env("RUST_LOG", "info")
        .current_dir(space.path());
    let mut server = spawn(
        serve,
        space.path().join("native-server.log"),
        "listening on ",
        "",
    );
    // A plain `orch runner` (no binary label) must not get them.
    let _plain = runner(&space, &db, &server.said, &rtoken, "plain", "cpus=1");
    let dir = space.path().join("runner-native");
    let mut cmd = Command::new(&example);
    cmd.args(["runner", &server.said, &dir.display().to_string()])
        .env("ORCH_TOKEN", &rtoken)
        .env("RUST_LOG", "info");
    let native = spawn(
        cmd,
        space.path().join("runner-native.log"),
        "runner ",
        " registered",
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut server.out, &mut rest).ok();
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "{rest}; log: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    let run = rest
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.strip_suffix(" succeeded"))
        .unwrap_or_else(|| panic!("the run succeeded: {rest}"))
        .to_string();
    drop(native);
    let store = orch::store::SqliteStore::open(space.db()).unwrap();
    let ex = store.export(&run).unwrap();
    assert_eq!(ex.status, RunStatus::Succeeded);
    let squares: Vec<_> = ex
        .nodes
        .iter()
        .filter(|n| matches!(&n.task.exec, orch::Exec::Native { task } if task == "square"))
        .collect();
    assert_eq!(
        squares.len(),
        4,
        "{:?}",
        ex.nodes.iter().map(|n| &n.id).collect::<Vec<_>>()
    );
    for n in &ex.nodes {
        assert!(
            matches!(n.task.exec, orch::Exec::Native { .. }),
            "{}: {:?}",
            n.id,
            n.task.exec
        );
        assert_eq!(n.attempts.len(), 1, "{}: {:?}", n.id, n.attempts);
        assert_eq!(n.attempts[0].outcome, Some(AttemptOutcome::Succeeded));
        // It ran as this binary in task mode, on the native runner.
        let log = std::fs::read_to_string(space.path().join("runner-native.log")).unwrap();
        assert!(
            log.contains(&format!("{run}/{}#1", n.id)),
            "{} ran on the native runner: {log}",
            n.id
        );
    }
    for n in &squares {
        let lines = store.logs(&run, &n.id, None).unwrap();
        assert!(
            lines.iter().any(|l| l.text.contains("runner-native")),
            "{}: {lines:?}",
            n.id
        );
    }
    let total = ex
        .nodes
        .iter()
        .find(|n| matches!(&n.task.exec, orch::Exec::Native { task } if task == "total"))
        .unwrap();
    assert_eq!(total.output, Some(json!(30)), "1 + 4 + 9 + 16");
}

#[test]
fn the_database_restarting_mid_run_loses_nothing() {
    // A cluster of its own: restarting the shared one would cut the other
    // tests' connections.
    let cluster = orch::store::PgTestCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.new_database().unwrap();
    let space = Space::new();
    let gates = space.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let admin = token(&url, &space, Some("root"), false);
    let rtoken = token(&url, &space, None, true);
    let dir = space.path().join("server-a");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = orch(&url);
    // A claim outlives the restart: the attempt is not run again.
    cmd.env("ORCH_RUNNER_LEASE_MS", "10000")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&dir);
    let server = spawn(cmd, space.path().join("server-a.log"), "listening on ", "");
    let mut cmd = orch(&url);
    cmd.env("ORCH_RUNNER_LEASE_MS", "10000")
        .args(["runner", "--server", &server.said, "--name", "far"])
        .args(["--slots", "2", "--capabilities", "cpus=1,alpha"])
        .arg("--dir")
        .arg(space.path().join("runner-far"))
        .env("ORCH_TOKEN", &rtoken);
    let _far = spawn(
        cmd,
        space.path().join("runner-far.log"),
        "runner ",
        " registered",
    );
    let c = Client::new(&server.said, Some(admin));
    // Gated, and printing a line every 50 ms meanwhile: the engine and
    // the runner write logs all through the restart.
    let g = gated_doing(&gates, "echo tick;");
    let plain = plain(&gates);
    let through = json!({
        "name": "through",
        "tasks": [
            {"id": "r", "command": ["sh", "-c", g], "requires": {"labels": ["alpha"]}},
            {"id": "l", "command": ["sh", "-c", g]},
            {"id": "n", "command": ["sh", "-c", plain], "requires": {"labels": ["alpha"]}, "after": ["r"]},
            {"id": "m", "command": ["sh", "-c", plain], "after": ["l", "n"]},
        ]
    });
    let run = publish_and_start(&c, "through", &through);
    assert_eq!(
        poll("r starts on the runner", || started(&gates, "r", 1)),
        "runner-far"
    );
    poll("l starts on the server", || started(&gates, "l", 1));
    // The database restarts while both attempts run and log.
    cluster.restart().unwrap_or_else(|e| panic!("{e}"));
    open(&gates, "r");
    open(&gates, "l");
    // The API itself may answer 5xx for a moment after the restart.
    let status = ended(&c, &run, &server.log);
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert_eq!(status["status"], "succeeded", "{status}; server log: {log}");
    // The server met the restart (its pooled connections were cut) and
    // carried on over new ones.
    assert!(log.contains("lost the database connection"), "{log}");
    let store = PgStore::connect(&url).unwrap();
    let ex = store.export(&run).unwrap();
    let runner_log =
        std::fs::read_to_string(space.path().join("runner-far.log")).unwrap_or_default();
    for n in &ex.nodes {
        assert_eq!(
            n.attempts.len(),
            1,
            "{}: {:?}\nserver log: {log}\nrunner log: {runner_log}",
            n.id,
            n.attempts
        );
        assert_eq!(
            n.attempts[0].outcome,
            Some(AttemptOutcome::Succeeded),
            "{}",
            n.id
        );
    }
    let mut nodes: Vec<String> = ran(&gates).into_iter().map(|(n, _, _)| n).collect();
    nodes.sort();
    assert_eq!(nodes, ["l", "m", "n", "r"], "each task ran once");
}

#[test]
fn a_runner_falls_back_on_another_server_when_its_own_dies() {
    let url = crate::postgres::cluster().new_database().unwrap();
    let space = Space::new();
    let gates = space.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let admin = token(&url, &space, Some("root"), false);
    let rtoken = token(&url, &space, None, true);
    let mut a = server(&space, &url, "a");
    let b = server(&space, &url, "b");
    let mut cmd = orch(&url);
    cmd.args(["runner", "--server", &a.said, "--fallback", &b.said])
        .args([
            "--name",
            "roamer",
            "--slots",
            "2",
            "--capabilities",
            "cpus=1,alpha",
        ])
        .arg("--dir")
        .arg(space.path().join("runner-roamer"))
        .env("ORCH_TOKEN", &rtoken);
    let roamer = spawn(
        cmd,
        space.path().join("runner-roamer.log"),
        "runner ",
        " registered",
    );
    let ca = Client::new(&a.said, Some(admin.clone()));
    let roaming = json!({
        "name": "roaming",
        "tasks": [
            {"id": "h", "command": ["sh", "-c", gated(&gates)], "requires": {"labels": ["alpha"]}},
            {"id": "n", "command": ["sh", "-c", gated(&gates)], "requires": {"labels": ["alpha"]}, "after": ["h"]},
        ]
    });
    let run = publish_and_start(&ca, "roaming", &roaming);
    assert_eq!(
        poll("h starts on the runner", || started(&gates, "h", 1)),
        "runner-roamer"
    );
    // The runner's server, which also owns the run, dies.
    kill9(&mut a.child);
    open(&gates, "h");
    open(&gates, "n");
    let cb = Client::new(&b.said, Some(admin));
    let status = ended(&cb, &run, &roamer.log);
    let log = std::fs::read_to_string(&roamer.log).unwrap_or_default();
    assert_eq!(status["status"], "succeeded", "{status}; runner log: {log}");
    // It moved to B, which adopted the run and took h's end from it (h
    // was not run again) and handed it n.
    assert!(log.contains("talking to this server from now on"), "{log}");
    for node in ["h", "n"] {
        let at = attempts(&cb, &run, node);
        assert_eq!(at.len(), 1, "{node}: {at:?}");
        assert_eq!(at[0]["outcome"], "succeeded", "{node}: {at:?}");
    }
    let mut ran: Vec<(String, String)> = ran(&gates).into_iter().map(|(n, _, r)| (n, r)).collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            ("h".to_string(), "runner-roamer".to_string()),
            ("n".to_string(), "runner-roamer".to_string())
        ]
    );
}
