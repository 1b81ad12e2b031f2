//! Map copies and loop iterations collapsed into one node each, and the
//! graph's edges drawn between what is left.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::count::{counted, thousands};
use super::{Options, Outlook, PicEdge, WILDCARD_PREFIX};
use crate::graph::Graph;
use crate::model::Attrs;
use crate::promise::shape::Shape;
use crate::promise::Promise;

/// A collapsed loop step: its picture id and its iterations' nodes.
pub(super) type LoopStepNodes = (String, Vec<usize>);

/// A stack of map copies: (picture id, task name, from, to, members).
pub(super) type MapStack<'g> = (String, String, &'g str, &'g str, Vec<usize>);

/// A collapsed loop: its position and its steps.
pub(super) type CollapsedLoop = (usize, Vec<LoopStepNodes>);

/// Map copies to collapse (none when `opts.expand`): region nodes wired
/// exactly from -> n -> to, grouped by task name. Each collapsed node's
/// stack id, and the stacks.
pub(super) fn map_stacks(g: &Graph, opts: Options) -> (HashMap<usize, String>, Vec<MapStack<'_>>) {
    let mut stacked: HashMap<usize, String> = HashMap::new();
    // (picture id, task name, from, to, members)
    let mut stacks: Vec<MapStack> = Vec::new();
    if !opts.expand {
        for (k, p) in g.promises().iter().enumerate() {
            let Promise::Shape {
                from,
                to,
                shape: Shape::Repeat(..),
            } = p
            else {
                continue;
            };
            let (Some(f), Some(t)) = (g.position(from), g.position(to)) else {
                continue;
            };
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for s in g.successors(f) {
                let preds: Vec<usize> = g.predecessors(s).collect();
                let succs: Vec<usize> = g.successors(s).collect();
                if preds == [f] && succs == [t] && !stacked.contains_key(&s) {
                    groups
                        .entry(g.node(s).task.name.clone())
                        .or_default()
                        .push(s);
                }
            }
            for (task, members) in groups {
                if members.len() > opts.collapse_over {
                    let id = format!("{WILDCARD_PREFIX}stack{k}:{task}");
                    for &m in &members {
                        stacked.insert(m, id.clone());
                    }
                    stacks.push((id, task, from, to, members));
                }
            }
        }
    }
    (stacked, stacks)
}

/// Loops (SPEC §10): collapsed, every step's iterations are one node and
/// the back edge from the last step to the first is labelled with the
/// iterations done and the bound; expanded (`opts.expand`), every
/// iteration is drawn. Each collapsed iteration's step id, and per loop
/// its position and, per step, its picture id and members.
pub(super) fn loop_steps(g: &Graph, opts: Options) -> (HashMap<usize, String>, Vec<CollapsedLoop>) {
    let mut looped: HashMap<usize, String> = HashMap::new();
    let mut loops: Vec<(usize, Vec<LoopStepNodes>)> = Vec::new();
    for (k, l) in g.loops().iter().enumerate() {
        let done = crate::loops::iterations(g, l);
        if opts.expand || done == 0 {
            continue;
        }
        let mut steps = Vec::new();
        for s in &l.body {
            let id = format!("{WILDCARD_PREFIX}loop:{}:{}", l.id, s.id);
            let members: Vec<usize> = (1..=done).filter_map(|j| g.position(&s.node(j))).collect();
            for &m in &members {
                looped.insert(m, id.clone());
            }
            steps.push((id, members));
        }
        loops.push((k, steps));
    }
    (looped, loops)
}

/// The stacks of map copies with their edges, then each collapsed loop's
/// steps with the back edge from the last to the first.
pub(super) fn collapsed_nodes(
    o: &mut Outlook,
    g: &Graph,
    stacks: &[MapStack],
    loops: &[CollapsedLoop],
    violated: &HashSet<&str>,
) {
    for (id, task, from, to, members) in stacks {
        o.nodes.push(counted(
            g,
            members.iter().copied(),
            id.clone(),
            &format!("{task} ×{}", thousands(members.len())),
            violated,
        ));
        for (a, b) in [(*from, id.as_str()), (id.as_str(), *to)] {
            o.edges.push(PicEdge {
                from: a.to_string(),
                to: b.to_string(),
                dashed: false,
                attrs: Attrs::new(),
            });
        }
    }
    for (k, steps) in loops {
        let l = &g.loops()[*k];
        let done = crate::loops::iterations(g, l);
        for (s, (id, members)) in l.body.iter().zip(steps) {
            let mut node = counted(g, members.iter().copied(), id.clone(), &s.id, violated);
            // The latest iteration's state is the step's.
            node.state = members.last().map(|&m| g.node(m).state);
            o.nodes.push(node);
        }
        let (first, last) = (&steps[0].0, &steps[steps.len() - 1].0);
        let mut attrs = Attrs::new();
        attrs.insert("label".into(), format!("{done}/{}", l.max).into());
        o.edges.push(PicEdge {
            from: last.clone(),
            to: first.clone(),
            dashed: false,
            attrs,
        });
    }
}

/// The graph's edges between what is drawn: none to or from a stack's
/// members; between collapsed loop steps each once, and none between
/// iterations (the back edge stands for them).
pub(super) fn graph_edges(
    o: &mut Outlook,
    g: &Graph,
    stacked: &HashMap<usize, String>,
    looped: &HashMap<usize, String>,
    pic_id: &dyn Fn(usize) -> String,
) {
    let mut drawn: HashSet<(String, String)> = HashSet::new();
    for e in g.edges() {
        if stacked.contains_key(&e.from) || stacked.contains_key(&e.to) {
            continue;
        }
        if looped.contains_key(&e.from) || looped.contains_key(&e.to) {
            // Collapsed loop: edges between iterations are the back edge;
            // the others are drawn once.
            let (a, b) = (pic_id(e.from), pic_id(e.to));
            let between = looped.contains_key(&e.from) && looped.contains_key(&e.to) && {
                let (na, nb) = (&g.node(e.from).id, &g.node(e.to).id);
                match (
                    crate::loops::iteration_of(g, na),
                    crate::loops::iteration_of(g, nb),
                ) {
                    (Some((la, _, ka)), Some((lb, _, kb))) => la.id == lb.id && ka != kb,
                    _ => false,
                }
            };
            if !between && drawn.insert((a.clone(), b.clone())) {
                o.edges.push(PicEdge {
                    from: a,
                    to: b,
                    dashed: false,
                    attrs: Attrs::new(),
                });
            }
            continue;
        }
        o.edges.push(PicEdge {
            from: pic_id(e.from),
            to: pic_id(e.to),
            dashed: false,
            attrs: e.attrs.clone(),
        });
    }
}
