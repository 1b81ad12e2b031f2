//! Loops (SPEC §10): a body unrolled at run time, one committed batch with
//! origin `loop:<id>` per iteration and one for the exit, under a
//! `chain(body, 1, max)` promise; the bound enforced; restart inside an
//! iteration; exactly once across crashes; files; pictures.

use orch::Store as _;

use orch::model::previous;
use orch::picture::outlook::{outlook, Options, PicKind};
use orch::{Event, EventKind, Loop, LoopStep, NodeState, Origin, RunStatus, Task, Until};

use crate::util::*;

fn events(space: &Space, run: &str) -> Vec<Event> {
    space.store().events(run, None).unwrap()
}

/// The loop batches of `id`, in order: (position, the node that decided
/// it, the node ids it added, whether it is the exit edge).
fn loop_batches(events: &[Event], id: &str) -> Vec<(usize, String, Vec<String>, bool)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(k, e)| match &e.kind {
            EventKind::BatchCommitted {
                origin: Origin::Loop { id: l, after },
                mutations,
            } if l == id => {
                let added: Vec<String> = mutations
                    .iter()
                    .filter_map(|m| match m {
                        orch::Mutation::AddNode { id, .. } => Some(id.clone()),
                        _ => None,
                    })
                    .collect();
                let exit = added.is_empty();
                Some((k, after.clone(), added, exit))
            }
            _ => None,
        })
        .collect()
}

/// The position of the first event that set `node` to `state`.
fn state_at(events: &[Event], node: &str, state: NodeState) -> Option<usize> {
    events.iter().position(
        |e| matches!(&e.kind, EventKind::NodeState { node: n, state: s } if n == node && *s == state),
    )
}

/// How many attempts of `node` started.
fn attempts(events: &[Event], node: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptStarted { node: n, .. } if n == node))
        .count()
}

/// Checks the recorded order of a loop that converged after `n`
/// iterations: batch k adds `refine#(k+1)` after `refine#k` succeeded,
/// the exit edge follows the last one, `report` runs after it.
fn assert_converged(ev: &[Event], n: usize) {
    let batches = loop_batches(ev, "newton");
    assert_eq!(batches.len(), n, "n - 1 iterations added, then the exit");
    for (k, (at, after, added, exit)) in batches.iter().enumerate() {
        assert_eq!(after, &format!("refine#{}", k + 1));
        let done = state_at(ev, after, NodeState::Succeeded).unwrap();
        assert!(done < *at, "batch after `{after}` before it succeeded");
        if k + 1 < n {
            assert_eq!(added, &[format!("refine#{}", k + 2)]);
            assert!(!exit);
        } else {
            assert!(exit, "the last batch is the exit edge");
            assert!(*at < state_at(ev, "report", NodeState::Running).unwrap());
        }
    }
}

#[test]
fn loop_until_converges_before_the_bound() {
    let space = Space::new();
    let out = space.example("loop_until", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = printed_run(&out);
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let report = ex.node("report").unwrap().output.clone().unwrap();
    let x = report["sqrt2"].as_f64().unwrap();
    assert!((x - std::f64::consts::SQRT_2).abs() < 1e-12, "{x}");
    let n = report["iterations"].as_u64().unwrap() as usize;
    assert!(n > 1 && n < 10, "converged before the bound: {n}");
    let ev = events(&space, &run);
    assert_converged(&ev, n);
    assert!(ex.node(&format!("refine#{}", n + 1)).is_none());
    assert!(ex
        .edges
        .iter()
        .any(|e| e.from == format!("refine#{n}") && e.to == "report"));
    // The region is a complete chain of n: every edge of it recorded.
    for k in 1..n {
        assert!(ex
            .edges
            .iter()
            .any(|e| e.from == format!("refine#{k}") && e.to == format!("refine#{}", k + 1)));
    }
    assert_each_succeeded_once(&ex, "converged");
}

#[test]
fn a_loop_at_its_bound_fails_the_run_naming_the_loop() {
    let space = Space::new();
    let out = space.example("loop_until", &[("ORCH_EXAMPLE_MAX", "3")]);
    assert!(!out.status.success());
    let run = printed_run(&out);
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Failed);
    let reason = ex.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("loop `newton` reached its bound of 3 iterations"),
        "{reason}"
    );
    assert!(ex.node("refine#3").is_some() && ex.node("refine#4").is_none());
    assert_ne!(ex.node("report").unwrap().state, NodeState::Succeeded);
    let ev = events(&space, &run);
    assert_eq!(loop_batches(&ev, "newton").len(), 2, "iterations 2 and 3");
    assert!(state_at(&ev, "report", NodeState::Running).is_none());
}

const COUNT: &str = r#"
import orch
ctx = orch.start()
n = ctx.inputs["n"] + 1
if n == 2 and ctx.inputs.get("intrude"):
    # A node inside the loop's region that is not an iteration.
    ctx.add_node("side", script="count.py", inputs={"n": 0})
    ctx.add_edge("start", "side")
    ctx.add_edge("side", "end")
ctx.output({"n": n, "done": n >= ctx.inputs["stop"]})
"#;

fn counting(space: &Space, max: u32, stop: u32, intrude: bool) -> orch::Workflow {
    space.write("count.py", COUNT);
    space.write(
        "start.py",
        "import orch\nctx = orch.start()\nctx.output({'n': 0})\n",
    );
    let mut wf = space.workflow("count");
    wf.node("start", Task::python("start.py"));
    wf.node("end", Task::python("start.py"));
    let step = LoopStep::new("count", Task::python("count.py")).inputs(serde_json::json!({
        "n": previous("/n"), "stop": stop, "intrude": intrude,
    }));
    wf.add_loop(Loop::new("counter", "start", "end", Until::at("/done"), max).step(step));
    wf
}

#[test]
fn the_bound_may_exit_instead() {
    let space = Space::new();
    space.write("count.py", COUNT);
    space.write(
        "start.py",
        "import orch\nctx = orch.start()\nctx.output({'n': 0})\n",
    );
    let mut wf = space.workflow("count");
    wf.node("start", Task::python("start.py"));
    wf.node("end", Task::python("start.py"));
    let step = LoopStep::new("count", Task::python("count.py"))
        .inputs(serde_json::json!({"n": previous("/n"), "stop": 5}));
    wf.add_loop(
        Loop::new("counter", "start", "end", Until::at("/done"), 2)
            .on_cap(orch::OnCap::Exit)
            .step(step),
    );
    let (outcome, ex) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", ex.reason);
    assert_eq!(ex.node("count#2").unwrap().output.as_ref().unwrap()["n"], 2);
    assert!(ex.node("count#3").is_none());
    assert!(ex
        .edges
        .iter()
        .any(|e| e.from == "count#2" && e.to == "end"));
}

/// A body task that adds a node between the loop's ends breaks the
/// `chain` promise: the run ends `promise_broken` and the node never runs.
#[test]
fn a_node_breaking_the_chain_promise_ends_the_run() {
    let space = Space::new();
    let wf = counting(&space, 10, 4, true);
    let outcome = wf.run().expect("run");
    let ex = space.export(&outcome.run);
    assert_eq!(ex.status, RunStatus::PromiseBroken);
    assert_eq!(ex.violations.len(), 1);
    let v = &ex.violations[0];
    assert!(v.promise_text.contains("count#*"), "{}", v.promise_text);
    assert_eq!(v.node.as_deref(), Some("count#2"));
    assert!(ex.node("side").is_none(), "nothing of the batch applied");
    assert!(ex.node("count#3").is_none());
}

/// Restarting `refine#3` keeps iterations 1 and 2, retracts the batches
/// decided after it (iterations 4.. and the exit), and the loop goes on
/// from iteration 3 in the new generation.
#[test]
fn a_restart_inside_iteration_k_restarts_from_there() {
    let space = Space::new();
    let out = space.example("loop_until", &[]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let n = space
        .export(&run)
        .node("report")
        .unwrap()
        .output
        .clone()
        .unwrap()["iterations"]
        .as_u64()
        .unwrap() as usize;
    assert!(n > 3);
    let out = space.cli(&["restart", &run, "refine#3"]);
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
    let EventKind::Restarted {
        retracted, reset, ..
    } = &ev[restarted].kind
    else {
        unreachable!()
    };
    // The batches after refine#3 .. refine#n (n - 2 of them) are retracted.
    assert_eq!(retracted.len(), n - 2, "{retracted:?}");
    assert!(reset.contains(&"refine#3".to_string()) && reset.contains(&"report".to_string()));
    assert_eq!(attempts(&ev, "refine#1"), 1);
    assert_eq!(attempts(&ev, "refine#2"), 1);
    assert_eq!(attempts(&ev, "refine#3"), 2);
    assert_eq!(attempts(&ev, &format!("refine#{n}")), 2);
    let after: Vec<String> = loop_batches(&ev[restarted..], "newton")
        .into_iter()
        .map(|b| b.1)
        .collect();
    let want: Vec<String> = (3..=n).map(|k| format!("refine#{k}")).collect();
    assert_eq!(after, want, "the loop goes on from iteration 3");
}

/// The orchestrator dies right before and right after the commit of the
/// batch that adds iteration 4; resumed, no finished iteration runs
/// again and every batch is committed once.
#[test]
fn kill_9_mid_loop_resumes_without_repeating_iterations() {
    for point in ["before_commit", "after_commit"] {
        let space = Space::new();
        let fault = format!("{point}:loop:refine#3");
        let out = space.example("loop_until", &[("ORCH_FAULT", &fault)]);
        let ex = resume_killed(&space, out.status, point);
        assert_eq!(ex.status, RunStatus::Succeeded, "{point}: {:?}", ex.reason);
        let ev = events(&space, &ex.run);
        let resumed = ev
            .iter()
            .position(|e| matches!(e.kind, EventKind::RunResumed { .. }))
            .unwrap();
        let n = ex.node("report").unwrap().output.clone().unwrap()["iterations"]
            .as_u64()
            .unwrap() as usize;
        assert_converged(&ev, n);
        let fourth = loop_batches(&ev, "newton")
            .into_iter()
            .find(|b| b.1 == "refine#3")
            .unwrap()
            .0;
        for k in 1..=2 {
            assert_eq!(attempts(&ev, &format!("refine#{k}")), 1, "{point}");
        }
        for k in 4..=n {
            assert_eq!(attempts(&ev, &format!("refine#{k}")), 1, "{point}");
        }
        match point {
            "before_commit" => assert!(fourth > resumed, "lost with the crash, decided on resume"),
            _ => {
                assert!(fourth < resumed, "committed before the crash, not again");
                assert_eq!(attempts(&ev, "refine#3"), 1);
            }
        }
    }
}

const YAML: &str = r#"
name: sqrt2
tasks:
  - id: start
    python: start.py
    inputs: {x0: 1.0}
  - id: report
    python: report.py
loops:
  - id: newton
    from: start
    to: report
    max: 10
    until: {at: /delta, below: 1.0e-9}
    body:
      - id: refine
        python: newton.py
        inputs: {x: {$previous: /x}, tol: 1.0e-12, iteration: {$iteration: true}}
"#;

#[test]
fn a_loop_in_a_yaml_file() {
    let space = Space::new();
    for f in ["start.py", "newton.py", "report.py"] {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/loop_until")
                .join(f),
        )
        .unwrap();
        space.write(f, &text);
    }
    space.write("wf.yaml", YAML);
    let out = space.cli(&["run", "wf.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Succeeded);
    let ev = events(&space, &run);
    let batches = loop_batches(&ev, "newton");
    // Exits on the first iteration that moved by less than 1e-9.
    let (_, last, _, exit) = batches.last().unwrap();
    assert!(exit);
    let out = ex.node(last).unwrap().output.clone().unwrap();
    assert!(out["delta"].as_f64().unwrap() < 1e-9);
    assert!(!ex.node(last).unwrap().inputs.is_null());
    // A bad loop is refused at its line and column, naming it.
    space.write("bad.yaml", &YAML.replace("max: 10", "max: 5000"));
    let out = space.cli(&["run", "bad.yaml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:10:9")
            && err.contains("loop `newton`")
            && err.contains("MAX_LOOP_ITERATIONS"),
        "{err}"
    );
    space.write("bad.yaml", &YAML.replace("to: report", "to: nowhere"));
    let err = String::from_utf8_lossy(&space.cli(&["run", "bad.yaml"]).stderr).to_string();
    assert!(
        err.contains("bad.yaml:12:9") && err.contains("`nowhere` is not a task"),
        "{err}"
    );
    let schema = space.cli(&["schema"]);
    assert!(String::from_utf8_lossy(&schema.stdout).contains("LoopDoc"));
}

/// Collapsed (the default), the loop is one node per step with a back
/// edge labelled with the iterations done and the bound; expanded, every
/// iteration is drawn.
#[test]
fn the_picture_collapses_a_loop_and_expands_it() {
    let space = Space::new();
    let out = space.example("loop_until", &[]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let state = space.store().replay(&run, None).unwrap();
    let n = state.graph.len() - 2;
    let collapsed = outlook(&state, Options::default());
    let nodes = |o: &orch::picture::outlook::Outlook, kind: PicKind| {
        o.nodes.iter().filter(|p| p.kind == kind).count()
    };
    assert_eq!(nodes(&collapsed, PicKind::Node), 2, "start and report");
    assert_eq!(nodes(&collapsed, PicKind::Stack), 1, "refine, once");
    let back = collapsed
        .edges
        .iter()
        .find(|e| e.from == e.to)
        .expect("the back edge");
    assert_eq!(back.attrs["label"], format!("{n}/10"));
    let expanded = outlook(
        &state,
        Options {
            expand: true,
            ..Default::default()
        },
    );
    assert_eq!(nodes(&expanded, PicKind::Node), n + 2);
    assert_eq!(nodes(&expanded, PicKind::Stack), 0);
    // Mid-run (after iteration 2 was added): the exit still to come is a
    // dashed edge labelled with the condition; no region wildcard.
    let ev = events(&space, &run);
    let second = loop_batches(&ev, "newton")[0].0;
    let mid = orch::RunState::replay(&run, &ev[..=second]);
    let o = outlook(&mid, Options::default());
    let exit = o
        .edges
        .iter()
        .find(|e| e.dashed && e.to == "report")
        .expect("the dashed exit");
    assert_eq!(exit.attrs["label"], "until /done = true");
    assert_eq!(nodes(&o, PicKind::Region), 0);
    assert_eq!(
        o.edges.iter().find(|e| e.from == e.to).unwrap().attrs["label"],
        "2/10"
    );
    // The SVGs: one node for refine, or one per iteration.
    for (flag, want) in [(None, 1), (Some("--expand"), n)] {
        let mut args = vec!["export", run.as_str(), "--format", "svg"];
        args.extend(flag);
        let svg = String::from_utf8(space.cli(&args).stdout).unwrap();
        assert_eq!(svg.matches("<g class=\"node").count(), want + 2, "{flag:?}");
    }
}

/// A loop next to a rule waiting for `closed(task:count)`: the rule fires
/// only after the loop exited (a loop that may still iterate keeps the
/// pattern open), and an iteration that succeeds while the run is paused
/// moves the loop on once the run is unpaused.
#[test]
fn a_paused_loop_goes_on_after_unpause_and_closed_waits_for_the_loop() {
    let space = Space::new();
    // Each iteration waits for the file `go`, which the test makes once
    // the run is paused.
    let gate = space.path().join("go");
    space.write(
        "slow.py",
        &format!(
            "import os, time, orch\nctx = orch.start()\nwhile not os.path.exists({gate:?}):\n    time.sleep(0.05)\nn = ctx.inputs['n'] + 1\nctx.output({{'n': n, 'done': n >= 3}})\n"
        ),
    );
    space.write(
        "start.py",
        "import orch\nctx = orch.start()\nctx.output({'n': 0})\n",
    );
    let mut wf = space.workflow("paused");
    wf.node("start", Task::python("start.py"));
    wf.node("end", Task::python("start.py"));
    let step = LoopStep::new("count", Task::python("slow.py"))
        .inputs(serde_json::json!({"n": previous("/n")}));
    wf.add_loop(Loop::new("counter", "start", "end", Until::at("/done"), 10).step(step));
    wf.rule(
        orch::Rule::new("tally", orch::Predicate::closed("task:count"))
            .then(orch::Mutation::add_node("tally", Task::python("start.py"))),
    );
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    wait_for(&space, "count#1 to run", |ex| {
        ex.node("count#1")
            .is_some_and(|n| n.state == NodeState::Running)
    });
    assert!(space.cli(&["pause", "latest"]).status.success());
    wait_for(&space, "the pause", |ex| ex.status == RunStatus::Paused);
    std::fs::write(&gate, "").unwrap();
    wait_for(&space, "count#1 to succeed while paused", |ex| {
        ex.node("count#1")
            .is_some_and(|n| n.state == NodeState::Succeeded)
    });
    assert!(space.cli(&["unpause", "latest"]).status.success());
    let outcome = runner.join().unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ev = events(&space, &outcome.run);
    let unpaused = ev
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                EventKind::RunStatus {
                    status: RunStatus::Running,
                    ..
                }
            )
        })
        .unwrap();
    let batches = loop_batches(&ev, "counter");
    assert_eq!(batches.len(), 3, "iterations 2 and 3, then the exit");
    assert!(batches[0].0 > unpaused, "nothing moved while paused");
    let tally = ev
        .iter()
        .position(|e| {
            matches!(&e.kind, EventKind::BatchCommitted { origin: Origin::Rule { rule }, .. } if rule == "tally")
        })
        .expect("the rule fired");
    assert!(
        tally > batches[2].0,
        "closed(task:count) held only after the exit"
    );
}
