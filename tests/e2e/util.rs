//! Helpers shared by the end-to-end tests: temp workspaces with real
//! SQLite files and real Python scripts, and paths of the built examples.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use orch::{RunExport, RunOutcome, SqliteStore, Store, Workflow};

/// A temporary folder holding task scripts and the database.
pub struct Space {
    pub dir: tempfile::TempDir,
}

impl Space {
    pub fn new() -> Space {
        Space {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("orch.db")
    }

    /// Writes a file (a task script) into the space.
    pub fn write(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.path().join(name), text).expect("write script");
        self
    }

    /// A workflow whose base dir and database are in this space.
    pub fn workflow(&self, name: &str) -> Workflow {
        let mut wf = Workflow::new(name);
        wf.dir(self.path()).db(self.db());
        wf
    }

    pub fn store(&self) -> SqliteStore {
        SqliteStore::open_existing(self.db()).expect("database exists")
    }

    /// The export of a run, from the tables; also checks that a rebuild
    /// from the event log alone gives exactly the same.
    pub fn export(&self, run: &str) -> RunExport {
        let store = self.store();
        let live = store.export(run).expect("export");
        let rebuilt = store.replay(run, None).expect("replay").export();
        assert_eq!(
            rebuilt, live,
            "rebuild from the event log differs from the tables"
        );
        store.integrity_check().expect("integrity_check ok");
        live
    }

    /// How many events the run's history holds.
    pub fn store_events_len(&self, run: &str) -> u64 {
        self.store().events(run, None).expect("events").len() as u64
    }

    /// Runs `wf` and exports the run.
    pub fn run(&self, wf: &Workflow) -> (RunOutcome, RunExport) {
        let outcome = wf.run().expect("run");
        let export = self.export(&outcome.run);
        (outcome, export)
    }

    /// Runs a built example with this space's database.
    pub fn example(&self, name: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(example_path(name));
        cmd.env("ORCH_DB", self.db()).current_dir(self.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("example runs")
    }

    /// Runs a built example with arguments, with this space's database.
    pub fn example_args(&self, name: &str, args: &[&str]) -> Output {
        Command::new(example_path(name))
            .args(args)
            .env("ORCH_DB", self.db())
            .current_dir(self.path())
            .output()
            .expect("example runs")
    }

    /// The `orch` CLI with this space's database.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(args)
            .env("ORCH_DB", self.db())
            .current_dir(self.path())
            .output()
            .expect("orch runs")
    }
}

/// `target/<profile>/examples/<name>`: cargo builds examples before it
/// runs integration tests.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example binary {} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The run id an example printed (`run <id> <status>`).
pub fn printed_run(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!(
                "no run line in stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

pub fn node_ids(ex: &RunExport) -> BTreeSet<String> {
    ex.nodes.iter().map(|n| n.id.clone()).collect()
}

pub fn edge_set(ex: &RunExport) -> BTreeSet<(String, String)> {
    ex.edges
        .iter()
        .map(|e| (e.from.clone(), e.to.clone()))
        .collect()
}

pub fn edges(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub fn logs_text(space: &Space, run: &str, node: &str) -> String {
    space
        .store()
        .logs(run, node, None)
        .expect("logs")
        .iter()
        .map(|l| format!("{}: {}\n", l.stream, l.text))
        .collect()
}

/// True while a process with this pid exists (and is not a zombie we
/// could still reap).
pub fn alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty() && !status.contains("State:\tZ")
}

/// Polls the latest run's export until `done` holds (fails after 60 s).
pub fn wait_for(space: &Space, what: &str, done: impl Fn(&RunExport) -> bool) -> RunExport {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(ex) = SqliteStore::open_existing(space.db())
            .ok()
            .and_then(|s| s.resolve_run("latest").ok().and_then(|r| s.export(&r).ok()))
        {
            if done(&ex) {
                return ex;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until `node` of the latest run has a running attempt with a
/// pid; returns that pid.
pub fn running_pid(space: &Space, node: &str) -> u32 {
    let running = |ex: &RunExport| {
        let n = ex.node(node)?;
        (n.state == orch::NodeState::Running).then(|| n.attempts.last()?.pid)?
    };
    let ex = wait_for(space, &format!("`{node}` to run"), |ex| {
        running(ex).is_some()
    });
    running(&ex).expect("running")
}

/// Asserts that every node of `ex` has exactly one successful attempt
/// (`what` says which run, in the message).
pub fn assert_each_succeeded_once(ex: &RunExport, what: &str) {
    for n in &ex.nodes {
        let ok = n
            .attempts
            .iter()
            .filter(|a| a.outcome == Some(orch::AttemptOutcome::Succeeded))
            .count();
        assert_eq!(ok, 1, "{what}: `{}` succeeded once: {:?}", n.id, n.attempts);
    }
}

/// Kills a child like `kill -9` and reaps it.
pub fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    child.wait().expect("reaped");
}

/// A space holding a copy of the durable_chain example's task script.
pub fn chain_space() -> Space {
    let space = Space::new();
    space.write(
        "sleep.py",
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/durable_chain/sleep.py"
        ))
        .unwrap(),
    );
    space
}

/// Starts the durable_chain example on this space, with extra environment
/// and arguments.
pub fn start_chain_with(
    space: &Space,
    tasks: u32,
    sleep_ms: u32,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Child {
    Command::new(example_path("durable_chain"))
        .envs(env.iter().copied())
        .args(extra)
        .args([
            "--tasks",
            &tasks.to_string(),
            "--sleep-ms",
            &sleep_ms.to_string(),
        ])
        .args(["--dir", space.path().to_str().unwrap()])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("durable_chain starts")
}

/// Waits up to `secs` for a process to be gone (a killed process may take
/// a moment to be reaped); true when it is.
pub fn gone_within(pid: u32, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    !alive(pid)
}

/// After the orchestrator died like `kill -9` (`status`, checked), resumes
/// the latest run with the `orch` CLI (checked) and exports it.
pub fn resume_killed(space: &Space, status: std::process::ExitStatus, what: &str) -> RunExport {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: the orchestrator died"
    );
    let out = space.cli(&["resume", "latest"]);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = space.store().resolve_run("latest").unwrap();
    space.export(&run)
}

/// An executor that runs nothing: each attempt succeeds at once with its
/// node id plus its `n` input as output; `launched` lists the nodes it was
/// given, in order.
#[derive(Default)]
pub struct Echo {
    pub launched: std::sync::Mutex<Vec<String>>,
}

impl orch::exec::Executor for Echo {
    fn launch(
        &self,
        spec: orch::exec::AttemptSpec,
        link: orch::exec::AttemptLink,
    ) -> Result<Option<u32>, orch::exec::LaunchError> {
        self.launched.lock().unwrap().push(spec.id.node.clone());
        let output = serde_json::json!({"node": spec.id.node, "n": spec.inputs["n"]});
        link.finish(orch::exec::AttemptEnd::exited(0).with_output(output));
        Ok(None)
    }
}

/// Starts `orch scheduler DIR` on this space's database.
pub fn start_scheduler(space: &Space, dir: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["scheduler", dir])
        .env("ORCH_DB", space.db())
        .current_dir(space.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("orch scheduler starts")
}

/// Stops a scheduler with SIGTERM; it must exit cleanly.
pub fn stop_scheduler(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the scheduler stops cleanly on SIGTERM: {status:?}"
    );
}

/// The runs of `workflow`, oldest first (only those that ended, when
/// `ended`).
pub fn runs_of(space: &Space, workflow: &str, ended: bool) -> Vec<orch::store::RunSummary> {
    let Ok(store) = SqliteStore::open_read_only(space.db()) else {
        return Vec::new();
    };
    let mut runs: Vec<_> = store
        .runs()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.workflow == workflow && (!ended || r.status != "running"))
        .collect();
    runs.reverse();
    runs
}

/// Waits (60 s at most) until `workflow` has at least `n` runs (that
/// ended, when `ended`).
pub fn wait_for_runs(
    space: &Space,
    workflow: &str,
    n: usize,
    ended: bool,
) -> Vec<orch::store::RunSummary> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let runs = runs_of(space, workflow, ended);
        if runs.len() >= n {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{workflow} has {} runs, not {n}",
            runs.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process that announced itself with a first line on stdout.
pub struct Announced {
    pub child: Child,
    /// That line, between its expected prefix and suffix (a URL, an id).
    pub said: String,
    /// The rest of its stdout.
    pub out: std::io::BufReader<std::process::ChildStdout>,
}

/// Starts `cmd` with its stderr in `log` and reads its first line, which
/// must be `prefix`, then what it says, then `suffix` (a server's
/// `listening on URL`, a runner's `runner ID registered`); panics with the
/// log otherwise.
pub fn spawn_announcing(cmd: &mut Command, log: &Path, prefix: &str, suffix: &str) -> Announced {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("orch starts");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let said = line
        .trim()
        .strip_prefix(prefix)
        .and_then(|l| l.strip_suffix(suffix))
        .unwrap_or_else(|| {
            panic!(
                "{} printed {line:?}; log: {}",
                cmd.get_program().to_string_lossy(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    Announced { child, said, out }
}
