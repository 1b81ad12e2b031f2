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
use crate::limits::{check_len, check_object, check_value, MAX_NAME_BYTES};
use crate::limits::{MAX_LOOPS, MAX_RULES};
use crate::model::{output_refs, Attrs, Loop, Mutation, NodeState, Rule, Task};
use crate::promise::shape::{Region, RegionNode};
use crate::promise::Promise;

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
        let mut staging = Staging::default();
        // Exactly as many as arrive: a registration of 300,000 mutations
        // would otherwise leave up to half its buffer unused.
        staging.mutations.reserve_exact(mutations.size_hint().0);
        for m in mutations {
            staging.stage(self, m)?;
        }
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

    fn apply_one(&mut self, m: Mutation, applied: &mut Applied) {
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

/// A node of the graph-plus-batch view: committed, or new in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ref {
    Old(usize),
    New(usize),
}

/// The neighbours a batch adds, per node: graph nodes in a map, the
/// batch's new nodes by index (a big batch of new nodes hashes nothing).
#[derive(Clone, Debug, Default)]
struct Adjacency {
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

    fn push(&mut self, r: Ref, to: Ref) {
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

/// The mutations of one batch, validated one by one as they arrive.
///
/// ```
/// use orch::{graph::{Graph, Staging}, Mutation, Task};
/// let g = Graph::new();
/// let mut batch = Staging::default();
/// batch.stage(&g, Mutation::add_node("a", Task::python("a.py"))).unwrap();
/// let err = batch.stage(&g, Mutation::add_edge("a", "a")).unwrap_err();
/// assert!(err.to_string().contains("cycle"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Staging {
    mutations: Vec<Mutation>,
    /// Ids of the batch's new nodes to their `Ref::New` index (the ids
    /// themselves are their mutations').
    new_ids: IdIndex,
    /// Where each new node's `add_node` is among `mutations`, by
    /// `Ref::New` index (its id and task name are read there).
    new_nodes: Vec<usize>,
    new_succ: Adjacency,
    new_pred: Adjacency,
    new_edges: Vec<(Ref, Ref)>,
    new_edge_set: FastSet<(Ref, Ref)>,
    /// The graph version the order below was computed against.
    version: u64,
    /// Topological places of the batch's new nodes (after the graph's).
    ord_new: Vec<u64>,
    /// Graph nodes whose place this batch's edges changed.
    ord_old: FastMap<usize, u64>,
    /// The place after every node's, the batch's included.
    next_ord: u64,
    /// Ids of the rules this batch declares.
    new_rules: Vec<String>,
    /// Ids of the loops this batch declares.
    new_loops: Vec<String>,
}

impl Staging {
    /// The accepted mutations, in order (task names filled in).
    pub fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }

    /// Takes the accepted mutations.
    pub fn into_mutations(self) -> Vec<Mutation> {
        self.mutations
    }

    /// True when no mutation was accepted.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    fn resolve(&self, g: &Graph, id: &str) -> Option<Ref> {
        g.position(id).map(Ref::Old).or_else(|| {
            self.new_ids
                .get(id, |k| self.name(g, Ref::New(k)))
                .map(Ref::New)
        })
    }

    fn name<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a str {
        match r {
            Ref::Old(i) => &g.node(i).id,
            Ref::New(k) => match &self.mutations[self.new_nodes[k]] {
                Mutation::AddNode { id, .. } => id,
                _ => unreachable!("new nodes point at their add_node"),
            },
        }
    }

    fn task<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a Task {
        match r {
            Ref::Old(i) => &g.node(i).task,
            Ref::New(k) => match &self.mutations[self.new_nodes[k]] {
                Mutation::AddNode { task, .. } => task,
                _ => unreachable!("new nodes point at their add_node"),
            },
        }
    }

    /// The task of a node of the graph or of this batch.
    pub fn task_of<'a>(&'a self, g: &'a Graph, id: &str) -> Option<&'a Task> {
        self.resolve(g, id).map(|r| self.task(g, r))
    }

    /// The (id, task name) of a node of the graph or of this batch.
    pub fn lookup<'a>(&'a self, g: &'a Graph, id: &str) -> Option<(&'a str, &'a str)> {
        self.resolve(g, id)
            .map(|r| (self.name(g, r), self.task(g, r).name.as_str()))
    }

    /// The edges this batch adds (explicit and implied), as (from, to)
    /// ids, in order.
    pub fn new_edges<'a>(&'a self, g: &'a Graph) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.new_edges
            .iter()
            .map(move |&(a, b)| (self.name(g, a), self.name(g, b)))
    }

    /// How many edges the batch has added so far.
    pub fn edge_count(&self) -> usize {
        self.new_edges.len()
    }

    fn has_edge(&self, g: &Graph, from: Ref, to: Ref) -> bool {
        match (from, to) {
            (Ref::Old(f), Ref::Old(t)) if g.has_edge(f, t) => true,
            _ => self.new_edge_set.contains(&(from, to)),
        }
    }

    fn add_edge(&mut self, from: Ref, to: Ref) {
        self.new_succ.push(from, to);
        self.new_pred.push(to, from);
        self.new_edges.push((from, to));
        self.new_edge_set.insert((from, to));
    }

    fn ord(&self, g: &Graph, r: Ref) -> u64 {
        match r {
            Ref::Old(i) => self.ord_old.get(&i).copied().unwrap_or(g.ord[i]),
            Ref::New(k) => self.ord_new[k],
        }
    }

    /// Calls `f` with each neighbour of `r` in `dir`: in the graph and
    /// through this batch's edges.
    fn for_neighbours(&self, g: &Graph, r: Ref, dir: Direction, f: &mut dyn FnMut(Ref)) {
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
    fn sync_order(&mut self, g: &Graph) {
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

    fn set_ord(&mut self, r: Ref, o: u64) {
        match r {
            Ref::Old(i) => {
                self.ord_old.insert(i, o);
            }
            Ref::New(k) => self.ord_new[k] = o,
        }
    }

    /// The neighbours of `r` in `dir` (see [`Staging::for_neighbours`]).
    fn neighbours(&self, g: &Graph, r: Ref, dir: Direction) -> Vec<Ref> {
        let mut out = Vec::new();
        self.for_neighbours(g, r, dir, &mut |n| out.push(n));
        out
    }

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
                    task: self.task(g, r).name.clone(),
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

    /// A path `from ~> to` in the committed graph plus this batch, if any:
    /// the full search the incremental order replaced, kept to test it.
    #[cfg(test)]
    fn path(&self, g: &Graph, from: Ref, to: Ref) -> Option<Vec<Ref>> {
        let mut parent: HashMap<Ref, Ref> = HashMap::new();
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

    /// Validates one mutation against the committed graph plus this
    /// batch's earlier mutations and, if it keeps every structural rule,
    /// adds it to the batch.
    pub fn stage(&mut self, g: &Graph, mut m: Mutation) -> Result<(), StructuralError> {
        self.sync_order(g);
        let err = |reason: String| StructuralError {
            mutation: m.describe(),
            reason,
        };
        match &m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                check_id(id).map_err(&err)?;
                check_len("task name", &task.name, MAX_NAME_BYTES, "MAX_NAME_BYTES")
                    .map_err(&err)?;
                check_json_values(inputs, attrs).map_err(&err)?;
                if let crate::model::Exec::Container(c) = &task.exec {
                    c.check().map_err(|e| err(format!("container task: {e}")))?;
                }
                if let Some(r) = self.resolve(g, id) {
                    let existing = match r {
                        Ref::Old(i) => format!("in the graph (state {})", g.node(i).state),
                        Ref::New(_) => "earlier in this batch".to_string(),
                    };
                    return Err(err(format!("node id `{id}` is already used {existing}")));
                }
                let refs = output_refs(inputs).map_err(|e| err(format!("bad input: {e}")))?;
                let mut sources = Vec::new();
                for r in refs {
                    if r.node == *id {
                        return Err(err(format!(
                            "input reference to its own output `{}` would be a cycle",
                            r.node
                        )));
                    }
                    let src = self.resolve(g, &r.node).ok_or_else(|| {
                        err(format!(
                            "input references the output of `{}`, which is not a node of the graph or of this batch",
                            r.node
                        ))
                    })?;
                    if !sources.contains(&src) {
                        sources.push(src);
                    }
                }
                let k = self.new_nodes.len();
                self.new_ids.insert(id, k);
                // The mutation joins `mutations` there below (its task name
                // filled in), once nothing can fail any more.
                self.new_nodes.push(self.mutations.len());
                // Last in the order: edges from its sources agree with it.
                self.ord_new.push(self.next_ord);
                self.next_ord += 1;
                for src in sources {
                    self.add_edge(src, Ref::New(k));
                }
            }
            Mutation::AddEdge { from, to, attrs } => {
                check_json_values(&Value::Null, attrs).map_err(&err)?;
                let f = self
                    .resolve(g, from)
                    .ok_or_else(|| err(format!("unknown node `{from}`")))?;
                let t = self
                    .resolve(g, to)
                    .ok_or_else(|| err(format!("unknown node `{to}`")))?;
                if let Ref::Old(i) = t {
                    let state = g.node(i).state;
                    if !state.not_started() {
                        return Err(err(format!(
                            "node `{to}` already started (state {state}); edges may only end at nodes that have not started"
                        )));
                    }
                }
                if self.has_edge(g, f, t) {
                    return Err(err(format!("edge `{from}` -> `{to}` already exists")));
                }
                if f == t {
                    return Err(err(format!(
                        "it would close the cycle `{from}` -> `{from}`"
                    )));
                }
                if self.ord(g, f) > self.ord(g, t) {
                    let mut next = self.next_ord;
                    let moved = reorder(
                        t,
                        f,
                        &mut next,
                        &|r| self.ord(g, r),
                        &|r, cb| self.for_neighbours(g, r, Direction::Outgoing, cb),
                        &|r, cb| self.for_neighbours(g, r, Direction::Incoming, cb),
                    );
                    match moved {
                        Ok(moved) => {
                            self.next_ord = next;
                            for (r, o) in moved {
                                self.set_ord(r, o);
                            }
                        }
                        Err(path) => {
                            let mut names: Vec<&str> =
                                path.iter().map(|&r| self.name(g, r)).collect();
                            names.push(self.name(g, t));
                            return Err(err(format!(
                                "it would close the cycle {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(" -> ")
                            )));
                        }
                    }
                }
                self.add_edge(f, t);
            }
            Mutation::SetAttrs { node, edge, attrs } => match (&node, &edge) {
                (Some(n), None) => {
                    check_json_values(&Value::Null, attrs).map_err(&err)?;
                    self.resolve(g, n)
                        .ok_or_else(|| err(format!("unknown node `{n}`")))?;
                }
                (None, Some(e)) => {
                    check_json_values(&Value::Null, attrs).map_err(&err)?;
                    let f = self
                        .resolve(g, &e.from)
                        .ok_or_else(|| err(format!("unknown node `{}`", e.from)))?;
                    let t = self
                        .resolve(g, &e.to)
                        .ok_or_else(|| err(format!("unknown node `{}`", e.to)))?;
                    if !self.has_edge(g, f, t) {
                        return Err(err(format!("unknown edge `{}` -> `{}`", e.from, e.to)));
                    }
                }
                _ => {
                    return Err(err(
                        "set_attrs needs exactly one of `node` or `edge`".to_string()
                    ))
                }
            },
            Mutation::AddPromise { promise } => {
                promise.check().map_err(&err)?;
                if let Promise::Shape { from, to, .. } = promise {
                    for end in [from, to] {
                        if self.resolve(g, end).is_none() {
                            return Err(err(format!(
                                "the shape's node `{end}` is not a node of the graph or of this batch"
                            )));
                        }
                    }
                    if from == to {
                        return Err(err(format!(
                            "a shape needs two different nodes, got `{from}` twice"
                        )));
                    }
                }
            }
            Mutation::AddRule { rule } => {
                rule.check().map_err(&err)?;
                if g.rule_position(&rule.id).is_some() || self.new_rules.contains(&rule.id) {
                    return Err(err(format!("rule id `{}` is already used", rule.id)));
                }
                if g.rules.len() + self.new_rules.len() >= MAX_RULES {
                    return Err(err(format!(
                        "the run has {MAX_RULES} rules already (MAX_RULES)"
                    )));
                }
                self.new_rules.push(rule.id.clone());
            }
            Mutation::AddLoop { def } => {
                def.check().map_err(&err)?;
                if g.find_loop(&def.id).is_some() || self.new_loops.contains(&def.id) {
                    return Err(err(format!("loop id `{}` is already used", def.id)));
                }
                if g.loops.len() + self.new_loops.len() >= MAX_LOOPS {
                    return Err(err(format!(
                        "the run has {MAX_LOOPS} loops already (MAX_LOOPS)"
                    )));
                }
                // The loop comes with its first iteration, wired after
                // `from`, and its `to` (see `Loop::declaration`).
                for end in [&def.from, &def.to] {
                    if self.resolve(g, end).is_none() {
                        return Err(err(format!(
                            "loop `{}`: `{end}` is not a node of the graph or of this batch",
                            def.id
                        )));
                    }
                }
                for s in &def.body {
                    if self.resolve(g, &s.node(1)).is_none() {
                        return Err(err(format!(
                            "loop `{}`: its first iteration's node `{}` is not in the graph or this batch (declare the loop with `Loop::declaration`)",
                            def.id,
                            s.node(1)
                        )));
                    }
                }
                self.new_loops.push(def.id.clone());
            }
        }
        if let Mutation::AddNode { id, task, .. } = &mut m {
            if task.name.is_empty() {
                task.name = id.clone();
            }
        }
        self.mutations.push(m);
        Ok(())
    }
}

/// Inputs and attributes nest at most [`MAX_JSON_DEPTH`] levels, however
/// they were built: the events that store them must read back.
fn check_json_values(inputs: &Value, attrs: &Attrs) -> Result<(), String> {
    let attrs = check_object(attrs);
    check_value(inputs)
        .map_err(|e| format!("inputs: {e}"))
        .and(attrs.map_err(|e| format!("attrs: {e}")))
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("node id is empty".to_string());
    }
    check_len("node id", id, MAX_NAME_BYTES, "MAX_NAME_BYTES")?;
    if let Some(c) = id.chars().find(|c| c.is_control() || *c == '"') {
        return Err(format!("node id {id:?} contains the character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{output, EdgeRef};
    use crate::promise::shape::{Region, Shape};
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

    /// A small deterministic generator (xorshift), so that failures
    /// reproduce.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// True when the graph plus the batch has no cycle (Kahn).
    fn acyclic(g: &Graph, s: &Staging) -> bool {
        let refs: Vec<Ref> = (0..g.len())
            .map(Ref::Old)
            .chain((0..s.new_nodes.len()).map(Ref::New))
            .collect();
        let mut indeg: HashMap<Ref, usize> = refs
            .iter()
            .map(|&r| (r, s.neighbours(g, r, Direction::Incoming).len()))
            .collect();
        let mut stack: Vec<Ref> = refs.iter().copied().filter(|r| indeg[r] == 0).collect();
        let mut seen = 0;
        while let Some(r) = stack.pop() {
            seen += 1;
            for t in s.neighbours(g, r, Direction::Outgoing) {
                let d = indeg.get_mut(&t).expect("known");
                *d -= 1;
                if *d == 0 {
                    stack.push(t);
                }
            }
        }
        seen == refs.len()
    }

    /// Every edge of the graph plus the batch agrees with the order, and
    /// places are distinct.
    fn assert_ordered(g: &Graph, s: &Staging) {
        let refs: Vec<Ref> = (0..g.len())
            .map(Ref::Old)
            .chain((0..s.new_nodes.len()).map(Ref::New))
            .collect();
        let places: HashSet<u64> = refs.iter().map(|&r| s.ord(g, r)).collect();
        assert_eq!(places.len(), refs.len(), "places are distinct");
        for &r in &refs {
            for t in s.neighbours(g, r, Direction::Outgoing) {
                assert!(
                    s.ord(g, r) < s.ord(g, t),
                    "{r:?} -> {t:?} against the order"
                );
            }
        }
    }

    #[test]
    fn incremental_cycle_check_agrees_with_a_full_search() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..40 {
            let mut g = Graph::new();
            let mut names = 0usize;
            // Two batches in flight at once: one commits while the other
            // is still being sent, so the second's order must follow.
            let mut live: Vec<Staging> = vec![Staging::default(), Staging::default()];
            for step in 0..300 {
                let which = rng.below(2);
                let s = &mut live[which];
                let all: Vec<String> = g
                    .nodes()
                    .iter()
                    .map(|n| n.id.clone())
                    .chain((0..s.new_nodes.len()).map(|k| s.name(&g, Ref::New(k)).to_string()))
                    .collect();
                if all.len() < 2 || rng.below(4) == 0 {
                    names += 1;
                    s.stage(&g, node(&format!("v{names}"))).unwrap();
                } else {
                    let (a, b) = (&all[rng.below(all.len())], &all[rng.below(all.len())]);
                    let (f, t) = (s.resolve(&g, a).unwrap(), s.resolve(&g, b).unwrap());
                    if s.has_edge(&g, f, t) {
                        continue;
                    }
                    let closes = f == t || s.path(&g, t, f).is_some();
                    let got = s.stage(&g, edge(a, b));
                    assert_eq!(
                        got.is_err(),
                        closes,
                        "round {round} step {step}: {a} -> {b}: {got:?}"
                    );
                    if let Err(e) = got {
                        assert!(e.reason.contains("would close the cycle"), "{e}");
                    }
                }
                assert_ordered(&g, &live[which]);
                if rng.below(10) == 0 {
                    let batch = std::mem::take(&mut live[which]);
                    // A batch the other's commit made invalid (the same
                    // edge added by both) is refused whole.
                    if g.commit(batch.mutations()).is_err() {
                        continue;
                    }
                    for k in 0..g.len() {
                        for t in g.successors(k) {
                            assert!(g.topo_order(k) < g.topo_order(t));
                        }
                    }
                    // A batch that the commit made cyclic is doomed (its
                    // commit fails); start it afresh.
                    let other = 1 - which;
                    let mut check = live[other].clone();
                    check.sync_order(&g);
                    if !acyclic(&g, &check) {
                        assert!(g.validate(live[other].mutations().to_vec()).is_err());
                        live[other] = Staging::default();
                    }
                }
            }
        }
    }

    /// A region as sorted ids, for comparing two computations of it.
    type Canon = (
        Vec<String>,
        Vec<(String, String)>,
        Vec<String>,
        Vec<String>,
        bool,
    );

    fn canon(r: &Region) -> Canon {
        let id = |k: usize| r.nodes[k].id.clone();
        let mut nodes: Vec<String> = (0..r.nodes.len()).map(id).collect();
        let mut edges: Vec<(String, String)> =
            r.edges.iter().map(|&(a, b)| (id(a), id(b))).collect();
        let mut from: Vec<String> = r.from_edges.iter().map(|&k| id(k)).collect();
        let mut to: Vec<String> = r.to_edges.iter().map(|&k| id(k)).collect();
        nodes.sort();
        edges.sort();
        from.sort();
        to.sort();
        (nodes, edges, from, to, r.direct)
    }

    #[test]
    fn region_index_agrees_with_a_full_search() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..30 {
            let mut g = Graph::new();
            let base: Vec<Mutation> = (0..12).map(|i| node(&format!("v{i}"))).collect();
            g.commit(&base).unwrap();
            for k in 0..4 {
                let (a, b) = (rng.below(6), 6 + rng.below(6));
                let (f, t) = (format!("v{a}"), format!("v{b}"));
                if k > 0 && rng.below(2) == 0 {
                    continue;
                }
                g.commit(&[Mutation::AddPromise {
                    promise: Promise::shape(&f, &t, "any".parse().unwrap()),
                }])
                .unwrap();
            }
            let mut names = 12;
            for step in 0..60 {
                let mut s = Staging::default();
                for _ in 0..1 + rng.below(6) {
                    let all: Vec<String> = g
                        .nodes()
                        .iter()
                        .map(|n| n.id.clone())
                        .chain((0..s.new_nodes.len()).map(|k| s.name(&g, Ref::New(k)).to_string()))
                        .collect();
                    if rng.below(3) == 0 {
                        names += 1;
                        s.stage(&g, node(&format!("v{names}"))).unwrap();
                    } else {
                        let (a, b) = (&all[rng.below(all.len())], &all[rng.below(all.len())]);
                        let _ = s.stage(&g, edge(a, b));
                    }
                }
                for r in g.regions().iter().filter(|r| r.open) {
                    let (from, to) = (&g.node(r.from).id, &g.node(r.to).id);
                    let (full, _) = s.region(&g, from, to).unwrap();
                    // Touched: a new edge inside the region or on its
                    // boundary (`to -> from`, which leaves the region
                    // unfilled, does not count).
                    let ends: HashSet<&str> = full
                        .nodes
                        .iter()
                        .map(|n| n.id.as_str())
                        .chain([from.as_str(), to.as_str()])
                        .collect();
                    let touched = s.new_edges(&g).any(|(a, b)| {
                        ends.contains(a) && ends.contains(b) && !(a == to && b == from)
                    });
                    let indexed = s.touched_region(&g, r);
                    assert_eq!(
                        indexed.is_some(),
                        touched,
                        "round {round} step {step}: touched"
                    );
                    if let Some(indexed) = indexed {
                        assert_eq!(canon(&indexed), canon(&full), "round {round} step {step}");
                    }
                }
                g.commit(s.mutations()).unwrap();
                // Now and then a region's `to` starts (the index closes)
                // and goes back to pending (it opens again, rebuilt).
                if rng.below(8) == 0 {
                    let i = 6 + rng.below(6);
                    g.set_state(i, NodeState::Running);
                    g.set_state(i, NodeState::Pending);
                }
                for r in g.regions().iter().filter(|r| r.open) {
                    let (from, to) = (&g.node(r.from).id, &g.node(r.to).id);
                    let full = crate::promise::committed_region(&g, from, to).unwrap();
                    assert_eq!(
                        canon(&Staging::indexed_region(&g, r)),
                        canon(&full),
                        "round {round} step {step}: committed"
                    );
                }
            }
        }
    }

    #[test]
    fn an_edge_into_a_waiting_end_moves_it_last_without_searching_back() {
        let mut g = Graph::new();
        g.commit(&[node("A"), node("B")]).unwrap();
        g.commit(&[node("M"), edge("A", "M"), edge("M", "B")])
            .unwrap();
        let (a, b, m) = (0, 1, 2);
        assert!(g.topo_order(a) < g.topo_order(m));
        assert!(g.topo_order(m) < g.topo_order(b));
        let mut s = Staging::default();
        s.stage(&g, node("N")).unwrap();
        s.stage(&g, edge("N", "A")).unwrap();
        assert_ordered(&g, &s);
        let err = s.stage(&g, edge("B", "N")).unwrap_err();
        assert!(
            err.reason.contains("`N` -> `A` -> `M` -> `B` -> `N`"),
            "{err}"
        );
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
        let batch: Vec<Mutation> = batch.into_iter().filter(|m| *m != edge("d", "b")).collect();
        let valid = base.validate(batch).unwrap();
        let (mut by_ref, mut owned) = (base.clone(), base);
        let a = by_ref.apply_unchecked(&valid);
        let b = owned.apply_owned(valid);
        assert_eq!(a.touched, b.touched);
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
