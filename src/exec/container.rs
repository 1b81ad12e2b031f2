//! Container attempts: the engine (Podman or Docker), the `run` command
//! line an attempt's process is, the container's name, and how a stopped
//! or abandoned container is found and removed.
//!
//! An attempt of a container task is the engine's client (`podman run
//! --rm -i …`) run as an ordinary attempt process: the protocol runs over
//! its stdio, which the client attaches to the container's. Killing the
//! client does not stop the container (its monitor runs on), so every
//! stop also goes to the container by its name ([`container_name`]),
//! which is made from the run, the node and the attempt; every container
//! also carries the labels `orch.run`, `orch.node` and `orch.attempt`, by
//! which a takeover finds what a stopped orchestrator left
//! ([`ContainerEngine::remove_run`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::AttemptId;
use crate::model::{Container, Pull};

/// The environment variable naming the container engine: `podman`,
/// `docker`, or a path to either. A workflow's own choice
/// ([`crate::Workflow::container_engine`]) comes first; without either,
/// `podman` when the host has it, else `docker`.
pub const ENGINE_ENV: &str = "ORCH_CONTAINER_ENGINE";

/// Where a Python task in a container finds orch's helper package.
pub const HELPER_MOUNT: &str = "/orch/helper";
/// Where a Python task in a container finds the workflow's folder.
pub const WORKFLOW_MOUNT: &str = "/orch/workflow";

/// The longest container name orch makes.
pub const MAX_NAME_LEN: usize = 128;

/// How long one engine command (`--version`, `rm`, `kill`, `ps`) may take
/// before it is given up on.
const ENGINE_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Which engine a program is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EngineKind {
    /// Podman.
    Podman,
    /// Docker (or a client that says it is).
    Docker,
}

/// A container engine found on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerEngine {
    /// The program, as an absolute path.
    pub program: PathBuf,
    /// Which engine it is.
    pub kind: EngineKind,
    /// What `--version` said.
    pub version: String,
}

/// Why no container engine could be used. The message names the engine
/// and where the choice came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Neither `podman` nor `docker` is on `PATH`, and none was named.
    #[error("container tasks need Podman or Docker, and neither `podman` nor `docker` is on PATH (install one, or name one with {ENGINE_ENV})")]
    NoneFound,
    /// The engine named is not there or does not run.
    #[error("the container engine `{engine}` ({from}) {why}")]
    Unusable {
        /// The engine as named.
        engine: String,
        /// Where it was named (`ORCH_CONTAINER_ENGINE`, the workflow's
        /// option, the run's record).
        from: String,
        /// What went wrong.
        why: String,
    },
}

/// Engines resolved so far in this process, by the name they were given.
static ENGINES: OnceLock<Mutex<HashMap<String, ContainerEngine>>> = OnceLock::new();

impl ContainerEngine {
    /// The engine to use: `choice` (a workflow's or a run's), else
    /// [`ENGINE_ENV`], else `podman`, else `docker` from `PATH`. Checked by
    /// running it with `--version` (once per process and name).
    ///
    /// ```
    /// use orch::exec::container::ContainerEngine;
    /// let err = ContainerEngine::resolve(Some("/nonexistent/podman")).unwrap_err();
    /// assert!(err.to_string().contains("`/nonexistent/podman`"), "{err}");
    /// ```
    pub fn resolve(choice: Option<&str>) -> Result<ContainerEngine, EngineError> {
        let env = std::env::var(ENGINE_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let (name, from) = match (choice.filter(|c| !c.trim().is_empty()), env) {
            (Some(c), _) => (c.trim().to_string(), "the workflow's container engine"),
            (None, Some(e)) => (e.trim().to_string(), ENGINE_ENV),
            (None, None) => {
                let found = ["podman", "docker"]
                    .into_iter()
                    .find(|p| on_path(p).is_some())
                    .ok_or(EngineError::NoneFound)?;
                (found.to_string(), "found on PATH")
            }
        };
        let cache = ENGINES.get_or_init(Default::default);
        if let Some(e) = cache.lock().expect("engine cache").get(&name) {
            return Ok(e.clone());
        }
        let unusable = |why: String| EngineError::Unusable {
            engine: name.clone(),
            from: from.to_string(),
            why,
        };
        let program = if name.contains('/') {
            let p = PathBuf::from(&name);
            if !p.is_file() {
                return Err(unusable("does not exist".into()));
            }
            p
        } else {
            on_path(&name).ok_or_else(|| unusable("is not on PATH".into()))?
        };
        let out = run_bounded(&program, &[OsString::from("--version")])
            .map_err(|e| unusable(format!("cannot be run: {e}")))?;
        if !out.status.success() {
            return Err(unusable(format!(
                "exited with {} on `--version`: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let lower = version.to_ascii_lowercase();
        let kind = if lower.contains("podman") {
            EngineKind::Podman
        } else if lower.contains("docker") {
            EngineKind::Docker
        } else {
            return Err(unusable(format!(
                "is neither Podman nor Docker: `--version` says {version:?}"
            )));
        };
        let engine = ContainerEngine {
            program,
            kind,
            version,
        };
        cache
            .lock()
            .expect("engine cache")
            .insert(name, engine.clone());
        Ok(engine)
    }

    /// The engine's short name, for messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }

    /// The arguments of `remove` for the container `name`: stopped at
    /// once (`SIGKILL`, no grace), then removed.
    fn rm_args(&self, name: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["rm".into(), "-f".into()];
        if self.kind == EngineKind::Podman {
            // Podman's `rm -f` waits the container's stop timeout (10 s)
            // for a process that ignores SIGTERM; Docker's kills at once.
            args.extend(["-t".into(), "0".into()]);
        }
        args.push(name.into());
        args
    }

    /// Kills and removes the container `name`, waiting for the engine; a
    /// container that is not there is no error. Returns the engine's
    /// complaint when it could not.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(self.rm_args(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(ENGINE_COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| format!("`{} rm` took over 30 s", self.name()))?
            .map_err(|e| format!("cannot run `{}`: {e}", self.program.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || no_such_container(&err) {
            Ok(())
        } else {
            Err(format!(
                "`{} rm -f {name}` exited with {}: {}",
                self.name(),
                out.status,
                err.trim()
            ))
        }
    }

    /// Sends `SIGTERM` to the container `name`'s main process (a graceful
    /// stop), without waiting.
    pub(crate) fn terminate_soon(&self, name: &str) {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(["kill", "--signal", "TERM", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ENGINE_COMMAND_TIMEOUT, cmd.status()).await;
        });
    }

    /// Removes every container of `run` (by its `orch.run` label), running
    /// or not: what attempts of a stopped orchestrator left. Returns the
    /// names removed. Blocking: call it before the run's attempts start.
    pub fn remove_run(&self, run: &str) -> Result<Vec<String>, String> {
        let listed = run_bounded(
            &self.program,
            &[
                "ps".into(),
                "-a".into(),
                "--filter".into(),
                format!("label=orch.run={run}").into(),
                "--format".into(),
                "{{.Names}}".into(),
            ],
        )
        .map_err(|e| format!("cannot run `{} ps`: {e}", self.name()))?;
        if !listed.status.success() {
            return Err(format!(
                "`{} ps` exited with {}: {}",
                self.name(),
                listed.status,
                String::from_utf8_lossy(&listed.stderr).trim()
            ));
        }
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        for name in &names {
            let out = run_bounded(&self.program, &self.rm_args(name))
                .map_err(|e| format!("cannot run `{} rm`: {e}", self.name()))?;
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !no_such_container(&err) {
                return Err(format!(
                    "`{} rm -f {name}` exited with {}: {}",
                    self.name(),
                    out.status,
                    err.trim()
                ));
            }
        }
        Ok(names)
    }

    /// The arguments of `run` for one attempt of `spec`: the container is
    /// removed when it ends, its stdio attached to the client's, named
    /// and labelled after the attempt, without network unless asked.
    pub(crate) fn run_args(&self, spec: &Container, id: &AttemptId, dirs: &Dirs) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::with_capacity(32);
        a.push("run".into());
        a.push("--rm".into());
        a.push("-i".into());
        a.push(format!("--name={}", container_name(id)).into());
        a.push(format!("--label=orch.run={}", id.run).into());
        a.push(format!("--label=orch.node={}", id.node).into());
        a.push(format!("--label=orch.attempt={}", id.attempt).into());
        if self.kind == EngineKind::Podman {
            // Attached stdio is the log; a second copy in the engine's
            // storage is of no use.
            a.push("--log-driver=none".into());
        }
        if spec.pull != Pull::Missing {
            a.push(format!("--pull={}", spec.pull.as_str()).into());
        }
        if !spec.network {
            a.push("--network=none".into());
        }
        if let Some(c) = spec.cpus {
            a.push(format!("--cpus={c}").into());
        }
        if let Some(m) = spec.memory {
            a.push(format!("--memory={m}").into());
        }
        if let Some(w) = &spec.workdir {
            a.push(format!("--workdir={w}").into());
        }
        a.push(format!("--env=ORCH_RUN={}", id.run).into());
        a.push(format!("--env=ORCH_NODE={}", id.node).into());
        a.push(format!("--env=ORCH_ATTEMPT={}", id.attempt).into());
        let python = spec.runs_python();
        for (k, v) in &spec.env {
            if python && k == "PYTHONPATH" {
                continue;
            }
            a.push(format!("--env={k}={v}").into());
        }
        if python {
            let mut path = format!("{HELPER_MOUNT}:{WORKFLOW_MOUNT}");
            if let Some(own) = spec.env.get("PYTHONPATH").filter(|p| !p.is_empty()) {
                path.push(':');
                path.push_str(own);
            }
            a.push(format!("--env=PYTHONPATH={path}").into());
            a.push("--env=PYTHONUNBUFFERED=1".into());
        }
        for m in &spec.mounts {
            a.push(bind(Path::new(&m.source), &m.target, m.read_only));
        }
        if python {
            a.push(bind(&dirs.helper, HELPER_MOUNT, true));
            a.push(bind(&dirs.workflow, WORKFLOW_MOUNT, true));
        }
        a.push(spec.image.clone().into());
        if let Some(script) = &spec.python {
            a.extend(["python3".into(), "-u".into()]);
            a.push(format!("{WORKFLOW_MOUNT}/{script}").into());
        } else if let Some(call) = &spec.python_fn {
            a.extend(
                ["python3", "-u", "-m", "orch", "call", call.as_str()]
                    .into_iter()
                    .map(OsString::from),
            );
        } else {
            a.extend(spec.command.iter().map(OsString::from));
        }
        a
    }
}

/// `--mount` binding `source` at `target`. Both are checked to hold no
/// comma ([`Container::check`]; the helper's and the workflow's folders by
/// the executor), which would start an option of the path's choosing.
fn bind(source: &Path, target: &str, read_only: bool) -> OsString {
    let mut m = OsString::from("--mount=type=bind,source=");
    m.push(source.as_os_str());
    m.push(format!(",target={target}"));
    if read_only {
        m.push(",readonly");
    }
    m
}

/// The host folders a container attempt may mount for Python.
#[derive(Clone, Debug)]
pub(crate) struct Dirs {
    /// The folder holding the helper package `orch`.
    pub helper: PathBuf,
    /// The workflow's folder.
    pub workflow: PathBuf,
}

/// The name of the container of attempt `id`: `orch-<run>-<node>-<attempt>`
/// in the characters both engines allow (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`;
/// each other character becomes `_`), shortened to fit
/// [`MAX_NAME_LEN`] with the hash of the exact run and node at the end,
/// so that two attempts never share a name.
///
/// ```
/// use orch::exec::{container::container_name, AttemptId};
/// let name = container_name(&AttemptId::new("20261130-1", "extract", 2));
/// assert!(name.starts_with("orch-20261130-1-extract-2-"), "{name}");
/// let odd = container_name(&AttemptId::new("r", "a/b c[0]", 1));
/// assert!(odd.starts_with("orch-r-a_b_c_0_-1-"), "{odd}");
/// let long = container_name(&AttemptId::new("r", &"n".repeat(1000), 1));
/// assert!(long.len() <= 128);
/// ```
pub fn container_name(id: &AttemptId) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let hash = super::content_hash(
        id.run
            .bytes()
            .chain([0])
            .chain(id.node.bytes())
            .chain([0])
            .chain(id.attempt.to_string().bytes()),
    );
    let tail = format!("-{}-{}", id.attempt, &hash[..12]);
    let mut head = format!("orch-{}-{}", clean(&id.run), clean(&id.node));
    // ASCII only after `clean`: any byte is a boundary.
    head.truncate(MAX_NAME_LEN - tail.len());
    head + &tail
}

/// True when the engine's complaint says the container is not there
/// (already removed by `--rm`, or never created).
fn no_such_container(stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    e.contains("no such container") || e.contains("no container with name")
}

/// `program` found in a folder of `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program args` to its end, at most [`ENGINE_COMMAND_TIMEOUT`].
fn run_bounded(program: &Path, args: &[OsString]) -> std::io::Result<std::process::Output> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The pipes are read on threads so that a chatty engine never blocks.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let read_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).map(|_| v)
    });
    let read_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).map(|_| v)
    });
    let deadline = std::time::Instant::now() + ENGINE_COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("`{}` took over 30 s", program.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = read_out.join().expect("reader")?;
    let stderr = read_err.join().expect("reader")?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mount;

    fn podman() -> ContainerEngine {
        ContainerEngine {
            program: "/usr/bin/podman".into(),
            kind: EngineKind::Podman,
            version: "podman version 4".into(),
        }
    }

    fn args(spec: &Container) -> Vec<String> {
        let dirs = Dirs {
            helper: "/h".into(),
            workflow: "/w".into(),
        };
        podman()
            .run_args(spec, &AttemptId::new("r", "n", 1), &dirs)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_command_runs_without_network_named_and_labelled() {
        let a = args(
            &Container::new("img")
                .command(["sh", "-c", "echo hi"])
                .env("A", "x=y")
                .mount(Mount::bind("/in", "/data").read_only())
                .cpus(0.5)
                .memory(64 << 20)
                .workdir("/data"),
        );
        let name = container_name(&AttemptId::new("r", "n", 1));
        for want in [
            "--rm",
            "-i",
            &format!("--name={name}"),
            "--label=orch.run=r",
            "--network=none",
            "--cpus=0.5",
            "--memory=67108864",
            "--workdir=/data",
            "--env=A=x=y",
            "--env=ORCH_NODE=n",
            "--mount=type=bind,source=/in,target=/data,readonly",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let image = a.iter().position(|x| x == "img").unwrap();
        assert_eq!(a[image + 1..], ["sh", "-c", "echo hi"]);
        assert!(!a.iter().any(|x| x.contains("PYTHONPATH")));
    }

    #[test]
    fn python_gets_the_helper_and_the_workflow_folder() {
        let a = args(
            &Container::new("py")
                .python_fn("stats:mean")
                .env("PYTHONPATH", "/opt/lib")
                .network(true),
        );
        assert!(a.contains(&"--env=PYTHONPATH=/orch/helper:/orch/workflow:/opt/lib".into()));
        assert!(a.contains(&"--mount=type=bind,source=/h,target=/orch/helper,readonly".into()));
        assert!(a.contains(&"--mount=type=bind,source=/w,target=/orch/workflow,readonly".into()));
        assert!(!a.iter().any(|x| x.starts_with("--network")));
        let image = a.iter().position(|x| x == "py").unwrap();
        assert_eq!(
            a[image + 1..],
            ["python3", "-u", "-m", "orch", "call", "stats:mean"]
        );
        let s = args(&Container::new("py").python("sub/step.py"));
        assert!(s.ends_with(&[
            "py".into(),
            "python3".into(),
            "-u".into(),
            "/orch/workflow/sub/step.py".into()
        ]));
    }

    #[test]
    fn names_are_distinct_bounded_and_in_the_engines_charset() {
        let a = container_name(&AttemptId::new("a-b", "c", 1));
        let b = container_name(&AttemptId::new("a", "b-c", 1));
        assert_ne!(a, b, "the hash tells them apart");
        let n = container_name(&AttemptId::new("r", "é".repeat(300), 7));
        assert!(n.len() <= MAX_NAME_LEN, "{n}");
        assert!(n.ends_with(&format!("-7-{}", &n[n.len() - 12..])));
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    }

    #[test]
    fn podman_removes_without_grace_docker_as_it_does() {
        assert_eq!(podman().rm_args("x"), ["rm", "-f", "-t", "0", "x"]);
        let docker = ContainerEngine {
            kind: EngineKind::Docker,
            ..podman()
        };
        assert_eq!(docker.rm_args("x"), ["rm", "-f", "x"]);
    }
}
