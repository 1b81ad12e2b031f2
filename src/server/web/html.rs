//! HTML built in Rust: escaping every string that came from outside, and
//! the one page layout.

use std::fmt::Write as _;

/// The web's name for the one escaper of the pages and the pictures.
pub use crate::markup::xml_escape as esc;

/// Percent-encodes a path segment or query value (everything but the
/// unreserved characters).
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Who sees the page, as the layout shows it.
pub struct Viewer<'a> {
    /// The user.
    pub user: &'a str,
    /// Their role, as a word.
    pub role: String,
    /// The form token of the session.
    pub csrf: &'a str,
}

/// A hidden field carrying the session's form token.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A form that posts to `action` with one button (and the form token).
pub fn button(action: &str, label: &str, csrf: &str, class: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="action">{}<button type="submit" class="{}">{}</button></form>"#,
        esc(action),
        csrf_field(csrf),
        esc(class),
        esc(label)
    )
}

/// A whole page: the navigation, the title and `body` (already HTML).
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let nav = match viewer {
        Some(v) => format!(
            r#"<nav><a class="brand" href="/runs">orch</a><a href="/runs">Runs</a><a href="/workflows">Workflows</a><a href="/events">Events &amp; timers</a><a href="/runners">Runners &amp; queues</a><span class="who">{} ({})</span><form method="post" action="/logout" class="logout">{}<button type="submit" id="logout">Log out</button></form></nav>"#,
            esc(v.user),
            esc(&v.role),
            csrf_field(v.csrf)
        ),
        None => r#"<nav><span class="brand">orch</span></nav>"#.to_string(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · orch</title><link rel="stylesheet" href="/static/web.css"></head>
<body>{nav}<main><h1>{}</h1>
{body}</main><script src="/static/web.js"></script></body></html>
"#,
        esc(title),
        esc(title)
    )
}

/// A `<table>` with a header row and rows of cells (already HTML).
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(r#"<table id="{}"><thead><tr>"#, esc(id));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A state or status as a badge: its word, a shape for those who do not
/// tell colours apart, and a class for the colour.
pub fn badge(state: &str) -> String {
    let icon = match state {
        "succeeded" => "✔",
        "failed" | "promise_broken" | "upstream_failed" => "✖",
        "cancelled" => "⊘",
        "running" | "serving" => "▶",
        "paused" | "draining" => "⏸",
        "lost" => "✖",
        "waiting" => "◷",
        "ready" => "◎",
        _ => "○",
    };
    format!(
        r#"<span class="badge s-{}">{icon} {}</span>"#,
        esc(state),
        esc(state)
    )
}

/// Optional text, or a dash.
pub fn or_dash(text: Option<&str>) -> String {
    text.map(esc).unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &apos;y&apos;)&lt;/script&gt;"
        );
        assert_eq!(url("a b/<c>"), "a%20b%2F%3Cc%3E");
        let p = page("<b>", None, "");
        assert!(p.contains("<title>&lt;b&gt; · orch</title>"), "{p}");
        assert!(!p.contains("<b>"), "{p}");
    }
}
