//! The region of a `shape` promise in the graph plus a batch, as the
//! matcher takes it.

use std::collections::HashSet;

use petgraph::Direction;

use super::{FastMap, FastSet, Graph, Ref, RegionIndex, Staged, Staging};
use crate::promise::shape::{Region, RegionNode};

impl Staged<'_> {
    /// The region between `from` and `to` in the graph plus this batch:
    /// nodes that are descendants of `from` and ancestors of `to`, with
    /// their edges and boundary wiring. Also says whether any edge of this
    /// batch lies inside the region or on its boundary.
    pub fn region(&self, g: &Graph, from: &str, to: &str) -> Option<(Region, bool)> {
        let (f, t) = (self.resolve(g, from)?, self.resolve(g, to)?);
        let mut anc: HashSet<Ref> = HashSet::new();
        let mut stack = vec![t];
        while let Some(v) = stack.pop() {
            for p in self.neighbours(g, v, Direction::Incoming) {
                if p != f && anc.insert(p) {
                    stack.push(p);
                }
            }
        }
        let mut inside: Vec<Ref> = Vec::new();
        let mut seen: HashSet<Ref> = HashSet::new();
        let mut stack = vec![f];
        while let Some(v) = stack.pop() {
            for s in self.neighbours(g, v, Direction::Outgoing) {
                if s != t && anc.contains(&s) && seen.insert(s) {
                    inside.push(s);
                    stack.push(s);
                }
            }
        }
        inside.sort_by_key(|r| match *r {
            Ref::Old(i) => (0, i),
            Ref::New(k) => (1, k),
        });
        let region = self.region_of(g, f, t, inside.clone());
        let index: HashSet<Ref> = inside.into_iter().collect();
        let in_or_on = |r: &Ref| *r == f || *r == t || index.contains(r);
        let touched = self
            .new_edges
            .iter()
            .any(|(a, b)| in_or_on(a) && in_or_on(b));
        Some((region, touched))
    }

    /// The region of an open indexed `shape` promise in the graph plus
    /// this batch, when the batch touches it: when one of its edges lies
    /// inside the region or on its boundary. Only what the batch adds is
    /// searched (from the endpoints of its edges); the committed part of
    /// the region comes from the index.
    pub(crate) fn touched_region(&self, g: &Graph, r: &RegionIndex) -> Option<Region> {
        if self.new_edges.is_empty() {
            return None;
        }
        let (from, to) = (Ref::Old(r.from), Ref::Old(r.to));
        let d_old = |n: Ref| matches!(n, Ref::Old(i) if r.in_desc(i));
        let a_old = |n: Ref| matches!(n, Ref::Old(i) if r.in_anc(i));
        // What the batch adds to the descendants of `from` and to the
        // ancestors of `to`.
        let extra_d = self.reach_beyond(g, Direction::Outgoing, to, &d_old);
        let extra_a = self.reach_beyond(g, Direction::Incoming, from, &a_old);
        let in_d = |n: &Ref| d_old(*n) || extra_d.contains(n);
        let in_a = |n: &Ref| a_old(*n) || extra_a.contains(n);
        if !self.new_edges.iter().any(|(a, b)| in_d(a) && in_a(b)) {
            return None;
        }
        let mut inside: Vec<Ref> = r.members.iter().map(|&i| Ref::Old(i)).collect();
        inside.extend(extra_d.iter().filter(|n| in_a(n)).copied());
        inside.extend(
            extra_a
                .iter()
                .filter(|n| in_d(n) && !extra_d.contains(n))
                .copied(),
        );
        inside.sort_by_key(|r| match *r {
            Ref::Old(i) => (0, i),
            Ref::New(k) => (1, k),
        });
        Some(self.region_of(g, from, to, inside))
    }

    /// The nodes this batch's edges newly connect to a set (`known`)
    /// following `dir` (`Outgoing`: the new descendants of the set;
    /// `Incoming`: its new ancestors), stopping at `stop`.
    fn reach_beyond(
        &self,
        g: &Graph,
        dir: Direction,
        stop: Ref,
        known: &dyn Fn(Ref) -> bool,
    ) -> FastSet<Ref> {
        let mut extra: FastSet<Ref> = FastSet::default();
        let mut stack: Vec<Ref> = Vec::new();
        for &(a, b) in &self.new_edges {
            let (near, far) = match dir {
                Direction::Outgoing => (a, b),
                Direction::Incoming => (b, a),
            };
            if known(near) && far != stop && !known(far) && extra.insert(far) {
                stack.push(far);
            }
        }
        while let Some(n) = stack.pop() {
            let mut visit = |m: Ref| {
                if m != stop && !known(m) && extra.insert(m) {
                    stack.push(m);
                }
            };
            self.for_neighbours(g, n, dir, &mut visit);
        }
        extra
    }

    /// The committed region of an open indexed `shape` promise, from the
    /// index alone.
    pub(crate) fn indexed_region(g: &Graph, r: &RegionIndex) -> Region {
        let mut inside: Vec<Ref> = r.members.iter().map(|&i| Ref::Old(i)).collect();
        inside.sort_unstable_by_key(|r| match *r {
            Ref::Old(i) => i,
            Ref::New(k) => k,
        });
        Staging::default().region_of(g, Ref::Old(r.from), Ref::Old(r.to), inside)
    }

    /// The region with these nodes, as the matcher takes it.
    fn region_of(&self, g: &Graph, f: Ref, t: Ref, inside: Vec<Ref>) -> Region {
        let index: FastMap<Ref, usize> = inside.iter().enumerate().map(|(k, &r)| (r, k)).collect();
        let mut region = Region {
            nodes: inside
                .iter()
                .map(|&r| RegionNode {
                    id: self.name(g, r).to_string(),
                    task: self.task_name(g, r).to_string(),
                })
                .collect(),
            direct: self.has_edge(g, f, t),
            ..Region::default()
        };
        for (k, &r) in inside.iter().enumerate() {
            for s in self.neighbours(g, r, Direction::Outgoing) {
                if let Some(&j) = index.get(&s) {
                    region.edges.push((k, j));
                } else if s == t {
                    region.to_edges.push(k);
                }
            }
            if self.has_edge(g, f, r) {
                region.from_edges.push(k);
            }
        }
        region
    }
}
