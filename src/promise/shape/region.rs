//! Regions and their check against a shape: the nodes between `from`
//! and `to`, their wiring, and their series-parallel tree (nodes past
//! the depth limit are opaque). The matching itself is in `matcher`.

use std::collections::{HashMap, HashSet};

use super::matcher::Matcher;
use super::Shape;
use crate::limits::MAX_SHAPE_DEPTH;

/// A node of a region, as the matcher sees it.
#[derive(Clone, Debug)]
pub struct RegionNode {
    /// Node id.
    pub id: String,
    /// Task name.
    pub task: String,
}

/// A region: its nodes and the edges among them, plus which nodes `from`
/// points at and which point at `to`.
#[derive(Clone, Debug, Default)]
pub struct Region {
    /// The nodes strictly between `from` and `to`.
    pub nodes: Vec<RegionNode>,
    /// Edges among region nodes, by index into `nodes`.
    pub edges: Vec<(usize, usize)>,
    /// Region nodes with an edge from `from`.
    pub from_edges: Vec<usize>,
    /// Region nodes with an edge into `to`.
    pub to_edges: Vec<usize>,
    /// Whether the edge `from -> to` exists.
    pub direct: bool,
}

#[derive(Clone, Debug)]
pub(super) enum Tree {
    Empty,
    Node(usize),
    Seq(Vec<Tree>),
    Par(Vec<Tree>),
    /// A connected piece that is not series-parallel: only `any` matches.
    Opaque,
}

impl Region {
    /// Why the region is not an instance of `shape`, or `None` when it is.
    ///
    /// ```
    /// use orch::promise::shape::{Region, RegionNode, Shape};
    /// let m = |i: usize| RegionNode { id: format!("M_{i}"), task: "M".into() };
    /// let r = Region { nodes: vec![m(0), m(1)], edges: vec![], from_edges: vec![0, 1], to_edges: vec![0, 1], direct: false };
    /// assert!(r.mismatch(&"M*".parse().unwrap()).is_none());
    /// assert!(r.mismatch(&"M".parse().unwrap()).is_some());
    /// ```
    pub fn mismatch(&self, shape: &Shape) -> Option<String> {
        let n = self.nodes.len();
        if n == 0 {
            if !self.direct {
                return Some("the region is empty and has no edge from → to".into());
            }
            return if shape.can_be_empty() {
                None
            } else {
                Some(format!("the region is empty, but `{shape}` needs nodes"))
            };
        }
        if self.direct {
            return Some("the direct edge from → to stands beside region nodes".into());
        }
        let mut succ = vec![Vec::new(); n];
        let mut pred = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            succ[a].push(b);
            pred[b].push(a);
        }
        // Boundary wiring: exactly the sources are fed by `from`, exactly
        // the sinks feed `to`.
        let from: HashSet<usize> = self.from_edges.iter().copied().collect();
        let to: HashSet<usize> = self.to_edges.iter().copied().collect();
        for i in 0..n {
            let id = &self.nodes[i].id;
            if pred[i].is_empty() != from.contains(&i) {
                return Some(if from.contains(&i) {
                    format!("`{id}` has an edge from `from` but is not a source of the region")
                } else {
                    format!("`{id}` is a source of the region without an edge from `from`")
                });
            }
            if succ[i].is_empty() != to.contains(&i) {
                return Some(if to.contains(&i) {
                    format!("`{id}` has an edge into `to` but is not a sink of the region")
                } else {
                    format!("`{id}` is a sink of the region without an edge into `to`")
                });
            }
        }
        let all: Vec<usize> = (0..n).collect();
        let tree = decompose(&all, &succ, &pred, MAX_SHAPE_DEPTH);
        let mut seen = HashSet::new();
        let mut m = Matcher {
            region: self,
            patterns: shape
                .patterns()
                .into_iter()
                .filter(|g| seen.insert(*g))
                .cloned()
                .collect(),
            steps: 0,
            glob_work: 0,
            gave_up: false,
        };
        if m.matches(shape, &tree) {
            None
        } else if m.gave_up {
            Some(format!(
                "the region is too complex to check against `{shape}` (too many ways to split its parallel parts; see docs/promises.md)"
            ))
        } else {
            Some(format!("the region is not an instance of `{shape}`"))
        }
    }
}

/// The series-parallel tree of `nodes`, at most `room` levels deep: a
/// deeper part is opaque. A shape of depth `d` has instances of depth at
/// most `d`, so past [`MAX_SHAPE_DEPTH`] only `any` can match, and opaque
/// says exactly that; the bound keeps this recursion, the matcher's and the
/// tree's drop shallow however a task nests the nodes it adds.
fn decompose(nodes: &[usize], succ: &[Vec<usize>], pred: &[Vec<usize>], room: usize) -> Tree {
    match nodes.len() {
        0 => return Tree::Empty,
        1 => return Tree::Node(nodes[0]),
        _ if room < 2 => return Tree::Opaque,
        _ => {}
    }
    let inside: HashSet<usize> = nodes.iter().copied().collect();
    // Weakly connected components.
    let mut comp: HashMap<usize, usize> = HashMap::new();
    let mut comps: Vec<Vec<usize>> = Vec::new();
    for &start in nodes {
        if comp.contains_key(&start) {
            continue;
        }
        let c = comps.len();
        let mut members = vec![start];
        comp.insert(start, c);
        let mut k = 0;
        while k < members.len() {
            let v = members[k];
            k += 1;
            for &w in succ[v].iter().chain(&pred[v]) {
                if inside.contains(&w) && !comp.contains_key(&w) {
                    comp.insert(w, c);
                    members.push(w);
                }
            }
        }
        comps.push(members);
    }
    if comps.len() > 1 {
        return Tree::Par(
            comps
                .iter()
                .map(|c| decompose(c, succ, pred, room - 1))
                .collect(),
        );
    }
    // Connected: split into series factors along one topological order.
    let mut indeg: HashMap<usize, usize> = nodes
        .iter()
        .map(|&v| (v, pred[v].iter().filter(|p| inside.contains(p)).count()))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack: Vec<usize> = nodes.iter().copied().filter(|v| indeg[v] == 0).collect();
    stack.sort_unstable_by(|a, b| b.cmp(a));
    while let Some(v) = stack.pop() {
        order.push(v);
        for &w in &succ[v] {
            if let Some(d) = indeg.get_mut(&w) {
                *d -= 1;
                if *d == 0 {
                    stack.push(w);
                }
            }
        }
    }
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let inside_succ = |v: usize| succ[v].iter().copied().filter(|w| pos.contains_key(w));
    // Preds of each node still in the rest; sources of the rest; sinks of
    // the current factor; edges from the current factor to the rest.
    let mut pending_in: HashMap<usize, usize> = order
        .iter()
        .map(|&v| (v, pred[v].iter().filter(|p| pos.contains_key(p)).count()))
        .collect();
    let mut frontier = order.iter().filter(|v| pending_in[v] == 0).count() as i64;
    let mut succ_in_factor: HashMap<usize, usize> = HashMap::new();
    let (mut sinks, mut crossing) = (0i64, 0i64);
    let mut factors = Vec::new();
    let mut start = 0;
    for i in 0..order.len() - 1 {
        let v = order[i];
        frontier -= 1;
        for w in inside_succ(v) {
            let d = pending_in.get_mut(&w).expect("inside");
            *d -= 1;
            if *d == 0 {
                frontier += 1;
            }
            crossing += 1;
        }
        sinks += 1;
        for &p in pred[v]
            .iter()
            .filter(|p| pos.get(p).is_some_and(|&k| k >= start))
        {
            crossing -= 1;
            let c = succ_in_factor.entry(p).or_insert(0);
            *c += 1;
            if *c == 1 {
                sinks -= 1;
            }
        }
        if crossing == sinks * frontier
            && is_series_cut(&order[start..=i], &pos, i, succ, &pending_in)
        {
            factors.push(order[start..=i].to_vec());
            start = i + 1;
            sinks = 0;
            crossing = 0;
        }
    }
    if factors.is_empty() {
        return Tree::Opaque;
    }
    factors.push(order[start..].to_vec());
    Tree::Seq(
        factors
            .iter()
            .map(|f| decompose(f, succ, pred, room - 1))
            .collect(),
    )
}

/// With the counts already equal, checks that every edge leaving the
/// factor `a` (positions up to `last`) goes from a sink of `a` to a source
/// of the rest: then the edges are exactly sinks × sources.
fn is_series_cut(
    a: &[usize],
    pos: &HashMap<usize, usize>,
    last: usize,
    succ: &[Vec<usize>],
    pending_in: &HashMap<usize, usize>,
) -> bool {
    let first = pos[&a[0]];
    a.iter().all(|&u| {
        let outs = succ[u].iter().filter_map(|w| pos.get(w).map(|&k| (w, k)));
        let mut to_factor = false;
        let mut to_rest = false;
        for (w, k) in outs {
            if k > last {
                to_rest = true;
                if pending_in[w] != 0 {
                    return false;
                }
            } else if k >= first {
                to_factor = true;
            }
        }
        !(to_factor && to_rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Shape {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn region(
        nodes: &[(&str, &str)],
        edges: &[(usize, usize)],
        from: &[usize],
        to: &[usize],
    ) -> Region {
        Region {
            nodes: nodes
                .iter()
                .map(|(id, t)| RegionNode {
                    id: id.to_string(),
                    task: t.to_string(),
                })
                .collect(),
            edges: edges.to_vec(),
            from_edges: from.to_vec(),
            to_edges: to.to_vec(),
            direct: false,
        }
    }

    #[test]
    fn must_have_shapes() {
        // alt(A, B) with the A-variant being a chain of two.
        let branch = parse("(left_1 → left_2) | right");
        let left = region(
            &[("left_1", "left_1"), ("left_2", "left_2")],
            &[(0, 1)],
            &[0],
            &[1],
        );
        assert!(left.mismatch(&branch).is_none());
        let right = region(&[("right", "right")], &[], &[0], &[0]);
        assert!(right.mismatch(&branch).is_none());
        let both = region(
            &[
                ("left_1", "left_1"),
                ("left_2", "left_2"),
                ("right", "right"),
            ],
            &[(0, 1)],
            &[0, 2],
            &[1, 2],
        );
        assert!(both.mismatch(&branch).is_some());

        let map = parse("M*");
        let empty = Region {
            direct: true,
            ..Region::default()
        };
        assert!(empty.mismatch(&map).is_none());
        assert!(empty.mismatch(&parse("M+")).is_some());
        let unfilled = Region::default();
        assert!(unfilled.mismatch(&map).is_some());
        let three = region(
            &[("M_0", "M"), ("M_1", "M"), ("M_2", "M")],
            &[],
            &[0, 1, 2],
            &[0, 1, 2],
        );
        assert!(three.mismatch(&map).is_none());
        assert!(three.mismatch(&parse("M{4,}")).is_some());
        let mut with_direct = three.clone();
        with_direct.direct = true;
        assert!(with_direct.mismatch(&map).is_some());
    }

    #[test]
    fn series_inside_parallel_inside_series() {
        // A → (B ‖ C → D) → E
        let s = parse("A → (B ‖ C → D) → E");
        let r = region(
            &[("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E")],
            &[(0, 1), (0, 2), (2, 3), (1, 4), (3, 4)],
            &[0],
            &[4],
        );
        assert!(r.mismatch(&s).is_none(), "{:?}", r.mismatch(&s));
        // N-shaped: not series-parallel; only `any` matches.
        let n = region(
            &[("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")],
            &[(0, 2), (1, 2), (1, 3)],
            &[0, 1],
            &[2, 3],
        );
        assert!(n.mismatch(&parse("(A ‖ B) → (C ‖ D)")).is_some());
        assert!(n.mismatch(&parse("any")).is_none());
    }

    #[test]
    fn deeply_nested_regions_are_opaque_past_the_depth_limit() {
        // a_0 → (b_0 ‖ (a_1 → (b_1 ‖ …))): 2,000 levels of series inside
        // parallel, all wired like a region. Only `any` matches it, and
        // checking it must not recurse 2,000 deep (on a small stack).
        let levels = 1_000;
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let (mut from_edges, mut to_edges) = (Vec::new(), Vec::new());
        let last = 2 * levels;
        for i in 0..levels {
            let (a, b) = (2 * i, 2 * i + 1);
            nodes.push(RegionNode {
                id: format!("a_{i}"),
                task: "A".into(),
            });
            nodes.push(RegionNode {
                id: format!("b_{i}"),
                task: "B".into(),
            });
            // a_i → b_i and a_i → a_{i+1}; b_i → the end
            edges.push((a, b));
            edges.push((a, if i + 1 < levels { a + 2 } else { last }));
            to_edges.push(b);
        }
        nodes.push(RegionNode {
            id: "z".into(),
            task: "Z".into(),
        });
        to_edges.push(last);
        from_edges.push(0);
        let r = Region {
            nodes,
            edges,
            from_edges,
            to_edges,
            direct: false,
        };
        let checker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                (
                    r.mismatch(&"any".parse().unwrap()),
                    r.mismatch(&"A → (B ‖ any)".parse().unwrap()),
                    r.mismatch(&"(A ‖ B)*".parse().unwrap()),
                )
            })
            .unwrap();
        let (any, head, other) = checker.join().expect("no stack overflow");
        assert_eq!(any, None);
        assert_eq!(head, None, "`any` matches the opaque depths");
        assert!(other.is_some());
    }

    #[test]
    fn costly_globs_give_up_instead_of_hanging() {
        // Hundreds of patterns whose match backtracks at every position of
        // thousands of long names: the check gives up within its budget.
        let patterns: Vec<String> = (0..200)
            .map(|i| format!("\"*{}b{i}\"", "a".repeat(128)))
            .collect();
        let shape = parse(&format!("({})*", patterns.join(" ‖ ")));
        let name = "a".repeat(255);
        let n = 2_000;
        let r = Region {
            nodes: (0..n)
                .map(|_| RegionNode {
                    id: name.clone(),
                    task: name.clone(),
                })
                .collect(),
            edges: vec![],
            from_edges: (0..n).collect(),
            to_edges: (0..n).collect(),
            direct: false,
        };
        let started = std::time::Instant::now();
        let why = r.mismatch(&shape).expect("no match");
        assert!(why.contains("too complex to check"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn ten_thousand_copies_match_quickly() {
        let n = 10_000;
        let nodes: Vec<(String, String)> = (0..n)
            .map(|i| (format!("M_{i}"), "M".to_string()))
            .collect();
        let r = Region {
            nodes: nodes
                .iter()
                .map(|(id, t)| RegionNode {
                    id: id.clone(),
                    task: t.clone(),
                })
                .collect(),
            edges: vec![],
            from_edges: (0..n).collect(),
            to_edges: (0..n).collect(),
            direct: false,
        };
        assert!(r.mismatch(&parse("M*")).is_none());
    }
}
