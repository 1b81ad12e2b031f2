//! [`Staging`]: the mutations of one batch, validated one by one against
//! the committed graph plus the batch's earlier mutations, either taken
//! (a batch a task sends) or borrowed where they are (a registration:
//! [`Graph::stage_borrowed`], never copied).

use super::{reorder, FastMap, FastSet, Graph, IdIndex, RegionIndex};
use crate::error::StructuralError;
use crate::model::{Mutation, Task};

mod admit;
mod order;
mod region;
#[cfg(test)]
mod tests;

use order::Adjacency;

/// A node of the graph-plus-batch view: committed, or new in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ref {
    Old(usize),
    New(usize),
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
}
