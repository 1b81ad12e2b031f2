//! Which edges layout-rs routes: the picture's edges in a topological
//! order, each node's row, and the longest edges taken out to be drawn
//! directly when the graph would be too big for layout-rs. Pure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::attr_str;
use crate::picture::outlook::{Outlook, PicEdge};

/// One picture edge, by node indices, pointing forward in one topological
/// order of the picture.
#[derive(Clone, Copy, Debug)]
pub(super) struct OrderedEdge<'a> {
    pub(super) from: usize,
    pub(super) to: usize,
    /// The picture edge points the other way (it closes a cycle).
    pub(super) reversed: bool,
    pub(super) edge: &'a PicEdge,
}

impl OrderedEdge<'_> {
    pub(super) fn has_label(&self) -> bool {
        attr_str(&self.edge.attrs, "label").is_some()
    }

    /// How many rows the edge spans at least (labels are drawn beside
    /// edges, not on rows of their own).
    fn weight(&self) -> usize {
        1
    }
}

/// What is handed to layout-rs and what is drawn over its result.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    /// Edges routed by layout-rs, sorted by the topological order of their
    /// source.
    pub(super) laid: Vec<OrderedEdge<'a>>,
    /// Long edges drawn afterwards as direct curves.
    pub(super) direct: Vec<OrderedEdge<'a>>,
    /// Each node's row as layout-rs computes it without its optimiser: the
    /// longest path from a source.
    pub(super) level: Vec<usize>,
    /// How many elements layout-rs places for the laid edges: nodes,
    /// self-loop connectors, and one invisible connector per row a laid
    /// edge crosses (labels are not handed to it).
    pub(super) elements: usize,
}

/// Decides which edges layout-rs routes: all of them if that makes at most
/// `budget` elements, else the longest ones go direct, longest first, until
/// the count fits or no edge is left whose removal saves anything. Only
/// edges that do not decide their target's row are taken out, so the rows
/// stay as computed.
pub(super) fn plan(o: &Outlook, budget: usize) -> Plan<'_> {
    let edges = ordered_edges(o);
    let mut level = vec![0usize; o.nodes.len()];
    // Edges come sorted by the topological order of their source, so each
    // source's level is final when its edges are relaxed.
    for e in edges.iter().filter(|e| e.from != e.to) {
        level[e.to] = level[e.to].max(level[e.from] + e.weight());
    }
    let dummies = |e: &OrderedEdge| {
        if e.from == e.to {
            0
        } else {
            level[e.to] - level[e.from] - e.weight()
        }
    };
    let connectors = |e: &OrderedEdge| usize::from(e.from == e.to);
    let mut elements = o.nodes.len();
    for e in &edges {
        elements += connectors(e) + dummies(e);
    }

    let mut direct = vec![false; edges.len()];
    if elements > budget {
        let mut long: Vec<usize> = (0..edges.len())
            .filter(|&i| dummies(&edges[i]) > 0)
            .collect();
        long.sort_by_key(|&i| std::cmp::Reverse(dummies(&edges[i])));
        for i in long {
            if elements <= budget {
                break;
            }
            elements -= dummies(&edges[i]) + connectors(&edges[i]);
            direct[i] = true;
        }
    }
    let (direct, laid): (Vec<_>, Vec<_>) = edges.into_iter().zip(direct).partition(|(_, d)| *d);
    Plan {
        laid: laid.into_iter().map(|(e, _)| e).collect(),
        direct: direct.into_iter().map(|(e, _)| e).collect(),
        level,
        elements,
    }
}

/// A rough measure of the work of layout-rs's edge-crossing optimiser: it
/// counts crossings between adjacent rows pair by pair, fifty times over,
/// so its time follows the sum over rows of (row width)² × (next row's
/// width), counting the invisible connectors of the laid edges.
pub(super) fn crossing_work(plan: &Plan) -> f64 {
    let rows = plan.level.iter().max().map_or(0, |m| m + 1);
    let mut width = vec![0.0f64; rows + 1];
    for &l in &plan.level {
        width[l] += 1.0;
    }
    for e in &plan.laid {
        let (a, b) = (plan.level[e.from], plan.level[e.to]);
        if e.from == e.to {
            width[a] += 1.0;
        } else {
            for w in &mut width[a + 1..b] {
                *w += 1.0;
            }
        }
    }
    width.windows(2).map(|w| w[0] * w[0] * w[1]).sum()
}

/// The picture's edges as node indices, each pointing forward in one
/// topological order of the picture (an edge closing a cycle is reversed),
/// sorted by that order of their source. Edges naming unknown nodes are
/// dropped.
///
/// Handing edges to layout-rs in this order matters: it checks each new
/// edge for a cycle with an unmemoised depth-first search, exponential on
/// dense DAGs, which this order makes immediate (the target of a new edge
/// has no successors yet).
fn ordered_edges(o: &Outlook) -> Vec<OrderedEdge<'_>> {
    let n = o.nodes.len();
    // Later duplicates of an id win, as in a map.
    let index: HashMap<&str, usize> = o
        .nodes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let resolved: Vec<(usize, usize, &PicEdge)> = o
        .edges
        .iter()
        .filter_map(|e| Some((*index.get(e.from.as_str())?, *index.get(e.to.as_str())?, e)))
        .collect();

    // Kahn's algorithm, smallest index first among the ready nodes so the
    // order stays close to the picture's; nodes left on cycles follow in
    // index order.
    let mut indegree = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(f, t, _) in &resolved {
        if f != t {
            indegree[t] += 1;
            succ[f].push(t);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut pos = vec![usize::MAX; n];
    let mut next = 0;
    while let Some(Reverse(i)) = ready.pop() {
        pos[i] = next;
        next += 1;
        for &t in &succ[i] {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    for p in pos.iter_mut().filter(|p| **p == usize::MAX) {
        *p = next;
        next += 1;
    }

    let mut out: Vec<OrderedEdge> = resolved
        .into_iter()
        .map(|(f, t, edge)| {
            let reversed = pos[f] > pos[t];
            let (from, to) = if reversed { (t, f) } else { (f, t) };
            OrderedEdge {
                from,
                to,
                reversed,
                edge,
            }
        })
        .collect();
    out.sort_by_key(|e| pos[e.from]);
    out
}
