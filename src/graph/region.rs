//! The regions of the `shape` promises, kept up to date as the graph
//! grows ([`RegionIndex`]).

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::Graph;

/// A set of node positions.
#[derive(Clone, Debug, Default)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// Adds `i`; false when it was there already.
    pub(super) fn insert(&mut self, i: usize) -> bool {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        let (w, b) = (&mut self.0[i / 64], 1u64 << (i % 64));
        let new = *w & b == 0;
        *w |= b;
        new
    }
}

/// The region of one `shape` promise, kept up to date as edges are added
/// while its `to` has not started (the region is *open*): the strict
/// descendants of `from` (not through `to`), the strict ancestors of `to`
/// (not through `from`), and their intersection, the region's nodes.
/// Once `to` starts, no edge can reach the region any more: the sets are
/// dropped, and built again if `to` goes back to not started (a retry).
#[derive(Clone, Debug)]
pub(crate) struct RegionIndex {
    /// Position of the promise among the graph's promises.
    pub(crate) promise: usize,
    /// Position of `from`.
    pub(crate) from: usize,
    /// Position of `to`.
    pub(crate) to: usize,
    /// False once `to` started.
    pub(crate) open: bool,
    pub(super) desc: Bits,
    pub(super) anc: Bits,
    /// The region's nodes, in the order they joined it.
    pub(super) members: Vec<usize>,
}

impl RegionIndex {
    pub(super) fn in_desc(&self, i: usize) -> bool {
        i == self.from || self.desc.has(i)
    }

    pub(super) fn in_anc(&self, i: usize) -> bool {
        i == self.to || self.anc.has(i)
    }
}

impl Graph {
    /// Builds the sets of region `k` from scratch.
    pub(super) fn open_region(&mut self, k: usize) {
        let (from, to) = (self.regions[k].from, self.regions[k].to);
        let mut desc = Bits::default();
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            for s in self.successors(v) {
                if s != to && desc.insert(s) {
                    stack.push(s);
                }
            }
        }
        let mut anc = Bits::default();
        let mut members = Vec::new();
        let mut stack = vec![to];
        while let Some(v) = stack.pop() {
            for p in self.predecessors(v) {
                if p != from && anc.insert(p) {
                    if desc.has(p) {
                        members.push(p);
                    }
                    stack.push(p);
                }
            }
        }
        let r = &mut self.regions[k];
        (r.desc, r.anc, r.members, r.open) = (desc, anc, members, true);
    }

    /// Keeps the open regions up to date after the edge `u -> v` was added.
    pub(super) fn grow_regions(&mut self, u: usize, v: usize) {
        for k in 0..self.regions.len() {
            let r = &self.regions[k];
            if !r.open {
                continue;
            }
            if r.in_desc(u) && v != r.to && !r.desc.has(v) {
                self.spread(k, v, Direction::Outgoing);
            }
            let r = &self.regions[k];
            if r.in_anc(v) && u != r.from && !r.anc.has(u) {
                self.spread(k, u, Direction::Incoming);
            }
        }
    }

    /// Adds `start` and everything it reaches in `dir` (stopping at the
    /// region's far end) to region `k`'s descendants of `from`
    /// (`Outgoing`) or ancestors of `to` (`Incoming`); a node in both sets
    /// joins the region's members.
    fn spread(&mut self, k: usize, start: usize, dir: Direction) {
        let dag = &self.dag;
        let RegionIndex {
            from,
            to,
            desc,
            anc,
            members,
            ..
        } = &mut self.regions[k];
        let (stop, grown, other) = match dir {
            Direction::Outgoing => (*to, desc, &*anc),
            Direction::Incoming => (*from, anc, &*desc),
        };
        grown.insert(start);
        if other.has(start) {
            members.push(start);
        }
        let mut stack = vec![start];
        while let Some(w) = stack.pop() {
            for n in dag.neighbors_directed(NodeIndex::new(w), dir) {
                let n = n.index();
                if n != stop && grown.insert(n) {
                    if other.has(n) {
                        members.push(n);
                    }
                    stack.push(n);
                }
            }
        }
    }
}
