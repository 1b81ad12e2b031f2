//! Deciding rules (SPEC §9): when a rule's predicate holds, and what its
//! body becomes when it fires. Pure functions of a [`Graph`]; the engine
//! fires the rules ([`due`], [`body`]) and the picture draws what an
//! unfired rule waits for ([`waits_for`]). The data is
//! [`crate::model::Rule`]; `docs/rules.md` tells the whole story.
//!
//! `closed(pattern)` holds when no future batch can add a node the
//! pattern selects. Future batches come from the attempts of nodes that
//! have not finished (and of the nodes those add, and so on) and from the
//! bodies of rules that have not fired; so it holds when
//!
//! - a promise forbids such nodes outright (`static`, `no_new_nodes`,
//!   `only_nodes` with a pattern no node can match together with this
//!   one), or
//! - no unfinished node may add nodes at all (its task is an input,
//!   which runs no process, or `no_new_nodes { by }` selects it), and no
//!   other unfired rule's body adds a node the pattern selects or a node
//!   that may add nodes.
//!
//! The rule's own body never counts against its own predicate: it fires
//! once, and what it adds is its doing. A node that may add nodes at all
//! blocks every `closed` its narrowing allows, because what it adds may
//! add anything the promises allow in turn: the same `★` the picture
//! draws.

use crate::graph::Graph;
use crate::model::{resolve_collects, Exec, Mutation, NodeState, Predicate, Rule};
use crate::promise::glob::Selector;
use crate::promise::Promise;

/// Something a rule waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Blocker {
    /// The node at this position: not finished, and its task may still add
    /// nodes (for `closed`), or not yet in the state `state(..)` wants.
    Node(usize),
    /// The unfired rule at this position, whose body may add such nodes.
    Rule(usize),
}

/// True when no promise in force forbids the node `id` running `task` from
/// adding nodes: `static`, `no_new_nodes` (for everyone or for it). An
/// input task adds nothing (it runs no process).
///
/// ```
/// use orch::{Mutation, Promise, Task};
/// let mut g = orch::graph::Graph::new();
/// g.commit(&[Mutation::AddPromise { promise: Promise::NoNewNodes { by: Some("quiet".into()) } }]).unwrap();
/// assert!(orch::rule::may_add_nodes(&g, "busy", &Task::python("x.py")));
/// assert!(!orch::rule::may_add_nodes(&g, "quiet", &Task::python("x.py").named("quiet")));
/// assert!(!orch::rule::may_add_nodes(&g, "approve", &Task::input()));
/// ```
pub fn may_add_nodes(g: &Graph, id: &str, task: &crate::model::Task) -> bool {
    if matches!(task.exec, Exec::Input { .. }) {
        return false;
    }
    let name = if task.name.is_empty() { id } else { &task.name };
    !g.promises().iter().any(|p| match p {
        Promise::Static {} | Promise::NoNewNodes { by: None } => true,
        Promise::NoNewNodes { by: Some(sel) } => sel.matches(id, name),
        _ => false,
    })
}

/// True when a promise in force forbids every new node `pattern` selects:
/// `static`, `no_new_nodes` for everyone, or an `only_nodes` whose pattern
/// no node matches together with `pattern`.
///
/// ```
/// use orch::{Mutation, Promise};
/// use orch::promise::glob::Selector;
/// let mut g = orch::graph::Graph::new();
/// g.commit(&[Mutation::AddPromise { promise: Promise::OnlyNodes { pattern: "task:png".into() } }]).unwrap();
/// assert!(orch::rule::forbidden(&g, &Selector::new("task:pdf")));
/// assert!(!orch::rule::forbidden(&g, &Selector::new("id:report")));
/// ```
pub fn forbidden(g: &Graph, pattern: &Selector) -> bool {
    g.promises().iter().any(|p| match p {
        Promise::Static {} | Promise::NoNewNodes { by: None } => true,
        Promise::OnlyNodes { pattern: only } => !only.overlaps(pattern),
        _ => false,
    })
}

/// What `closed(pattern)` waits for, evaluated for the rule at position
/// `own` (whose body does not count): empty when it holds. Stops at the
/// first blocker when `all` is false.
fn closed_blockers(g: &Graph, pattern: &Selector, own: Option<usize>, all: bool) -> Vec<Blocker> {
    let mut out = Vec::new();
    if forbidden(g, pattern) {
        return out;
    }
    for (i, n) in g.nodes().iter().enumerate() {
        if !n.state.is_terminal() && may_add_nodes(g, &n.id, &n.task) {
            out.push(Blocker::Node(i));
            if !all {
                return out;
            }
        }
    }
    // A loop that has not exited may still add iterations of its steps:
    // it waits on its latest iteration's last node.
    for l in g.loops() {
        let k = crate::loops::iterations(g, l);
        let Some(last) = l.last().and_then(|s| g.position(&s.node(k))) else {
            continue;
        };
        let exited = g.position(&l.to).is_some_and(|t| g.has_edge(last, t));
        let adds = l.body.iter().any(|s| {
            let name = if s.task.name.is_empty() {
                &s.id
            } else {
                &s.task.name
            };
            pattern.matches(&s.node(k + 1), name) || may_add_nodes(g, &s.node(k + 1), &s.task)
        });
        if !exited && k < l.max && adds && !out.contains(&Blocker::Node(last)) {
            out.push(Blocker::Node(last));
            if !all {
                return out;
            }
        }
    }
    for (k, r) in g.rules().iter().enumerate() {
        if Some(k) == own || g.rule_fired(k) {
            continue;
        }
        let adds = r.then.iter().any(|m| match m {
            Mutation::AddNode { id, task, .. } => {
                let name = if task.name.is_empty() { id } else { &task.name };
                pattern.matches(id, name) || may_add_nodes(g, id, task)
            }
            _ => false,
        });
        if adds {
            out.push(Blocker::Rule(k));
            if !all {
                return out;
            }
        }
    }
    out
}

/// The nodes `pattern` selects, in the order they were added (in `state`
/// when given).
fn selected<'a>(
    g: &'a Graph,
    pattern: &'a Selector,
    state: Option<NodeState>,
) -> impl Iterator<Item = usize> + 'a {
    g.nodes()
        .iter()
        .enumerate()
        .filter(move |(_, n)| {
            state.is_none_or(|s| n.state == s) && pattern.matches(&n.id, &n.task.name)
        })
        .map(|(i, _)| i)
}

/// Whether `p` holds now, for the rule at position `own` among the graph's
/// rules (`None`: a predicate of no rule, every unfired rule counts).
///
/// ```
/// use orch::model::{NodeState, Predicate};
/// use orch::{Mutation, Promise, Task};
/// let mut g = orch::graph::Graph::new();
/// g.commit(&[
///     Mutation::add_node("pdf_1", Task::python("pdf.py").named("pdf")),
///     Mutation::AddPromise { promise: Promise::NoNewNodes { by: None } },
/// ]).unwrap();
/// assert!(orch::rule::holds(&g, &Predicate::closed("task:pdf"), None));
/// assert!(orch::rule::holds(&g, &Predicate::count("task:pdf", 1), None));
/// assert!(!orch::rule::holds(&g, &Predicate::state("pdf_1", NodeState::Succeeded), None));
/// ```
pub fn holds(g: &Graph, p: &Predicate, own: Option<usize>) -> bool {
    match p {
        Predicate::Closed(pattern) => closed_blockers(g, pattern, own, false).is_empty(),
        Predicate::Count {
            pattern,
            at_least,
            state,
        } => {
            // Counting stops once there are enough.
            let want = usize::try_from(*at_least).unwrap_or(usize::MAX);
            want == 0 || selected(g, pattern, *state).nth(want - 1).is_some()
        }
        Predicate::State { node, is } => g.get(node).is_some_and(|n| n.state == *is),
        Predicate::All(terms) => terms.iter().all(|t| holds(g, t, own)),
    }
}

/// What the rule at position `k` waits for: the unfinished nodes that may
/// still add nodes its `closed` terms select, the rules whose bodies may,
/// and the nodes its `state` terms name that are not there yet. What the
/// picture wires to the rule's dashed node.
pub fn waits_for(g: &Graph, k: usize) -> Vec<Blocker> {
    let mut out = Vec::new();
    let mut stack = vec![&g.rules()[k].when];
    while let Some(p) = stack.pop() {
        match p {
            Predicate::Closed(pattern) => out.extend(closed_blockers(g, pattern, Some(k), true)),
            Predicate::State { node, is } => {
                if let Some(i) = g.position(node).filter(|&i| g.node(i).state != *is) {
                    out.push(Blocker::Node(i));
                }
            }
            Predicate::All(terms) => stack.extend(terms.iter().rev()),
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|b| seen.insert(*b));
    out
}

/// The first rule that has not fired and whose predicate holds, by
/// position (rules are tried in the order they were declared).
pub fn due(g: &Graph) -> Option<usize> {
    (0..g.rules().len()).find(|&k| !g.rule_fired(k) && holds(g, &g.rules()[k].when, Some(k)))
}

/// The batch a rule commits when it fires now: its body with every
/// `$collect` replaced by the output references of the nodes it selects
/// (in the order they were added). An error names the mutation at fault.
///
/// ```
/// use orch::model::{collect, Predicate, Rule};
/// use orch::{Mutation, Task};
/// let mut g = orch::graph::Graph::new();
/// g.commit(&[
///     Mutation::add_node("a", Task::python("pdf.py").named("pdf")),
///     Mutation::add_node("b", Task::python("pdf.py").named("pdf")),
/// ]).unwrap();
/// let rule = Rule::new("merge", Predicate::closed("task:pdf")).then(Mutation::AddNode {
///     id: "merge".into(),
///     task: Box::new(Task::python("merge.py")),
///     inputs: serde_json::json!({"pdfs": collect("task:pdf")}),
///     attrs: Default::default(),
/// });
/// let batch = orch::rule::body(&g, &rule).unwrap();
/// let Mutation::AddNode { inputs, .. } = &batch[0] else { unreachable!() };
/// assert_eq!(inputs["pdfs"], serde_json::json!([orch::output("a"), orch::output("b")]));
/// ```
pub fn body(g: &Graph, rule: &Rule) -> Result<Vec<Mutation>, String> {
    rule.then
        .iter()
        .map(|m| match m {
            Mutation::AddNode {
                id,
                task,
                inputs,
                attrs,
            } => {
                let inputs = resolve_collects(inputs, &|pattern| {
                    selected(g, pattern, None)
                        .map(|i| g.node(i).id.clone())
                        .collect()
                })
                .map_err(|e| format!("{}: {e}", m.describe()))?;
                Ok(Mutation::AddNode {
                    id: id.clone(),
                    task: task.clone(),
                    inputs,
                    attrs: attrs.clone(),
                })
            }
            other => Ok(other.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{collect, Task};

    fn pdf(id: &str) -> Mutation {
        Mutation::add_node(id, Task::python("pdf.py").named("pdf"))
    }

    fn merge_rule() -> Rule {
        Rule::new("merge", Predicate::closed("task:pdf")).then(Mutation::AddNode {
            id: "merge".into(),
            task: Box::new(Task::python("merge.py")),
            inputs: serde_json::json!({"pdfs": collect("task:pdf")}),
            attrs: Default::default(),
        })
    }

    #[test]
    fn closed_waits_for_unfinished_nodes_that_may_grow() {
        let mut g = Graph::new();
        g.commit(&[
            pdf("p1"),
            Mutation::add_node("scan", Task::python("scan.py")),
            Mutation::add_node("ok", Task::input()),
            Mutation::AddRule {
                rule: Box::new(merge_rule()),
            },
        ])
        .unwrap();
        // Both python nodes may add pdfs; the input node cannot.
        assert_eq!(waits_for(&g, 0), vec![Blocker::Node(0), Blocker::Node(1)]);
        assert_eq!(due(&g), None);
        g.set_state(0, NodeState::Succeeded);
        g.set_state(1, NodeState::Running);
        assert_eq!(waits_for(&g, 0), vec![Blocker::Node(1)]);
        g.set_state(1, NodeState::Failed);
        assert_eq!(due(&g), Some(0));
        g.mark_fired("merge");
        assert_eq!(due(&g), None);
    }

    #[test]
    fn promises_make_closed_exact() {
        let mut g = Graph::new();
        g.commit(&[
            Mutation::add_node("quiet", Task::python("q.py")),
            Mutation::add_node("loud", Task::python("l.py")),
            Mutation::AddPromise {
                promise: Promise::NoNewNodes {
                    by: Some("quiet".into()),
                },
            },
        ])
        .unwrap();
        let closed = Predicate::closed("task:pdf");
        assert!(!holds(&g, &closed, None), "loud may add pdfs");
        g.set_state(1, NodeState::Succeeded);
        assert!(holds(&g, &closed, None), "quiet promised to add nothing");
        // A global only_nodes disjoint from the pattern closes it at once.
        let mut h = Graph::new();
        h.commit(&[
            Mutation::add_node("loud", Task::python("l.py")),
            Mutation::AddPromise {
                promise: Promise::OnlyNodes {
                    pattern: "task:png".into(),
                },
            },
        ])
        .unwrap();
        assert!(holds(&h, &closed, None));
        assert!(!holds(&h, &Predicate::closed("task:p*"), None));
    }

    #[test]
    fn other_rules_bodies_count_but_not_the_rules_own() {
        let mut g = Graph::new();
        let other = Rule::new("late", Predicate::count("never", 1)).then(pdf("p9"));
        g.commit(&[
            Mutation::AddRule {
                rule: Box::new(merge_rule()),
            },
            Mutation::AddRule {
                rule: Box::new(other),
            },
        ])
        .unwrap();
        assert_eq!(waits_for(&g, 0), vec![Blocker::Rule(1)]);
        assert_eq!(due(&g), None);
        g.mark_fired("late");
        assert_eq!(due(&g), Some(0));
    }

    #[test]
    fn counts_and_states() {
        let mut g = Graph::new();
        g.commit(&[pdf("p1"), pdf("p2")]).unwrap();
        assert!(holds(&g, &Predicate::count("task:pdf", 2), None));
        assert!(!holds(&g, &Predicate::count("task:pdf", 3), None));
        assert!(holds(&g, &Predicate::count("task:pdf", 0), None));
        let done = Predicate::Count {
            pattern: "task:pdf".into(),
            at_least: 1,
            state: Some(NodeState::Succeeded),
        };
        assert!(!holds(&g, &done, None));
        g.set_state(1, NodeState::Succeeded);
        assert!(holds(&g, &done, None));
        let both = done.and(Predicate::state("p1", NodeState::Succeeded));
        assert!(!holds(&g, &both, None));
        assert!(!holds(
            &g,
            &Predicate::state("ghost", NodeState::Pending),
            None
        ));
    }
}
