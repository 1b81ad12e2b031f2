//! Escaping text for XML and HTML: the one escaper of the SVG pictures,
//! the Graphviz labels and the web pages.

/// Escapes text for XML or HTML content and quoted attribute values: `&`,
/// `<`, `>`, `"` and `'` become entities, and the characters XML 1.0
/// forbids become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if xml_allowed(c) => out.push(c),
            _ => out.push('\u{fffd}'),
        }
    }
    out
}

/// True for the characters XML 1.0 allows in a document.
pub(crate) fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_forbidden_characters_are_replaced() {
        assert_eq!(
            xml_escape(r#"<a href="x">'y' & z</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&apos;y&apos; &amp; z&lt;/a&gt;"
        );
        assert_eq!(
            xml_escape("a\u{1}b\u{fffe}\tc\n"),
            "a\u{fffd}b\u{fffd}\tc\n"
        );
        assert!(xml_allowed('\u{10000}') && !xml_allowed('\u{b}'));
    }
}
