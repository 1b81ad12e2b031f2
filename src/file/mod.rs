//! Workflow files: a workflow written as YAML or JSON instead of a Rust
//! program (`docs/files.md`). A file is read, compiled into the same
//! [`Definition`](crate::model::Definition) the builder makes, and checked
//! exactly like a registration before anything runs; every error names
//! the file, the line and column, and the task at fault.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("hello.yaml");
//! std::fs::write(&path, "
//! name: hello
//! tasks:
//!   - id: greet
//!     command: echo hello
//!   - id: done
//!     command: [true]
//!     after: [greet]
//! ").unwrap();
//! let compiled = orch::file::load(&path, &Default::default()).unwrap();
//! assert_eq!(compiled.definition.name, "hello");
//! assert_eq!(compiled.definition.registration.len(), 3); // two nodes, one edge
//! ```

mod compile;
pub mod doc;
mod error;
mod python;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use compile::{
    compile, parse_params, Compiled, Load, MAX_INCLUDES, MAX_INCLUDE_DEPTH, MAX_NESTING, MAX_NODES,
};
pub use doc::WorkflowDoc;
pub use error::{FileError, Place};
pub use python::PIPELINE_TIMEOUT;

use crate::error::Error;
use crate::model::Mutation;

/// The largest workflow file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads, parses, compiles and checks the workflow file at `path` with
/// the run parameters `params`: YAML, JSON (read as the YAML it also is),
/// or a Python pipeline file (`.py`, evaluated in a subprocess with a
/// time limit; it must declare one pipeline).
pub fn load(path: &Path, params: &Map<String, Value>) -> Result<Compiled, FileError> {
    load_pipeline(path, None, params)
}

/// [`load`] of the pipeline named `pipeline` of a Python file that
/// declares several (for YAML and JSON files, the workflow's name must
/// match).
pub fn load_pipeline(
    path: &Path,
    pipeline: Option<&str>,
    params: &Map<String, Value>,
) -> Result<Compiled, FileError> {
    if !is_python(path) {
        let (canonical, doc) = read(path)?;
        if let Some(want) = pipeline.filter(|w| **w != doc.name.value) {
            return Err(FileError::new(
                Place::of(&canonical, &doc.name),
                format!("the workflow is `{}`, not `{want}`", doc.name.value),
            ));
        }
        let mut load = |p: &Path| read(p);
        let compiled = compile(&canonical, &doc, params, &mut load)?;
        check(&compiled)?;
        return Ok(compiled);
    }
    let canonical = canonical(path)?;
    let mut found = python::evaluate(&canonical)?;
    let names: Vec<String> = found.iter().map(|p| p.doc.name.value.clone()).collect();
    let index = match (pipeline, found.len()) {
        (None, 1) => 0,
        (Some(name), _) if names.iter().any(|n| n == name) => {
            names.iter().position(|n| n == name).expect("found")
        }
        (want, _) => {
            return Err(FileError::new(
                Place::file(path),
                match want {
                    Some(name) => format!(
                        "declares no pipeline `{name}` (it declares: {})",
                        names.join(", ")
                    ),
                    None if names.is_empty() => "declares no Pipeline".to_string(),
                    None => format!(
                        "declares {} pipelines ({}): name one",
                        names.len(),
                        names.join(", ")
                    ),
                },
            ))
        }
    };
    compile_python(&canonical, found.swap_remove(index), params)
}

/// Every workflow of a file with its default parameters: the one of a
/// YAML or JSON file, each pipeline of a Python file (evaluated once).
/// The scheduler reads folders with it.
pub fn load_all(path: &Path) -> Result<Vec<Compiled>, FileError> {
    if !is_python(path) {
        let (canonical, doc) = read(path)?;
        let (placeholders, needs) = placeholders(&doc);
        let mut load = |p: &Path| read(p);
        let mut compiled = compile(&canonical, &doc, &placeholders, &mut load)?;
        check(&compiled)?;
        compiled.needs = needs;
        return Ok(vec![compiled]);
    }
    let canonical = canonical(path)?;
    let found = python::evaluate(&canonical)?;
    if found.is_empty() {
        return Err(FileError::new(Place::file(path), "declares no Pipeline"));
    }
    found
        .into_iter()
        .map(|p| {
            let (placeholders, needs) = placeholders(&p.doc);
            let mut c = compile_python(&canonical, p, &placeholders)?;
            c.needs = needs;
            Ok(c)
        })
        .collect()
}

/// Null for each parameter without default, and their names.
fn placeholders(doc: &WorkflowDoc) -> (Map<String, Value>, Vec<String>) {
    let needs: Vec<String> = doc
        .params
        .iter()
        .filter(|(_, p)| p.default.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let map = needs.iter().map(|k| (k.clone(), Value::Null)).collect();
    (map, needs)
}

/// Compiles one pipeline of the Python file `canonical`, naming the lines
/// of the file in errors and places.
fn compile_python(
    canonical: &Path,
    py: python::PyPipeline,
    params: &Map<String, Value>,
) -> Result<Compiled, FileError> {
    let at_task = |id: &str| {
        let line = py.lines.get(id).copied().or(py.line);
        Place {
            file: canonical.to_path_buf(),
            at: line.map(|l| (l, 1)),
        }
    };
    // Places in the printed document mean nothing to a person: name the
    // lines of the Python file instead.
    let relocate = |mut e: FileError| {
        if e.place.file == canonical {
            let id = e
                .message
                .split('`')
                .skip(1)
                .step_by(2)
                .find(|id| py.lines.contains_key(*id))
                .map(str::to_string);
            e.place = match id {
                Some(id) => at_task(&id),
                None => Place {
                    file: canonical.to_path_buf(),
                    at: py.line.map(|l| (l, 1)),
                },
            };
        }
        e
    };
    let mut load = |p: &Path| read(p);
    let mut compiled = compile(canonical, &py.doc, params, &mut load).map_err(relocate)?;
    for (id, place) in compiled.places.iter_mut() {
        if place.file == canonical {
            *place = at_task(id);
        }
    }
    check(&compiled).map_err(relocate)?;
    Ok(compiled)
}

/// True for a Python pipeline file (`.py`).
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

fn canonical(path: &Path) -> Result<PathBuf, FileError> {
    path.canonicalize()
        .map_err(|e| FileError::new(Place::file(path), format!("cannot read it: {e}")))
}

/// Reads and parses one workflow file; returns its canonical path with
/// its document.
pub fn read(path: &Path) -> Result<(PathBuf, WorkflowDoc), FileError> {
    let whole = Place::file(path);
    let canonical = canonical(path)?;
    if is_python(&canonical) {
        return Err(FileError::new(
            whole,
            "a Python pipeline file cannot be included as a sub-workflow (use YAML or JSON)",
        ));
    }
    // A FIFO or a device would block or never end.
    if !std::fs::metadata(&canonical).is_ok_and(|m| m.is_file()) {
        return Err(FileError::new(whole, "it is not a regular file"));
    }
    let file = std::fs::File::open(&canonical)
        .map_err(|e| FileError::new(whole.clone(), format!("cannot read it: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::new(whole.clone(), format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::new(
            whole,
            format!("it is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        FileError::new(
            whole.clone(),
            format!(
                "it is not UTF-8 text (byte {} is not valid UTF-8)",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let doc = parse(&canonical, &text)?;
    Ok((canonical, doc))
}

/// Parses a workflow document (YAML, or JSON) read from `file`.
///
/// ```
/// use std::path::Path;
/// let e = orch::file::parse(Path::new("f.yaml"), "name: x\ntasks:\n  - id: a\n    pyhton: a.py\n").unwrap_err();
/// assert!(e.to_string().starts_with("f.yaml:4:5: "), "{e}");
/// assert!(e.to_string().contains("pyhton"), "{e}");
/// ```
pub fn parse(file: &Path, text: &str) -> Result<WorkflowDoc, FileError> {
    check_integers(file, text)?;
    let options = serde_saphyr::options! {
        // YAML 1.2: `no`, `off` and `y` are text, not booleans.
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let at = e
            .location()
            .map(|l| (l.line(), l.column()))
            .filter(|(line, _)| *line > 0);
        let message = match e.without_snippet() {
            serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
            other => {
                let text = other
                    .to_string()
                    .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
                // A breach reported through another error (an alias's).
                match text.find("budget breached: ") {
                    Some(i) => budget_text(&text[i + "budget breached: ".len()..]),
                    None => text,
                }
            }
        };
        // The message may end with its own "at line L column C".
        let message = match message.find(" at line ") {
            Some(i) if at.is_some() => message[..i].to_string(),
            _ => message,
        };
        FileError::new(
            Place {
                file: file.to_path_buf(),
                at,
            },
            message,
        )
    })
}

/// Refuses a plain integer that does not fit in 64 bits: the YAML reader
/// would turn it into a float, silently changing it (a quoted one is
/// text, and stays exact).
fn check_integers(file: &Path, text: &str) -> Result<(), FileError> {
    use granit_parser::{Event, Parser, ScalarStyle};
    for event in Parser::new_from_str(text) {
        // Syntax errors are the reader's to report, with more context.
        let Ok((Event::Scalar(value, ScalarStyle::Plain, _, None), span)) = event else {
            if event.is_err() {
                break;
            }
            continue;
        };
        let t = value.trim();
        let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
        let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if integer && t.parse::<i64>().is_err() && t.parse::<u64>().is_err() {
            let shown = crate::limits::shorten_digits(t);
            return Err(FileError::new(
                Place {
                    file: file.to_path_buf(),
                    at: Some((span.start.line() as u64, span.start.col() as u64 + 1)),
                },
                format!(
                    "the integer {shown} does not fit in 64 bits: write it as a string (in quotes) to keep it exact"
                ),
            ));
        }
    }
    Ok(())
}

/// A breach the reader reported only as text (`Nodes { nodes: 250001 }`),
/// in words naming the limit.
fn budget_text(debug: &str) -> String {
    use serde_saphyr::budget::Budget;
    let limits = Budget::default();
    let kind = debug.split([' ', '{']).next().unwrap_or_default();
    match kind {
        "Nodes" => format!(
            "the document has more than {} values (aliases count each time they are used)",
            limits.max_nodes
        ),
        "Depth" => format!("the document nests deeper than {} levels", limits.max_depth),
        "Aliases" => format!("the document has more than {} aliases", limits.max_aliases),
        "Anchors" => format!("the document has more than {} anchors", limits.max_anchors),
        "Events" => format!(
            "the document is larger than {} parser events",
            limits.max_events
        ),
        _ => format!("the document is too large for the YAML reader's limits ({debug})"),
    }
}

/// A breached parser budget in words, naming the limit.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::budget::Budget::default();
    match breach {
        B::Depth { .. } => format!(
            "the document nests deeper than {} levels (lists and maps)",
            limits.max_depth
        ),
        B::Aliases { .. } => format!("the document has more than {} aliases", limits.max_aliases),
        B::Anchors { .. } => format!("the document has more than {} anchors", limits.max_anchors),
        B::Nodes { .. } => format!("the document has more than {} values", limits.max_nodes),
        B::Events { .. } => format!(
            "the document is larger than {} parser events",
            limits.max_events
        ),
        other => format!("the document is too large for the YAML reader's limits ({other:?})"),
    }
}

/// Checks a compiled file exactly like the engine checks a registration
/// (structure, promises, declared types), naming the task at fault.
pub fn check(compiled: &Compiled) -> Result<(), FileError> {
    let Err(e) = crate::engine::validate(&compiled.definition) else {
        return Ok(());
    };
    let (mutation, reason) = match &e {
        Error::Registration { source, .. } => (source.mutation.clone(), source.reason.clone()),
        other => (String::new(), other.to_string()),
    };
    // The node the failing mutation adds or leads into, else the first
    // node the reason names.
    let node = compiled
        .definition
        .registration
        .iter()
        .find(|m| m.describe() == mutation)
        .and_then(|m| match m {
            Mutation::AddNode { id, .. } => Some(id.clone()),
            Mutation::AddEdge { to, .. } => Some(to.clone()),
            _ => None,
        })
        .or_else(|| {
            reason
                .split('`')
                .skip(1)
                .step_by(2)
                .find(|id| compiled.places.contains_key(*id))
                .map(str::to_string)
        });
    let place = node
        .as_ref()
        .and_then(|n| compiled.places.get(n))
        .cloned()
        .or_else(|| {
            compiled
                .places
                .values()
                .next()
                .map(|p| Place::file(&p.file))
        })
        .unwrap_or_else(|| Place::file(Path::new("")));
    let what = if mutation.is_empty() || mutation == "the registration" {
        String::new()
    } else {
        format!("{mutation}: ")
    };
    Err(FileError::new(place, format!("{what}{reason}")))
}

/// Runs the workflow file at `path` with `params` to the end, in the
/// database `db` (blocking); like [`crate::Workflow::run`], Ctrl-C and
/// SIGTERM stop it gracefully.
pub fn run(
    path: &Path,
    params: &Map<String, Value>,
    db: impl AsRef<Path>,
) -> crate::Result<crate::RunOutcome> {
    crate::block_on(run_async(path, params, db))
}

/// [`run`] for async contexts.
pub async fn run_async(
    path: &Path,
    params: &Map<String, Value>,
    db: impl AsRef<Path>,
) -> crate::Result<crate::RunOutcome> {
    let compiled = load(path, params)?;
    let engine = crate::Engine::open(db)?;
    let handle = engine
        .start(&compiled.definition, &compiled.options())
        .await?;
    crate::engine::wait_or_stop(&engine, handle).await
}

/// The JSON Schema of workflow files, for editors (`orch schema`).
///
/// ```
/// let s = orch::file::schema();
/// assert_eq!(s["title"], "orch workflow file");
/// assert!(s["properties"]["tasks"].is_object());
/// ```
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(WorkflowDoc)).expect("a schema serialises")
}

#[cfg(test)]
mod tests;
