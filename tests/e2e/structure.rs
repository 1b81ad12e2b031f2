//! Every structural rule broken at run time gives a clear error naming the
//! node ids, and leaves the committed graph untouched.

use orch::Store as _;
use orch::{RunStatus, Task};
use serde_json::{json, Value};

use crate::util::*;

const PROBE: &str = r#"
import orch
ctx = orch.start()
results = []
for op in ctx.inputs["ops"]:
    kind = op["op"]
    try:
        if kind == "add_node":
            inputs = None
            if "ref" in op:  # built here: inside t's own inputs it would be t's reference
                ref = {"$output": op["ref"]}
                if "pointer" in op:
                    ref["pointer"] = op["pointer"]
                inputs = {"x": ref}
            ctx.add_node(op["id"], script="noop.py", inputs=inputs)
        elif kind == "add_edge":
            ctx.add_edge(op["from"], op["to"])
        elif kind == "set_attrs":
            ctx.set_attrs(op["node"], op["attrs"])
        results.append(None)
    except orch.OrchError as e:
        if ctx.inputs.get("raise"):
            raise
        results.append(str(e))
ctx.output({"results": results})
"#;

fn space() -> Space {
    let s = Space::new();
    s.write("probe.py", PROBE)
        .write("noop.py", "import orch\norch.start()\norch.output('ok')\n");
    s
}

/// Runs the probe node `t` (after `before`, before `after`) with `ops` and
/// returns its per-op results and the export.
fn probe(ops: Value, raise: bool, extra: &[(&str, &str)]) -> (Space, Vec<Value>, orch::RunExport) {
    let space = space();
    let mut wf = space.workflow("probe");
    wf.node("first", Task::python("noop.py"));
    wf.node("t", Task::python("probe.py"))
        .input("ops", ops)
        .input("raise", raise);
    wf.node("p", Task::python("noop.py"));
    wf.node("q", Task::python("noop.py"));
    wf.edge("first", "t");
    wf.edge("t", "p");
    wf.edge("p", "q");
    for (a, b) in extra {
        wf.edge(*a, *b);
    }
    let (_, ex) = space.run(&wf);
    let results = ex
        .node("t")
        .and_then(|n| n.output.as_ref())
        .map(|o| o["results"].as_array().unwrap().clone())
        .unwrap_or_default();
    (space, results, ex)
}

fn single_error(ops: Value) -> (String, orch::RunExport) {
    let (_, results, ex) = probe(ops, false, &[]);
    assert_eq!(ex.status, RunStatus::Succeeded, "the task caught the error");
    assert_eq!(results.len(), 1);
    (results[0].as_str().expect("an error").to_string(), ex)
}

fn registered_edges() -> std::collections::BTreeSet<(String, String)> {
    edges(&[("first", "t"), ("t", "p"), ("p", "q")])
}

#[test]
fn duplicate_node_id_is_refused() {
    let (err, ex) = single_error(json!([{"op": "add_node", "id": "p"}]));
    assert!(err.contains("add_node `p`"), "{err}");
    assert!(err.contains("node id `p` is already used"), "{err}");
    assert_eq!(ex.nodes.len(), 4);
    assert_eq!(edge_set(&ex), registered_edges());
}

#[test]
fn edge_into_a_started_node_is_refused() {
    let (err, ex) = single_error(json!([{"op": "add_edge", "from": "t", "to": "first"}]));
    assert!(err.contains("add_edge `t` -> `first`"), "{err}");
    assert!(
        err.contains("node `first` already started (state succeeded)"),
        "{err}"
    );
    assert_eq!(edge_set(&ex), registered_edges());
}

#[test]
fn a_cycle_is_refused_and_named() {
    let (err, ex) = single_error(json!([{"op": "add_edge", "from": "q", "to": "p"}]));
    assert!(
        err.contains("would close the cycle `p` -> `q` -> `p`"),
        "{err}"
    );
    assert_eq!(edge_set(&ex), registered_edges());
}

#[test]
fn an_unknown_node_is_refused() {
    let (err, ex) = single_error(json!([{"op": "add_edge", "from": "t", "to": "ghost"}]));
    assert!(err.contains("unknown node `ghost`"), "{err}");
    assert_eq!(edge_set(&ex), registered_edges());
}

#[test]
fn a_bad_input_reference_is_refused() {
    let (err, ex) = single_error(json!([
        {"op": "add_node", "id": "y", "ref": "ghost"}
    ]));
    assert!(err.contains("add_node `y`"), "{err}");
    assert!(err.contains("the output of `ghost`"), "{err}");
    assert!(ex.node("y").is_none());
    let (err, _) = single_error(json!([
        {"op": "add_node", "id": "y", "ref": "p", "pointer": 3}
    ]));
    assert!(err.contains("JSON pointer"), "{err}");
}

#[test]
fn valid_mutations_commit_beside_rejected_ones() {
    let (_, results, ex) = probe(
        json!([
            {"op": "add_node", "id": "fresh"},
            {"op": "add_edge", "from": "t", "to": "fresh"},
            {"op": "add_edge", "from": "fresh", "to": "q"},
            {"op": "add_edge", "from": "t", "to": "ghost"},
            {"op": "set_attrs", "node": "fresh", "attrs": {"color": "blue"}},
        ]),
        false,
        &[],
    );
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert!(results[0].is_null() && results[1].is_null() && results[2].is_null());
    assert!(results[3].as_str().unwrap().contains("ghost"));
    let fresh = ex.node("fresh").expect("committed");
    assert_eq!(fresh.attrs["color"], "blue");
    assert_eq!(fresh.state, orch::NodeState::Succeeded);
    // q waited for the node added at run time.
    let q = ex.node("q").unwrap();
    assert!(q.started_at >= fresh.finished_at);
}

#[test]
fn an_uncaught_error_fails_the_attempt_and_discards_its_whole_batch() {
    let (space, _, ex) = probe(
        json!([
            {"op": "add_node", "id": "fresh"},
            {"op": "add_edge", "from": "t", "to": "fresh"},
            {"op": "add_edge", "from": "t", "to": "ghost"},
        ]),
        true,
        &[],
    );
    assert_eq!(ex.status, RunStatus::Failed);
    assert!(ex.node("fresh").is_none(), "no structural trace");
    assert_eq!(edge_set(&ex), registered_edges());
    let t = ex.node("t").unwrap();
    assert_eq!(t.state, orch::NodeState::Failed);
    assert_eq!(t.attempts[0].exit_code, Some(1));
    assert!(
        ex.node("p").unwrap().attempts.is_empty(),
        "nothing downstream ran"
    );
    let logs = logs_text(&space, &ex.run, "t");
    assert!(logs.contains("unknown node `ghost`"), "{logs}");
    assert!(ex.reason.as_deref().unwrap().contains("node `t` failed"));
}

#[test]
fn registration_is_validated_like_any_batch() {
    let space = space();
    let mut wf = space.workflow("cyclic");
    wf.node("a", Task::python("noop.py"));
    wf.node("b", Task::python("noop.py"));
    wf.node("c", Task::python("noop.py"));
    wf.edge("a", "b");
    wf.edge("b", "c");
    wf.edge("c", "a");
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("workflow `cyclic` cannot be registered"),
        "{err}"
    );
    assert!(err.contains("add_edge `c` -> `a`"), "{err}");
    assert!(err.contains("`a` -> `b` -> `c` -> `a`"), "{err}");
    assert!(!space.db().exists() || space.store().runs().unwrap().is_empty());

    let mut wf = space.workflow("dup");
    wf.node("a", Task::python("noop.py"));
    wf.node("a", Task::python("noop.py"));
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("node id `a` is already used earlier in this batch"),
        "{err}"
    );

    let mut wf = space.workflow("dangling");
    wf.node("a", Task::python("noop.py"));
    wf.edge("a", "nowhere");
    let err = wf.run().unwrap_err().to_string();
    assert!(err.contains("unknown node `nowhere`"), "{err}");
}

#[test]
fn an_attempt_batch_past_its_cap_is_refused_mutation_by_mutation() {
    // The cap is a million; ORCH_TEST_MAX_BATCH lowers it in a separate
    // orchestrator process (the durable_chain example runs `sleep.py`).
    let space = Space::new();
    space
        .write("noop.py", "import orch\norch.start()\norch.output('ok')\n")
        .write(
            "sleep.py",
            r#"
import orch
ctx = orch.start()
refused = []
for i in range(12):
    try:
        ctx.add_node(f"n{i}", script="noop.py")
    except orch.OrchError as e:
        refused.append(str(e))
orch.output({"refused": len(refused), "first": refused[0]})
"#,
        );
    let mut chain =
        crate::util::start_chain_with(&space, 1, 0, &[("ORCH_TEST_MAX_BATCH", "10")], &[]);
    assert!(chain.wait().unwrap().success());
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let out = &ex.node("t000").unwrap().output;
    assert_eq!(out.as_ref().unwrap()["refused"], 2, "{out:?}");
    let first = out.as_ref().unwrap()["first"].as_str().unwrap().to_string();
    assert!(
        first.contains(
            "the attempt's batch already holds 10 mutations, the most one attempt may send"
        ),
        "{first}"
    );
    // The ten it kept were committed and ran.
    assert_eq!(ex.nodes.len(), 11);
}
