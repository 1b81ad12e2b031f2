//! Rules (SPEC §9): fired once, after the predicate holds, as a batch with
//! origin `rule:<id>`, checked against every promise, exactly once across
//! crashes; `closed(pattern)` never holds while a matching node can still
//! appear.

use orch::Store as _;

use orch::model::{collect, Predicate, Rule};
use orch::picture::outlook::{outlook, Options, PicKind};
use orch::{Event, EventKind, Mutation, NodeState, Origin, Promise, RunState, RunStatus, Task};

use crate::util::*;

fn events(space: &Space, run: &str) -> Vec<Event> {
    space.store().events(run, None).unwrap()
}

/// The positions (in the history) of the batches a rule committed.
fn firings(events: &[Event], rule: &str) -> Vec<usize> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(&e.kind, EventKind::BatchCommitted { origin: Origin::Rule { rule: r }, .. } if r == rule)
        })
        .map(|(k, _)| k)
        .collect()
}

/// The position of the batch that added node `id`, with the task name.
fn added_at(events: &[Event], id: &str) -> Option<(usize, String)> {
    events.iter().enumerate().find_map(|(k, e)| match &e.kind {
        EventKind::BatchCommitted { mutations, .. } => mutations.iter().find_map(|m| match m {
            Mutation::AddNode { id: n, task, .. } if n == id => Some((k, task.name.clone())),
            _ => None,
        }),
        _ => None,
    })
}

/// The position of the event that set `node` to `state`.
fn state_at(events: &[Event], node: &str, state: NodeState) -> usize {
    events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::NodeState { node: n, state: s } if n == node && *s == state))
        .unwrap_or_else(|| panic!("`{node}` never became {state}"))
}

#[test]
fn late_merge_merges_every_pdf_after_the_last_that_can_exist() {
    let space = Space::new();
    for (seed, n) in [("1", "1"), ("2", "3"), ("3", "4"), ("4", "2")] {
        let out = space.example(
            "late_merge",
            &[("ORCH_EXAMPLE_SEED", seed), ("ORCH_EXAMPLE_N", n)],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = printed_run(&out);
        let ex = space.export(&run);
        assert_eq!(ex.status, RunStatus::Succeeded);
        let ev = events(&space, &run);
        let fired = firings(&ev, "merge");
        assert_eq!(fired.len(), 1, "seed {seed}: the rule fires once");
        let fired = fired[0];
        let pdfs: Vec<&str> = ex
            .nodes
            .iter()
            .filter(|n| n.task.name == "pdf")
            .map(|n| n.id.as_str())
            .collect();
        let chapters = n.parse::<usize>().unwrap();
        assert!(
            pdfs.len() > chapters,
            "seed {seed}: cover and a pdf per chapter: {pdfs:?}"
        );
        for p in &pdfs {
            // Every producer appeared before the rule fired, and merge waits
            // for each through the edge its collection implies.
            let (k, _) = added_at(&ev, p).unwrap();
            assert!(
                k < fired,
                "seed {seed}: `{p}` was added after the merge rule fired"
            );
            assert!(
                ex.edges.iter().any(|e| e.from == *p && e.to == "merge"),
                "seed {seed}: {p} -> merge"
            );
            assert!(
                state_at(&ev, p, NodeState::Succeeded) < state_at(&ev, "merge", NodeState::Running),
                "seed {seed}: merge ran before `{p}` succeeded"
            );
        }
        // The rule fired as soon as no producer could appear: after the
        // last chapter (the producers' parents) succeeded.
        for c in (0..chapters).map(|i| format!("chapter_{i}")) {
            assert!(
                state_at(&ev, &c, NodeState::Succeeded) < fired,
                "seed {seed}: {c}"
            );
        }
        let merged = ex.node("merge").unwrap().output.as_ref().unwrap()["merged"].clone();
        let want: Vec<String> = pdfs.iter().map(|p| format!("{p}.pdf")).collect();
        assert_eq!(
            merged,
            serde_json::json!(want),
            "seed {seed}: in the order added"
        );
        // The picture before the firing shows the rule, waiting for the
        // chapters; after, nothing of it.
        let before = outlook(&RunState::replay(&run, &ev[..fired]), Options::default());
        let rule = before
            .nodes
            .iter()
            .find(|n| n.kind == PicKind::Rule)
            .expect("the rule is drawn before it fires");
        assert_eq!(rule.label, "rule merge: closed(task:pdf)");
        let after = outlook(&RunState::replay(&run, &ev[..=fired]), Options::default());
        assert!(!after.nodes.iter().any(|n| n.kind == PicKind::Rule));
        let registered = ev
            .iter()
            .position(|e| matches!(e.kind, EventKind::BatchCommitted { .. }))
            .unwrap();
        let at_start = outlook(
            &RunState::replay(&run, &ev[..=registered]),
            Options::default(),
        );
        let waits: Vec<&str> = at_start
            .edges
            .iter()
            .filter(|e| e.to == "~rule:merge")
            .map(|e| e.from.as_str())
            .collect();
        assert_eq!(waits, ["plan"], "the cover cannot add producers, plan can");
    }
}

const ADD_RULE: &str = r#"
import orch
ctx = orch.start()
for i in range(3):
    ctx.add_node(f"w{i}", argv=["true"], name="work")
    ctx.add_edge(ctx.node, f"w{i}")
ctx.rule("sum", {"count": {"pattern": "task:work", "at_least": 3, "state": "succeeded"}}, [
    {"op": "add_node", "id": "total", "task": {"kind": "python", "script": "total.py"},
     "inputs": {"parts": {"$collect": "task:work"}}},
])
try:
    ctx.rule("sum", {"closed": "x"}, [{"op": "add_edge", "from": "a", "to": "b"}])
except orch.OrchError as e:
    ctx.log(f"refused: {e}")
ctx.output("declared")
"#;

const TOTAL: &str = r#"
import orch
ctx = orch.start()
ctx.output(len(ctx.inputs["parts"]))
"#;

#[test]
fn a_task_declares_a_rule_that_fires_once_when_its_count_is_reached() {
    let space = Space::new();
    space.write("declare.py", ADD_RULE).write("total.py", TOTAL);
    let mut wf = space.workflow("count_rule");
    wf.node("declare", Task::python("declare.py"));
    let (outcome, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    let ev = events(&space, &outcome.run);
    let fired = firings(&ev, "sum");
    assert_eq!(fired.len(), 1);
    for w in ["w0", "w1", "w2"] {
        assert!(state_at(&ev, w, NodeState::Succeeded) < fired[0]);
    }
    assert_eq!(ex.node("total").unwrap().output, Some(serde_json::json!(3)));
    let logs = logs_text(&space, &outcome.run, "declare");
    assert!(
        logs.contains("refused: add_rule `sum`: rule id `sum` is already used"),
        "{logs}"
    );
}

#[test]
fn a_rule_whose_body_breaks_a_promise_ends_the_run_promise_broken() {
    let space = Space::new();
    let mut wf = space.workflow("broken_rule");
    wf.node("a", Task::command(["true"]).named("work"));
    wf.promise(Promise::OnlyNodes {
        pattern: "task:work".into(),
    });
    wf.rule(
        Rule::new("extra", Predicate::state("a", NodeState::Succeeded)).then(Mutation::add_node(
            "extra",
            Task::command(["true"]).named("other"),
        )),
    );
    let (outcome, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    assert_eq!(ex.violations.len(), 1);
    let v = &ex.violations[0];
    assert_eq!(v.mutation, "add_node `extra`");
    assert!(
        v.message.contains("does not match `task:work`"),
        "{}",
        v.message
    );
    assert_eq!(v.node, None, "no attempt sent it");
    assert!(
        firings(&events(&space, &outcome.run), "extra").is_empty(),
        "nothing of it applied"
    );
    assert!(ex.node("extra").is_none());
}

#[test]
fn a_rule_whose_body_does_not_fit_the_graph_fails_the_run_naming_it() {
    let space = Space::new();
    let mut wf = space.workflow("misfit_rule");
    wf.node("a", Task::command(["true"]));
    wf.rule(
        Rule::new("wire", Predicate::state("a", NodeState::Succeeded))
            .then(Mutation::add_edge("a", "ghost")),
    );
    let (_, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::Failed);
    assert_eq!(
        ex.reason.as_deref(),
        Some("rule `wire` could not fire: add_edge `a` -> `ghost`: unknown node `ghost`")
    );
}

#[test]
fn a_node_that_promised_no_nodes_cannot_declare_a_rule_that_adds_some() {
    let space = Space::new();
    space.write(
        "sneak.py",
        r#"
import orch
ctx = orch.start()
ctx.rule("sneak", {"closed": "x"}, [{"op": "add_node", "id": "n", "task": {"kind": "command", "argv": ["true"]}}])
"#,
    );
    let mut wf = space.workflow("sneak");
    wf.node("quiet", Task::python("sneak.py"));
    wf.promise(Promise::NoNewNodes {
        by: Some("quiet".into()),
    });
    let (_, ex) = space.run(&wf);
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    let v = &ex.violations[0];
    assert_eq!(v.mutation, "add_rule `sneak`");
    assert!(
        v.message.contains("its rule `sneak` would: add_node `n`"),
        "{}",
        v.message
    );
}

#[test]
fn bad_rules_are_refused_at_registration_naming_them() {
    let space = Space::new();
    let mut wf = space.workflow("bad");
    wf.node("a", Task::command(["true"]));
    wf.rule(Rule::new("empty", Predicate::closed("x")));
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("add_rule `empty`") && err.contains("no mutation in its body"),
        "{err}"
    );
    let mut wf = space.workflow("bad");
    wf.node("a", Task::command(["true"]));
    let long = "x".repeat(orch::limits::MAX_PATTERN_BYTES + 1);
    wf.rule(Rule::new("long", Predicate::closed(&long)).then(Mutation::add_edge("a", "a")));
    let err = wf.run().unwrap_err().to_string();
    assert!(
        err.contains("add_rule `long`") && err.contains("MAX_PATTERN_BYTES"),
        "{err}"
    );
}

/// The orchestrator dies right before and right after the commit that
/// records the firing; resumed, the rule has fired exactly once.
#[test]
fn a_rule_fires_exactly_once_across_crashes() {
    for point in ["before_commit", "after_commit"] {
        let space = Space::new();
        let fault = format!("{point}:rule:merge");
        let out = space.example(
            "late_merge",
            &[
                ("ORCH_EXAMPLE_N", "2"),
                ("ORCH_EXAMPLE_SEED", "5"),
                ("ORCH_FAULT", &fault),
            ],
        );
        let ex = resume_killed(&space, out.status, point);
        assert_eq!(ex.status, RunStatus::Succeeded, "{point}: {:?}", ex.reason);
        let ev = events(&space, &ex.run);
        assert_eq!(firings(&ev, "merge").len(), 1, "{point}");
        let resumed = ev
            .iter()
            .position(|e| matches!(e.kind, EventKind::RunResumed { .. }))
            .unwrap();
        let fired = firings(&ev, "merge")[0];
        match point {
            "before_commit" => assert!(fired > resumed, "lost with the crash, fired on resume"),
            _ => assert!(
                fired < resumed,
                "committed before the crash, not fired again"
            ),
        }
    }
}

/// Restarting a chapter retracts the producers it added, and with them
/// the merge rule's batch that collected them: the rule fires again, once,
/// in the new generation.
#[test]
fn a_restart_upstream_of_a_fired_rule_fires_it_again() {
    let space = Space::new();
    let out = space.example(
        "late_merge",
        &[("ORCH_EXAMPLE_N", "2"), ("ORCH_EXAMPLE_SEED", "7")],
    );
    assert!(out.status.success());
    let run = printed_run(&out);
    let out = space.cli(&["restart", &run, "chapter_1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    let ev = events(&space, &run);
    let restarted = ev
        .iter()
        .position(|e| matches!(e.kind, EventKind::Restarted { .. }))
        .unwrap();
    let fired = firings(&ev, "merge");
    assert_eq!(fired.len(), 2, "once per generation");
    assert!(fired[0] < restarted && fired[1] > restarted);
    assert!(ex
        .edges
        .iter()
        .any(|e| e.from == "pdf_1" && e.to == "merge"));
}

/// A task that adds the nodes its `plan` lists (each with its own plan),
/// with an edge from itself to each.
const GROW: &str = r#"
import orch
ctx = orch.start()
for child in (ctx.inputs or {}).get("plan", []):
    ctx.add_node(child["id"], script="grow.py", name=child["task"], inputs={"plan": child["plan"]})
    ctx.add_edge(ctx.node, child["id"])
ctx.output(len((ctx.inputs or {}).get("plan", [])))
"#;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn plan(rng: &mut Rng, prefix: &str, depth: u32) -> serde_json::Value {
    let n = if depth == 0 { 0 } else { rng.below(3) };
    let children: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("{prefix}.{i}");
            let task = if rng.below(2) == 0 { "G" } else { "H" };
            serde_json::json!({"id": id, "task": task, "plan": plan(rng, &id, depth - 1)})
        })
        .collect();
    serde_json::Value::Array(children)
}

/// Over random runs with random promises: the rule `closed(task:G)` never
/// fires while a `G` node can still appear (none is added after it), it
/// fires in every run that succeeds, and the node it adds collects every
/// `G` there is.
#[test]
fn closed_never_holds_while_a_matching_node_can_still_appear() {
    let space = Space::new();
    space.write("grow.py", GROW);
    let (mut fired_before_the_end, mut broken) = (0, 0);
    for seed in 1..=16u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut wf = space.workflow(&format!("closed_{seed}"));
        wf.node("a", Task::python("grow.py"))
            .input("plan", plan(&mut rng, "a", 3));
        wf.node("b", Task::python("grow.py"))
            .input("plan", plan(&mut rng, "b", 2));
        wf.edge("a", "b");
        let promise = match rng.below(5) {
            0 => None,
            1 => Some(Promise::NoNewNodes {
                by: Some("task:G".into()),
            }),
            2 => Some(Promise::NoNewNodes {
                by: Some("b".into()),
            }),
            3 => Some(Promise::OnlyNodes {
                pattern: "task:H".into(),
            }),
            _ => Some(Promise::NoNewNodes {
                by: Some("task:H".into()),
            }),
        };
        if let Some(p) = &promise {
            wf.promise(p.clone());
        }
        wf.rule(
            Rule::new("after_g", Predicate::closed("task:G")).then(Mutation::AddNode {
                id: "gather".into(),
                task: Box::new(Task::python("grow.py").named("gather")),
                inputs: serde_json::json!({"gs": collect("task:G")}),
                attrs: Default::default(),
            }),
        );
        let outcome = wf.run().expect("run");
        let ev = events(&space, &outcome.run);
        let fin = RunState::replay(&outcome.run, &ev);
        let fired = firings(&ev, "after_g");
        // A random plan may break the random promise: then the run ends
        // `promise_broken`, and the rule fired at most once before.
        if outcome.status != RunStatus::Succeeded {
            assert_eq!(outcome.status, RunStatus::PromiseBroken, "seed {seed}");
            assert!(fired.len() <= 1, "seed {seed}");
            broken += 1;
            continue;
        }
        assert_eq!(
            fired.len(),
            1,
            "seed {seed} ({promise:?}): the rule fired once"
        );
        let fired = fired[0];
        let gs: Vec<&str> = fin
            .graph
            .nodes()
            .iter()
            .filter(|n| n.task.name == "G")
            .map(|n| n.id.as_str())
            .collect();
        for g in &gs {
            let (k, _) = added_at(&ev, g).unwrap();
            assert!(
                k < fired,
                "seed {seed} ({promise:?}): `{g}` appeared after closed(task:G) fired"
            );
        }
        let gather = fin.graph.get("gather").expect("gather added");
        assert_eq!(
            gather.inputs["gs"].as_array().unwrap().len(),
            gs.len(),
            "seed {seed}"
        );
        // At every moment before the firing the rule is drawn, wired from
        // what it waits for; when it fired early (promises made it exact),
        // some nodes were still unfinished.
        for k in 1..fired {
            let pic = outlook(
                &RunState::replay(&outcome.run, &ev[..k]),
                Options::default(),
            );
            if ev[..k]
                .iter()
                .any(|e| matches!(e.kind, EventKind::BatchCommitted { .. }))
            {
                assert!(
                    pic.nodes.iter().any(|n| n.id == "~rule:after_g"),
                    "seed {seed}, event {k}"
                );
            }
        }
        let before = RunState::replay(&outcome.run, &ev[..fired]);
        if before.graph.nodes().iter().any(|n| !n.state.is_terminal()) {
            fired_before_the_end += 1;
        }
    }
    assert!(
        fired_before_the_end > 0,
        "some promise made the rule fire while nodes still ran"
    );
    assert!(broken < 16, "most runs keep their promises");
}

#[test]
fn a_workflow_file_with_a_rule_runs() {
    let space = Space::new();
    space.write("make.py", "import orch\nctx = orch.start()\nfor i in range(2):\n    ctx.add_node(f'part_{i}', argv=['true'], name='part')\n    ctx.add_edge(ctx.node, f'part_{i}')\n");
    space.write("count.py", TOTAL);
    space.write(
        "flow.yaml",
        "name: file_rule\ntasks:\n  - {id: make, python: make.py}\nrules:\n  - id: total\n    when: {closed: 'task:part'}\n    then:\n      - id: total\n        python: count.py\n        inputs: {parts: {$collect: 'task:part'}}\n",
    );
    let out = space.cli(&["run", "flow.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    assert_eq!(ex.node("total").unwrap().output, Some(serde_json::json!(2)));
    let schema = space.cli(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert!(
        schema["properties"]["rules"].is_object(),
        "orch schema has rules"
    );
    assert!(schema["$defs"]["RuleDoc"]["properties"]["when"].is_object());
}
