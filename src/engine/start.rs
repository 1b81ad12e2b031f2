//! Starting a run: the registration batch is validated exactly like a
//! runtime batch while a second thread writes it to the store; the run is
//! created (owned by the engine under a fresh lease) only if it passes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result, StructuralError};
use crate::exec::container::ContainerEngine;
use crate::exec::{configured_python, content_hash};
use crate::graph::{Graph, Staged};
use crate::history::{Event, EventKind, RunState};
use crate::model::{Definition, Exec, Mutation, Origin};
use crate::promise::{self, BatchProblem};
use crate::store::Registration;
use crate::time;
use crate::typed::native;

use super::run::Runner;
use super::{Engine, RunConfig, RunOptions};

/// Registers `def` as run `run_id` of `engine`; returns its runner,
/// ready to drive. An owned `def` is dropped as soon as the registration
/// committed.
pub(super) fn register(
    engine: &Engine,
    def: Cow<'_, Definition>,
    opts: &RunOptions,
    run_id: String,
) -> Result<Runner> {
    native::refuse_task_mode()?;
    // A definition with parameters runs with them in place (copied only
    // then: a big registration is otherwise never copied).
    let given = def;
    let mut filled = None;
    let (def, params) = if given.triggers.params.is_empty() && opts.params.is_empty() {
        (&*given, opts.params.clone())
    } else {
        let (with, params) = with_params(&given, &opts.params)?;
        (&*filled.insert(with), params)
    };
    let base_dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?
        }
    };
    let base_dir = base_dir
        .canonicalize()
        .map_err(|e| Error::io(format!("workflow directory {}", base_dir.display()), e))?;
    let config = RunConfig {
        scripts: script_hashes(&base_dir, &def.registration),
        base_dir,
        python: configured_python(opts.python.as_deref()),
        max_parallel: opts.max_parallel.max(1),
        default_timeout: opts.default_timeout.map(|d| d.as_secs_f64()),
        live_picture: opts.live_picture,
        native_binary: std::env::current_exe().ok(),
        python_fork: opts.python_fork,
        python_preload: opts.python_preload.clone(),
        failure_policy: opts.failure_policy,
        fired_at: opts.fired_at.map(time::format_millis),
        params,
        per_run_dir: opts.per_run_dir,
        source: opts.source.clone(),
        container_engine: container_engine(def, opts.container_engine.as_deref())?,
    };
    let started = Event {
        seq: 1,
        at: time::now(),
        kind: EventKind::RunStarted {
            workflow: def.name.clone(),
            orchestrator_pid: std::process::id(),
            config: config.clone(),
        },
    };
    let at = time::now();
    let mut state = RunState::new(&run_id);
    // Only a restart needs the batches, and it rebuilds the state from the
    // history.
    state.keep_batches = false;
    // The registration is written on a second thread while this one
    // validates it and builds the graph; the transaction commits only
    // once the validation passed, and nothing starts before it committed.
    // Both threads read the definition's own mutations: the writer
    // serialises them (filling in task names as validation does), the
    // validation checks them in place, and the graph copies them one at a
    // time, so the registration is never in memory twice.
    let store = engine.store().as_ref();
    let owner = engine.owner();
    let (touched, written) = std::thread::scope(|s| {
        let (verdict, verdict_rx) = std::sync::mpsc::channel::<bool>();
        let registration = Registration {
            run: &run_id,
            started: &started,
            batch: (2, &at),
            mutations: &def.registration,
        };
        let writer = s.spawn(move || {
            store.register(owner, registration, &mut || {
                verdict_rx.recv().unwrap_or(false)
            })
        });
        let registration = validate_registration(def);
        // The staging's indices are gone; the graph is built next.
        crate::release_freed_memory();
        let _ = verdict.send(registration.is_ok());
        let touched = registration.map(|()| {
            state.apply(&started);
            state.apply_borrowed(2, &at, &Origin::Registration, &def.registration)
        });
        (touched, writer.join())
    });
    // The graph has the run's own copy by now: a definition handed over
    // (`Workflow::run_owned`) goes here, before the trim below returns
    // what it and the writer held.
    drop(filled);
    drop(given);
    let touched = touched?;
    let lease = match written {
        Ok(written) => written?.expect("a valid registration commits"),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // What the writer used for the rows.
    crate::release_freed_memory();
    let custom = opts.executor.as_ref().map(|e| e.0.clone());
    let store = engine.store();
    let mut runner = match Runner::new(engine, lease.clone(), state, &config, custom) {
        Ok(runner) => runner,
        Err(e) => {
            // Nobody drives the run: it is free for a takeover at once.
            let _ = store.release(&lease);
            return Err(e);
        }
    };
    for i in touched {
        runner.refresh(i);
    }
    if let Err(e) = runner.flush() {
        let _ = store.release(&lease);
        return Err(e);
    }
    runner.announce("run started");
    Ok(runner)
}

/// The container engine a run records: the program its registration's
/// container tasks run with, checked now (a missing engine is refused here,
/// not at the first attempt), else the one configured.
fn container_engine(def: &Definition, configured: Option<&str>) -> Result<Option<String>> {
    let Some(first) = def.registration.iter().find_map(|m| match m {
        Mutation::AddNode { id, task, .. } if matches!(task.exec, Exec::Container(_)) => Some(id),
        _ => None,
    }) else {
        return Ok(configured.map(str::to_string));
    };
    match ContainerEngine::resolve(configured) {
        Ok(engine) => Ok(Some(engine.program.to_string_lossy().into_owned())),
        Err(e) => Err(Error::Registration {
            workflow: def.name.clone(),
            source: StructuralError {
                mutation: format!("add_node `{first}`"),
                reason: format!("a container task: {e}"),
            },
        }),
    }
}

/// `def` with its parameters in place: `given` over the defaults the
/// definition declares; an unknown one is refused by name. Returns the
/// parameters the run gets.
fn with_params(
    def: &Definition,
    given: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Definition, serde_json::Map<String, serde_json::Value>)> {
    let refuse = |message: String| Error::Refused {
        what: format!("the parameters of `{}`", def.name),
        message,
    };
    let declared = &def.triggers.params;
    let mut params = declared.clone();
    for (k, v) in given {
        // Files fill their parameters when they compile and declare none
        // here; what they were given is recorded as is.
        if !declared.is_empty() && !declared.contains_key(k) {
            let names: Vec<&str> = declared.keys().map(String::as_str).collect();
            return Err(refuse(format!(
                "unknown parameter `{k}` (the workflow declares {})",
                names.join(", ")
            )));
        }
        crate::limits::check_value(v).map_err(|e| refuse(format!("parameter `{k}`: {e}")))?;
        crate::model::check_param_value(v).map_err(|e| refuse(format!("parameter `{k}`: {e}")))?;
        params.insert(k.clone(), v.clone());
    }
    if declared.is_empty() {
        return Ok((def.clone(), params));
    }
    let mut filled = def.clone();
    for m in &mut filled.registration {
        if let Mutation::AddNode { id, inputs, .. } = m {
            *inputs = crate::model::fill_params(inputs, &params)
                .map_err(|e| refuse(format!("inputs of `{id}`: {e}")))?;
        }
    }
    Ok((filled, params))
}

/// Checks a definition exactly as [`super::Engine::start`] does before
/// anything runs: its registration is validated like a runtime batch
/// (structure, promises, declared types), and when it has container tasks
/// the container engine (`ORCH_CONTAINER_ENGINE`, else `podman` or
/// `docker`) must be there.
///
/// ```
/// use orch::model::{Definition, Mutation};
/// use orch::Task;
/// let ok = Definition::new("w", vec![Mutation::add_node("a", Task::command(["true"]))]);
/// assert!(orch::engine::validate(&ok).is_ok());
/// let bad = Definition::new("w", vec![Mutation::add_edge("a", "b")]);
/// assert!(orch::engine::validate(&bad).is_err());
/// ```
pub fn validate(def: &Definition) -> Result<()> {
    validate_registration(def)?;
    container_engine(def, None).map(drop)
}

/// Validates the registration exactly like a runtime batch (structure,
/// promises, declared types), where it is: nothing of it is copied.
fn validate_registration(def: &Definition) -> Result<()> {
    let empty = Graph::new();
    empty
        .stage_borrowed(&def.registration)
        .and_then(
            |staging| match promise::check_batch(&empty, &staging, None) {
                Ok(()) => check_types(&empty, &staging),
                Err(problem) => Err(StructuralError {
                    mutation: "the registration".into(),
                    reason: match problem {
                        BatchProblem::Violation(v) => v.to_string(),
                        BatchProblem::BadPromise(why) => why,
                    },
                }),
            },
        )
        .map_err(|source| Error::Registration {
            workflow: def.name.clone(),
            source,
        })
}

/// Checks the inputs of an `add_node` against its task's declared types
/// (`docs/typed.md`), before it joins the batch.
pub(super) fn typecheck(
    g: &Graph,
    staging: &Staged<'_>,
    m: &Mutation,
) -> std::result::Result<(), String> {
    let Mutation::AddNode {
        id, task, inputs, ..
    } = m
    else {
        return Ok(());
    };
    let output_type_of = |node: &str| {
        let t = staging.task_of(g, node)?;
        t.output_type.as_deref().map(String::from)
    };
    native::check_inputs(task, inputs, &output_type_of).map_err(|e| format!("add_node `{id}`: {e}"))
}

/// [`typecheck`] over a whole staged batch (the registration).
fn check_types(g: &Graph, staging: &Staged<'_>) -> std::result::Result<(), StructuralError> {
    for m in staging.mutations() {
        typecheck(g, staging, m).map_err(|reason| StructuralError {
            mutation: "the registration".into(),
            reason,
        })?;
    }
    Ok(())
}

/// The content hash of each Python script the registration runs (a
/// missing file hashes as `missing`).
pub(super) fn script_hashes(
    base_dir: &Path,
    registration: &[Mutation],
) -> BTreeMap<String, String> {
    registration
        .iter()
        .filter_map(|m| match m {
            Mutation::AddNode { task, .. } => match &task.exec {
                Exec::Python { script } => Some(script.clone()),
                _ => None,
            },
            _ => None,
        })
        .map(|script| {
            let hash = std::fs::read(base_dir.join(&script))
                .map(content_hash)
                .unwrap_or_else(|_| "missing".into());
            (script, hash)
        })
        .collect()
}
