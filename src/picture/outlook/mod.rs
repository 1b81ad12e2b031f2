//! The outlook: the picture's model of a run at one moment, the current
//! graph plus every future the promises still allow (SPEC §6).
//!
//! [`outlook`] is a pure function of a [`RunState`]; [`crate::picture::render`]
//! turns its result into SVG (layout-rs) or DOT, and it serialises as JSON.

mod collapse;
mod count;
mod future;
mod sketch;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::RunState;
use crate::model::{Attrs, NodeState, RunStatus};

pub(crate) use count::count_by_state;
pub(crate) use future::growth;
pub use sketch::{MAX_SKETCH_NODES, OR_LABEL};

use collapse::{collapsed_nodes, graph_edges, loop_steps, map_stacks};
use count::{counted, thousands};
use future::{growth_stars, loop_exits, possible_edges, unfilled_regions, unfired_rules};

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

    let (stacked, stacks) = map_stacks(g, opts);
    let (looped, loops) = loop_steps(g, opts);

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
    collapsed_nodes(&mut o, g, &stacks, &loops, &violated);
    graph_edges(&mut o, g, &stacked, &looped, &pic_id);

    // What may still come: loops' exits and unfilled regions; once the
    // run is over, no node grows, no rule fires and no edge is added.
    let loop_regions = loop_exits(&mut o, g, &pic_id);
    unfilled_regions(&mut o, g, &loop_regions);
    if !state.status.is_terminal() {
        growth_stars(&mut o, g, &stacked, &pic_id);
        unfired_rules(&mut o, g, &pic_id);
        possible_edges(&mut o, g, &pic_id);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mutation, Task};
    use crate::promise::Promise;

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
