//! Promises: constraints a workflow declares on its own future (SPEC §5).
//!
//! A promise is data. It is declared in a batch (the registration, or a
//! running task's) and constrains **every later batch**; promises only
//! accumulate. The runtime checks each mutation on arrival against the
//! promises in force, and the whole batch again at commit, including the
//! `shape` regions it touches. Anything that would break a promise ends
//! the run as `promise_broken` and is never applied.
//!
//! JSON form (externally tagged):
//!
//! ```
//! use orch::promise::Promise;
//! let p: Promise = serde_json::from_str(r#"{"shape": {"from": "A", "to": "B", "shape": "M*"}}"#).unwrap();
//! assert_eq!(p.to_string(), "shape(A, B, M*)");
//! let q: Promise = serde_json::from_str(r#"{"no_new_nodes": {"by": "worker"}}"#).unwrap();
//! assert_eq!(q.to_string(), "no_new_nodes(by worker)");
//! let s: Promise = serde_json::from_str(r#"{"static": {}}"#).unwrap();
//! assert_eq!(s, Promise::Static {});
//! ```

pub mod glob;
pub mod shape;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Staged, Staging};
use crate::model::Mutation;
use crate::promise::glob::Selector;
use crate::promise::shape::{Region, Shape};

/// A promise about every future batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Promise {
    /// No mutation at all after the declaring batch.
    Static {},
    /// No node is added (by anyone, or by the tasks of the selected nodes).
    NoNewNodes {
        /// Only batches sent by these nodes' tasks are constrained.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Selector>,
    },
    /// No edge is added (explicitly or implied by an input reference).
    NoNewEdges {
        /// Only batches sent by these nodes' tasks are constrained.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Selector>,
    },
    /// Every new node matches the pattern.
    OnlyNodes {
        /// Selector over node id and task name.
        pattern: Selector,
    },
    /// Every new edge goes from a node matching `from` to one matching `to`.
    OnlyEdges {
        /// Selector for sources.
        from: Selector,
        /// Selector for targets.
        to: Selector,
    },
    /// No new edge starts at a selected node.
    NoEdgesFrom {
        /// Selector over node id and task name.
        node: Selector,
    },
    /// No new edge ends at a selected node.
    NoEdgesInto {
        /// Selector over node id and task name.
        node: Selector,
    },
    /// The region between `from` and `to` is, in the finished run, an
    /// instance of `shape`. While it is not filled, `to` waits for it.
    Shape {
        /// The node before the region.
        from: String,
        /// The node after the region.
        to: String,
        /// What the region looks like.
        shape: Shape,
    },
}

impl Promise {
    /// The `shape` promise `shape(from, to, shape)`.
    ///
    /// ```
    /// let p = orch::promise::Promise::shape("A", "B", "M*".parse().unwrap());
    /// assert_eq!(p.to_string(), "shape(A, B, M*)");
    /// ```
    pub fn shape(from: &str, to: &str, shape: Shape) -> Promise {
        Promise::Shape {
            from: from.to_string(),
            to: to.to_string(),
            shape,
        }
    }

    /// Checks a promise however it was built against the limits of
    /// [`crate::limits`]: every pattern at most
    /// [`MAX_PATTERN_BYTES`](crate::limits::MAX_PATTERN_BYTES), a shape
    /// within [`Shape::check`]. Every batch's promises pass it, so a
    /// stored promise always reads back.
    ///
    /// ```
    /// use orch::promise::Promise;
    /// assert!(Promise::OnlyNodes { pattern: "M_*".into() }.check().is_ok());
    /// let long = Promise::OnlyNodes { pattern: "M".repeat(2000).as_str().into() };
    /// assert!(long.check().unwrap_err().contains("MAX_PATTERN_BYTES"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::{check_len, MAX_PATTERN_BYTES};
        let pattern = |s: &Selector| {
            check_len(
                "pattern",
                s.as_str(),
                MAX_PATTERN_BYTES,
                "MAX_PATTERN_BYTES",
            )
        };
        match self {
            Promise::Static {} => Ok(()),
            Promise::NoNewNodes { by } | Promise::NoNewEdges { by } => {
                by.as_ref().map_or(Ok(()), pattern)
            }
            Promise::OnlyNodes { pattern: p }
            | Promise::NoEdgesFrom { node: p }
            | Promise::NoEdgesInto { node: p } => pattern(p),
            Promise::OnlyEdges { from, to } => pattern(from).and_then(|()| pattern(to)),
            Promise::Shape { shape, .. } => shape.check(),
        }
    }

    /// The family name (`static`, `no_new_nodes`, …).
    pub fn family(&self) -> &'static str {
        match self {
            Promise::Static {} => "static",
            Promise::NoNewNodes { .. } => "no_new_nodes",
            Promise::NoNewEdges { .. } => "no_new_edges",
            Promise::OnlyNodes { .. } => "only_nodes",
            Promise::OnlyEdges { .. } => "only_edges",
            Promise::NoEdgesFrom { .. } => "no_edges_from",
            Promise::NoEdgesInto { .. } => "no_edges_into",
            Promise::Shape { .. } => "shape",
        }
    }
}

impl fmt::Display for Promise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = self.family();
        match self {
            Promise::Static {} => f.write_str(fam),
            Promise::NoNewNodes { by } | Promise::NoNewEdges { by } => match by {
                Some(b) => write!(f, "{fam}(by {b})"),
                None => f.write_str(fam),
            },
            Promise::OnlyNodes { pattern } => write!(f, "{fam}({pattern})"),
            Promise::OnlyEdges { from, to } => write!(f, "{fam}({from} → {to})"),
            Promise::NoEdgesFrom { node } | Promise::NoEdgesInto { node } => {
                write!(f, "{fam}({node})")
            }
            Promise::Shape { from, to, shape } => write!(f, "{fam}({from}, {to}, {shape})"),
        }
    }
}

/// A node as the checks see it: id and task name.
#[derive(Clone, Copy, Debug)]
pub struct NodeName<'a> {
    /// Node id.
    pub id: &'a str,
    /// Task name.
    pub task: &'a str,
}

/// Checks one mutation against one promise in force. `by` is the node
/// whose task sent the batch (`None` for the registration, which no
/// promise constrains); `name` finds the task name of a node id (graph or
/// batch); `edges` are the edges the mutation adds (explicit or implied).
/// Returns why it breaks the promise.
pub fn check(
    p: &Promise,
    m: &Mutation,
    by: Option<NodeName<'_>>,
    edges: &[(NodeName<'_>, NodeName<'_>)],
) -> Option<String> {
    if let Mutation::AddRule { rule } = m {
        // Declaring a rule is promising its body: a node that may not add
        // nodes may not declare a rule that adds some for it.
        if !matches!(p, Promise::Static {}) {
            return rule.then.iter().find_map(|b| {
                let why = check(p, b, by, &[])?;
                Some(format!(
                    "its rule `{}` would: {}: {why}",
                    rule.id,
                    b.describe()
                ))
            });
        }
    }
    let by_matches = |sel: &Option<Selector>| match (sel, by) {
        (None, _) => true,
        (Some(s), Some(b)) => s.matches(b.id, b.task),
        (Some(_), None) => false,
    };
    match p {
        Promise::Static {} => Some("the workflow promised no mutation at all".into()),
        Promise::NoNewNodes { by: sel } => match m {
            Mutation::AddNode { .. } if by_matches(sel) => Some(match by {
                Some(b) if sel.is_some() => format!("node `{}` promised to add no nodes", b.id),
                _ => "the workflow promised no new nodes".into(),
            }),
            _ => None,
        },
        Promise::NoNewEdges { by: sel } => {
            let (a, b) = edges.first().filter(|_| by_matches(sel))?;
            Some(format!(
                "the edge `{}` -> `{}` is new, but no new edges were promised",
                a.id, b.id
            ))
        }
        Promise::OnlyNodes { pattern } => match m {
            Mutation::AddNode { id, task, .. } if !pattern.matches(id, &task.name) => {
                Some(format!(
                    "node `{id}` (task `{}`) does not match `{pattern}`",
                    task.name
                ))
            }
            _ => None,
        },
        Promise::OnlyEdges { from, to } => edges.iter().find_map(|(a, b)| {
            (!from.matches(a.id, a.task) || !to.matches(b.id, b.task)).then(|| {
                format!(
                    "the edge `{}` -> `{}` is not from `{from}` to `{to}`",
                    a.id, b.id
                )
            })
        }),
        Promise::NoEdgesFrom { node } => edges.iter().find_map(|(a, b)| {
            node.matches(a.id, a.task)
                .then(|| format!("the edge `{}` -> `{}` starts at `{}`", a.id, b.id, a.id))
        }),
        Promise::NoEdgesInto { node } => edges.iter().find_map(|(a, b)| {
            node.matches(b.id, b.task)
                .then(|| format!("the edge `{}` -> `{}` ends at `{}`", a.id, b.id, b.id))
        }),
        Promise::Shape { .. } => None,
    }
}

/// The state of a `shape` promise's region.
#[derive(Debug)]
pub enum RegionState {
    /// Nothing between `from` and `to` yet, not even the direct edge:
    /// `to` waits.
    Unfilled,
    /// Filled and an instance of the shape.
    Matches,
    /// Filled but not an instance: why.
    Mismatch(String),
}

/// Classifies a region against a shape.
pub fn region_state(region: &Region, shape: &Shape) -> RegionState {
    if region.nodes.is_empty() && !region.direct {
        return RegionState::Unfilled;
    }
    match region.mismatch(shape) {
        None => RegionState::Matches,
        Some(why) => RegionState::Mismatch(why),
    }
}

/// A batch (or a mutation of one) that breaks a promise in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Position of the promise in declaration order.
    pub index: usize,
    /// The promise.
    pub promise: Promise,
    /// The mutation at fault (or what was being done).
    pub mutation: String,
    /// Why it breaks the promise.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} breaks promise #{} `{}`: {}",
            self.mutation, self.index, self.promise, self.message
        )
    }
}

/// What is wrong with a batch at commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchProblem {
    /// A promise in force is broken.
    Violation(Box<Violation>),
    /// A promise the batch declares is broken already.
    BadPromise(String),
}

fn node_name<'a>(g: &'a Graph, staging: &'a Staged<'_>, id: &str) -> Option<NodeName<'a>> {
    staging
        .lookup(g, id)
        .map(|(id, task)| NodeName { id, task })
}

/// The edges a mutation adds: explicit, or implied by input references.
fn mutation_edges<'a>(
    g: &'a Graph,
    staging: &'a Staged<'_>,
    m: &'a Mutation,
) -> Vec<(NodeName<'a>, NodeName<'a>)> {
    let pairs: Vec<(&str, &str)> = match m {
        Mutation::AddEdge { from, to, .. } => vec![(from, to)],
        Mutation::AddNode { id, inputs, .. } => {
            let mut v: Vec<(&str, &str)> = Vec::new();
            for r in crate::model::output_refs(inputs).unwrap_or_default() {
                if let Some(src) = node_name(g, staging, &r.node) {
                    if !v.iter().any(|(a, _)| *a == src.id) {
                        v.push((src.id, id));
                    }
                }
            }
            v
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(a, b)| Some((node_name(g, staging, a)?, node_name(g, staging, b)?)))
        .collect()
}

/// Checks one mutation (already staged in `staging`) against every promise
/// in force. `by` is the node whose task sent it.
pub fn check_mutation(
    g: &Graph,
    staging: &Staged<'_>,
    by: &str,
    m: &Mutation,
) -> Result<(), Box<Violation>> {
    // `shape` promises are checked per batch, not per mutation.
    if g.promises()
        .iter()
        .all(|p| matches!(p, Promise::Shape { .. }))
    {
        return Ok(());
    }
    check_against(g, staging, node_name(g, staging, by), m)
}

/// [`check_mutation`] for a sender that may be no node (a rule's body):
/// `by_name` is `None` then, and `no_new_nodes { by }` and
/// `no_new_edges { by }` do not select it.
fn check_against(
    g: &Graph,
    staging: &Staged<'_>,
    by_name: Option<NodeName<'_>>,
    m: &Mutation,
) -> Result<(), Box<Violation>> {
    let edges = mutation_edges(g, staging, m);
    for (index, p) in g.promises().iter().enumerate() {
        if let Some(message) = check(p, m, by_name, &edges) {
            return Err(Box::new(Violation {
                index,
                promise: p.clone(),
                mutation: m.describe(),
                message,
            }));
        }
    }
    Ok(())
}

/// Checks a whole staged batch at commit: every mutation against the
/// promises in force (unless it is the registration: `by` is `None`),
/// every `shape` region the batch touches, and every promise the batch
/// declares against the graph it leaves.
pub fn check_batch(g: &Graph, staging: &Staged<'_>, by: Option<&str>) -> Result<(), BatchProblem> {
    check_sent(g, staging, by.map_or(Sender::Registration, Sender::Node))
}

/// Checks the batch of the rule `rule` as it fires: like a task's batch
/// ([`check_batch`]), every mutation against every promise in force; the
/// promises that select a sending node (`no_new_nodes { by }`,
/// `no_new_edges { by }`) select no rule.
pub fn check_rule_batch(g: &Graph, staging: &Staged<'_>, rule: &str) -> Result<(), BatchProblem> {
    check_sent(g, staging, Sender::Rule(rule))
}

/// Checks a batch of the loop `id` (an iteration or its exit) like a
/// rule's ([`check_rule_batch`]): every mutation against every promise in
/// force, the promises that select a sending node selecting no loop.
pub fn check_loop_batch(g: &Graph, staging: &Staged<'_>, id: &str) -> Result<(), BatchProblem> {
    check_sent(g, staging, Sender::Loop(id))
}

/// Who sent a batch.
#[derive(Clone, Copy)]
enum Sender<'a> {
    Registration,
    Node(&'a str),
    Rule(&'a str),
    Loop(&'a str),
}

fn check_sent(g: &Graph, staging: &Staged<'_>, sender: Sender<'_>) -> Result<(), BatchProblem> {
    match sender {
        Sender::Registration => {}
        Sender::Node(by) => {
            for m in staging.mutations() {
                check_mutation(g, staging, by, m).map_err(BatchProblem::Violation)?;
            }
        }
        Sender::Rule(_) | Sender::Loop(_) => {
            if !g
                .promises()
                .iter()
                .all(|p| matches!(p, Promise::Shape { .. }))
            {
                for m in staging.mutations() {
                    check_against(g, staging, None, m).map_err(BatchProblem::Violation)?;
                }
            }
        }
    }
    let started = |id: &str| g.get(id).is_some_and(|n| !n.state.not_started());
    // A batch touches a region only through a new edge; only the regions
    // whose `to` has not started can still grow, and the index says which
    // of them the batch's edges reach (see `Staging::touched_region`).
    for r in g.regions().iter().filter(|r| r.open) {
        let Some(region) = staging.touched_region(g, r) else {
            continue;
        };
        let p = &g.promises()[r.promise];
        let Promise::Shape { from, to, shape } = p else {
            continue;
        };
        if let RegionState::Mismatch(why) = region_state(&region, shape) {
            return Err(BatchProblem::Violation(Box::new(Violation {
                index: r.promise,
                promise: p.clone(),
                mutation: match sender {
                    Sender::Node(b) => format!("the batch of `{b}`"),
                    Sender::Rule(r) => format!("the batch of rule `{r}`"),
                    Sender::Loop(l) => format!("the batch of loop `{l}`"),
                    Sender::Registration => "the registration".to_string(),
                },
                message: format!("between `{from}` and `{to}`: {why}"),
            })));
        }
    }
    for m in staging.mutations() {
        let Mutation::AddPromise { promise } = m else {
            continue;
        };
        let Promise::Shape { from, to, shape } = promise else {
            continue;
        };
        let Some((region, _)) = staging.region(g, from, to) else {
            continue;
        };
        match region_state(&region, shape) {
            RegionState::Mismatch(why) => {
                return Err(BatchProblem::BadPromise(format!(
                    "promise `{promise}` is broken already: between `{from}` and `{to}`: {why}"
                )))
            }
            RegionState::Unfilled if started(to) => {
                return Err(BatchProblem::BadPromise(format!(
                    "promise `{promise}` is broken already: `{to}` started and the region is empty"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The region of a `shape` promise in the committed graph (searched in
/// full; see [`shape_region`] for a promise in force).
pub fn committed_region(g: &Graph, from: &str, to: &str) -> Option<Region> {
    Staging::default().region(g, from, to).map(|(r, _)| r)
}

/// The committed region of the `shape` promise at position `promise` among
/// the graph's promises: from the region index while its `to` has not
/// started, else searched in full. `None` when that promise is not a
/// `shape`.
pub fn shape_region(g: &Graph, promise: usize) -> Option<Region> {
    match g.region_of(promise) {
        Some(r) if r.open => Some(Staging::indexed_region(g, r)),
        _ => match g.promises().get(promise)? {
            Promise::Shape { from, to, .. } => committed_region(g, from, to),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attrs, Task};

    fn add(id: &str, task: &str) -> Mutation {
        Mutation::add_node(id, Task::python("x.py").named(task))
    }
    fn n<'a>(id: &'a str, task: &'a str) -> NodeName<'a> {
        NodeName { id, task }
    }

    #[test]
    fn json_round_trips_for_every_family() {
        for text in [
            r#"{"static":{}}"#,
            r#"{"no_new_nodes":{}}"#,
            r#"{"no_new_nodes":{"by":"A"}}"#,
            r#"{"no_new_edges":{"by":"task:M"}}"#,
            r#"{"only_nodes":{"pattern":"M_*"}}"#,
            r#"{"only_edges":{"from":"A","to":"M*"}}"#,
            r#"{"no_edges_from":{"node":"B"}}"#,
            r#"{"no_edges_into":{"node":"B"}}"#,
            r#"{"shape":{"from":"A","to":"B","shape":"M*"}}"#,
        ] {
            let p: Promise = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
        }
        let err = serde_json::from_str::<Promise>(r#"{"no_new_nodez":{}}"#).unwrap_err();
        assert!(err.to_string().contains("no_new_nodez"), "{err}");
    }

    #[test]
    fn families_allow_and_refuse() {
        let edge = Mutation::AddEdge {
            from: "A".into(),
            to: "B".into(),
            attrs: Attrs::new(),
        };
        let ab = [(n("A", "a"), n("B", "b"))];
        let by = Some(n("A", "a"));
        type Case<'a> = (
            Promise,
            &'a Mutation,
            &'a [(NodeName<'a>, NodeName<'a>)],
            bool,
        );
        let cases: Vec<Case> = vec![
            (Promise::Static {}, &edge, &ab, false),
            (Promise::NoNewNodes { by: None }, &edge, &ab, true),
            (Promise::NoNewEdges { by: None }, &edge, &ab, false),
            (
                Promise::NoNewEdges {
                    by: Some("Z".into()),
                },
                &edge,
                &ab,
                true,
            ),
            (
                Promise::NoNewEdges {
                    by: Some("A".into()),
                },
                &edge,
                &ab,
                false,
            ),
            (
                Promise::OnlyEdges {
                    from: "A".into(),
                    to: "b".into(),
                },
                &edge,
                &ab,
                true,
            ),
            (
                Promise::OnlyEdges {
                    from: "A".into(),
                    to: "C".into(),
                },
                &edge,
                &ab,
                false,
            ),
            (Promise::NoEdgesFrom { node: "A".into() }, &edge, &ab, false),
            (Promise::NoEdgesFrom { node: "B".into() }, &edge, &ab, true),
            (Promise::NoEdgesInto { node: "B".into() }, &edge, &ab, false),
            (Promise::NoEdgesInto { node: "A".into() }, &edge, &ab, true),
        ];
        for (p, m, edges, ok) in cases {
            assert_eq!(
                check(&p, m, by, edges).is_none(),
                ok,
                "{p} on {}",
                m.describe()
            );
        }
        let node = add("M_0", "M");
        assert!(check(
            &Promise::OnlyNodes {
                pattern: "task:M".into()
            },
            &node,
            by,
            &[]
        )
        .is_none());
        let bad = add("X", "other");
        let why = check(
            &Promise::OnlyNodes {
                pattern: "task:M".into(),
            },
            &bad,
            by,
            &[],
        )
        .unwrap();
        assert!(
            why.contains("node `X` (task `other`) does not match `task:M`"),
            "{why}"
        );
        let why = check(
            &Promise::NoNewNodes {
                by: Some("A".into()),
            },
            &bad,
            by,
            &[],
        )
        .unwrap();
        assert!(why.contains("node `A` promised to add no nodes"), "{why}");
    }
}
