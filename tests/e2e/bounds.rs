//! Bounds on what a task, a user or a stored history can hand the
//! orchestrator (`orch::limits`, `docs/fuzzing.md`): past a limit, the
//! message is refused or the attempt fails with the limit named; the
//! orchestrator never crashes, and numbers are kept exactly or refused.

use orch::{AttemptOutcome, NodeState, RunStatus, Store, Task};
use serde_json::{json, Value};

use crate::util::*;

/// A task that writes raw protocol lines (no helper, which would check
/// some of them itself), picked by its `case` input; its output lists the
/// replies' messages.
const RAW: &str = r#"
import json, sys
start = json.loads(sys.stdin.readline())
case = start["inputs"]["case"]
replies = []
def send(fields):
    seq = len(replies) + 1
    sys.stdout.write('{"orch":1,"seq":%d,%s}\n' % (seq, fields))
    sys.stdout.flush()
    reply = json.loads(sys.stdin.readline())
    replies.append(reply.get("message", reply["type"]))
if case == "shapes":
    for n in (100000, 30000):
        shape = "(" * n + "M" + ")" * n
        send('"type":"promise","promise":{"shape":{"from":"t","to":"end","shape":"%s"}}' % shape)
elif case == "deep_values":
    deep = "[" * 100 + "1" + "]" * 100
    send('"type":"add_node","id":"x","task":{"kind":"command","argv":["true"]},"inputs":{"v":%s}' % deep)
    send('"type":"set_attrs","node":"t","attrs":{"label":%s}' % deep)
elif case == "big_int":
    send('"type":"output","value":{"n":123456789012345678901}')
elif case == "too_deep":
    # Past serde_json's own limit: no seq can be read, the line is malformed.
    send('"type":"output","value":%s' % ("[" * 100000 + "]" * 100000))
send('"type":"output","value":%s' % json.dumps(replies))
"#;

fn raw_space() -> Space {
    let s = Space::new();
    s.write("raw.py", RAW)
        .write("noop.py", "import orch\norch.start()\norch.output('ok')\n");
    s
}

/// `t` (raw.py with `case`) -> `end`; runs to the end and exports.
fn run_raw(case: &str) -> (Space, orch::RunExport) {
    let space = raw_space();
    let mut wf = space.workflow(case);
    wf.node("t", Task::python("raw.py")).input("case", case);
    wf.node("end", Task::python("noop.py"));
    wf.edge("t", "end");
    let (_, ex) = space.run(&wf);
    (space, ex)
}

/// The replies `t` got, as its output lists them.
fn replies(ex: &orch::RunExport) -> Vec<String> {
    let out = ex.node("t").unwrap().output.clone().expect("t's output");
    serde_json::from_value(out).unwrap()
}

#[test]
fn a_shape_of_100000_brackets_is_refused_with_its_limit_named() {
    let (_, ex) = run_raw("shapes");
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    let got = replies(&ex);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains(
            "shape text is 200001 bytes, longer than the limit of 65536 (MAX_SHAPE_TEXT)"
        ),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains(
            "shape nested deeper than 64 levels (the limit MAX_SHAPE_DEPTH) at character 64"
        ),
        "{}",
        got[1]
    );
    for r in &got {
        assert!(r.len() < 1000, "the reply quotes the shape shortened");
    }
    assert!(ex.promises.is_empty(), "no refused promise was added");
}

#[test]
fn values_nested_past_the_json_limit_are_refused() {
    let (_, ex) = run_raw("deep_values");
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    let got = replies(&ex);
    assert_eq!(
        got,
        [
            "add_node refused: JSON nested deeper than 64 levels at byte 164 (the limit MAX_JSON_DEPTH)",
            "set_attrs refused: JSON nested deeper than 64 levels at byte 128 (the limit MAX_JSON_DEPTH)"
        ],
    );
    assert!(ex.node("x").is_none());
    assert!(ex.node("t").unwrap().attrs.is_empty());
}

#[test]
fn a_line_too_deep_to_decode_fails_its_attempt_and_the_run_ends() {
    let (_, ex) = run_raw("too_deep");
    assert_eq!(ex.status, RunStatus::Failed, "{:?}", ex.reason);
    let t = ex.node("t").unwrap();
    assert_eq!(t.state, NodeState::Failed);
    let error = t.attempts[0].error.as_deref().unwrap();
    assert!(
        error.contains("JSON nested deeper than 64 levels") && error.contains("MAX_JSON_DEPTH"),
        "{error}"
    );
    assert!(error.len() < 1000, "the line is quoted shortened: {error}");
    assert!(ex.node("end").unwrap().attempts.is_empty());
}

#[test]
fn an_integer_beyond_64_bits_is_refused_not_rounded() {
    let (_, ex) = run_raw("big_int");
    assert_eq!(ex.status, RunStatus::Succeeded, "{:?}", ex.reason);
    assert_eq!(
        replies(&ex),
        ["output refused: integer 123456789012345678901 at byte 47 does not fit in 64 bits (send it as a string)"]
    );
}

/// Outputs the extreme numbers, and the text Python made of them.
const EXTREMES: &str = r#"
import json, orch
orch.start()
value = {"max": 18446744073709551615, "min": -9223372036854775808,
         "floats": [0.1, 2.2250738585072014e-308, 1.7976931348623157e308, 5e-324,
                    0.30000000000000004, 7.038531e-26, 2.2250738585072011e-308]}
orch.output({"value": value, "text": json.dumps(value, sort_keys=True)})
"#;

/// Says whether what arrived is, to the bit, what was sent.
const CHECK: &str = r#"
import json, orch
ctx = orch.start()
got = ctx.inputs["x"]
orch.output({"same": json.dumps(got["value"], sort_keys=True) == got["text"],
             "text": json.dumps(got["value"], sort_keys=True)})
"#;

#[test]
fn extreme_numbers_reach_the_next_task_exactly() {
    let space = Space::new();
    space
        .write("extremes.py", EXTREMES)
        .write("check.py", CHECK);
    let mut wf = space.workflow("numbers");
    wf.node("a", Task::python("extremes.py"));
    wf.node("b", Task::python("check.py"))
        .input("x", orch::output("a"));
    let (outcome, ex) = space.run(&wf);
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let b = ex.node("b").unwrap().output.clone().unwrap();
    assert_eq!(b["same"], json!(true), "{}", b["text"]);
    let a = ex.node("a").unwrap().output.clone().unwrap();
    assert_eq!(a["value"]["max"].as_u64(), Some(u64::MAX));
    assert_eq!(a["value"]["min"].as_i64(), Some(i64::MIN));
    let floats: Vec<u64> = a["value"]["floats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap().to_bits())
        .collect();
    // As Rust's own parser reads the texts Python was given.
    let want: Vec<u64> = [
        "0.1",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "5e-324",
        "0.30000000000000004",
        "7.038531e-26",
        "2.2250738585072011e-308",
    ]
    .iter()
    .map(|f| f.parse::<f64>().unwrap().to_bits())
    .collect();
    assert_eq!(floats, want);
}

#[test]
fn orch_input_refuses_what_it_cannot_keep_and_delivers_nothing() {
    let space = Space::new();
    space.write(
        "use.py",
        "import json, orch\nctx = orch.start()\norch.output(json.dumps(ctx.upstream['approve']))\n",
    );
    let mut wf = space.workflow("approval");
    wf.node("approve", Task::input());
    wf.node("after", Task::python("use.py"));
    wf.edge("approve", "after");
    let runner = std::thread::spawn(move || wf.run().expect("run"));
    wait_for(&space, "approve to wait", |ex| {
        ex.node("approve")
            .is_some_and(|n| n.state == NodeState::Waiting)
    });
    let big = space.cli(&["input", "latest", "approve", "123456789012345678901"]);
    assert!(!big.status.success());
    let err = String::from_utf8_lossy(&big.stderr);
    assert!(
        err.contains(
            "integer 123456789012345678901 at byte 0 does not fit in 64 bits (send it as a string)"
        ) && err.contains("nothing was delivered"),
        "{err}"
    );
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let deep = space.cli(&["input", "latest", "approve", &deep]);
    assert!(!deep.status.success());
    let err = String::from_utf8_lossy(&deep.stderr);
    assert!(err.contains("MAX_JSON_DEPTH"), "{err}");
    // The first value delivered is the output: had a refused one been
    // stored, it would be that one.
    let ok = space.cli(&[
        "input",
        "latest",
        "approve",
        "[18446744073709551615, -9223372036854775808]",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let outcome = runner.join().unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.reason);
    let ex = space.export(&outcome.run);
    assert_eq!(
        ex.node("approve").unwrap().output,
        Some(json!([u64::MAX, i64::MIN]))
    );
    assert_eq!(
        ex.node("after").unwrap().output,
        Some(json!("[18446744073709551615, -9223372036854775808]"))
    );
}

/// The durable chain's task, replaced: `t001`'s first attempt hangs (its
/// orchestrator is killed meanwhile, as a crash on the poison killed it
/// before the limits); its next attempt sends the poison, a shape nested
/// 30,000 deep.
const POISON: &str = r#"
import os, time, orch
ctx = orch.start()
if ctx.node == "t001":
    if ctx.attempt == 1:
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(0.05)
        raise SystemExit(1)
    ctx.promise({"shape": {"from": "t001", "to": "t002",
                           "shape": "(" * 30000 + "M" + ")" * 30000}})
ctx.output({"node": ctx.node, "attempt": ctx.attempt})
"#;

#[test]
fn a_run_poisoned_before_the_limits_resumes_and_only_the_offending_attempt_fails() {
    let space = Space::new();
    space.write("sleep.py", POISON);
    let mut child = start_chain_with(&space, 3, 10, &[], &[]);
    running_pid(&space, "t001");
    kill9(&mut child);
    let out = space.cli(&["resume", "latest"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        None,
        "the resumed orchestrator did not crash"
    );
    let run = space.store().resolve_run("latest").unwrap();
    let ex = space.export(&run);
    assert_eq!(ex.status, RunStatus::Failed, "{:?}", ex.reason);
    let t000 = ex.node("t000").unwrap();
    assert_eq!(t000.state, NodeState::Succeeded, "nothing else is lost");
    assert_eq!(t000.output, Some(json!({"node": "t000", "attempt": 1})));
    let t001 = ex.node("t001").unwrap();
    let last = t001.attempts.last().unwrap();
    assert_eq!(last.outcome, Some(AttemptOutcome::Failed));
    let logs = logs_text(&space, &run, "t001");
    assert!(logs.contains("MAX_SHAPE_DEPTH"), "{logs}");
    assert!(ex.promises.is_empty());
}

#[test]
fn a_stored_event_past_a_limit_is_an_error_on_replay_and_resume_not_a_crash() {
    let space = chain_space();
    let mut child = start_chain_with(&space, 3, 5_000, &[], &[]);
    running_pid(&space, "t000");
    kill9(&mut child);
    let run = space.store().resolve_run("latest").unwrap();
    // Write into the registration, as an orchestrator without limits could
    // have: a promise whose shape nests 10,000 brackets.
    let db = rusqlite::Connection::open(space.db()).unwrap();
    let (seq, data): (i64, String) = db
        .query_row(
            "SELECT seq, data FROM events WHERE run = ?1 AND kind = 'batch_committed' ORDER BY seq LIMIT 1",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut event: Value = serde_json::from_str(&data).unwrap();
    let shape = format!("{}M{}", "(".repeat(10_000), ")".repeat(10_000));
    event["mutations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"op": "add_promise", "promise": {"shape": {"from": "t000", "to": "t001", "shape": shape}}}));
    db.execute(
        "UPDATE events SET data = ?1 WHERE run = ?2 AND seq = ?3",
        rusqlite::params![event.to_string(), run, seq],
    )
    .unwrap();
    drop(db);

    let err = space.store().replay(&run, None).unwrap_err().to_string();
    assert!(
        err.contains("does not parse") && err.contains("MAX_SHAPE_DEPTH"),
        "{err}"
    );
    assert!(err.len() < 2000, "the error quotes the shape shortened");
    let out = space.cli(&["resume", "latest"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "no crash");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MAX_SHAPE_DEPTH"), "{err}");
}
