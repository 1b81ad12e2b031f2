//! Pure conversions of a document's values: `$param` and `$output` filled
//! in, `{{name}}` put into command arguments, durations, byte sizes and
//! requirements read.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Scope;
use crate::file::doc::DurationDoc;

/// `v` with every `{"$param": "name"}` replaced by the parameter's value
/// and every `{"$output": "id"}` prefixed with the scope's prefix.
pub(super) fn fill(v: &Value, scope: &Scope, depth: usize) -> Result<Value, String> {
    if depth > 128 {
        return Err("values nest deeper than 128 levels".into());
    }
    Ok(match v {
        Value::Object(map) if map.contains_key("$param") => {
            let name = match (map.get("$param"), map.len()) {
                (Some(Value::String(n)), 1) => n,
                _ => return Err(format!("{v} must look like {{\"$param\": \"name\"}}")),
            };
            scope.params.get(name).cloned().ok_or_else(|| {
                format!(
                    "`$param` names `{name}`, which is no parameter of {}",
                    scope.file.display()
                )
            })?
        }
        Value::Object(map) if map.contains_key("$output") => {
            let mut out = map.clone();
            if let Some(Value::String(node)) = map.get("$output") {
                out.insert("$output".into(), Value::String(scope.id(node)));
            }
            Value::Object(out)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| Ok((k.clone(), fill(x, scope, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| fill(x, scope, depth + 1))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `{{name}}` in a command argument replaced by the parameter (a string
/// as it is, anything else as JSON); in a shell's command line (`quote`)
/// single-quoted, so that a value is never shell syntax.
pub(super) fn interpolate(
    arg: &str,
    params: &Map<String, Value>,
    quote: bool,
) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        let value = params.get(name).ok_or_else(|| {
            format!("command argument `{arg}` names `{{{{{name}}}}}`, which is no parameter")
        })?;
        out.push_str(&rest[..open]);
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if quote {
            // POSIX single quotes: nothing inside is special but `'`.
            out.push('\'');
            out.push_str(&text.replace('\'', "'\\''"));
            out.push('\'');
        } else {
            out.push_str(&text);
        }
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration in seconds, or text with a unit ([`crate::time::parse_duration`]).
pub(super) fn duration(d: &DurationDoc) -> Result<Duration, String> {
    match d {
        DurationDoc::Seconds(s) => crate::time::seconds(*s),
        DurationDoc::Text(t) => crate::time::parse_duration(t),
    }
}

/// A task's requirements as the model holds them.
pub(super) fn resources(
    r: &crate::file::doc::RequiresDoc,
) -> Result<crate::model::Resources, String> {
    if let Some(cpu) = r.cpu.filter(|c| !c.is_finite() || *c <= 0.0) {
        return Err(format!("cpu {cpu} is not a positive number of cores"));
    }
    let memory = match &r.memory {
        None => None,
        Some(DurationDoc::Seconds(n)) if *n >= 0.0 && n.is_finite() => Some(*n as u64),
        Some(DurationDoc::Seconds(n)) => {
            return Err(format!("memory {n} is not a number of bytes"))
        }
        Some(DurationDoc::Text(t)) => Some(bytes(t)?),
    };
    if r.labels.len() > 64 || r.labels.iter().any(|l| l.is_empty() || l.len() > 256) {
        return Err("labels: at most 64, each 1 to 256 characters".into());
    }
    Ok(crate::model::Resources {
        cpu: r.cpu,
        memory,
        gpu: r.gpu,
        labels: r.labels.clone(),
    })
}

/// `"512M"`, `"4G"`, `"1.5T"` (powers of 1024) or a number of bytes.
pub(super) fn bytes(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("memory `{t}` is not an amount (say 512M or 4G)"))?;
    let scale = match unit.trim().trim_end_matches(['i', 'B']) {
        "" => 1.0,
        "K" | "k" => 1024.0,
        "M" | "m" => 1024.0 * 1024.0,
        "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        "T" | "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "memory `{t}` has the unknown unit `{other}` (K, M, G or T)"
            ))
        }
    };
    let b = n * scale;
    if !b.is_finite() || b < 0.0 || b > u64::MAX as f64 {
        return Err(format!("memory `{t}` is out of range"));
    }
    Ok(b as u64)
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
