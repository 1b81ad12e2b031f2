//! Compiling parsed workflow documents into a [`Definition`]: every task
//! becomes uniform nodes, edges and promises. Pure: sub-workflow files
//! come through the `load` function the caller passes.
//!
//! - a task with `python`, `python_fn`, `command` or `input` is one node;
//! - `pre` and `post` tasks are chained before and after it, and what runs
//!   `after` it waits for its last `post` task;
//! - a `parallel` group has no node of its own: its tasks start after the
//!   group's `after`, and what runs after the group waits for all of them;
//! - `each` is two nodes, `ID.each` (it adds the copies `ID[0]`, `ID[1]`,
//!   … when it runs) and `ID` (it gathers their outputs into a list),
//!   under the promise `shape(ID.each, ID, T{min,max})`;
//! - `workflow` inlines another file's tasks with their ids prefixed by
//!   `ID.`.

mod bodies;
mod node;
mod tasks;
mod values;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::doc::WorkflowDoc;
use super::error::{FileError, Place};
use crate::model::{Definition, Mutation};
use crate::promise::Promise;

/// How deep sub-workflows may nest (a file including a file …).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// How many sub-workflow files one workflow file may read, each
/// inclusion counted.
pub const MAX_INCLUDES: usize = 1_000;
/// How many nodes one workflow file may compile to, sub-workflows
/// included.
pub const MAX_NODES: usize = 100_000;
/// How deep `pre`, `post`, `parallel` and `each` may nest inside one
/// another.
pub const MAX_NESTING: usize = 32;

/// The module of the Python functions `each` compiles to (shipped with
/// the Python helper).
const BUILTINS: &str = "orch._builtins";

/// A compiled workflow file.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Compiled {
    /// What runs.
    pub definition: Definition,
    /// How many tasks may run at once, when the file says.
    pub max_parallel: Option<usize>,
    /// Whether the run keeps going past failures.
    pub keep_going: bool,
    /// The parameters as the run gets them (defaults filled in).
    pub params: Map<String, Value>,
    /// Where each node was declared (sugar nodes: where their task was).
    pub places: HashMap<String, Place>,
    /// The folder of the file: tasks run there, scripts resolve there.
    pub dir: PathBuf,
    /// When the scheduler starts runs, if the file says.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Whether missed fire times run.
    pub catchup: bool,
    /// At most this many runs at once.
    pub max_active_runs: Option<u32>,
    /// The event keys that start a run.
    pub events: Vec<String>,
    /// Parameters without default that were not given: compiled as null
    /// placeholders by [`super::load_all`] (a scheduler starts such a
    /// workflow only with them, from an event's payload).
    pub needs: Vec<String>,
}

impl Compiled {
    /// How a run of this file runs: in the file's folder, with the
    /// parallelism and failure policy the file sets.
    pub fn options(&self) -> crate::engine::RunOptions {
        let mut opts = crate::engine::RunOptions {
            dir: Some(self.dir.clone()),
            ..Default::default()
        };
        if let Some(n) = self.max_parallel {
            opts.max_parallel = n.max(1);
        }
        if self.keep_going {
            opts.failure_policy = crate::model::FailurePolicy::KeepGoing;
        }
        opts.params = self.params.clone();
        opts.per_run_dir = true;
        opts
    }
}

/// Reads and parses a sub-workflow file (a path relative to the current
/// directory, or absolute); returns its canonical path with its document.
pub type Load<'a> = dyn FnMut(&Path) -> Result<(PathBuf, WorkflowDoc), FileError> + 'a;

/// Compiles the workflow `doc` read from `file` (its canonical path) with
/// the run parameters `given`; sub-workflow files are read with `load`.
pub fn compile(
    file: &Path,
    doc: &WorkflowDoc,
    given: &Map<String, Value>,
    load: &mut Load<'_>,
) -> Result<Compiled, FileError> {
    let params = resolve_params(file, doc, given)?;
    if doc.max_active_runs == Some(0) {
        return Err(FileError::new(
            Place::of(file, &doc.name),
            "max_active_runs: 0 would never start a run (give 1 or more, or leave it out)",
        ));
    }
    let schedule = match &doc.schedule {
        Some(cron) => Some(
            crate::schedule::Schedule::parse(
                &cron.value,
                doc.timezone.as_ref().map(|t| t.value.as_str()),
            )
            .map_err(|e| FileError::new(Place::of(file, cron), e))?,
        ),
        None => {
            if let Some(tz) = &doc.timezone {
                return Err(FileError::new(
                    Place::of(file, tz),
                    "`timezone` goes with `schedule`, which the file does not give",
                ));
            }
            None
        }
    };
    let mut events = Vec::new();
    for key in &doc.events {
        let k = key.value.trim();
        if k.is_empty() || k.len() > 256 || k.chars().any(char::is_control) {
            return Err(FileError::new(
                Place::of(file, key),
                "an event key is 1 to 256 printable characters",
            ));
        }
        events.push(k.to_string());
    }
    let mut c = Compiler {
        mutations: Vec::new(),
        places: HashMap::new(),
        tasks: HashMap::new(),
        pending: Vec::new(),
        load,
        files: vec![file.to_path_buf()],
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        includes: 0,
    };
    let scope = Scope {
        file: file.to_path_buf(),
        prefix: String::new(),
        params: params.clone(),
    };
    c.unit(&scope, &doc.tasks)?;
    for p in &doc.promises {
        let place = Place::of(file, p);
        let promise: Promise = serde_json::from_value(p.value.clone())
            .map_err(|e| FileError::new(place.clone(), format!("promise: {e}")))?;
        c.mutations.push(Mutation::AddPromise { promise });
    }
    let rules = c.rules(&scope, file, &doc.rules)?;
    let loops = c.loops(&scope, file, &doc.loops)?;
    let mut mutations = without_repeated_edges(c.mutations);
    mutations.extend(loops);
    mutations.extend(rules);
    let mut definition = Definition::new(doc.name.value.clone(), mutations);
    // The parameters are in place already; the rest is what a scheduler
    // reads.
    definition.triggers.schedule = doc.schedule.as_ref().map(|s| s.value.clone());
    definition.triggers.timezone = doc.timezone.as_ref().map(|t| t.value.clone());
    definition.triggers.catchup = doc.catchup;
    definition.triggers.max_active_runs = doc.max_active_runs;
    definition.triggers.events = events.clone();
    Ok(Compiled {
        definition,
        max_parallel: doc.max_parallel,
        keep_going: doc.keep_going,
        params,
        places: c.places,
        dir: c.base,
        schedule,
        catchup: doc.catchup,
        max_active_runs: doc.max_active_runs,
        events,
        needs: Vec::new(),
    })
}

/// The mutations with each edge once: an `after` that says what an output
/// reference already implies, or two tasks' sugar leading to the same
/// edge, adds nothing.
fn without_repeated_edges(mutations: Vec<Mutation>) -> Vec<Mutation> {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for m in &mutations {
        if let Mutation::AddNode { id, inputs, .. } = m {
            for r in crate::model::output_refs(inputs).unwrap_or_default() {
                seen.insert((r.node, id.clone()));
            }
        }
    }
    mutations
        .into_iter()
        .filter(|m| match m {
            Mutation::AddEdge { from, to, .. } => seen.insert((from.clone(), to.clone())),
            _ => true,
        })
        .collect()
}

/// The run's parameters: each declared one given, else its default;
/// refuses unknown and missing ones.
fn resolve_params(
    file: &Path,
    doc: &WorkflowDoc,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, FileError> {
    let place = Place::file(file);
    if let Some(unknown) = given.keys().find(|k| !doc.params.contains_key(*k)) {
        let declared: Vec<&str> = doc.params.keys().map(String::as_str).collect();
        return Err(FileError::new(
            place,
            format!(
                "unknown parameter `{unknown}` (the workflow declares {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        ));
    }
    for (name, v) in given {
        crate::model::check_param_value(v)
            .map_err(|e| FileError::new(place.clone(), format!("parameter `{name}`: {e}")))?;
    }
    let mut out = Map::new();
    for (name, p) in &doc.params {
        let value = given
            .get(name)
            .cloned()
            .or_else(|| p.default.clone())
            .ok_or_else(|| {
                FileError::new(
                    place.clone(),
                    format!("parameter `{name}` has no default: give it (--param {name}=VALUE)"),
                )
            })?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Where the tasks being compiled come from: their file, the prefix of
/// their ids and the parameters they see.
struct Scope {
    file: PathBuf,
    prefix: String,
    params: Map<String, Value>,
}

impl Scope {
    fn id(&self, local: &str) -> String {
        format!("{}{local}", self.prefix)
    }
}

/// The nodes a task starts at and ends at: what runs after it waits for
/// its exits; its `after` leads into its entries.
#[derive(Clone, Debug, Default)]
struct Ends {
    entries: Vec<String>,
    exits: Vec<String>,
    /// The node whose output is the task's (`None`: a group or a
    /// sub-workflow, which have none).
    output: Option<String>,
    place: Option<Place>,
}

/// An `after` list waiting for the end of its unit (ids may come later
/// in the file).
struct After {
    prefix: String,
    file: PathBuf,
    task: String,
    entries: Vec<String>,
    refs: Vec<(String, Place)>,
}

struct Compiler<'l, 'a> {
    mutations: Vec<Mutation>,
    places: HashMap<String, Place>,
    /// Every task by its full id.
    tasks: HashMap<String, Ends>,
    pending: Vec<After>,
    load: &'l mut Load<'a>,
    /// The files being compiled, outermost first (include cycles).
    files: Vec<PathBuf>,
    /// The folder of the outermost file: scripts resolve against it.
    base: PathBuf,
    /// Sub-workflow files read so far.
    includes: usize,
}

/// The parameters given on a command line (`name=value`, the value JSON
/// when it parses as JSON, else a string).
///
/// ```
/// let p = orch::file::parse_params(["n=3", "day=2024-01-01"]).unwrap();
/// assert_eq!(p["n"], 3);
/// assert_eq!(p["day"], "2024-01-01");
/// assert!(orch::file::parse_params(["oops"]).is_err());
/// assert!(orch::file::parse_params(["big=123456789012345678901234"]).is_err());
/// ```
pub fn parse_params<'a>(
    args: impl IntoIterator<Item = &'a str>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for arg in args {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("--param `{arg}` must look like name=value"))?;
        if k.is_empty() {
            return Err(format!("--param `{arg}` names no parameter"));
        }
        let value = match serde_json::from_str::<Value>(v) {
            // JSON, kept exactly or refused (an integer beyond 64 bits
            // would be read as a float).
            Ok(value) => {
                crate::limits::check_json(v).map_err(|e| format!("--param `{k}`: {e}"))?;
                value
            }
            Err(_) => Value::String(v.to_string()),
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}
