//! The builder: a workflow is a Rust value that lists the registration
//! batch (nodes, edges, promises) and how to run it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use crate::engine::RunOutcome;
use crate::engine::{Engine, RunOptions};
use crate::error::Result;
use crate::model::{Attrs, Definition, FailurePolicy, Mutation, Rule, Task};
use crate::promise::shape::Shape;
use crate::promise::Promise;

/// A workflow: its registration batch plus run options.
///
/// ```no_run
/// use orch::{Task, Workflow};
///
/// let mut wf = Workflow::new("hello");
/// wf.dir("examples/static_pipeline");
/// wf.node("start", Task::python("step.py"));
/// wf.node("end", Task::python("step.py")).input("from", orch::output("start"));
/// let outcome = wf.run()?;
/// println!("run {} {}", outcome.run, outcome.status);
/// # Ok::<(), orch::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Workflow {
    /// What runs: the name and the registration batch.
    pub(crate) def: Definition,
    /// How it runs.
    pub(crate) opts: RunOptions,
    pub(crate) db: Option<PathBuf>,
    /// The ids of the nodes added so far, by position in the
    /// registration (for fresh ids of typed nodes): a 100,000-node
    /// workflow keeps no second copy of its ids.
    pub(crate) ids: crate::graph::IdIndex,
    /// Ids taken without a node of that id (a typed map's base name).
    pub(crate) reserved: std::collections::HashSet<String>,
    /// Mistakes found while building (a malformed typed branch): `run`
    /// refuses the workflow with them.
    pub(crate) problems: Vec<String>,
    /// Task names promised never to change the graph.
    pub(crate) quiet: std::collections::BTreeSet<String>,
}

impl Workflow {
    /// A new, empty workflow.
    ///
    /// ```
    /// let wf = orch::Workflow::new("etl");
    /// assert_eq!(wf.name(), "etl");
    /// ```
    pub fn new(name: impl Into<String>) -> Workflow {
        Workflow {
            def: Definition::new(name, Vec::new()),
            opts: RunOptions::default(),
            db: None,
            ids: Default::default(),
            reserved: Default::default(),
            problems: Vec::new(),
            quiet: Default::default(),
        }
    }

    /// What runs: the name and the registration batch, as plain serde
    /// data ([`crate::engine::Engine::start`] takes it).
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("a", orch::Task::command(["true"]));
    /// assert_eq!(wf.definition().registration.len(), 1);
    /// ```
    pub fn definition(&self) -> &Definition {
        &self.def
    }

    /// How it runs: directory, interpreter, parallelism, executor, picture.
    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The registration batch as built so far.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("a", orch::Task::python("a.py"));
    /// assert_eq!(wf.mutations().len(), 1);
    /// ```
    pub fn mutations(&self) -> &[Mutation] {
        &self.def.registration
    }

    /// The base directory: tasks run there and relative script paths
    /// resolve against it (default: the current directory).
    pub fn dir(&mut self, dir: impl AsRef<Path>) -> &mut Workflow {
        self.opts.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The SQLite database file (default: `ORCH_DB`, else
    /// `.orch/orch.db`).
    pub fn db(&mut self, path: impl AsRef<Path>) -> &mut Workflow {
        self.db = Some(path.as_ref().to_path_buf());
        self
    }

    /// The Python interpreter (default: `ORCH_PYTHON`, else `python3`).
    /// It is resolved once per process to the real executable.
    pub fn python(&mut self, interpreter: impl Into<String>) -> &mut Workflow {
        self.opts.python = Some(interpreter.into());
        self
    }

    /// The container engine of the workflow's container tasks:
    /// `"podman"`, `"docker"` or a path to either (default:
    /// `ORCH_CONTAINER_ENGINE`, else `podman` when the host has it, else
    /// `docker`). A run with container tasks is refused when it registers
    /// if the engine cannot be found or run; the run records the one it
    /// checked, so a resume uses it too.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.container_engine("docker");
    /// assert_eq!(wf.options().container_engine.as_deref(), Some("docker"));
    /// ```
    pub fn container_engine(&mut self, engine: impl Into<String>) -> &mut Workflow {
        self.opts.container_engine = Some(engine.into());
        self
    }

    /// Whether Python attempts are forked from a warm server (default:
    /// on). The server imports the helper and the
    /// [preloaded](Workflow::python_preload) modules once, then forks one
    /// child per attempt: each attempt is still its own process, with its
    /// own stdio, exit code, process group, timeout and kill, but starts
    /// in a few milliseconds instead of a fresh interpreter's tens. Off:
    /// every attempt starts a fresh interpreter, as does any attempt when
    /// `ORCH_PYTHON_FORK=0` or when the server cannot start. See
    /// `docs/python.md` for when forking is unsafe.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.python_fork(false); // a fresh interpreter per attempt
    /// ```
    pub fn python_fork(&mut self, on: bool) -> &mut Workflow {
        self.opts.python_fork = on;
        self
    }

    /// Modules the fork server imports before it forks any attempt, so
    /// that every task starts with them already imported (each attempt
    /// gets a copy of that warm state; nothing a task does reaches the
    /// next). A module that fails to import, or that leaves threads
    /// running, makes the run start fresh interpreters instead (with a
    /// warning). Recorded with the run, so `resume` preloads them too.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.python_preload(["json", "decimal"]);
    /// ```
    pub fn python_preload<S: Into<String>>(
        &mut self,
        modules: impl IntoIterator<Item = S>,
    ) -> &mut Workflow {
        self.opts.python_preload = modules.into_iter().map(Into::into).collect();
        self
    }

    /// How many attempts may run at once (default 1: one at a time).
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.max_parallel(4);
    /// ```
    pub fn max_parallel(&mut self, n: usize) -> &mut Workflow {
        self.opts.max_parallel = n.max(1);
        self
    }

    /// Keep going when a node fails for good: everything that does not
    /// depend on it runs to the end, the nodes downstream of it become
    /// `upstream_failed`, and the run ends `failed` naming every node that
    /// failed ([`FailurePolicy::KeepGoing`]). Off by default: the first
    /// node that fails for good stops the run from starting anything new.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.keep_going(true);
    /// ```
    pub fn keep_going(&mut self, on: bool) -> &mut Workflow {
        self.opts.failure_policy = if on {
            FailurePolicy::KeepGoing
        } else {
            FailurePolicy::FailFast
        };
        self
    }

    /// Fires the workflow on a cron schedule when a scheduler hosts it
    /// ([`crate::scheduler::Scheduler::for_workflows`]): 6 fields with
    /// seconds first (`"0 0 * * * *"`) or 5, in [`Workflow::timezone`].
    /// The pattern is checked when the scheduler takes the workflow.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("nightly");
    /// wf.schedule("0 30 2 * * *").timezone("Europe/Berlin").max_active_runs(1);
    /// assert_eq!(wf.definition().triggers.schedule.as_deref(), Some("0 30 2 * * *"));
    /// ```
    pub fn schedule(&mut self, cron: &str) -> &mut Workflow {
        self.def.triggers.schedule = Some(cron.to_string());
        self
    }

    /// The IANA time zone of the schedule (default UTC).
    pub fn timezone(&mut self, zone: &str) -> &mut Workflow {
        self.def.triggers.timezone = Some(zone.to_string());
        self
    }

    /// Runs the fire times missed while no scheduler ran (default: off).
    pub fn catchup(&mut self, on: bool) -> &mut Workflow {
        self.def.triggers.catchup = on;
        self
    }

    /// At most `n` runs of the workflow at once under a scheduler.
    pub fn max_active_runs(&mut self, n: u32) -> &mut Workflow {
        self.def.triggers.max_active_runs = Some(n);
        self
    }

    /// Starts a run whenever an event is pushed under `key` (`orch event
    /// push KEY JSON`), the payload's fields as parameters.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("on_order");
    /// wf.on_event("orders.new").param("order", serde_json::json!(null));
    /// wf.node("handle", orch::Task::command(["true"])).input("order", serde_json::json!({"$param": "order"}));
    /// ```
    pub fn on_event(&mut self, key: &str) -> &mut Workflow {
        self.def.triggers.events.push(key.to_string());
        self
    }

    /// Declares a run parameter with its default: each `{"$param":
    /// "name"}` in the inputs becomes the value a run is started with
    /// (an event's payload field, or this default).
    pub fn param(&mut self, name: &str, default: Value) -> &mut Workflow {
        self.def.triggers.params.insert(name.to_string(), default);
        self
    }

    /// The timeout of attempts whose task sets none.
    pub fn default_timeout(&mut self, d: Duration) -> &mut Workflow {
        self.opts.default_timeout = Some(d);
        self
    }

    /// Whether to keep a live SVG picture of the run at
    /// `<database folder>/runs/<run>/live.svg` (default: on). It is
    /// rewritten atomically after committed events.
    pub fn live_picture(&mut self, on: bool) -> &mut Workflow {
        self.opts.live_picture = on;
        self
    }

    /// Runs every attempt of this workflow with `executor` instead of the
    /// built-in [`crate::exec::ProcessExecutor`] (one subprocess per
    /// attempt speaking the JSON-lines protocol). The extension point for
    /// other ways to run tasks: containers, remote runners, test doubles.
    /// The runtime keeps everything else (validation, promises, history);
    /// the executor only starts attempts and reports their mutations and
    /// their end through the [`crate::exec::AttemptLink`]. Input tasks
    /// ([`Task::input`]) never reach an executor. A run resumed with
    /// [`crate::resume`] goes back to the process executor;
    /// [`crate::Takeover::executor`] chooses one for a resume or restart.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use orch::exec::{AttemptEnd, AttemptLink, AttemptSpec, Executor, LaunchError};
    ///
    /// /// Succeeds at once without running anything.
    /// struct Instant;
    /// impl Executor for Instant {
    ///     fn launch(&self, _spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
    ///         link.finish(AttemptEnd::exited(0));
    ///         Ok(None)
    ///     }
    /// }
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("a", orch::Task::command(["true"]));
    /// wf.executor(Arc::new(Instant));
    /// assert!(wf.run()?.succeeded());
    /// # Ok::<(), orch::Error>(())
    /// ```
    pub fn executor(
        &mut self,
        executor: std::sync::Arc<dyn crate::exec::Executor>,
    ) -> &mut Workflow {
        self.opts.executor = Some(crate::exec::SharedExecutor(executor));
        self
    }

    /// Adds a node. References to outputs in its inputs imply edges.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("a", orch::Task::python("a.py")).label("first").input("n", 3);
    /// ```
    pub fn node(&mut self, id: impl Into<String>, task: Task) -> NodeBuilder<'_> {
        let id = id.into();
        let at = self.def.registration.len();
        self.ids.insert(&id, at);
        self.def.registration.push(Mutation::add_node(id, task));
        NodeBuilder { wf: self, at }
    }

    pub(crate) fn has_id(&self, id: &str) -> bool {
        self.reserved.contains(id)
            || self
                .ids
                .get(id, |at| match &self.def.registration[at] {
                    Mutation::AddNode { id, .. } => id.as_str(),
                    _ => "",
                })
                .is_some()
    }

    /// Adds the edge `from -> to`: `to` runs after `from` succeeded.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("a", orch::Task::python("a.py"));
    /// wf.node("b", orch::Task::python("b.py"));
    /// wf.edge("a", "b").label("then");
    /// ```
    pub fn edge(&mut self, from: impl Into<String>, to: impl Into<String>) -> EdgeBuilder<'_> {
        self.def.registration.push(Mutation::AddEdge {
            from: from.into(),
            to: to.into(),
            attrs: Attrs::new(),
        });
        let at = self.def.registration.len() - 1;
        EdgeBuilder { wf: self, at }
    }

    /// Declares a promise: a constraint on every later batch, enforced by
    /// the runtime (see [`crate::promise`]).
    ///
    /// ```
    /// use orch::promise::Promise;
    /// let mut wf = orch::Workflow::new("w");
    /// wf.promise(Promise::Static {});
    /// wf.promise(Promise::NoEdgesInto { node: "B".into() });
    /// ```
    pub fn promise(&mut self, promise: Promise) -> &mut Workflow {
        self.def.registration.push(Mutation::AddPromise { promise });
        self
    }

    /// Declares a rule: when its predicate holds, its body is committed
    /// once, as a batch with origin `rule:<id>`, checked against every
    /// promise (see [`crate::rule`] and `docs/rules.md`).
    ///
    /// ```
    /// use orch::{collect, Mutation, Predicate, Rule, Task, Workflow};
    /// let mut wf = Workflow::new("late_merge");
    /// wf.node("scan", Task::python("scan.py"));
    /// wf.rule(Rule::new("merge", Predicate::closed("task:pdf")).then(Mutation::AddNode {
    ///     id: "merge".into(),
    ///     task: Box::new(Task::python("merge.py")),
    ///     inputs: serde_json::json!({"pdfs": collect("task:pdf")}),
    ///     attrs: Default::default(),
    /// }));
    /// assert_eq!(wf.definition().registration.len(), 2);
    /// ```
    pub fn rule(&mut self, rule: Rule) -> &mut Workflow {
        self.def.registration.push(Mutation::AddRule {
            rule: Box::new(rule),
        });
        self
    }

    /// Declares a loop (SPEC §10): its first iteration, after its `from`;
    /// the promise that the region between `from` and `to` is
    /// `chain(body, 1, max)`; and the loop itself, whose further
    /// iterations the engine adds as batches with origin `loop:<id>` until
    /// its exit condition holds (see [`crate::loops`] and
    /// `docs/loops.md`). `from` and `to` are nodes of the workflow.
    ///
    /// ```
    /// use orch::model::previous;
    /// use orch::{Loop, LoopStep, Task, Until, Workflow};
    /// let mut wf = Workflow::new("sqrt2");
    /// wf.node("start", Task::python("start.py"));
    /// wf.node("report", Task::python("report.py"));
    /// wf.add_loop(
    ///     Loop::new("newton", "start", "report", Until::at("/done"), 10).step(
    ///         LoopStep::new("refine", Task::python("newton.py"))
    ///             .inputs(serde_json::json!({"x": previous("/x")})),
    ///     ),
    /// );
    /// // The two nodes, then refine#1 (its edge from `start` implied by
    /// // `$previous`), the promise and the loop.
    /// assert_eq!(wf.definition().registration.len(), 5);
    /// ```
    pub fn add_loop(&mut self, l: crate::model::Loop) -> &mut Workflow {
        self.def.registration.extend(l.declaration());
        self
    }

    /// Declares that the region between `from` and `to` is a **map**:
    /// `k` copies of `each` side by side, `min ≤ k ≤ max` (`None`: no
    /// bound). Sugar for a `shape` promise with `repeat`; `to` waits for
    /// the region, and a task (usually `from`'s) fills it.
    ///
    /// ```
    /// use orch::{Shape, Task, Workflow};
    /// let mut wf = Workflow::new("map");
    /// wf.node("A", Task::python("a.py"));
    /// wf.node("B", Task::python("b.py"));
    /// wf.map_region("A", "B", Shape::task("M"), 0, None);
    /// ```
    pub fn map_region(
        &mut self,
        from: &str,
        to: &str,
        each: Shape,
        min: u32,
        max: Option<u32>,
    ) -> &mut Workflow {
        self.promise(Promise::shape(from, to, Shape::repeat(each, min, max)))
    }

    /// Declares that the region between `from` and `to` is **exactly one
    /// of** the branches. Sugar for a `shape` promise with `alt`.
    ///
    /// ```
    /// use orch::{Shape, Task, Workflow};
    /// let mut wf = Workflow::new("branch");
    /// wf.node("choose", Task::python("choose.py"));
    /// wf.node("end", Task::python("end.py"));
    /// wf.branch_region("choose", "end", [
    ///     Shape::seq([Shape::task("left_1"), Shape::task("left_2")]),
    ///     Shape::task("right"),
    /// ]);
    /// ```
    pub fn branch_region(
        &mut self,
        from: &str,
        to: &str,
        branches: impl IntoIterator<Item = Shape>,
    ) -> &mut Workflow {
        self.promise(Promise::shape(from, to, Shape::alt(branches)))
    }

    /// Appends any mutation to the registration batch.
    pub fn mutate(&mut self, m: Mutation) -> &mut Workflow {
        if let Mutation::AddNode { id, .. } = &m {
            self.ids.insert(id, self.def.registration.len());
        }
        self.def.registration.push(m);
        self
    }

    /// Registers and runs the workflow to the end, blocking the calling
    /// thread. Inside an async context use [`Workflow::run_async`].
    pub fn run(&self) -> Result<RunOutcome> {
        crate::block_on(self.run_async())
    }

    /// [`Workflow::run`] taking the workflow: its registration batch is
    /// dropped as soon as it committed, so that it is not kept beside the
    /// run's own graph while the run lasts (a 100,000-node workflow holds
    /// ~60 MB of mutations). The run, its history and its outcome are
    /// the same. Inside an async context use
    /// [`Workflow::run_owned_async`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let mut wf = orch::Workflow::new("many");
    /// wf.db(dir.path().join("orch.db")).live_picture(false);
    /// for i in 0..3 {
    ///     wf.node(format!("n{i}"), orch::Task::command(["true"]));
    /// }
    /// let outcome = wf.run_owned()?; // `wf` is gone
    /// assert!(outcome.succeeded());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_owned(self) -> Result<RunOutcome> {
        crate::block_on(self.run_owned_async())
    }

    /// Submits the run to an `orch serve` instead of running it in this
    /// process; returns the run's id (follow it with the server's `wait`,
    /// or `orch --server URL show RUN`). The definition travels whole;
    /// its tasks run in a fresh folder on the server, so they must not
    /// need files from this machine (native tasks need runners started
    /// from this binary).
    ///
    /// ```no_run
    /// use orch::client::Client;
    ///
    /// let mut wf = orch::Workflow::new("nightly");
    /// wf.node("report", orch::Task::command(["date"]));
    /// let server = Client::new("http://127.0.0.1:8080", std::env::var("ORCH_TOKEN").ok());
    /// let run = wf.submit(&server)?;
    /// let end = server.get(&format!("/api/v1/runs/{run}/wait?timeout=60"))?;
    /// println!("{run}: {}", end["status"]["status"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "client")]
    pub fn submit(&self, server: &crate::client::Client) -> Result<String> {
        if let Some(problem) = self.problems.first() {
            return Err(crate::Error::Registration {
                workflow: self.def.name.clone(),
                source: crate::StructuralError {
                    mutation: "the typed builder".into(),
                    reason: problem.clone(),
                },
            });
        }
        let refused = |message: String| crate::Error::Refused {
            what: format!(
                "the run of `{}` submitted to {}",
                self.def.name,
                server.base()
            ),
            message,
        };
        let definition = serde_json::to_value(&self.def).map_err(|e| refused(e.to_string()))?;
        let body = serde_json::json!({"definition": definition, "params": self.opts.params});
        let started = server
            .post("/api/v1/runs", &body)
            .map_err(|e| refused(e.to_string()))?;
        Ok(started["run"].as_str().unwrap_or_default().to_string())
    }

    /// Registers and runs the workflow to the end.
    pub async fn run_async(&self) -> Result<RunOutcome> {
        let engine = self.engine()?;
        let handle = engine.start(&self.def, &self.opts).await?;
        crate::engine::wait_or_stop(&engine, handle).await
    }

    /// [`Workflow::run_owned`] inside an async context.
    pub async fn run_owned_async(self) -> Result<RunOutcome> {
        let engine = self.engine()?;
        let handle = engine.start_owned(self.def, &self.opts).await?;
        crate::engine::wait_or_stop(&engine, handle).await
    }

    /// The engine a run of this workflow goes to, once the workflow
    /// could be built without a problem.
    fn engine(&self) -> Result<Engine> {
        if let Some(problem) = self.problems.first() {
            return Err(crate::Error::Registration {
                workflow: self.def.name.clone(),
                source: crate::StructuralError {
                    mutation: "the typed builder".into(),
                    reason: problem.clone(),
                },
            });
        }
        // Before the database is created: a binary that cannot
        // orchestrate leaves nothing behind.
        crate::typed::native::refuse_task_mode()?;
        let db = self.db.clone().unwrap_or_else(crate::store::default_path);
        Engine::open(db)
    }
}

/// Sets up a node just added; see [`Workflow::node`].
#[derive(Debug)]
pub struct NodeBuilder<'a> {
    wf: &'a mut Workflow,
    at: usize,
}

impl NodeBuilder<'_> {
    fn parts(&mut self) -> (&mut Value, &mut Attrs) {
        match &mut self.wf.def.registration[self.at] {
            Mutation::AddNode { inputs, attrs, .. } => (inputs, attrs),
            _ => unreachable!("NodeBuilder points at an add_node"),
        }
    }

    pub(crate) fn task_mut(&mut self) -> &mut Task {
        match &mut self.wf.def.registration[self.at] {
            Mutation::AddNode { task, .. } => task,
            _ => unreachable!("NodeBuilder points at an add_node"),
        }
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        match &self.wf.def.registration[self.at] {
            Mutation::AddNode { id, .. } => id,
            _ => unreachable!("NodeBuilder points at an add_node"),
        }
    }

    /// Merges cosmetic attributes.
    pub fn attrs(mut self, more: Attrs) -> Self {
        self.parts().1.extend(more);
        self
    }

    /// Replaces the node's inputs.
    pub fn inputs(mut self, inputs: Value) -> Self {
        *self.parts().0 = inputs;
        self
    }

    /// Sets one input; `value` may contain [`crate::output`] references.
    ///
    /// # Panics
    /// When `value` does not serialise to JSON (a map with non-string
    /// keys, for instance).
    pub fn input(mut self, key: &str, value: impl Serialize) -> Self {
        let v = serde_json::to_value(value).expect("node input serialises to JSON");
        let inputs = self.parts().0;
        if !inputs.is_object() {
            *inputs = Value::Object(Default::default());
        }
        inputs
            .as_object_mut()
            .expect("inputs are an object")
            .insert(key.to_string(), v);
        self
    }

    /// Sets a cosmetic attribute.
    pub fn attr(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.parts().1.insert(key.to_string(), value.into());
        self
    }

    /// Sets the label drawn for the node.
    pub fn label(self, label: &str) -> Self {
        self.attr("label", label)
    }

    /// Sets the colour drawn for the node.
    pub fn color(self, color: &str) -> Self {
        self.attr("color", color)
    }
}

/// Sets up an edge just added; see [`Workflow::edge`].
#[derive(Debug)]
pub struct EdgeBuilder<'a> {
    wf: &'a mut Workflow,
    at: usize,
}

impl EdgeBuilder<'_> {
    /// Sets a cosmetic attribute.
    pub fn attr(self, key: &str, value: impl Into<Value>) -> Self {
        if let Mutation::AddEdge { attrs, .. } = &mut self.wf.def.registration[self.at] {
            attrs.insert(key.to_string(), value.into());
        }
        self
    }

    /// Sets the label drawn on the edge.
    pub fn label(self, label: &str) -> Self {
        self.attr("label", label)
    }
}

/// Prints how a run ended (run id, status, reason, database) and turns it
/// into a process exit code: success only when the run succeeded. For the
/// `main` of workflow programs.
///
/// ```no_run
/// use std::process::ExitCode;
/// fn main() -> ExitCode {
///     let mut wf = orch::Workflow::new("w");
///     wf.node("a", orch::Task::command(["true"]));
///     orch::workflow::report(wf.run())
/// }
/// ```
pub fn report(result: Result<RunOutcome>) -> std::process::ExitCode {
    match result {
        Ok(outcome) => {
            println!("run {} {}", outcome.run, outcome.status);
            if let Some(reason) = &outcome.reason {
                println!("reason: {reason}");
            }
            println!("database: {}", outcome.db.display());
            if let Some(p) = &outcome.picture {
                println!("picture: {}", p.display());
            }
            std::process::ExitCode::from(outcome.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
