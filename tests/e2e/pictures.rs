//! Pictures: the outlook at any moment of a run's history, SVG and DOT.

use orch::Store as _;
use std::collections::BTreeSet;

use orch::picture::outlook::{outlook, Options, Outlook, PicKind};
use orch::{EventKind, Origin, RunState, RunStatus, Task};

use crate::util::*;

fn kinds(o: &Outlook, kind: PicKind) -> Vec<&orch::picture::outlook::PicNode> {
    o.nodes.iter().filter(|n| n.kind == kind).collect()
}

/// The outlook after every event of a run.
fn history(space: &Space, run: &str) -> (Vec<orch::Event>, Vec<Outlook>) {
    let events = space.store().events(run, None).unwrap();
    let pictures = (1..=events.len())
        .map(|k| outlook(&RunState::replay(run, &events[..k]), Options::default()))
        .collect();
    (events, pictures)
}

/// Every node of the final graph is, at every earlier moment, either drawn
/// already or hinted: added later by a task whose node had a `★`, or
/// inside a region drawn as a dashed wildcard.
fn assert_outlook_covers_the_future(space: &Space, run: &str) {
    let (events, pictures) = history(space, run);
    let fin = RunState::replay(run, &events);
    // Who added each node.
    let mut added_by: std::collections::HashMap<String, Option<String>> = Default::default();
    // A rule's nodes are hinted by the rule's dashed node, `~rule:<id>`,
    // which is "added" by whoever declared the rule.
    for e in &events {
        if let EventKind::BatchCommitted { origin, mutations } = &e.kind {
            let by = match origin {
                Origin::Attempt { node, .. } => Some(node.clone()),
                Origin::Rule { rule } => Some(format!("~rule:{rule}")),
                _ => None,
            };
            for m in mutations {
                match m {
                    orch::Mutation::AddNode { id, .. } => {
                        added_by.insert(id.clone(), by.clone());
                    }
                    orch::Mutation::AddRule { rule } => {
                        added_by.insert(format!("~rule:{}", rule.id), by.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    let registered = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::BatchCommitted { .. }))
        .expect("a registration batch");
    for (k, pic) in pictures.iter().enumerate().skip(registered) {
        let drawn: BTreeSet<&str> = pic.nodes.iter().map(|n| n.id.as_str()).collect();
        for n in fin.graph.nodes() {
            if drawn.contains(n.id.as_str()) {
                continue;
            }
            // A ★ stands for whatever the node's task adds, and whatever
            // the nodes it adds add in turn: walk up the chain of adders
            // to the first one drawn at this moment.
            let mut by = added_by[&n.id]
                .clone()
                .expect("registered nodes are drawn from the start");
            while !drawn.contains(by.as_str()) {
                by = added_by[&by]
                    .clone()
                    .expect("the chain reaches a drawn node");
            }
            let grows = drawn.contains(format!("~grow:{by}").as_str()) || by.starts_with("~rule:");
            let in_region = kinds(pic, PicKind::Region).iter().any(|r| {
                let from = pic
                    .edges
                    .iter()
                    .find(|e| e.to == r.id)
                    .map(|e| e.from.clone());
                from.as_deref() == Some(by.as_str())
            });
            assert!(
                grows || in_region,
                "event {}: `{}` (added by `{by}`) is neither drawn nor hinted",
                k + 1,
                n.id
            );
        }
    }
}

#[test]
fn random_map_shows_the_map_before_and_nothing_after() {
    let space = Space::new();
    let out = space.example("random_map", &[("ORCH_EXAMPLE_K", "3")]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let reg = space.cli(&["export", "latest", "--registered", "--format", "outlook"]);
    let reg: Outlook = serde_json::from_slice(&reg.stdout).unwrap();
    let regions = kinds(&reg, PicKind::Region);
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].label, "M*");
    let dashed: BTreeSet<(String, String)> = reg
        .edges
        .iter()
        .filter(|e| e.dashed)
        .map(|e| (e.from.clone(), e.to.clone()))
        .collect();
    assert!(dashed.contains(&("A".into(), regions[0].id.clone())));
    assert!(dashed.contains(&(regions[0].id.clone(), "B".into())));

    let fin = space.cli(&["export", "latest", "--format", "outlook"]);
    let fin: Outlook = serde_json::from_slice(&fin.stdout).unwrap();
    assert!(kinds(&fin, PicKind::Region).is_empty());
    assert!(kinds(&fin, PicKind::Growth).is_empty());
    assert_eq!(fin.nodes.len(), 5);

    let svg = space.cli(&["export", "latest", "--registered", "--format", "svg"]);
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert!(svg.contains("M*"), "the wildcard's label is drawn");
    roxmltree::Document::parse(&svg).expect("SVG is well-formed XML");
    // The map to come is a dashed stack: a thick dashed outline.
    let at = svg
        .find(&format!(
            "class=\"node region\" data-id=\"{}\"",
            regions[0].id
        ))
        .expect("the region's node");
    let node = &svg[at..at + svg[at..].find("</g>").unwrap()];
    assert!(
        node.contains("stroke-dasharray") && node.contains("stroke-width=\"3\""),
        "{node}"
    );
    let dot = space.cli(&["export", "latest", "--registered", "--format", "dot"]);
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("dashed"),
        "{dot}"
    );
    assert_outlook_covers_the_future(&space, &run);
}

#[test]
fn static_pipeline_never_shows_a_wildcard() {
    let space = Space::new();
    let out = space.example("static_pipeline", &[]);
    assert!(out.status.success());
    let (_, pictures) = history(&space, &printed_run(&out));
    for p in &pictures {
        assert!(
            p.nodes.iter().all(|n| n.kind == PicKind::Node),
            "event {}: {:?}",
            p.event,
            p.nodes
        );
        assert!(p.edges.iter().all(|e| !e.dashed));
    }
}

#[test]
fn fully_dynamic_shows_a_star_after_its_first_node() {
    let space = Space::new();
    let out = space.example("fully_dynamic", &[]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let reg = space.cli(&["export", "latest", "--registered", "--format", "outlook"]);
    let reg: Outlook = serde_json::from_slice(&reg.stdout).unwrap();
    let stars = kinds(&reg, PicKind::Growth);
    assert_eq!(stars.len(), 1);
    assert_eq!(stars[0].label, "★");
    assert!(reg
        .edges
        .iter()
        .any(|e| e.from == "root" && e.to == stars[0].id && e.dashed));
    assert_outlook_covers_the_future(&space, &run);
}

#[test]
fn random_branch_shows_both_futures_until_it_chooses() {
    let space = Space::new();
    let out = space.example("random_branch", &[]);
    assert!(out.status.success());
    let run = printed_run(&out);
    let reg = space.cli(&["export", "latest", "--registered", "--format", "outlook"]);
    let reg: Outlook = serde_json::from_slice(&reg.stdout).unwrap();
    // The alternatives side by side, after an `or`: each one's nodes.
    let regions = kinds(&reg, PicKind::Region);
    let labels: Vec<&str> = regions.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(labels, ["or", "left_1", "left_2", "right"]);
    assert_eq!(
        regions[0].attrs["tooltip"], "(left_1 → left_2) | right",
        "the whole shape"
    );
    let dashed: BTreeSet<(&str, &str)> = reg
        .edges
        .iter()
        .filter(|e| e.dashed)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    let id = |label: &str| {
        regions
            .iter()
            .find(|n| n.label == label)
            .unwrap()
            .id
            .as_str()
    };
    for pair in [
        ("choose", id("or")),
        (id("or"), id("left_1")),
        (id("left_1"), id("left_2")),
        (id("or"), id("right")),
        (id("left_2"), "end"),
        (id("right"), "end"),
    ] {
        assert!(dashed.contains(&pair), "{pair:?} in {dashed:?}");
    }
    // The SVG a person reads: one sans font, the `or` and both branches
    // dashed, each node's state by an icon too.
    let svg = space.cli(&["export", "latest", "--registered", "--format", "svg"]);
    let svg = String::from_utf8(svg.stdout).unwrap();
    roxmltree::Document::parse(&svg).expect("SVG is well-formed XML");
    assert!(svg.contains("font-family=\"Helvetica, Arial, sans-serif\">"));
    assert!(!svg.contains("Times"), "one font");
    for label in [">or<", ">left_1<", ">left_2<", ">right<"] {
        assert!(svg.contains(label), "{label}");
    }
    assert!(
        svg.contains("class=\"state-icon pending\" data-id=\"choose\""),
        "{svg}"
    );
    assert!(svg.contains(">○ pending</text>"), "the legend's icons");
    let fin = space.cli(&["export", "latest", "--format", "svg"]);
    let fin = String::from_utf8(fin.stdout).unwrap();
    assert!(
        fin.contains("class=\"state-icon succeeded\" data-id=\"end\""),
        "{fin}"
    );
    assert!(!fin.contains(">or<"), "chosen: no alternatives left");
    assert_outlook_covers_the_future(&space, &run);
}

#[test]
fn a_broken_promise_is_drawn_in_red_and_only_narrowed_growth_is_hinted() {
    let space = Space::new();
    let out = space.example("broken_promise", &[]);
    assert!(!out.status.success());
    let fin = space.cli(&["export", "latest", "--format", "outlook"]);
    let fin: Outlook = serde_json::from_slice(&fin.stdout).unwrap();
    let worker = fin.nodes.iter().find(|n| n.id == "worker").unwrap();
    assert!(worker.violated);
    assert_eq!(fin.violations.len(), 1);
    assert!(fin.violations[0].contains("no_new_nodes(by worker)"));
    let reg = space.cli(&["export", "latest", "--registered", "--format", "outlook"]);
    let reg: Outlook = serde_json::from_slice(&reg.stdout).unwrap();
    assert!(
        !reg.nodes.iter().any(|n| n.id == "~grow:worker"),
        "worker promised not to grow"
    );
    assert!(reg.nodes.iter().any(|n| n.id == "~grow:start"));
}

#[test]
fn a_large_map_collapses_into_one_stack_unless_expanded() {
    let space = Space::new();
    space
        .write(
            "fan.py",
            "import orch\nctx = orch.start()\nfor i in range(20):\n    ctx.add_node(f'M_{i}', script='noop.py', name='M')\n    ctx.add_edge('A', f'M_{i}')\n    ctx.add_edge(f'M_{i}', 'B')\n",
        )
        .write("noop.py", "import orch\norch.start()\n");
    let mut wf = space.workflow("big_map");
    wf.node("A", Task::python("fan.py"));
    wf.node("B", Task::python("noop.py"));
    wf.map_region("A", "B", orch::Shape::task("M"), 0, None);
    let (outcome, _) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let picture = outcome.final_picture().expect("live picture kept");
    let live = std::fs::read_to_string(picture).unwrap();
    roxmltree::Document::parse(&live).expect("live SVG is well-formed");
    assert!(live.contains("M ×20"), "the live picture shows the stack");

    let folded = space.cli(&["export", "latest", "--format", "outlook"]);
    let folded: Outlook = serde_json::from_slice(&folded.stdout).unwrap();
    let stacks = kinds(&folded, PicKind::Stack);
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].label, "M ×20 (20 succeeded)");
    assert_eq!(folded.nodes.len(), 3);
    let expanded = space.cli(&["export", "latest", "--format", "outlook", "--expand"]);
    let expanded: Outlook = serde_json::from_slice(&expanded.stdout).unwrap();
    assert_eq!(expanded.nodes.len(), 22);
}

/// A task that adds the nodes its `plan` lists (each with its own plan),
/// with an edge from itself to each; an `into` entry adds an edge from
/// the new node to a registered node.
const GROW: &str = r#"
import orch
ctx = orch.start()
for child in (ctx.inputs or {}).get("plan", []):
    ctx.add_node(child["id"], script="grow.py", name=child["task"], inputs={"plan": child["plan"]})
    ctx.add_edge(ctx.node, child["id"])
    if child.get("into"):
        ctx.add_edge(child["id"], child["into"])
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
            let into = (rng.below(4) == 0).then_some("sink");
            serde_json::json!({"id": id, "task": task, "into": into, "plan": plan(rng, &id, depth - 1)})
        })
        .collect();
    serde_json::Value::Array(children)
}

#[test]
fn outlooks_of_random_runs_with_random_promises_cover_their_futures() {
    use orch::Promise;
    let space = Space::new();
    space.write("grow.py", GROW);
    for seed in 1..=10u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut wf = space.workflow(&format!("random_{seed}"));
        wf.node("a", Task::python("grow.py"))
            .input("plan", plan(&mut rng, "a", 2));
        wf.node("b", Task::python("grow.py"))
            .input("plan", plan(&mut rng, "b", 2));
        wf.node("sink", Task::python("grow.py"));
        wf.edge("a", "b");
        wf.edge("b", "sink");
        let promise = match rng.below(6) {
            0 => None,
            1 => Some(Promise::Static {}),
            2 => Some(Promise::NoNewNodes {
                by: Some("b".into()),
            }),
            3 => Some(Promise::OnlyNodes {
                pattern: "task:G".into(),
            }),
            4 => Some(Promise::NoEdgesInto {
                node: "sink".into(),
            }),
            _ => Some(Promise::NoNewEdges {
                by: Some("a*".into()),
            }),
        };
        if let Some(p) = &promise {
            wf.promise(p.clone());
        }
        let (outcome, _) = space.run(&wf);
        assert_outlook_covers_the_future(&space, &outcome.run);
        // No wildcard where growth is forbidden.
        let (_, pictures) = history(&space, &outcome.run);
        for pic in &pictures {
            let stars: Vec<&str> = pic
                .nodes
                .iter()
                .filter(|n| n.kind == PicKind::Growth)
                .map(|n| n.id.as_str())
                .collect();
            match &promise {
                Some(Promise::Static {}) => assert!(stars.is_empty(), "seed {seed}: {stars:?}"),
                Some(Promise::NoNewNodes { .. }) => {
                    assert!(!stars.contains(&"~grow:b"), "seed {seed}: b may not grow")
                }
                Some(Promise::OnlyNodes { .. }) => {
                    for n in pic.nodes.iter().filter(|n| n.kind == PicKind::Growth) {
                        assert_eq!(n.label, "★ task:G", "seed {seed}: narrowed");
                    }
                }
                Some(Promise::NoNewEdges { .. }) => {
                    assert!(
                        !pic.edges.iter().any(|e| e.from == "a" && e.dashed),
                        "seed {seed}: a may not link"
                    );
                }
                _ => {}
            }
        }
    }
}

#[test]
fn the_live_picture_of_a_huge_run_counts_its_nodes_instead_of_drawing_them() {
    let space = Space::new();
    let mut wf = space.workflow("huge");
    // `a` fails at once, so none of the others ever runs.
    wf.node("a", Task::command(["false"]));
    for i in 0..orch::picture::outlook::LIVE_MAX_NODES {
        wf.node(format!("b{i}"), Task::command(["true"]));
        wf.edge("a", format!("b{i}"));
    }
    let (outcome, _) = space.run(&wf);
    assert_eq!(outcome.status, RunStatus::Failed);
    let picture = outcome.final_picture().expect("live picture kept");
    let live = std::fs::read_to_string(picture).unwrap();
    roxmltree::Document::parse(&live).expect("live SVG is well-formed");
    assert!(
        live.contains("2,001 nodes (1 failed, 2,000 pending)"),
        "one node counts them all"
    );
    assert!(live.contains(&format!("orch export {} --format svg", outcome.run)));
    assert!(!live.contains(">b17<"), "no node is drawn one by one");
    assert!(live.len() < 20_000, "a small file: {} bytes", live.len());

    // An export still draws every node.
    let svg = space.cli(&["export", "latest", "--format", "svg"]);
    assert!(svg.status.success());
    let svg = String::from_utf8_lossy(&svg.stdout);
    assert!(svg.contains(">b17<"), "the export draws b17");
}

/// The number of task nodes drawn in `state`, or counted in one node.
fn drawn_in(svg: &str, state: &str, total: usize) -> bool {
    svg.matches(&format!("class=\"node task {state}\"")).count() == total
        || svg.contains(&format!("{total} nodes ({total} {state})"))
}

/// A run's outcome does not wait for its final picture, yet the picture
/// lands: in-process through `RunOutcome::final_picture`, and on disk
/// once `orch run` exited (the process waits for it at exit).
#[test]
fn the_final_picture_lands_after_the_outcome_in_process_and_at_exit() {
    let space = Space::new();
    let mut wf = space.workflow("lands");
    for i in 0..30 {
        wf.node(format!("n{i}"), Task::command(["true"]));
        if i > 0 {
            wf.edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    let (outcome, export) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let picture = outcome.final_picture().expect("live picture kept");
    let live = std::fs::read_to_string(picture).unwrap();
    roxmltree::Document::parse(&live).expect("live SVG is well-formed");
    assert!(
        live.contains(&format!(" · succeeded · event {}<", export.event)),
        "the final picture shows the last event"
    );
    assert!(drawn_in(&live, "succeeded", 30), "every node succeeded");

    space.write(
        "chain.yaml",
        "name: chain\ntasks:\n  - {id: a, command: [true]}\n  - {id: b, command: [true], after: [a]}\n  - {id: c, command: [true], after: [b]}\n",
    );
    let out = space.cli(&["run", "chain.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = space.store().resolve_run("latest").unwrap();
    let last = space.export(&run).event;
    let path = space.path().join("runs").join(&run).join("live.svg");
    let live = std::fs::read_to_string(path).expect("the final picture is on disk");
    assert!(
        live.contains(&format!(" · succeeded · event {last}<")),
        "the picture on disk is the final one"
    );
    assert!(drawn_in(&live, "succeeded", 3));
}
