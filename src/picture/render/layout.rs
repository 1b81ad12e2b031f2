//! Laying out a plan: by layout-rs, or the plain layered layout of big
//! graphs; the direct edges, state icons and edge labels drawn over it.

use std::fmt::Write as _;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::geometry::Point;
use layout::topo::layout::VisualGraph;

use super::document::xml_escape;
use super::look::{arrow, default_edge_color, node_look, parse_color, NodeLook};
use super::plan::{OrderedEdge, Plan};
use super::{attr_str, node_shape, state_icon, Body, NodeShape, EDGE_FONT};
use crate::picture::outlook::{Outlook, PicEdge};

/// Builds the layout-rs graph, lays it out and renders it, then draws the
/// direct edges.
pub(super) fn run_layout(o: &Outlook, plan: &Plan, optimise: bool) -> Option<Body> {
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
pub(super) fn plain_layout(o: &Outlook, plan: &Plan) -> Body {
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
pub(super) fn path_middle(d: &str) -> Option<(f64, f64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_middles() {
        assert_eq!(path_middle("M 0 0 C 0 10, 10 10, 10 20"), Some((5.0, 10.0)));
        assert_eq!(
            path_middle("M 0 0 C 1 1, 2 2, 3 3 S 4 4, 5 5 S 6 6, 7 7"),
            Some((5.0, 5.0))
        );
        assert_eq!(path_middle("nothing"), None);
    }
}
