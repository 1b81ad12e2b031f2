//! Fuzzing by property tests: the protocol decoder and the shape parser
//! take any text a task can send. They never panic, never overflow the
//! stack, and answer with a value or an error (naming the limit when one
//! is passed). A short run is part of `cargo test`; see `docs/fuzzing.md`
//! for longer ones (`PROPTEST_CASES=100000`).

use orch::limits::{MAX_JSON_DEPTH, MAX_SHAPE_ATOMS, MAX_SHAPE_DEPTH, MAX_SHAPE_TEXT};
use orch::promise::glob::Glob;
use orch::promise::shape::{Region, RegionNode, Shape};
use orch::protocol::{classify, Body, Line, Message};
use proptest::prelude::*;

/// Cases per property: `PROPTEST_CASES` when set, else few enough that
/// the whole file runs in a few seconds.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `f` on a thread with a small stack: a recursion that a limit does
/// not bound shows up as a stack overflow (which aborts the test binary:
/// loud on purpose).
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic")
}

/// What a classified line may be: any outcome, but a limit that refused
/// it is named.
fn well_classified(line: &str) -> Result<(), TestCaseError> {
    let l = line.to_string();
    let got = small_stack(move || classify(&l));
    if let Line::Message(Message {
        body: Body::Rejected(e),
        ..
    }) = &got
    {
        prop_assert!(!e.is_empty());
    }
    Ok(())
}

/// Bits of protocol lines, JSON and shapes, to build likely-interesting
/// garbage from.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{\"orch\":1,".to_string()),
        Just("\"seq\":1,".to_string()),
        Just("\"type\":\"output\",".to_string()),
        Just("\"type\":\"promise\",".to_string()),
        Just("\"type\":\"add_node\",".to_string()),
        Just("\"value\":".to_string()),
        Just("\"promise\":{\"shape\":{\"from\":\"a\",\"to\":\"b\",\"shape\":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("1e999".to_string()),
        Just("0.1".to_string()),
        Just("null".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("→".to_string()),
        Just("*".to_string()),
        Just("{2,".to_string()),
        "[a-zA-Z0-9 _é]{0,8}",
        any::<String>(),
    ]
}

fn garbage() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..40).prop_map(|v| v.concat())
}

/// The output message with `value` as its value.
fn output_line(value: &str) -> String {
    format!(r#"{{"orch":1,"seq":7,"type":"output","value":{value}}}"#)
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn classify_takes_any_text(line in any::<String>()) {
        well_classified(&line)?;
    }

    #[test]
    fn classify_takes_marked_garbage(rest in garbage()) {
        well_classified(&format!("{{\"orch\":1,{rest}"))?;
        well_classified(&rest)?;
    }

    #[test]
    fn nesting_is_refused_past_the_limit_at_any_depth(
        depth in prop_oneof![0usize..200, 0usize..300_000],
        open in prop::sample::select(vec!["[", "{\"k\":"]),
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let got = small_stack({
            let line = output_line(&value);
            move || classify(&line)
        });
        match got {
            Line::Message(Message { body: Body::Output(_), .. }) => {
                prop_assert!(depth <= MAX_JSON_DEPTH, "{depth} levels accepted");
            }
            Line::Message(Message { body: Body::Rejected(e), .. }) | Line::Malformed(e) => {
                prop_assert!(depth > MAX_JSON_DEPTH, "{depth} levels refused: {e}");
                prop_assert!(e.contains("MAX_JSON_DEPTH"), "{e}");
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn integers_are_exact_or_refused(digits in "-?[0-9]{1,40}") {
        let got = classify(&output_line(&format!("[{digits}]")));
        let fits = digits.parse::<i64>().is_ok() || digits.parse::<u64>().is_ok();
        match got {
            Line::Message(Message { body: Body::Output(v), .. }) => {
                prop_assert!(fits, "{digits} accepted");
                // Exact: the number read is the one sent.
                let sent: i128 = digits.parse().unwrap();
                let read = v[0].as_i64().map(i128::from).or(v[0].as_u64().map(i128::from));
                prop_assert!(read == Some(sent) || sent == 0, "{digits} read as {}", v[0]);
            }
            Line::Message(Message { body: Body::Rejected(e), .. }) => {
                prop_assert!(!fits, "{digits}: {e}");
                prop_assert!(e.contains("does not fit in 64 bits"), "{e}");
            }
            Line::Malformed(e) => {
                // Leading zeros, `-0…`: not JSON numbers at all.
                prop_assert!(e.contains("not valid JSON") || !fits, "{digits}: {e}");
            }
            other => prop_assert!(false, "{digits}: {other:?}"),
        }
    }

    #[test]
    fn floats_are_exact(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let text = serde_json::to_string(&x).unwrap();
        let Line::Message(Message { body: Body::Output(v), .. }) = classify(&output_line(&text)) else {
            return Err(TestCaseError::fail(format!("{text} refused")));
        };
        prop_assert_eq!(v.as_f64().unwrap().to_bits(), x.to_bits(), "{}", text);
    }

    #[test]
    fn long_lines_stay_cheap(len in 0usize..200_000, item in prop::sample::select(vec!["1,", "\"é\",", "[],", "{},"])) {
        let body = item.repeat(len / item.len());
        let line = output_line(&format!("[{body}0]"));
        let got = classify(&line);
        prop_assert!(matches!(got, Line::Message(Message { body: Body::Output(_), .. })), "{:?}", got);
    }

    #[test]
    fn shapes_parse_or_say_why(text in any::<String>()) {
        check_shape_text(text)?;
    }

    #[test]
    fn shape_garbage_parses_or_says_why(text in shape_garbage()) {
        check_shape_text(text)?;
    }

    #[test]
    fn deep_brackets_stop_at_the_limit(depth in prop_oneof![0usize..100, 0usize..40_000]) {
        let text = format!("{}A{}", "(".repeat(depth), ")".repeat(depth));
        let got = small_stack(move || text.parse::<Shape>());
        match got {
            Ok(s) => {
                prop_assert!(depth <= MAX_SHAPE_DEPTH);
                prop_assert_eq!(s, Shape::task("A"));
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(depth > MAX_SHAPE_DEPTH, "{e}");
                prop_assert!(e.contains("MAX_SHAPE_DEPTH") || e.contains("MAX_SHAPE_TEXT"), "{}", e);
            }
        }
    }

    #[test]
    fn long_sequences_stop_at_the_limits(n in prop_oneof![1usize..50, 1usize..30_000], sep in prop::sample::select(vec![" → ", " | ", " ‖ ", "*", "→*"])) {
        let text = if sep.contains('*') {
            format!("M{}", sep.repeat(n))
        } else {
            vec!["M"; n].join(sep)
        };
        let len = text.len();
        let got = small_stack(move || text.parse::<Shape>().map(|s| s.to_string()));
        match got {
            Ok(back) => {
                prop_assert!(len <= MAX_SHAPE_TEXT);
                prop_assert!(back.parse::<Shape>().is_ok());
            }
            Err(e) => {
                let e = e.to_string();
                let limit = ["MAX_SHAPE_TEXT", "MAX_SHAPE_ATOMS", "MAX_SHAPE_DEPTH"].iter().any(|l| e.contains(l));
                prop_assert!(limit, "{e}");
                prop_assert!(len > MAX_SHAPE_TEXT || n > MAX_SHAPE_ATOMS.min(MAX_SHAPE_DEPTH) - 1, "{n}: {e}");
            }
        }
    }

    #[test]
    fn globs_match_in_bounded_time(pattern in "[a*?]{0,64}", name in "[ab]{0,256}") {
        // Quadratic at worst: 64 × 256 steps.
        let _ = Glob::new(&pattern).matches(&name);
    }
}

fn shape_garbage() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("("),
        Just(")"),
        Just("|"),
        Just("‖"),
        Just("&"),
        Just("→"),
        Just("->"),
        Just("*"),
        Just("+"),
        Just("?"),
        Just("{"),
        Just("}"),
        Just(","),
        Just("0"),
        Just("3"),
        Just("4294967296"),
        Just("A"),
        Just("M_*"),
        Just("\"a b\""),
        Just("\"\\\""),
        Just("ε"),
        Just("any"),
        Just("empty"),
        Just(" "),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

/// A shape text parses (and then round-trips, passes its own check and
/// can be matched) or fails with a message.
fn check_shape_text(text: String) -> Result<(), TestCaseError> {
    let got: Result<Result<(), String>, String> = small_stack(move || {
        let s = text.parse::<Shape>().map_err(|e| e.to_string())?;
        let display = s.to_string();
        let back = display
            .parse::<Shape>()
            .map_err(|e| format!("{display}: {e}"))?;
        if back != s {
            return Ok(Err(format!("`{display}` read back as `{back}`")));
        }
        if let Err(e) = s.check() {
            return Ok(Err(format!("`{display}` fails its check: {e}")));
        }
        let m = |i: usize| RegionNode {
            id: format!("M_{i}"),
            task: "M".into(),
        };
        let r = Region {
            nodes: vec![m(0), m(1)],
            edges: vec![(0, 1)],
            from_edges: vec![0],
            to_edges: vec![1],
            direct: false,
        };
        let _ = r.mismatch(&s);
        Ok(Ok(()))
    });
    match got {
        Err(parse_error) => prop_assert!(!parse_error.is_empty()),
        Ok(Err(broken)) => prop_assert!(false, "{broken}"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

fn fuzz_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "d", "M_0", "M_1", "x"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["", "*", "q\"", "tab\there"]).prop_map(str::to_string),
        1 => (0usize..300).prop_map(|n| "é".repeat(n)),
    ]
}

fn deep_value() -> impl Strategy<Value = serde_json::Value> {
    (0usize..80, any::<bool>()).prop_map(|(depth, objects)| {
        (0..depth).fold(serde_json::json!(1), |v, _| {
            if objects {
                serde_json::json!({ "k": v })
            } else {
                serde_json::json!([v])
            }
        })
    })
}

fn fuzz_inputs() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!({})),
        fuzz_id().prop_map(|id| json!({ "x": { "$output": id } })),
        fuzz_id().prop_map(|id| json!({ "x": [{ "$output": id, "pointer": "/a" }] })),
        Just(json!({ "x": { "$output": 3 } })),
        deep_value().prop_map(|v| json!({ "x": v })),
    ]
}

fn fuzz_promise() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        (fuzz_id(), fuzz_id(), shape_garbage())
            .prop_map(|(f, t, s)| json!({ "shape": { "from": f, "to": t, "shape": s } })),
        (fuzz_id(), fuzz_id())
            .prop_map(|(f, t)| json!({ "shape": { "from": f, "to": t, "shape": "M*" } })),
        fuzz_id().prop_map(|p| json!({ "only_nodes": { "pattern": p } })),
        fuzz_id().prop_map(|p| json!({ "no_edges_into": { "node": p } })),
        (0usize..2000).prop_map(|n| json!({ "only_edges": { "from": "*".repeat(n), "to": "*" } })),
        Just(json!({ "no_new_nodes": {} })),
        Just(json!({ "static": {} })),
    ]
}

/// One protocol line carrying a mutation (without its seq).
fn fuzz_mutation() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        (fuzz_id(), fuzz_id(), fuzz_inputs()).prop_map(|(id, name, inputs)| json!({
            "type": "add_node", "id": id, "inputs": inputs,
            "task": { "kind": "command", "argv": ["true"], "name": name },
        })),
        (fuzz_id(), fuzz_id()).prop_map(|(f, t)| json!({ "type": "add_edge", "from": f, "to": t })),
        (fuzz_id(), deep_value())
            .prop_map(|(n, v)| json!({ "type": "set_attrs", "node": n, "attrs": { "label": v } })),
        fuzz_promise().prop_map(|p| json!({ "type": "promise", "promise": p })),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    /// A task's batch of decoded mutations goes through staging, the
    /// promise checks and the commit without a panic, and what commits
    /// reads back from its JSON (as the history stores it).
    #[test]
    fn task_batches_are_staged_checked_and_stored_safely(
        lines in prop::collection::vec(fuzz_mutation(), 0..12),
        shape in shape_garbage(),
    ) {
        let got = small_stack(move || fuzz_batch(lines, shape));
        prop_assert!(got.is_ok(), "{}", got.unwrap_err());
    }
}

fn fuzz_batch(lines: Vec<serde_json::Value>, shape: String) -> Result<(), String> {
    use orch::graph::{Graph, Staging};
    use orch::{Mutation, Promise, Task};
    let mut g = Graph::new();
    let mut registration: Vec<Mutation> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| Mutation::add_node(*id, Task::command(["true"])))
        .collect();
    registration.push(Mutation::add_edge("a", "b"));
    registration.push(Mutation::add_edge("b", "c"));
    if let Ok(s) = shape.parse::<Shape>() {
        registration.push(Mutation::AddPromise {
            promise: Promise::shape("b", "d", s),
        });
    }
    g.commit(&registration)
        .map_err(|e| format!("registration: {e}"))?;
    let mut staging = Staging::default();
    for (seq, mut line) in lines.into_iter().enumerate() {
        line["orch"] = 1.into();
        line["seq"] = (seq + 1).into();
        let Line::Message(Message {
            body: Body::Mutation(m),
            ..
        }) = classify(&line.to_string())
        else {
            continue;
        };
        if staging.stage(&g, m.clone()).is_ok() {
            let _ = orch::promise::check_mutation(&g, &staging, "a", &m);
        }
    }
    if orch::promise::check_batch(&g, &staging, Some("a")).is_err() {
        return Ok(());
    }
    let batch = staging.into_mutations();
    let stored = serde_json::to_string(&batch).map_err(|e| e.to_string())?;
    let back: Vec<Mutation> = serde_json::from_str(&stored)
        .map_err(|e| format!("stored batch does not read back: {e}"))?;
    g.apply_owned(back);
    Ok(())
}
