//! Built-in tasks: the run-time halves of the typed map and branch. They
//! are ordinary native tasks (one subprocess each) that use the uniform
//! primitives: add nodes and edges, read `upstream`.

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::model::Task;

use super::child::Invoke;
use super::registry::abbreviate;
use super::{Context, Failure};

/// Task names of the built-ins.
pub(crate) const MAP: &str = "orch.map";
pub(crate) const COLLECT: &str = "orch.collect";
pub(crate) const SWITCH: &str = "orch.switch";
pub(crate) const JOIN: &str = "orch.join";

pub(super) const BUILTINS: [(&str, Invoke); 4] = [
    (MAP, builtin_map),
    (COLLECT, builtin_collect),
    (SWITCH, builtin_switch),
    (JOIN, builtin_join),
];

/// The placeholder a template holds where the mapped item (or the branch
/// value) goes.
pub(crate) const ITEM: &str = "$item";

fn input<T: DeserializeOwned>(inputs: &Value, key: &str) -> std::result::Result<T, Failure> {
    T::deserialize(&inputs[key])
        .map_err(|e| Failure::terminal(format!("built-in input `{key}` is malformed: {e}")))
}

/// A template filled in: the item at each of `items_at`, a reference to
/// the named node at each of `locals_at` (pointers recorded when the
/// template was built, so data elsewhere is never touched).
fn fill(template: &Value, spec: &Value, item: &Value) -> std::result::Result<Value, Failure> {
    let items_at: Vec<String> = input(spec, "items_at")?;
    let locals_at: Vec<(String, String)> = if spec.get("locals_at").is_some() {
        input(spec, "locals_at")?
    } else {
        Vec::new()
    };
    let mut v = template.clone();
    for at in &items_at {
        let slot = v
            .pointer_mut(at)
            .ok_or_else(|| Failure::terminal(format!("template has no slot at `{at}`")))?;
        *slot = item.clone();
    }
    for (at, id) in &locals_at {
        let slot = v
            .pointer_mut(at)
            .ok_or_else(|| Failure::terminal(format!("template has no slot at `{at}`")))?;
        *slot = json!({ "$output": id });
    }
    Ok(v)
}

fn refused(e: Error) -> Failure {
    Failure::terminal(e.to_string())
}

/// `orch.map`: adds one copy of the template per item of `items`, between
/// itself and `to`.
fn builtin_map(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let items: Vec<Value> = input(&inputs, "items")?;
    let task: Task = input(&inputs, "task")?;
    let base: String = input(&inputs, "base")?;
    let to: String = input(&inputs, "to")?;
    let me = ctx.node_id().to_string();
    if items.is_empty() {
        ctx.edge(&me, &to).map_err(refused)?;
    }
    let attrs: Map<String, Value> = input(&inputs, "attrs").unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let id = format!("{base}[{i}]");
        let copy_inputs = fill(&inputs["inputs"], &inputs, item)?;
        ctx.add_node(&id, task.clone(), copy_inputs, attrs.clone())
            .map_err(refused)?;
        ctx.edge(&me, &id).map_err(refused)?;
        ctx.edge(&id, &to).map_err(refused)?;
    }
    Ok(json!(items.len()))
}

/// `orch.collect`: the outputs of the copies `<base>[i]`, in order.
fn builtin_collect(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let base: String = input(&inputs, "base")?;
    let prefix = format!("{base}[");
    let mut found: Vec<(usize, Value)> = ctx
        .upstream()
        .iter()
        .filter_map(|(id, v)| {
            let i = id.strip_prefix(&prefix)?.strip_suffix(']')?.parse().ok()?;
            Some((i, v.clone()))
        })
        .collect();
    found.sort_by_key(|(i, _)| *i);
    Ok(Value::Array(found.into_iter().map(|(_, v)| v).collect()))
}

/// `orch.switch`: adds the nodes of the case whose key equals `value`
/// (or of the default case), between itself and `to`.
fn builtin_switch(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let value = inputs["value"].clone();
    let cases: Vec<Value> = input(&inputs, "cases")?;
    let to: String = input(&inputs, "to")?;
    let chosen = cases
        .iter()
        .find(|c| c.get("key") == Some(&value))
        .or_else(|| cases.iter().find(|c| c.get("key").is_none()))
        .ok_or_else(|| {
            let keys: Vec<String> = cases.iter().map(|c| c["key"].to_string()).collect();
            Failure::terminal(format!(
                "no branch for the value {}: the branches are {}",
                abbreviate(&value),
                keys.join(", ")
            ))
        })?;
    let nodes: Vec<Value> = input(chosen, "nodes")?;
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();
    // What each node of the case uses or runs after, among the case's.
    let mut deps = Vec::new();
    for n in &nodes {
        let locals: Vec<(String, String)> = input(n, "locals_at")?;
        let after: Vec<String> = input(n, "after")?;
        let mut d: Vec<String> = locals.into_iter().map(|(_, id)| id).collect();
        d.extend(after);
        deps.push(d);
    }
    let used: std::collections::BTreeSet<&String> = deps.iter().flatten().collect();
    let me = ctx.node_id().to_string();
    for ((n, id), d) in nodes.iter().zip(&ids).zip(&deps) {
        let task: Task = input(n, "task")?;
        let attrs: Map<String, Value> = input(n, "attrs").unwrap_or_default();
        ctx.add_node(id, task, fill(&n["inputs"], n, &value)?, attrs)
            .map_err(refused)?;
        if d.is_empty() {
            ctx.edge(&me, id).map_err(refused)?;
        }
        let after: Vec<String> = input(n, "after")?;
        for a in &after {
            ctx.edge(a, id).map_err(refused)?;
        }
    }
    for id in ids.iter().filter(|id| !used.contains(id)) {
        ctx.edge(id, &to).map_err(refused)?;
    }
    Ok(chosen["label"].clone())
}

/// `orch.join`: passes on the output of whichever branch result ran.
fn builtin_join(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let results: Vec<String> = input(&inputs, "results")?;
    results
        .iter()
        .find_map(|id| ctx.upstream().get(id).cloned())
        .ok_or_else(|| Failure::terminal("no branch result arrived".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_only_their_slots() {
        let spec = json!({"items_at": ["/x"], "locals_at": [["/y/0", "a"]]});
        // Data that looks like a placeholder or a reference stays data.
        let template = json!({"x": null, "y": [null], "z": {"$item": 1}});
        assert_eq!(
            fill(&template, &spec, &json!(7)).unwrap(),
            json!({"x": 7, "y": [{"$output": "a"}], "z": {"$item": 1}})
        );
    }
}
