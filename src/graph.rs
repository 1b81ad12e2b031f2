//! The committed graph of a run and the validation of batches against it.
//!
//! [`Graph`] holds uniform nodes and edges (append-only) plus the promises
//! declared so far. [`Staging`] collects the mutations of one batch,
//! checking each one on arrival against the committed graph plus the
//! batch's earlier mutations; [`Graph::commit`] validates a whole batch once
//! more and applies it, all or nothing.

use std::collections::{HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde_json::Value;

use crate::error::StructuralError;
use crate::model::{output_refs, Attrs, Mutation, NodeState, Task};
use crate::promise::Promise;
use crate::shape::{Region, RegionNode};

/// A node as the runtime holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique id within the run.
    pub id: String,
    /// What runs.
    pub task: Task,
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
    index: HashMap<String, usize>,
    dag: DiGraph<(), usize, u32>,
    edges: Vec<Edge>,
    edge_index: HashMap<(usize, usize), usize>,
    /// Per node: predecessors that have not succeeded yet.
    unmet: Vec<u32>,
    promises: Vec<Promise>,
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

    /// The position of the node with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
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

    /// Validates a whole batch against this graph; returns the mutations
    /// as they will be applied (task names filled in).
    pub fn validate(&self, mutations: Vec<Mutation>) -> Result<Vec<Mutation>, StructuralError> {
        self.stage_all(mutations).map(Staging::into_mutations)
    }

    /// Stages a whole batch against this graph (for promise checks before
    /// it is applied).
    pub fn stage_all(&self, mutations: Vec<Mutation>) -> Result<Staging, StructuralError> {
        let mut staging = Staging::default();
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
            match m {
                Mutation::AddNode {
                    id,
                    task,
                    inputs,
                    attrs,
                } => {
                    let i = self.nodes.len();
                    self.nodes.push(Node {
                        id: id.clone(),
                        task: task.clone(),
                        inputs: inputs.clone(),
                        attrs: attrs.clone(),
                        state: NodeState::Pending,
                    });
                    self.index.insert(id.clone(), i);
                    self.dag.add_node(());
                    self.unmet.push(0);
                    applied.touched.push(i);
                    // Validated batches have well-formed references only.
                    for r in output_refs(inputs).unwrap_or_default() {
                        let from = self.index[&r.node];
                        if !self.has_edge(from, i) {
                            self.push_edge(from, i, Attrs::new());
                        }
                    }
                }
                Mutation::AddEdge { from, to, attrs } => {
                    let (f, t) = (self.index[from], self.index[to]);
                    self.push_edge(f, t, attrs.clone());
                    applied.touched.push(t);
                }
                Mutation::SetAttrs { node, edge, attrs } => {
                    let target = match (node, edge) {
                        (Some(n), _) => &mut self.nodes[self.index[n]].attrs,
                        (None, Some(e)) => {
                            let k = self.edge_index[&(self.index[&e.from], self.index[&e.to])];
                            &mut self.edges[k].attrs
                        }
                        (None, None) => continue,
                    };
                    merge_attrs(target, attrs);
                }
                Mutation::AddPromise { promise } => {
                    // A shape's `to` may now have to wait for its region.
                    if let Promise::Shape { to, .. } = promise {
                        applied.touched.extend(self.position(to));
                    }
                    self.promises.push(promise.clone());
                }
            }
        }
        applied
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
    }

    /// Sets a node's state, keeping the successors' counts of unmet
    /// predecessors. Returns the successors whose last unmet predecessor
    /// this was.
    pub fn set_state(&mut self, i: usize, state: NodeState) -> Vec<usize> {
        let before = self.nodes[i].state;
        self.nodes[i].state = state;
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

/// A node of the graph-plus-batch view: committed, or new in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ref {
    Old(usize),
    New(usize),
}

/// The mutations of one batch, validated one by one as they arrive.
///
/// ```
/// use orch::{graph::{Graph, Staging}, Mutation, Task};
/// let g = Graph::new();
/// let mut batch = Staging::default();
/// batch.stage(&g, Mutation::AddNode { id: "a".into(), task: Task::python("a.py"),
///     inputs: serde_json::Value::Null, attrs: Default::default() }).unwrap();
/// let err = batch.stage(&g, Mutation::AddEdge { from: "a".into(), to: "a".into(),
///     attrs: Default::default() }).unwrap_err();
/// assert!(err.to_string().contains("cycle"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Staging {
    mutations: Vec<Mutation>,
    new_ids: HashMap<String, usize>,
    /// (id, task name) of each new node, by `Ref::New` index.
    new_nodes: Vec<(String, String)>,
    new_succ: HashMap<Ref, Vec<Ref>>,
    new_pred: HashMap<Ref, Vec<Ref>>,
    new_edges: Vec<(Ref, Ref)>,
    new_edge_set: HashSet<(Ref, Ref)>,
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
        g.position(id)
            .map(Ref::Old)
            .or_else(|| self.new_ids.get(id).map(|&k| Ref::New(k)))
    }

    fn name<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a str {
        match r {
            Ref::Old(i) => &g.node(i).id,
            Ref::New(k) => &self.new_nodes[k].0,
        }
    }

    fn task<'a>(&'a self, g: &'a Graph, r: Ref) -> &'a str {
        match r {
            Ref::Old(i) => &g.node(i).task.name,
            Ref::New(k) => &self.new_nodes[k].1,
        }
    }

    /// The (id, task name) of a node of the graph or of this batch.
    pub fn lookup<'a>(&'a self, g: &'a Graph, id: &str) -> Option<(&'a str, &'a str)> {
        self.resolve(g, id)
            .map(|r| (self.name(g, r), self.task(g, r)))
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
        self.new_succ.entry(from).or_default().push(to);
        self.new_pred.entry(to).or_default().push(from);
        self.new_edges.push((from, to));
        self.new_edge_set.insert((from, to));
    }

    fn succs(&self, g: &Graph, r: Ref) -> Vec<Ref> {
        let mut out: Vec<Ref> = match r {
            Ref::Old(i) => g.successors(i).map(Ref::Old).collect(),
            Ref::New(_) => Vec::new(),
        };
        out.extend(self.new_succ.get(&r).into_iter().flatten().copied());
        out
    }

    fn preds(&self, g: &Graph, r: Ref) -> Vec<Ref> {
        let mut out: Vec<Ref> = match r {
            Ref::Old(i) => g.predecessors(i).map(Ref::Old).collect(),
            Ref::New(_) => Vec::new(),
        };
        out.extend(self.new_pred.get(&r).into_iter().flatten().copied());
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
            for p in self.preds(g, v) {
                if p != f && anc.insert(p) {
                    stack.push(p);
                }
            }
        }
        let mut inside: Vec<Ref> = Vec::new();
        let mut seen: HashSet<Ref> = HashSet::new();
        let mut stack = vec![f];
        while let Some(v) = stack.pop() {
            for s in self.succs(g, v) {
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
        let index: HashMap<Ref, usize> = inside.iter().enumerate().map(|(k, &r)| (r, k)).collect();
        let mut region = Region {
            nodes: inside
                .iter()
                .map(|&r| RegionNode {
                    id: self.name(g, r).to_string(),
                    task: self.task(g, r).to_string(),
                })
                .collect(),
            direct: self.has_edge(g, f, t),
            ..Region::default()
        };
        for (k, &r) in inside.iter().enumerate() {
            for s in self.succs(g, r) {
                if let Some(&j) = index.get(&s) {
                    region.edges.push((k, j));
                } else if s == t {
                    region.to_edges.push(k);
                }
            }
            if self.preds(g, r).contains(&f) {
                region.from_edges.push(k);
            }
        }
        let in_or_on = |r: &Ref| *r == f || *r == t || index.contains_key(r);
        let touched = self
            .new_edges
            .iter()
            .any(|(a, b)| in_or_on(a) && in_or_on(b));
        Some((region, touched))
    }

    /// A path `from ~> to` in the committed graph plus this batch, if any.
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
        let what = m.describe();
        let err = |reason: String| StructuralError {
            mutation: what.clone(),
            reason,
        };
        match &mut m {
            Mutation::AddNode {
                id, task, inputs, ..
            } => {
                check_id(id).map_err(&err)?;
                if let Some(r) = self.resolve(g, id) {
                    let existing = match r {
                        Ref::Old(i) => format!("in the graph (state {})", g.node(i).state),
                        Ref::New(_) => "earlier in this batch".to_string(),
                    };
                    return Err(err(format!("node id `{id}` is already used {existing}")));
                }
                if task.name.is_empty() {
                    task.name = id.clone();
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
                let k = self.new_ids.len();
                self.new_ids.insert(id.clone(), k);
                self.new_nodes.push((id.clone(), task.name.clone()));
                for src in sources {
                    self.add_edge(src, Ref::New(k));
                }
            }
            Mutation::AddEdge { from, to, .. } => {
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
                if let Some(path) = self.path(g, t, f) {
                    let mut names: Vec<&str> = path.iter().map(|&r| self.name(g, r)).collect();
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
                self.add_edge(f, t);
            }
            Mutation::SetAttrs { node, edge, .. } => match (&node, &edge) {
                (Some(n), None) => {
                    self.resolve(g, n)
                        .ok_or_else(|| err(format!("unknown node `{n}`")))?;
                }
                (None, Some(e)) => {
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
                if let Promise::Shape { from, to, .. } = promise {
                    for end in [&*from, &*to] {
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
        }
        self.mutations.push(m);
        Ok(())
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("node id is empty".to_string());
    }
    if id.len() > 256 {
        return Err(format!("node id `{}…` is longer than 256 bytes", &id[..32]));
    }
    if let Some(c) = id.chars().find(|c| c.is_control() || *c == '"') {
        return Err(format!("node id {id:?} contains the character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{output, EdgeRef};
    use serde_json::json;

    fn node(id: &str) -> Mutation {
        Mutation::AddNode {
            id: id.into(),
            task: Task::python("x.py"),
            inputs: Value::Null,
            attrs: Attrs::new(),
        }
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
            task: Task::python("d.py"),
            inputs: json!({"x": output("c"), "y": output("c")}),
            attrs: Attrs::new(),
        };
        g.commit(&[with_ref]).unwrap();
        assert!(g.has_edge(2, 3));
        assert_eq!(g.unmet(3), 1);
        let bad = Mutation::AddNode {
            id: "e".into(),
            task: Task::python("e.py"),
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
    fn set_state_frees_successors() {
        let mut g = chain();
        assert_eq!(g.set_state(0, NodeState::Succeeded), vec![1]);
        assert_eq!(g.unmet(1), 0);
    }
}
