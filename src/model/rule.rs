//! Rules: a predicate over the outlook and a body that is a batch
//! (SPEC §9). Plain data, like a promise: declared at registration, in a
//! workflow file or by a running task (`add_rule`), fired at most once, as
//! a batch with origin `rule:<id>`. How a predicate is decided is in
//! [`crate::rule`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Mutation, NodeState};
use crate::limits::{check_len, MAX_NAME_BYTES, MAX_PATTERN_BYTES, MAX_RULE_BODY, MAX_RULE_TERMS};
use crate::promise::glob::Selector;

/// When a rule fires: a predicate over the run's graph and everything its
/// promises still allow.
///
/// JSON form (one key, the predicate's name):
///
/// ```
/// use orch::model::Predicate;
/// let p: Predicate = serde_json::from_str(
///     r#"{"all": [{"closed": "task:pdf"}, {"count": {"pattern": "task:pdf", "at_least": 1}}]}"#,
/// ).unwrap();
/// assert_eq!(p.to_string(), "closed(task:pdf) ∧ count(task:pdf) >= 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Predicate {
    /// No future batch can add a node the pattern selects: every node
    /// whose task may still add one has finished, or promises forbid it.
    Closed(Selector),
    /// At least `at_least` nodes the pattern selects exist (in `state`,
    /// when given).
    Count {
        /// Which nodes count.
        pattern: Selector,
        /// How many are needed.
        at_least: u64,
        /// Only nodes in this state count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<NodeState>,
    },
    /// The node exists and is in state `is`.
    State {
        /// The node id.
        node: String,
        /// The state it must be in.
        is: NodeState,
    },
    /// Every predicate holds.
    All(Vec<Predicate>),
}

impl Predicate {
    /// `closed(pattern)`.
    ///
    /// ```
    /// assert_eq!(orch::model::Predicate::closed("task:pdf").to_string(), "closed(task:pdf)");
    /// ```
    pub fn closed(pattern: &str) -> Predicate {
        Predicate::Closed(Selector::new(pattern))
    }

    /// `count(pattern) >= n`.
    ///
    /// ```
    /// assert_eq!(orch::model::Predicate::count("M_*", 3).to_string(), "count(M_*) >= 3");
    /// ```
    pub fn count(pattern: &str, n: u64) -> Predicate {
        Predicate::Count {
            pattern: Selector::new(pattern),
            at_least: n,
            state: None,
        }
    }

    /// `state(node) = is`.
    ///
    /// ```
    /// use orch::model::{NodeState, Predicate};
    /// assert_eq!(Predicate::state("a", NodeState::Succeeded).to_string(), "state(a) = succeeded");
    /// ```
    pub fn state(node: &str, is: NodeState) -> Predicate {
        Predicate::State {
            node: node.to_string(),
            is,
        }
    }

    /// This predicate and `other` (flattened into one `all`).
    ///
    /// ```
    /// use orch::model::{NodeState, Predicate};
    /// let p = Predicate::closed("x").and(Predicate::state("a", NodeState::Succeeded));
    /// assert_eq!(p.to_string(), "closed(x) ∧ state(a) = succeeded");
    /// ```
    pub fn and(self, other: Predicate) -> Predicate {
        let mut terms = match self {
            Predicate::All(v) => v,
            p => vec![p],
        };
        match other {
            Predicate::All(v) => terms.extend(v),
            p => terms.push(p),
        }
        Predicate::All(terms)
    }

    /// Checks the predicate against the limits: at most
    /// [`MAX_RULE_TERMS`] terms, every pattern at most
    /// [`MAX_PATTERN_BYTES`], every node id at most [`MAX_NAME_BYTES`].
    pub fn check(&self) -> Result<(), String> {
        let mut terms = 0usize;
        let mut stack = vec![self];
        while let Some(p) = stack.pop() {
            terms += 1;
            if terms > MAX_RULE_TERMS {
                return Err(format!(
                    "the predicate has more than {MAX_RULE_TERMS} terms (MAX_RULE_TERMS)"
                ));
            }
            match p {
                Predicate::Closed(s) | Predicate::Count { pattern: s, .. } => check_len(
                    "pattern",
                    s.as_str(),
                    MAX_PATTERN_BYTES,
                    "MAX_PATTERN_BYTES",
                )?,
                Predicate::State { node, .. } => {
                    check_len("node id", node, MAX_NAME_BYTES, "MAX_NAME_BYTES")?
                }
                Predicate::All(v) => stack.extend(v),
            }
        }
        Ok(())
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Closed(s) => write!(f, "closed({s})"),
            Predicate::Count {
                pattern,
                at_least,
                state: None,
            } => write!(f, "count({pattern}) >= {at_least}"),
            Predicate::Count {
                pattern,
                at_least,
                state: Some(s),
            } => write!(f, "count({pattern}, {s}) >= {at_least}"),
            Predicate::State { node, is } => write!(f, "state({node}) = {is}"),
            Predicate::All(v) if v.is_empty() => f.write_str("true"),
            Predicate::All(v) => {
                for (k, p) in v.iter().enumerate() {
                    if k > 0 {
                        f.write_str(" ∧ ")?;
                    }
                    match p {
                        Predicate::All(inner) if inner.len() > 1 => write!(f, "({p})")?,
                        _ => write!(f, "{p}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// A rule: when `when` holds, the batch `then` is committed, once, with
/// origin `rule:<id>`, checked against every promise like any batch.
/// Inside the inputs of its `add_node`s, `{"$collect": PATTERN}` (see
/// [`collect`]) becomes, when the rule fires, the list of output
/// references of every node the pattern selects, implying their edges.
///
/// ```
/// use orch::model::{collect, Predicate, Rule};
/// use orch::{Mutation, Task, Workflow};
///
/// let merge = Mutation::AddNode {
///     id: "merge".into(),
///     task: Box::new(Task::python("merge.py")),
///     inputs: serde_json::json!({"pdfs": collect("task:pdf")}),
///     attrs: Default::default(),
/// };
/// let rule = Rule::new("merge", Predicate::closed("task:pdf")).then(merge);
/// assert_eq!(rule.to_string(), "rule merge: closed(task:pdf) ⇒ add_node `merge`");
/// let mut wf = Workflow::new("late_merge");
/// wf.rule(rule);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// Unique among the run's rules; the origin of its batch is
    /// `rule:<id>`.
    pub id: String,
    /// When it fires.
    pub when: Predicate,
    /// The batch it commits.
    pub then: Vec<Mutation>,
}

impl Rule {
    /// A rule with an empty body (add mutations with [`Rule::then`]).
    pub fn new(id: impl Into<String>, when: Predicate) -> Rule {
        Rule {
            id: id.into(),
            when,
            then: Vec::new(),
        }
    }

    /// Adds a mutation to the body.
    pub fn then(mut self, m: Mutation) -> Rule {
        self.then.push(m);
        self
    }

    /// What can be checked before the rule fires: the id, the predicate
    /// ([`Predicate::check`]), a body of 1 to [`MAX_RULE_BODY`] mutations
    /// that declares no rule, well-formed `$collect`s, and the promises
    /// it declares. Whether the body fits the graph is checked when it
    /// fires.
    ///
    /// ```
    /// use orch::model::{Predicate, Rule};
    /// let empty = Rule::new("r", Predicate::closed("x"));
    /// assert!(empty.check().unwrap_err().contains("no mutation"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("the rule id is empty".into());
        }
        check_len("rule id", &self.id, MAX_NAME_BYTES, "MAX_NAME_BYTES")?;
        if let Some(c) = self.id.chars().find(|c| c.is_control() || *c == '"') {
            return Err(format!(
                "rule id {:?} contains the character {c:?}",
                self.id
            ));
        }
        self.when.check()?;
        if self.then.is_empty() {
            return Err(format!("rule `{}` has no mutation in its body", self.id));
        }
        if self.then.len() > MAX_RULE_BODY {
            return Err(format!(
                "rule `{}` has {} mutations in its body, more than {MAX_RULE_BODY} (MAX_RULE_BODY)",
                self.id,
                self.then.len()
            ));
        }
        for m in &self.then {
            match m {
                Mutation::AddRule { .. } => {
                    return Err(format!(
                        "rule `{}`: a rule's body cannot declare a rule",
                        self.id
                    ))
                }
                Mutation::AddPromise { promise } => promise
                    .check()
                    .map_err(|e| format!("rule `{}`: {}: {e}", self.id, m.describe()))?,
                Mutation::AddNode { inputs, .. } => {
                    collects(inputs)
                        .map_err(|e| format!("rule `{}`: {}: {e}", self.id, m.describe()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: {} ⇒ ", self.id, self.when)?;
        match self.then.as_slice() {
            [one] => f.write_str(&one.describe()),
            [first, rest @ ..] => write!(f, "{} and {} more", first.describe(), rest.len()),
            [] => f.write_str("nothing"),
        }
    }
}

/// Builds `{"$collect": pattern}`: in the inputs of a node a rule adds,
/// the list of output references of every node `pattern` selects when the
/// rule fires (in the order they were added), each implying its edge.
///
/// ```
/// assert_eq!(orch::model::collect("task:pdf"), serde_json::json!({"$collect": "task:pdf"}));
/// ```
pub fn collect(pattern: &str) -> Value {
    serde_json::json!({ "$collect": pattern })
}

/// [`collect`] of a part of each output, selected by a JSON pointer.
///
/// ```
/// assert_eq!(
///     orch::model::collect_at("task:pdf", "/path"),
///     serde_json::json!({"$collect": "task:pdf", "pointer": "/path"}),
/// );
/// ```
pub fn collect_at(pattern: &str, pointer: &str) -> Value {
    serde_json::json!({ "$collect": pattern, "pointer": pointer })
}

/// One `$collect` found in inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collect {
    /// Which nodes it collects.
    pub pattern: Selector,
    /// The JSON pointer into each output (empty: the whole output).
    pub pointer: String,
}

fn as_collect(v: &Value) -> Option<Result<Collect, String>> {
    let map = v.as_object()?;
    let target = map.get("$collect")?;
    Some((|| {
        let pattern = target
            .as_str()
            .ok_or_else(|| format!("collection {v}: `$collect` must be a pattern string"))?;
        check_len("pattern", pattern, MAX_PATTERN_BYTES, "MAX_PATTERN_BYTES")?;
        let pointer = match map.get("pointer") {
            None => String::new(),
            Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => p.clone(),
            Some(p) => {
                return Err(format!(
                    "collection {v}: `pointer` must be a JSON pointer string like \"/a/0\", got {p}"
                ))
            }
        };
        if let Some(extra) = map.keys().find(|k| *k != "$collect" && *k != "pointer") {
            return Err(format!("collection {v}: unexpected key `{extra}`"));
        }
        Ok(Collect {
            pattern: Selector::new(pattern),
            pointer,
        })
    })())
}

/// The `$collect`s inside `inputs` (objects in key order); a malformed one
/// is an error naming it.
///
/// ```
/// use serde_json::json;
/// let found = orch::model::collects(&json!({"a": [orch::model::collect("x")]})).unwrap();
/// assert_eq!(found[0].pattern.as_str(), "x");
/// assert!(orch::model::collects(&json!({"$collect": 3})).is_err());
/// ```
pub fn collects(inputs: &Value) -> Result<Vec<Collect>, String> {
    let mut out = Vec::new();
    let mut stack = vec![inputs];
    while let Some(v) = stack.pop() {
        if let Some(c) = as_collect(v) {
            out.push(c?);
            continue;
        }
        match v {
            Value::Object(map) => stack.extend(map.values().rev()),
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    Ok(out)
}

/// `inputs` with each `$collect` replaced by the list of output
/// references of the nodes `select` returns for its pattern.
///
/// ```
/// use serde_json::json;
/// let inputs = json!({"pdfs": orch::model::collect_at("task:pdf", "/path")});
/// let out = orch::model::resolve_collects(&inputs, &|_| vec!["a".into(), "b".into()]).unwrap();
/// assert_eq!(out, json!({"pdfs": [orch::output_at("a", "/path"), orch::output_at("b", "/path")]}));
/// ```
pub fn resolve_collects(
    inputs: &Value,
    select: &dyn Fn(&Selector) -> Vec<String>,
) -> Result<Value, String> {
    if let Some(c) = as_collect(inputs) {
        let c = c?;
        return Ok(Value::Array(
            select(&c.pattern)
                .into_iter()
                .map(|id| {
                    if c.pointer.is_empty() {
                        super::output(&id)
                    } else {
                        super::output_at(&id, &c.pointer)
                    }
                })
                .collect(),
        ));
    }
    Ok(match inputs {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), resolve_collects(v, select)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve_collects(v, select))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Task;
    use serde_json::json;

    #[test]
    fn json_round_trips() {
        for text in [
            r#"{"closed":"task:pdf"}"#,
            r#"{"count":{"pattern":"M_*","at_least":2}}"#,
            r#"{"count":{"pattern":"M_*","at_least":2,"state":"succeeded"}}"#,
            r#"{"state":{"node":"a","is":"failed"}}"#,
            r#"{"all":[{"closed":"x"},{"state":{"node":"a","is":"succeeded"}}]}"#,
        ] {
            let p: Predicate = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&p).unwrap(), text);
        }
        let err = serde_json::from_str::<Predicate>(r#"{"closd":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("closd"), "{err}");
        let rule: Rule = serde_json::from_value(json!({
            "id": "m", "when": {"closed": "x"},
            "then": [{"op": "add_node", "id": "merge", "task": {"kind": "command", "argv": ["true"]}}]
        }))
        .unwrap();
        assert_eq!(rule.then.len(), 1);
        assert!(rule.check().is_ok());
    }

    #[test]
    fn limits_and_bad_bodies_are_named() {
        let mut p = Predicate::closed("a");
        for _ in 0..MAX_RULE_TERMS {
            p = p.and(Predicate::closed("b"));
        }
        assert!(p.check().unwrap_err().contains("MAX_RULE_TERMS"));
        let long = Predicate::closed(&"x".repeat(MAX_PATTERN_BYTES + 1));
        assert!(long.check().unwrap_err().contains("MAX_PATTERN_BYTES"));
        let nested = Rule::new("outer", Predicate::closed("x")).then(Mutation::AddRule {
            rule: Box::new(
                Rule::new("inner", Predicate::closed("x"))
                    .then(Mutation::add_node("n", Task::command(["true"]))),
            ),
        });
        let err = nested.check().unwrap_err();
        assert!(
            err.contains("rule `outer`") && err.contains("cannot declare"),
            "{err}"
        );
        let bad_collect = Rule::new("c", Predicate::closed("x")).then(Mutation::AddNode {
            id: "m".into(),
            task: Box::new(Task::command(["true"])),
            inputs: json!({"all": {"$collect": "x", "extra": 1}}),
            attrs: Default::default(),
        });
        let err = bad_collect.check().unwrap_err();
        assert!(
            err.contains("add_node `m`") && err.contains("`extra`"),
            "{err}"
        );
        let big = Rule {
            id: "big".into(),
            when: Predicate::closed("x"),
            then: vec![Mutation::add_edge("a", "b"); MAX_RULE_BODY + 1],
        };
        assert!(big.check().unwrap_err().contains("MAX_RULE_BODY"));
    }
}
