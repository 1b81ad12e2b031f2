//! Python attempts forked from the run's warm server: starting the
//! server on its own thread, forking an attempt from it, and the
//! attempt's pipes as tokio handles.

use std::sync::Arc;

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{kill_group, ForkSlot, ForkedExit, Proc, ProcExit, ProcessExecutor};
use crate::exec::escape::Mark;
use crate::exec::fork::{ForkServer, Forked, Request};
use crate::exec::python::resolve_python;
use crate::exec::AttemptSpec;
use crate::model::Exec;

impl ProcessExecutor {
    /// Starts the fork server on its own thread (it may take as long as
    /// its preloads take to import, and the runtime's thread must keep
    /// going meanwhile); the slot is `Starting` until it is up or given
    /// up on.
    pub(super) fn begin_start(&self, slot: &mut ForkSlot) {
        let (ready_tx, ready_rx) = watch::channel(false);
        let env = Arc::clone(&self.env);
        let pythonpath = self.pythonpath();
        let weak = Arc::downgrade(&self.fork);
        let spawned = std::thread::Builder::new()
            .name("orch-fork-start".into())
            .spawn(move || {
                let started = resolve_python(&env.python).and_then(|python| {
                    ForkServer::start(
                        &python,
                        &env.base_dir,
                        &[("PYTHONPATH", pythonpath)],
                        &env.python_preload,
                    )
                });
                let next = match started {
                    Ok(server) => ForkSlot::Up(server),
                    Err(e) => {
                        warn!(error = %e, "Python tasks start fresh interpreters");
                        ForkSlot::Off
                    }
                };
                // When the executor is gone (the run ended meanwhile), the
                // server is dropped here and exits.
                if let Some(slot) = weak.upgrade() {
                    *slot.lock().expect("fork slot") = next;
                }
                let _ = ready_tx.send(true);
            });
        *slot = match spawned {
            Ok(_) => ForkSlot::Starting(ready_rx),
            Err(e) => {
                warn!(error = %e, "cannot start the Python fork server's thread; Python tasks start fresh interpreters");
                ForkSlot::Off
            }
        };
    }

    /// Forks a Python attempt from the run's server, starting the server
    /// first if needed. `None`: start a fresh interpreter instead (fork is
    /// off, the attempt is not Python, or the server is unusable).
    pub(super) fn try_fork(&self, spec: &AttemptSpec, mark: &Mark) -> Option<Forked> {
        let env = &self.env;
        let (script, call) = match &spec.task.exec {
            Exec::Python { script } => (Some(env.base_dir.join(script)), None),
            Exec::PythonFn { module, function } => (None, Some(format!("{module}:{function}"))),
            _ => return None,
        };
        let mut slot = self.fork.lock().expect("fork slot");
        if matches!(*slot, ForkSlot::Up(ref s) if !s.is_usable()) {
            warn!(
                "the Python fork server stopped or stalled; Python tasks start fresh interpreters from now on"
            );
            if let ForkSlot::Up(server) = std::mem::replace(&mut *slot, ForkSlot::Off) {
                *slot = ForkSlot::Retired(server);
            }
        }
        if matches!(*slot, ForkSlot::Idle) {
            // A caller that did not ask `not_ready` first: never block it
            // while the server preloads.
            self.begin_start(&mut slot);
        }
        if matches!(*slot, ForkSlot::Starting(_)) {
            debug!(node = %spec.id.node, "the Python fork server is still starting; this attempt starts a fresh interpreter");
            return None;
        }
        let ForkSlot::Up(server) = &*slot else {
            return None;
        };
        if let Some(path) = &script {
            if !path.is_file() {
                // The fresh path reports it.
                return None;
            }
        }
        let argv = match (&script, &call) {
            (Some(path), _) => vec![path.to_string_lossy().into_owned()],
            (None, Some(call)) => vec![
                env.helper_dir
                    .join("orch")
                    .join("__main__.py")
                    .to_string_lossy()
                    .into_owned(),
                "call".into(),
                call.clone(),
            ],
            (None, None) => unreachable!("a Python task has a script or a call"),
        };
        let request = Request {
            script: script.as_deref(),
            call: call.as_deref(),
            argv,
            cwd: self.cwd(),
            env: self.attempt_env(spec, mark),
            run: &spec.id.run,
            node: &spec.id.node,
        };
        match server.launch(&request) {
            Ok(forked) => Some(forked),
            Err(e) => {
                warn!(node = %spec.id.node, error = %e, "fork failed; this attempt starts a fresh interpreter");
                None
            }
        }
    }
}

/// The orchestrator's ends of a forked attempt's pipes, as tokio handles.
pub(super) fn from_forked(f: Forked, mark: Mark) -> Result<Proc, String> {
    let wrap = |what: &str, e: std::io::Error| {
        kill_group(f.pid);
        format!("forked attempt {}: {what}: {e}", f.pid)
    };
    let pid = f.pid;
    let stdin = ChildStdin::from_std(std::process::ChildStdin::from(f.stdin))
        .map_err(|e| wrap("stdin", e))?;
    let stdout = ChildStdout::from_std(std::process::ChildStdout::from(f.stdout))
        .map_err(|e| wrap("stdout", e))?;
    let stderr = ChildStderr::from_std(std::process::ChildStderr::from(f.stderr))
        .map_err(|e| wrap("stderr", e))?;
    Ok(Proc {
        pgid: pid,
        container: None,
        mark,
        stdin,
        stdout,
        stderr,
        exit: ProcExit::Forked(ForkedExit {
            pgid: pid,
            rx: f.exit,
            ended: false,
        }),
    })
}
