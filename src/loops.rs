//! Unrolling loops at run time (SPEC §10): what a loop's next batch is.
//!
//! A loop ([`crate::model::Loop`]) is declared with its first iteration
//! ([`Loop::declaration`]). Whenever the graph or a node's state changes,
//! the engine asks [`next`] about every loop. Once the body's last step of
//! the latest iteration `k` succeeded:
//!
//! - when its output meets `until`, the loop exits: the batch is the edge
//!   `<last>#k -> to`, which completes the region `chain(body, 1, max)`;
//! - otherwise, below the bound, the batch is iteration `k + 1`: fresh
//!   nodes `<step>#<k+1>` wired after `<last>#k`, their `$previous`
//!   placeholders resolved to `<last>#k`'s output;
//! - at the bound, the run fails naming the loop, or (`on_cap: exit`) the
//!   loop exits.
//!
//! The decision is a pure function of the graph and the outputs, so a
//! batch that did not commit before a crash is decided again, the same,
//! on resume, and one that committed is never repeated. Each batch has
//! origin `loop:<id>` and is checked against every promise like a rule's.

use serde_json::{Map, Value};

use crate::graph::Graph;
use crate::history::RunState;
use crate::model::{Loop, Mutation, NodeState};

/// What a loop does next.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Next {
    /// Nothing yet: the latest iteration has not succeeded.
    Wait,
    /// The loop exited: nothing more to add.
    Done,
    /// Add iteration `iteration` (the batch), after `after` succeeded.
    Iterate {
        /// The number of the new iteration.
        iteration: u32,
        /// The node whose output decided it.
        after: String,
        /// The batch.
        batch: Vec<Mutation>,
    },
    /// Exit after iteration `iteration`: the batch is the edge to `to`.
    Exit {
        /// The last iteration.
        iteration: u32,
        /// The node whose output decided it.
        after: String,
        /// The batch.
        batch: Vec<Mutation>,
    },
    /// The bound was reached without the exit condition holding, and the
    /// loop fails the run: the message names the loop.
    Capped(String),
}

/// How many iterations of `l` are in the graph (iteration `k` is there
/// when its first step's node is).
///
/// ```
/// use orch::model::{Loop, LoopStep, Until};
/// use orch::{Mutation, Task};
/// let l = Loop::new("l", "a", "b", Until::default(), 5).step(LoopStep::new("s", Task::python("s.py")));
/// let mut g = orch::graph::Graph::new();
/// g.commit(&[Mutation::add_node("a", Task::python("a.py")), Mutation::add_node("b", Task::python("b.py"))]).unwrap();
/// assert_eq!(orch::loops::iterations(&g, &l), 0);
/// g.commit(&l.declaration()).unwrap();
/// assert_eq!(orch::loops::iterations(&g, &l), 1);
/// ```
pub fn iterations(g: &Graph, l: &Loop) -> u32 {
    let Some(first) = l.body.first() else {
        return 0;
    };
    let mut k = 0;
    while k < l.max && g.position(&first.node(k + 1)).is_some() {
        k += 1;
    }
    k
}

/// The loop and iteration a node id belongs to, when it is an iteration
/// of one of the graph's loops.
pub fn iteration_of<'g>(g: &'g Graph, id: &str) -> Option<(&'g Loop, &'g str, u32)> {
    let (step, k) = id.rsplit_once('#')?;
    let k: u32 = k.parse().ok().filter(|&k| k >= 1)?;
    g.loops().iter().find_map(|l| {
        l.body
            .iter()
            .find(|s| s.id == step)
            .map(|s| (l, s.id.as_str(), k))
    })
}

/// What loop `l` does next in `state`.
pub fn next(state: &RunState, l: &Loop) -> Next {
    let g = &state.graph;
    let k = iterations(g, l);
    let Some(last) = l.last() else {
        return Next::Done;
    };
    let after = last.node(k);
    let (Some(i), Some(to)) = (g.position(&after), g.position(&l.to)) else {
        return Next::Wait;
    };
    if g.has_edge(i, to) {
        return Next::Done;
    }
    if g.node(i).state != NodeState::Succeeded {
        return Next::Wait;
    }
    let output = state.facts[i].output.clone().unwrap_or(Value::Null);
    let exit = |after: String| Next::Exit {
        iteration: k,
        after: after.clone(),
        batch: vec![Mutation::add_edge(after, l.to.clone())],
    };
    if l.until.holds(&output) {
        return exit(after);
    }
    if k >= l.max {
        return match l.on_cap {
            crate::model::OnCap::Exit => exit(after),
            _ => Next::Capped(format!(
                "loop `{}` reached its bound of {} iterations and `{}` still does not hold on the output of `{after}`",
                l.id, l.max, l.until
            )),
        };
    }
    Next::Iterate {
        iteration: k + 1,
        after,
        batch: iteration(l, k + 1),
    }
}

/// The batch that adds iteration `k` of `l`: one node per step, each
/// after the one before, the first after the previous iteration's last
/// step (after `from` when `k` is 1), placeholders resolved.
///
/// ```
/// use orch::model::{previous, Loop, LoopStep, Until};
/// use orch::Task;
/// let l = Loop::new("l", "a", "b", Until::default(), 5)
///     .step(LoopStep::new("s", Task::python("s.py")).inputs(serde_json::json!({"x": previous("/x")})));
/// let batch = orch::loops::iteration(&l, 2);
/// let orch::Mutation::AddNode { id, inputs, .. } = &batch[0] else { panic!() };
/// assert_eq!(id, "s#2");
/// assert_eq!(inputs["x"], serde_json::json!({"$output": "s#1", "pointer": "/x"}));
/// ```
pub fn iteration(l: &Loop, k: u32) -> Vec<Mutation> {
    let before = match (k, l.last()) {
        (2.., Some(last)) => last.node(k - 1),
        _ => l.from.clone(),
    };
    let mut out = Vec::with_capacity(2 * l.body.len());
    let mut prev = before.clone();
    for s in &l.body {
        let id = s.node(k);
        let inputs = resolve(l, &s.inputs, k, &before);
        // A reference to `prev` implies the edge already.
        let implied = crate::model::output_refs(&inputs)
            .unwrap_or_default()
            .iter()
            .any(|r| r.node == prev);
        out.push(Mutation::AddNode {
            id: id.clone(),
            task: Box::new(if s.task.name.is_empty() {
                s.task.clone().named(&s.id)
            } else {
                s.task.clone()
            }),
            inputs,
            attrs: s.attrs.clone(),
        });
        if !implied {
            out.push(Mutation::add_edge(prev, id.clone()));
        }
        prev = id;
    }
    out
}

/// The inputs of a step in iteration `k`, `before` being the node whose
/// output `$previous` names.
fn resolve(l: &Loop, v: &Value, k: u32, before: &str) -> Value {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("$previous") {
                let mut r = Map::new();
                r.insert("$output".into(), Value::String(before.to_string()));
                if !p.is_empty() {
                    r.insert("pointer".into(), Value::String(p.clone()));
                }
                return Value::Object(r);
            }
            if map.get("$iteration") == Some(&Value::Bool(true)) {
                return Value::from(k);
            }
            if let Some(Value::String(step)) = map.get("$output") {
                if let Some(s) = l.body.iter().find(|s| &s.id == step) {
                    let mut r = map.clone();
                    r.insert("$output".into(), Value::String(s.node(k)));
                    return Value::Object(r);
                }
            }
            Value::Object(
                map.iter()
                    .map(|(key, v)| (key.clone(), resolve(l, v, k, before)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(l, v, k, before)).collect()),
        other => other.clone(),
    }
}

/// Checks the placeholders of a step's inputs: `$previous` is a JSON
/// pointer string and alone in its object, `$iteration` is `true` and
/// alone, and an `$output` that names a step names one before it (a step
/// of the same iteration that already ran).
pub fn placeholders(l: &Loop, step: usize, v: &Value) -> Result<(), String> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(p) = map.get("$previous") {
                    match p {
                        Value::String(p) if p.is_empty() || p.starts_with('/') => {}
                        _ => {
                            return Err(format!(
                                "`$previous` must be a JSON pointer string like \"/x\" (or \"\"), got {p}"
                            ))
                        }
                    }
                    if map.len() > 1 {
                        return Err(format!("{v}: `$previous` takes no other key"));
                    }
                    continue;
                }
                if let Some(t) = map.get("$iteration") {
                    if t != &Value::Bool(true) || map.len() > 1 {
                        return Err(format!(
                            "{v}: write the iteration's number as {{\"$iteration\": true}}"
                        ));
                    }
                    continue;
                }
                if let Some(Value::String(named)) = map.get("$output") {
                    if let Some(j) = l.body.iter().position(|s| &s.id == named) {
                        if j >= step {
                            return Err(format!(
                                "{v}: a step's inputs may name only the steps before it (`{named}` runs after)"
                            ));
                        }
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventKind;
    use crate::model::{previous, LoopStep, OnCap, Origin, Task, Until};
    use serde_json::json;

    fn newton(max: u32) -> Loop {
        Loop::new("newton", "start", "report", Until::at("/done"), max).step(
            LoopStep::new("refine", Task::python("n.py")).inputs(json!({"x": previous("/x")})),
        )
    }

    fn state(l: &Loop) -> RunState {
        let mut s = RunState::new("r");
        let mut reg = vec![
            Mutation::add_node("start", Task::python("s.py")),
            Mutation::add_node("report", Task::python("r.py")),
        ];
        reg.extend(l.declaration());
        s.push(EventKind::BatchCommitted {
            origin: Origin::Registration,
            mutations: reg,
        });
        s
    }

    fn succeed(s: &mut RunState, node: &str, output: Value) {
        s.push(EventKind::Output {
            node: node.into(),
            value: output,
        });
        s.push(EventKind::NodeState {
            node: node.into(),
            state: NodeState::Succeeded,
        });
    }

    fn apply(s: &mut RunState, l: &Loop, next: Next) {
        let (Next::Iterate { batch, after, .. } | Next::Exit { batch, after, .. }) = next else {
            panic!("nothing to apply: {next:?}");
        };
        s.push(EventKind::BatchCommitted {
            origin: Origin::Loop {
                id: l.id.clone(),
                after,
            },
            mutations: batch,
        });
    }

    #[test]
    fn iterates_until_the_condition_then_exits_once() {
        let l = newton(10);
        let mut s = state(&l);
        assert_eq!(next(&s, &l), Next::Wait);
        succeed(&mut s, "start", json!({"x": 1.0}));
        assert_eq!(next(&s, &l), Next::Wait, "refine#1 has not run");
        succeed(&mut s, "refine#1", json!({"x": 1.5, "done": false}));
        let n = next(&s, &l);
        let Next::Iterate {
            iteration, batch, ..
        } = &n
        else {
            panic!("{n:?}")
        };
        assert_eq!(*iteration, 2);
        // The edge is the one `$previous` implies.
        assert_eq!(batch.len(), 1);
        apply(&mut s, &l, n);
        assert_eq!(iterations(&s.graph, &l), 2);
        succeed(&mut s, "refine#2", json!({"x": 1.41, "done": true}));
        let n = next(&s, &l);
        assert!(matches!(n, Next::Exit { iteration: 2, .. }), "{n:?}");
        apply(&mut s, &l, n);
        assert_eq!(next(&s, &l), Next::Done);
        // The region is a complete chain of two: `report` may start.
        let k = s
            .graph
            .shapes_into(s.graph.position("report").unwrap())
            .next()
            .unwrap();
        assert_eq!(s.graph.region_unfilled(k), Some(false));
    }

    #[test]
    fn the_bound_fails_or_exits() {
        let l = newton(1);
        let mut s = state(&l);
        succeed(&mut s, "start", json!({"x": 1.0}));
        succeed(&mut s, "refine#1", json!({"x": 1.5, "done": false}));
        let Next::Capped(why) = next(&s, &l) else {
            panic!()
        };
        assert!(
            why.contains("loop `newton` reached its bound of 1"),
            "{why}"
        );
        let l = newton(1).on_cap(OnCap::Exit);
        assert!(matches!(next(&s, &l), Next::Exit { iteration: 1, .. }));
    }

    #[test]
    fn placeholders_resolve_per_iteration() {
        let l = Loop::new("l", "a", "b", Until::default(), 3)
            .step(
                LoopStep::new("p", Task::python("p.py"))
                    .inputs(json!({"k": {"$iteration": true}, "prev": previous("")})),
            )
            .step(
                LoopStep::new("q", Task::python("q.py"))
                    .inputs(json!({"p": {"$output": "p", "pointer": "/v"}, "a": {"$output": "a"}})),
            );
        let b = iteration(&l, 1);
        let Mutation::AddNode { inputs, .. } = &b[0] else {
            panic!()
        };
        assert_eq!(inputs, &json!({"k": 1, "prev": {"$output": "a"}}));
        let b = iteration(&l, 3);
        let Mutation::AddNode { inputs, .. } = &b[0] else {
            panic!()
        };
        assert_eq!(inputs, &json!({"k": 3, "prev": {"$output": "q#2"}}));
        // Both edges into the iteration are implied by references.
        assert_eq!(b.len(), 2);
        let Mutation::AddNode { inputs, .. } = &b[1] else {
            panic!()
        };
        assert_eq!(
            inputs,
            &json!({"p": {"$output": "p#3", "pointer": "/v"}, "a": {"$output": "a"}})
        );
        // Without a reference to the step before, the edge is explicit.
        let plain = Loop::new("l", "a", "b", Until::default(), 3)
            .step(LoopStep::new("p", Task::python("p.py")))
            .step(LoopStep::new("q", Task::python("q.py")));
        let d: Vec<String> = iteration(&plain, 2).iter().map(|m| m.describe()).collect();
        assert_eq!(
            d,
            [
                "add_node `p#2`",
                "add_edge `q#1` -> `p#2`",
                "add_node `q#2`",
                "add_edge `p#2` -> `q#2`"
            ]
        );
        let bad = l
            .clone()
            .step(LoopStep::new("r", Task::python("r.py")).inputs(json!({"x": {"$previous": 3}})));
        assert!(bad
            .check()
            .unwrap_err()
            .contains("`$previous` must be a JSON pointer"));
    }
}
