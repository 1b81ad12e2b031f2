//! The outlook: the picture's model of a run at one moment, the current
//! graph plus every future the promises still allow (SPEC §6).
//!
//! [`outlook`] is a pure function of a [`RunState`]; [`crate::picture::render`]
//! turns its result into SVG (layout-rs) or DOT, and it serialises as JSON.

mod count;
mod future;
mod sketch;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::RunState;
use crate::model::{Attrs, NodeState, RunStatus};
use crate::promise::shape::Shape;
use crate::promise::{self, Promise, RegionState};

pub(crate) use count::count_by_state;
pub(crate) use future::growth;
pub(crate) use sketch::Sketch;
pub use sketch::{MAX_SKETCH_NODES, OR_LABEL};

use count::{counted, thousands};
use future::{edge_allowed, may_link_from, reaches};

/// What a picture node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PicKind {
    /// A node of the graph.
    Node,
    /// Copies of one `repeat` region collapsed into one stacked node.
    Stack,
    /// An unfilled `shape` region: dashed, labelled with the shape.
    Region,
    /// A node whose task may still add nodes: a dashed `★` successor.
    Growth,
    /// A rule that has not fired: dashed, labelled with its predicate,
    /// wired from what it waits for.
    Rule,
}

/// A node of the picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PicNode {
    /// Unique id in the picture (a graph node's id for [`PicKind::Node`]).
    pub id: String,
    /// What it stands for.
    pub kind: PicKind,
    /// The text drawn.
    pub label: String,
    /// The state, for graph nodes and stacks (a stack's most urgent one).
    pub state: Option<NodeState>,
    /// For stacks: how many nodes in each state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub states: BTreeMap<String, usize>,
    /// Cosmetic attributes of the graph node (`color`, `shape`, `tooltip`…).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attrs: Attrs,
    /// Drawn in red: this node's task broke a promise.
    pub violated: bool,
}

/// An edge of the picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PicEdge {
    /// Source picture node id.
    pub from: String,
    /// Target picture node id.
    pub to: String,
    /// Dashed: a possible future edge (to or from a wildcard, or one that
    /// `only_edges` still allows).
    pub dashed: bool,
    /// Cosmetic attributes (`label`, `color`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attrs: Attrs,
}

/// The picture's model of a run at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outlook {
    /// The run id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// The run's status at that moment.
    pub status: RunStatus,
    /// The event the picture is at.
    pub event: u64,
    /// Picture nodes: graph nodes in insertion order, then wildcards.
    pub nodes: Vec<PicNode>,
    /// Picture edges.
    pub edges: Vec<PicEdge>,
    /// One line per violation, for the caption.
    pub violations: Vec<String>,
}

/// How to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Draw every copy of a map instead of one stacked node.
    pub expand: bool,
    /// Collapse a map's copies when there are more than this many.
    pub collapse_over: usize,
    /// When more graph nodes than this are left to draw after collapsing
    /// maps, the picture is one node that counts them by state (and the
    /// caption of broken promises) instead: what the live picture does
    /// beyond [`LIVE_MAX_NODES`], where a drawing would be megabytes of SVG
    /// nobody can read, and would cost the run more than its tasks.
    /// Unlimited by default (`orch export --format svg` draws everything).
    ///
    /// ```
    /// use orch::picture::outlook;
    /// use orch::{Mutation, RunState, Task};
    /// let mut state = RunState::new("r");
    /// let nodes: Vec<Mutation> = (0..5)
    ///     .map(|i| Mutation::add_node(format!("n{i}"), Task::python("t.py")))
    ///     .collect();
    /// state.graph.commit(&nodes).unwrap();
    /// let opts = outlook::Options { max_nodes: 4, ..Default::default() };
    /// let o = outlook::outlook(&state, opts);
    /// assert_eq!(o.nodes.len(), 1);
    /// assert!(o.nodes[0].label.starts_with("5 nodes (5 pending)"), "{}", o.nodes[0].label);
    /// ```
    pub max_nodes: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            expand: false,
            collapse_over: 8,
            max_nodes: usize::MAX,
        }
    }
}

/// The most graph nodes the live picture draws one by one
/// ([`Options::max_nodes`]): about a second of layout on 2 cores
/// (`benches/README.md`, render).
pub const LIVE_MAX_NODES: usize = 2_000;

/// A collapsed loop step: its picture id and its iterations' nodes.
type LoopStepNodes = (String, Vec<usize>);

/// The id prefix of picture nodes that are not graph nodes.
pub const WILDCARD_PREFIX: &str = "~";

/// The picture of a run at the moment `state` was folded to.
///
/// ```
/// use orch::picture::outlook;
/// use orch::RunState;
/// let state = RunState::new("r");
/// let o = outlook::outlook(&state, outlook::Options::default());
/// assert!(o.nodes.is_empty());
/// ```
pub fn outlook(state: &RunState, opts: Options) -> Outlook {
    let g = &state.graph;
    let violated: HashSet<&str> = state
        .violations
        .iter()
        .filter_map(|v| v.node.as_deref())
        .collect();
    let mut o = Outlook {
        run: state.run.clone(),
        workflow: state.workflow.clone(),
        status: state.status,
        event: state.last_seq,
        nodes: Vec::new(),
        edges: Vec::new(),
        violations: state
            .violations
            .iter()
            .map(|v| {
                format!(
                    "promise `{}` broken by {}: {}",
                    v.promise_text, v.mutation, v.message
                )
            })
            .collect(),
    };

    // Map copies to collapse: region nodes wired exactly from -> n -> to,
    // grouped by task name.
    let mut stacked: HashMap<usize, String> = HashMap::new();
    // (picture id, task name, from, to, members)
    let mut stacks: Vec<(String, String, &str, &str, Vec<usize>)> = Vec::new();
    if !opts.expand {
        for (k, p) in g.promises().iter().enumerate() {
            let Promise::Shape {
                from,
                to,
                shape: Shape::Repeat(..),
            } = p
            else {
                continue;
            };
            let (Some(f), Some(t)) = (g.position(from), g.position(to)) else {
                continue;
            };
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for s in g.successors(f) {
                let preds: Vec<usize> = g.predecessors(s).collect();
                let succs: Vec<usize> = g.successors(s).collect();
                if preds == [f] && succs == [t] && !stacked.contains_key(&s) {
                    groups
                        .entry(g.node(s).task.name.clone())
                        .or_default()
                        .push(s);
                }
            }
            for (task, members) in groups {
                if members.len() > opts.collapse_over {
                    let id = format!("{WILDCARD_PREFIX}stack{k}:{task}");
                    for &m in &members {
                        stacked.insert(m, id.clone());
                    }
                    stacks.push((id, task, from, to, members));
                }
            }
        }
    }

    // Loops (SPEC §10): collapsed, every step's iterations are one node
    // and the back edge from the last step to the first is labelled with
    // the iterations done and the bound; expanded, every iteration is
    // drawn. (loop position, picture id per step, members per step)
    let mut looped: HashMap<usize, String> = HashMap::new();
    let mut loops: Vec<(usize, Vec<LoopStepNodes>)> = Vec::new();
    for (k, l) in g.loops().iter().enumerate() {
        let done = crate::loops::iterations(g, l);
        if opts.expand || done == 0 {
            continue;
        }
        let mut steps = Vec::new();
        for s in &l.body {
            let id = format!("{WILDCARD_PREFIX}loop:{}:{}", l.id, s.id);
            let members: Vec<usize> = (1..=done).filter_map(|j| g.position(&s.node(j))).collect();
            for &m in &members {
                looped.insert(m, id.clone());
            }
            steps.push((id, members));
        }
        loops.push((k, steps));
    }

    if g.len() - stacked.len() - looped.len() + loops.len() > opts.max_nodes {
        let label = format!("{} nodes", thousands(g.len()));
        let mut all = counted(
            g,
            0..g.len(),
            format!("{WILDCARD_PREFIX}all"),
            &label,
            &violated,
        );
        all.label.push_str(&format!(
            ": too many to draw one by one; `orch export {} --format svg` draws every one",
            state.run
        ));
        o.nodes.push(all);
        return o;
    }

    let pic_id = |i: usize| -> String {
        stacked
            .get(&i)
            .or_else(|| looped.get(&i))
            .cloned()
            .unwrap_or_else(|| g.node(i).id.clone())
    };

    for (i, n) in g.nodes().iter().enumerate() {
        if stacked.contains_key(&i) || looped.contains_key(&i) {
            continue;
        }
        let label = n
            .attrs
            .get("label")
            .and_then(|l| l.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| n.id.clone());
        o.nodes.push(PicNode {
            id: n.id.clone(),
            kind: PicKind::Node,
            label,
            state: Some(n.state),
            states: BTreeMap::new(),
            attrs: n.attrs.clone(),
            violated: violated.contains(n.id.as_str()),
        });
    }
    for (id, task, from, to, members) in &stacks {
        o.nodes.push(counted(
            g,
            members.iter().copied(),
            id.clone(),
            &format!("{task} ×{}", thousands(members.len())),
            &violated,
        ));
        for (a, b) in [(*from, id.as_str()), (id.as_str(), *to)] {
            o.edges.push(PicEdge {
                from: a.to_string(),
                to: b.to_string(),
                dashed: false,
                attrs: Attrs::new(),
            });
        }
    }
    for (k, steps) in &loops {
        let l = &g.loops()[*k];
        let done = crate::loops::iterations(g, l);
        for (s, (id, members)) in l.body.iter().zip(steps) {
            let mut node = counted(g, members.iter().copied(), id.clone(), &s.id, &violated);
            // The latest iteration's state is the step's.
            node.state = members.last().map(|&m| g.node(m).state);
            o.nodes.push(node);
        }
        let (first, last) = (&steps[0].0, &steps[steps.len() - 1].0);
        let mut attrs = Attrs::new();
        attrs.insert("label".into(), format!("{done}/{}", l.max).into());
        o.edges.push(PicEdge {
            from: last.clone(),
            to: first.clone(),
            dashed: false,
            attrs,
        });
    }
    let mut drawn: HashSet<(String, String)> = HashSet::new();
    for e in g.edges() {
        if stacked.contains_key(&e.from) || stacked.contains_key(&e.to) {
            continue;
        }
        if looped.contains_key(&e.from) || looped.contains_key(&e.to) {
            // Collapsed loop: edges between iterations are the back edge;
            // the others are drawn once.
            let (a, b) = (pic_id(e.from), pic_id(e.to));
            let between = looped.contains_key(&e.from) && looped.contains_key(&e.to) && {
                let (na, nb) = (&g.node(e.from).id, &g.node(e.to).id);
                match (
                    crate::loops::iteration_of(g, na),
                    crate::loops::iteration_of(g, nb),
                ) {
                    (Some((la, _, ka)), Some((lb, _, kb))) => la.id == lb.id && ka != kb,
                    _ => false,
                }
            };
            if !between && drawn.insert((a.clone(), b.clone())) {
                o.edges.push(PicEdge {
                    from: a,
                    to: b,
                    dashed: false,
                    attrs: Attrs::new(),
                });
            }
            continue;
        }
        o.edges.push(PicEdge {
            from: pic_id(e.from),
            to: pic_id(e.to),
            dashed: false,
            attrs: e.attrs.clone(),
        });
    }

    // A loop that has not exited: a dashed edge from its latest iteration
    // to `to`, labelled with the exit condition (its region is drawn by
    // the loop, not as a wildcard).
    let mut loop_regions: HashSet<(&str, &str)> = HashSet::new();
    for l in g.loops() {
        loop_regions.insert((l.from.as_str(), l.to.as_str()));
        let done = crate::loops::iterations(g, l);
        let (Some(last), Some(to)) = (
            l.last().and_then(|s| g.position(&s.node(done))),
            g.position(&l.to),
        ) else {
            continue;
        };
        if g.has_edge(last, to) {
            continue;
        }
        let mut attrs = Attrs::new();
        attrs.insert("label".into(), format!("until {}", l.until).into());
        o.edges.push(PicEdge {
            from: pic_id(last),
            to: l.to.clone(),
            dashed: true,
            attrs,
        });
    }

    // Unfilled shape regions: a dashed wildcard between from and to.
    for (k, p) in g.promises().iter().enumerate() {
        let Promise::Shape { from, to, shape } = p else {
            continue;
        };
        if loop_regions.contains(&(from.as_str(), to.as_str())) && matches!(shape, Shape::Chain(..))
        {
            continue;
        }
        let Some(region) = promise::committed_region(g, from, to) else {
            continue;
        };
        if let RegionState::Unfilled = promise::region_state(&region, shape) {
            let s = Sketch::of(shape, &format!("{WILDCARD_PREFIX}region{k}"));
            let mut dashed = |a: &str, b: &str| {
                o.edges.push(PicEdge {
                    from: a.to_string(),
                    to: b.to_string(),
                    dashed: true,
                    attrs: Attrs::new(),
                })
            };
            for src in &s.sources {
                dashed(from, src);
            }
            for e in &s.edges {
                dashed(&e.0, &e.1);
            }
            for sink in &s.sinks {
                dashed(sink, to);
            }
            o.nodes.extend(s.nodes);
        }
    }

    // Nodes that may still grow the graph: a dashed ★ successor. Once the
    // run is over, nothing grows.
    if !state.status.is_terminal() {
        let mut stack_grows: HashSet<String> = HashSet::new();
        for i in 0..g.len() {
            let n = g.node(i);
            if n.state.is_terminal() {
                continue;
            }
            let Some(narrowed) = growth(g, i) else {
                continue;
            };
            let owner = pic_id(i);
            if stacked.contains_key(&i) && !stack_grows.insert(owner.clone()) {
                continue;
            }
            let id = format!("{WILDCARD_PREFIX}grow:{owner}");
            let label = if narrowed.is_empty() {
                "★".to_string()
            } else {
                format!("★ {}", narrowed.join(" ∩ "))
            };
            o.nodes.push(PicNode {
                id: id.clone(),
                kind: PicKind::Growth,
                label,
                state: None,
                states: BTreeMap::new(),
                attrs: Attrs::new(),
                violated: false,
            });
            if may_link_from(g, i) {
                o.edges.push(PicEdge {
                    from: owner,
                    to: id,
                    dashed: true,
                    attrs: Attrs::new(),
                });
            }
        }
    }

    // Rules that have not fired: a dashed node with the predicate, wired
    // from what it waits for (SPEC §9).
    if !state.status.is_terminal() {
        let rule_id = |k: usize| format!("{WILDCARD_PREFIX}rule:{}", g.rules()[k].id);
        for (k, r) in g.rules().iter().enumerate() {
            if g.rule_fired(k) {
                continue;
            }
            let id = rule_id(k);
            o.nodes.push(PicNode {
                id: id.clone(),
                kind: PicKind::Rule,
                label: format!("rule {}: {}", r.id, r.when),
                state: None,
                states: BTreeMap::new(),
                attrs: Attrs::new(),
                violated: false,
            });
            let mut from_seen = HashSet::new();
            for b in crate::rule::waits_for(g, k) {
                let from = match b {
                    crate::rule::Blocker::Node(i) => pic_id(i),
                    crate::rule::Blocker::Rule(j) => rule_id(j),
                };
                if from_seen.insert(from.clone()) {
                    o.edges.push(PicEdge {
                        from,
                        to: id.clone(),
                        dashed: true,
                        attrs: Attrs::new(),
                    });
                }
            }
        }
    }

    // only_edges with literal ends: the finitely many edges still
    // possible, dashed.
    if !state.status.is_terminal() {
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        for p in g.promises() {
            let Promise::OnlyEdges { from, to } = p else {
                continue;
            };
            let literal = |s: &str| !s.contains(['*', '?']);
            if !literal(from.as_str()) || !literal(to.as_str()) {
                continue;
            }
            for u in 0..g.len() {
                let nu = g.node(u);
                if !from.matches(&nu.id, &nu.task.name) {
                    continue;
                }
                for v in 0..g.len() {
                    let nv = g.node(v);
                    if u == v
                        || !to.matches(&nv.id, &nv.task.name)
                        || !nv.state.not_started()
                        || g.has_edge(u, v)
                        || !seen.insert((u, v))
                        || reaches(g, v, u)
                        || !edge_allowed(g, u, v)
                    {
                        continue;
                    }
                    o.edges.push(PicEdge {
                        from: pic_id(u),
                        to: pic_id(v),
                        dashed: true,
                        attrs: Attrs::new(),
                    });
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mutation, Task};

    fn stars(state: &RunState) -> Vec<String> {
        outlook(state, Options::default())
            .nodes
            .into_iter()
            .filter(|n| n.kind == PicKind::Growth)
            .map(|n| n.id)
            .collect()
    }

    fn run(mutations: &[Mutation]) -> RunState {
        let mut state = RunState::new("r");
        state.status = RunStatus::Running;
        state.graph.commit(mutations).unwrap();
        state
    }

    #[test]
    fn a_star_only_where_growth_is_possible() {
        // An input node adds nothing; a task may grow until it ends.
        let mut state = run(&[
            Mutation::add_node("ask", Task::input()),
            Mutation::add_node("work", Task::python("w.py")),
            Mutation::add_node("done", Task::python("d.py")),
            Mutation::add_edge("ask", "work"),
            Mutation::add_edge("work", "done"),
        ]);
        assert_eq!(stars(&state), ["~grow:work", "~grow:done"]);
        let done = state.graph.position("done").unwrap();
        state.graph.set_state(done, NodeState::Succeeded);
        assert_eq!(
            stars(&state),
            ["~grow:work"],
            "a finished task adds nothing"
        );
        // A run that is over grows no more.
        state.status = RunStatus::Cancelled;
        assert!(stars(&state).is_empty());
        // `static` and `no_new_nodes` forbid it.
        let state = run(&[
            Mutation::add_node("a", Task::python("a.py")),
            Mutation::AddPromise {
                promise: Promise::Static {},
            },
        ]);
        assert!(stars(&state).is_empty());
        let state = run(&[
            Mutation::add_node("a", Task::python("a.py")),
            Mutation::add_node("b", Task::python("b.py")),
            Mutation::AddPromise {
                promise: Promise::NoNewNodes {
                    by: Some("a".into()),
                },
            },
        ]);
        assert_eq!(stars(&state), ["~grow:b"]);
    }

    #[test]
    fn a_regions_from_keeps_its_star_and_no_star_is_a_wildcards_own() {
        // `choose` may add nodes outside the region too (the shape does
        // not forbid it), so its star stays beside the sketch; wildcards
        // themselves never get one.
        let state = run(&[
            Mutation::add_node("choose", Task::python("c.py")),
            Mutation::add_node("end", Task::input()),
            Mutation::AddPromise {
                promise: Promise::Shape {
                    from: "choose".into(),
                    to: "end".into(),
                    shape: "(A → B) | C".parse().unwrap(),
                },
            },
        ]);
        let o = outlook(&state, Options::default());
        assert_eq!(stars(&state), ["~grow:choose"]);
        let regions: Vec<&str> = o
            .nodes
            .iter()
            .filter(|n| n.kind == PicKind::Region)
            .map(|n| n.label.as_str())
            .collect();
        assert_eq!(regions, ["or", "A", "B", "C"]);
        assert!(o
            .edges
            .iter()
            .all(|e| !e.to.starts_with("~grow:") || e.from == "choose"));
        // `only_nodes` narrows the star.
        let state = run(&[
            Mutation::add_node("a", Task::python("a.py")),
            Mutation::AddPromise {
                promise: Promise::OnlyNodes {
                    pattern: "task:M".into(),
                },
            },
        ]);
        let o = outlook(&state, Options::default());
        let star = o.nodes.iter().find(|n| n.kind == PicKind::Growth).unwrap();
        assert_eq!(star.label, "★ task:M");
    }
}
