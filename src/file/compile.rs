//! Compiling parsed workflow documents into a [`Definition`]: every task
//! becomes uniform nodes, edges and promises. Pure: sub-workflow files
//! come through the `load` function the caller passes.
//!
//! - a task with `python`, `python_fn`, `command` or `input` is one node;
//! - `pre` and `post` tasks are chained before and after it, and what runs
//!   `after` it waits for its last `post` task;
//! - a `parallel` group has no node of its own: its tasks start after the
//!   group's `after`, and what runs after the group waits for all of them;
//! - `each` is two nodes, `ID.each` (it adds the copies `ID[0]`, `ID[1]`,
//!   … when it runs) and `ID` (it gathers their outputs into a list),
//!   under the promise `shape(ID.each, ID, T{min,max})`;
//! - `workflow` inlines another file's tasks with their ids prefixed by
//!   `ID.`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::doc::{CommandDoc, ContainerDoc, DurationDoc, TaskDoc, WorkflowDoc};
use super::error::{FileError, Place};
use crate::model::{
    Container, Definition, Exec, Loop, LoopStep, Mount, Mutation, Predicate, Rule, Task, Until,
};
use crate::promise::shape::Shape;
use crate::promise::Promise;

/// How deep sub-workflows may nest (a file including a file …).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// How many sub-workflow files one workflow file may read, each
/// inclusion counted.
pub const MAX_INCLUDES: usize = 1_000;
/// How many nodes one workflow file may compile to, sub-workflows
/// included.
pub const MAX_NODES: usize = 100_000;
/// How deep `pre`, `post`, `parallel` and `each` may nest inside one
/// another.
pub const MAX_NESTING: usize = 32;

/// The module of the Python functions `each` compiles to (shipped with
/// the Python helper).
const BUILTINS: &str = "orch._builtins";

/// A compiled workflow file.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Compiled {
    /// What runs.
    pub definition: Definition,
    /// How many tasks may run at once, when the file says.
    pub max_parallel: Option<usize>,
    /// Whether the run keeps going past failures.
    pub keep_going: bool,
    /// The parameters as the run gets them (defaults filled in).
    pub params: Map<String, Value>,
    /// Where each node was declared (sugar nodes: where their task was).
    pub places: HashMap<String, Place>,
    /// The folder of the file: tasks run there, scripts resolve there.
    pub dir: PathBuf,
    /// When the scheduler starts runs, if the file says.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Whether missed fire times run.
    pub catchup: bool,
    /// At most this many runs at once.
    pub max_active_runs: Option<u32>,
    /// The event keys that start a run.
    pub events: Vec<String>,
    /// Parameters without default that were not given: compiled as null
    /// placeholders by [`super::load_all`] (a scheduler starts such a
    /// workflow only with them, from an event's payload).
    pub needs: Vec<String>,
}

impl Compiled {
    /// How a run of this file runs: in the file's folder, with the
    /// parallelism and failure policy the file sets.
    pub fn options(&self) -> crate::engine::RunOptions {
        let mut opts = crate::engine::RunOptions {
            dir: Some(self.dir.clone()),
            ..Default::default()
        };
        if let Some(n) = self.max_parallel {
            opts.max_parallel = n.max(1);
        }
        if self.keep_going {
            opts.failure_policy = crate::model::FailurePolicy::KeepGoing;
        }
        opts.params = self.params.clone();
        opts.per_run_dir = true;
        opts
    }
}

/// Reads and parses a sub-workflow file (a path relative to the current
/// directory, or absolute); returns its canonical path with its document.
pub type Load<'a> = dyn FnMut(&Path) -> Result<(PathBuf, WorkflowDoc), FileError> + 'a;

/// Compiles the workflow `doc` read from `file` (its canonical path) with
/// the run parameters `given`; sub-workflow files are read with `load`.
pub fn compile(
    file: &Path,
    doc: &WorkflowDoc,
    given: &Map<String, Value>,
    load: &mut Load<'_>,
) -> Result<Compiled, FileError> {
    let params = resolve_params(file, doc, given)?;
    if doc.max_active_runs == Some(0) {
        return Err(FileError::new(
            Place::of(file, &doc.name),
            "max_active_runs: 0 would never start a run (give 1 or more, or leave it out)",
        ));
    }
    let schedule = match &doc.schedule {
        Some(cron) => Some(
            crate::schedule::Schedule::parse(
                &cron.value,
                doc.timezone.as_ref().map(|t| t.value.as_str()),
            )
            .map_err(|e| FileError::new(Place::of(file, cron), e))?,
        ),
        None => {
            if let Some(tz) = &doc.timezone {
                return Err(FileError::new(
                    Place::of(file, tz),
                    "`timezone` goes with `schedule`, which the file does not give",
                ));
            }
            None
        }
    };
    let mut events = Vec::new();
    for key in &doc.events {
        let k = key.value.trim();
        if k.is_empty() || k.len() > 256 || k.chars().any(char::is_control) {
            return Err(FileError::new(
                Place::of(file, key),
                "an event key is 1 to 256 printable characters",
            ));
        }
        events.push(k.to_string());
    }
    let mut c = Compiler {
        mutations: Vec::new(),
        places: HashMap::new(),
        tasks: HashMap::new(),
        pending: Vec::new(),
        load,
        files: vec![file.to_path_buf()],
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        includes: 0,
    };
    let scope = Scope {
        file: file.to_path_buf(),
        prefix: String::new(),
        params: params.clone(),
    };
    c.unit(&scope, &doc.tasks)?;
    for p in &doc.promises {
        let place = Place::of(file, p);
        let promise: Promise = serde_json::from_value(p.value.clone())
            .map_err(|e| FileError::new(place.clone(), format!("promise: {e}")))?;
        c.mutations.push(Mutation::AddPromise { promise });
    }
    let mut rules: Vec<Mutation> = Vec::new();
    for r in &doc.rules {
        let place = Place::of(file, &r.id);
        let fail = |m: String| FileError::new(place.clone(), format!("rule `{}`: {m}", r.id.value));
        let when: Predicate = serde_json::from_value(r.when.value.clone()).map_err(|e| {
            FileError::new(
                Place::of(file, &r.when),
                format!("rule `{}`: when: {e}", r.id.value),
            )
        })?;
        if r.then.is_empty() {
            return Err(fail("then holds no task".into()));
        }
        let start = c.mutations.len();
        c.unit(&scope, &r.then)?;
        let body = without_repeated_edges(c.mutations.drain(start..).collect());
        let mut rule = Rule::new(r.id.value.clone(), when);
        rule.then = body;
        rule.check().map_err(fail)?;
        if rules
            .iter()
            .any(|m| matches!(m, Mutation::AddRule { rule: o } if o.id == rule.id))
        {
            return Err(fail("the id is used twice".into()));
        }
        rules.push(Mutation::AddRule {
            rule: Box::new(rule),
        });
    }
    let mut loops: Vec<Mutation> = Vec::new();
    for l in &doc.loops {
        let place = Place::of(file, &l.id);
        let fail = |m: String| FileError::new(place.clone(), format!("loop `{}`: {m}", l.id.value));
        let until: Until = match &l.until {
            None => Until::default(),
            Some(u) => serde_json::from_value(u.value.clone()).map_err(|e| {
                FileError::new(
                    Place::of(file, u),
                    format!("loop `{}`: until: {e}", l.id.value),
                )
            })?,
        };
        for end in [&l.from, &l.to] {
            if !c
                .mutations
                .iter()
                .any(|m| matches!(m, Mutation::AddNode { id, .. } if *id == end.value))
            {
                return Err(FileError::new(
                    Place::of(file, end),
                    format!(
                        "loop `{}`: `{}` is not a task of the file",
                        l.id.value, end.value
                    ),
                ));
            }
        }
        if l.body.is_empty() {
            return Err(fail("the body holds no task".into()));
        }
        let mut def = Loop::new(
            l.id.value.clone(),
            l.from.value.clone(),
            l.to.value.clone(),
            until,
            l.max.value,
        );
        if let Some(on_cap) = l.on_cap {
            def = def.on_cap(on_cap);
        }
        for t in &l.body {
            let start = c.mutations.len();
            c.unit(&scope, std::slice::from_ref(t))?;
            let made: Vec<Mutation> = c.mutations.drain(start..).collect();
            let mut nodes = made.into_iter().filter_map(|m| match m {
                Mutation::AddNode {
                    id,
                    task,
                    inputs,
                    attrs,
                } => Some((id, task, inputs, attrs)),
                _ => None,
            });
            let (Some((id, task, inputs, attrs)), None) = (nodes.next(), nodes.next()) else {
                return Err(FileError::new(
                    Place::of(file, &t.id),
                    format!(
                        "loop `{}`: a body task is one task (no `each`, `then` or `parallel`)",
                        l.id.value
                    ),
                ));
            };
            let mut step = LoopStep::new(id, *task).inputs(inputs);
            step.attrs = attrs;
            def = def.step(step);
        }
        def.check().map_err(|e| FileError::new(place.clone(), e))?;
        if loops
            .iter()
            .any(|m| matches!(m, Mutation::AddLoop { def: o } if o.id == def.id))
        {
            return Err(fail("the id is used twice".into()));
        }
        loops.extend(def.declaration());
    }
    let mut mutations = without_repeated_edges(c.mutations);
    mutations.extend(loops);
    mutations.extend(rules);
    let mut definition = Definition::new(doc.name.value.clone(), mutations);
    // The parameters are in place already; the rest is what a scheduler
    // reads.
    definition.triggers.schedule = doc.schedule.as_ref().map(|s| s.value.clone());
    definition.triggers.timezone = doc.timezone.as_ref().map(|t| t.value.clone());
    definition.triggers.catchup = doc.catchup;
    definition.triggers.max_active_runs = doc.max_active_runs;
    definition.triggers.events = events.clone();
    Ok(Compiled {
        definition,
        max_parallel: doc.max_parallel,
        keep_going: doc.keep_going,
        params,
        places: c.places,
        dir: c.base,
        schedule,
        catchup: doc.catchup,
        max_active_runs: doc.max_active_runs,
        events,
        needs: Vec::new(),
    })
}

/// The mutations with each edge once: an `after` that says what an output
/// reference already implies, or two tasks' sugar leading to the same
/// edge, adds nothing.
fn without_repeated_edges(mutations: Vec<Mutation>) -> Vec<Mutation> {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for m in &mutations {
        if let Mutation::AddNode { id, inputs, .. } = m {
            for r in crate::model::output_refs(inputs).unwrap_or_default() {
                seen.insert((r.node, id.clone()));
            }
        }
    }
    mutations
        .into_iter()
        .filter(|m| match m {
            Mutation::AddEdge { from, to, .. } => seen.insert((from.clone(), to.clone())),
            _ => true,
        })
        .collect()
}

/// The run's parameters: each declared one given, else its default;
/// refuses unknown and missing ones.
fn resolve_params(
    file: &Path,
    doc: &WorkflowDoc,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, FileError> {
    let place = Place::file(file);
    if let Some(unknown) = given.keys().find(|k| !doc.params.contains_key(*k)) {
        let declared: Vec<&str> = doc.params.keys().map(String::as_str).collect();
        return Err(FileError::new(
            place,
            format!(
                "unknown parameter `{unknown}` (the workflow declares {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        ));
    }
    for (name, v) in given {
        crate::model::check_param_value(v)
            .map_err(|e| FileError::new(place.clone(), format!("parameter `{name}`: {e}")))?;
    }
    let mut out = Map::new();
    for (name, p) in &doc.params {
        let value = given
            .get(name)
            .cloned()
            .or_else(|| p.default.clone())
            .ok_or_else(|| {
                FileError::new(
                    place.clone(),
                    format!("parameter `{name}` has no default: give it (--param {name}=VALUE)"),
                )
            })?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Where the tasks being compiled come from: their file, the prefix of
/// their ids and the parameters they see.
struct Scope {
    file: PathBuf,
    prefix: String,
    params: Map<String, Value>,
}

impl Scope {
    fn id(&self, local: &str) -> String {
        format!("{}{local}", self.prefix)
    }
}

/// The nodes a task starts at and ends at: what runs after it waits for
/// its exits; its `after` leads into its entries.
#[derive(Clone, Debug, Default)]
struct Ends {
    entries: Vec<String>,
    exits: Vec<String>,
    /// The node whose output is the task's (`None`: a group or a
    /// sub-workflow, which have none).
    output: Option<String>,
    place: Option<Place>,
}

/// An `after` list waiting for the end of its unit (ids may come later
/// in the file).
struct After {
    prefix: String,
    file: PathBuf,
    task: String,
    entries: Vec<String>,
    refs: Vec<(String, Place)>,
}

struct Compiler<'l, 'a> {
    mutations: Vec<Mutation>,
    places: HashMap<String, Place>,
    /// Every task by its full id.
    tasks: HashMap<String, Ends>,
    pending: Vec<After>,
    load: &'l mut Load<'a>,
    /// The files being compiled, outermost first (include cycles).
    files: Vec<PathBuf>,
    /// The folder of the outermost file: scripts resolve against it.
    base: PathBuf,
    /// Sub-workflow files read so far.
    includes: usize,
}

impl Compiler<'_, '_> {
    /// Compiles the tasks of one file (or sub-workflow) and resolves
    /// their `after` lists; returns the unit's entries (tasks nothing in it
    /// runs before) and exits (tasks nothing in it runs after).
    fn unit(&mut self, scope: &Scope, tasks: &[TaskDoc]) -> Result<Ends, FileError> {
        let first_pending = self.pending.len();
        let first_mutation = self.mutations.len();
        let mut top = Vec::new();
        for t in tasks {
            top.push(scope.id(&t.id.value));
            self.task(scope, t, 0)?;
        }
        // Edges of the `after` lists, now that every id is known.
        let pending: Vec<After> = self.pending.drain(first_pending..).collect();
        let mut has_pred: HashSet<String> = HashSet::new();
        let mut has_succ: HashSet<String> = HashSet::new();
        for a in &pending {
            for (r, place) in &a.refs {
                let full = format!("{}{r}", a.prefix);
                let Some(ends) = self.tasks.get(&full) else {
                    return Err(FileError::new(
                        place.clone(),
                        format!(
                            "task `{}`: after names `{r}`, which is no task of {}",
                            a.task,
                            a.file
                                .file_name()
                                .map_or(a.file.display(), |n| Path::new(n).display())
                        ),
                    ));
                };
                for from in &ends.exits {
                    for to in &a.entries {
                        self.mutations.push(Mutation::add_edge(from, to));
                    }
                }
                has_pred.insert(a.task.clone());
                has_succ.insert(full);
            }
        }
        // Output references imply edges too. The nodes of this unit's
        // tasks were added since it began, found by id through one index
        // (a search of every mutation for each task made a file of n
        // tasks cost n² comparisons: minutes at 100,000).
        let mut added: HashMap<&str, &Value> = HashMap::new();
        for m in &self.mutations[first_mutation..] {
            if let Mutation::AddNode { id, inputs, .. } = m {
                added.entry(id.as_str()).or_insert(inputs);
            }
        }
        for id in &top {
            let ends = &self.tasks[id];
            if let Some(node) = &ends.output {
                if let Some(inputs) = added.get(node.as_str()) {
                    for r in crate::model::output_refs(inputs).unwrap_or_default() {
                        has_pred.insert(id.clone());
                        if let Some((task, _)) = self
                            .tasks
                            .iter()
                            .find(|(_, e)| e.output.as_deref() == Some(&r.node))
                        {
                            has_succ.insert(task.clone());
                        }
                    }
                }
            }
        }
        let mut ends = Ends::default();
        for id in &top {
            let t = &self.tasks[id];
            if !has_pred.contains(id) {
                ends.entries.extend(t.entries.iter().cloned());
            }
            if !has_succ.contains(id) {
                ends.exits.extend(t.exits.iter().cloned());
            }
        }
        Ok(ends)
    }

    /// Compiles one task (and what it holds); registers its ends under
    /// its full id and queues its `after` list.
    fn task(&mut self, scope: &Scope, t: &TaskDoc, depth: usize) -> Result<Ends, FileError> {
        let id = scope.id(&t.id.value);
        let place = Place::of(&scope.file, &t.id);
        let fail =
            |message: String| FileError::new(place.clone(), format!("task `{id}`: {message}"));
        if depth > MAX_NESTING {
            return Err(fail(format!(
                "pre, post, parallel and each nest deeper than {MAX_NESTING} levels"
            )));
        }
        if t.id.value.is_empty() {
            return Err(FileError::new(place, "a task id is empty"));
        }
        if let Some(first) = self.tasks.get(&id) {
            let at = first
                .place
                .as_ref()
                .map_or(String::new(), |p| format!(" (first at {p})"));
            return Err(fail(format!("the id is used twice{at}")));
        }
        // Registered before what it holds: ids inside may not reuse it.
        self.tasks.insert(
            id.clone(),
            Ends {
                place: Some(place.clone()),
                ..Ends::default()
            },
        );
        let kinds: Vec<&str> = [
            ("python", t.python.is_some()),
            ("python_fn", t.python_fn.is_some()),
            ("command", t.command.is_some()),
            ("input", t.input.is_some()),
            ("parallel", t.parallel.is_some()),
            ("each", t.each.is_some()),
            ("workflow", t.workflow.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            // The image's own command.
            [] if t.container.is_some() => "container",
            [] => {
                return Err(fail(
                    "says nothing to run: give one of python, python_fn, command, input, parallel, each, workflow or container".into(),
                ))
            }
            many => {
                return Err(fail(format!(
                    "gives {}: a task runs exactly one of them",
                    many.join(" and ")
                )))
            }
        };
        let mut main = match kind {
            "parallel" => self.group(scope, t, depth, &fail)?,
            "workflow" => self.include(scope, t, &id, &fail)?,
            "each" => self.each(scope, t, &id, &place, &fail)?,
            _ => {
                if t.params.is_some() {
                    return Err(fail("`params` only goes with `workflow`".into()));
                }
                let node = self.leaf(scope, t, &id, &place, &fail)?;
                Ends {
                    entries: vec![node.clone()],
                    exits: vec![node.clone()],
                    output: Some(node),
                    place: None,
                }
            }
        };
        // `pre` tasks chain before, `post` tasks after.
        let mut entries = main.entries.clone();
        let mut chain_end: Option<Vec<String>> = None;
        for p in &t.pre {
            let e = self.task(scope, p, depth + 1)?;
            if let Some(prev) = &chain_end {
                self.edges(prev, &e.entries);
            } else {
                entries = e.entries.clone();
            }
            chain_end = Some(e.exits);
        }
        if let Some(prev) = chain_end {
            self.edges(&prev, &main.entries);
        }
        let mut exits = main.exits.clone();
        for p in &t.post {
            let e = self.task(scope, p, depth + 1)?;
            self.edges(&exits, &e.entries);
            exits = e.exits;
        }
        main.entries = entries;
        main.exits = exits;
        main.place = Some(place.clone());
        if !t.after.is_empty() {
            self.pending.push(After {
                prefix: scope.prefix.clone(),
                file: scope.file.clone(),
                task: id.clone(),
                entries: main.entries.clone(),
                refs: t
                    .after
                    .iter()
                    .map(|a| (a.value.clone(), Place::of(&scope.file, a)))
                    .collect(),
            });
        }
        self.tasks.insert(id, main.clone());
        Ok(main)
    }

    fn edges(&mut self, from: &[String], to: &[String]) {
        for f in from {
            for t in to {
                self.mutations.push(Mutation::add_edge(f, t));
            }
        }
    }

    /// A task of one node: python, python_fn, command or input.
    fn leaf(
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

    fn node(
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
    fn task_of(
        &self,
        scope: &Scope,
        t: &TaskDoc,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Task, FileError> {
        if t.listen.is_some() && t.input != Some(true) {
            return Err(fail("`listen` goes with `input: true`".into()));
        }
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
        let mut task = if let Some(script) = &t.python {
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
    fn inputs(
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

    /// `parallel`: the group's tasks side by side.
    fn group(
        &mut self,
        scope: &Scope,
        t: &TaskDoc,
        depth: usize,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Ends, FileError> {
        not_for_groups(t, "a parallel group", fail)?;
        let tasks = t.parallel.as_deref().unwrap_or_default();
        if tasks.is_empty() {
            return Err(fail("parallel holds no task".into()));
        }
        let mut ends = Ends::default();
        for child in tasks {
            let e = self.task(scope, child, depth + 1)?;
            ends.entries.extend(e.entries);
            ends.exits.extend(e.exits);
        }
        Ok(ends)
    }

    /// `workflow`: another file's tasks, prefixed with `ID.`.
    fn include(
        &mut self,
        scope: &Scope,
        t: &TaskDoc,
        id: &str,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Ends, FileError> {
        not_for_groups(t, "a sub-workflow", fail)?;
        let rel = t.workflow.as_deref().unwrap_or_default();
        self.includes += 1;
        if self.includes > MAX_INCLUDES {
            return Err(fail(format!(
                "the workflow includes sub-workflow files more than {MAX_INCLUDES} times"
            )));
        }
        let dir = scope.file.parent().unwrap_or(Path::new(""));
        let (path, doc) = (self.load)(&dir.join(rel))?;
        if let Some(i) = self.files.iter().position(|f| *f == path) {
            let cycle: Vec<String> = self.files[i..]
                .iter()
                .chain([&path])
                .map(|f| f.display().to_string())
                .collect();
            return Err(fail(format!(
                "workflow files include each other: {}",
                cycle.join(" -> ")
            )));
        }
        if self.files.len() >= MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "sub-workflows nest deeper than {MAX_INCLUDE_DEPTH} files"
            )));
        }
        let given = t.params.clone().unwrap_or_default();
        let mut given_map = Map::new();
        for (k, v) in given {
            given_map.insert(
                k,
                fill(&v, scope, 0).map_err(|e| fail(format!("params: {e}")))?,
            );
        }
        let params = resolve_params(&path, &doc, &given_map)?;
        let inner = Scope {
            file: path.clone(),
            prefix: format!("{id}."),
            params,
        };
        self.files.push(path);
        let ends = self.unit(&inner, &doc.tasks);
        self.files.pop();
        let mut ends = ends?;
        if let Some(p) = doc.promises.first() {
            return Err(FileError::new(
                Place::of(&inner.file, p),
                "a sub-workflow cannot declare promises (their node ids would not be prefixed): declare them in the including file",
            ));
        }
        if let Some(r) = doc.rules.first() {
            return Err(FileError::new(
                Place::of(&inner.file, &r.id),
                "a sub-workflow cannot declare rules (their patterns would not be prefixed): declare them in the including file",
            ));
        }
        if ends.entries.is_empty() {
            return Err(fail(format!("{} has no task", inner.file.display())));
        }
        ends.output = None;
        Ok(ends)
    }

    /// `each`: `ID.each` adds a copy of the template per item; `ID`
    /// gathers their outputs.
    fn each(
        &mut self,
        scope: &Scope,
        t: &TaskDoc,
        id: &str,
        place: &Place,
        fail: &dyn Fn(String) -> FileError,
    ) -> Result<Ends, FileError> {
        let each = t.each.as_deref().expect("an each task");
        for (field, set) in [
            ("inputs", t.inputs.is_some()),
            ("params", t.params.is_some()),
            ("output_required", t.output_required.is_some()),
        ] {
            if set {
                return Err(fail(format!(
                    "`{field}` does not apply to an each task: give the item task its inputs"
                )));
            }
        }
        let tpl = &each.task;
        let tpl_fail = |m: String| fail(format!("each task `{}`: {m}", tpl.id.value));
        if !tpl.after.is_empty() || !tpl.pre.is_empty() || !tpl.post.is_empty() {
            return Err(tpl_fail(
                "an item task runs one node: after, pre and post belong on the each task".into(),
            ));
        }
        if tpl.parallel.is_some()
            || tpl.each.is_some()
            || tpl.workflow.is_some()
            || tpl.input.is_some()
        {
            return Err(tpl_fail(
                "an item task runs python, python_fn or command".into(),
            ));
        }
        let mut template = self.task_of(scope, tpl, &tpl_fail)?;
        let name = tpl.name.clone().unwrap_or_else(|| tpl.id.value.clone());
        if name.is_empty() {
            return Err(tpl_fail("the item task's id is empty".into()));
        }
        template.name = name.clone();
        let tpl_inputs = match &tpl.inputs {
            None => Value::Object(Map::new()),
            Some(v) => self.inputs(scope, v, &tpl_fail)?,
        };
        let items = fill(&each.items, scope, 0).map_err(|e| fail(format!("each items: {e}")))?;
        if !(items.is_array() || items.get("$output").is_some()) {
            return Err(fail(format!(
                "each items must be a list or {{\"$output\": \"ID\"}}, got {}",
                json_kind(&items)
            )));
        }
        let spawner = format!("{id}.each");
        let mut task = Task::python_fn(&format!("{BUILTINS}:each")).named(format!("{}.each", name));
        if let Some(n) = t.retries {
            task = task.retries(n);
        }
        let mut inputs = Map::new();
        inputs.insert("items".into(), items);
        inputs.insert(
            "template".into(),
            serde_json::to_value(&template).expect("a task serialises"),
        );
        inputs.insert("inputs".into(), tpl_inputs);
        inputs.insert("prefix".into(), Value::String(id.to_string()));
        inputs.insert("into".into(), Value::String(id.to_string()));
        if let Some(max) = each.max {
            inputs.insert("max".into(), Value::from(max));
        }
        let mut attrs = Map::new();
        attrs.insert("label".into(), Value::String(format!("{id}: each")));
        self.node(&spawner, task, Value::Object(inputs), attrs, place)?;
        let mut gather_inputs = Map::new();
        gather_inputs.insert("prefix".into(), Value::String(id.to_string()));
        let gather = Task::python_fn(&format!("{BUILTINS}:gather"))
            .named(t.name.clone().unwrap_or_default());
        self.node(
            id,
            gather,
            Value::Object(gather_inputs),
            t.attrs.clone().unwrap_or_default(),
            place,
        )?;
        self.mutations.push(Mutation::AddPromise {
            promise: Promise::shape(&spawner, id, Shape::repeat(Shape::task(&name), 0, each.max)),
        });
        // The template's own id names no node.
        let _ = self.tasks.remove(&scope.id(&tpl.id.value));
        Ok(Ends {
            entries: vec![spawner],
            exits: vec![id.to_string()],
            output: Some(id.to_string()),
            place: None,
        })
    }
}

/// Refuses the fields of a one-node task on a group.
fn not_for_groups(
    t: &TaskDoc,
    what: &str,
    fail: &dyn Fn(String) -> FileError,
) -> Result<(), FileError> {
    for (field, set) in [
        ("inputs", t.inputs.is_some()),
        ("retries", t.retries.is_some()),
        ("retry_delay", t.retry_delay.is_some()),
        ("timeout", t.timeout.is_some()),
        ("output_required", t.output_required.is_some()),
        ("produces", !t.produces.is_empty()),
        ("requires", t.requires.is_some()),
        ("container", t.container.is_some()),
        ("attrs", t.attrs.is_some()),
        ("name", t.name.is_some()),
    ] {
        if set {
            return Err(fail(format!("`{field}` does not apply to {what}")));
        }
    }
    if t.params.is_some() && t.workflow.is_none() {
        return Err(fail("`params` only goes with `workflow`".into()));
    }
    Ok(())
}

/// `v` with every `{"$param": "name"}` replaced by the parameter's value
/// and every `{"$output": "id"}` prefixed with the scope's prefix.
fn fill(v: &Value, scope: &Scope, depth: usize) -> Result<Value, String> {
    if depth > 128 {
        return Err("values nest deeper than 128 levels".into());
    }
    Ok(match v {
        Value::Object(map) if map.contains_key("$param") => {
            let name = match (map.get("$param"), map.len()) {
                (Some(Value::String(n)), 1) => n,
                _ => return Err(format!("{v} must look like {{\"$param\": \"name\"}}")),
            };
            scope.params.get(name).cloned().ok_or_else(|| {
                format!(
                    "`$param` names `{name}`, which is no parameter of {}",
                    scope.file.display()
                )
            })?
        }
        Value::Object(map) if map.contains_key("$output") => {
            let mut out = map.clone();
            if let Some(Value::String(node)) = map.get("$output") {
                out.insert("$output".into(), Value::String(scope.id(node)));
            }
            Value::Object(out)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| Ok((k.clone(), fill(x, scope, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| fill(x, scope, depth + 1))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `{{name}}` in a command argument replaced by the parameter (a string
/// as it is, anything else as JSON); in a shell's command line (`quote`)
/// single-quoted, so that a value is never shell syntax.
fn interpolate(arg: &str, params: &Map<String, Value>, quote: bool) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        let value = params.get(name).ok_or_else(|| {
            format!("command argument `{arg}` names `{{{{{name}}}}}`, which is no parameter")
        })?;
        out.push_str(&rest[..open]);
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if quote {
            // POSIX single quotes: nothing inside is special but `'`.
            out.push('\'');
            out.push_str(&text.replace('\'', "'\\''"));
            out.push('\'');
        } else {
            out.push_str(&text);
        }
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration in seconds, or text with a unit ([`crate::time::parse_duration`]).
fn duration(d: &DurationDoc) -> Result<Duration, String> {
    match d {
        DurationDoc::Seconds(s) => crate::time::seconds(*s),
        DurationDoc::Text(t) => crate::time::parse_duration(t),
    }
}

/// A task's requirements as the model holds them.
fn resources(r: &super::doc::RequiresDoc) -> Result<crate::model::Resources, String> {
    if let Some(cpu) = r.cpu.filter(|c| !c.is_finite() || *c <= 0.0) {
        return Err(format!("cpu {cpu} is not a positive number of cores"));
    }
    let memory = match &r.memory {
        None => None,
        Some(DurationDoc::Seconds(n)) if *n >= 0.0 && n.is_finite() => Some(*n as u64),
        Some(DurationDoc::Seconds(n)) => {
            return Err(format!("memory {n} is not a number of bytes"))
        }
        Some(DurationDoc::Text(t)) => Some(bytes(t)?),
    };
    if r.labels.len() > 64 || r.labels.iter().any(|l| l.is_empty() || l.len() > 256) {
        return Err("labels: at most 64, each 1 to 256 characters".into());
    }
    Ok(crate::model::Resources {
        cpu: r.cpu,
        memory,
        gpu: r.gpu,
        labels: r.labels.clone(),
    })
}

/// `"512M"`, `"4G"`, `"1.5T"` (powers of 1024) or a number of bytes.
fn bytes(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("memory `{t}` is not an amount (say 512M or 4G)"))?;
    let scale = match unit.trim().trim_end_matches(['i', 'B']) {
        "" => 1.0,
        "K" | "k" => 1024.0,
        "M" | "m" => 1024.0 * 1024.0,
        "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        "T" | "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "memory `{t}` has the unknown unit `{other}` (K, M, G or T)"
            ))
        }
    };
    let b = n * scale;
    if !b.is_finite() || b < 0.0 || b > u64::MAX as f64 {
        return Err(format!("memory `{t}` is out of range"));
    }
    Ok(b as u64)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The parameters given on a command line (`name=value`, the value JSON
/// when it parses as JSON, else a string).
///
/// ```
/// let p = orch::file::parse_params(["n=3", "day=2024-01-01"]).unwrap();
/// assert_eq!(p["n"], 3);
/// assert_eq!(p["day"], "2024-01-01");
/// assert!(orch::file::parse_params(["oops"]).is_err());
/// assert!(orch::file::parse_params(["big=123456789012345678901234"]).is_err());
/// ```
pub fn parse_params<'a>(
    args: impl IntoIterator<Item = &'a str>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for arg in args {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("--param `{arg}` must look like name=value"))?;
        if k.is_empty() {
            return Err(format!("--param `{arg}` names no parameter"));
        }
        let value = match serde_json::from_str::<Value>(v) {
            // JSON, kept exactly or refused (an integer beyond 64 bits
            // would be read as a float).
            Ok(value) => {
                crate::limits::check_json(v).map_err(|e| format!("--param `{k}`: {e}"))?;
                value
            }
            Err(_) => Value::String(v.to_string()),
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}
