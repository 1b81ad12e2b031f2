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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::model::{Attrs, NodeState};
use crate::picture::outlook::{Outlook, PicEdge, PicKind, PicNode};

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
/// ([`Plan::elements`], [`crossing_work`]), `items` the picture's nodes
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

/// One picture edge, by node indices, pointing forward in one topological
/// order of the picture.
#[derive(Clone, Copy, Debug)]
struct OrderedEdge<'a> {
    from: usize,
    to: usize,
    /// The picture edge points the other way (it closes a cycle).
    reversed: bool,
    edge: &'a PicEdge,
}

impl OrderedEdge<'_> {
    fn has_label(&self) -> bool {
        attr_str(&self.edge.attrs, "label").is_some()
    }

    /// How many rows the edge spans at least (labels are drawn beside
    /// edges, not on rows of their own).
    fn weight(&self) -> usize {
        1
    }
}

/// What is handed to layout-rs and what is drawn over its result.
#[derive(Debug)]
struct Plan<'a> {
    /// Edges routed by layout-rs, sorted by the topological order of their
    /// source.
    laid: Vec<OrderedEdge<'a>>,
    /// Long edges drawn afterwards as direct curves.
    direct: Vec<OrderedEdge<'a>>,
    /// Each node's row as layout-rs computes it without its optimiser: the
    /// longest path from a source.
    level: Vec<usize>,
    /// How many elements layout-rs places for the laid edges: nodes,
    /// self-loop connectors, and one invisible connector per row a laid
    /// edge crosses (labels are not handed to it).
    elements: usize,
}

/// Decides which edges layout-rs routes: all of them if that makes at most
/// `budget` elements, else the longest ones go direct, longest first, until
/// the count fits or no edge is left whose removal saves anything. Only
/// edges that do not decide their target's row are taken out, so the rows
/// stay as computed.
fn plan(o: &Outlook, budget: usize) -> Plan<'_> {
    let edges = ordered_edges(o);
    let mut level = vec![0usize; o.nodes.len()];
    // Edges come sorted by the topological order of their source, so each
    // source's level is final when its edges are relaxed.
    for e in edges.iter().filter(|e| e.from != e.to) {
        level[e.to] = level[e.to].max(level[e.from] + e.weight());
    }
    let dummies = |e: &OrderedEdge| {
        if e.from == e.to {
            0
        } else {
            level[e.to] - level[e.from] - e.weight()
        }
    };
    let connectors = |e: &OrderedEdge| usize::from(e.from == e.to);
    let mut elements = o.nodes.len();
    for e in &edges {
        elements += connectors(e) + dummies(e);
    }

    let mut direct = vec![false; edges.len()];
    if elements > budget {
        let mut long: Vec<usize> = (0..edges.len())
            .filter(|&i| dummies(&edges[i]) > 0)
            .collect();
        long.sort_by_key(|&i| std::cmp::Reverse(dummies(&edges[i])));
        for i in long {
            if elements <= budget {
                break;
            }
            elements -= dummies(&edges[i]) + connectors(&edges[i]);
            direct[i] = true;
        }
    }
    let (direct, laid): (Vec<_>, Vec<_>) = edges.into_iter().zip(direct).partition(|(_, d)| *d);
    Plan {
        laid: laid.into_iter().map(|(e, _)| e).collect(),
        direct: direct.into_iter().map(|(e, _)| e).collect(),
        level,
        elements,
    }
}

/// A rough measure of the work of layout-rs's edge-crossing optimiser: it
/// counts crossings between adjacent rows pair by pair, fifty times over,
/// so its time follows the sum over rows of (row width)² × (next row's
/// width), counting the invisible connectors of the laid edges.
fn crossing_work(plan: &Plan) -> f64 {
    let rows = plan.level.iter().max().map_or(0, |m| m + 1);
    let mut width = vec![0.0f64; rows + 1];
    for &l in &plan.level {
        width[l] += 1.0;
    }
    for e in &plan.laid {
        let (a, b) = (plan.level[e.from], plan.level[e.to]);
        if e.from == e.to {
            width[a] += 1.0;
        } else {
            for w in &mut width[a + 1..b] {
                *w += 1.0;
            }
        }
    }
    width.windows(2).map(|w| w[0] * w[0] * w[1]).sum()
}

/// Builds the layout-rs graph, lays it out and renders it, then draws the
/// direct edges.
fn run_layout(o: &Outlook, plan: &Plan, optimise: bool) -> Option<Body> {
    let mut vg = VisualGraph::new(Orientation::TopToBottom);
    // layout-rs re-verifies the whole DAG after every edge when validation
    // is on (quadratic or worse); the graph we hand it is acyclic by
    // construction, so skip that.
    vg.dag.set_validate(false);

    // As layout-rs's own DOT front end does: in a top-to-bottom graph the
    // elements themselves are oriented left to right.
    let dir = Orientation::LeftToRight;
    let handles: Vec<_> = o
        .nodes
        .iter()
        .map(|n| vg.add_node(node_look(n).element(dir)))
        .collect();
    for e in &plan.laid {
        let mut arrow = arrow(e.edge);
        if e.reversed {
            arrow = arrow.reverse();
        }
        vg.add_edge(arrow, handles[e.from], handles[e.to]);
    }

    let mut writer = SVGWriter::new();
    vg.do_it(false, !optimise, false, &mut writer);
    let mut body = split_layout_svg(&writer.finalize())?;
    // One font: layout-rs's style names a serif; the root's is inherited.
    body.content = body.content.replace("font-family: Times, serif;", "");
    for e in plan.laid.iter().filter(|e| e.has_label()) {
        label_beside(&mut body.content, e.edge);
    }
    state_icons(&mut body.content, o, |i| {
        let p = vg.pos(handles[i]);
        (p.center(), p.size(false))
    });

    if !plan.direct.is_empty() {
        body.content.push_str("<g class=\"direct-edges\">\n");
        for e in &plan.direct {
            let at = |i: usize| {
                let p = vg.pos(handles[i]);
                (p.center(), p.size(false))
            };
            direct_edge(&mut body.content, e, at(e.from), at(e.to));
        }
        body.content.push_str("</g>\n");
    }
    Some(body)
}

/// A plain layered layout, for graphs too big for layout-rs: rows as
/// planned, nodes in a row ordered by the mean position of their parents,
/// every edge a direct curve. Time about linear in the graph's size.
fn plain_layout(o: &Outlook, plan: &Plan) -> Body {
    const H_GAP: f64 = 24.0;
    const V_GAP: f64 = 60.0;
    const MARGIN: f64 = 10.0;

    let n = o.nodes.len();
    let looks: Vec<NodeLook> = o.nodes.iter().map(node_look).collect();
    let edges: Vec<&OrderedEdge> = plan.laid.iter().chain(&plan.direct).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in edges.iter().filter(|e| e.from != e.to) {
        parents[e.to].push(e.from);
    }
    let mut rows: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..n {
        rows.entry(plan.level[i]).or_default().push(i);
    }

    let mut center = vec![Point::zero(); n];
    let mut top = MARGIN;
    for mut row in rows.into_values() {
        // Parents are on earlier rows, so already placed.
        let wanted: Vec<Option<f64>> = row
            .iter()
            .map(|&i| {
                let ps = &parents[i];
                (!ps.is_empty())
                    .then(|| ps.iter().map(|&p| center[p].x).sum::<f64>() / ps.len() as f64)
            })
            .collect();
        let mut keyed: Vec<(f64, usize)> = row
            .iter()
            .zip(&wanted)
            .map(|(&i, w)| (w.unwrap_or(f64::INFINITY), i))
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        row = keyed.into_iter().map(|(_, i)| i).collect();

        let total: f64 = row.iter().map(|&i| looks[i].size.x).sum::<f64>()
            + H_GAP * (row.len().saturating_sub(1)) as f64;
        let known: Vec<f64> = wanted.iter().flatten().copied().collect();
        let middle = if known.is_empty() {
            0.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let height = row.iter().map(|&i| looks[i].size.y).fold(0.0, f64::max);
        let mut x = middle - total / 2.0;
        for &i in &row {
            let w = looks[i].size.x;
            center[i] = Point::new(x + w / 2.0, top + height / 2.0);
            x += w + H_GAP;
        }
        top += height + V_GAP;
    }

    let left = (0..n)
        .map(|i| center[i].x - looks[i].size.x / 2.0)
        .fold(f64::INFINITY, f64::min);
    let shift = MARGIN - left;
    for c in &mut center {
        c.x += shift;
    }
    let width = (0..n)
        .map(|i| center[i].x + looks[i].size.x / 2.0)
        .fold(0.0, f64::max)
        + MARGIN;

    let mut content = String::new();
    for e in &edges {
        let at = |i: usize| (center[i], looks[i].size);
        direct_edge(&mut content, e, at(e.from), at(e.to));
    }
    for (look, c) in looks.iter().zip(&center) {
        look.draw(&mut content, *c);
    }
    state_icons(&mut content, o, |i| (center[i], looks[i].size));
    Body {
        content,
        width,
        height: top - V_GAP + MARGIN,
    }
}

/// Draws an edge as a direct curve from the bottom of the upper node to the
/// top of the lower one (`a` and `b` are the centres and sizes of the
/// ordered edge's ends), with its arrowhead and label; a self-loop as a
/// small loop on the node's right.
fn direct_edge(out: &mut String, e: &OrderedEdge, a: (Point, Point), b: (Point, Point)) {
    let pe = e.edge;
    let (p0, c0, c1, p1) = if e.from == e.to {
        let (x, y) = (a.0.x + a.1.x / 2.0, a.0.y);
        (
            Point::new(x, y - 6.0),
            Point::new(x + 40.0, y - 30.0),
            Point::new(x + 40.0, y + 30.0),
            Point::new(x, y + 6.0),
        )
    } else {
        let sign = if b.0.y >= a.0.y { 1.0 } else { -1.0 };
        let p0 = Point::new(a.0.x, a.0.y + sign * a.1.y / 2.0);
        let p1 = Point::new(b.0.x, b.0.y - sign * b.1.y / 2.0);
        let dy = (p1.y - p0.y).abs();
        let bend = (dy / 2.0).max(20.0) * sign;
        // An edge that skips rows bows out to the right, off the column of
        // nodes it would otherwise run through.
        let bow = if dy > 100.0 {
            (dy * 0.3).min(160.0)
        } else {
            0.0
        };
        let c0 = Point::new(p0.x + bow, p0.y + bend);
        let c1 = Point::new(p1.x + bow, p1.y - bend);
        // The path runs from the picture edge's source to its target.
        if e.reversed {
            (p1, c1, c0, p0)
        } else {
            (p0, c0, c1, p1)
        }
    };
    let color = attr_str(&pe.attrs, "color")
        .and_then(parse_color)
        .unwrap_or_else(|| default_edge_color(pe.dashed));
    let _ = writeln!(
        out,
        "<path class=\"edge direct{}\" data-from=\"{}\" data-to=\"{}\" \
         d=\"M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}\" stroke=\"{}\" \
         stroke-width=\"1\"{} fill=\"none\" marker-end=\"url(#orch-arrow)\"/>",
        if pe.dashed { " dashed" } else { "" },
        xml_escape(&pe.from),
        xml_escape(&pe.to),
        p0.x,
        p0.y,
        c0.x,
        c0.y,
        c1.x,
        c1.y,
        p1.x,
        p1.y,
        color.to_web_color(),
        if pe.dashed {
            " stroke-dasharray=\"5,5\""
        } else {
            ""
        },
    );
    if let Some(label) = attr_str(&pe.attrs, "label") {
        // The curve's midpoint.
        let x = (p0.x + 3.0 * c0.x + 3.0 * c1.x + p1.x) / 8.0;
        let y = (p0.y + 3.0 * c0.y + 3.0 * c1.y + p1.y) / 8.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"{EDGE_FONT}\" \
             dominant-baseline=\"middle\">{}</text>",
            x + 4.0,
            xml_escape(label)
        );
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

/// Draws each node's state as an icon beside its top right corner
/// (`at(i)`: node `i`'s centre and size), with a white halo and the
/// state's name as its tooltip.
fn state_icons(out: &mut String, o: &Outlook, at: impl Fn(usize) -> (Point, Point)) {
    out.push_str("<g class=\"state-icons\">\n");
    for (i, n) in o.nodes.iter().enumerate() {
        let Some(state) = n.state else { continue };
        let (c, size) = at(i);
        let (x, y) = match node_shape(n) {
            NodeShape::Box => (c.x + size.x / 2.0 - 2.0, c.y - size.y / 2.0 + 1.0),
            NodeShape::Circle | NodeShape::Ellipse => (c.x + 0.35 * size.x, c.y - 0.35 * size.y),
        };
        let _ = writeln!(
            out,
            "<text class=\"state-icon {state}\" data-id=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" \
             font-size=\"14\" text-anchor=\"middle\" dominant-baseline=\"middle\" \
             fill=\"#1d2329\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\">{}\
             <title>{}</title></text>",
            xml_escape(&n.id),
            state_icon(state),
            state.as_str().replace('_', " ")
        );
    }
    out.push_str("</g>\n");
}

/// Draws an edge's label beside the middle of the path layout-rs routed
/// for it (found by its `data-from` and `data-to`), left-aligned just
/// right of it, with a white halo; nothing when the path is not found.
fn label_beside(content: &mut String, e: &PicEdge) {
    let Some(label) = attr_str(&e.attrs, "label") else {
        return;
    };
    let key = format!(
        "data-from=\"{}\" data-to=\"{}\"",
        xml_escape(&e.from),
        xml_escape(&e.to)
    );
    let Some(at) = content.find(&key) else {
        return;
    };
    let Some(d) = content[at..]
        .find(" d=\"")
        .map(|k| at + k + 4)
        .and_then(|from| {
            content[from..]
                .find('"')
                .map(|len| &content[from..from + len])
        })
    else {
        return;
    };
    // A self-loop (a collapsed loop's back edge) is a small bow beside its
    // node: its label goes above it, not over the node.
    let (x, y) = if e.from == e.to {
        let Some((x, top)) = path_top_left(d) else {
            return;
        };
        (x - 6.0, top - 8.0)
    } else {
        let Some((x, y)) = path_middle(d) else {
            return;
        };
        (x, y)
    };
    let text = format!(
        "<text class=\"label\" x=\"{:.1}\" y=\"{y:.1}\" font-size=\"{EDGE_FONT}\" \
         dominant-baseline=\"middle\" stroke=\"#ffffff\" stroke-width=\"3\" \
         paint-order=\"stroke\">{}</text>\n",
        (x + 6.0).max(2.0),
        xml_escape(label)
    );
    content.push_str(&text);
}

/// The middle point of a path's `d` (`M x y C x y, x y, x y S …`): the
/// coordinate pair in the middle of its list, an end point of one of its
/// curves when the list is odd, else the middle of the two around it.
fn path_middle(d: &str) -> Option<(f64, f64)> {
    let numbers: Vec<f64> = d
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let p: Vec<(f64, f64)> = numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    if p.len() < 4 {
        return p.first().copied();
    }
    // The curves' end points: the start, the first curve's end, then
    // every second point.
    let ends: Vec<usize> = std::iter::once(0).chain((3..p.len()).step_by(2)).collect();
    if ends.len() == 2 {
        // One cubic curve: its point at t = ½.
        let [a, b, c, e] = [p[0], p[1], p[2], p[3]];
        return Some((
            (a.0 + 3.0 * b.0 + 3.0 * c.0 + e.0) / 8.0,
            (a.1 + 3.0 * b.1 + 3.0 * c.1 + e.1) / 8.0,
        ));
    }
    Some(p[ends[ends.len() / 2]])
}

/// The leftmost x and the topmost y of a path's points.
fn path_top_left(d: &str) -> Option<(f64, f64)> {
    let numbers: Vec<f64> = d
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let p: Vec<(f64, f64)> = numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let x = p.iter().map(|p| p.0).reduce(f64::min)?;
    let y = p.iter().map(|p| p.1).reduce(f64::min)?;
    Some((x, y))
}

/// A generous estimate of the width of `text` in a sans-serif font of
/// `size` pixels (bold or not), so that text is never clipped: capitals
/// and wide letters count more, characters of the East Asian scripts a
/// whole em.
fn text_width(text: &str, size: f64, bold: bool) -> f64 {
    let ems: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | ' ' => 0.3,
            'm' | 'w' | 'M' | 'W' | '@' => 0.9,
            c if c.is_ascii_uppercase() || c.is_ascii_digit() => 0.7,
            c if c.is_ascii() => 0.58,
            c if ('\u{2e80}'..='\u{ffdc}').contains(&c) => 1.0,
            _ => 0.8,
        })
        .sum();
    ems * size * if bold { 1.08 } else { 1.0 }
}

/// The picture's edges as node indices, each pointing forward in one
/// topological order of the picture (an edge closing a cycle is reversed),
/// sorted by that order of their source. Edges naming unknown nodes are
/// dropped.
///
/// Handing edges to layout-rs in this order matters: it checks each new
/// edge for a cycle with an unmemoised depth-first search, exponential on
/// dense DAGs, which this order makes immediate (the target of a new edge
/// has no successors yet).
fn ordered_edges(o: &Outlook) -> Vec<OrderedEdge<'_>> {
    let n = o.nodes.len();
    // Later duplicates of an id win, as in a map.
    let index: HashMap<&str, usize> = o
        .nodes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let resolved: Vec<(usize, usize, &PicEdge)> = o
        .edges
        .iter()
        .filter_map(|e| Some((*index.get(e.from.as_str())?, *index.get(e.to.as_str())?, e)))
        .collect();

    // Kahn's algorithm, smallest index first among the ready nodes so the
    // order stays close to the picture's; nodes left on cycles follow in
    // index order.
    let mut indegree = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(f, t, _) in &resolved {
        if f != t {
            indegree[t] += 1;
            succ[f].push(t);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut pos = vec![usize::MAX; n];
    let mut next = 0;
    while let Some(Reverse(i)) = ready.pop() {
        pos[i] = next;
        next += 1;
        for &t in &succ[i] {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    for p in pos.iter_mut().filter(|p| **p == usize::MAX) {
        *p = next;
        next += 1;
    }

    let mut out: Vec<OrderedEdge> = resolved
        .into_iter()
        .map(|(f, t, edge)| {
            let reversed = pos[f] > pos[t];
            let (from, to) = if reversed { (t, f) } else { (f, t) };
            OrderedEdge {
                from,
                to,
                reversed,
                edge,
            }
        })
        .collect();
    out.sort_by_key(|e| pos[e.from]);
    out
}

/// How a node is drawn.
struct NodeLook {
    /// The text, with the characters XML forbids replaced (not escaped:
    /// layout-rs escapes).
    text: String,
    shape: NodeShape,
    fill: Color,
    stroke: Color,
    stroke_width: usize,
    rounded: usize,
    size: Point,
    /// Attributes of the node's `<g>`: class, id, dash pattern.
    props: String,
}

fn node_look(n: &PicNode) -> NodeLook {
    let text = xml_safe(node_text(n));
    let shape = node_shape(n);
    let wildcard = is_wildcard(n.kind);
    let fill = if wildcard {
        WHITE
    } else {
        attr_str(&n.attrs, "color")
            .filter(|c| parse_color(c).is_some())
            .unwrap_or(state_fill(n.state))
    };
    let (stroke, stroke_width) = if n.violated {
        (RED, 3)
    } else if n.kind == PicKind::Stack || is_stack(n) {
        ("#000000", 3)
    } else {
        ("#000000", 1)
    };
    let mut props = format!(
        "class=\"node {}{}\" data-id=\"{}\"",
        kind_name(n.kind),
        n.state.map(|s| format!(" {s}")).unwrap_or_default(),
        xml_escape(&n.id)
    );
    if wildcard {
        let _ = write!(props, " stroke-dasharray=\"{DASH}\"");
    }
    NodeLook {
        size: node_size(&text, shape),
        text,
        shape,
        fill: parse_color(fill).unwrap_or_else(|| Color::new(0xffff_ffff)),
        stroke: parse_color(stroke).unwrap_or_else(|| Color::new(0x0000_00ff)),
        stroke_width,
        rounded: if shape == NodeShape::Box && !wildcard {
            4
        } else {
            0
        },
        props,
    }
}

impl NodeLook {
    /// The layout-rs element.
    fn element(self, dir: Orientation) -> Element {
        let look = StyleAttr::new(
            self.stroke,
            self.stroke_width,
            Some(self.fill),
            self.rounded,
            FONT,
        );
        let kind = match self.shape {
            NodeShape::Box => ShapeKind::Box(self.text),
            NodeShape::Circle | NodeShape::Ellipse => ShapeKind::Circle(self.text),
        };
        Element::create_with_properties(kind, look, dir, self.size, self.props)
    }

    /// Draws the node centred on `c`, as layout-rs would.
    fn draw(&self, out: &mut String, c: Point) {
        let (w, h) = (self.size.x, self.size.y);
        let paint = format!(
            "fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\"",
            self.fill.to_web_color(),
            self.stroke.to_web_color(),
            self.stroke_width
        );
        let _ = write!(out, "<g {}>", self.props);
        match self.shape {
            NodeShape::Box => {
                let _ = write!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"{}\" {paint}/>",
                    c.x - w / 2.0,
                    c.y - h / 2.0,
                    self.rounded
                );
            }
            NodeShape::Circle | NodeShape::Ellipse => {
                let _ = write!(
                    out,
                    "<ellipse cx=\"{:.1}\" cy=\"{:.1}\" rx=\"{:.1}\" ry=\"{:.1}\" {paint}/>",
                    c.x,
                    c.y,
                    w / 2.0,
                    h / 2.0
                );
            }
        }
        let lines: Vec<&str> = self.text.lines().collect();
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{FONT}\" \
             text-anchor=\"middle\" dominant-baseline=\"middle\">",
            c.x, c.y
        );
        for (k, line) in lines.iter().enumerate() {
            let dy = if k == 0 {
                -0.6 * (lines.len() as f64 - 1.0)
            } else {
                1.2
            };
            let _ = write!(
                out,
                "<tspan x=\"{:.1}\" dy=\"{dy:.1}em\">{}</tspan>",
                c.x,
                xml_escape(line)
            );
        }
        out.push_str("</text></g>\n");
    }
}

fn kind_name(kind: PicKind) -> &'static str {
    match kind {
        PicKind::Node => "task",
        PicKind::Stack => "stack",
        PicKind::Region => "region",
        PicKind::Growth => "growth",
        PicKind::Rule => "rule",
    }
}

/// A node's size from its text: layout-rs's own estimate (one font size per
/// character) makes boxes about twice as wide as their text.
fn node_size(text: &str, shape: NodeShape) -> Point {
    let cols = text
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let rows = text.lines().count().max(1);
    let font = FONT as f64;
    let w = (cols as f64 * font * 0.62 + 24.0).max(40.0);
    let h = rows as f64 * font * 1.25 + 16.0;
    match shape {
        NodeShape::Box => Point::new(w, h),
        NodeShape::Ellipse => Point::new(w * 1.25, h * 1.3),
        NodeShape::Circle => Point::splat((w * 1.15).max(h * 1.3)),
    }
}

/// The layout-rs arrow of a picture edge.
fn arrow(e: &PicEdge) -> Arrow {
    let color = attr_str(&e.attrs, "color")
        .and_then(parse_color)
        .unwrap_or_else(|| default_edge_color(e.dashed));
    // The label is drawn beside the routed edge afterwards
    // ([`label_beside`]): layout-rs would put it on a row of its own, away
    // from the edge.
    let label = String::new();
    let look = StyleAttr::new(color, 1, None, 0, EDGE_FONT);
    let style = if e.dashed {
        LineStyleKind::Dashed
    } else {
        LineStyleKind::Normal
    };
    Arrow::with_properties(
        LineEndKind::None,
        LineEndKind::Arrow,
        style,
        &label,
        &look,
        format!(
            "class=\"edge{}\" data-from=\"{}\" data-to=\"{}\"",
            if e.dashed { " dashed" } else { "" },
            xml_escape(&e.from),
            xml_escape(&e.to)
        ),
        &None,
        &None,
    )
}

fn default_edge_color(dashed: bool) -> Color {
    Color::new(if dashed { 0x5555_55ff } else { 0x0000_00ff })
}

/// A colour: a CSS colour name or `#rgb`, `#rrggbb`, `#rrggbbaa`.
fn parse_color(s: &str) -> Option<Color> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(hex) = s.strip_prefix('#') {
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u32::from_str_radix(hex, 16).ok();
        return match hex.len() {
            3 => {
                let v = v?;
                let (r, g, b) = ((v >> 8) & 0xf, (v >> 4) & 0xf, v & 0xf);
                Some(Color::new(
                    (r * 17) << 24 | (g * 17) << 16 | (b * 17) << 8 | 0xff,
                ))
            }
            6 => Some(Color::new(v? << 8 | 0xff)),
            8 => Some(Color::new(v?)),
            _ => None,
        };
    }
    Color::from_name(&s)
}

/// Splits a layout-rs SVG document into its content and size.
fn split_layout_svg(doc: &str) -> Option<Body> {
    let start = doc.find("<svg")?;
    let tag_end = start + doc[start..].find('>')?;
    let tag = &doc[start..tag_end];
    let end = doc.rfind("</svg>")?;
    if end < tag_end {
        return None;
    }
    let number = |name: &str| -> Option<f64> {
        let key = format!(" {name}=\"");
        let from = tag.find(&key)? + key.len();
        let len = tag[from..].find('"')?;
        tag[from..from + len].parse().ok()
    };
    Some(Body {
        content: doc[tag_end + 1..end].to_string(),
        width: number("width")?,
        height: number("height")?,
    })
}

/// Puts the legend and the graph together in one SVG document.
fn assemble(o: &Outlook, body: &Body) -> String {
    const MARGIN: f64 = 10.0;
    const SWATCH: f64 = 14.0;

    let mut legend = String::new();
    let mut legend_w: f64 = 0.0;

    // Title line.
    let title = format!(
        "{} · run {} · {} · event {}",
        o.workflow, o.run, o.status, o.event
    );
    let _ = writeln!(
        legend,
        "<text x=\"{MARGIN}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        xml_escape(&title)
    );
    legend_w = legend_w.max(MARGIN + text_width(&title, 15.0, true));

    // Swatches.
    let y = 34.0;
    let mut x = MARGIN;
    let mut swatch = |legend: &mut String, fill: &str, stroke: &str, extra: &str, name: &str| {
        let _ = writeln!(
            legend,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{SWATCH}\" height=\"{SWATCH}\" fill=\"{fill}\" \
             stroke=\"{stroke}\"{extra}/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            x + SWATCH + 4.0,
            y + SWATCH - 2.0,
            xml_escape(name)
        );
        x += SWATCH + 4.0 + text_width(name, 12.0, false) + 12.0;
    };
    for (state, fill) in STATE_FILLS {
        let name = format!("{} {}", state_icon(state), state.as_str());
        swatch(&mut legend, fill, "#000000", "", &name);
    }
    swatch(
        &mut legend,
        WHITE,
        "#000000",
        " stroke-dasharray=\"4 3\"",
        "possible future",
    );
    if !o.violations.is_empty() || o.nodes.iter().any(|n| n.violated) {
        swatch(
            &mut legend,
            WHITE,
            RED,
            " stroke-width=\"3\"",
            "broke a promise",
        );
    }
    legend_w = legend_w.max(x);
    let mut legend_h = y + SWATCH + 8.0;

    // Violations caption.
    if !o.violations.is_empty() {
        let mut lines: Vec<String> = o
            .violations
            .iter()
            .take(MAX_CAPTION_LINES)
            .map(|v| format!("violation: {v}"))
            .collect();
        if o.violations.len() > MAX_CAPTION_LINES {
            lines.push(format!(
                "… and {} more",
                o.violations.len() - MAX_CAPTION_LINES
            ));
        }
        for line in lines {
            legend_h += 16.0;
            let _ = writeln!(
                legend,
                "<text x=\"{MARGIN}\" y=\"{legend_h}\" font-size=\"13\" fill=\"{RED}\">{}</text>",
                xml_escape(&line)
            );
            legend_w = legend_w.max(MARGIN + text_width(&line, 13.0, false));
        }
        legend_h += 8.0;
    }

    let width = body.width.max(legend_w + MARGIN).ceil();
    let height = (legend_h + body.height + MARGIN).ceil();
    let mut out = String::with_capacity(body.content.len() + legend.len() + 1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"{FONT_FAMILY}\">"
    );
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&title));
    out.push_str(
        "<defs><marker id=\"orch-arrow\" markerWidth=\"10\" markerHeight=\"7\" refX=\"10\" \
         refY=\"3.5\" orient=\"auto\"><polygon points=\"0 0, 10 3.5, 0 7\" \
         fill=\"context-stroke\"/></marker></defs>\n",
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    out.push_str("<g class=\"legend\">\n");
    out.push_str(&legend);
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        "<g class=\"graph\" transform=\"translate(0 {legend_h})\">"
    );
    out.push_str(&body.content);
    out.push_str("\n</g>\n</svg>\n");
    out
}

/// Escapes text for XML content and attribute values, and replaces the
/// characters XML 1.0 forbids.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if xml_allowed(c) => out.push(c),
            _ => out.push('\u{fffd}'),
        }
    }
    out
}

/// Text for layout-rs, which escapes `&<>"'` itself but not the characters
/// XML forbids.
fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| if xml_allowed(c) { c } else { '\u{fffd}' })
        .collect()
}

fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

// ---------------------------------------------------------------- DOT ----

/// Writes the outlook as Graphviz DOT text (`digraph`, top to bottom):
/// nodes filled by state with their labels, wildcards and dashed edges
/// `style="dashed"`, thick red outlines for violations, and the title line
/// plus any violations as the graph's caption. Ids and labels are quoted
/// and escaped; `dot -Tsvg` draws it.
///
/// ```
/// use orch::picture::outlook::{Outlook, PicKind, PicNode};
/// use orch::RunStatus;
///
/// let o = Outlook {
///     run: "r1".into(),
///     workflow: "demo".into(),
///     status: RunStatus::Running,
///     event: 3,
///     nodes: vec![PicNode {
///         id: "shape:0".into(),
///         kind: PicKind::Region,
///         label: "M*".into(),
///         state: None,
///         states: Default::default(),
///         attrs: Default::default(),
///         violated: false,
///     }],
///     edges: vec![],
///     violations: vec![],
/// };
/// let dot = orch::picture::render::dot(&o);
/// assert!(dot.starts_with("digraph"));
/// assert!(dot.contains(r#""shape:0" [label="M*""#));
/// assert!(dot.contains(r#"style="dashed""#));
/// ```
pub fn dot(o: &Outlook) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&o.workflow));
    let mut caption = format!(
        "{} · run {} · {} · event {}",
        html_escape(&o.workflow),
        html_escape(&o.run),
        o.status,
        o.event
    );
    for v in &o.violations {
        let _ = write!(
            caption,
            "<br/><font color=\"red\">violation: {}</font>",
            html_escape(v)
        );
    }
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", label=<{caption}>];"
    );
    out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");

    for n in &o.nodes {
        let mut attrs = vec![format!("label={}", dot_label(node_text(n)))];
        let wildcard = is_wildcard(n.kind);
        if wildcard {
            attrs.push("style=\"dashed\"".into());
            attrs.push(format!("fillcolor=\"{WHITE}\""));
        } else {
            let fill = attr_str(&n.attrs, "color").unwrap_or(state_fill(n.state));
            attrs.push(format!("fillcolor={}", dot_id(fill)));
        }
        if let Some(shape) = attr_str(&n.attrs, "shape") {
            attrs.push(format!("shape={}", dot_id(shape)));
        } else if n.kind == PicKind::Growth {
            attrs.push("shape=ellipse".into());
        }
        if n.violated {
            attrs.push(format!("color=\"{RED}\""));
            attrs.push("penwidth=3".into());
        } else if n.kind == PicKind::Stack {
            attrs.push("penwidth=2.5".into());
        }
        if let Some(tip) = attr_str(&n.attrs, "tooltip") {
            attrs.push(format!("tooltip={}", dot_label(tip)));
        }
        let _ = writeln!(out, "  {} [{}];", dot_id(&n.id), attrs.join(", "));
    }

    for e in &o.edges {
        let mut attrs = Vec::new();
        if e.dashed {
            attrs.push("style=\"dashed\"".to_string());
        }
        if let Some(label) = attr_str(&e.attrs, "label") {
            attrs.push(format!("label={}", dot_label(label)));
        }
        if let Some(color) = attr_str(&e.attrs, "color") {
            attrs.push(format!("color={}", dot_id(color)));
        } else if e.dashed {
            attrs.push("color=\"#555555\"".to_string());
        }
        let _ = write!(out, "  {} -> {}", dot_id(&e.from), dot_id(&e.to));
        if !attrs.is_empty() {
            let _ = write!(out, " [{}]", attrs.join(", "));
        }
        out.push_str(";\n");
    }
    out.push_str("}\n");
    out
}

/// A quoted DOT identifier. In quoted strings DOT only unescapes `\"`; a
/// backslash is doubled so that none can swallow the closing quote.
fn dot_id(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A quoted DOT label (an escString: `\\` is a backslash, `\n` a line
/// break).
fn dot_label(s: &str) -> String {
    dot_id(&s.replace("\r\n", "\n"))
}

/// Escapes text for a Graphviz HTML-like label.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br/>"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;
    use std::time::Instant;

    fn node(id: &str, kind: PicKind, label: &str, state: Option<NodeState>) -> PicNode {
        PicNode {
            id: id.into(),
            kind,
            label: label.into(),
            state,
            states: Default::default(),
            attrs: Attrs::new(),
            violated: false,
        }
    }

    fn edge(from: &str, to: &str, dashed: bool) -> PicEdge {
        PicEdge {
            from: from.into(),
            to: to.into(),
            dashed,
            attrs: Attrs::new(),
        }
    }

    fn outlook(nodes: Vec<PicNode>, edges: Vec<PicEdge>) -> Outlook {
        Outlook {
            run: "run-1".into(),
            workflow: "wf <&>".into(),
            status: RunStatus::Running,
            event: 42,
            nodes,
            edges,
            violations: vec![],
        }
    }

    /// A small outlook with every kind of node and tricky labels.
    fn sample() -> Outlook {
        let mut a = node(
            "a",
            PicKind::Node,
            "fetch \"x\" <1> & 'y'",
            Some(NodeState::Succeeded),
        );
        a.attrs.insert("color".into(), "#ffcc00".into());
        let mut b = node(
            "b",
            PicKind::Node,
            "a → b ‖ c | d × e",
            Some(NodeState::Running),
        );
        b.attrs.insert("shape".into(), "circle".into());
        let mut stack = node("s", PicKind::Stack, "work ×12", Some(NodeState::Failed));
        stack.violated = true;
        let region = node("shape:0", PicKind::Region, "(N→M) | (J→K)*", None);
        let growth = node("grow:b", PicKind::Growth, "★", None);
        let mut e1 = edge("a", "b", false);
        e1.attrs.insert("label".into(), "rows<&>".into());
        e1.attrs.insert("color".into(), "blue".into());
        let mut o = outlook(
            vec![a, b, stack, region, growth],
            vec![
                e1,
                edge("a", "s", false),
                edge("s", "shape:0", true),
                edge("shape:0", "b", true),
                edge("b", "grow:b", true),
            ],
        );
        o.violations = vec!["node s added <x> & broke \"static\"".into()];
        o
    }

    /// A tiny XML well-formedness check: one root element, properly nested
    /// tags, quoted attributes without `<` and without duplicates, only
    /// known or numeric entity references, no forbidden characters.
    fn check_xml(doc: &str) -> Result<(), String> {
        fn check_text(t: &str) -> Result<(), String> {
            let mut rest = t;
            while let Some(i) = rest.find('&') {
                let end = rest[i..].find(';').ok_or(format!("bad & in {t:?}"))? + i;
                let name = &rest[i + 1..end];
                let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || name
                        .strip_prefix("#x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                    || name
                        .strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!("bad entity &{name}; in {t:?}"));
                }
                rest = &rest[end + 1..];
            }
            if t.contains('<') || t.chars().any(|c| !xml_allowed(c)) {
                return Err(format!("bad character in {t:?}"));
            }
            Ok(())
        }
        fn name_end(s: &str) -> usize {
            s.find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
                .unwrap_or(s.len())
        }

        let mut s = doc;
        if let Some(rest) = s.strip_prefix("<?xml") {
            s = &rest[rest.find("?>").ok_or("unclosed prolog")? + 2..];
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        while !s.is_empty() {
            let lt = s.find('<').unwrap_or(s.len());
            let text = &s[..lt];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_text(text)?;
            s = &s[lt..];
            if s.is_empty() {
                break;
            }
            if let Some(rest) = s.strip_prefix("<!--") {
                s = &rest[rest.find("-->").ok_or("unclosed comment")? + 3..];
            } else if let Some(rest) = s.strip_prefix("</") {
                let n = name_end(rest);
                let name = &rest[..n];
                if stack.pop() != Some(name) {
                    return Err(format!("unexpected </{name}>"));
                }
                let rest = rest[n..].trim_start();
                s = rest
                    .strip_prefix('>')
                    .ok_or(format!("bad end tag </{name}"))?;
            } else {
                let rest = &s[1..];
                let n = name_end(rest);
                if n == 0 {
                    return Err(format!("bad tag at {:?}", &s[..s.len().min(40)]));
                }
                let name = &rest[..n];
                let mut r = &rest[n..];
                let mut seen = Vec::new();
                loop {
                    let t = r.trim_start();
                    if let Some(after) = t.strip_prefix("/>") {
                        r = after;
                        if stack.is_empty() {
                            roots += 1;
                        }
                        break;
                    }
                    if let Some(after) = t.strip_prefix('>') {
                        r = after;
                        if stack.is_empty() {
                            roots += 1;
                        }
                        stack.push(name);
                        break;
                    }
                    if t.len() == r.len() && !seen.is_empty() {
                        return Err(format!("no space before attribute in <{name}"));
                    }
                    let an = name_end(t);
                    if an == 0 {
                        return Err(format!(
                            "bad attribute in <{name}: {:?}",
                            &t[..t.len().min(40)]
                        ));
                    }
                    let attr = &t[..an];
                    if seen.contains(&attr) {
                        return Err(format!("duplicate attribute {attr} in <{name}"));
                    }
                    seen.push(attr);
                    let t = t[an..].trim_start();
                    let t = t
                        .strip_prefix('=')
                        .ok_or(format!("no = after {attr}"))?
                        .trim_start();
                    let q = t.chars().next().ok_or("eof")?;
                    if q != '"' && q != '\'' {
                        return Err(format!("unquoted value of {attr}"));
                    }
                    let close = t[1..].find(q).ok_or(format!("unclosed value of {attr}"))? + 1;
                    check_text(&t[1..close])?;
                    r = &t[close + 1..];
                }
                s = r;
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    #[test]
    fn xml_checker_catches_errors() {
        assert!(check_xml("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a>x < y</a>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
        assert!(check_xml("<a x=\"<\"/>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
    }

    #[test]
    fn svg_is_well_formed_and_shows_everything() {
        let o = sample();
        let svg = svg(&o);
        assert_complete(&svg, &o);
        assert!(laid_out_by_layout_rs(&svg));
        for label in [
            "fetch &quot;x&quot; &lt;1&gt; &amp; &apos;y&apos;",
            "a → b ‖ c | d × e",
            "work ×12",
            "(N→M) | (J→K)*",
            "★",
            "rows&lt;&amp;&gt;",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        // Title and legend.
        assert!(svg.contains("wf &lt;&amp;&gt; · run run-1 · running · event 42"));
        for (state, fill) in STATE_FILLS {
            assert!(svg.contains(state.as_str()));
            assert!(svg.contains(fill));
        }
        assert!(svg.contains("possible future"));
        // Violation caption, in red.
        assert!(svg.contains(&format!(
            "fill=\"{RED}\">violation: node s added &lt;x&gt; &amp; broke &quot;static&quot;"
        )));
        // Colours: the colour attribute overrides the state.
        assert!(svg.contains("fill=\"#ffcc00ff\""));
        assert!(svg.contains("fill=\"#ffd54fff\"")); // running
        assert!(svg.contains("stroke=\"#0000ffff\"")); // blue edge
                                                       // The stack broke a promise: thick red outline.
        assert!(svg.contains("stroke-width=\"3\" stroke=\"#d00000ff\""));
    }

    #[test]
    fn one_sans_font_icons_for_states_and_labels_beside_their_edges() {
        let o = sample();
        for svg in [svg(&o), {
            let plan = plan(&o, 0);
            let body = plain_layout(&o, &plan);
            assemble(&o, &body)
        }] {
            check_xml(&svg).unwrap();
            assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width="));
            assert!(
                svg.contains(&format!("font-family=\"{FONT_FAMILY}\">")),
                "on the root"
            );
            assert!(
                !svg.contains("Times") && !svg.contains("serif;"),
                "one font"
            );
            assert_eq!(svg.matches("font-family").count(), 1, "only the root's");
            // Every node with a state has its icon, named by its id.
            for (id, icon) in [("a", "✔"), ("b", "▶"), ("s", "✖")] {
                assert!(
                    svg.contains(&format!("data-id=\"{id}\" "))
                        && svg.contains(&format!(">{icon}<title>")),
                    "{id}: {icon}"
                );
            }
            assert_eq!(
                svg.matches("class=\"state-icon ").count(),
                3,
                "none on wildcards"
            );
            for (state, _) in STATE_FILLS {
                let named = format!(">{} {}</text>", state_icon(state), state.as_str());
                assert!(svg.contains(&named), "the legend: {named}");
            }
            // The label is drawn once, as text of its own.
            assert_eq!(svg.matches("rows&lt;&amp;&gt;").count(), 1);
        }
        // Beside its edge: just right of the middle of the routed path.
        let svg = svg(&o);
        let path = &svg[svg.find("data-from=\"a\" data-to=\"b\"").unwrap()..];
        let d = &path[path.find(" d=\"").unwrap() + 4..];
        let d = &d[..d.find('"').unwrap()];
        let (x, y) = path_middle(d).unwrap();
        assert!(
            svg.contains(&format!(
                "class=\"label\" x=\"{:.1}\" y=\"{y:.1}\"",
                x + 6.0
            )),
            "{d}"
        );
    }

    #[test]
    fn path_middles() {
        assert_eq!(path_middle("M 0 0 C 0 10, 10 10, 10 20"), Some((5.0, 10.0)));
        assert_eq!(
            path_middle("M 0 0 C 1 1, 2 2, 3 3 S 4 4, 5 5 S 6 6, 7 7"),
            Some((5.0, 5.0))
        );
        assert_eq!(path_middle("nothing"), None);
    }

    #[test]
    fn a_long_title_widens_the_picture() {
        let mut o = sample();
        o.workflow = "W".repeat(300);
        let svg = svg(&o);
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        let title = format!("{} · run run-1 · running · event 42", o.workflow);
        // A bold W is about 0.9 em of 15 px.
        assert!(width >= 300.0 * 0.9 * 15.0, "{width}");
        assert!(width >= text_width(&title, 15.0, true), "{width}");
        let wide = text_width("漢字漢字", 15.0, false);
        assert_eq!(wide, 60.0, "an em each");
    }

    #[test]
    fn a_repeat_region_is_a_dashed_stack() {
        let mut region = node("~region0", PicKind::Region, "M{2,5}", None);
        region.attrs.insert("shape".into(), "stack".into());
        let look = node_look(&region);
        assert_eq!((look.shape, look.stroke_width), (NodeShape::Box, 3));
        assert!(look.props.contains("stroke-dasharray"), "{}", look.props);
    }

    #[test]
    fn wildcards_and_dashed_edges_are_dashed() {
        let svg = svg(&sample());
        for id in ["shape:0", "grow:b"] {
            let at = svg
                .find(&format!("data-id=\"{id}\""))
                .unwrap_or_else(|| panic!("no node {id}"));
            let tag_end = at + svg[at..].find('>').unwrap();
            assert!(
                svg[at..tag_end].contains("stroke-dasharray"),
                "{id} not dashed"
            );
        }
        let at = svg.find("data-id=\"a\"").unwrap();
        let tag_end = at + svg[at..].find('>').unwrap();
        assert!(!svg[at..tag_end].contains("stroke-dasharray"));
        // Three dashed edges, drawn with a dash array.
        assert_eq!(svg.matches("class=\"edge dashed\"").count(), 3);
        assert_eq!(svg.matches("stroke-dasharray=\"5,5\"").count(), 3);
    }

    #[test]
    fn empty_outlook_draws_a_note() {
        let o = outlook(vec![], vec![]);
        let svg = svg(&o);
        check_xml(&svg).unwrap();
        assert!(svg.contains("empty graph"));
        assert!(svg.contains("possible future"));
        let dot = dot(&o);
        assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
    }

    #[test]
    fn odd_graphs_do_not_panic() {
        let n = |id: &str| node(id, PicKind::Node, id, Some(NodeState::Pending));
        let cases = vec![
            // One node, no edges.
            outlook(vec![n("x")], vec![]),
            // A self edge, a duplicate edge, an unknown endpoint.
            outlook(
                vec![n("x"), n("y")],
                vec![
                    edge("x", "x", false),
                    edge("x", "y", false),
                    edge("x", "y", true),
                    edge("x", "nowhere", false),
                ],
            ),
            // A cycle, with labels on every edge.
            outlook(
                vec![n("x"), n("y"), n("z")],
                vec![
                    edge("x", "y", false),
                    edge("y", "z", false),
                    edge("z", "x", false),
                ]
                .into_iter()
                .map(|mut e| {
                    e.attrs.insert("label".into(), "l".into());
                    e
                })
                .collect(),
            ),
            // Duplicate ids, empty and multi-line labels, control characters.
            outlook(
                vec![
                    n("x"),
                    node("x", PicKind::Node, "", None),
                    node("y", PicKind::Stack, "two\nlines\u{1}", None),
                ],
                vec![edge("x", "y", false)],
            ),
        ];
        for o in cases {
            let svg = svg(&o);
            check_xml(&svg).unwrap();
            assert!(laid_out_by_layout_rs(&svg), "{svg}");
            let _ = dot(&o);
        }
    }

    #[test]
    fn colors_parse() {
        assert_eq!(parse_color("red").unwrap().to_web_color(), "#ff0000ff");
        assert_eq!(parse_color("#abc").unwrap().to_web_color(), "#aabbccff");
        assert_eq!(parse_color("#A0B1C2").unwrap().to_web_color(), "#a0b1c2ff");
        assert_eq!(
            parse_color("#a0b1c280").unwrap().to_web_color(),
            "#a0b1c280"
        );
        assert!(parse_color("#12345").is_none());
        assert!(parse_color("#ggg").is_none());
        assert!(parse_color("no-such-colour").is_none());
    }

    #[test]
    fn dot_marks_wildcards_and_violations() {
        let dot = dot(&sample());
        assert!(dot.starts_with("digraph \"wf <&>\" {"));
        assert!(dot.contains("rankdir=TB"));
        assert!(dot.contains(
            r##""shape:0" [label="(N→M) | (J→K)*", style="dashed", fillcolor="#ffffff"]"##
        ));
        assert!(dot.contains(r#""grow:b" [label="★", style="dashed""#));
        assert!(dot.contains(r##""a" [label="fetch \"x\" <1> & 'y'", fillcolor="#ffcc00"]"##));
        assert!(dot
            .contains(r##""b" [label="a → b ‖ c | d × e", fillcolor="#ffd54f", shape="circle"]"##));
        assert!(dot.contains(
            r##""s" [label="work ×12", fillcolor="#f4978e", color="#d00000", penwidth=3]"##
        ));
        assert!(dot.contains(r#""a" -> "b" [label="rows<&>", color="blue"];"#));
        assert!(dot.contains(r##""s" -> "shape:0" [style="dashed", color="#555555"];"##));
        assert!(dot.contains("<font color=\"red\">violation: node s added &lt;x&gt; &amp; broke &quot;static&quot;</font>"));
        assert_eq!(dot_id(r#"a\"b"#), r#""a\\\"b""#);
        assert_eq!(dot_label("x\ny"), r#""x\ny""#);
    }

    /// A random DAG: each node after the first has one to three parents
    /// among the earlier nodes.
    fn random_dag(n: usize, seed: u64) -> Outlook {
        let mut seed = seed | 1;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let states = STATE_FILLS.map(|(s, _)| s);
        let nodes = (0..n)
            .map(|i| {
                let state = states[(rnd() % 7) as usize];
                node(
                    &format!("n{i}"),
                    PicKind::Node,
                    &format!("task {i}"),
                    Some(state),
                )
            })
            .collect();
        let mut edges = Vec::new();
        for i in 1..n {
            for _ in 0..1 + rnd() % 3 {
                let p = (rnd() % i as u64) as usize;
                edges.push(edge(&format!("n{p}"), &format!("n{i}"), rnd() % 5 == 0));
            }
        }
        outlook(nodes, edges)
    }

    /// A random DAG whose parents are among the `window` previous nodes
    /// (edges stay local, as in most workflows).
    fn local_dag(n: usize, seed: u64, window: usize) -> Outlook {
        let mut o = random_dag(n, seed);
        let mut seed = seed | 1;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        o.edges.clear();
        for i in 1..n {
            let lo = i.saturating_sub(window);
            for _ in 0..1 + rnd() % 3 {
                let p = lo + (rnd() % (i - lo) as u64) as usize;
                o.edges
                    .push(edge(&format!("n{p}"), &format!("n{i}"), rnd() % 5 == 0));
            }
        }
        o
    }

    /// layout-rs's SVG writer defines this marker.
    fn laid_out_by_layout_rs(svg: &str) -> bool {
        svg.contains("<marker id=\"endarrow\"")
    }

    /// Every node and every edge is drawn exactly once.
    fn assert_complete(svg: &str, o: &Outlook) {
        check_xml(svg).unwrap();
        assert_eq!(svg.matches("class=\"node ").count(), o.nodes.len());
        assert_eq!(svg.matches("class=\"edge").count(), o.edges.len());
    }

    #[test]
    fn random_dag_of_300_nodes_renders() {
        let o = local_dag(300, 7, 20);
        let t = Instant::now();
        let svg = svg_with_optimiser(&o, false);
        eprintln!("300-node DAG: {:?} (no optimiser)", t.elapsed());
        assert_complete(&svg, &o);
        assert!(svg.contains("task 299"));
        assert!(laid_out_by_layout_rs(&svg));
        assert!(!svg.contains("edge direct"));
    }

    #[test]
    fn long_edges_go_direct_over_the_budget() {
        let o = random_dag(80, 3);
        let full = plan(&o, usize::MAX);
        assert!(full.direct.is_empty() && full.elements > 200);
        let p = plan(&o, 200);
        assert!(p.elements <= 200 && !p.direct.is_empty());
        // Taking non-tight edges out moves no node.
        let laid_only = Outlook {
            edges: p.laid.iter().map(|e| e.edge.clone()).collect(),
            ..o.clone()
        };
        assert_eq!(plan(&laid_only, usize::MAX).level, full.level);

        let svg = assemble(&o, &graph_body(&o, Some(false), 200));
        assert_complete(&svg, &o);
        assert!(laid_out_by_layout_rs(&svg));
        assert_eq!(svg.matches("edge direct").count(), p.direct.len());
    }

    #[test]
    fn the_layout_within_a_budget_is_the_most_detailed_that_fits() {
        let ms = Duration::from_millis;
        // 100 elements: about 2.3 ms routed, plus 3.5 ms of optimiser for
        // 10,000 units of crossing work; 300 nodes and edges plain: 0.45 ms.
        let choose100 = |budget| choose(true, true, 100, 10_000.0, 300, budget);
        assert_eq!(choose100(ms(10)), Layout::Optimised);
        assert_eq!(choose100(ms(3)), Layout::Routed);
        assert_eq!(choose100(ms(1)), Layout::Plain);
        assert_eq!(choose100(Duration::from_micros(100)), Layout::Counted);
        // What `svg` would not do is never done, whatever the budget.
        assert_eq!(
            choose(true, false, 100, f64::INFINITY, 300, ms(1_000)),
            Layout::Routed
        );
        assert_eq!(
            choose(false, true, 5_000, 1.0, 9_000, ms(1_000)),
            Layout::Plain
        );
    }

    #[test]
    fn a_picture_drawn_within_a_budget_draws_its_nodes_or_counts_them() {
        let o = sample();
        let (svg, layout) = svg_within(&o, Duration::from_secs(1));
        assert_eq!(layout, Layout::Optimised);
        assert!(svg.contains("data-id=\"b\""));
        let (svg, layout) = svg_within(&o, Duration::from_micros(1));
        assert_eq!(layout, Layout::Counted);
        assert!(
            !svg.contains("data-id=\"b\""),
            "no node is drawn one by one"
        );
        // The stack of the sample has no counts by state: two nodes.
        assert!(svg.contains("2 nodes (1 running, 1 succeeded)"), "{svg}");
    }

    #[test]
    fn plain_layout_beyond_the_budget() {
        for o in [sample(), random_dag(80, 3)] {
            let svg = assemble(&o, &graph_body(&o, None, 1));
            assert_complete(&svg, &o);
            assert!(!laid_out_by_layout_rs(&svg));
            for n in &o.nodes {
                assert!(svg.contains(&xml_escape(&n.label)));
            }
        }
    }

    #[test]
    fn the_optimiser_is_off_for_wide_rows() {
        let work = |o: &Outlook| crossing_work(&plan(o, LAYOUT_MAX_ELEMENTS));
        assert!(work(&random_dag(300, 7)) > OPTIMISE_MAX_WORK);
        assert!(work(&local_dag(300, 7, 20)) < OPTIMISE_MAX_WORK);
    }

    /// Small random graphs with cycles, self-loops, parallel edges, labels
    /// and every kind of node: layout-rs never panics on what we hand it.
    #[test]
    fn layout_rs_does_not_panic_on_small_random_graphs() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut panics = 0;
        for round in 0..200 {
            let n = 1 + (rnd() % 12) as usize;
            let nodes: Vec<PicNode> = (0..n)
                .map(|i| {
                    let kind = [
                        PicKind::Node,
                        PicKind::Stack,
                        PicKind::Region,
                        PicKind::Growth,
                        PicKind::Rule,
                    ][(rnd() % 5) as usize];
                    let label = ["", "x", "a long label with words", "two\nlines", "★", "<&>"]
                        [(rnd() % 6) as usize];
                    let mut p = node(&format!("n{i}"), kind, label, None);
                    if rnd() % 4 == 0 {
                        p.attrs.insert(
                            "shape".into(),
                            ["circle", "ellipse", "box"][(rnd() % 3) as usize].into(),
                        );
                    }
                    p
                })
                .collect();
            let m = (rnd() % (3 * n as u64 + 1)) as usize;
            let edges: Vec<PicEdge> = (0..m)
                .map(|_| {
                    let mut e = edge(
                        &format!("n{}", rnd() % n as u64),
                        &format!("n{}", rnd() % n as u64),
                        rnd() % 2 == 0,
                    );
                    if rnd() % 3 == 0 {
                        e.attrs.insert(
                            "label".into(),
                            ["l", "a longer label"][(rnd() % 2) as usize].into(),
                        );
                    }
                    e
                })
                .collect();
            let o = outlook(nodes, edges);
            for opt in [true, false] {
                let p = plan(&o, usize::MAX);
                if catch_unwind(AssertUnwindSafe(|| run_layout(&o, &p, opt))).is_err() {
                    panics += 1;
                    eprintln!(
                        "round {round} opt {opt}: {:?}",
                        o.edges
                            .iter()
                            .map(|e| (&e.from, &e.to, attr_str(&e.attrs, "label").is_some()))
                            .collect::<Vec<_>>()
                    );
                }
            }
            assert_complete(&svg(&o), &o);
        }
        assert_eq!(panics, 0);
    }
}
