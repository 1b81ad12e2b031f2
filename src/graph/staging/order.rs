//! The batch's topological order, kept incrementally against the graph's,
//! and the neighbours of a node through the graph and the batch's edges.

/// The full search behind `Staged::path` keeps its visited nodes in it.
#[cfg(test)]
use std::collections::HashSet;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::{reorder, FastMap, Graph, Ref, Staged};

/// The neighbours a batch adds, per node: graph nodes in a map, the
/// batch's new nodes by index (a big batch of new nodes hashes nothing).
#[derive(Clone, Debug, Default)]
pub(super) struct Adjacency {
    old: FastMap<usize, Vec<Ref>>,
    new: Vec<Vec<Ref>>,
}

impl Adjacency {
    fn get(&self, r: &Ref) -> Option<&Vec<Ref>> {
        match *r {
            Ref::Old(i) => self.old.get(&i),
            Ref::New(k) => self.new.get(k),
        }
    }

    pub(super) fn push(&mut self, r: Ref, to: Ref) {
        match r {
            Ref::Old(i) => self.old.entry(i).or_default().push(to),
            Ref::New(k) => {
                if self.new.len() <= k {
                    self.new.resize_with(k + 1, Vec::new);
                }
                self.new[k].push(to);
            }
        }
    }
}

impl Staged<'_> {
    pub(super) fn ord(&self, g: &Graph, r: Ref) -> u64 {
        match r {
            Ref::Old(i) => self.ord_old.get(&i).copied().unwrap_or(g.ord[i]),
            Ref::New(k) => self.ord_new[k],
        }
    }

    /// Calls `f` with each neighbour of `r` in `dir`: in the graph and
    /// through this batch's edges.
    pub(super) fn for_neighbours(&self, g: &Graph, r: Ref, dir: Direction, f: &mut dyn FnMut(Ref)) {
        if let Ref::Old(i) = r {
            g.dag
                .neighbors_directed(NodeIndex::new(i), dir)
                .for_each(|n| f(Ref::Old(n.index())));
        }
        let new = match dir {
            Direction::Outgoing => &self.new_succ,
            Direction::Incoming => &self.new_pred,
        };
        new.get(&r).into_iter().flatten().for_each(|&n| f(n));
    }

    /// Brings the batch's topological order up to date when the graph
    /// changed since it was computed (another batch committed while this
    /// one was being sent): its edges are ordered again, one by one,
    /// against the graph as it is now. An edge that now closes a cycle is
    /// left for the validation at commit, which refuses the batch.
    pub(super) fn sync_order(&mut self, g: &Graph) {
        if self.version == g.version {
            return;
        }
        self.version = g.version;
        self.ord_old.clear();
        self.ord_new = (0..self.new_nodes.len() as u64)
            .map(|k| g.next_ord + k)
            .collect();
        self.next_ord = g.next_ord + self.new_nodes.len() as u64;
        let mut succ: FastMap<Ref, Vec<Ref>> = FastMap::default();
        let mut pred: FastMap<Ref, Vec<Ref>> = FastMap::default();
        for e in 0..self.new_edges.len() {
            let (a, b) = self.new_edges[e];
            succ.entry(a).or_default().push(b);
            pred.entry(b).or_default().push(a);
            if self.ord(g, a) < self.ord(g, b) {
                continue;
            }
            let mut next = self.next_ord;
            let moved = reorder(
                b,
                a,
                &mut next,
                &|r| self.ord(g, r),
                &|r, f| {
                    if let Ref::Old(i) = r {
                        g.successors(i).for_each(|s| f(Ref::Old(s)));
                    }
                    succ.get(&r).into_iter().flatten().for_each(|&s| f(s));
                },
                &|r, f| {
                    if let Ref::Old(i) = r {
                        g.predecessors(i).for_each(|p| f(Ref::Old(p)));
                    }
                    pred.get(&r).into_iter().flatten().for_each(|&p| f(p));
                },
            );
            if let Ok(moved) = moved {
                self.next_ord = next;
                for (r, o) in moved {
                    self.set_ord(r, o);
                }
            }
        }
    }

    pub(super) fn set_ord(&mut self, r: Ref, o: u64) {
        match r {
            Ref::Old(i) => {
                self.ord_old.insert(i, o);
            }
            Ref::New(k) => self.ord_new[k] = o,
        }
    }

    /// The neighbours of `r` in `dir` (see [`Staged::for_neighbours`]).
    pub(super) fn neighbours(&self, g: &Graph, r: Ref, dir: Direction) -> Vec<Ref> {
        let mut out = Vec::new();
        self.for_neighbours(g, r, dir, &mut |n| out.push(n));
        out
    }

    /// A path `from ~> to` in the committed graph plus this batch, if any:
    /// the full search the incremental order replaced, kept to test it.
    #[cfg(test)]
    pub(super) fn path(&self, g: &Graph, from: Ref, to: Ref) -> Option<Vec<Ref>> {
        let mut parent: std::collections::HashMap<Ref, Ref> = Default::default();
        let mut stack = vec![from];
        let mut seen: HashSet<Ref> = HashSet::from([from]);
        while let Some(n) = stack.pop() {
            if n == to {
                let mut path = vec![to];
                let mut cur = to;
                while let Some(&p) = parent.get(&cur) {
                    path.push(p);
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            let old = match n {
                Ref::Old(i) => g.successors(i).map(Ref::Old).collect::<Vec<_>>(),
                Ref::New(_) => Vec::new(),
            };
            let new = self.new_succ.get(&n).into_iter().flatten().copied();
            for s in old.into_iter().chain(new) {
                if seen.insert(s) {
                    parent.insert(s, n);
                    stack.push(s);
                }
            }
        }
        None
    }
}
