//! [`Staging`]: the mutations of one batch, validated one by one against
//! the committed graph plus the batch's earlier mutations, either taken
//! (a batch a task sends) or borrowed where they are (a registration:
//! [`Graph::stage_borrowed`], never copied).

use std::collections::HashSet;

use petgraph::graph::NodeIndex;
use petgraph::Direction;
use serde_json::Value;

use super::{reorder, FastMap, FastSet, Graph, IdIndex, RegionIndex};
use crate::error::StructuralError;
use crate::limits::{check_len, check_object, check_value, MAX_NAME_BYTES};
use crate::limits::{MAX_LOOPS, MAX_RULES};
use crate::model::{output_refs, Attrs, Mutation, Task};
use crate::promise::shape::{Region, RegionNode};
use crate::promise::Promise;

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

/// The mutations of one batch, validated one by one as they arrive: a
/// [`Staged`] that owns them.
///
/// ```
/// use orch::{graph::{Graph, Staging}, Mutation, Task};
/// let g = Graph::new();
/// let mut batch = Staging::default();
/// batch.stage(&g, Mutation::add_node("a", Task::python("a.py"))).unwrap();
/// let err = batch.stage(&g, Mutation::add_edge("a", "a")).unwrap_err();
/// assert!(err.to_string().contains("cycle"));
/// ```
pub type Staging = Staged<'static>;

/// The mutations of one batch, validated one by one: owned ([`Staging`],
/// which takes each mutation it accepts) or, for a batch validated where
/// it is (a registration, see [`Graph::stage_borrowed`]), borrowed for
/// `'m`.
#[derive(Clone, Debug, Default)]
pub struct Staged<'m> {
    mutations: Accepted<'m>,
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

/// Where a batch's accepted mutations are.
#[derive(Clone, Debug)]
enum Accepted<'m> {
    /// Taken, their task names filled in.
    Owned(Vec<Mutation>),
    /// The first `len` of a slice validated in place, as they were given
    /// (an empty task name stands for the node's id).
    Borrowed { all: &'m [Mutation], len: usize },
}

impl Default for Accepted<'_> {
    fn default() -> Self {
        Accepted::Owned(Vec::new())
    }
}

impl Accepted<'_> {
    fn as_slice(&self) -> &[Mutation] {
        match self {
            Accepted::Owned(v) => v,
            Accepted::Borrowed { all, len } => &all[..*len],
        }
    }

    /// The accepted mutations, taken (task names filled in; borrowed ones
    /// copied).
    fn into_vec(self) -> Vec<Mutation> {
        match self {
            Accepted::Owned(v) => v,
            Accepted::Borrowed { all, len } => all[..len]
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    fill_task_name(&mut m);
                    m
                })
                .collect(),
        }
    }
}

/// Fills in the task name of an `add_node` that has none: its id (what
/// staging a mutation does to it).
pub(super) fn fill_task_name(m: &mut Mutation) {
    if let Mutation::AddNode { id, task, .. } = m {
        if task.name.is_empty() {
            task.name = id.clone();
        }
    }
}

impl<'m> Staged<'m> {
    /// An empty batch with room for `n` mutations taken.
    pub(super) fn with_capacity(n: usize) -> Self {
        Staged {
            mutations: Accepted::Owned(Vec::with_capacity(n)),
            ..Staged::default()
        }
    }

    /// An empty batch that will validate `all` in place, in order
    /// ([`Staged::stage_next`]).
    pub(super) fn borrowing(all: &'m [Mutation]) -> Self {
        Staged {
            mutations: Accepted::Borrowed { all, len: 0 },
            ..Staged::default()
        }
    }

    /// The accepted mutations, in order: task names filled in, except in a
    /// batch validated in place ([`Graph::stage_borrowed`]), whose
    /// mutations are as they were given (an empty task name stands for
    /// the node's id there).
    pub fn mutations(&self) -> &[Mutation] {
        self.mutations.as_slice()
    }

    /// Takes the accepted mutations (task names filled in; a batch
    /// validated in place copies them).
    pub fn into_mutations(self) -> Vec<Mutation> {
        self.mutations.into_vec()
    }

    /// True when no mutation was accepted.
    pub fn is_empty(&self) -> bool {
        self.mutations().is_empty()
    }

    /// The accepted mutations, taken: a batch validated in place copies
    /// what it accepted so far first.
    fn owned(&mut self) -> &mut Vec<Mutation> {
        if let Accepted::Borrowed { .. } = self.mutations {
            let copy = std::mem::take(&mut self.mutations).into_vec();
            self.mutations = Accepted::Owned(copy);
        }
        match &mut self.mutations {
            Accepted::Owned(v) => v,
            Accepted::Borrowed { .. } => unreachable!("copied above"),
        }
    }

    fn resolve(&self, g: &Graph, id: &str) -> Option<Ref> {
        g.position(id).map(Ref::Old).or_else(|| {
            self.new_ids
                .get(id, |k| self.name(g, Ref::New(k)))
                .map(Ref::New)
        })
    }

    /// The id and task of this batch's `k`th new node.
    fn added(&self, k: usize) -> (&str, &Task) {
        match &self.mutations()[self.new_nodes[k]] {
            Mutation::AddNode { id, task, .. } => (id, task),
            _ => unreachable!("new nodes point at their add_node"),
        }
    }

    fn name<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a str {
        match r {
            Ref::Old(i) => &g.node(i).id,
            Ref::New(k) => self.added(k).0,
        }
    }

    fn task<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a Task {
        match r {
            Ref::Old(i) => &g.node(i).task,
            Ref::New(k) => self.added(k).1,
        }
    }

    /// The task name of a node: its task's, or its id when that is empty
    /// (a mutation of a batch validated in place, not filled in).
    fn task_name<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a str {
        match self.task(g, r).name.as_str() {
            "" => self.name(g, r),
            name => name,
        }
    }

    /// The task of a node of the graph or of this batch.
    pub fn task_of<'a>(&'a self, g: &'a Graph, id: &str) -> Option<&'a Task> {
        self.resolve(g, id).map(|r| self.task(g, r))
    }

    /// The (id, task name) of a node of the graph or of this batch.
    pub fn lookup<'a>(&'a self, g: &'a Graph, id: &str) -> Option<(&'a str, &'a str)> {
        self.resolve(g, id)
            .map(|r| (self.name(g, r), self.task_name(g, r)))
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

    /// The neighbours of `r` in `dir` (see [`Staged::for_neighbours`]).
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

    /// A path `from ~> to` in the committed graph plus this batch, if any:
    /// the full search the incremental order replaced, kept to test it.
    #[cfg(test)]
    fn path(&self, g: &Graph, from: Ref, to: Ref) -> Option<Vec<Ref>> {
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

    /// Validates one mutation against the committed graph plus this
    /// batch's earlier mutations and, if it keeps every structural rule,
    /// adds it to the batch (its task name filled in). A batch validated
    /// in place takes a copy of what it accepted so far first.
    pub fn stage(&mut self, g: &Graph, mut m: Mutation) -> Result<(), StructuralError> {
        self.admit(g, &m)?;
        fill_task_name(&mut m);
        self.owned().push(m);
        Ok(())
    }

    /// Validates the next mutation of a batch validated in place and, if
    /// it keeps every structural rule, accepts it where it is. False when
    /// every mutation was accepted already.
    pub(super) fn stage_next(&mut self, g: &Graph) -> Result<bool, StructuralError> {
        let Accepted::Borrowed { all, len } = self.mutations else {
            return Ok(false);
        };
        let Some(m) = all.get(len) else {
            return Ok(false);
        };
        self.admit(g, m)?;
        self.mutations = Accepted::Borrowed { all, len: len + 1 };
        Ok(true)
    }

    /// Checks `m` against the graph plus the batch and records what it
    /// adds to the batch's indices; the caller then accepts it (as the
    /// next of the batch's mutations).
    fn admit(&mut self, g: &Graph, m: &Mutation) -> Result<(), StructuralError> {
        self.sync_order(g);
        let err = |reason: String| StructuralError {
            mutation: m.describe(),
            reason,
        };
        match m {
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
                self.new_nodes.push(self.mutations().len());
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
    use crate::graph::NodeState;
    use std::collections::HashMap;

    fn node(id: &str) -> Mutation {
        Mutation::add_node(id, Task::python("x.py"))
    }

    fn edge(a: &str, b: &str) -> Mutation {
        Mutation::AddEdge {
            from: a.into(),
            to: b.into(),
            attrs: Attrs::new(),
        }
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
    fn a_batch_validated_in_place_reads_like_one_taken() {
        let mut g = Graph::new();
        g.commit(&[node("a"), node("z")]).unwrap();
        let batch = vec![
            node("b"),
            Mutation::add_node("c", Task::python("x.py").named("C")),
            edge("a", "b"),
            edge("b", "c"),
            edge("c", "z"),
            Mutation::AddPromise {
                promise: Promise::shape("a", "z", "any".parse().unwrap()),
            },
        ];
        let taken = g.stage_all(batch.clone()).unwrap();
        let in_place = g.stage_borrowed(&batch).unwrap();
        assert_eq!(in_place.mutations(), &batch[..], "not copied, as given");
        assert_eq!(taken.mutations()[0], {
            let mut m = batch[0].clone();
            fill_task_name(&mut m);
            m
        });
        for id in ["a", "b", "c", "z", "nope"] {
            assert_eq!(in_place.lookup(&g, id), taken.lookup(&g, id), "{id}");
        }
        assert_eq!(in_place.lookup(&g, "b"), Some(("b", "b")));
        assert_eq!(in_place.lookup(&g, "c"), Some(("c", "C")));
        assert_eq!(
            in_place.new_edges(&g).collect::<Vec<_>>(),
            taken.new_edges(&g).collect::<Vec<_>>()
        );
        let (r1, t1) = in_place.region(&g, "a", "z").unwrap();
        let (r2, t2) = taken.region(&g, "a", "z").unwrap();
        assert_eq!((canon(&r1), t1), (canon(&r2), t2));
        assert_eq!(r1.nodes[0].task, "b", "an empty task name is the id");
        assert_eq!(
            crate::promise::check_batch(&g, &in_place, None),
            crate::promise::check_batch(&g, &taken, None)
        );
        // Staging one more mutation takes a copy of the batch first.
        let (mut in_place, mut taken) = (in_place, taken);
        in_place.stage(&g, node("d")).unwrap();
        taken.stage(&g, node("d")).unwrap();
        assert_eq!(in_place.mutations(), taken.mutations());
        let err = in_place.stage(&g, node("b")).unwrap_err();
        assert!(err.reason.contains("earlier in this batch"), "{err}");
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
}
