//! One node's task: what a one-node task document runs (python,
//! python_fn, command, container or input), with its retries, timeouts,
//! files, requirements and inputs.

use std::path::Path;

use serde_json::{Map, Value};

use super::values::{bytes, duration, fill, interpolate, json_kind, resources};
use super::{Compiler, Ends, Scope, MAX_NODES};
use crate::file::doc::{CommandDoc, ContainerDoc, DurationDoc, TaskDoc};
use crate::file::error::{FileError, Place};
use crate::model::{Container, Exec, Mount, Mutation, Task};

impl Compiler<'_, '_> {
    /// A task of one node: python, python_fn, command or input.
    pub(super) fn leaf(
        &mut self,
        scope: &Scope,
        t: &TaskDoc,
        id: &str,
        place: &Place,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<String, FileError> {
        let mut task = self.task_of(scope, t, fail)?;
        task.name = t.name.clone().unwrap_or_default();
        let inputs = match &t.inputs {
            None => Value::Null,
            Some(v) => self.inputs(scope, v, fail)?,
        };
        self.node(id, task, inputs, t.attrs.clone().unwrap_or_default(), place)?;
        Ok(id.to_string())
    }

    pub(super) fn node(
        &mut self,
        id: &str,
        task: Task,
        inputs: Value,
        attrs: Map<String, Value>,
        place: &Place,
    ) -> Result<(), FileError> {
        if self.places.len() >= MAX_NODES {
            return Err(FileError::new(
                place.clone(),
                format!("the workflow has more than {MAX_NODES} nodes"),
            ));
        }
        self.places.insert(id.to_string(), place.clone());
        self.mutations.push(Mutation::AddNode {
            id: id.to_string(),
            task: Box::new(task),
            inputs,
            attrs,
        });
        Ok(())
    }

    /// The task of a one-node task document, with its retries and
    /// timeouts.
    pub(super) fn task_of(
        &self,
        scope: &Scope,
        t: &TaskDoc,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Task, FileError> {
        if t.listen.is_some() && t.input != Some(true) {
            return Err(fail("`listen` goes with `input: true`".into()));
        }
        let mut task = self.runs(scope, t, fail)?;
        if let Some(n) = t.retries {
            task = task.retries(n);
        }
        if let Some(d) = &t.retry_delay {
            task = task.retry_delay(duration(d).map_err(|e| fail(format!("retry_delay: {e}")))?);
        }
        if let Some(d) = &t.timeout {
            task = task.timeout(duration(d).map_err(|e| fail(format!("timeout: {e}")))?);
        }
        if t.output_required == Some(true) {
            task = task.requires_output();
        }
        if t.produces.len() > 1000 {
            return Err(fail("declares more than 1000 files it produces".into()));
        }
        for p in &t.produces {
            let path = Path::new(p);
            if p.is_empty()
                || path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(fail(format!(
                    "produces `{p}`: a relative path inside the run's folder, without `..`"
                )));
            }
        }
        task.produces = t.produces.clone();
        if let Some(r) = &t.requires {
            task.requires = Some(Box::new(
                resources(r).map_err(|e| fail(format!("requires: {e}")))?,
            ));
        }
        if let Exec::Container(c) = &task.exec {
            c.check().map_err(|e| fail(format!("container: {e}")))?;
        }
        Ok(task)
    }

    /// What a one-node task document runs: its python script, python_fn,
    /// command, container (alone or around one of those) or input.
    fn runs(
        &self,
        scope: &Scope,
        t: &TaskDoc,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Task, FileError> {
        let container = match &t.container {
            None => None,
            Some(doc) => {
                if t.input.is_some() {
                    return Err(fail("an input task runs nothing in a container".into()));
                }
                Some(
                    self.container(scope, doc)
                        .map_err(|e| fail(format!("container: {e}")))?,
                )
            }
        };
        let task = if let Some(script) = &t.python {
            if script.is_empty() {
                return Err(fail("python names no script".into()));
            }
            let script = self.script(scope, script);
            match container {
                Some(c) => Task::container(c.python(script)),
                None => Task::python(script),
            }
        } else if let Some(spec) = &t.python_fn {
            match spec.rsplit_once(':') {
                Some((m, f)) if !m.is_empty() && !f.is_empty() => match container {
                    Some(c) => Task::container(c.python_fn(format!("{m}:{f}"))),
                    None => Task::python_fn(&format!("{m}:{f}")),
                },
                _ => {
                    return Err(fail(format!(
                        "python_fn `{spec}` must look like `module:function`"
                    )))
                }
            }
        } else if let Some(cmd) = &t.command {
            let argv = match cmd {
                CommandDoc::Argv(argv) => argv.clone(),
                CommandDoc::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            };
            if argv.is_empty() || argv[0].is_empty() {
                return Err(fail("command names no program".into()));
            }
            // A parameter pasted into a shell's command line is quoted:
            // its value is data, never shell syntax.
            let shell = Path::new(&argv[0])
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| matches!(n, "sh" | "bash" | "dash" | "zsh" | "ksh"));
            let script_at = shell
                .then(|| argv.iter().position(|a| a == "-c").map(|i| i + 1))
                .flatten();
            let argv = argv
                .iter()
                .enumerate()
                .map(|(i, a)| interpolate(a, &scope.params, Some(i) == script_at).map_err(fail))
                .collect::<Result<Vec<_>, _>>()?;
            match container {
                Some(c) => Task::container(c.command(argv)),
                None => Task::command(argv),
            }
        } else if let Some(c) = container {
            Task::container(c)
        } else if t.input == Some(true) {
            match &t.listen {
                Some(key) if key.trim().is_empty() => {
                    return Err(fail("listen names no event key".into()))
                }
                Some(key) => Task::input_on(key.trim()),
                None => Task::input(),
            }
        } else if t.input == Some(false) {
            return Err(fail("`input: false` runs nothing; leave it out".into()));
        } else {
            return Err(fail(
                "runs more than one node; it cannot be a template".into(),
            ));
        };
        Ok(task)
    }

    /// A container as the model holds it, without what runs in it: a
    /// relative mount source resolved against the file's folder.
    fn container(&self, scope: &Scope, doc: &ContainerDoc) -> Result<Container, String> {
        let spec = match doc {
            ContainerDoc::Image(image) => return Ok(Container::new(image.clone())),
            ContainerDoc::Spec(spec) => spec,
        };
        let mut c = Container::new(spec.image.clone()).network(spec.network);
        c.env = spec.env.clone();
        let dir = scope.file.parent().unwrap_or(Path::new(""));
        for m in &spec.mounts {
            let source = if m.source.is_empty() || Path::new(&m.source).is_absolute() {
                m.source.clone()
            } else {
                let joined = dir.join(&m.source);
                let absolute = if joined.is_absolute() {
                    joined
                } else {
                    std::env::current_dir()
                        .map_err(|e| format!("reading the current directory: {e}"))?
                        .join(joined)
                };
                absolute.to_string_lossy().into_owned()
            };
            let mount = Mount::bind(source, m.target.clone());
            c = c.mount(if m.read_only {
                mount.read_only()
            } else {
                mount
            });
        }
        c.workdir = spec.workdir.clone();
        c.cpus = spec.cpus;
        c.memory = match &spec.memory {
            None => None,
            Some(DurationDoc::Seconds(n)) if *n >= 0.0 && n.is_finite() => Some(*n as u64),
            Some(DurationDoc::Seconds(n)) => {
                return Err(format!("memory {n} is not a number of bytes"))
            }
            Some(DurationDoc::Text(t)) => Some(bytes(t)?),
        };
        if let Some(p) = spec.pull {
            c = c.pull(p);
        }
        Ok(c)
    }

    /// A script path as the run's base folder sees it.
    fn script(&self, scope: &Scope, script: &str) -> String {
        let path = Path::new(script);
        if path.is_absolute() {
            return script.to_string();
        }
        let dir = scope.file.parent().unwrap_or(Path::new(""));
        match dir.strip_prefix(&self.base) {
            Ok(rel) if rel.as_os_str().is_empty() => script.to_string(),
            Ok(rel) => rel.join(path).display().to_string(),
            Err(_) => dir.join(path).display().to_string(),
        }
    }

    /// Inputs (an object of named values) with parameters put in and
    /// output references prefixed.
    pub(super) fn inputs(
        &self,
        scope: &Scope,
        v: &Value,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Value, FileError> {
        if !v.is_object() {
            return Err(fail(format!(
                "inputs must be an object of named values, got {}",
                json_kind(v)
            )));
        }
        let filled = fill(v, scope, 0).map_err(|e| fail(format!("inputs: {e}")))?;
        for r in crate::model::output_refs(&filled).map_err(|e| fail(format!("inputs: {e}")))? {
            match self.tasks.get(&r.node) {
                Some(Ends { output: None, .. }) if self.tasks.contains_key(&r.node) => {
                    return Err(fail(format!(
                        "inputs: `{}` has no output of its own (a parallel group or a sub-workflow): refer to one of its tasks",
                        r.node
                    )))
                }
                _ => {}
            }
        }
        Ok(filled)
    }
}
