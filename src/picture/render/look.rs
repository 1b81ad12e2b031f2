//! How a node and an edge look in the SVG: shape, size, fill, outline and
//! colours, as a layout-rs element or drawn directly.

use std::fmt::Write as _;

use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};

use super::document::{xml_escape, xml_safe};
use super::{
    attr_str, is_stack, is_wildcard, node_shape, node_text, state_fill, NodeShape, DASH, EDGE_FONT,
    FONT, RED, WHITE,
};
use crate::picture::outlook::{PicEdge, PicKind, PicNode};

/// How a node is drawn.
pub(super) struct NodeLook {
    /// The text, with the characters XML forbids replaced (not escaped:
    /// layout-rs escapes).
    text: String,
    pub(super) shape: NodeShape,
    fill: Color,
    stroke: Color,
    pub(super) stroke_width: usize,
    rounded: usize,
    pub(super) size: Point,
    /// Attributes of the node's `<g>`: class, id, dash pattern.
    pub(super) props: String,
}

pub(super) fn node_look(n: &PicNode) -> NodeLook {
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
    pub(super) fn element(self, dir: Orientation) -> Element {
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
    pub(super) fn draw(&self, out: &mut String, c: Point) {
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
pub(super) fn arrow(e: &PicEdge) -> Arrow {
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

pub(super) fn default_edge_color(dashed: bool) -> Color {
    Color::new(if dashed { 0x5555_55ff } else { 0x0000_00ff })
}

/// A colour: a CSS colour name or `#rgb`, `#rrggbb`, `#rrggbbaa`.
pub(super) fn parse_color(s: &str) -> Option<Color> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
