//! The JSON-lines protocol between the orchestrator and a task process
//! (SPEC §7, `docs/protocol.md`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    let value: Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) if marked => return Line::Malformed(format!("not valid JSON ({e})")),
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
            Err(e) => Body::Rejected(format!("add_promise {promise}: not a promise: {e}")),
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
    fn replies_are_single_lines() {
        assert_eq!(ack(4), "{\"orch\":1,\"type\":\"ack\",\"seq\":4}\n");
        let e = error(5, "bad \"thing\"\nhere");
        assert_eq!(e.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["message"], "bad \"thing\"\nhere");
    }
}
