use super::document::{text_width, xml_allowed, xml_escape};
use super::dot::{dot_id, dot_label};
use super::layout::path_middle;
use super::look::node_look;
use super::plan::{crossing_work, plan};
use super::*;
use crate::model::RunStatus;
use crate::picture::outlook::PicEdge;
use std::time::Instant;

fn node(id: &str, kind: PicKind, label: &str, state: Option<NodeState>) -> PicNode {
    PicNode {
        id: id.into(),
        kind,
        label: label.into(),
        state,
        states: Default::default(),
        attrs: Attrs::new(),
        violated: false,
    }
}

fn edge(from: &str, to: &str, dashed: bool) -> PicEdge {
    PicEdge {
        from: from.into(),
        to: to.into(),
        dashed,
        attrs: Attrs::new(),
    }
}

fn outlook(nodes: Vec<PicNode>, edges: Vec<PicEdge>) -> Outlook {
    Outlook {
        run: "run-1".into(),
        workflow: "wf <&>".into(),
        status: RunStatus::Running,
        event: 42,
        nodes,
        edges,
        violations: vec![],
    }
}

/// A small outlook with every kind of node and tricky labels.
fn sample() -> Outlook {
    let mut a = node(
        "a",
        PicKind::Node,
        "fetch \"x\" <1> & 'y'",
        Some(NodeState::Succeeded),
    );
    a.attrs.insert("color".into(), "#ffcc00".into());
    let mut b = node(
        "b",
        PicKind::Node,
        "a → b ‖ c | d × e",
        Some(NodeState::Running),
    );
    b.attrs.insert("shape".into(), "circle".into());
    let mut stack = node("s", PicKind::Stack, "work ×12", Some(NodeState::Failed));
    stack.violated = true;
    let region = node("shape:0", PicKind::Region, "(N→M) | (J→K)*", None);
    let growth = node("grow:b", PicKind::Growth, "★", None);
    let mut e1 = edge("a", "b", false);
    e1.attrs.insert("label".into(), "rows<&>".into());
    e1.attrs.insert("color".into(), "blue".into());
    let mut o = outlook(
        vec![a, b, stack, region, growth],
        vec![
            e1,
            edge("a", "s", false),
            edge("s", "shape:0", true),
            edge("shape:0", "b", true),
            edge("b", "grow:b", true),
        ],
    );
    o.violations = vec!["node s added <x> & broke \"static\"".into()];
    o
}

/// A tiny XML well-formedness check: one root element, properly nested
/// tags, quoted attributes without `<` and without duplicates, only
/// known or numeric entity references, no forbidden characters.
fn check_xml(doc: &str) -> Result<(), String> {
    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            let end = rest[i..].find(';').ok_or(format!("bad & in {t:?}"))? + i;
            let name = &rest[i + 1..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || name
                    .strip_prefix("#x")
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || name
                    .strip_prefix('#')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("bad entity &{name}; in {t:?}"));
            }
            rest = &rest[end + 1..];
        }
        if t.contains('<') || t.chars().any(|c| !xml_allowed(c)) {
            return Err(format!("bad character in {t:?}"));
        }
        Ok(())
    }
    fn name_end(s: &str) -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
            .unwrap_or(s.len())
    }

    let mut s = doc;
    if let Some(rest) = s.strip_prefix("<?xml") {
        s = &rest[rest.find("?>").ok_or("unclosed prolog")? + 2..];
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    while !s.is_empty() {
        let lt = s.find('<').unwrap_or(s.len());
        let text = &s[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        check_text(text)?;
        s = &s[lt..];
        if s.is_empty() {
            break;
        }
        if let Some(rest) = s.strip_prefix("<!--") {
            s = &rest[rest.find("-->").ok_or("unclosed comment")? + 3..];
        } else if let Some(rest) = s.strip_prefix("</") {
            let n = name_end(rest);
            let name = &rest[..n];
            if stack.pop() != Some(name) {
                return Err(format!("unexpected </{name}>"));
            }
            let rest = rest[n..].trim_start();
            s = rest
                .strip_prefix('>')
                .ok_or(format!("bad end tag </{name}"))?;
        } else {
            let rest = &s[1..];
            let n = name_end(rest);
            if n == 0 {
                return Err(format!("bad tag at {:?}", &s[..s.len().min(40)]));
            }
            let name = &rest[..n];
            let mut r = &rest[n..];
            let mut seen = Vec::new();
            loop {
                let t = r.trim_start();
                if let Some(after) = t.strip_prefix("/>") {
                    r = after;
                    if stack.is_empty() {
                        roots += 1;
                    }
                    break;
                }
                if let Some(after) = t.strip_prefix('>') {
                    r = after;
                    if stack.is_empty() {
                        roots += 1;
                    }
                    stack.push(name);
                    break;
                }
                if t.len() == r.len() && !seen.is_empty() {
                    return Err(format!("no space before attribute in <{name}"));
                }
                let an = name_end(t);
                if an == 0 {
                    return Err(format!(
                        "bad attribute in <{name}: {:?}",
                        &t[..t.len().min(40)]
                    ));
                }
                let attr = &t[..an];
                if seen.contains(&attr) {
                    return Err(format!("duplicate attribute {attr} in <{name}"));
                }
                seen.push(attr);
                let t = t[an..].trim_start();
                let t = t
                    .strip_prefix('=')
                    .ok_or(format!("no = after {attr}"))?
                    .trim_start();
                let q = t.chars().next().ok_or("eof")?;
                if q != '"' && q != '\'' {
                    return Err(format!("unquoted value of {attr}"));
                }
                let close = t[1..].find(q).ok_or(format!("unclosed value of {attr}"))? + 1;
                check_text(&t[1..close])?;
                r = &t[close + 1..];
            }
            s = r;
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

#[test]
fn xml_checker_catches_errors() {
    assert!(check_xml("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
    assert!(check_xml("<a><b></a>").is_err());
    assert!(check_xml("<a>x < y</a>").is_err());
    assert!(check_xml("<a>x & y</a>").is_err());
    assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
    assert!(check_xml("<a x=\"<\"/>").is_err());
    assert!(check_xml("<a/><b/>").is_err());
}

#[test]
fn svg_is_well_formed_and_shows_everything() {
    let o = sample();
    let svg = svg(&o);
    assert_complete(&svg, &o);
    assert!(laid_out_by_layout_rs(&svg));
    for label in [
        "fetch &quot;x&quot; &lt;1&gt; &amp; &apos;y&apos;",
        "a → b ‖ c | d × e",
        "work ×12",
        "(N→M) | (J→K)*",
        "★",
        "rows&lt;&amp;&gt;",
    ] {
        assert!(svg.contains(label), "missing {label}");
    }
    // Title and legend.
    assert!(svg.contains("wf &lt;&amp;&gt; · run run-1 · running · event 42"));
    for (state, fill) in STATE_FILLS {
        assert!(svg.contains(state.as_str()));
        assert!(svg.contains(fill));
    }
    assert!(svg.contains("possible future"));
    // Violation caption, in red.
    assert!(svg.contains(&format!(
        "fill=\"{RED}\">violation: node s added &lt;x&gt; &amp; broke &quot;static&quot;"
    )));
    // Colours: the colour attribute overrides the state.
    assert!(svg.contains("fill=\"#ffcc00ff\""));
    assert!(svg.contains("fill=\"#ffd54fff\"")); // running
    assert!(svg.contains("stroke=\"#0000ffff\"")); // blue edge
                                                   // The stack broke a promise: thick red outline.
    assert!(svg.contains("stroke-width=\"3\" stroke=\"#d00000ff\""));
}

#[test]
fn one_sans_font_icons_for_states_and_labels_beside_their_edges() {
    let o = sample();
    for svg in [svg(&o), {
        let plan = plan(&o, 0);
        let body = plain_layout(&o, &plan);
        assemble(&o, &body)
    }] {
        check_xml(&svg).unwrap();
        assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width="));
        assert!(
            svg.contains(&format!("font-family=\"{FONT_FAMILY}\">")),
            "on the root"
        );
        assert!(
            !svg.contains("Times") && !svg.contains("serif;"),
            "one font"
        );
        assert_eq!(svg.matches("font-family").count(), 1, "only the root's");
        // Every node with a state has its icon, named by its id.
        for (id, icon) in [("a", "✔"), ("b", "▶"), ("s", "✖")] {
            assert!(
                svg.contains(&format!("data-id=\"{id}\" "))
                    && svg.contains(&format!(">{icon}<title>")),
                "{id}: {icon}"
            );
        }
        assert_eq!(
            svg.matches("class=\"state-icon ").count(),
            3,
            "none on wildcards"
        );
        for (state, _) in STATE_FILLS {
            let named = format!(">{} {}</text>", state_icon(state), state.as_str());
            assert!(svg.contains(&named), "the legend: {named}");
        }
        // The label is drawn once, as text of its own.
        assert_eq!(svg.matches("rows&lt;&amp;&gt;").count(), 1);
    }
    // Beside its edge: just right of the middle of the routed path.
    let svg = svg(&o);
    let path = &svg[svg.find("data-from=\"a\" data-to=\"b\"").unwrap()..];
    let d = &path[path.find(" d=\"").unwrap() + 4..];
    let d = &d[..d.find('"').unwrap()];
    let (x, y) = path_middle(d).unwrap();
    assert!(
        svg.contains(&format!(
            "class=\"label\" x=\"{:.1}\" y=\"{y:.1}\"",
            x + 6.0
        )),
        "{d}"
    );
}

#[test]
fn a_long_title_widens_the_picture() {
    let mut o = sample();
    o.workflow = "W".repeat(300);
    let svg = svg(&o);
    let width: f64 = svg
        .split("width=\"")
        .nth(1)
        .and_then(|w| w.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap();
    let title = format!("{} · run run-1 · running · event 42", o.workflow);
    // A bold W is about 0.9 em of 15 px.
    assert!(width >= 300.0 * 0.9 * 15.0, "{width}");
    assert!(width >= text_width(&title, 15.0, true), "{width}");
    let wide = text_width("漢字漢字", 15.0, false);
    assert_eq!(wide, 60.0, "an em each");
}

#[test]
fn a_repeat_region_is_a_dashed_stack() {
    let mut region = node("~region0", PicKind::Region, "M{2,5}", None);
    region.attrs.insert("shape".into(), "stack".into());
    let look = node_look(&region);
    assert_eq!((look.shape, look.stroke_width), (NodeShape::Box, 3));
    assert!(look.props.contains("stroke-dasharray"), "{}", look.props);
}

#[test]
fn wildcards_and_dashed_edges_are_dashed() {
    let svg = svg(&sample());
    for id in ["shape:0", "grow:b"] {
        let at = svg
            .find(&format!("data-id=\"{id}\""))
            .unwrap_or_else(|| panic!("no node {id}"));
        let tag_end = at + svg[at..].find('>').unwrap();
        assert!(
            svg[at..tag_end].contains("stroke-dasharray"),
            "{id} not dashed"
        );
    }
    let at = svg.find("data-id=\"a\"").unwrap();
    let tag_end = at + svg[at..].find('>').unwrap();
    assert!(!svg[at..tag_end].contains("stroke-dasharray"));
    // Three dashed edges, drawn with a dash array.
    assert_eq!(svg.matches("class=\"edge dashed\"").count(), 3);
    assert_eq!(svg.matches("stroke-dasharray=\"5,5\"").count(), 3);
}

#[test]
fn empty_outlook_draws_a_note() {
    let o = outlook(vec![], vec![]);
    let svg = svg(&o);
    check_xml(&svg).unwrap();
    assert!(svg.contains("empty graph"));
    assert!(svg.contains("possible future"));
    let dot = dot(&o);
    assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
}

#[test]
fn odd_graphs_do_not_panic() {
    let n = |id: &str| node(id, PicKind::Node, id, Some(NodeState::Pending));
    let cases = vec![
        // One node, no edges.
        outlook(vec![n("x")], vec![]),
        // A self edge, a duplicate edge, an unknown endpoint.
        outlook(
            vec![n("x"), n("y")],
            vec![
                edge("x", "x", false),
                edge("x", "y", false),
                edge("x", "y", true),
                edge("x", "nowhere", false),
            ],
        ),
        // A cycle, with labels on every edge.
        outlook(
            vec![n("x"), n("y"), n("z")],
            vec![
                edge("x", "y", false),
                edge("y", "z", false),
                edge("z", "x", false),
            ]
            .into_iter()
            .map(|mut e| {
                e.attrs.insert("label".into(), "l".into());
                e
            })
            .collect(),
        ),
        // Duplicate ids, empty and multi-line labels, control characters.
        outlook(
            vec![
                n("x"),
                node("x", PicKind::Node, "", None),
                node("y", PicKind::Stack, "two\nlines\u{1}", None),
            ],
            vec![edge("x", "y", false)],
        ),
    ];
    for o in cases {
        let svg = svg(&o);
        check_xml(&svg).unwrap();
        assert!(laid_out_by_layout_rs(&svg), "{svg}");
        let _ = dot(&o);
    }
}

#[test]
fn dot_marks_wildcards_and_violations() {
    let dot = dot(&sample());
    assert!(dot.starts_with("digraph \"wf <&>\" {"));
    assert!(dot.contains("rankdir=TB"));
    assert!(dot
        .contains(r##""shape:0" [label="(N→M) | (J→K)*", style="dashed", fillcolor="#ffffff"]"##));
    assert!(dot.contains(r#""grow:b" [label="★", style="dashed""#));
    assert!(dot.contains(r##""a" [label="fetch \"x\" <1> & 'y'", fillcolor="#ffcc00"]"##));
    assert!(
        dot.contains(r##""b" [label="a → b ‖ c | d × e", fillcolor="#ffd54f", shape="circle"]"##)
    );
    assert!(dot
        .contains(r##""s" [label="work ×12", fillcolor="#f4978e", color="#d00000", penwidth=3]"##));
    assert!(dot.contains(r#""a" -> "b" [label="rows<&>", color="blue"];"#));
    assert!(dot.contains(r##""s" -> "shape:0" [style="dashed", color="#555555"];"##));
    assert!(dot.contains("<font color=\"red\">violation: node s added &lt;x&gt; &amp; broke &quot;static&quot;</font>"));
    assert_eq!(dot_id(r#"a\"b"#), r#""a\\\"b""#);
    assert_eq!(dot_label("x\ny"), r#""x\ny""#);
}

/// A random DAG: each node after the first has one to three parents
/// among the earlier nodes.
fn random_dag(n: usize, seed: u64) -> Outlook {
    let mut seed = seed | 1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let states = STATE_FILLS.map(|(s, _)| s);
    let nodes = (0..n)
        .map(|i| {
            let state = states[(rnd() % 7) as usize];
            node(
                &format!("n{i}"),
                PicKind::Node,
                &format!("task {i}"),
                Some(state),
            )
        })
        .collect();
    let mut edges = Vec::new();
    for i in 1..n {
        for _ in 0..1 + rnd() % 3 {
            let p = (rnd() % i as u64) as usize;
            edges.push(edge(&format!("n{p}"), &format!("n{i}"), rnd() % 5 == 0));
        }
    }
    outlook(nodes, edges)
}

/// A random DAG whose parents are among the `window` previous nodes
/// (edges stay local, as in most workflows).
fn local_dag(n: usize, seed: u64, window: usize) -> Outlook {
    let mut o = random_dag(n, seed);
    let mut seed = seed | 1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    o.edges.clear();
    for i in 1..n {
        let lo = i.saturating_sub(window);
        for _ in 0..1 + rnd() % 3 {
            let p = lo + (rnd() % (i - lo) as u64) as usize;
            o.edges
                .push(edge(&format!("n{p}"), &format!("n{i}"), rnd() % 5 == 0));
        }
    }
    o
}

/// layout-rs's SVG writer defines this marker.
fn laid_out_by_layout_rs(svg: &str) -> bool {
    svg.contains("<marker id=\"endarrow\"")
}

/// Every node and every edge is drawn exactly once.
fn assert_complete(svg: &str, o: &Outlook) {
    check_xml(svg).unwrap();
    assert_eq!(svg.matches("class=\"node ").count(), o.nodes.len());
    assert_eq!(svg.matches("class=\"edge").count(), o.edges.len());
}

#[test]
fn random_dag_of_300_nodes_renders() {
    let o = local_dag(300, 7, 20);
    let t = Instant::now();
    let svg = svg_with_optimiser(&o, false);
    eprintln!("300-node DAG: {:?} (no optimiser)", t.elapsed());
    assert_complete(&svg, &o);
    assert!(svg.contains("task 299"));
    assert!(laid_out_by_layout_rs(&svg));
    assert!(!svg.contains("edge direct"));
}

#[test]
fn long_edges_go_direct_over_the_budget() {
    let o = random_dag(80, 3);
    let full = plan(&o, usize::MAX);
    assert!(full.direct.is_empty() && full.elements > 200);
    let p = plan(&o, 200);
    assert!(p.elements <= 200 && !p.direct.is_empty());
    // Taking non-tight edges out moves no node.
    let laid_only = Outlook {
        edges: p.laid.iter().map(|e| e.edge.clone()).collect(),
        ..o.clone()
    };
    assert_eq!(plan(&laid_only, usize::MAX).level, full.level);

    let svg = assemble(&o, &graph_body(&o, Some(false), 200));
    assert_complete(&svg, &o);
    assert!(laid_out_by_layout_rs(&svg));
    assert_eq!(svg.matches("edge direct").count(), p.direct.len());
}

#[test]
fn the_layout_within_a_budget_is_the_most_detailed_that_fits() {
    let ms = Duration::from_millis;
    // 100 elements: about 2.3 ms routed, plus 3.5 ms of optimiser for
    // 10,000 units of crossing work; 300 nodes and edges plain: 0.45 ms.
    let choose100 = |budget| choose(true, true, 100, 10_000.0, 300, budget);
    assert_eq!(choose100(ms(10)), Layout::Optimised);
    assert_eq!(choose100(ms(3)), Layout::Routed);
    assert_eq!(choose100(ms(1)), Layout::Plain);
    assert_eq!(choose100(Duration::from_micros(100)), Layout::Counted);
    // What `svg` would not do is never done, whatever the budget.
    assert_eq!(
        choose(true, false, 100, f64::INFINITY, 300, ms(1_000)),
        Layout::Routed
    );
    assert_eq!(
        choose(false, true, 5_000, 1.0, 9_000, ms(1_000)),
        Layout::Plain
    );
}

#[test]
fn a_picture_drawn_within_a_budget_draws_its_nodes_or_counts_them() {
    let o = sample();
    let (svg, layout) = svg_within(&o, Duration::from_secs(1));
    assert_eq!(layout, Layout::Optimised);
    assert!(svg.contains("data-id=\"b\""));
    let (svg, layout) = svg_within(&o, Duration::from_micros(1));
    assert_eq!(layout, Layout::Counted);
    assert!(
        !svg.contains("data-id=\"b\""),
        "no node is drawn one by one"
    );
    // The stack of the sample has no counts by state: two nodes.
    assert!(svg.contains("2 nodes (1 running, 1 succeeded)"), "{svg}");
}

#[test]
fn plain_layout_beyond_the_budget() {
    for o in [sample(), random_dag(80, 3)] {
        let svg = assemble(&o, &graph_body(&o, None, 1));
        assert_complete(&svg, &o);
        assert!(!laid_out_by_layout_rs(&svg));
        for n in &o.nodes {
            assert!(svg.contains(&xml_escape(&n.label)));
        }
    }
}

#[test]
fn the_optimiser_is_off_for_wide_rows() {
    let work = |o: &Outlook| crossing_work(&plan(o, LAYOUT_MAX_ELEMENTS));
    assert!(work(&random_dag(300, 7)) > OPTIMISE_MAX_WORK);
    assert!(work(&local_dag(300, 7, 20)) < OPTIMISE_MAX_WORK);
}

/// Small random graphs with cycles, self-loops, parallel edges, labels
/// and every kind of node: layout-rs never panics on what we hand it.
#[test]
fn layout_rs_does_not_panic_on_small_random_graphs() {
    let mut seed: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut panics = 0;
    for round in 0..200 {
        let n = 1 + (rnd() % 12) as usize;
        let nodes: Vec<PicNode> = (0..n)
            .map(|i| {
                let kind = [
                    PicKind::Node,
                    PicKind::Stack,
                    PicKind::Region,
                    PicKind::Growth,
                    PicKind::Rule,
                ][(rnd() % 5) as usize];
                let label = ["", "x", "a long label with words", "two\nlines", "★", "<&>"]
                    [(rnd() % 6) as usize];
                let mut p = node(&format!("n{i}"), kind, label, None);
                if rnd() % 4 == 0 {
                    p.attrs.insert(
                        "shape".into(),
                        ["circle", "ellipse", "box"][(rnd() % 3) as usize].into(),
                    );
                }
                p
            })
            .collect();
        let m = (rnd() % (3 * n as u64 + 1)) as usize;
        let edges: Vec<PicEdge> = (0..m)
            .map(|_| {
                let mut e = edge(
                    &format!("n{}", rnd() % n as u64),
                    &format!("n{}", rnd() % n as u64),
                    rnd() % 2 == 0,
                );
                if rnd() % 3 == 0 {
                    e.attrs.insert(
                        "label".into(),
                        ["l", "a longer label"][(rnd() % 2) as usize].into(),
                    );
                }
                e
            })
            .collect();
        let o = outlook(nodes, edges);
        for opt in [true, false] {
            let p = plan(&o, usize::MAX);
            if catch_unwind(AssertUnwindSafe(|| run_layout(&o, &p, opt))).is_err() {
                panics += 1;
                eprintln!(
                    "round {round} opt {opt}: {:?}",
                    o.edges
                        .iter()
                        .map(|e| (&e.from, &e.to, attr_str(&e.attrs, "label").is_some()))
                        .collect::<Vec<_>>()
                );
            }
        }
        assert_complete(&svg(&o), &o);
    }
    assert_eq!(panics, 0);
}
