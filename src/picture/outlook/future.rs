//! What the promises in force still allow a run's graph: whether a node
//! may add nodes or edges from itself, and whether an edge may be added.

use std::collections::HashSet;

use crate::graph::Graph;
use crate::model::Attrs;
use crate::promise::{self, Promise};

/// True when a node's task may still add nodes under the promises in
/// force; `Some(pattern)` narrows what it may add (`only_nodes`).
pub(crate) fn growth(g: &Graph, i: usize) -> Option<Vec<String>> {
    let n = g.node(i);
    if !crate::rule::may_add_nodes(g, &n.id, &n.task) {
        return None;
    }
    let mut narrowed = Vec::new();
    for p in g.promises() {
        match p {
            Promise::Static {} => return None,
            Promise::NoNewNodes { by: None } => return None,
            Promise::NoNewNodes { by: Some(sel) } if sel.matches(&n.id, &n.task.name) => {
                return None
            }
            Promise::OnlyNodes { pattern } => narrowed.push(pattern.to_string()),
            _ => {}
        }
    }
    Some(narrowed)
}

/// True when a new edge `from -> (a new node)` is allowed at all.
pub(super) fn may_link_from(g: &Graph, i: usize) -> bool {
    let n = g.node(i);
    !g.promises().iter().any(|p| match p {
        Promise::Static {} | Promise::NoNewEdges { by: None } => true,
        Promise::NoNewEdges { by: Some(sel) } => sel.matches(&n.id, &n.task.name),
        Promise::NoEdgesFrom { node } => node.matches(&n.id, &n.task.name),
        Promise::OnlyEdges { from, .. } => !from.matches(&n.id, &n.task.name),
        _ => false,
    })
}

pub(super) fn edge_allowed(g: &Graph, u: usize, v: usize) -> bool {
    let (a, b) = (g.node(u), g.node(v));
    let m = crate::model::Mutation::AddEdge {
        from: a.id.clone(),
        to: b.id.clone(),
        attrs: Attrs::new(),
    };
    let edge = [(
        promise::NodeName {
            id: &a.id,
            task: &a.task.name,
        },
        promise::NodeName {
            id: &b.id,
            task: &b.task.name,
        },
    )];
    g.promises()
        .iter()
        .all(|p| promise::check(p, &m, None, &edge).is_none())
}

pub(super) fn reaches(g: &Graph, from: usize, to: usize) -> bool {
    let mut stack = vec![from];
    let mut seen = HashSet::from([from]);
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        for s in g.successors(n) {
            if seen.insert(s) {
                stack.push(s);
            }
        }
    }
    false
}
