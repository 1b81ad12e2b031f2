//! The committed graph of a run and the validation of batches against it.
//!
//! [`Graph`] holds uniform nodes and edges (append-only) plus the promises
//! declared so far. [`Staging`] collects the mutations of one batch,
//! checking each one on arrival against the committed graph plus the
//! batch's earlier mutations; [`Graph::commit`] validates a whole batch once
//! more and applies it, all or nothing.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde_json::Value;

use crate::error::StructuralError;
use crate::model::{output_refs, Attrs, Loop, Mutation, NodeState, Rule, Task};
use crate::promise::Promise;

mod staging;

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

/// FxHash (multiply and rotate) with a final mix: a fast hash for the
/// graph's own maps,
/// keyed by node positions and ids. Not resistant to chosen collisions,
/// which is fine for keys the workflow itself chose.
#[derive(Clone, Copy, Default)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FastHasher {
    /// Mixed once more (splitmix64's finaliser): the table takes its
    /// bucket from the low bits, which the multiply alone leaves equal for
    /// keys that differ only in their high bytes (`n1`, `n2`, …).
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;
type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<FastHasher>>;

/// Node ids to positions without a copy of the ids: keyed by each id's
/// 64-bit hash, a hit checked against the id where it is kept (a graph's
/// node, a batch's mutation, a workflow's registration), so the table
/// holds 16 bytes an id instead of a second `String`. An id whose hash an
/// earlier id has already is kept with its text in `clash`.
///
/// Ids are inserted once each (callers refuse duplicates first).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdIndex {
    by_hash: FastMap<u64, usize>,
    clash: FastMap<String, usize>,
}

impl IdIndex {
    fn hash(id: &str) -> u64 {
        let mut h = FastHasher::default();
        std::hash::Hasher::write(&mut h, id.as_bytes());
        std::hash::Hasher::finish(&h)
    }

    /// The position of `id`; `id_at(i)` is the id kept at position `i`.
    #[inline]
    pub(crate) fn get<'a>(&self, id: &str, id_at: impl Fn(usize) -> &'a str) -> Option<usize> {
        match self.by_hash.get(&Self::hash(id)) {
            Some(&i) if id_at(i) == id => Some(i),
            Some(_) => self.clash.get(id).copied(),
            None => None,
        }
    }

    /// Records `id` at position `i`; `id` must not be in the index yet.
    pub(crate) fn insert(&mut self, id: &str, i: usize) {
        match self.by_hash.entry(Self::hash(id)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.clash.insert(id.to_string(), i);
            }
        }
    }

    /// Room for `n` more ids.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.by_hash.reserve(n);
    }
}

/// Versions of graphs: unique across all graphs of the process.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

/// A set of node positions.
#[derive(Clone, Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// Adds `i`; false when it was there already.
    fn insert(&mut self, i: usize) -> bool {
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
    desc: Bits,
    anc: Bits,
    /// The region's nodes, in the order they joined it.
    members: Vec<usize>,
}

impl RegionIndex {
    fn in_desc(&self, i: usize) -> bool {
        i == self.from || self.desc.has(i)
    }

    fn in_anc(&self, i: usize) -> bool {
        i == self.to || self.anc.has(i)
    }
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

    /// Builds the sets of region `k` from scratch.
    fn open_region(&mut self, k: usize) {
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
    fn grow_regions(&mut self, u: usize, v: usize) {
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

/// Calls back with each successor (or predecessor) of a node.
type Neighbours<'a, N> = &'a dyn Fn(N, &mut dyn FnMut(N));

/// Pearce–Kelly: keeps a topological order when the edge `x -> y` is
/// added while `ord(y) < ord(x)`. Searches forward from `y` among nodes
/// before `x` in the order; reaching `x` means a cycle (`Err` with the path
/// `y ~> x`). Otherwise the nodes found (`y` and its descendants up to
/// `x`) must come after `x`. When they have no descendant beyond `x` (the
/// common case of an edge into a node that waits at the end of a region,
/// or into a node no other node follows yet), they move to the end of the
/// order, after every node (places from `next` on). Otherwise a backward
/// search from `x` among nodes after `y` finds the nodes that must stay
/// before them, and both groups share their own places again, those
/// reaching `x` first. Returns the new places to set. Only nodes between
/// `y` and `x` in the order are ever looked at, so adding an edge that
/// already agrees with the order costs nothing at all.
fn reorder<N: Copy + Eq + Hash>(
    y: N,
    x: N,
    next: &mut u64,
    ord: &dyn Fn(N) -> u64,
    succs: Neighbours<'_, N>,
    preds: Neighbours<'_, N>,
) -> Result<Vec<(N, u64)>, Vec<N>> {
    let (lo, hi) = (ord(y), ord(x));
    let mut parent: FastMap<N, N> = FastMap::default();
    let mut forward = vec![y];
    let mut stack = vec![y];
    let mut seen: FastSet<N> = FastSet::default();
    seen.insert(y);
    let mut found = None;
    let mut beyond = false;
    while let Some(n) = stack.pop() {
        succs(n, &mut |s| {
            if found.is_some() {
                return;
            }
            if s == x {
                found = Some(n);
            } else if ord(s) > hi {
                beyond = true;
            } else if seen.insert(s) {
                parent.insert(s, n);
                forward.push(s);
                stack.push(s);
            }
        });
        if let Some(last) = found {
            let mut path = vec![x, last];
            let mut cur = last;
            while let Some(&p) = parent.get(&cur) {
                path.push(p);
                cur = p;
            }
            path.reverse();
            return Err(path);
        }
    }
    forward.sort_by_key(|&n| ord(n));
    if !beyond {
        let start = *next;
        *next += forward.len() as u64;
        return Ok(forward.into_iter().zip(start..).collect());
    }
    let mut backward = vec![x];
    let mut stack = vec![x];
    let mut seen: FastSet<N> = FastSet::default();
    seen.insert(x);
    while let Some(n) = stack.pop() {
        preds(n, &mut |p| {
            if ord(p) > lo && seen.insert(p) {
                backward.push(p);
                stack.push(p);
            }
        });
    }
    backward.sort_by_key(|&n| ord(n));
    let mut slots: Vec<u64> = backward.iter().chain(&forward).map(|&n| ord(n)).collect();
    slots.sort_unstable();
    Ok(backward.into_iter().chain(forward).zip(slots).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{output, EdgeRef};
    use crate::promise::shape::Shape;
    use serde_json::json;

    fn node(id: &str) -> Mutation {
        Mutation::add_node(id, Task::python("x.py"))
    }

    #[test]
    fn id_index_finds_ids_kept_elsewhere_and_clashing_hashes() {
        let ids = ["a", "b", "n1", "n2"];
        let at = |i: usize| ids[i];
        let mut index = IdIndex::default();
        index.insert("a", 0);
        // `b` as if its hash were `a`'s: the table points at `a`, so `b`
        // is kept with its text.
        index.by_hash.insert(IdIndex::hash("b"), 0);
        index.insert("b", 1);
        index.insert("n1", 2);
        index.insert("n2", 3);
        assert_eq!(index.get("a", at), Some(0));
        assert_eq!(index.get("b", at), Some(1));
        assert_eq!(index.get("n1", at), Some(2));
        assert_eq!(index.get("n2", at), Some(3));
        assert_eq!(index.get("n3", at), None);
        assert_eq!(index.get("", at), None);
        assert_eq!(index.clash.len(), 1, "only the clashing id is copied");
    }

    #[test]
    fn positions_and_staged_ids_resolve_without_copies_of_the_ids() {
        let mut g = Graph::new();
        let batch: Vec<Mutation> = (0..1000)
            .map(|i| node(&format!("n{i}")))
            .chain((1..1000).map(|i| edge(&format!("n{}", i - 1), &format!("n{i}"))))
            .collect();
        let staging = g.stage_all(batch.clone()).unwrap();
        assert_eq!(staging.lookup(&g, "n999"), Some(("n999", "n999")));
        assert!(staging.lookup(&g, "n1000").is_none());
        g.commit(&batch).unwrap();
        for i in 0..1000 {
            assert_eq!(g.position(&format!("n{i}")), Some(i));
        }
        assert_eq!(g.position("n1000"), None);
        assert!(g.has_edge(0, 1));
        // A batch against the graph resolves old and new ids alike.
        let mut more = Staging::default();
        more.stage(&g, node("m")).unwrap();
        more.stage(&g, edge("n5", "m")).unwrap();
        let err = more.stage(&g, node("n7")).unwrap_err();
        assert!(
            err.to_string().contains("already used in the graph"),
            "{err}"
        );
        let err = more.stage(&g, node("m")).unwrap_err();
        assert!(err.to_string().contains("earlier in this batch"), "{err}");
    }
    fn edge(a: &str, b: &str) -> Mutation {
        Mutation::AddEdge {
            from: a.into(),
            to: b.into(),
            attrs: Attrs::new(),
        }
    }

    fn chain() -> Graph {
        let mut g = Graph::new();
        g.commit(&[
            node("a"),
            node("b"),
            node("c"),
            edge("a", "b"),
            edge("b", "c"),
        ])
        .unwrap();
        g
    }

    #[test]
    fn commit_applies_and_counts_unmet() {
        let g = chain();
        assert_eq!(g.len(), 3);
        assert_eq!(g.unmet(0), 0);
        assert_eq!(g.unmet(2), 1);
        assert_eq!(g.node(0).task.name, "a");
    }

    #[test]
    fn limits_hold_for_every_batch() {
        let reason = |m: Mutation| chain().commit(&[m]).unwrap_err().reason;
        // A long id whose 32nd byte is inside a character (this panicked).
        let id = format!("{}é{}", "a".repeat(31), "b".repeat(300));
        let r = reason(node(&id));
        assert!(
            r.contains("longer than the limit of 256 (MAX_NAME_BYTES)"),
            "{r}"
        );
        let r = reason(Mutation::add_node(
            "x",
            Task::python("x.py").named("n".repeat(300)),
        ));
        assert!(r.contains("task name"), "{r}");
        let deep = (0..65).fold(json!(1), |v, _| json!([v]));
        let r = reason(Mutation::AddNode {
            id: "x".into(),
            task: Box::new(Task::python("x.py")),
            inputs: deep.clone(),
            attrs: Attrs::new(),
        });
        assert!(
            r.contains("inputs: JSON nested deeper than 64 levels"),
            "{r}"
        );
        let mut attrs = Attrs::new();
        attrs.insert("label".into(), deep[0].clone());
        let r = reason(Mutation::SetAttrs {
            node: Some("a".into()),
            edge: None,
            attrs,
        });
        assert!(r.contains("attrs: JSON nested deeper than 64"), "{r}");
        let r = reason(Mutation::AddPromise {
            promise: Promise::OnlyNodes {
                pattern: "*".repeat(2000).as_str().into(),
            },
        });
        assert!(r.contains("MAX_PATTERN_BYTES"), "{r}");
        let mut shape = Shape::task("M");
        for _ in 0..64 {
            shape = Shape::repeat(shape, 0, None);
        }
        let r = reason(Mutation::AddPromise {
            promise: Promise::shape("a", "c", shape),
        });
        assert!(r.contains("MAX_SHAPE_DEPTH"), "{r}");
    }

    #[test]
    fn cycle_error_lists_the_cycle() {
        let mut g = chain();
        let err = g.commit(&[edge("c", "a")]).unwrap_err();
        assert_eq!(err.mutation, "add_edge `c` -> `a`");
        assert!(
            err.reason.contains("`a` -> `b` -> `c` -> `a`"),
            "{}",
            err.reason
        );
        assert_eq!(g.edges().len(), 2, "nothing applied");
    }

    #[test]
    fn a_failing_batch_applies_nothing() {
        let mut g = chain();
        let err = g
            .commit(&[node("d"), edge("c", "d"), node("a")])
            .unwrap_err();
        assert!(err.reason.contains("already used"), "{err}");
        assert_eq!(g.len(), 3);
        assert_eq!(g.edges().len(), 2);
    }

    #[test]
    fn edges_into_started_nodes_are_refused() {
        let mut g = chain();
        g.set_state(1, NodeState::Running);
        let err = g.commit(&[node("x"), edge("x", "b")]).unwrap_err();
        assert!(
            err.reason.contains("already started (state running)"),
            "{err}"
        );
    }

    #[test]
    fn references_imply_edges_and_must_exist() {
        let mut g = chain();
        let with_ref = Mutation::AddNode {
            id: "d".into(),
            task: Box::new(Task::python("d.py")),
            inputs: json!({"x": output("c"), "y": output("c")}),
            attrs: Attrs::new(),
        };
        g.commit(&[with_ref]).unwrap();
        assert!(g.has_edge(2, 3));
        assert_eq!(g.unmet(3), 1);
        let bad = Mutation::AddNode {
            id: "e".into(),
            task: Box::new(Task::python("e.py")),
            inputs: json!({"x": output("nope")}),
            attrs: Attrs::new(),
        };
        let err = g.commit(&[bad]).unwrap_err();
        assert!(err.reason.contains("`nope`"), "{err}");
    }

    #[test]
    fn cycles_through_new_nodes_are_found() {
        let g = chain();
        let mut s = Staging::default();
        s.stage(&g, node("x")).unwrap();
        s.stage(&g, edge("c", "x")).unwrap();
        s.stage(&g, edge("x", "y").clone()).unwrap_err();
        let err = s.stage(&g, edge("x", "b")).unwrap_err();
        assert!(err.reason.contains("`b` -> `c` -> `x` -> `b`"), "{err}");
    }

    #[test]
    fn set_attrs_merges_and_removes() {
        let mut g = chain();
        let mut a = Attrs::new();
        a.insert("label".into(), json!("first"));
        a.insert("color".into(), json!("red"));
        g.commit(&[Mutation::SetAttrs {
            node: Some("a".into()),
            edge: None,
            attrs: a,
        }])
        .unwrap();
        let mut b = Attrs::new();
        b.insert("color".into(), Value::Null);
        g.commit(&[Mutation::SetAttrs {
            node: None,
            edge: Some(EdgeRef {
                from: "a".into(),
                to: "b".into(),
            }),
            attrs: b.clone(),
        }])
        .unwrap();
        g.commit(&[Mutation::SetAttrs {
            node: Some("a".into()),
            edge: None,
            attrs: b,
        }])
        .unwrap();
        assert_eq!(g.node(0).attrs.get("label"), Some(&json!("first")));
        assert!(!g.node(0).attrs.contains_key("color"));
        let err = g
            .commit(&[Mutation::SetAttrs {
                node: None,
                edge: Some(EdgeRef {
                    from: "a".into(),
                    to: "c".into(),
                }),
                attrs: Attrs::new(),
            }])
            .unwrap_err();
        assert!(err.reason.contains("unknown edge"), "{err}");
    }

    #[test]
    fn a_closed_region_is_not_indexed_and_unfilled_regions_gate() {
        let mut g = Graph::new();
        g.commit(&[
            node("A"),
            node("B"),
            Mutation::AddPromise {
                promise: Promise::shape("A", "B", "M*".parse().unwrap()),
            },
        ])
        .unwrap();
        assert_eq!(g.shapes_into(1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(g.region_unfilled(0), Some(true));
        g.commit(&[node("M"), edge("A", "M"), edge("M", "B")])
            .unwrap();
        assert_eq!(g.region_unfilled(0), Some(false));
        g.set_state(1, NodeState::Running);
        assert_eq!(g.region_unfilled(0), None, "closed once `to` started");
        g.set_state(1, NodeState::Ready);
        assert_eq!(g.region_unfilled(0), Some(false), "open again, rebuilt");
    }

    #[test]
    fn applying_owned_mutations_builds_the_same_graph() {
        let mut base = chain();
        base.set_state(0, NodeState::Succeeded);
        let batch = vec![
            node("d"),
            Mutation::AddNode {
                id: "e".into(),
                task: Box::new(Task::python("e.py")),
                inputs: json!({"x": output("d"), "y": output("a")}),
                attrs: Attrs::new(),
            },
            edge("c", "d"),
            edge("d", "b"),
            Mutation::SetAttrs {
                node: Some("e".into()),
                edge: None,
                attrs: [("label".to_string(), json!("E"))].into_iter().collect(),
            },
            Mutation::AddPromise {
                promise: Promise::shape("a", "e", "any".parse().unwrap()),
            },
        ];
        let err = base.validate(batch.clone()).unwrap_err();
        assert!(err.reason.contains("cycle"), "{err}");
        let in_place = base.stage_borrowed(&batch).map(drop).unwrap_err();
        assert_eq!(in_place, err, "validated in place: the same error");
        let batch: Vec<Mutation> = batch.into_iter().filter(|m| *m != edge("d", "b")).collect();
        let valid = base.validate(batch.clone()).unwrap();
        assert_eq!(base.stage_borrowed(&batch).unwrap().mutations(), &batch[..]);
        assert_eq!(base.stage_borrowed(&batch).unwrap().into_mutations(), valid);
        let (mut by_ref, mut owned, mut cloned) = (base.clone(), base.clone(), base);
        let a = by_ref.apply_unchecked(&valid);
        let b = owned.apply_owned(valid);
        // The batch as given (task names not filled in), copied one
        // mutation at a time.
        let c = cloned.apply_cloned(&batch);
        assert_eq!(a.touched, b.touched);
        assert_eq!(c.touched, b.touched);
        assert_eq!(cloned.nodes(), owned.nodes());
        assert_eq!(cloned.edges(), owned.edges());
        assert_eq!(cloned.promises(), owned.promises());
        assert_eq!(by_ref.nodes(), owned.nodes());
        assert_eq!(by_ref.edges(), owned.edges());
        assert_eq!(by_ref.promises(), owned.promises());
        for i in 0..owned.len() {
            assert_eq!(by_ref.unmet(i), owned.unmet(i));
            assert_eq!(by_ref.topo_order(i), owned.topo_order(i));
            assert_eq!(
                by_ref.successors(i).collect::<Vec<_>>(),
                owned.successors(i).collect::<Vec<_>>()
            );
        }
        assert_eq!(owned.region_unfilled(0), by_ref.region_unfilled(0));
    }

    #[test]
    fn set_state_frees_successors() {
        let mut g = chain();
        assert_eq!(g.set_state(0, NodeState::Succeeded), vec![1]);
        assert_eq!(g.unmet(1), 0);
    }
}
