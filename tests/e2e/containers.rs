//! Container tasks, for real, with Podman: the images are built locally
//! by `.ci/images` (`localhost/orch-busybox`, `localhost/orch-python`),
//! and Podman here needs `CONTAINERS_CONF=.ci/containers.conf`, which
//! `.ci/run` exports. A machine where Podman cannot run them fails these
//! tests with a message saying so: they never pass without containers.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use orch::exec::container::container_name;
use orch::exec::AttemptId;
use orch::model::{Container, Mount, Pull};
use orch::store::Signal;
use orch::{output_at, AttemptOutcome, NodeState, RunStatus, Store as _, Task};
use serde_json::json;

use crate::util::*;

const BUSYBOX: &str = "localhost/orch-busybox";
const PYTHON: &str = "localhost/orch-python";

/// Panics, saying what to do, unless Podman runs containers of both test
/// images here (checked once).
pub fn podman_ready() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        for image in [BUSYBOX, PYTHON] {
            let out = podman(&["image", "exists", image])?;
            if !out.status.success() {
                return Err(format!("Podman has no image {image}"));
            }
        }
        let out = podman(&["run", "--rm", "--network=none", BUSYBOX, "true"])?;
        if !out.status.success() {
            return Err(format!(
                "`podman run {BUSYBOX} true` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    });
    if let Err(e) = ready {
        panic!(
            "the container tests need Podman and their images: {e}.\n\
             Run `.ci/images` (it installs podman, runc, busybox-static and debootstrap when \
             missing and builds the images), then `export CONTAINERS_CONF=$PWD/.ci/containers.conf` \
             (see docs/containers.md)"
        );
    }
}

fn podman(args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run podman: {e}"))
}

/// True when a container of this exact name exists (running or not).
fn exists(name: &str) -> bool {
    let out = podman(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.Names}}",
    ])
    .expect("podman ps");
    assert!(out.status.success(), "podman ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == name)
}

/// Waits until the container `name` runs (fails after 60 s).
fn running(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = podman(&[
            "ps",
            "--filter",
            &format!("name=^{name}$"),
            "--filter",
            "status=running",
            "--format",
            "{{.Names}}",
        ])
        .expect("podman ps");
        if String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == name)
        {
            return;
        }
        assert!(Instant::now() < deadline, "container {name} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The name of attempt `attempt` of `node` in the latest run, once it
/// runs.
fn latest_container(space: &Space, node: &str, attempt: u32) -> (String, String) {
    let ex = wait_for(space, &format!("`{node}` to run"), |ex| {
        ex.node(node)
            .is_some_and(|n| n.state == NodeState::Running && n.attempts.len() == attempt as usize)
    });
    let name = container_name(&AttemptId::new(&ex.run, node, attempt));
    running(&name);
    (ex.run, name)
}

/// `orch run FILE` in the background.
fn orch_run(space: &Space, file: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.args(["run", file])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("orch starts")
}

fn exits_within(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the orchestrator did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A task that sleeps in the first attempt and outputs its attempt
/// number in the next, as a workflow file.
const NAP_YAML: &str = r#"name: nap
tasks:
  - id: nap
    container: localhost/orch-busybox
    command: |
      [ "$ORCH_ATTEMPT" != 1 ] || sleep 300
      echo "{\"orch\": 1, \"seq\": 1, \"type\": \"output\", \"value\": $ORCH_ATTEMPT}"
"#;

#[test]
fn a_shell_task_in_busybox_speaks_the_protocol_with_its_env_and_mounts_and_no_network() {
    podman_ready();
    let space = Space::new();
    space.write("in.txt", "from the host");
    std::fs::create_dir(space.path().join("out")).unwrap();
    space.write(
        "task.sh",
        r#"read -r start
case "$start" in *'"node":"shell"'*|*'"node": "shell"'*) seen=true;; *) seen=false;; esac
nets=$(ls /sys/class/net | tr '\n' ' ')
printf '{"orch": 1, "seq": 1, "type": "output", "value": {"greeting": "%s", "node": "%s", "attempt": "%s", "file": "%s", "nets": "%s", "start_seen": %s, "cwd": "%s"}}\n' \
  "$GREETING" "$ORCH_NODE" "$ORCH_ATTEMPT" "$(cat /work/in.txt)" "$nets" "$seen" "$(pwd)"
read -r ack
echo "reply: $ack" >&2
if touch /work/written 2>/dev/null; then echo "the read-only mount took a write" >&2; exit 3; fi
echo written > /out/result.txt
"#,
    );
    let dir = space.path().to_str().unwrap();
    let mut wf = space.workflow("shell");
    wf.node(
        "shell",
        Task::container(
            Container::new(BUSYBOX)
                .command(["sh", "/work/task.sh"])
                .env("GREETING", "hello world")
                .mount(Mount::bind(dir, "/work").read_only())
                .mount(Mount::bind(format!("{dir}/out"), "/out"))
                .workdir("/out")
                .cpus(1.0)
                .memory(64 << 20)
                .pull(Pull::Never),
        ),
    );
    let (outcome, ex) = space.run(&wf);
    let logs = logs_text(&space, &ex.run, "shell");
    assert!(outcome.succeeded(), "{:?}\n{logs}", outcome.reason);
    let out = ex.node("shell").unwrap().output.clone().unwrap();
    assert_eq!(
        out,
        json!({
            "greeting": "hello world",
            "node": "shell",
            "attempt": "1",
            "file": "from the host",
            "nets": "lo ",
            "start_seen": true,
            "cwd": "/out",
        }),
        "env, mounts and working directory are visible; no network but loopback"
    );
    assert!(
        logs.contains(r#"reply: {"orch":1,"type":"ack","seq":1}"#),
        "the ack came back over the container's stdin:\n{logs}"
    );
    assert_eq!(
        std::fs::read_to_string(space.path().join("out/result.txt")).unwrap(),
        "written\n"
    );
    assert!(!space.path().join("written").exists());
    assert!(
        !exists(&container_name(&AttemptId::new(&ex.run, "shell", 1))),
        "removed when it ended"
    );
}

#[test]
fn python_tasks_in_a_container_use_the_mounted_helper() {
    podman_ready();
    let space = Space::new();
    space.write(
        "stats.py",
        "import sys, orch\n\
         def mean(xs):\n    \
             return {'mean': sum(xs) / len(xs), 'helper': orch.__file__, 'python': sys.executable}\n",
    );
    space.write(
        "double.py",
        "import orch\n\
         ctx = orch.start()\n\
         ctx.output({'doubled': ctx.inputs['m'] * 2})\n",
    );
    let mut wf = space.workflow("py");
    wf.node(
        "mean",
        Task::container(Container::new(PYTHON).python_fn("stats:mean")),
    )
    .input("xs", json!([1, 2, 3, 4]));
    wf.node(
        "double",
        Task::container(Container::new(PYTHON).python("double.py")),
    )
    .input("m", output_at("mean", "/mean"));
    let (outcome, ex) = space.run(&wf);
    assert!(
        outcome.succeeded(),
        "{:?}\n{}{}",
        outcome.reason,
        logs_text(&space, &ex.run, "mean"),
        logs_text(&space, &ex.run, "double")
    );
    let mean = ex.node("mean").unwrap().output.clone().unwrap();
    assert_eq!(mean["mean"], 2.5);
    assert_eq!(mean["helper"], "/orch/helper/orch/__init__.py");
    assert_eq!(
        mean["python"], "/usr/bin/python3",
        "the image's Python ran it"
    );
    assert_eq!(
        ex.node("double").unwrap().output,
        Some(json!({"doubled": 5.0}))
    );
}

#[test]
fn a_timeout_kills_the_container() {
    podman_ready();
    let space = Space::new();
    let mut wf = space.workflow("slow");
    wf.node(
        "slow",
        Task::container(Container::new(BUSYBOX).command(["sleep", "300"]))
            .timeout(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let (outcome, ex) = space.run(&wf);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(outcome.status, RunStatus::Failed);
    let attempt = &ex.node("slow").unwrap().attempts[0];
    assert_eq!(attempt.outcome, Some(AttemptOutcome::TimedOut));
    let name = container_name(&AttemptId::new(&ex.run, "slow", 1));
    assert!(!exists(&name), "{name} is gone once the attempt ended");
}

#[test]
fn cancel_stops_the_container() {
    podman_ready();
    let space = Space::new();
    let mut wf = space.workflow("cancelled");
    wf.node(
        "slow",
        Task::container(Container::new(BUSYBOX).command(["sleep", "300"])),
    );
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    let (run, name) = latest_container(&space, "slow", 1);
    let started = Instant::now();
    space.store().request(&run, &Signal::Cancel).unwrap();
    let outcome = runner.join().unwrap();
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!exists(&name), "{name} is gone once the run was cancelled");
    let ex = space.export(&run);
    assert_eq!(ex.node("slow").unwrap().state, NodeState::Cancelled);
}

#[test]
fn sigterm_of_the_orchestrator_stops_the_container() {
    podman_ready();
    let space = Space::new();
    space.write("nap.yaml", NAP_YAML);
    let mut child = orch_run(&space, "nap.yaml", &[("ORCH_STOP_GRACE", "1")]);
    let (run, name) = latest_container(&space, "nap", 1);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = exits_within(&mut child, 60);
    assert_eq!(status.code(), Some(1), "a run left running is no success");
    assert!(
        !exists(&name),
        "{name} is gone once the orchestrator stopped"
    );
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Running, "the run stays resumable");
    let nap = ex.node("nap").unwrap();
    assert_eq!(nap.state, NodeState::Ready);
    assert_eq!(nap.attempts[0].outcome, Some(AttemptOutcome::Killed));
}

#[test]
fn resume_removes_the_container_a_killed_orchestrator_left() {
    podman_ready();
    let space = Space::new();
    space.write("nap.yaml", NAP_YAML);
    let mut child = orch_run(&space, "nap.yaml", &[]);
    let (run, name) = latest_container(&space, "nap", 1);
    kill9(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        exists(&name),
        "the container outlives an orchestrator killed with SIGKILL"
    );
    let out = space.cli(&["resume", &run]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists(&name), "the resume removed {name}");
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let nap = ex.node("nap").unwrap();
    assert_eq!(nap.output, Some(json!(2)));
    let outcomes: Vec<_> = nap.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(AttemptOutcome::Killed),
            Some(AttemptOutcome::Succeeded)
        ]
    );
}

#[test]
fn a_missing_engine_is_refused_at_registration() {
    let space = Space::new();
    let mut wf = space.workflow("no-engine");
    wf.container_engine("/nonexistent/podman");
    wf.node("a", Task::command(["true"]));
    wf.node("b", Task::container(BUSYBOX));
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("add_node `b`")
            && err.contains("`/nonexistent/podman`")
            && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !space.db().exists() || space.store().runs().map_or(true, |r| r.is_empty()),
        "no run was registered"
    );

    // The same through the environment, from the example's binary.
    let out = space.example(
        "containers",
        &[("ORCH_CONTAINER_ENGINE", "/nonexistent/engine")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`/nonexistent/engine` (ORCH_CONTAINER_ENGINE) does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_missing_image_fails_the_attempt_naming_the_image() {
    podman_ready();
    let space = Space::new();
    let mut wf = space.workflow("no-image");
    wf.node(
        "ghost",
        Task::container(
            Container::new("localhost/orch-no-such-image")
                .command(["true"])
                .pull(Pull::Never),
        ),
    );
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = ex.node("ghost").unwrap().attempts[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains("podman could not run a container of the image `localhost/orch-no-such-image` (exit 125)")
            && error.contains("image not known"),
        "{error}"
    );
}
