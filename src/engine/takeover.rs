//! Taking a stored run over: resuming it where its owner stopped, or
//! restarting a node and everything downstream in a new generation. The
//! store's lease decides whether the run may be taken (SERVICE.md §2).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::exec::{kill_group, kill_left_behind, Executor};
use crate::history::{EventKind, RunState};
use crate::model::{AttemptOutcome, Exec, Mutation, NodeState, Origin, RunStatus};
use crate::typed::native;

use super::run::Runner;
use super::start::script_hashes;
use super::{Engine, RunConfig, TakeoverKind};

/// Takes `run` over for `engine`; returns its runner, ready to drive.
pub(super) fn take_over(
    engine: &Engine,
    run: &str,
    kind: TakeoverKind,
    force: bool,
    executor: Option<Arc<dyn Executor>>,
) -> Result<Runner> {
    native::refuse_task_mode()?;
    let store = engine.store();
    let run = store.resolve_run(run)?;
    // Checked before the lease is touched: a refused takeover (the run
    // ended, a script changed, an unknown node) leaves the owner as it was.
    prepare(engine, &run, kind.clone(), force)?;
    // Then the lease: once it is ours (a new epoch), nothing the old owner
    // could still try to write lands, so the history read next is the one
    // this engine continues.
    let lease = store.take_over(&run, engine.owner(), force)?;
    let ready = prepare(engine, &run, kind, force).and_then(|(mut state, restart, config)| {
        let restarted = restart.map(|kind| state.push(kind).0);
        let runner = Runner::new(engine, lease.clone(), state, &config, executor)?;
        Ok((runner, restarted))
    });
    let (mut runner, restarted) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // The run is given up again, free for the next takeover.
            let _ = store.release(&lease);
            return Err(e);
        }
    };
    if let Some(event) = restarted {
        runner.queue_applied(event);
        if runner.status() != RunStatus::Running {
            runner.emit(EventKind::RunStatus {
                status: RunStatus::Running,
                reason: None,
            });
        }
    }
    if let Err(e) = runner.recover() {
        let _ = store.release(&lease);
        return Err(e);
    }
    runner.announce(if runner.restarted() {
        "run restarted"
    } else {
        "run resumed"
    });
    Ok(runner)
}

/// What a takeover of `run` continues from: its state, the restart event
/// to apply (for a restart) and its recorded config; refused when a
/// resume finds the run ended or (unless `force`) a script changed.
fn prepare(
    engine: &Engine,
    run: &str,
    kind: TakeoverKind,
    force: bool,
) -> Result<(RunState, Option<EventKind>, RunConfig)> {
    let store = engine.store();
    let run = run.to_string();
    let state = store.replay(&run, None)?;
    let config: RunConfig = state.config.clone().ok_or_else(|| Error::Corrupt {
        path: store.location().into(),
        message: format!("run {run} has no `run_started` event"),
    })?;
    let restart = match kind {
        TakeoverKind::Resume => {
            if state.status.is_terminal() {
                return Err(Error::RunEnded {
                    run,
                    status: state.status.to_string(),
                    control: "resume".into(),
                });
            }
            if !force {
                if let Some(script) = changed_script(store.as_ref(), &run, &config)? {
                    return Err(Error::Resume {
                        run,
                        message: format!(
                            "the workflow changed since the run started: {script} is not the script it ran; resume with force to run it anyway"
                        ),
                    });
                }
            }
            None
        }
        TakeoverKind::Restart(node) => Some(restart_event(&state, &run, &node)?),
    };
    Ok((state, restart, config))
}

/// The first registered Python script whose content changed since the run
/// started (shown with its path).
fn changed_script(
    store: &dyn crate::store::Store,
    run: &str,
    config: &RunConfig,
) -> Result<Option<String>> {
    let registration: Vec<Mutation> = store
        .events(run, Some(2))?
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::BatchCommitted {
                origin: Origin::Registration,
                mutations,
            } => Some(mutations),
            _ => None,
        })
        .unwrap_or_default();
    let now = script_hashes(&config.base_dir, &registration);
    Ok(now
        .keys()
        .find(|k| config.scripts.get(*k) != now.get(*k))
        .map(|script| config.base_dir.join(script).display().to_string()))
}

/// The `restarted` event of a restart of `node`: `node` and everything
/// downstream of it, and every node a cancel stopped (with what is
/// downstream of it), go back to `pending`, in a new generation of the
/// graph. The batches sent by the tasks of those nodes (and of the nodes
/// they added, transitively) are retracted: their nodes, edges,
/// attributes and promises leave the current graph but stay in the
/// history. Everything else keeps its state and output; promises are
/// checked again as the new generation grows.
pub(super) fn restart_event(state: &RunState, run: &str, node: &str) -> Result<EventKind> {
    let g = &state.graph;
    let start = g.position(node).ok_or_else(|| Error::UnknownNode {
        run: run.to_string(),
        node: node.to_string(),
    })?;
    // The node, and every node a cancel of the run stopped before it
    // could finish: a restart runs a cancelled run on, not only a branch
    // of it.
    let mut downstream: BTreeSet<usize> = (0..g.len())
        .filter(|&i| g.node(i).state == NodeState::Cancelled)
        .chain([start])
        .collect();
    let mut stack: Vec<usize> = downstream.iter().copied().collect();
    while let Some(v) = stack.pop() {
        for s in g.successors(v) {
            if downstream.insert(s) {
                stack.push(s);
            }
        }
    }
    let mut restarted: HashSet<String> = downstream.iter().map(|&i| g.node(i).id.clone()).collect();
    let mut retracted_nodes: HashSet<String> = HashSet::new();
    let mut retracted = Vec::new();
    let mut retracted_rules: HashSet<String> = HashSet::new();
    for (seq, origin, mutations) in &state.batches {
        let retract = match origin {
            Origin::Attempt { node: by, .. } => {
                restarted.contains(by) || retracted_nodes.contains(by)
            }
            // A rule's batch goes with the batch that declared the rule,
            // and with any node it wired to: the rule fires again, once,
            // when its predicate holds in the new generation.
            Origin::Rule { rule } => {
                retracted_rules.contains(rule)
                    || mutations.iter().any(|m| touches(m, &retracted_nodes))
            }
            // A loop's batch goes with the node whose output decided it:
            // restarting a node of iteration k keeps iterations 1..=k,
            // retracts k+1 onwards (or the exit), and the loop decides
            // again when iteration k succeeds anew.
            Origin::Loop { after, .. } => {
                restarted.contains(after) || retracted_nodes.contains(after)
            }
            _ => false,
        };
        if retract {
            retracted.push(*seq);
            for m in mutations {
                match m {
                    Mutation::AddNode { id, .. } => {
                        retracted_nodes.insert(id.clone());
                    }
                    Mutation::AddRule { rule } => {
                        retracted_rules.insert(rule.id.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    restarted.retain(|id| !retracted_nodes.contains(id));
    let mut reset: Vec<String> = restarted.into_iter().collect();
    reset.sort_by_key(|id| g.position(id));
    Ok(EventKind::Restarted {
        node: node.to_string(),
        generation: state.generation + 1,
        retracted,
        reset,
    })
}

/// True when `m` names one of `nodes` (an edge's end, an attribute's
/// target, an output reference).
fn touches(m: &Mutation, nodes: &HashSet<String>) -> bool {
    match m {
        Mutation::AddNode { inputs, .. } => crate::model::output_refs(inputs)
            .unwrap_or_default()
            .iter()
            .any(|r| nodes.contains(&r.node)),
        Mutation::AddEdge { from, to, .. } => nodes.contains(from) || nodes.contains(to),
        Mutation::SetAttrs { node, edge, .. } => {
            node.as_ref().is_some_and(|n| nodes.contains(n))
                || edge
                    .as_ref()
                    .is_some_and(|e| nodes.contains(&e.from) || nodes.contains(&e.to))
        }
        Mutation::AddPromise {
            promise: crate::promise::Promise::Shape { from, to, .. },
        } => nodes.contains(from) || nodes.contains(to),
        _ => false,
    }
}

impl Runner {
    /// Takes a run over from a stopped orchestrator: the attempts that
    /// were running are stopped and run again, except those a runner
    /// still holds (this engine waits for them instead); ready and
    /// waiting nodes are picked up.
    pub(super) fn recover(&mut self) -> Result<()> {
        let runner = self;
        runner.emit(EventKind::RunResumed {
            orchestrator_pid: std::process::id(),
        });
        // Attempts that were running when the orchestrator stopped: stop what
        // is left of them and run them again.
        for i in 0..runner.state.graph.len() {
            if runner.state.graph.node(i).state != NodeState::Running {
                continue;
            }
            let node = runner.id(i);
            let Some(last) = runner.state.facts[i].attempts.last().cloned() else {
                continue;
            };
            // An attempt sent to runners: a runner may still hold it,
            // and then it goes on (its reports come to this engine).
            if last.pid.is_none() && runner.reattach(i, last.attempt) {
                continue;
            }
            if let Some(pid) = last
                .pid
                .filter(|&p| belongs_to(p, &runner.state.run, &node))
            {
                kill_group(pid);
            }
            runner.end_attempt(
                i,
                last.attempt,
                AttemptOutcome::Killed,
                None,
                "interrupted: the orchestrator stopped; the node runs again".into(),
                NodeState::Ready,
            );
        }
        // An attempt whose start a crash kept from being written (the
        // run loop writes a started attempt with the next commit, at most
        // `START_DELAY` later) left its node `ready`, its process unknown
        // to the history: it is found by what its environment names (as
        // are the descendants of the attempts stopped above that left
        // their groups). Nothing of this run may still run here before
        // these nodes start again.
        let ready: BTreeSet<String> = (0..runner.state.graph.len())
            .filter(|&i| runner.state.graph.node(i).state == NodeState::Ready)
            .map(|i| runner.id(i))
            .collect();
        for left in kill_left_behind(&runner.state.run, &ready) {
            tracing::info!(run = %runner.state.run, pid = left.pid, command = %left.command, "killed a process a stopped orchestrator left");
        }
        // What those attempts leave beyond their process (containers,
        // which outlive their client): removed before anything starts.
        let graph = &runner.state.graph;
        if (0..graph.len()).any(|i| matches!(graph.node(i).task.exec, Exec::Container(_))) {
            match runner.executor.clean_up_run(&runner.state.run) {
                Ok(removed) => {
                    for name in removed {
                        tracing::info!(run = %runner.state.run, container = %name, "removed a container a stopped orchestrator left");
                    }
                }
                Err(e) => {
                    tracing::warn!(run = %runner.state.run, error = %e, "could not remove the containers a stopped orchestrator left")
                }
            }
        }
        for i in 0..runner.state.graph.len() {
            match runner.state.graph.node(i).state {
                NodeState::Ready => {
                    runner.ready.insert(i);
                }
                NodeState::Pending => runner.refresh(i),
                NodeState::Waiting => {
                    runner.waiting.insert(i);
                }
                _ => {}
            }
        }
        runner.flush()
    }
}

/// True when process `pid` is an attempt of this run and node (its
/// environment says so, or, for an attempt forked by the Python fork
/// server, whose environment is the server's, the marker it holds open),
/// so that a recycled pid is never killed.
fn belongs_to(pid: u32, run: &str, node: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
    (vars.contains(&format!("ORCH_RUN={run}").as_bytes())
        && vars.contains(&format!("ORCH_NODE={node}").as_bytes()))
        || crate::exec::is_forked_attempt(pid, run, node)
}
