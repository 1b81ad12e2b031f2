//! The orchestrator side: the registry of this binary's tasks and types,
//! and the checks of inputs and outputs against the types they declare.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{output_refs, Task};

use super::builtins::BUILTINS;
use super::child::task_mode;
use super::{Field, TaskDef, TASK_ENV};

/// The orchestrator-side record of a native task.
#[derive(Clone, Copy)]
struct Registered {
    name: &'static str,
    module: &'static str,
    fields: &'static [Field],
}

type Checker = fn(&Value) -> std::result::Result<(), String>;

static TASKS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static TYPES: Mutex<BTreeMap<&'static str, Checker>> = Mutex::new(BTreeMap::new());
/// Task names defined twice in this binary: (name, first module, second).
static CLASHES: Mutex<Vec<(&'static str, &'static str, &'static str)>> = Mutex::new(Vec::new());

/// Registers a task in this process, or, when this process was started in
/// task mode for this task (or for a built-in task), runs it and exits.
/// Called by the constructor `#[task]` generates.
pub(crate) fn register<T: TaskDef>(module: &'static str) {
    if let Some(asked) = std::env::var_os(TASK_ENV) {
        if asked == T::NAME {
            task_mode(T::NAME, T::invoke);
        }
        if let Some((name, invoke)) = BUILTINS.iter().find(|(n, _)| asked == *n) {
            task_mode(name, *invoke);
        }
        // Another constructor may claim it; if none does, `run` refuses.
    }
    let mut tasks = lock(&TASKS);
    if let Some(first) = tasks.iter().find(|t| t.name == T::NAME) {
        let clash = (T::NAME, first.module, module);
        lock(&CLASHES).push(clash);
    }
    tasks.push(Registered {
        name: T::NAME,
        module,
        fields: T::fields(),
    });
    drop(tasks);
    register_type::<T::Output>();
}

/// Makes `T` known by name, so values declared to be a `T` can be checked.
pub(crate) fn register_type<T: crate::typed::TaskValue>() -> &'static str {
    let name = std::any::type_name::<T>();
    register_checker(name, T::__orch_check);
    name
}

/// Makes the type named `name` known with its checker.
pub(crate) fn register_checker(name: &'static str, check: Checker) {
    lock(&TYPES).insert(name, check);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `std::any::type_name` without module paths: `Vec<u64>` for
/// `alloc::vec::Vec<u64>`.
///
/// ```
/// assert_eq!(orch::native::short_type_name("alloc::vec::Vec<(u64, alloc::string::String)>"), "Vec<(u64, String)>");
/// ```
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word.rsplit("::").next().unwrap_or(word));
        word.clear();
    };
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Why this process must not orchestrate: it was started in task mode but
/// no task of this binary claimed the run (no fork bomb), or two tasks of
/// this binary share a name (a child could run the wrong one).
pub(crate) fn refuse_task_mode() -> Result<()> {
    if let Some(&(name, first, second)) = lock(&CLASHES).first() {
        return Err(Error::DuplicateTask {
            name: name.to_string(),
            first: first.to_string(),
            second: second.to_string(),
        });
    }
    match std::env::var(TASK_ENV) {
        Ok(task) => {
            let mut known: Vec<&str> = lock(&TASKS).iter().map(|t| t.name).collect();
            known.sort_unstable();
            Err(Error::UnknownNativeTask {
                task,
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            })
        }
        Err(_) => Ok(()),
    }
}

/// Checks a node's inputs against its task's declared input types, as far
/// as they are known before the node runs: literal values must deserialise
/// into their field's type; a reference to a node whose task declares an
/// output type must name the same type. `output_type_of` gives a node's
/// declared output type. Errors name the field.
pub(crate) fn check_inputs(
    task: &Task,
    inputs: &Value,
    output_type_of: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    if let crate::model::Exec::Native { task: name } = &task.exec {
        if BUILTINS.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let tasks = lock(&TASKS);
        if tasks.is_empty() {
            // Not the workflow binary (the `orch` CLI resuming a run):
            // nothing is known here; the child checks when it starts.
            return Ok(());
        }
        let Some(reg) = tasks.iter().find(|t| t.name == name).copied() else {
            let mut known: Vec<&str> = tasks.iter().map(|t| t.name).collect();
            known.sort_unstable();
            return Err(format!(
                "this binary defines no native task `{name}` (its tasks: {})",
                known.join(", ")
            ));
        };
        drop(tasks);
        return check_fields(&reg, inputs, output_type_of);
    }
    match &task.input_type {
        // Only declared types are checked: an untyped node's inputs are
        // never walked.
        Some(type_name) if !has_refs(inputs) => check_typed(type_name, inputs, "inputs"),
        _ => Ok(()),
    }
}

/// Checks inputs whose references are resolved (the node is starting).
pub(crate) fn check_resolved_inputs(
    task: &Task,
    inputs: &Value,
) -> std::result::Result<(), String> {
    check_inputs(task, inputs, &|_| None)
}

/// Checks an output against the task's declared output type.
pub(crate) fn check_output(task: &Task, output: &Value) -> std::result::Result<(), String> {
    match &task.output_type {
        Some(type_name) => check_typed(type_name, output, "the output"),
        None => Ok(()),
    }
}

fn check_typed(type_name: &str, value: &Value, what: &str) -> std::result::Result<(), String> {
    let checker = lock(&TYPES).get(type_name).copied();
    match checker {
        Some(check) => check(value).map_err(|e| {
            format!(
                "{what} {} is not a `{}`: {e}",
                abbreviate(value),
                short_type_name(type_name)
            )
        }),
        None => Ok(()),
    }
}

fn check_fields(
    reg: &Registered,
    inputs: &Value,
    output_type_of: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    let takes = || {
        reg.fields
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let empty = Map::new();
    let map = match inputs {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(format!(
                "task `{}` takes named inputs ({}), not {}",
                reg.name,
                takes(),
                abbreviate(other)
            ))
        }
    };
    if let Some(extra) = map
        .keys()
        .find(|k| !reg.fields.iter().any(|f| f.name == k.as_str()))
    {
        return Err(format!(
            "task `{}` has no input `{extra}`; it takes {}",
            reg.name,
            takes()
        ));
    }
    for f in reg.fields {
        let want = (f.type_name)();
        let Some(value) = map.get(f.name) else {
            return Err(format!(
                "input `{}` of task `{}` is missing (a `{}`)",
                f.name,
                reg.name,
                short_type_name(want)
            ));
        };
        if value.get("$output").is_some() {
            let Ok(refs) = output_refs(value) else {
                continue; // the graph reports malformed references
            };
            let r = &refs[0];
            if r.pointer.is_empty() {
                if let Some(have) = output_type_of(&r.node) {
                    if have != want {
                        return Err(format!(
                            "input `{}` of task `{}` is a `{}`, but node `{}` produces a `{}`",
                            f.name,
                            reg.name,
                            short_type_name(want),
                            r.node,
                            short_type_name(&have)
                        ));
                    }
                }
            }
            continue;
        }
        if has_refs(value) {
            continue;
        }
        (f.check)(value).map_err(|e| {
            format!(
                "input `{}` of task `{}` must be a `{}`: {e} (got {})",
                f.name,
                reg.name,
                short_type_name(want),
                abbreviate(value)
            )
        })?;
    }
    Ok(())
}

fn has_refs(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$output") || m.values().any(has_refs),
        Value::Array(a) => a.iter().any(has_refs),
        _ => false,
    }
}

pub(super) fn abbreviate(v: &Value) -> String {
    crate::exec::protocol::quote(&v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_paths() {
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(
            short_type_name("std::collections::hash::map::HashMap<alloc::string::String, u8>"),
            "HashMap<String, u8>"
        );
        assert_eq!(short_type_name("&str"), "&str");
    }
}
