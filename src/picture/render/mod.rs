//! Drawing an [`Outlook`]: an SVG picture laid out by the pure-Rust
//! [layout-rs](https://crates.io/crates/layout-rs) crate, or Graphviz DOT
//! text for people who have Graphviz (SPEC §6).
//!
//! Both drawings use the same conventions:
//! - nodes are filled by state (pending light grey, ready light blue,
//!   running amber, waiting lavender, succeeded green, failed salmon,
//!   cancelled dark grey, upstream_failed light salmon, no state white); a node's `color` attribute
//!   overrides the fill and its `shape` attribute (`box`, `circle`,
//!   `ellipse`/`oval`) the shape;
//! - wildcards ([`PicKind::Region`], [`PicKind::Growth`], [`PicKind::Rule`]) are white with a
//!   dashed outline, stacks ([`PicKind::Stack`]) have a thick outline, and a
//!   node whose task broke a promise has a thick red outline;
//! - dashed edges are possible future edges; an edge's `label` and `color`
//!   attributes are drawn (in the SVG the label beside the middle of its
//!   edge);
//! - in the SVG, each node with a state also has the state's icon
//!   ([`STATE_ICONS`]) beside its top right corner, so the picture reads
//!   without colours; a `stack` shape (a `repeat` region's sketch) has a
//!   thick outline; one sans-serif font ([`FONT_FAMILY`]) throughout.
//!
//! The SVG also carries a legend: the title line (workflow, run, status,
//! event), one swatch per state, a dashed "possible future" swatch and, when
//! the outlook has violations, a red caption listing them.

mod document;
mod dot;
mod layout;
mod look;
mod plan;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::model::{Attrs, NodeState};
use crate::picture::outlook::{Outlook, PicKind, PicNode};

pub use dot::dot;

use document::{assemble, xml_escape};
use layout::{plain_layout, run_layout};
use plan::{crossing_work, plan};

/// Above this many picture nodes [`svg`] turns layout-rs's optimiser (rank
/// sinking and edge-crossing reduction) off.
///
/// The optimiser's time grows with the cube of the width of the graph's
/// rows (long edges widen every row they cross), so [`svg`] also turns it
/// off below this count when the rows are wide enough to make it cost more
/// than about a second. In a release build (`cargo bench --bench render`),
/// DAGs whose nodes take their parents uniformly among all earlier nodes
/// take 0.5 s with the optimiser at 150 nodes, 5 s at 300 and 15 s at 500
/// (0.2 s and 1 s without), while 500-node graphs whose edges go from row
/// to row, or stay local, take half a second with it; a 2,000-node layered
/// graph 3.5 s (0.9 s without).
pub const OPTIMISE_MAX_NODES: usize = 500;

/// Above this much [`crossing_work`] the optimiser is off: its time is
/// about 0.35 µs per unit (0.8 s at 2.5 million in a release build).
const OPTIMISE_MAX_WORK: f64 = 2.5e6;

/// The one font of the picture, set on its root `<svg>`: every text
/// inherits it (layout-rs's own serif is taken out of its style).
pub const FONT_FAMILY: &str = "Helvetica, Arial, sans-serif";
/// Font size of node labels, in pixels.
const FONT: usize = 14;
/// Font size of edge labels, in pixels.
const EDGE_FONT: usize = 12;
/// Fill of nodes without a state and of wildcards.
const WHITE: &str = "#ffffff";
/// Outline of nodes whose task broke a promise, and of the caption.
const RED: &str = "#d00000";
/// Dash pattern of wildcard outlines and dashed edges.
const DASH: &str = "6 4";
/// At most this many violation lines in the SVG caption.
const MAX_CAPTION_LINES: usize = 20;

/// The fill colour of each state, in legend order.
const STATE_FILLS: [(NodeState, &str); 8] = [
    (NodeState::Pending, "#dddddd"),
    (NodeState::Ready, "#add8e6"),
    (NodeState::Running, "#ffd54f"),
    (NodeState::Waiting, "#d9ccf5"),
    (NodeState::Succeeded, "#98e698"),
    (NodeState::Failed, "#f4978e"),
    (NodeState::Cancelled, "#9e9e9e"),
    (NodeState::UpstreamFailed, "#fbd3cf"),
];

fn state_fill(state: Option<NodeState>) -> &'static str {
    state
        .and_then(|s| STATE_FILLS.iter().find(|(t, _)| *t == s))
        .map_or(WHITE, |(_, c)| c)
}

fn is_wildcard(kind: PicKind) -> bool {
    matches!(kind, PicKind::Region | PicKind::Growth | PicKind::Rule)
}

fn attr_str<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a str> {
    attrs
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The shape a node is drawn with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NodeShape {
    Box,
    Circle,
    Ellipse,
}

fn node_shape(n: &PicNode) -> NodeShape {
    match attr_str(&n.attrs, "shape")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("box" | "rect" | "rectangle" | "square" | "stack") => NodeShape::Box,
        Some("circle") => NodeShape::Circle,
        Some("ellipse" | "oval") => NodeShape::Ellipse,
        _ if n.kind == PicKind::Growth => NodeShape::Ellipse,
        _ => NodeShape::Box,
    }
}

/// Drawn as a stack (a thick outline): a `repeat` or `chain` region's
/// sketch, or a node whose `shape` attribute says `stack`.
fn is_stack(n: &PicNode) -> bool {
    attr_str(&n.attrs, "shape").is_some_and(|s| s.eq_ignore_ascii_case("stack"))
}

/// The text drawn for a node: its label, or its id when the label is empty.
fn node_text(n: &PicNode) -> &str {
    if n.label.is_empty() {
        &n.id
    } else {
        &n.label
    }
}

/// The icon of each state, as the web view's tables show it: the picture
/// reads in grey-scale and for people who do not tell its colours apart.
pub const STATE_ICONS: [(NodeState, &str); 8] = [
    (NodeState::Pending, "○"),
    (NodeState::Ready, "◎"),
    (NodeState::Running, "▶"),
    (NodeState::Waiting, "◷"),
    (NodeState::Succeeded, "✔"),
    (NodeState::Failed, "✖"),
    (NodeState::Cancelled, "⊘"),
    (NodeState::UpstreamFailed, "✕"),
];

/// The icon of a state.
pub fn state_icon(state: NodeState) -> &'static str {
    STATE_ICONS
        .iter()
        .find(|(s, _)| *s == state)
        .map_or("○", |(_, i)| i)
}

// ---------------------------------------------------------------- SVG ----

/// Draws the outlook as a standalone SVG document (UTF-8 XML): the graph laid
/// out top to bottom, under a legend with the title line, the state colours
/// and any violations.
///
/// The layout is layout-rs's, with its optimiser (fewer crossings, shorter
/// edges) up to [`OPTIMISE_MAX_NODES`] nodes. layout-rs slows down steeply
/// with the number of elements it places (nodes, edge labels, and one
/// invisible element per row a long edge crosses), so on big graphs the
/// longest edges are drawn as direct curves over its layout instead of
/// being routed by it, and a graph that is still too big for it (some 2,000
/// nodes and labelled edges) gets a plain layered layout of its own: an
/// arbitrary 2,000-node DAG takes about a second in a release build.
///
/// Never panics: an outlook without nodes gives a small picture that says
/// "empty graph"; edges naming unknown nodes are skipped; a cycle is drawn
/// with one edge pointing up; should layout-rs panic (the message goes to
/// stderr), the layout is retried without its optimiser, then done the
/// plain way. Nothing is printed to stdout.
///
/// ```
/// use orch::picture::outlook::{Outlook, PicEdge, PicKind, PicNode};
/// use orch::{NodeState, RunStatus};
///
/// let node = |id: &str, kind, state| PicNode {
///     id: id.into(),
///     kind,
///     label: id.into(),
///     state,
///     states: Default::default(),
///     attrs: Default::default(),
///     violated: false,
/// };
/// let o = Outlook {
///     run: "r1".into(),
///     workflow: "demo".into(),
///     status: RunStatus::Running,
///     event: 7,
///     nodes: vec![
///         node("fetch", PicKind::Node, Some(NodeState::Running)),
///         node("★", PicKind::Growth, None),
///     ],
///     edges: vec![PicEdge {
///         from: "fetch".into(),
///         to: "★".into(),
///         dashed: true,
///         attrs: Default::default(),
///     }],
///     violations: vec![],
/// };
/// let svg = orch::picture::render::svg(&o);
/// assert!(svg.starts_with("<?xml") && svg.contains("fetch"));
/// assert!(svg.contains("stroke-dasharray")); // the dashed ★ and its edge
/// ```
pub fn svg(o: &Outlook) -> String {
    svg_inner(o, None)
}

/// How [`svg_within`] drew a picture, from the most to the least
/// detailed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// layout-rs with its optimiser (fewer crossings).
    Optimised,
    /// layout-rs without its optimiser.
    Routed,
    /// The plain layered layout (about linear time).
    Plain,
    /// One node counting the picture's nodes by state.
    Counted,
}

impl Layout {
    /// A word for it: `optimised`, `routed`, `plain`, `counted`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Layout::Optimised => "optimised",
            Layout::Routed => "routed",
            Layout::Plain => "plain",
            Layout::Counted => "counted",
        }
    }
}

/// Estimated nanoseconds of layout-rs per (element count)²: about 0.9 s
/// for 2,000 elements in a release build (see [`LAYOUT_MAX_ELEMENTS`]).
const ROUTED_NS_PER_ELEMENT_SQ: f64 = 225.0;
/// Estimated nanoseconds of the optimiser per unit of [`crossing_work`].
const OPTIMISE_NS_PER_WORK: f64 = 350.0;
/// Estimated nanoseconds of the plain layout and its SVG per node or edge.
const PLAIN_NS_PER_ITEM: f64 = 1_500.0;

/// The most detailed layout whose estimated time fits `budget`: the one
/// [`svg`] would choose (`optimise` says whether it would optimise, `fits`
/// whether layout-rs takes the plan at all) when it fits, else a cheaper
/// one, down to counting the nodes. `elements` and `work` are the plan's
/// ([`Plan::elements`](plan::Plan::elements), [`crossing_work`]), `items` the picture's nodes
/// and edges.
pub(crate) fn choose(
    fits: bool,
    optimise: bool,
    elements: usize,
    work: f64,
    items: usize,
    budget: Duration,
) -> Layout {
    let budget = budget.as_secs_f64() * 1e9;
    let routed = ROUTED_NS_PER_ELEMENT_SQ * (elements as f64).powi(2);
    if fits && optimise && routed + OPTIMISE_NS_PER_WORK * work <= budget {
        Layout::Optimised
    } else if fits && routed <= budget {
        Layout::Routed
    } else if PLAIN_NS_PER_ITEM * items as f64 <= budget {
        Layout::Plain
    } else {
        Layout::Counted
    }
}

/// Draws the outlook like [`svg`], in a layout whose estimated time fits
/// `budget` ([`choose`]): what the live picture does, so that drawing
/// never costs a run more than a share of its time. A picture too big for
/// any layout within the budget is one node counting its nodes by state
/// ([`outlook::count_by_state`](crate::picture::outlook::count_by_state)).
pub(crate) fn svg_within(o: &Outlook, budget: Duration) -> (String, Layout) {
    if o.nodes.is_empty() {
        return (assemble(o, &note_body("empty graph")), Layout::Plain);
    }
    let plan = plan(o, LAYOUT_MAX_ELEMENTS);
    let fits = plan.elements <= LAYOUT_MAX_ELEMENTS;
    let optimise = o.nodes.len() <= OPTIMISE_MAX_NODES;
    // The optimiser's work is counted only where it could be afforded.
    let work = if fits && optimise {
        crossing_work(&plan)
    } else {
        f64::INFINITY
    };
    let optimise = optimise && work <= OPTIMISE_MAX_WORK;
    let items = o.nodes.len() + o.edges.len();
    let layout = choose(fits, optimise, plan.elements, work, items, budget);
    let body = match layout {
        Layout::Optimised | Layout::Routed => {
            let opt = layout == Layout::Optimised;
            let attempts: &[bool] = if opt { &[true, false] } else { &[false] };
            attempts
                .iter()
                .find_map(|&opt| {
                    catch_unwind(AssertUnwindSafe(|| run_layout(o, &plan, opt)))
                        .ok()
                        .flatten()
                })
                .unwrap_or_else(|| plain_layout(o, &plan))
        }
        Layout::Plain => plain_layout(o, &plan),
        Layout::Counted => {
            let counted = crate::picture::outlook::count_by_state(o);
            return (svg(&counted), Layout::Counted);
        }
    };
    (assemble(o, &body), layout)
}

/// Like [`svg`], but with an explicit choice: `optimise` runs layout-rs's
/// optimiser whatever the number of nodes. Its cost grows steeply with the
/// width of the graph's rows: seconds for some graphs of a few hundred
/// nodes.
pub fn svg_with_optimiser(o: &Outlook, optimise: bool) -> String {
    svg_inner(o, Some(optimise))
}

/// [`svg`] with the optimiser forced on or off, or chosen (`None`).
fn svg_inner(o: &Outlook, optimise: Option<bool>) -> String {
    let body = if o.nodes.is_empty() {
        note_body("empty graph")
    } else {
        graph_body(o, optimise, LAYOUT_MAX_ELEMENTS)
    };
    assemble(o, &body)
}

/// The graph part of the picture: SVG content to place at the origin, and
/// its size.
struct Body {
    content: String,
    width: f64,
    height: f64,
}

fn note_body(text: &str) -> Body {
    Body {
        content: format!(
            "<text x=\"10\" y=\"30\" font-size=\"{FONT}\" fill=\"#555555\">{}</text>\n",
            xml_escape(text)
        ),
        width: 200.0,
        height: 50.0,
    }
}

/// Above this many elements (see [`Plan::elements`]) layout-rs gets too
/// slow: several of its passes find an element's row by scanning every row,
/// so its time grows with the square of the element count or worse (about
/// 0.9 s for 2,000 elements, 3 s for 3,000, 7 s for 4,000 in a release
/// build without the optimiser, whatever the graph's shape).
const LAYOUT_MAX_ELEMENTS: usize = 2000;

/// The picture of a non-empty graph, laid out by layout-rs if its plan
/// fits `budget`. `optimise` forces the optimiser on or off; `None` lets
/// [`OPTIMISE_MAX_NODES`] and [`OPTIMISE_MAX_WORK`] decide.
fn graph_body(o: &Outlook, optimise: Option<bool>, budget: usize) -> Body {
    let plan = plan(o, budget);
    if plan.elements <= budget {
        let optimise = optimise.unwrap_or_else(|| {
            o.nodes.len() <= OPTIMISE_MAX_NODES && crossing_work(&plan) <= OPTIMISE_MAX_WORK
        });
        let attempts: &[bool] = if optimise { &[true, false] } else { &[false] };
        for &opt in attempts {
            if let Ok(Some(body)) = catch_unwind(AssertUnwindSafe(|| run_layout(o, &plan, opt))) {
                return body;
            }
        }
    }
    plain_layout(o, &plan)
}
