//! The structure of a file's tasks: a unit of tasks and their `after`
//! lists, `pre` and `post` chains, `parallel` groups, sub-workflows
//! (`workflow`) and `each`, as nodes and edges.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

use super::values::{fill, json_kind};
use super::{
    resolve_params, After, Compiler, Ends, Scope, BUILTINS, MAX_INCLUDES, MAX_INCLUDE_DEPTH,
    MAX_NESTING,
};
use crate::file::doc::TaskDoc;
use crate::file::error::{FileError, Place};
use crate::model::{Mutation, Task};
use crate::promise::shape::Shape;
use crate::promise::Promise;

impl Compiler<'_, '_> {
    /// Compiles the tasks of one file (or sub-workflow) and resolves
    /// their `after` lists; returns the unit's entries (tasks nothing in it
    /// runs before) and exits (tasks nothing in it runs after).
    pub(super) fn unit(&mut self, scope: &Scope, tasks: &[TaskDoc]) -> Result<Ends, FileError> {
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
