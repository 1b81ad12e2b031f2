//! The structural rules one mutation must keep to join a batch.

use petgraph::Direction;
use serde_json::Value;

use super::{reorder, Graph, Ref, Staged};
use crate::error::StructuralError;
use crate::limits::{check_len, check_object, check_value, MAX_NAME_BYTES};
use crate::limits::{MAX_LOOPS, MAX_RULES};
use crate::model::{output_refs, Attrs, Mutation};
use crate::promise::Promise;

impl Staged<'_> {
    /// Checks `m` against the graph plus the batch and records what it
    /// adds to the batch's indices; the caller then accepts it (as the
    /// next of the batch's mutations).
    pub(super) fn admit(&mut self, g: &Graph, m: &Mutation) -> Result<(), StructuralError> {
        self.sync_order(g);
        let err = |reason: String| StructuralError {
            mutation: m.describe(),
            reason,
        };
        match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                check_id(id).map_err(&err)?;
                check_len("task name", &task.name, MAX_NAME_BYTES, "MAX_NAME_BYTES")
                    .map_err(&err)?;
                check_json_values(inputs, attrs).map_err(&err)?;
                if let crate::model::Exec::Container(c) = &task.exec {
                    c.check().map_err(|e| err(format!("container task: {e}")))?;
                }
                if let Some(r) = self.resolve(g, id) {
                    let existing = match r {
                        Ref::Old(i) => format!("in the graph (state {})", g.node(i).state),
                        Ref::New(_) => "earlier in this batch".to_string(),
                    };
                    return Err(err(format!("node id `{id}` is already used {existing}")));
                }
                let refs = output_refs(inputs).map_err(|e| err(format!("bad input: {e}")))?;
                let mut sources = Vec::new();
                for r in refs {
                    if r.node == *id {
                        return Err(err(format!(
                            "input reference to its own output `{}` would be a cycle",
                            r.node
                        )));
                    }
                    let src = self.resolve(g, &r.node).ok_or_else(|| {
                        err(format!(
                            "input references the output of `{}`, which is not a node of the graph or of this batch",
                            r.node
                        ))
                    })?;
                    if !sources.contains(&src) {
                        sources.push(src);
                    }
                }
                let k = self.new_nodes.len();
                self.new_ids.insert(id, k);
                // The mutation joins `mutations` there below (its task name
                // filled in), once nothing can fail any more.
                self.new_nodes.push(self.mutations().len());
                // Last in the order: edges from its sources agree with it.
                self.ord_new.push(self.next_ord);
                self.next_ord += 1;
                for src in sources {
                    self.add_edge(src, Ref::New(k));
                }
            }
            Mutation::AddEdge { from, to, attrs } => {
                check_json_values(&Value::Null, attrs).map_err(&err)?;
                let f = self
                    .resolve(g, from)
                    .ok_or_else(|| err(format!("unknown node `{from}`")))?;
                let t = self
                    .resolve(g, to)
                    .ok_or_else(|| err(format!("unknown node `{to}`")))?;
                if let Ref::Old(i) = t {
                    let state = g.node(i).state;
                    if !state.not_started() {
                        return Err(err(format!(
                            "node `{to}` already started (state {state}); edges may only end at nodes that have not started"
                        )));
                    }
                }
                if self.has_edge(g, f, t) {
                    return Err(err(format!("edge `{from}` -> `{to}` already exists")));
                }
                if f == t {
                    return Err(err(format!(
                        "it would close the cycle `{from}` -> `{from}`"
                    )));
                }
                if self.ord(g, f) > self.ord(g, t) {
                    let mut next = self.next_ord;
                    let moved = reorder(
                        t,
                        f,
                        &mut next,
                        &|r| self.ord(g, r),
                        &|r, cb| self.for_neighbours(g, r, Direction::Outgoing, cb),
                        &|r, cb| self.for_neighbours(g, r, Direction::Incoming, cb),
                    );
                    match moved {
                        Ok(moved) => {
                            self.next_ord = next;
                            for (r, o) in moved {
                                self.set_ord(r, o);
                            }
                        }
                        Err(path) => {
                            let mut names: Vec<&str> =
                                path.iter().map(|&r| self.name(g, r)).collect();
                            names.push(self.name(g, t));
                            return Err(err(format!(
                                "it would close the cycle {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(" -> ")
                            )));
                        }
                    }
                }
                self.add_edge(f, t);
            }
            Mutation::SetAttrs { node, edge, attrs } => match (&node, &edge) {
                (Some(n), None) => {
                    check_json_values(&Value::Null, attrs).map_err(&err)?;
                    self.resolve(g, n)
                        .ok_or_else(|| err(format!("unknown node `{n}`")))?;
                }
                (None, Some(e)) => {
                    check_json_values(&Value::Null, attrs).map_err(&err)?;
                    let f = self
                        .resolve(g, &e.from)
                        .ok_or_else(|| err(format!("unknown node `{}`", e.from)))?;
                    let t = self
                        .resolve(g, &e.to)
                        .ok_or_else(|| err(format!("unknown node `{}`", e.to)))?;
                    if !self.has_edge(g, f, t) {
                        return Err(err(format!("unknown edge `{}` -> `{}`", e.from, e.to)));
                    }
                }
                _ => {
                    return Err(err(
                        "set_attrs needs exactly one of `node` or `edge`".to_string()
                    ))
                }
            },
            Mutation::AddPromise { promise } => {
                promise.check().map_err(&err)?;
                if let Promise::Shape { from, to, .. } = promise {
                    for end in [from, to] {
                        if self.resolve(g, end).is_none() {
                            return Err(err(format!(
                                "the shape's node `{end}` is not a node of the graph or of this batch"
                            )));
                        }
                    }
                    if from == to {
                        return Err(err(format!(
                            "a shape needs two different nodes, got `{from}` twice"
                        )));
                    }
                }
            }
            Mutation::AddRule { rule } => {
                rule.check().map_err(&err)?;
                if g.rule_position(&rule.id).is_some() || self.new_rules.contains(&rule.id) {
                    return Err(err(format!("rule id `{}` is already used", rule.id)));
                }
                if g.rules.len() + self.new_rules.len() >= MAX_RULES {
                    return Err(err(format!(
                        "the run has {MAX_RULES} rules already (MAX_RULES)"
                    )));
                }
                self.new_rules.push(rule.id.clone());
            }
            Mutation::AddLoop { def } => {
                def.check().map_err(&err)?;
                if g.find_loop(&def.id).is_some() || self.new_loops.contains(&def.id) {
                    return Err(err(format!("loop id `{}` is already used", def.id)));
                }
                if g.loops.len() + self.new_loops.len() >= MAX_LOOPS {
                    return Err(err(format!(
                        "the run has {MAX_LOOPS} loops already (MAX_LOOPS)"
                    )));
                }
                // The loop comes with its first iteration, wired after
                // `from`, and its `to` (see `Loop::declaration`).
                for end in [&def.from, &def.to] {
                    if self.resolve(g, end).is_none() {
                        return Err(err(format!(
                            "loop `{}`: `{end}` is not a node of the graph or of this batch",
                            def.id
                        )));
                    }
                }
                for s in &def.body {
                    if self.resolve(g, &s.node(1)).is_none() {
                        return Err(err(format!(
                            "loop `{}`: its first iteration's node `{}` is not in the graph or this batch (declare the loop with `Loop::declaration`)",
                            def.id,
                            s.node(1)
                        )));
                    }
                }
                self.new_loops.push(def.id.clone());
            }
        }
        Ok(())
    }
}

/// Inputs and attributes nest at most [`MAX_JSON_DEPTH`] levels, however
/// they were built: the events that store them must read back.
fn check_json_values(inputs: &Value, attrs: &Attrs) -> Result<(), String> {
    let attrs = check_object(attrs);
    check_value(inputs)
        .map_err(|e| format!("inputs: {e}"))
        .and(attrs.map_err(|e| format!("attrs: {e}")))
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("node id is empty".to_string());
    }
    check_len("node id", id, MAX_NAME_BYTES, "MAX_NAME_BYTES")?;
    if let Some(c) = id.chars().find(|c| c.is_control() || *c == '"') {
        return Err(format!("node id {id:?} contains the character {c:?}"));
    }
    Ok(())
}
