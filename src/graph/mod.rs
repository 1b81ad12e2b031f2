//! The committed graph of a run and the validation of batches against it.
//!
//! [`Graph`] holds uniform nodes and edges (append-only) plus the promises
//! declared so far. [`Staging`] collects the mutations of one batch,
//! checking each one on arrival against the committed graph plus the
//! batch's earlier mutations; [`Graph::commit`] validates a whole batch once
//! more and applies it, all or nothing.

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde_json::Value;

use crate::error::StructuralError;
use crate::model::{Attrs, Loop, Mutation, NodeState, Rule, Task};
use crate::promise::Promise;

mod apply;
mod index;
mod order;
mod region;
mod staging;
#[cfg(test)]
mod tests;

pub use apply::merge_attrs;
pub(crate) use index::{FastHasher, IdIndex};
use index::{FastMap, FastSet};
use order::reorder;
pub(crate) use region::RegionIndex;
pub use staging::{Staged, Staging};

/// A node as the runtime holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique id within the run.
    pub id: String,
    /// What runs.
    pub task: Box<Task>,
    /// JSON inputs (with output references unresolved).
    pub inputs: Value,
    /// Cosmetic attributes.
    pub attrs: Attrs,
    /// Current state.
    pub state: NodeState,
}

/// An edge `from -> to` by node positions.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Position of the source node.
    pub from: usize,
    /// Position of the target node.
    pub to: usize,
    /// Cosmetic attributes.
    pub attrs: Attrs,
}

/// The committed graph: nodes in insertion order, edges, promises.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    /// Ids to positions (the ids themselves are the nodes').
    index: IdIndex,
    dag: DiGraph<(), usize, u32>,
    edges: Vec<Edge>,
    edge_index: FastMap<(usize, usize), usize>,
    /// Per node: predecessors that have not succeeded yet.
    unmet: Vec<u32>,
    promises: Vec<Promise>,
    /// Per node: its place in a topological order of the graph, kept
    /// incrementally (Pearce–Kelly) as edges are added: distinct places,
    /// with `ord[u] < ord[v]` for every edge `u -> v`.
    ord: Vec<u64>,
    /// The place after every node's.
    next_ord: u64,
    /// The regions of the `shape` promises, in declaration order.
    regions: Vec<RegionIndex>,
    /// Per node: the regions (indices into `regions`) that end at it.
    regions_into: FastMap<usize, Vec<usize>>,
    /// Changes on every applied batch (unique across graphs), so that a
    /// [`Staging`] notices the graph moved under it.
    version: u64,
    /// The rules declared so far, in order.
    rules: Vec<Rule>,
    /// Per rule: whether it fired.
    fired: Vec<bool>,
    /// The loops declared so far, in order.
    loops: Vec<Loop>,
}

/// What applying a batch touched, for the scheduler.
#[derive(Debug, Default)]
pub struct Applied {
    /// Nodes whose readiness may have changed (new nodes, edge targets).
    pub touched: Vec<usize>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there is no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All nodes in insertion order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// All edges in insertion order.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The promises declared so far, in order.
    pub fn promises(&self) -> &[Promise] {
        &self.promises
    }

    /// The rules declared so far, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The loops declared so far, in order.
    pub fn loops(&self) -> &[Loop] {
        &self.loops
    }

    /// The loop with this id.
    pub fn find_loop(&self, id: &str) -> Option<&Loop> {
        self.loops.iter().find(|l| l.id == id)
    }

    /// Whether the rule at position `k` among [`Graph::rules`] fired.
    pub fn rule_fired(&self, k: usize) -> bool {
        self.fired[k]
    }

    /// The position of the rule with this id.
    pub fn rule_position(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }

    /// Records that the rule `id` fired: its batch (origin `rule:<id>`)
    /// was committed. The history's fold calls it for every such batch,
    /// so a rebuilt run knows which rules fired. Unknown ids are ignored.
    pub fn mark_fired(&mut self, id: &str) {
        if let Some(k) = self.rule_position(id) {
            self.fired[k] = true;
        }
    }

    /// The position of the node with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id, |i| self.nodes[i].id.as_str())
    }

    /// The position of a node that is known to be in the graph.
    fn at(&self, id: &str) -> usize {
        self.position(id)
            .expect("a validated batch names nodes of the graph")
    }

    /// The node at a position.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The node with this id.
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.position(id).map(|i| &self.nodes[i])
    }

    /// Positions of the direct successors of node `i`.
    pub fn successors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.dag
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// Positions of the direct predecessors of node `i`.
    pub fn predecessors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.dag
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| n.index())
    }

    /// How many predecessors of node `i` have not succeeded yet.
    pub fn unmet(&self, i: usize) -> u32 {
        self.unmet[i]
    }

    /// True when the edge exists.
    pub fn has_edge(&self, from: usize, to: usize) -> bool {
        self.edge_index.contains_key(&(from, to))
    }

    /// The place of node `i` in the topological order the graph keeps
    /// (`topo_order(u) < topo_order(v)` for every edge `u -> v`).
    pub fn topo_order(&self, i: usize) -> u64 {
        self.ord[i]
    }

    /// The `shape` promises (positions among [`Graph::promises`]) whose
    /// region ends at node `i`.
    pub fn shapes_into(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.regions_into
            .get(&i)
            .into_iter()
            .flatten()
            .map(|&r| self.regions[r].promise)
    }

    /// The indexed regions of the `shape` promises.
    pub(crate) fn regions(&self) -> &[RegionIndex] {
        &self.regions
    }

    /// The region index of the `shape` promise at position `promise`.
    pub(crate) fn region_of(&self, promise: usize) -> Option<&RegionIndex> {
        self.regions.iter().find(|r| r.promise == promise)
    }

    /// True when the open region of the `shape` promise at position
    /// `promise` has no node and no direct edge `from -> to`: its `to`
    /// waits for it. `None` when the promise is not an open shape.
    pub fn region_unfilled(&self, promise: usize) -> Option<bool> {
        let r = self.region_of(promise).filter(|r| r.open)?;
        Some(r.members.is_empty() && !self.has_edge(r.from, r.to))
    }

    /// Validates a whole batch against this graph; returns the mutations
    /// as they will be applied (task names filled in).
    pub fn validate(&self, mutations: Vec<Mutation>) -> Result<Vec<Mutation>, StructuralError> {
        self.stage_all(mutations).map(Staging::into_mutations)
    }

    /// Stages a whole batch against this graph (for promise checks before
    /// it is applied).
    pub fn stage_all(
        &self,
        mutations: impl IntoIterator<Item = Mutation>,
    ) -> Result<Staging, StructuralError> {
        let mutations = mutations.into_iter();
        // Exactly as many as arrive: a registration of 300,000 mutations
        // would otherwise leave up to half its buffer unused.
        let mut staging = Staging::with_capacity(mutations.size_hint().0);
        for m in mutations {
            staging.stage(self, m)?;
        }
        Ok(staging)
    }

    /// [`Graph::stage_all`] validating the mutations where they are,
    /// without a copy (a registration of 100,000 nodes is never in memory
    /// twice): the same checks, the same errors. The staged batch's
    /// [`Staged::mutations`] are `mutations` as given (task names not
    /// filled in); [`Graph::apply_cloned`] applies them.
    pub fn stage_borrowed<'m>(
        &self,
        mutations: &'m [Mutation],
    ) -> Result<Staged<'m>, StructuralError> {
        let mut staging = Staged::borrowing(mutations);
        while staging.stage_next(self)? {}
        Ok(staging)
    }

    /// Validates a whole batch and applies it: all or nothing.
    pub fn commit(&mut self, mutations: &[Mutation]) -> Result<Applied, StructuralError> {
        let valid = self.validate(mutations.to_vec())?;
        Ok(self.apply_unchecked(&valid))
    }
}
