//! Property tests of shapes: the text form round-trips; random instances
//! of random shapes match; perturbed instances do not.

use orch::promise::shape::{Region, RegionNode, Shape};
use proptest::prelude::*;
use proptest::test_runner::TestRng;

/// A number below `n` from the case's seeded RNG.
fn pick(rng: &mut TestRng, n: usize) -> usize {
    use proptest::prelude::Rng;
    (rng.next_u32() as usize) % n.max(1)
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("A".to_string()),
        Just("B".to_string()),
        Just("M".to_string()),
        Just("left_1".to_string()),
        Just("x.y".to_string()),
        Just("my task".to_string()),
        Just("any".to_string()),
    ]
}

fn bounds() -> impl Strategy<Value = (u32, Option<u32>)> {
    (0u32..3, prop::option::of(0u32..3)).prop_map(|(min, extra)| (min, extra.map(|e| min + e)))
}

/// Any shape (for round trips and positive matches).
fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        6 => name().prop_map(|n| Shape::task(&n)),
        1 => Just(Shape::Empty),
        1 => Just(Shape::Any),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Shape::seq),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Shape::par),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Shape::alt),
            (inner.clone(), bounds()).prop_map(|(s, (a, b))| Shape::repeat(s, a, b)),
            (inner, bounds()).prop_map(|(s, (a, b))| Shape::chain(s, a, b)),
        ]
    })
}

/// Shapes from task/seq/par/alt whose task names are all distinct: every
/// perturbation below turns an instance into a non-instance.
fn strict_shape() -> impl Strategy<Value = Shape> {
    let leaf = Just(Shape::task("?"));
    let tree = leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Shape::seq),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Shape::par),
            prop::collection::vec(inner, 2..4).prop_map(Shape::alt),
        ]
    });
    tree.prop_map(|s| {
        let mut k = 0;
        rename(&s, &mut k)
    })
}

fn rename(s: &Shape, k: &mut usize) -> Shape {
    match s {
        Shape::Task(_) => {
            *k += 1;
            Shape::task(&format!("T{k}"))
        }
        Shape::Seq(v) => Shape::seq(v.iter().map(|x| rename(x, k)).collect::<Vec<_>>()),
        Shape::Par(v) => Shape::par(v.iter().map(|x| rename(x, k)).collect::<Vec<_>>()),
        Shape::Alt(v) => Shape::alt(v.iter().map(|x| rename(x, k)).collect::<Vec<_>>()),
        other => other.clone(),
    }
}

#[derive(Default, Clone)]
struct Inst {
    nodes: Vec<String>,
    edges: Vec<(usize, usize)>,
}

impl Inst {
    fn node(&mut self, task: &str) -> usize {
        self.nodes.push(task.to_string());
        self.nodes.len() - 1
    }

    /// Adds an instance of `s`; returns its (sources, sinks). With
    /// `both_alts`, the first `alt` met emits two of its alternatives side
    /// by side (a forbidden instance).
    fn build(
        &mut self,
        s: &Shape,
        rng: &mut TestRng,
        both_alts: &mut bool,
    ) -> (Vec<usize>, Vec<usize>) {
        match s {
            Shape::Task(g) => {
                let n = self.node(g.as_str());
                (vec![n], vec![n])
            }
            Shape::Empty => (vec![], vec![]),
            Shape::Any => match pick(rng, 3) {
                0 => (vec![], vec![]),
                1 => {
                    let n = self.node("whatever");
                    (vec![n], vec![n])
                }
                _ => {
                    let a = self.node("w1");
                    let b = self.node("w2");
                    let c = self.node("w3");
                    self.edges.push((a, c));
                    self.edges.push((b, c));
                    (vec![a, b], vec![c])
                }
            },
            Shape::Seq(parts) => self.seq(parts.iter().collect(), rng, both_alts),
            Shape::Par(parts) => self.par(parts.iter().collect(), rng, both_alts),
            Shape::Alt(parts) => {
                if *both_alts && parts.len() >= 2 {
                    *both_alts = false;
                    return self.par(vec![&parts[0], &parts[1]], rng, &mut false);
                }
                let k = pick(rng, parts.len());
                self.build(&parts[k], rng, both_alts)
            }
            Shape::Repeat(inner, min, max) | Shape::Chain(inner, min, max) => {
                let hi = max.unwrap_or(min + 3).min(min + 3);
                let k = *min as usize + pick(rng, (hi - min + 1) as usize);
                let copies: Vec<&Shape> = std::iter::repeat_n(&**inner, k).collect();
                if matches!(s, Shape::Repeat(..)) {
                    self.par(copies, rng, both_alts)
                } else {
                    self.seq(copies, rng, both_alts)
                }
            }
        }
    }

    fn seq(
        &mut self,
        parts: Vec<&Shape>,
        rng: &mut TestRng,
        both: &mut bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut cur: Option<(Vec<usize>, Vec<usize>)> = None;
        for p in parts {
            let (so, si) = self.build(p, rng, both);
            if so.is_empty() {
                continue;
            }
            cur = Some(match cur {
                None => (so, si),
                Some((cso, csi)) => {
                    for &a in &csi {
                        for &b in &so {
                            self.edges.push((a, b));
                        }
                    }
                    (cso, si)
                }
            });
        }
        cur.unwrap_or_default()
    }

    fn par(
        &mut self,
        parts: Vec<&Shape>,
        rng: &mut TestRng,
        both: &mut bool,
    ) -> (Vec<usize>, Vec<usize>) {
        let (mut so, mut si) = (Vec::new(), Vec::new());
        for p in parts {
            let (a, b) = self.build(p, rng, both);
            so.extend(a);
            si.extend(b);
        }
        (so, si)
    }

    fn region(&self, sources: Vec<usize>, sinks: Vec<usize>) -> Region {
        Region {
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, t)| RegionNode {
                    id: format!("n{i}"),
                    task: t.clone(),
                })
                .collect(),
            edges: self.edges.clone(),
            direct: self.nodes.is_empty(),
            from_edges: sources,
            to_edges: sinks,
        }
    }
}

fn instance(s: &Shape, seed: u64, both_alts: bool) -> Region {
    let mut rng = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&seed.to_le_bytes());
        b
    });
    let mut inst = Inst::default();
    let mut both = both_alts;
    let (so, si) = inst.build(s, &mut rng, &mut both);
    inst.region(so, si)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn text_form_round_trips(s in shape()) {
        let text = s.to_string();
        let back: Shape = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back, s, "text {}", text);
    }

    #[test]
    fn random_instances_match(s in shape(), seed in any::<u64>()) {
        let r = instance(&s, seed, false);
        let why = r.mismatch(&s);
        // The documented limit of the exhaustive split is not a wrong answer.
        prop_assume!(!why.as_deref().is_some_and(|w| w.contains("too complex to check")));
        prop_assert!(why.is_none(), "shape {} instance {:?}: {:?}", s, r, why);
    }

    #[test]
    fn perturbed_instances_do_not_match(s in strict_shape(), seed in any::<u64>(), which in 0usize..4, at in any::<usize>()) {
        let mut r = instance(&s, seed, false);
        match which {
            // A wrong task name.
            0 => {
                let k = at % r.nodes.len();
                r.nodes[k].task = "WRONG".into();
            }
            // An extra node, wired like the rest.
            1 => {
                r.nodes.push(RegionNode { id: "extra".into(), task: "EXTRA".into() });
                let k = r.nodes.len() - 1;
                r.from_edges.push(k);
                r.to_edges.push(k);
            }
            // A missing edge (inside, or at the boundary).
            2 => {
                let total = r.edges.len() + r.from_edges.len() + r.to_edges.len();
                let k = at % total;
                if k < r.edges.len() {
                    r.edges.remove(k);
                } else if k < r.edges.len() + r.from_edges.len() {
                    r.from_edges.remove(k - r.edges.len());
                } else {
                    r.to_edges.remove(k - r.edges.len() - r.from_edges.len());
                }
            }
            // Both alternatives of an alt.
            _ => {
                if !s.to_string().contains('|') {
                    return Ok(());
                }
                r = instance(&s, seed, true);
            }
        }
        prop_assert!(r.mismatch(&s).is_some(), "shape {} perturbed ({}) {:?} matched", s, which, r);
    }
}
