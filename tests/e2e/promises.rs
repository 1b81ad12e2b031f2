//! Promises enforced by the runtime, family by family: an allowed batch
//! commits, a violating one ends the run `promise_broken` with a record
//! that names the promise, and nothing of it (or downstream) happens.

use orch::{NodeState, Promise, RunStatus, Shape, Task};
use serde_json::{json, Value};

use crate::util::*;

/// Performs `ops` (add_node / add_edge / promise) from its inputs; any
/// error reply propagates (the attempt fails).
const MUTATOR: &str = r#"
import orch
ctx = orch.start()
for op in (ctx.inputs or {}).get("ops", []):
    kind = op["op"]
    if kind == "add_node":
        ctx.add_node(op["id"], script="noop.py", name=op.get("task"))
    elif kind == "add_edge":
        ctx.add_edge(op["from"], op["to"])
    elif kind == "promise":
        ctx.promise(op["promise"])
ctx.output("done")
"#;

fn space() -> Space {
    let s = Space::new();
    s.write("mutator.py", MUTATOR)
        .write("noop.py", "import orch\norch.start()\norch.output('ok')\n");
    s
}

/// `start -> t -> end`; `t` runs `ops`.
fn run(promises: &[Promise], ops: Value) -> (Space, orch::RunExport) {
    run_wired(promises, ops, true)
}

/// `start -> t` and `end`, with the edge `t -> end` when `wired` (a shape
/// promise between `t` and `end` wires them instead).
fn run_wired(promises: &[Promise], ops: Value, wired: bool) -> (Space, orch::RunExport) {
    let space = space();
    let mut wf = space.workflow("promises");
    wf.node("start", Task::python("noop.py"));
    wf.node("t", Task::python("mutator.py")).input("ops", ops);
    wf.node("end", Task::python("noop.py"));
    wf.edge("start", "t");
    if wired {
        wf.edge("t", "end");
    }
    for p in promises {
        wf.promise(p.clone());
    }
    let (_, ex) = space.run(&wf);
    (space, ex)
}

fn assert_kept(promises: &[Promise], ops: Value) -> orch::RunExport {
    let (_, ex) = run(promises, ops);
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    assert!(ex.violations.is_empty());
    ex
}

fn assert_broken(
    promises: &[Promise],
    ops: Value,
    promise_text: &str,
    absent: &[&str],
) -> orch::RunExport {
    let (_, ex) = run(promises, ops);
    assert_eq!(ex.status, RunStatus::PromiseBroken, "{:?}", ex.reason);
    assert_eq!(ex.violations.len(), 1, "{:?}", ex.violations);
    let v = &ex.violations[0];
    assert_eq!(v.promise_text, promise_text, "{v:?}");
    assert_eq!(v.node.as_deref(), Some("t"));
    assert_eq!(v.task.as_deref(), Some("t"));
    assert_eq!(v.attempt, Some(1));
    assert!(ex.reason.as_deref().unwrap().contains(promise_text));
    for id in absent {
        assert!(ex.node(id).is_none(), "`{id}` must not be in the graph");
    }
    assert_eq!(ex.node("t").unwrap().state, NodeState::Failed);
    assert!(
        ex.node("end").unwrap().attempts.is_empty(),
        "nothing downstream ran"
    );
    ex
}

fn add(id: &str) -> Value {
    json!({"op": "add_node", "id": id})
}
fn add_task(id: &str, task: &str) -> Value {
    json!({"op": "add_node", "id": id, "task": task})
}
fn edge(a: &str, b: &str) -> Value {
    json!({"op": "add_edge", "from": a, "to": b})
}

#[test]
fn static_allows_nothing() {
    assert_kept(&[Promise::Static {}], json!([]));
    assert_broken(&[Promise::Static {}], json!([add("x")]), "static", &["x"]);
}

#[test]
fn no_new_nodes_by_anyone_or_by_selected() {
    let p = Promise::NoNewNodes { by: None };
    assert_kept(std::slice::from_ref(&p), json!([edge("start", "end")]));
    assert_broken(&[p], json!([add("x")]), "no_new_nodes", &["x"]);
    let by_other = Promise::NoNewNodes {
        by: Some("start".into()),
    };
    let ex = assert_kept(&[by_other], json!([add("x"), edge("t", "x")]));
    assert!(ex.node("x").is_some());
    let by_t = Promise::NoNewNodes {
        by: Some("t".into()),
    };
    assert_broken(&[by_t], json!([add("x")]), "no_new_nodes(by t)", &["x"]);
}

#[test]
fn no_new_edges() {
    let p = Promise::NoNewEdges { by: None };
    assert_kept(std::slice::from_ref(&p), json!([add("x")]));
    let ex = assert_broken(
        &[p],
        json!([add("x"), edge("t", "x")]),
        "no_new_edges",
        &["x"],
    );
    assert_eq!(ex.violations[0].mutation, "add_edge `t` -> `x`");
}

#[test]
fn only_nodes() {
    let p = Promise::OnlyNodes {
        pattern: "task:M".into(),
    };
    assert_kept(
        std::slice::from_ref(&p),
        json!([add_task("M_0", "M"), add_task("M_1", "M")]),
    );
    let ex = assert_broken(
        &[p],
        json!([add_task("M_0", "M"), add_task("X", "other")]),
        "only_nodes(task:M)",
        &["M_0", "X"],
    );
    assert!(ex.violations[0].message.contains("node `X` (task `other`)"));
}

#[test]
fn only_edges() {
    let p = Promise::OnlyEdges {
        from: "t".into(),
        to: "M*".into(),
    };
    assert_kept(
        std::slice::from_ref(&p),
        json!([add("M_0"), edge("t", "M_0")]),
    );
    assert_broken(
        &[p],
        json!([add("M_0"), edge("M_0", "end")]),
        "only_edges(t → M*)",
        &["M_0"],
    );
}

#[test]
fn no_edges_from_and_into() {
    let from = Promise::NoEdgesFrom { node: "t".into() };
    assert_kept(
        std::slice::from_ref(&from),
        json!([add("x"), edge("x", "end")]),
    );
    assert_broken(
        &[from],
        json!([add("x"), edge("t", "x")]),
        "no_edges_from(t)",
        &["x"],
    );
    let into = Promise::NoEdgesInto { node: "end".into() };
    assert_kept(
        std::slice::from_ref(&into),
        json!([add("x"), edge("t", "x")]),
    );
    assert_broken(
        &[into],
        json!([add("x"), edge("x", "end")]),
        "no_edges_into(end)",
        &["x"],
    );
}

/// `t` fills the region between `t` and `end` under `shape`.
fn shape_run(shape: &str, ops: Value) -> orch::RunExport {
    let p = Promise::shape("t", "end", shape.parse::<Shape>().unwrap());
    run_wired(&[p], ops, false).1
}

#[test]
fn shape_regions_must_be_instances() {
    // A map of two, and the empty map (the single edge).
    let ex = shape_run(
        "M*",
        json!([
            add_task("M_0", "M"),
            edge("t", "M_0"),
            edge("M_0", "end"),
            add_task("M_1", "M"),
            edge("t", "M_1"),
            edge("M_1", "end")
        ]),
    );
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    let end = ex.node("end").unwrap();
    assert!(
        end.started_at >= ex.node("M_1").unwrap().finished_at,
        "end waited for the region"
    );
    let ex = shape_run("M*", json!([edge("t", "end")]));
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);

    // A wrong task name in the map.
    let ex = shape_run(
        "M*",
        json!([add_task("X_0", "X"), edge("t", "X_0"), edge("X_0", "end")]),
    );
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    assert!(ex.node("X_0").is_none());
    assert!(ex.violations[0].message.contains("not an instance of `M*`"));
    assert!(ex.node("end").unwrap().attempts.is_empty());

    // The direct edge left beside map nodes.
    let ex = shape_run(
        "M*",
        json!([
            add_task("M_0", "M"),
            edge("t", "M_0"),
            edge("M_0", "end"),
            edge("t", "end")
        ]),
    );
    assert_eq!(ex.status, RunStatus::PromiseBroken);

    // Both alternatives of a branch.
    let ex = shape_run(
        "L | R",
        json!([
            add("L"),
            add("R"),
            edge("t", "L"),
            edge("L", "end"),
            edge("t", "R"),
            edge("R", "end")
        ]),
    );
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    assert!(ex.node("L").is_none() && ex.node("R").is_none());
    let ex = shape_run("L | R", json!([add("R"), edge("t", "R"), edge("R", "end")]));
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
}

#[test]
fn an_unfilled_region_breaks_its_promise_when_nothing_can_fill_it() {
    let ex = shape_run("M*", json!([]));
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    assert!(
        ex.violations[0].message.contains("was never filled"),
        "{:?}",
        ex.violations
    );
    assert!(ex.node("end").unwrap().attempts.is_empty());
    assert_eq!(ex.node("t").unwrap().state, NodeState::Succeeded);
}

#[test]
fn a_task_can_promise_at_run_time() {
    // `t` adds x and promises that no new edge goes into x; `later` then
    // tries to add one.
    let space = space();
    let mut wf = space.workflow("runtime_promise");
    wf.node("t", Task::python("mutator.py")).input(
        "ops",
        json!([
            add("x"), edge("t", "x"), add("z"), edge("t", "z"),
            {"op": "promise", "promise": {"no_edges_into": {"node": "x"}}}
        ]),
    );
    wf.node("later", Task::python("mutator.py"))
        .input("ops", json!([add("w"), edge("w", "x")]));
    wf.edge("t", "later");
    let (_, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::PromiseBroken, "{:?}", ex.reason);
    assert_eq!(ex.promises.len(), 1);
    assert_eq!(ex.violations[0].promise_text, "no_edges_into(x)");
    assert_eq!(ex.violations[0].node.as_deref(), Some("later"));
    assert!(ex.node("w").is_none());
}

#[test]
fn a_promise_broken_when_declared_is_refused() {
    // The region between start and t is the direct edge start -> t: it is
    // not an instance of `M+`.
    let space = space();
    let mut wf = space.workflow("bad_promise");
    wf.node("start", Task::python("noop.py"));
    wf.node("t", Task::python("mutator.py"));
    wf.node("u", Task::python("mutator.py")).input(
        "ops",
        json!([{"op": "promise", "promise": {"shape": {"from": "start", "to": "t", "shape": "M+"}}}]),
    );
    wf.edge("start", "t");
    wf.edge("t", "u");
    let (_, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::Failed, "{:?}", ex.reason);
    let err = ex.node("u").unwrap().attempts[0].error.clone().unwrap();
    assert!(err.contains("is broken already"), "{err}");
    assert!(ex.promises.is_empty(), "the refused promise was not added");

    // At registration, too.
    let mut wf = space.workflow("bad_registration");
    wf.node("a", Task::python("noop.py"));
    wf.node("b", Task::python("noop.py"));
    wf.edge("a", "b");
    wf.promise(Promise::shape("a", "b", "M+".parse().unwrap()));
    let err = wf.run().unwrap_err().to_string();
    assert!(err.contains("is broken already"), "{err}");

    // A malformed promise from a task is an error reply naming it.
    let mut wf = space.workflow("malformed_promise");
    wf.node("t", Task::python("mutator.py")).input(
        "ops",
        json!([{"op": "promise", "promise": {"no_new_nodez": {}}}]),
    );
    let (_, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::Failed);
    let logs = logs_text(&space, &ex.run, "t");
    assert!(
        logs.contains("not a promise") && logs.contains("no_new_nodez"),
        "{logs}"
    );
}

#[test]
fn with_parallel_attempts_a_violation_stops_the_others() {
    let space = space();
    space.write(
        "sleepy.py",
        "import time, orch\norch.start()\ntime.sleep(30)\norch.output(1)\n",
    );
    let mut wf = space.workflow("parallel_break");
    wf.max_parallel(2);
    wf.node("sleepy", Task::python("sleepy.py"));
    wf.node("t", Task::python("mutator.py"))
        .input("ops", json!([add("x")]));
    wf.promise(Promise::NoNewNodes { by: None });
    let started = std::time::Instant::now();
    let (_, ex) = space.run(&wf);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "sleepy was stopped"
    );
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    let sleepy = ex.node("sleepy").unwrap();
    assert_eq!(sleepy.state, NodeState::Cancelled);
    assert_eq!(
        sleepy.attempts[0].outcome,
        Some(orch::AttemptOutcome::Killed)
    );
}

#[test]
fn a_task_promises_the_shape_of_a_region_it_creates() {
    let space = space();
    space.write(
        "nested.py",
        r#"
import orch
ctx = orch.start()
if ctx.inputs["role"] == "root":
    ctx.add_node("x", script="nested.py", inputs={"role": "x"})
    ctx.add_node("y", script="noop.py")
    ctx.add_edge("root", "x")
    ctx.promise({"shape": {"from": "x", "to": "y", "shape": "N+"}})
else:
    for i in range(2):
        ctx.add_node(f"N_{i}", script="noop.py", name="N")
        ctx.add_edge("x", f"N_{i}")
        ctx.add_edge(f"N_{i}", "y")
"#,
    );
    let mut wf = space.workflow("nested_shape");
    wf.node("root", Task::python("nested.py"))
        .input("role", "root");
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    assert_eq!(ex.promises.len(), 1);
    let y = ex.node("y").unwrap();
    for n in ["N_0", "N_1"] {
        assert!(
            y.started_at >= ex.node(n).unwrap().finished_at,
            "y waited for {n}"
        );
    }
    assert!(!edge_set(&ex).contains(&("x".to_string(), "y".to_string())));
}
