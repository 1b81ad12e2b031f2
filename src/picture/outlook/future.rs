//! What the promises in force still allow a run's graph: whether a node
//! may add nodes or edges from itself, and whether an edge may be added.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::sketch::Sketch;
use super::{Outlook, PicEdge, PicKind, PicNode, WILDCARD_PREFIX};
use crate::graph::Graph;
use crate::model::Attrs;
use crate::promise::shape::Shape;
use crate::promise::{self, Promise, RegionState};

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
fn may_link_from(g: &Graph, i: usize) -> bool {
    let n = g.node(i);
    !g.promises().iter().any(|p| match p {
        Promise::Static {} | Promise::NoNewEdges { by: None } => true,
        Promise::NoNewEdges { by: Some(sel) } => sel.matches(&n.id, &n.task.name),
        Promise::NoEdgesFrom { node } => node.matches(&n.id, &n.task.name),
        Promise::OnlyEdges { from, .. } => !from.matches(&n.id, &n.task.name),
        _ => false,
    })
}

fn edge_allowed(g: &Graph, u: usize, v: usize) -> bool {
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

fn reaches(g: &Graph, from: usize, to: usize) -> bool {
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

/// A loop that has not exited: a dashed edge from its latest iteration
/// to `to`, labelled with the exit condition (its region is drawn by the
/// loop, not as a wildcard). Returns the loops' regions (`from`, `to`).
pub(super) fn loop_exits<'g>(
    o: &mut Outlook,
    g: &'g Graph,
    pic_id: &dyn Fn(usize) -> String,
) -> HashSet<(&'g str, &'g str)> {
    let mut loop_regions: HashSet<(&str, &str)> = HashSet::new();
    for l in g.loops() {
        loop_regions.insert((l.from.as_str(), l.to.as_str()));
        let done = crate::loops::iterations(g, l);
        let (Some(last), Some(to)) = (
            l.last().and_then(|s| g.position(&s.node(done))),
            g.position(&l.to),
        ) else {
            continue;
        };
        if g.has_edge(last, to) {
            continue;
        }
        let mut attrs = Attrs::new();
        attrs.insert("label".into(), format!("until {}", l.until).into());
        o.edges.push(PicEdge {
            from: pic_id(last),
            to: l.to.clone(),
            dashed: true,
            attrs,
        });
    }
    loop_regions
}

/// Unfilled shape regions: a dashed wildcard between from and to (but
/// for the regions of `loop_regions` drawn as chains).
pub(super) fn unfilled_regions(o: &mut Outlook, g: &Graph, loop_regions: &HashSet<(&str, &str)>) {
    for (k, p) in g.promises().iter().enumerate() {
        let Promise::Shape { from, to, shape } = p else {
            continue;
        };
        if loop_regions.contains(&(from.as_str(), to.as_str())) && matches!(shape, Shape::Chain(..))
        {
            continue;
        }
        let Some(region) = promise::committed_region(g, from, to) else {
            continue;
        };
        if let RegionState::Unfilled = promise::region_state(&region, shape) {
            let s = Sketch::of(shape, &format!("{WILDCARD_PREFIX}region{k}"));
            let mut dashed = |a: &str, b: &str| {
                o.edges.push(PicEdge {
                    from: a.to_string(),
                    to: b.to_string(),
                    dashed: true,
                    attrs: Attrs::new(),
                })
            };
            for src in &s.sources {
                dashed(from, src);
            }
            for e in &s.edges {
                dashed(&e.0, &e.1);
            }
            for sink in &s.sinks {
                dashed(sink, to);
            }
            o.nodes.extend(s.nodes);
        }
    }
}

/// Nodes that may still grow the graph: a dashed ★ successor (one per
/// stack). Only while the run is not over.
pub(super) fn growth_stars(
    o: &mut Outlook,
    g: &Graph,
    stacked: &HashMap<usize, String>,
    pic_id: &dyn Fn(usize) -> String,
) {
    let mut stack_grows: HashSet<String> = HashSet::new();
    for i in 0..g.len() {
        let n = g.node(i);
        if n.state.is_terminal() {
            continue;
        }
        let Some(narrowed) = growth(g, i) else {
            continue;
        };
        let owner = pic_id(i);
        if stacked.contains_key(&i) && !stack_grows.insert(owner.clone()) {
            continue;
        }
        let id = format!("{WILDCARD_PREFIX}grow:{owner}");
        let label = if narrowed.is_empty() {
            "★".to_string()
        } else {
            format!("★ {}", narrowed.join(" ∩ "))
        };
        o.nodes.push(PicNode {
            id: id.clone(),
            kind: PicKind::Growth,
            label,
            state: None,
            states: BTreeMap::new(),
            attrs: Attrs::new(),
            violated: false,
        });
        if may_link_from(g, i) {
            o.edges.push(PicEdge {
                from: owner,
                to: id,
                dashed: true,
                attrs: Attrs::new(),
            });
        }
    }
}

/// Rules that have not fired: a dashed node with the predicate, wired
/// from what it waits for (SPEC §9). Only while the run is not over.
pub(super) fn unfired_rules(o: &mut Outlook, g: &Graph, pic_id: &dyn Fn(usize) -> String) {
    let rule_id = |k: usize| format!("{WILDCARD_PREFIX}rule:{}", g.rules()[k].id);
    for (k, r) in g.rules().iter().enumerate() {
        if g.rule_fired(k) {
            continue;
        }
        let id = rule_id(k);
        o.nodes.push(PicNode {
            id: id.clone(),
            kind: PicKind::Rule,
            label: format!("rule {}: {}", r.id, r.when),
            state: None,
            states: BTreeMap::new(),
            attrs: Attrs::new(),
            violated: false,
        });
        let mut from_seen = HashSet::new();
        for b in crate::rule::waits_for(g, k) {
            let from = match b {
                crate::rule::Blocker::Node(i) => pic_id(i),
                crate::rule::Blocker::Rule(j) => rule_id(j),
            };
            if from_seen.insert(from.clone()) {
                o.edges.push(PicEdge {
                    from,
                    to: id.clone(),
                    dashed: true,
                    attrs: Attrs::new(),
                });
            }
        }
    }
}

/// only_edges with literal ends: the finitely many edges still possible,
/// dashed. Only while the run is not over.
pub(super) fn possible_edges(o: &mut Outlook, g: &Graph, pic_id: &dyn Fn(usize) -> String) {
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    for p in g.promises() {
        let Promise::OnlyEdges { from, to } = p else {
            continue;
        };
        let literal = |s: &str| !s.contains(['*', '?']);
        if !literal(from.as_str()) || !literal(to.as_str()) {
            continue;
        }
        for u in 0..g.len() {
            let nu = g.node(u);
            if !from.matches(&nu.id, &nu.task.name) {
                continue;
            }
            for v in 0..g.len() {
                let nv = g.node(v);
                if u == v
                    || !to.matches(&nv.id, &nv.task.name)
                    || !nv.state.not_started()
                    || g.has_edge(u, v)
                    || !seen.insert((u, v))
                    || reaches(g, v, u)
                    || !edge_allowed(g, u, v)
                {
                    continue;
                }
                o.edges.push(PicEdge {
                    from: pic_id(u),
                    to: pic_id(v),
                    dashed: true,
                    attrs: Attrs::new(),
                });
            }
        }
    }
}
