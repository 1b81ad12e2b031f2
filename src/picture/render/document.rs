//! The SVG document: the legend (title line, state swatches, violations)
//! above the graph; XML escaping is [`crate::markup`]'s.

use std::fmt::Write as _;

use super::{state_icon, Body, FONT_FAMILY, MAX_CAPTION_LINES, RED, STATE_FILLS, WHITE};
pub(super) use crate::markup::{xml_allowed, xml_escape};
use crate::picture::outlook::Outlook;

/// Puts the legend and the graph together in one SVG document.
pub(super) fn assemble(o: &Outlook, body: &Body) -> String {
    const MARGIN: f64 = 10.0;
    const SWATCH: f64 = 14.0;

    let mut legend = String::new();
    let mut legend_w: f64 = 0.0;

    // Title line.
    let title = format!(
        "{} · run {} · {} · event {}",
        o.workflow, o.run, o.status, o.event
    );
    let _ = writeln!(
        legend,
        "<text x=\"{MARGIN}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        xml_escape(&title)
    );
    legend_w = legend_w.max(MARGIN + text_width(&title, 15.0, true));

    // Swatches.
    let y = 34.0;
    let mut x = MARGIN;
    let mut swatch = |legend: &mut String, fill: &str, stroke: &str, extra: &str, name: &str| {
        let _ = writeln!(
            legend,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{SWATCH}\" height=\"{SWATCH}\" fill=\"{fill}\" \
             stroke=\"{stroke}\"{extra}/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            x + SWATCH + 4.0,
            y + SWATCH - 2.0,
            xml_escape(name)
        );
        x += SWATCH + 4.0 + text_width(name, 12.0, false) + 12.0;
    };
    for (state, fill) in STATE_FILLS {
        let name = format!("{} {}", state_icon(state), state.as_str());
        swatch(&mut legend, fill, "#000000", "", &name);
    }
    swatch(
        &mut legend,
        WHITE,
        "#000000",
        " stroke-dasharray=\"4 3\"",
        "possible future",
    );
    if !o.violations.is_empty() || o.nodes.iter().any(|n| n.violated) {
        swatch(
            &mut legend,
            WHITE,
            RED,
            " stroke-width=\"3\"",
            "broke a promise",
        );
    }
    legend_w = legend_w.max(x);
    let mut legend_h = y + SWATCH + 8.0;

    // Violations caption.
    if !o.violations.is_empty() {
        let mut lines: Vec<String> = o
            .violations
            .iter()
            .take(MAX_CAPTION_LINES)
            .map(|v| format!("violation: {v}"))
            .collect();
        if o.violations.len() > MAX_CAPTION_LINES {
            lines.push(format!(
                "… and {} more",
                o.violations.len() - MAX_CAPTION_LINES
            ));
        }
        for line in lines {
            legend_h += 16.0;
            let _ = writeln!(
                legend,
                "<text x=\"{MARGIN}\" y=\"{legend_h}\" font-size=\"13\" fill=\"{RED}\">{}</text>",
                xml_escape(&line)
            );
            legend_w = legend_w.max(MARGIN + text_width(&line, 13.0, false));
        }
        legend_h += 8.0;
    }

    let width = body.width.max(legend_w + MARGIN).ceil();
    let height = (legend_h + body.height + MARGIN).ceil();
    let mut out = String::with_capacity(body.content.len() + legend.len() + 1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"{FONT_FAMILY}\">"
    );
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&title));
    out.push_str(
        "<defs><marker id=\"orch-arrow\" markerWidth=\"10\" markerHeight=\"7\" refX=\"10\" \
         refY=\"3.5\" orient=\"auto\"><polygon points=\"0 0, 10 3.5, 0 7\" \
         fill=\"context-stroke\"/></marker></defs>\n",
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    out.push_str("<g class=\"legend\">\n");
    out.push_str(&legend);
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        "<g class=\"graph\" transform=\"translate(0 {legend_h})\">"
    );
    out.push_str(&body.content);
    out.push_str("\n</g>\n</svg>\n");
    out
}

/// Text for layout-rs, which escapes `&<>"'` itself but not the characters
/// XML forbids.
pub(super) fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| if xml_allowed(c) { c } else { '\u{fffd}' })
        .collect()
}

/// A generous estimate of the width of `text` in a sans-serif font of
/// `size` pixels (bold or not), so that text is never clipped: capitals
/// and wide letters count more, characters of the East Asian scripts a
/// whole em.
pub(super) fn text_width(text: &str, size: f64, bold: bool) -> f64 {
    let ems: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | ' ' => 0.3,
            'm' | 'w' | 'M' | 'W' | '@' => 0.9,
            c if c.is_ascii_uppercase() || c.is_ascii_digit() => 0.7,
            c if c.is_ascii() => 0.58,
            c if ('\u{2e80}'..='\u{ffdc}').contains(&c) => 1.0,
            _ => 0.8,
        })
        .sum();
    ems * size * if bold { 1.08 } else { 1.0 }
}
