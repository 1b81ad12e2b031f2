//! Graphviz DOT text of an outlook.

use std::fmt::Write as _;

use super::{attr_str, is_wildcard, node_text, state_fill, RED, WHITE};
use crate::markup::xml_escape;
use crate::picture::outlook::{Outlook, PicKind};

/// Writes the outlook as Graphviz DOT text (`digraph`, top to bottom):
/// nodes filled by state with their labels, wildcards and dashed edges
/// `style="dashed"`, thick red outlines for violations, and the title line
/// plus any violations as the graph's caption. Ids and labels are quoted
/// and escaped; `dot -Tsvg` draws it.
///
/// ```
/// use orch::picture::outlook::{Outlook, PicKind, PicNode};
/// use orch::RunStatus;
///
/// let o = Outlook {
///     run: "r1".into(),
///     workflow: "demo".into(),
///     status: RunStatus::Running,
///     event: 3,
///     nodes: vec![PicNode {
///         id: "shape:0".into(),
///         kind: PicKind::Region,
///         label: "M*".into(),
///         state: None,
///         states: Default::default(),
///         attrs: Default::default(),
///         violated: false,
///     }],
///     edges: vec![],
///     violations: vec![],
/// };
/// let dot = orch::picture::render::dot(&o);
/// assert!(dot.starts_with("digraph"));
/// assert!(dot.contains(r#""shape:0" [label="M*""#));
/// assert!(dot.contains(r#"style="dashed""#));
/// ```
pub fn dot(o: &Outlook) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&o.workflow));
    let mut caption = format!(
        "{} · run {} · {} · event {}",
        html_escape(&o.workflow),
        html_escape(&o.run),
        o.status,
        o.event
    );
    for v in &o.violations {
        let _ = write!(
            caption,
            "<br/><font color=\"red\">violation: {}</font>",
            html_escape(v)
        );
    }
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", label=<{caption}>];"
    );
    out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");

    for n in &o.nodes {
        let mut attrs = vec![format!("label={}", dot_label(node_text(n)))];
        let wildcard = is_wildcard(n.kind);
        if wildcard {
            attrs.push("style=\"dashed\"".into());
            attrs.push(format!("fillcolor=\"{WHITE}\""));
        } else {
            let fill = attr_str(&n.attrs, "color").unwrap_or(state_fill(n.state));
            attrs.push(format!("fillcolor={}", dot_id(fill)));
        }
        if let Some(shape) = attr_str(&n.attrs, "shape") {
            attrs.push(format!("shape={}", dot_id(shape)));
        } else if n.kind == PicKind::Growth {
            attrs.push("shape=ellipse".into());
        }
        if n.violated {
            attrs.push(format!("color=\"{RED}\""));
            attrs.push("penwidth=3".into());
        } else if n.kind == PicKind::Stack {
            attrs.push("penwidth=2.5".into());
        }
        if let Some(tip) = attr_str(&n.attrs, "tooltip") {
            attrs.push(format!("tooltip={}", dot_label(tip)));
        }
        let _ = writeln!(out, "  {} [{}];", dot_id(&n.id), attrs.join(", "));
    }

    for e in &o.edges {
        let mut attrs = Vec::new();
        if e.dashed {
            attrs.push("style=\"dashed\"".to_string());
        }
        if let Some(label) = attr_str(&e.attrs, "label") {
            attrs.push(format!("label={}", dot_label(label)));
        }
        if let Some(color) = attr_str(&e.attrs, "color") {
            attrs.push(format!("color={}", dot_id(color)));
        } else if e.dashed {
            attrs.push("color=\"#555555\"".to_string());
        }
        let _ = write!(out, "  {} -> {}", dot_id(&e.from), dot_id(&e.to));
        if !attrs.is_empty() {
            let _ = write!(out, " [{}]", attrs.join(", "));
        }
        out.push_str(";\n");
    }
    out.push_str("}\n");
    out
}

/// A quoted DOT identifier. In quoted strings DOT only unescapes `\"`; a
/// backslash is doubled so that none can swallow the closing quote.
pub(super) fn dot_id(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A quoted DOT label (an escString: `\\` is a backslash, `\n` a line
/// break).
pub(super) fn dot_label(s: &str) -> String {
    dot_id(&s.replace("\r\n", "\n"))
}

/// Escapes text for a Graphviz HTML-like label (which Graphviz reads as
/// XML): each line as [`xml_escape`] does, with its control characters
/// turned into spaces first, and the lines joined by `<br/>`.
fn html_escape(s: &str) -> String {
    s.split('\n')
        .map(|line| xml_escape(&line.replace(|c: char| c.is_control(), " ")))
        .collect::<Vec<_>>()
        .join("<br/>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_labels_escape_markup_and_break_lines() {
        assert_eq!(
            html_escape("a 'b' <c>\r\n\td\u{1}&"),
            "a &apos;b&apos; &lt;c&gt; <br/> d &amp;"
        );
    }
}
