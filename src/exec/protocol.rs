//! The JSON-lines protocol between the orchestrator and a task process
//! (SPEC §7, `docs/protocol.md`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::limits;
use crate::model::{Attrs, EdgeRef, Mutation, Task};

/// The protocol version this orchestrator speaks.
pub const VERSION: u64 = 1;

/// The first line a task reads on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// Protocol version.
    pub orch: u64,
    /// Always `"start"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The run id.
    pub run: String,
    /// The node id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// What runs.
    pub task: Task,
    /// Inputs with every output reference resolved.
    pub inputs: Value,
    /// The output of each direct predecessor, by node id.
    pub upstream: serde_json::Map<String, Value>,
}

impl Start {
    /// The start message for an attempt.
    pub fn new(
        run: &str,
        node: &str,
        attempt: u32,
        task: &Task,
        inputs: Value,
        upstream: serde_json::Map<String, Value>,
    ) -> Start {
        Start {
            orch: VERSION,
            kind: "start".into(),
            run: run.into(),
            node: node.into(),
            attempt,
            task: task.clone(),
            inputs,
            upstream,
        }
    }

    /// As one protocol line, with the newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("start message serialises");
        s.push('\n');
        s
    }
}

/// What a task sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A graph mutation, part of the attempt's batch.
    Mutation(Mutation),
    /// The attempt's output (the last one wins).
    Output(Value),
    /// A structured log line.
    Log {
        /// Level, e.g. `info`.
        level: String,
        /// The text.
        message: String,
    },
    /// A well-formed message whose content is refused (a promise that
    /// does not parse): answered with an error, the attempt goes on.
    Rejected(String),
    /// The task fails on purpose; `retry: false` makes it terminal.
    Fail {
        /// Why.
        message: String,
        /// Whether retries may try again.
        retry: bool,
    },
}

/// A message from a task with its sequence number.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Sequence number, strictly increasing from 1.
    pub seq: u64,
    /// The content.
    pub body: Body,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    AddNode {
        id: String,
        task: Task,
        #[serde(default)]
        inputs: Value,
        #[serde(default)]
        attrs: Attrs,
    },
    AddEdge {
        from: String,
        to: String,
        #[serde(default)]
        attrs: Attrs,
    },
    SetAttrs {
        #[serde(default)]
        node: Option<String>,
        #[serde(default)]
        edge: Option<EdgeRef>,
        attrs: Attrs,
    },
    Promise {
        promise: Value,
    },
    Rule {
        rule: Value,
    },
    Output {
        #[serde(default)]
        value: Value,
    },
    Log {
        message: String,
        #[serde(default)]
        level: Option<String>,
    },
    Fail {
        message: String,
        #[serde(default)]
        retry: Option<bool>,
    },
}

/// One stdout line of a task, classified.
// One value per line read, consumed at once: boxing the message would cost
// an allocation per line for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// Not a protocol line: part of the attempt's log.
    Log,
    /// A valid protocol message.
    Message(Message),
    /// A protocol line that is not valid: fails the attempt.
    Malformed(String),
}

/// True when a line begins like a protocol line (`{"orch"`, spaces
/// allowed): such a line must be a valid message.
pub fn is_marked(line: &str) -> bool {
    line.trim_start()
        .strip_prefix('{')
        .map(|r| r.trim_start().starts_with("\"orch\""))
        .unwrap_or(false)
}

/// Classifies one stdout line (without its newline).
///
/// A line is a protocol line when it is a JSON object with the key
/// `"orch"`, or when it begins with `{"orch"`; every other line is log.
/// A protocol line is checked by [`limits::check_json_within`] before it
/// is decoded: values nested deeper than [`limits::MAX_JSON_DEPTH`] or an
/// integer beyond 64 bits refuse the message ([`Body::Rejected`], an
/// `error` reply) when its `seq` can be read, else the line is malformed.
///
/// ```
/// use orch::protocol::{classify, Line};
/// assert_eq!(classify("hello"), Line::Log);
/// assert_eq!(classify(r#"{"a": 1}"#), Line::Log);
/// assert!(matches!(classify(r#"{"orch":1,"type":"log","seq":1,"message":"hi"}"#), Line::Message(_)));
/// assert!(matches!(classify(r#"{"orch":1,"type":"add_node""#), Line::Malformed(_)));
/// ```
pub fn classify(line: &str) -> Line {
    let t = line.trim_start();
    if !t.starts_with('{') {
        return Line::Log;
    }
    let marked = is_marked(t);
    // The bounded guard runs before anything decodes the task's text; the
    // message envelope is one level that does not count.
    let limit = limits::check_json_within(t, 1).err();
    let value: Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) if marked => {
            return Line::Malformed(match limit {
                Some(l) => l.to_string(),
                None => format!("not valid JSON ({e})"),
            })
        }
        Err(_) => return Line::Log,
    };
    let Some(obj) = value.as_object() else {
        return Line::Log;
    };
    let Some(version) = obj.get("orch") else {
        return Line::Log;
    };
    if version.as_u64() != Some(VERSION) {
        return Line::Malformed(format!(
            "protocol version {version} is not supported (this orchestrator speaks {VERSION})"
        ));
    }
    let seq = match obj.get("seq").and_then(Value::as_u64) {
        Some(s) => s,
        None => return Line::Malformed("missing or non-integer `seq`".to_string()),
    };
    if let Some(l) = limit {
        // Well-formed enough to answer: the task learns why, and nothing
        // of the message (no lossy float, no value too deep to store) is
        // kept.
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("message");
        return Line::Message(Message {
            seq,
            body: Body::Rejected(format!("{} refused: {l}", quote(kind))),
        });
    }
    let wire: Wire = match serde_json::from_value(value) {
        Ok(w) => w,
        Err(e) => return Line::Malformed(e.to_string()),
    };
    let body = match wire {
        Wire::AddNode {
            id,
            task,
            inputs,
            attrs,
        } => Body::Mutation(Mutation::AddNode {
            id,
            task: Box::new(task),
            inputs,
            attrs,
        }),
        Wire::AddEdge { from, to, attrs } => Body::Mutation(Mutation::AddEdge { from, to, attrs }),
        Wire::SetAttrs { node, edge, attrs } => {
            Body::Mutation(Mutation::SetAttrs { node, edge, attrs })
        }
        Wire::Promise { promise } => match serde_json::from_value(promise.clone()) {
            Ok(promise) => Body::Mutation(Mutation::AddPromise { promise }),
            Err(e) => Body::Rejected(format!(
                "add_promise {}: not a promise: {e}",
                quote(&promise.to_string())
            )),
        },
        Wire::Rule { rule } => match serde_json::from_value::<crate::model::Rule>(rule.clone()) {
            Ok(rule) => Body::Mutation(Mutation::AddRule {
                rule: Box::new(rule),
            }),
            Err(e) => Body::Rejected(format!(
                "add_rule {}: not a rule: {e}",
                quote(&rule.to_string())
            )),
        },
        Wire::Output { value } => Body::Output(value),
        Wire::Log { message, level } => Body::Log {
            level: level.unwrap_or_else(|| "info".into()),
            message,
        },
        Wire::Fail { message, retry } => Body::Fail {
            message,
            retry: retry.unwrap_or(true),
        },
    };
    Line::Message(Message { seq, body })
}

/// The `ack` reply line for a message.
pub fn ack(seq: u64) -> String {
    format!("{{\"orch\":{VERSION},\"type\":\"ack\",\"seq\":{seq}}}\n")
}

/// The `error` reply line for a message.
pub fn error(seq: u64, message: &str) -> String {
    let mut s =
        json!({"orch": VERSION, "type": "error", "seq": seq, "message": message}).to_string();
    s.push('\n');
    s
}

/// Shortens a line for quoting in an error message.
pub fn quote(line: &str) -> String {
    const MAX: usize = 300;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_parse() {
        let l = classify(
            r#"{"orch":1,"seq":2,"type":"add_node","id":"M_0","task":{"name":"M","kind":"python","script":"m.py"},"inputs":{"i":0}}"#,
        );
        let Line::Message(m) = l else { panic!("{l:?}") };
        assert_eq!(m.seq, 2);
        assert!(matches!(m.body, Body::Mutation(Mutation::AddNode { .. })));
        let Line::Message(m) =
            classify(r#"{"orch":1,"seq":3,"type":"promise","promise":{"static":{}}}"#)
        else {
            panic!()
        };
        assert!(matches!(
            m.body,
            Body::Mutation(Mutation::AddPromise { .. })
        ));
        let Line::Message(m) = classify(
            r#"{"orch":1,"seq":4,"type":"rule","rule":{"id":"m","when":{"closed":"task:pdf"},"then":[{"op":"add_edge","from":"a","to":"b"}]}}"#,
        ) else {
            panic!()
        };
        assert!(matches!(m.body, Body::Mutation(Mutation::AddRule { .. })));
        let Line::Message(m) = classify(
            r#"{"orch":1,"seq":5,"type":"rule","rule":{"id":"m","when":{"opened":"x"},"then":[]}}"#,
        ) else {
            panic!()
        };
        match m.body {
            Body::Rejected(e) => assert!(e.contains("add_rule") && e.contains("opened"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_lines_say_why() {
        match classify(r#"{"orch":1,"seq":1,"type":"add_edge","from":"a"}"#) {
            Line::Malformed(e) => assert!(e.contains("`to`"), "{e}"),
            other => panic!("{other:?}"),
        }
        match classify(r#"{"orch":1,"type":"output","value":1}"#) {
            Line::Malformed(e) => assert!(e.contains("seq"), "{e}"),
            other => panic!("{other:?}"),
        }
        match classify(r#"{"orch":2,"seq":1,"type":"output"}"#) {
            Line::Malformed(e) => assert!(e.contains("version 2"), "{e}"),
            other => panic!("{other:?}"),
        }
        match classify(r#"{"orch":1,"seq":1,"type":"teleport"}"#) {
            Line::Malformed(e) => assert!(e.contains("teleport"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_refuse_with_the_limit_named() {
        let nested = |depth: usize| {
            format!(
                r#"{{"orch":1,"seq":4,"type":"output","value":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let Line::Message(m) = classify(&nested(64)) else {
            panic!("64 levels are fine")
        };
        assert!(matches!(m.body, Body::Output(_)));
        // serde_json reads it, our limit refuses it: an error reply.
        match classify(&nested(65)) {
            Line::Message(Message {
                seq: 4,
                body: Body::Rejected(e),
            }) => assert_eq!(
                e,
                "output refused: JSON nested deeper than 64 levels at byte 106 (the limit MAX_JSON_DEPTH)"
            ),
            other => panic!("{other:?}"),
        }
        // Past serde_json's own limit, no seq can be read: malformed.
        match classify(&nested(100_000)) {
            Line::Malformed(e) => assert!(e.contains("deeper than 64 levels"), "{e}"),
            other => panic!("{other:?}"),
        }
        // An unmarked line too deep for serde_json stays log.
        let log = format!(r#"{{"x":{}}}"#, "[".repeat(200));
        assert_eq!(classify(&log), Line::Log);
        let big = r#"{"orch":1,"seq":2,"type":"output","value":{"n":123456789012345678901}}"#;
        match classify(big) {
            Line::Message(Message {
                body: Body::Rejected(e),
                ..
            }) => assert_eq!(
                e,
                "output refused: integer 123456789012345678901 at byte 47 does not fit in 64 bits (send it as a string)"
            ),
            other => panic!("{other:?}"),
        }
        let exact = r#"{"orch":1,"seq":2,"type":"output","value":[18446744073709551615,-9223372036854775808,0.1,2.2250738585072014e-308,1.7976931348623157e308]}"#;
        let Line::Message(Message {
            body: Body::Output(v),
            ..
        }) = classify(exact)
        else {
            panic!()
        };
        assert_eq!(v[0].as_u64(), Some(u64::MAX));
        assert_eq!(v[1].as_i64(), Some(i64::MIN));
        assert_eq!(v[2].as_f64(), Some(0.1));
        assert_eq!(v[3].as_f64(), Some(2.2250738585072014e-308));
        assert_eq!(v[4].as_f64(), Some(f64::MAX));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "[18446744073709551615,-9223372036854775808,0.1,2.2250738585072014e-308,1.7976931348623157e+308]"
        );
    }

    #[test]
    fn a_deep_shape_is_a_refused_promise() {
        let line = format!(
            r#"{{"orch":1,"seq":1,"type":"promise","promise":{{"shape":{{"from":"a","to":"b","shape":"{}A{}"}}}}}}"#,
            "(".repeat(30_000),
            ")".repeat(30_000)
        );
        match classify(&line) {
            Line::Message(Message {
                body: Body::Rejected(e),
                ..
            }) => {
                assert!(e.contains("shape nested deeper than 64 levels"), "{e}");
                assert!(e.len() < 1000, "quoted shortened: {} bytes", e.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn floats_read_back_exactly() {
        // Without serde_json's float_roundtrip, some of these are one ULP off.
        for x in [
            0.1f64,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            5e-324,
            0.30000000000000004,
            1.0000000000000002,
            9007199254740993.0,
            123456.789e-300,
        ] {
            let text = serde_json::to_string(&x).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v.as_f64().unwrap().to_bits(), x.to_bits(), "{text}");
        }
        // Texts that serde_json without float_roundtrip reads one ULP off
        // (checked against serde_json 1.0.154).
        for text in [
            "9007199254740993.0",
            "1.00000000000000011102230246251565404236316680908203125",
            "7.038531e-26",
            "2.2250738585072011e-308",
        ] {
            let want: f64 = text.parse().unwrap();
            let got: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
    }

    #[test]
    fn replies_are_single_lines() {
        assert_eq!(ack(4), "{\"orch\":1,\"type\":\"ack\",\"seq\":4}\n");
        let e = error(5, "bad \"thing\"\nhere");
        assert_eq!(e.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["message"], "bad \"thing\"\nhere");
    }
}
