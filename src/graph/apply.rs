//! Applying a validated batch to the graph: nodes, edges (keeping the
//! topological order and the regions), attributes, promises, rules and
//! loops; and node states.

use std::sync::atomic::{AtomicU64, Ordering};

use petgraph::graph::NodeIndex;

use super::region::{Bits, RegionIndex};
use super::{reorder, staging, Applied, Edge, Graph, Node};
use crate::model::{output_refs, Attrs, Mutation, NodeState};
use crate::promise::Promise;

/// Versions of graphs: unique across all graphs of the process.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

impl Graph {
    /// Applies mutations that were validated against this graph (by
    /// [`Graph::commit`] or when replaying the history).
    pub fn apply_unchecked(&mut self, mutations: &[Mutation]) -> Applied {
        let mut applied = Applied::default();
        for m in mutations {
            self.apply_one(m.clone(), &mut applied);
        }
        self.version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        applied
    }

    /// [`Graph::apply_unchecked`] taking the mutations, which move into
    /// the graph instead of being copied (a big registration is never in
    /// memory twice).
    pub fn apply_owned(&mut self, mutations: Vec<Mutation>) -> Applied {
        let mut applied = Applied::default();
        self.reserve_for(&mutations);
        for m in mutations {
            self.apply_one(m, &mut applied);
        }
        self.version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        applied
    }

    /// [`Graph::apply_owned`] for a batch validated in place
    /// ([`Graph::stage_borrowed`]): each mutation is copied as it is
    /// applied (task names filled in), so there is never a second copy of
    /// the whole batch.
    pub fn apply_cloned(&mut self, mutations: &[Mutation]) -> Applied {
        let mut applied = Applied::default();
        self.reserve_for(mutations);
        for m in mutations {
            self.apply_one(m.clone(), &mut applied);
        }
        self.version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        applied
    }

    /// Room for the nodes and edges of a batch, exactly: a registration
    /// of 100,000 nodes grows every per-node table once instead of by
    /// doubling (which leaves up to half of each unused).
    fn reserve_for(&mut self, mutations: &[Mutation]) {
        let (mut nodes, mut edges) = (0, 0);
        for m in mutations {
            match m {
                Mutation::AddNode { .. } => nodes += 1,
                Mutation::AddEdge { .. } => edges += 1,
                _ => {}
            }
        }
        self.nodes.reserve_exact(nodes);
        self.index.reserve(nodes);
        self.unmet.reserve_exact(nodes);
        self.ord.reserve_exact(nodes);
        self.edges.reserve_exact(edges);
        self.edge_index.reserve(edges);
        self.dag.reserve_exact_nodes(nodes);
        self.dag.reserve_exact_edges(edges);
    }

    fn apply_one(&mut self, mut m: Mutation, applied: &mut Applied) {
        // A batch validated in place has its task names as given.
        staging::fill_task_name(&mut m);
        match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                let i = self.nodes.len();
                // Validated batches have well-formed references only.
                let refs = output_refs(&inputs).unwrap_or_default();
                self.index.insert(&id, i);
                self.nodes.push(Node {
                    id,
                    task,
                    inputs,
                    attrs,
                    state: NodeState::Pending,
                });
                self.dag.add_node(());
                self.unmet.push(0);
                self.ord.push(self.next_ord);
                self.next_ord += 1;
                applied.touched.push(i);
                for r in refs {
                    let from = self.at(&r.node);
                    if !self.has_edge(from, i) {
                        self.push_edge(from, i, Attrs::new());
                    }
                }
            }
            Mutation::AddEdge { from, to, attrs } => {
                let (f, t) = (self.at(&from), self.at(&to));
                self.push_edge(f, t, attrs);
                applied.touched.push(t);
            }
            Mutation::SetAttrs { node, edge, attrs } => {
                let target = match (node, edge) {
                    (Some(n), _) => {
                        let i = self.at(&n);
                        &mut self.nodes[i].attrs
                    }
                    (None, Some(e)) => {
                        let k = self.edge_index[&(self.at(&e.from), self.at(&e.to))];
                        &mut self.edges[k].attrs
                    }
                    (None, None) => return,
                };
                merge_attrs(target, &attrs);
            }
            Mutation::AddPromise { promise } => {
                // A shape's `to` may now have to wait for its region.
                if let Promise::Shape { from, to, .. } = &promise {
                    let (f, t) = (self.at(from), self.at(to));
                    applied.touched.push(t);
                    let k = self.regions.len();
                    self.regions.push(RegionIndex {
                        promise: self.promises.len(),
                        from: f,
                        to: t,
                        open: false,
                        desc: Bits::default(),
                        anc: Bits::default(),
                        members: Vec::new(),
                    });
                    self.regions_into.entry(t).or_default().push(k);
                    if self.nodes[t].state.not_started() {
                        self.open_region(k);
                    }
                }
                self.promises.push(promise);
            }
            Mutation::AddRule { rule } => {
                self.rules.push(*rule);
                self.fired.push(false);
            }
            Mutation::AddLoop { def } => self.loops.push(*def),
        }
    }

    fn push_edge(&mut self, from: usize, to: usize, attrs: Attrs) {
        let k = self.edges.len();
        self.edges.push(Edge { from, to, attrs });
        self.edge_index.insert((from, to), k);
        self.dag
            .add_edge(NodeIndex::new(from), NodeIndex::new(to), k);
        if self.nodes[from].state != NodeState::Succeeded {
            self.unmet[to] += 1;
        }
        if self.ord[from] > self.ord[to] {
            let mut next = self.next_ord;
            let moved = reorder(
                to,
                from,
                &mut next,
                &|i: usize| self.ord[i],
                &|i, f| self.successors(i).for_each(f),
                &|i, f| self.predecessors(i).for_each(f),
            )
            .unwrap_or_else(|_| panic!("a validated batch closes no cycle"));
            self.next_ord = next;
            for (i, o) in moved {
                self.ord[i] = o;
            }
        }
        if !self.regions.is_empty() {
            self.grow_regions(from, to);
        }
    }

    /// Sets a node's state, keeping the successors' counts of unmet
    /// predecessors. Returns the successors whose last unmet predecessor
    /// this was.
    pub fn set_state(&mut self, i: usize, state: NodeState) -> Vec<usize> {
        let before = self.nodes[i].state;
        self.nodes[i].state = state;
        if before.not_started() != state.not_started() {
            // A region can grow only while its `to` has not started.
            for k in self.regions_into.get(&i).cloned().unwrap_or_default() {
                if state.not_started() {
                    self.open_region(k);
                } else {
                    let r = &mut self.regions[k];
                    (r.desc, r.anc, r.members, r.open) =
                        (Bits::default(), Bits::default(), Vec::new(), false);
                }
            }
        }
        let mut freed = Vec::new();
        if before != NodeState::Succeeded && state == NodeState::Succeeded {
            for s in self.successors(i).collect::<Vec<_>>() {
                self.unmet[s] -= 1;
                if self.unmet[s] == 0 {
                    freed.push(s);
                }
            }
        } else if before == NodeState::Succeeded && state != NodeState::Succeeded {
            for s in self.successors(i).collect::<Vec<_>>() {
                self.unmet[s] += 1;
            }
        }
        freed
    }
}

/// Merges `patch` into `attrs`; a `null` value removes the key.
pub fn merge_attrs(attrs: &mut Attrs, patch: &Attrs) {
    for (k, v) in patch {
        if v.is_null() {
            attrs.remove(k);
        } else {
            attrs.insert(k.clone(), v.clone());
        }
    }
}
