use super::*;
use crate::model::{output, EdgeRef};
use crate::promise::shape::Shape;
use serde_json::json;

fn node(id: &str) -> Mutation {
    Mutation::add_node(id, Task::python("x.py"))
}

#[test]
fn positions_and_staged_ids_resolve_without_copies_of_the_ids() {
    let mut g = Graph::new();
    let batch: Vec<Mutation> = (0..1000)
        .map(|i| node(&format!("n{i}")))
        .chain((1..1000).map(|i| edge(&format!("n{}", i - 1), &format!("n{i}"))))
        .collect();
    let staging = g.stage_all(batch.clone()).unwrap();
    assert_eq!(staging.lookup(&g, "n999"), Some(("n999", "n999")));
    assert!(staging.lookup(&g, "n1000").is_none());
    g.commit(&batch).unwrap();
    for i in 0..1000 {
        assert_eq!(g.position(&format!("n{i}")), Some(i));
    }
    assert_eq!(g.position("n1000"), None);
    assert!(g.has_edge(0, 1));
    // A batch against the graph resolves old and new ids alike.
    let mut more = Staging::default();
    more.stage(&g, node("m")).unwrap();
    more.stage(&g, edge("n5", "m")).unwrap();
    let err = more.stage(&g, node("n7")).unwrap_err();
    assert!(
        err.to_string().contains("already used in the graph"),
        "{err}"
    );
    let err = more.stage(&g, node("m")).unwrap_err();
    assert!(err.to_string().contains("earlier in this batch"), "{err}");
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
fn limits_hold_for_every_batch() {
    let reason = |m: Mutation| chain().commit(&[m]).unwrap_err().reason;
    // A long id whose 32nd byte is inside a character (this panicked).
    let id = format!("{}é{}", "a".repeat(31), "b".repeat(300));
    let r = reason(node(&id));
    assert!(
        r.contains("longer than the limit of 256 (MAX_NAME_BYTES)"),
        "{r}"
    );
    let r = reason(Mutation::add_node(
        "x",
        Task::python("x.py").named("n".repeat(300)),
    ));
    assert!(r.contains("task name"), "{r}");
    let deep = (0..65).fold(json!(1), |v, _| json!([v]));
    let r = reason(Mutation::AddNode {
        id: "x".into(),
        task: Box::new(Task::python("x.py")),
        inputs: deep.clone(),
        attrs: Attrs::new(),
    });
    assert!(
        r.contains("inputs: JSON nested deeper than 64 levels"),
        "{r}"
    );
    let mut attrs = Attrs::new();
    attrs.insert("label".into(), deep[0].clone());
    let r = reason(Mutation::SetAttrs {
        node: Some("a".into()),
        edge: None,
        attrs,
    });
    assert!(r.contains("attrs: JSON nested deeper than 64"), "{r}");
    let r = reason(Mutation::AddPromise {
        promise: Promise::OnlyNodes {
            pattern: "*".repeat(2000).as_str().into(),
        },
    });
    assert!(r.contains("MAX_PATTERN_BYTES"), "{r}");
    let mut shape = Shape::task("M");
    for _ in 0..64 {
        shape = Shape::repeat(shape, 0, None);
    }
    let r = reason(Mutation::AddPromise {
        promise: Promise::shape("a", "c", shape),
    });
    assert!(r.contains("MAX_SHAPE_DEPTH"), "{r}");
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
        task: Box::new(Task::python("d.py")),
        inputs: json!({"x": output("c"), "y": output("c")}),
        attrs: Attrs::new(),
    };
    g.commit(&[with_ref]).unwrap();
    assert!(g.has_edge(2, 3));
    assert_eq!(g.unmet(3), 1);
    let bad = Mutation::AddNode {
        id: "e".into(),
        task: Box::new(Task::python("e.py")),
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
fn a_closed_region_is_not_indexed_and_unfilled_regions_gate() {
    let mut g = Graph::new();
    g.commit(&[
        node("A"),
        node("B"),
        Mutation::AddPromise {
            promise: Promise::shape("A", "B", "M*".parse().unwrap()),
        },
    ])
    .unwrap();
    assert_eq!(g.shapes_into(1).collect::<Vec<_>>(), vec![0]);
    assert_eq!(g.region_unfilled(0), Some(true));
    g.commit(&[node("M"), edge("A", "M"), edge("M", "B")])
        .unwrap();
    assert_eq!(g.region_unfilled(0), Some(false));
    g.set_state(1, NodeState::Running);
    assert_eq!(g.region_unfilled(0), None, "closed once `to` started");
    g.set_state(1, NodeState::Ready);
    assert_eq!(g.region_unfilled(0), Some(false), "open again, rebuilt");
}

#[test]
fn applying_owned_mutations_builds_the_same_graph() {
    let mut base = chain();
    base.set_state(0, NodeState::Succeeded);
    let batch = vec![
        node("d"),
        Mutation::AddNode {
            id: "e".into(),
            task: Box::new(Task::python("e.py")),
            inputs: json!({"x": output("d"), "y": output("a")}),
            attrs: Attrs::new(),
        },
        edge("c", "d"),
        edge("d", "b"),
        Mutation::SetAttrs {
            node: Some("e".into()),
            edge: None,
            attrs: [("label".to_string(), json!("E"))].into_iter().collect(),
        },
        Mutation::AddPromise {
            promise: Promise::shape("a", "e", "any".parse().unwrap()),
        },
    ];
    let err = base.validate(batch.clone()).unwrap_err();
    assert!(err.reason.contains("cycle"), "{err}");
    let in_place = base.stage_borrowed(&batch).map(drop).unwrap_err();
    assert_eq!(in_place, err, "validated in place: the same error");
    let batch: Vec<Mutation> = batch.into_iter().filter(|m| *m != edge("d", "b")).collect();
    let valid = base.validate(batch.clone()).unwrap();
    assert_eq!(base.stage_borrowed(&batch).unwrap().mutations(), &batch[..]);
    assert_eq!(base.stage_borrowed(&batch).unwrap().into_mutations(), valid);
    let (mut by_ref, mut owned, mut cloned) = (base.clone(), base.clone(), base);
    let a = by_ref.apply_unchecked(&valid);
    let b = owned.apply_owned(valid);
    // The batch as given (task names not filled in), copied one
    // mutation at a time.
    let c = cloned.apply_cloned(&batch);
    assert_eq!(a.touched, b.touched);
    assert_eq!(c.touched, b.touched);
    assert_eq!(cloned.nodes(), owned.nodes());
    assert_eq!(cloned.edges(), owned.edges());
    assert_eq!(cloned.promises(), owned.promises());
    assert_eq!(by_ref.nodes(), owned.nodes());
    assert_eq!(by_ref.edges(), owned.edges());
    assert_eq!(by_ref.promises(), owned.promises());
    for i in 0..owned.len() {
        assert_eq!(by_ref.unmet(i), owned.unmet(i));
        assert_eq!(by_ref.topo_order(i), owned.topo_order(i));
        assert_eq!(
            by_ref.successors(i).collect::<Vec<_>>(),
            owned.successors(i).collect::<Vec<_>>()
        );
    }
    assert_eq!(owned.region_unfilled(0), by_ref.region_unfilled(0));
}

#[test]
fn set_state_frees_successors() {
    let mut g = chain();
    assert_eq!(g.set_state(0, NodeState::Succeeded), vec![1]);
    assert_eq!(g.unmet(1), 0);
}
