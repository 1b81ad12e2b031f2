//! The command of an attempt that starts a fresh process: the program
//! each kind of task runs (a container's engine client for a container
//! task), its folder, variables and pipes, in a process group of its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::{Ctr, ProcessExecutor};
use crate::exec::container::{container_name, ContainerEngine, Dirs};
use crate::exec::escape::Mark;
use crate::exec::python::resolve_python;
use crate::exec::{AttemptSpec, LaunchError};
use crate::model::Exec;

impl ProcessExecutor {
    /// The `run` command of a container attempt: its engine's client.
    fn container_command(
        &self,
        c: &crate::model::Container,
        spec: &AttemptSpec,
    ) -> Result<(Command, Ctr), LaunchError> {
        c.check()
            .map_err(|e| LaunchError::Refused(format!("container task: {e}")))?;
        for m in &c.mounts {
            if !Path::new(&m.source).exists() {
                return Err(LaunchError::Missing(format!(
                    "the source {} of the container's mount at {} does not exist",
                    m.source, m.target
                )));
            }
        }
        let dirs = Dirs {
            helper: self.env.helper_dir.clone(),
            workflow: self.env.base_dir.clone(),
        };
        if c.runs_python() {
            for dir in [&dirs.helper, &dirs.workflow] {
                if dir.to_string_lossy().contains(',') {
                    return Err(LaunchError::Refused(format!(
                        "{} holds a comma, which the container engines' mount syntax cannot carry; a Python task in a container needs it mounted",
                        dir.display()
                    )));
                }
            }
        }
        let engine = ContainerEngine::resolve(self.env.container_engine.as_deref())
            .map_err(|e| LaunchError::Missing(e.to_string()))?;
        let mut cmd = Command::new(&engine.program);
        cmd.args(engine.run_args(c, &spec.id, &dirs));
        let ctr = Ctr {
            name: container_name(&spec.id),
            image: c.image.clone(),
            engine,
        };
        Ok((cmd, ctr))
    }

    pub(super) fn command(
        &self,
        spec: &AttemptSpec,
        mark: &Mark,
    ) -> Result<(Command, Option<Ctr>), LaunchError> {
        let env = &self.env;
        let mut ctr = None;
        let mut cmd = match &spec.task.exec {
            Exec::Container(c) => {
                let (cmd, c) = self.container_command(c, spec)?;
                ctr = Some(c);
                cmd
            }
            Exec::Python { script } => {
                let path = env.base_dir.join(script);
                if !path.is_file() {
                    return Err(LaunchError::Missing(format!(
                        "Python script {} not found",
                        path.display()
                    )));
                }
                let python =
                    resolve_python(&env.python).map_err(|e| LaunchError::Missing(e.to_string()))?;
                let mut c = Command::new(python);
                c.arg("-u").arg(path);
                c
            }
            Exec::PythonFn { module, function } => {
                let python =
                    resolve_python(&env.python).map_err(|e| LaunchError::Missing(e.to_string()))?;
                let mut c = Command::new(python);
                c.args(["-u", "-m", "orch", "call"])
                    .arg(format!("{module}:{function}"));
                c
            }
            Exec::Input { .. } => {
                return Err(LaunchError::Unsupported {
                    kind: "input",
                    why: "an input task runs no process; the engine waits for its value".into(),
                })
            }
            Exec::Native { task } => {
                let Some(binary) = &env.native_binary else {
                    return Err(LaunchError::Missing(format!(
                        "native task `{task}` runs in the workflow binary, and this run recorded none"
                    )));
                };
                let mut c = Command::new(binary);
                c.env(crate::exec::NATIVE_TASK_ENV, task);
                c
            }
            Exec::Command { argv } => {
                let Some(program) = argv.first() else {
                    return Err(LaunchError::Refused(
                        "command task has an empty argv".into(),
                    ));
                };
                let program = if program.contains('/') {
                    env.base_dir.join(program)
                } else {
                    PathBuf::from(program)
                };
                let mut c = Command::new(program);
                c.args(&argv[1..]);
                c
            }
        };
        let mut vars = self.attempt_env(spec, mark);
        if ctr.is_some() {
            // The client's own helpers (the container's monitor) leave its
            // process group on purpose and outlive it: they must not be
            // taken for the attempt's escaped processes. The container is
            // stopped by its name instead.
            vars.retain(|(k, _)| *k != crate::exec::TOKEN_ENV);
        } else {
            cmd.env("PYTHONPATH", self.pythonpath());
        }
        cmd.current_dir(self.cwd())
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok((cmd, ctr))
    }
}
