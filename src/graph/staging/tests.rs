use std::collections::{HashMap, HashSet};

use petgraph::Direction;

use super::*;
use crate::graph::NodeState;
use crate::model::Attrs;
use crate::promise::shape::Region;
use crate::promise::Promise;

fn node(id: &str) -> Mutation {
    Mutation::add_node(id, Task::python("x.py"))
}

fn edge(a: &str, b: &str) -> Mutation {
    Mutation::AddEdge {
        from: a.into(),
        to: b.into(),
        attrs: Attrs::new(),
    }
}

/// A small deterministic generator (xorshift), so that failures
/// reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// True when the graph plus the batch has no cycle (Kahn).
fn acyclic(g: &Graph, s: &Staging) -> bool {
    let refs: Vec<Ref> = (0..g.len())
        .map(Ref::Old)
        .chain((0..s.new_nodes.len()).map(Ref::New))
        .collect();
    let mut indeg: HashMap<Ref, usize> = refs
        .iter()
        .map(|&r| (r, s.neighbours(g, r, Direction::Incoming).len()))
        .collect();
    let mut stack: Vec<Ref> = refs.iter().copied().filter(|r| indeg[r] == 0).collect();
    let mut seen = 0;
    while let Some(r) = stack.pop() {
        seen += 1;
        for t in s.neighbours(g, r, Direction::Outgoing) {
            let d = indeg.get_mut(&t).expect("known");
            *d -= 1;
            if *d == 0 {
                stack.push(t);
            }
        }
    }
    seen == refs.len()
}

/// Every edge of the graph plus the batch agrees with the order, and
/// places are distinct.
fn assert_ordered(g: &Graph, s: &Staging) {
    let refs: Vec<Ref> = (0..g.len())
        .map(Ref::Old)
        .chain((0..s.new_nodes.len()).map(Ref::New))
        .collect();
    let places: HashSet<u64> = refs.iter().map(|&r| s.ord(g, r)).collect();
    assert_eq!(places.len(), refs.len(), "places are distinct");
    for &r in &refs {
        for t in s.neighbours(g, r, Direction::Outgoing) {
            assert!(
                s.ord(g, r) < s.ord(g, t),
                "{r:?} -> {t:?} against the order"
            );
        }
    }
}

#[test]
fn incremental_cycle_check_agrees_with_a_full_search() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..40 {
        let mut g = Graph::new();
        let mut names = 0usize;
        // Two batches in flight at once: one commits while the other
        // is still being sent, so the second's order must follow.
        let mut live: Vec<Staging> = vec![Staging::default(), Staging::default()];
        for step in 0..300 {
            let which = rng.below(2);
            let s = &mut live[which];
            let all: Vec<String> = g
                .nodes()
                .iter()
                .map(|n| n.id.clone())
                .chain((0..s.new_nodes.len()).map(|k| s.name(&g, Ref::New(k)).to_string()))
                .collect();
            if all.len() < 2 || rng.below(4) == 0 {
                names += 1;
                s.stage(&g, node(&format!("v{names}"))).unwrap();
            } else {
                let (a, b) = (&all[rng.below(all.len())], &all[rng.below(all.len())]);
                let (f, t) = (s.resolve(&g, a).unwrap(), s.resolve(&g, b).unwrap());
                if s.has_edge(&g, f, t) {
                    continue;
                }
                let closes = f == t || s.path(&g, t, f).is_some();
                let got = s.stage(&g, edge(a, b));
                assert_eq!(
                    got.is_err(),
                    closes,
                    "round {round} step {step}: {a} -> {b}: {got:?}"
                );
                if let Err(e) = got {
                    assert!(e.reason.contains("would close the cycle"), "{e}");
                }
            }
            assert_ordered(&g, &live[which]);
            if rng.below(10) == 0 {
                let batch = std::mem::take(&mut live[which]);
                // A batch the other's commit made invalid (the same
                // edge added by both) is refused whole.
                if g.commit(batch.mutations()).is_err() {
                    continue;
                }
                for k in 0..g.len() {
                    for t in g.successors(k) {
                        assert!(g.topo_order(k) < g.topo_order(t));
                    }
                }
                // A batch that the commit made cyclic is doomed (its
                // commit fails); start it afresh.
                let other = 1 - which;
                let mut check = live[other].clone();
                check.sync_order(&g);
                if !acyclic(&g, &check) {
                    assert!(g.validate(live[other].mutations().to_vec()).is_err());
                    live[other] = Staging::default();
                }
            }
        }
    }
}

/// A region as sorted ids, for comparing two computations of it.
type Canon = (
    Vec<String>,
    Vec<(String, String)>,
    Vec<String>,
    Vec<String>,
    bool,
);

fn canon(r: &Region) -> Canon {
    let id = |k: usize| r.nodes[k].id.clone();
    let mut nodes: Vec<String> = (0..r.nodes.len()).map(id).collect();
    let mut edges: Vec<(String, String)> = r.edges.iter().map(|&(a, b)| (id(a), id(b))).collect();
    let mut from: Vec<String> = r.from_edges.iter().map(|&k| id(k)).collect();
    let mut to: Vec<String> = r.to_edges.iter().map(|&k| id(k)).collect();
    nodes.sort();
    edges.sort();
    from.sort();
    to.sort();
    (nodes, edges, from, to, r.direct)
}

#[test]
fn region_index_agrees_with_a_full_search() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..30 {
        let mut g = Graph::new();
        let base: Vec<Mutation> = (0..12).map(|i| node(&format!("v{i}"))).collect();
        g.commit(&base).unwrap();
        for k in 0..4 {
            let (a, b) = (rng.below(6), 6 + rng.below(6));
            let (f, t) = (format!("v{a}"), format!("v{b}"));
            if k > 0 && rng.below(2) == 0 {
                continue;
            }
            g.commit(&[Mutation::AddPromise {
                promise: Promise::shape(&f, &t, "any".parse().unwrap()),
            }])
            .unwrap();
        }
        let mut names = 12;
        for step in 0..60 {
            let mut s = Staging::default();
            for _ in 0..1 + rng.below(6) {
                let all: Vec<String> = g
                    .nodes()
                    .iter()
                    .map(|n| n.id.clone())
                    .chain((0..s.new_nodes.len()).map(|k| s.name(&g, Ref::New(k)).to_string()))
                    .collect();
                if rng.below(3) == 0 {
                    names += 1;
                    s.stage(&g, node(&format!("v{names}"))).unwrap();
                } else {
                    let (a, b) = (&all[rng.below(all.len())], &all[rng.below(all.len())]);
                    let _ = s.stage(&g, edge(a, b));
                }
            }
            for r in g.regions().iter().filter(|r| r.open) {
                let (from, to) = (&g.node(r.from).id, &g.node(r.to).id);
                let (full, _) = s.region(&g, from, to).unwrap();
                // Touched: a new edge inside the region or on its
                // boundary (`to -> from`, which leaves the region
                // unfilled, does not count).
                let ends: HashSet<&str> = full
                    .nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .chain([from.as_str(), to.as_str()])
                    .collect();
                let touched = s
                    .new_edges(&g)
                    .any(|(a, b)| ends.contains(a) && ends.contains(b) && !(a == to && b == from));
                let indexed = s.touched_region(&g, r);
                assert_eq!(
                    indexed.is_some(),
                    touched,
                    "round {round} step {step}: touched"
                );
                if let Some(indexed) = indexed {
                    assert_eq!(canon(&indexed), canon(&full), "round {round} step {step}");
                }
            }
            g.commit(s.mutations()).unwrap();
            // Now and then a region's `to` starts (the index closes)
            // and goes back to pending (it opens again, rebuilt).
            if rng.below(8) == 0 {
                let i = 6 + rng.below(6);
                g.set_state(i, NodeState::Running);
                g.set_state(i, NodeState::Pending);
            }
            for r in g.regions().iter().filter(|r| r.open) {
                let (from, to) = (&g.node(r.from).id, &g.node(r.to).id);
                let full = crate::promise::committed_region(&g, from, to).unwrap();
                assert_eq!(
                    canon(&Staging::indexed_region(&g, r)),
                    canon(&full),
                    "round {round} step {step}: committed"
                );
            }
        }
    }
}

#[test]
fn a_batch_validated_in_place_reads_like_one_taken() {
    let mut g = Graph::new();
    g.commit(&[node("a"), node("z")]).unwrap();
    let batch = vec![
        node("b"),
        Mutation::add_node("c", Task::python("x.py").named("C")),
        edge("a", "b"),
        edge("b", "c"),
        edge("c", "z"),
        Mutation::AddPromise {
            promise: Promise::shape("a", "z", "any".parse().unwrap()),
        },
    ];
    let taken = g.stage_all(batch.clone()).unwrap();
    let in_place = g.stage_borrowed(&batch).unwrap();
    assert_eq!(in_place.mutations(), &batch[..], "not copied, as given");
    assert_eq!(taken.mutations()[0], {
        let mut m = batch[0].clone();
        fill_task_name(&mut m);
        m
    });
    for id in ["a", "b", "c", "z", "nope"] {
        assert_eq!(in_place.lookup(&g, id), taken.lookup(&g, id), "{id}");
    }
    assert_eq!(in_place.lookup(&g, "b"), Some(("b", "b")));
    assert_eq!(in_place.lookup(&g, "c"), Some(("c", "C")));
    assert_eq!(
        in_place.new_edges(&g).collect::<Vec<_>>(),
        taken.new_edges(&g).collect::<Vec<_>>()
    );
    let (r1, t1) = in_place.region(&g, "a", "z").unwrap();
    let (r2, t2) = taken.region(&g, "a", "z").unwrap();
    assert_eq!((canon(&r1), t1), (canon(&r2), t2));
    assert_eq!(r1.nodes[0].task, "b", "an empty task name is the id");
    assert_eq!(
        crate::promise::check_batch(&g, &in_place, None),
        crate::promise::check_batch(&g, &taken, None)
    );
    // Staging one more mutation takes a copy of the batch first.
    let (mut in_place, mut taken) = (in_place, taken);
    in_place.stage(&g, node("d")).unwrap();
    taken.stage(&g, node("d")).unwrap();
    assert_eq!(in_place.mutations(), taken.mutations());
    let err = in_place.stage(&g, node("b")).unwrap_err();
    assert!(err.reason.contains("earlier in this batch"), "{err}");
}

#[test]
fn an_edge_into_a_waiting_end_moves_it_last_without_searching_back() {
    let mut g = Graph::new();
    g.commit(&[node("A"), node("B")]).unwrap();
    g.commit(&[node("M"), edge("A", "M"), edge("M", "B")])
        .unwrap();
    let (a, b, m) = (0, 1, 2);
    assert!(g.topo_order(a) < g.topo_order(m));
    assert!(g.topo_order(m) < g.topo_order(b));
    let mut s = Staging::default();
    s.stage(&g, node("N")).unwrap();
    s.stage(&g, edge("N", "A")).unwrap();
    assert_ordered(&g, &s);
    let err = s.stage(&g, edge("B", "N")).unwrap_err();
    assert!(
        err.reason.contains("`N` -> `A` -> `M` -> `B` -> `N`"),
        "{err}"
    );
}
