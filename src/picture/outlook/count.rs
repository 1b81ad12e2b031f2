//! Nodes counted by state: a stack of map copies or loop iterations, and
//! the whole picture as one node when it is too big to draw.

use std::collections::{BTreeMap, HashSet};

use super::{Outlook, PicKind, PicNode, WILDCARD_PREFIX};
use crate::graph::Graph;
use crate::model::{Attrs, NodeState};

/// One stacked picture node standing for `members`: labelled `what`
/// followed by the count of each state, coloured by the most urgent state
/// among them.
pub(super) fn counted(
    g: &Graph,
    members: impl Iterator<Item = usize> + Clone,
    id: String,
    what: &str,
    violated: &HashSet<&str>,
) -> PicNode {
    // Keyed by the static name first: no allocation per member.
    let mut by_name: BTreeMap<&'static str, usize> = BTreeMap::new();
    for m in members.clone() {
        *by_name.entry(g.node(m).state.as_str()).or_default() += 1;
    }
    let states: BTreeMap<String, usize> = by_name
        .into_iter()
        .map(|(s, c)| (s.to_string(), c))
        .collect();
    let (urgent, summary) = summarise(&states);
    PicNode {
        id,
        kind: PicKind::Stack,
        label: format!("{what} ({})", summary.join(", ")),
        state: urgent,
        states,
        attrs: Attrs::new(),
        violated: members
            .clone()
            .any(|m| violated.contains(g.node(m).id.as_str())),
    }
}

/// `o` as one node that counts its nodes by state (a stack counts its
/// members), with its caption of broken promises: what the live picture
/// draws when no layout of `o` fits the time it may take
/// ([`crate::picture::render::svg_within`]). Wildcards are not counted.
pub(crate) fn count_by_state(o: &Outlook) -> Outlook {
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for n in &o.nodes {
        match n.kind {
            PicKind::Node => {
                let s = n.state.map_or("no state", NodeState::as_str);
                *states.entry(s.to_string()).or_default() += 1;
                total += 1;
            }
            PicKind::Stack => {
                for (s, c) in &n.states {
                    *states.entry(s.clone()).or_default() += c;
                    total += c;
                }
            }
            PicKind::Region | PicKind::Growth | PicKind::Rule => {}
        }
    }
    let (urgent, summary) = summarise(&states);
    let node = PicNode {
        id: format!("{WILDCARD_PREFIX}all"),
        kind: PicKind::Stack,
        label: format!(
            "{} nodes ({}): drawn one by one once the run has run long enough to afford it; \
             `orch export {} --format svg` draws every one",
            thousands(total),
            summary.join(", "),
            o.run
        ),
        state: urgent,
        states,
        attrs: Attrs::new(),
        violated: o.nodes.iter().any(|n| n.violated),
    };
    Outlook {
        run: o.run.clone(),
        workflow: o.workflow.clone(),
        status: o.status,
        event: o.event,
        nodes: vec![node],
        edges: Vec::new(),
        violations: o.violations.clone(),
    }
}

/// What a node counting others by state shows: the most urgent state
/// among `states` (its colour and icon), and `COUNT state` for each.
fn summarise(states: &BTreeMap<String, usize>) -> (Option<NodeState>, Vec<String>) {
    let urgent = [
        NodeState::Failed,
        NodeState::UpstreamFailed,
        NodeState::Running,
        NodeState::Waiting,
        NodeState::Ready,
        NodeState::Pending,
        NodeState::Cancelled,
        NodeState::Succeeded,
    ]
    .into_iter()
    .find(|s| states.contains_key(s.as_str()));
    let summary = states
        .iter()
        .map(|(s, c)| format!("{} {s}", thousands(*c)))
        .collect();
    (urgent, summary)
}

pub(super) fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    #[test]
    fn counting_by_state_counts_nodes_and_stack_members_not_wildcards() {
        let pic = |id: &str, kind, state, states: &[(&str, usize)]| PicNode {
            id: id.into(),
            kind,
            label: id.into(),
            state,
            states: states.iter().map(|(s, c)| (s.to_string(), *c)).collect(),
            attrs: Attrs::new(),
            violated: false,
        };
        let o = Outlook {
            run: "r1".into(),
            workflow: "w".into(),
            status: RunStatus::Running,
            event: 9,
            nodes: vec![
                pic("a", PicKind::Node, Some(NodeState::Succeeded), &[]),
                pic("b", PicKind::Node, Some(NodeState::Running), &[]),
                pic(
                    "~stack",
                    PicKind::Stack,
                    Some(NodeState::Running),
                    &[("running", 2), ("succeeded", 1_000)],
                ),
                pic("~grow:b", PicKind::Growth, None, &[]),
            ],
            edges: vec![],
            violations: vec!["broken".into()],
        };
        let c = count_by_state(&o);
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.event, 9);
        assert_eq!(c.violations, ["broken"]);
        let all = &c.nodes[0];
        assert!(
            all.label
                .starts_with("1,004 nodes (3 running, 1,001 succeeded)"),
            "{}",
            all.label
        );
        assert!(all.label.contains("orch export r1 --format svg"));
        assert_eq!(all.state, Some(NodeState::Running));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
