//! Every bound on data that comes from outside the orchestrator: a task's
//! protocol lines, values given on the command line, promise and shape
//! texts. Each parser and walker that sees such data stops at these bounds
//! with an error that names the limit and its value, so a task can never
//! crash the orchestrator (nor, through its stored history, every resume).
//! `docs/fuzzing.md` lists them with where each is enforced.
//!
//! [`check_json`] is the guard in front of `serde_json` for JSON text from
//! a task or a user: one pass over the bytes, no recursion, linear time. It
//! refuses nesting deeper than [`MAX_JSON_DEPTH`] and integers that do not
//! fit in 64 bits (`serde_json` would turn those into lossy floats).
//!
//! ```
//! use orch::limits::{check_json, MAX_JSON_DEPTH};
//! assert!(check_json(r#"{"n": 18446744073709551615, "m": -9223372036854775808}"#).is_ok());
//! let e = check_json(r#"{"n": 18446744073709551616}"#).unwrap_err();
//! assert_eq!(e.to_string(), "integer 18446744073709551616 at byte 6 does not fit in 64 bits (send it as a string)");
//! let deep = "[".repeat(MAX_JSON_DEPTH + 1);
//! assert!(check_json(&deep).unwrap_err().to_string().contains("deeper than 64 levels"));
//! ```

use std::fmt;

use serde_json::Value;

/// How deep a JSON value from outside may nest (arrays and objects; a
/// scalar has depth 0): inputs, outputs, attributes, delivered input
/// values. Well below `serde_json`'s own stop at 128, so the events that
/// store such values (which wrap them a few levels deeper) and the start
/// message that carries a node's resolved inputs always read back.
pub const MAX_JSON_DEPTH: usize = 64;

/// The longest shape text, in bytes.
pub const MAX_SHAPE_TEXT: usize = 64 * 1024;

/// How deep a shape may nest: brackets in its text, and the tree the text
/// parses to (each `seq`, `par`, `alt`, `repeat` and `chain` is a level).
pub const MAX_SHAPE_DEPTH: usize = 64;

/// The most atoms (`task`, `any`, `empty`) one shape may hold.
pub const MAX_SHAPE_ATOMS: usize = 1024;

/// The longest glob or selector (a promise's pattern, a shape's task
/// pattern), in bytes: a match costs at most its length times the length
/// of the name it is matched against.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// The longest node id or task name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The most rules one run may declare (registration and tasks together):
/// every rule is evaluated whenever the graph or a node's state changes.
pub const MAX_RULES: usize = 1024;

/// The most terms (`closed`, `count`, `state`, `all`) one rule's
/// predicate may hold, nested `all`s included.
pub const MAX_RULE_TERMS: usize = 64;

/// The most mutations one rule's body may hold.
pub const MAX_RULE_BODY: usize = 10_000;

/// The most iterations a loop may declare as its bound (SPEC §10): each
/// iteration is a batch of fresh nodes, and the `chain` promise the loop
/// keeps is matched over all of them.
pub const MAX_LOOP_ITERATIONS: u32 = 1000;

/// The most steps one loop's body (a sub-chain) may hold.
pub const MAX_LOOP_STEPS: usize = 64;

/// The most loops one run may declare: every loop is examined whenever
/// the graph or a node's state changes.
pub const MAX_LOOPS: usize = 256;

/// JSON text that passes a limit; see [`check_json`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonLimitError {
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep {
        /// The limit that was passed.
        limit: usize,
        /// Byte offset of the bracket that went too deep, when the JSON
        /// was text.
        at: Option<usize>,
    },
    /// An integer literal outside `i64::MIN..=u64::MAX`.
    Integer {
        /// The literal (shortened when very long).
        literal: String,
        /// Its byte offset.
        at: usize,
    },
    /// A key given twice in one object (all but the last would be lost).
    DuplicateKey {
        /// The key as written (shortened when very long).
        key: String,
        /// Byte offset of its second occurrence.
        at: usize,
    },
    /// A non-zero number too small for a 64-bit float (it would read as
    /// 0).
    Underflow {
        /// The literal (shortened when very long).
        literal: String,
        /// Its byte offset.
        at: usize,
    },
}

impl fmt::Display for JsonLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonLimitError::TooDeep { limit, at } => {
                write!(f, "JSON nested deeper than {limit} levels")?;
                if let Some(at) = at {
                    write!(f, " at byte {at}")?;
                }
                f.write_str(" (the limit MAX_JSON_DEPTH)")
            }
            JsonLimitError::DuplicateKey { key, at } => write!(
                f,
                "the key {key} at byte {at} is given twice in one object (only the last would be kept)"
            ),
            JsonLimitError::Underflow { literal, at } => write!(
                f,
                "number {literal} at byte {at} is too small for a 64-bit float: it would read as 0 (send it as a string)"
            ),
            JsonLimitError::Integer { literal, at } => write!(
                f,
                "integer {literal} at byte {at} does not fit in 64 bits (send it as a string)"
            ),
        }
    }
}

/// Checks JSON text from outside before it is decoded: nesting at most
/// [`MAX_JSON_DEPTH`] and every integer literal (no fraction, no exponent)
/// within `i64::MIN..=u64::MAX`. Syntax is left to the decoder: text that
/// is not JSON passes unless it breaks a limit.
pub fn check_json(text: &str) -> Result<(), JsonLimitError> {
    check_json_within(text, 0)
}

/// [`check_json`] for a value wrapped in `envelope` levels that do not
/// count (a protocol message is one object around its values).
pub fn check_json_within(text: &str, envelope: usize) -> Result<(), JsonLimitError> {
    let b = text.as_bytes();
    let max = MAX_JSON_DEPTH + envelope;
    // One entry per open bracket: for an object, the keys seen so far.
    let mut open: Vec<Option<std::collections::HashSet<&[u8]>>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                // A key: a string in an object followed by a colon.
                if let Some(Some(keys)) = open.last_mut() {
                    let mut j = i;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j < b.len() && b[j] == b':' {
                        let key = &b[start..i.min(b.len())];
                        if !keys.insert(key) {
                            let shown = String::from_utf8_lossy(&key[..key.len().min(64)]);
                            return Err(JsonLimitError::DuplicateKey {
                                key: shown.into_owned(),
                                at: start,
                            });
                        }
                    }
                }
            }
            b'[' | b'{' => {
                if open.len() + 1 > max {
                    return Err(JsonLimitError::TooDeep {
                        limit: MAX_JSON_DEPTH,
                        at: Some(i),
                    });
                }
                open.push((b[i] == b'{').then(std::collections::HashSet::new));
                i += 1;
            }
            b']' | b'}' => {
                open.pop();
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                // Only ASCII bytes were taken: both ends are char boundaries.
                let literal = &text[start..i];
                let digits = literal.strip_prefix('-').unwrap_or(literal);
                let integer = !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit());
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Err(JsonLimitError::Integer {
                        literal: shorten_digits(literal),
                        at: start,
                    });
                }
                if !integer {
                    let mantissa = digits.split(['e', 'E']).next().unwrap_or_default();
                    let nonzero = mantissa.bytes().any(|c| matches!(c, b'1'..=b'9'));
                    if nonzero && literal.parse::<f64>().is_ok_and(|f| f == 0.0) {
                        return Err(JsonLimitError::Underflow {
                            literal: shorten_digits(literal),
                            at: start,
                        });
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

pub(crate) fn shorten_digits(literal: &str) -> String {
    const KEEP: usize = 40;
    if literal.len() <= KEEP {
        literal.to_string()
    } else {
        format!("{}… ({} digits)", &literal[..KEEP], literal.len())
    }
}

/// Checks that a decoded value nests at most [`MAX_JSON_DEPTH`] levels
/// (without recursion: the value may come from anywhere).
///
/// ```
/// use serde_json::json;
/// assert!(orch::limits::check_value(&json!({"a": [1, {"b": 2}]})).is_ok());
/// ```
pub fn check_value(v: &Value) -> Result<(), JsonLimitError> {
    // Most values are flat: no walk, no allocation.
    let flat = match v {
        Value::Array(items) => items.iter().all(is_scalar),
        Value::Object(map) => map.values().all(is_scalar),
        _ => true,
    };
    if flat {
        return Ok(());
    }
    check_depth(vec![(v, 0)])
}

/// [`check_value`] of `Value::Object(map)`, without building it.
pub fn check_object(map: &serde_json::Map<String, Value>) -> Result<(), JsonLimitError> {
    if map.values().all(is_scalar) {
        return Ok(());
    }
    check_depth(map.values().map(|v| (v, 1)).collect())
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn check_depth(mut stack: Vec<(&Value, usize)>) -> Result<(), JsonLimitError> {
    while let Some((v, depth)) = stack.pop() {
        let too_deep = || JsonLimitError::TooDeep {
            limit: MAX_JSON_DEPTH,
            at: None,
        };
        match v {
            Value::Array(items) => {
                if depth + 1 > MAX_JSON_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(
                    items
                        .iter()
                        .filter(|c| !is_scalar(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            Value::Object(map) => {
                if depth + 1 > MAX_JSON_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(
                    map.values()
                        .filter(|c| !is_scalar(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a name (node id, task name) or a pattern is at most `limit`
/// bytes; the error names `what`, the length and the limit.
pub fn check_len(what: &str, text: &str, limit: usize, name: &str) -> Result<(), String> {
    if text.len() <= limit {
        return Ok(());
    }
    let mut end = 32.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Err(format!(
        "{what} `{}…` is {} bytes, longer than the limit of {limit} ({name})",
        &text[..end],
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_in_one_object_is_refused() {
        let e = check_json(r#"{"a": 1, "b": {"a": 2}, "a": 3}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the key "a" at byte 24 is given twice in one object (only the last would be kept)"#
        );
        // The same key in different objects, in arrays, as a value: fine.
        for fine in [
            r#"{"a": 1, "b": {"a": 2}}"#,
            r#"[{"a": 1}, {"a": 2}]"#,
            r#"{"a": "a", "b": ["a", "a"]}"#,
            r#"{"k\"": 1, "k": 2}"#,
        ] {
            assert!(check_json(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_number_that_would_read_as_zero_is_refused() {
        let e = check_json(r#"{"tiny": 1e-400}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "number 1e-400 at byte 9 is too small for a 64-bit float: it would read as 0 (send it as a string)"
        );
        for fine in [
            "0.0",
            "0e10",
            "-0",
            "5e-324",
            "2.2250738585072014e-308",
            "1e308",
        ] {
            assert!(check_json(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_json(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            check_json(&deep),
            Err(JsonLimitError::TooDeep {
                limit: 64,
                at: Some(64)
            })
        );
        let in_string = format!("\"{}\"", "[".repeat(1000));
        assert!(check_json(&in_string).is_ok());
        let escaped = format!("[\"\\\"{}\"]", "[".repeat(1000));
        assert!(check_json(&escaped).is_ok());
        let wrapped = format!("{{\"v\":{}{}}}", "[".repeat(64), "]".repeat(64));
        assert!(check_json(&wrapped).is_err());
        assert!(check_json_within(&wrapped, 1).is_ok());
    }

    #[test]
    fn integers_must_fit_64_bits() {
        for ok in [
            "18446744073709551615",
            "-9223372036854775808",
            "0",
            "-0",
            "1e400",
            "123456789012345678901234567890.5",
            "\"123456789012345678901234567890\"",
        ] {
            assert!(check_json(ok).is_ok(), "{ok}");
        }
        let e = check_json("[1, 18446744073709551616]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "integer 18446744073709551616 at byte 4 does not fit in 64 bits (send it as a string)"
        );
        assert!(check_json("-9223372036854775809").is_err());
        let long = "9".repeat(100_000);
        let e = check_json(&long).unwrap_err().to_string();
        assert!(e.contains("(100000 digits)") && e.len() < 200, "{e}");
    }

    #[test]
    fn values_are_walked_without_recursion() {
        let mut v = Value::Null;
        for _ in 0..64 {
            v = Value::Array(vec![v]);
        }
        assert!(check_value(&v).is_ok());
        let v = Value::Array(vec![v]);
        assert!(check_value(&v)
            .unwrap_err()
            .to_string()
            .contains("deeper than 64"));
    }

    #[test]
    fn lengths_name_the_limit() {
        assert!(check_len("node id", "abc", 3, "MAX_NAME_BYTES").is_ok());
        let long = format!("{}é{}", "a".repeat(31), "b".repeat(300));
        let e = check_len("node id", &long, 256, "MAX_NAME_BYTES").unwrap_err();
        assert!(
            e.contains("333 bytes, longer than the limit of 256 (MAX_NAME_BYTES)"),
            "{e}"
        );
    }
}
