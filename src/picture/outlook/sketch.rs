//! A region not filled yet, sketched as its shape reads: the dashed
//! wildcard nodes and edges the outlook draws for it.

use std::collections::BTreeMap;

use super::{PicKind, PicNode};
use crate::model::Attrs;
use crate::promise::shape::Shape;

/// The most picture nodes a region's sketch may have; a bigger shape is
/// drawn as one dashed node labelled with its text.
pub const MAX_SKETCH_NODES: usize = 16;

/// The label of the dashed node between the alternatives of an `alt`.
pub const OR_LABEL: &str = "or";

/// An unfilled region drawn as its shape reads (SPEC §5, §6): each
/// `task(pattern)` a dashed node, a `seq` one after another, a `par` side
/// by side, an `alt` a dashed `or` node fanning out to its alternatives
/// side by side, a `repeat` or `chain` one dashed stack labelled with its
/// bounds (`M*`, `M{2,5}`), `any` a dashed `any`. Every node is a
/// [`PicKind::Region`] wildcard; the first one's id is the region's.
/// Beyond [`MAX_SKETCH_NODES`] nodes (or for a shape with no node, such as
/// `empty`), the region is one dashed node labelled with the shape's text.
#[derive(Debug)]
pub(crate) struct Sketch {
    /// The wildcard nodes.
    pub nodes: Vec<PicNode>,
    /// Dashed edges between them, by picture id.
    pub edges: Vec<(String, String)>,
    /// Nodes the region's `from` leads to.
    pub sources: Vec<String>,
    /// Nodes that lead to the region's `to`.
    pub sinks: Vec<String>,
}

impl Sketch {
    /// The sketch of `shape`, its node ids starting with `id`.
    pub(crate) fn of(shape: &Shape, id: &str) -> Sketch {
        let mut s = Sketch {
            nodes: Vec::new(),
            edges: Vec::new(),
            sources: Vec::new(),
            sinks: Vec::new(),
        };
        if let Some((sources, sinks)) = s.part(shape, id) {
            if s.nodes.len() <= MAX_SKETCH_NODES {
                s.sources = sources;
                s.sinks = sinks;
                return s;
            }
        }
        let mut node = s.node(id, shape_label(shape), false);
        node.id = id.to_string();
        Sketch {
            sources: vec![id.to_string()],
            sinks: vec![id.to_string()],
            nodes: vec![node],
            edges: Vec::new(),
        }
    }

    fn node(&self, id: &str, label: String, stack: bool) -> PicNode {
        let mut attrs = Attrs::new();
        if stack {
            attrs.insert("shape".into(), "stack".into());
        }
        PicNode {
            id: match self.nodes.len() {
                0 => id.to_string(),
                n => format!("{id}.{n}"),
            },
            kind: PicKind::Region,
            label,
            state: None,
            states: BTreeMap::new(),
            attrs,
            violated: false,
        }
    }

    fn push(&mut self, node: PicNode) -> String {
        let id = node.id.clone();
        self.nodes.push(node);
        id
    }

    /// Draws `shape`; its sources and sinks, or `None` when it has no node
    /// (an instance of it is an edge). Stops growing past the limit.
    fn part(&mut self, shape: &Shape, id: &str) -> Option<(Vec<String>, Vec<String>)> {
        if self.nodes.len() > MAX_SKETCH_NODES {
            return None;
        }
        let one = |s: &mut Sketch, label: String, stack: bool| {
            let n = s.node(id, label, stack);
            let n = s.push(n);
            Some((vec![n.clone()], vec![n]))
        };
        match shape {
            Shape::Empty => None,
            Shape::Task(_) | Shape::Any => one(self, shape_label(shape), false),
            Shape::Repeat(..) | Shape::Chain(..) => one(self, shape_label(shape), true),
            Shape::Seq(parts) => {
                let mut whole: Option<(Vec<String>, Vec<String>)> = None;
                for p in parts {
                    let Some((sources, sinks)) = self.part(p, id) else {
                        continue;
                    };
                    whole = Some(match whole {
                        None => (sources, sinks),
                        Some((first, last)) => {
                            for a in &last {
                                for b in &sources {
                                    self.edges.push((a.clone(), b.clone()));
                                }
                            }
                            (first, sinks)
                        }
                    });
                }
                whole
            }
            Shape::Par(parts) => {
                let (mut sources, mut sinks) = (Vec::new(), Vec::new());
                for p in parts {
                    if let Some((a, b)) = self.part(p, id) {
                        sources.extend(a);
                        sinks.extend(b);
                    }
                }
                (!sources.is_empty()).then_some((sources, sinks))
            }
            Shape::Alt(parts) => {
                let or = self.node(id, OR_LABEL.into(), false);
                let mut or = or;
                or.attrs.insert("shape".into(), "circle".into());
                or.attrs.insert("tooltip".into(), shape_label(shape).into());
                let or = self.push(or);
                let mut sinks = Vec::new();
                for p in parts {
                    match self.part(p, id) {
                        Some((a, b)) => {
                            for n in a {
                                self.edges.push((or.clone(), n));
                            }
                            sinks.extend(b);
                        }
                        // An empty alternative: straight on to `to`.
                        None if !sinks.contains(&or) => sinks.push(or.clone()),
                        None => {}
                    }
                }
                Some((vec![or], sinks))
            }
        }
    }
}

fn shape_label(s: &Shape) -> String {
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn an_alt_region_is_drawn_as_its_alternatives_side_by_side() {
        let shape: Shape = "(left_1 → left_2) | right".parse().unwrap();
        let s = Sketch::of(&shape, "~region0");
        let labels: Vec<&str> = s.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, ["or", "left_1", "left_2", "right"]);
        assert!(s.nodes.iter().all(|n| n.kind == PicKind::Region));
        assert_eq!(s.nodes[0].id, "~region0", "the first node is the region's");
        assert_eq!(ids(&s.sources), ["~region0"]);
        assert_eq!(ids(&s.sinks), ["~region0.2", "~region0.3"]);
        let mut edges: Vec<(&str, &str)> = s
            .edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            [
                ("~region0", "~region0.1"),
                ("~region0", "~region0.3"),
                ("~region0.1", "~region0.2")
            ]
        );
    }

    #[test]
    fn a_repeat_is_one_stack_with_its_bounds_and_an_empty_branch_goes_straight_on() {
        let shape: Shape = "M{2,5}".parse().unwrap();
        let s = Sketch::of(&shape, "~region1");
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.nodes[0].label, "M{2,5}");
        assert_eq!(s.nodes[0].attrs["shape"], "stack");
        let shape = Shape::Alt(vec![Shape::task("A"), Shape::Empty]);
        let s = Sketch::of(&shape, "~r");
        assert_eq!(ids(&s.sinks), ["~r.1", "~r"], "or -> to for the empty one");
        let par = Shape::Par(vec![Shape::task("A"), Shape::task("B")]);
        let s = Sketch::of(&Shape::Seq(vec![par, Shape::task("C")]), "~p");
        assert_eq!(ids(&s.sources), ["~p", "~p.1"]);
        assert_eq!(ids(&s.sinks), ["~p.2"]);
        assert_eq!(s.edges.len(), 2);
    }

    #[test]
    fn a_big_shape_is_one_node_with_its_text() {
        let many = Shape::Alt((0..40).map(|i| Shape::task(&format!("t{i}"))).collect());
        let s = Sketch::of(&many, "~region2");
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.nodes[0].label, many.to_string());
        assert_eq!(ids(&s.sources), ["~region2"]);
        assert_eq!(ids(&s.sinks), ["~region2"]);
        let s = Sketch::of(&Shape::Empty, "~e");
        assert_eq!(s.nodes.len(), 1, "a wildcard even for nothing: {s:?}");
    }
}
