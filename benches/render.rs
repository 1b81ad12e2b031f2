//! Rendering benchmarks (`cargo bench --bench render`): numbers, not
//! assertions. Each case prints the median of a few repetitions of
//! `orch::picture::render::svg` (or `svg_with_optimiser`) on a hand-made outlook.
//!
//! - `random N`: N nodes, each after the first with 1–3 parents drawn
//!   uniformly among all earlier nodes (long edges, wide rows);
//! - `local N`: the same, parents among the 20 previous nodes;
//! - `fan N`: one source, N−2 parallel nodes, one sink;
//! - `layered N`: rows of 40, each node with 1–3 parents in the row above;
//! - `chain N`: a single path.
//!
//! Each line gives `svg` (which decides on the optimiser itself: on up to
//! [`orch::picture::render::OPTIMISE_MAX_NODES`] nodes unless the rows are too wide),
//! which layout it used and how many long edges it drew directly, and, up
//! to `ORCH_BENCH_OPT_MAX` nodes (default 500), the times with the
//! optimiser forced on and off. Set `ORCH_BENCH_REPS` (default 3) to change
//! the number of repetitions and `ORCH_BENCH_SWEEP=1` to time the optimiser
//! on random and layered DAGs of 100 to 600 nodes instead.

use orch::picture::outlook::{Outlook, PicEdge, PicKind, PicNode};
use orch::picture::render::{svg, svg_with_optimiser, OPTIMISE_MAX_NODES};
use orch::{Attrs, NodeState, RunStatus};

mod common;
use common::*;

const STATES: [NodeState; 7] = [
    NodeState::Pending,
    NodeState::Ready,
    NodeState::Running,
    NodeState::Waiting,
    NodeState::Succeeded,
    NodeState::Failed,
    NodeState::Cancelled,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An outlook with `n` nodes and the edges `parents(i, rng)` gives for
/// each node `i`.
fn build(n: usize, mut parents: impl FnMut(usize, &mut Rng) -> Vec<usize>) -> Outlook {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let nodes = (0..n)
        .map(|i| PicNode {
            id: format!("n{i}"),
            kind: PicKind::Node,
            label: format!("task {i}"),
            state: Some(STATES[rng.below(STATES.len())]),
            states: Default::default(),
            attrs: Attrs::new(),
            violated: false,
        })
        .collect();
    let mut edges = Vec::new();
    for i in 0..n {
        let mut ps = parents(i, &mut rng);
        ps.sort_unstable();
        ps.dedup();
        for p in ps {
            edges.push(PicEdge {
                from: format!("n{p}"),
                to: format!("n{i}"),
                dashed: rng.below(5) == 0,
                attrs: Attrs::new(),
            });
        }
    }
    Outlook {
        run: "bench".into(),
        workflow: "bench".into(),
        status: RunStatus::Running,
        event: 0,
        nodes,
        edges,
        violations: Vec::new(),
    }
}

fn random(n: usize) -> Outlook {
    build(n, |i, rng| {
        if i == 0 {
            return vec![];
        }
        let k = 1 + rng.below(3);
        (0..k).map(|_| rng.below(i)).collect()
    })
}

fn local(n: usize) -> Outlook {
    build(n, |i, rng| {
        if i == 0 {
            return vec![];
        }
        let k = 1 + rng.below(3);
        let lo = i.saturating_sub(20);
        (0..k).map(|_| lo + rng.below(i - lo)).collect()
    })
}

fn fan(n: usize) -> Outlook {
    build(n, |i, _| match i {
        0 => vec![],
        i if i == n - 1 => (1..n - 1).collect(),
        _ => vec![0],
    })
}

fn layered(n: usize) -> Outlook {
    const W: usize = 40;
    build(n, |i, rng| {
        if i < W {
            return vec![];
        }
        let above = (i / W - 1) * W;
        let k = 1 + rng.below(3);
        (0..k).map(|_| above + rng.below(W)).collect()
    })
}

fn chain(n: usize) -> Outlook {
    build(n, |i, _| if i == 0 { vec![] } else { vec![i - 1] })
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let reps = env("ORCH_BENCH_REPS", 3).max(1);
    let opt_max = env("ORCH_BENCH_OPT_MAX", 500);
    println!("OPTIMISE_MAX_NODES = {OPTIMISE_MAX_NODES}; median of {reps} runs");

    if std::env::var_os("ORCH_BENCH_SWEEP").is_some() {
        for n in [100, 150, 200, 250, 300, 350, 400, 500, 600] {
            for (name, o) in [("random", random(n)), ("layered", layered(n))] {
                let on = time(reps, || svg_with_optimiser(&o, true));
                let off = time(reps, || svg_with_optimiser(&o, false));
                println!(
                    "sweep {name:>7} {n:>4} nodes: optimiser {on:>10.3?}  without {off:>10.3?}"
                );
            }
        }
        return;
    }

    let cases: Vec<(&str, Outlook)> = vec![
        ("random 150", random(150)),
        ("random 300", random(300)),
        ("random 500", random(500)),
        ("local 500", local(500)),
        ("layered 500", layered(500)),
        ("random 2000", random(2000)),
        ("local 2000", local(2000)),
        ("fan 2000", fan(2000)),
        ("layered 2000", layered(2000)),
        ("chain 2000", chain(2000)),
        ("chain 100", chain(100)),
    ];
    for (name, o) in &cases {
        let n = o.nodes.len();
        let e = o.edges.len();
        let default = time(reps, || svg(o));
        let out = svg(o);
        let kib = out.len() / 1024;
        // layout-rs's SVG writer defines this marker; the plain layout
        // does not.
        let how = if out.contains("<marker id=\"endarrow\"") {
            "layout-rs"
        } else {
            "plain"
        };
        let direct = out.matches("class=\"edge direct").count();
        let mut line = format!(
            "{name:<13} {n:>5} nodes {e:>5} edges: svg {default:>10.3?} \
             ({how}, {direct:>4} direct edges, {kib:>5} KiB)"
        );
        if n <= opt_max {
            let on = time(reps, || svg_with_optimiser(o, true));
            let off = time(reps, || svg_with_optimiser(o, false));
            line.push_str(&format!("  | with {on:>10.3?}  without {off:>10.3?}"));
        }
        println!("{line}");
    }
}
