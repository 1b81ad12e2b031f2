//! The uniform vocabulary of a run: tasks, mutations, node and run states.
//!
//! Everything here is plain data with serde: it is what the builder
//! produces, what a task sends over the protocol and what the event log
//! stores. The runtime knows no other structure (SPEC §2).

mod config;
mod container;
mod definition;
mod loops;
mod rule;

pub use config::{FailurePolicy, RunConfig, Source};
pub use container::{
    Container, ContainerError, Mount, Pull, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS, MAX_IMAGE_BYTES,
    MAX_MOUNTS, MAX_PATH_BYTES, MIN_MEMORY_BYTES,
};
pub use definition::{Definition, Triggers};
pub use loops::{iteration, previous, Loop, LoopStep, OnCap, Until};
pub use rule::{collect, collect_at, collects, resolve_collects, Collect, Predicate, Rule};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Cosmetic attributes of a node or an edge (`label`, `color`, `shape`,
/// `tooltip`, …). They never change what runs.
pub type Attrs = Map<String, Value>;

/// What a node runs: a task name (used by promises and pictures) plus how
/// to run it.
///
/// ```
/// use orch::Task;
/// let t = Task::python("m.py").named("M").retries(2);
/// assert_eq!(t.name, "M");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task name. Empty means "the node id" and is filled in when the
    /// node is added.
    #[serde(default)]
    pub name: String,
    /// How the task runs.
    #[serde(flatten)]
    pub exec: Exec,
    /// Seconds an attempt may run before its process group is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// How many times a failed attempt is tried again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Seconds to wait before the first retry; each further retry waits
    /// twice as long as the one before (at most an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<f64>,
    /// The attempt fails when the task exits 0 without sending an output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_required: bool,
    /// The Rust type the task's inputs must deserialise into, when
    /// declared (a native task's argument struct, or
    /// [`crate::NodeBuilder::takes`]): checked when the node is added and
    /// when it starts (see `docs/typed.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<Box<str>>,
    /// The Rust type the task's output must deserialise into, when
    /// declared (a native task's return type, or
    /// [`crate::NodeBuilder::returns`]): checked before the attempt
    /// commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_type: Option<Box<str>>,
    /// Files a successful attempt must leave, relative to the folder it
    /// runs in: a missing one fails the attempt; the ones there are
    /// recorded with it (see [`crate::history::ProducedFile`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produces: Vec<String>,
    /// What an attempt needs of the machine it runs on: the process
    /// executor refuses a task this machine cannot satisfy, before it
    /// starts anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Box<Resources>>,
}

/// What a task needs of the machine it runs on.
///
/// ```
/// let r = orch::model::Resources { cpu: Some(2.0), gpu: Some(1), ..Default::default() };
/// let t = orch::Task::command(["train"]).requires(r.clone());
/// assert_eq!(t.requires.as_deref(), Some(&r));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Labels the machine must have (`ORCH_LABELS` gives them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a task runs. Every kind runs as one subprocess per attempt that
/// speaks the JSON-lines protocol (see `docs/protocol.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exec {
    /// `python3 <script>`; a relative path resolves against the workflow's
    /// base directory.
    Python {
        /// Path of the script.
        script: String,
    },
    /// `python3 -m orch call <module>:<function>`: the function is called
    /// with the inputs as keyword arguments and its return value is the
    /// output.
    PythonFn {
        /// Dotted module path, importable from the base directory.
        module: String,
        /// Function name inside the module.
        function: String,
    },
    /// Any program; it receives the start message on stdin and may speak
    /// the protocol on stdout.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// A native Rust task defined with `#[orch::task]`: the workflow
    /// binary runs itself again in task mode (see `docs/typed.md`).
    Native {
        /// The task's stable name (the function name unless renamed).
        task: String,
    },
    /// No process: the node waits (state `waiting`) until a value is
    /// delivered (`orch input <run> <node> <json>` or
    /// [`crate::Engine::signal`] with [`crate::store::Signal::Input`], or an
    /// event pushed under the key it listens for); the value becomes its
    /// output.
    Input {
        /// The event key whose payloads it takes (`orch event push KEY`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
    },
    /// A container of Podman or Docker (whichever the host has, or
    /// `ORCH_CONTAINER_ENGINE`): the engine's client is the attempt's
    /// process, and the protocol runs over the container's stdio (see
    /// `docs/containers.md`). Boxed: most tasks are not containers.
    Container(Box<Container>),
}

impl Exec {
    /// The kind as the JSON names it (`kind`): `python`, `python_fn`,
    /// `command`, `native`, `input` or `container`.
    ///
    /// ```
    /// assert_eq!(orch::Task::python("a.py").exec.kind(), "python");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Exec::Python { .. } => "python",
            Exec::PythonFn { .. } => "python_fn",
            Exec::Command { .. } => "command",
            Exec::Native { .. } => "native",
            Exec::Input { .. } => "input",
            Exec::Container(_) => "container",
        }
    }
}

impl Task {
    fn with(exec: Exec) -> Task {
        Task {
            name: String::new(),
            exec,
            timeout: None,
            retries: 0,
            retry_delay: None,
            output_required: false,
            input_type: None,
            output_type: None,
            produces: Vec::new(),
            requires: None,
        }
    }

    /// A native Rust task by its stable name: what `#[orch::task]`
    /// generates, and what a task adds at run time to run a native task
    /// of the workflow binary. Typed code uses the generated
    /// `my_task::call(..)` instead.
    ///
    /// ```
    /// let t = orch::Task::native("square");
    /// assert_eq!(t.exec, orch::Exec::Native { task: "square".into() });
    /// ```
    pub fn native(task: impl Into<String>) -> Task {
        Task::with(Exec::Native { task: task.into() })
    }

    /// A Python script task.
    ///
    /// ```
    /// let t = orch::Task::python("step.py");
    /// assert!(matches!(t.exec, orch::Exec::Python { .. }));
    /// ```
    pub fn python(script: impl Into<String>) -> Task {
        Task::with(Exec::Python {
            script: script.into(),
        })
    }

    /// A Python function task, given as `"package.module:function"`.
    ///
    /// ```
    /// let t = orch::Task::python_fn("stats.summary:mean");
    /// assert_eq!(t.exec, orch::Exec::PythonFn { module: "stats.summary".into(), function: "mean".into() });
    /// ```
    ///
    /// # Panics
    /// When `spec` has no `:` separating module and function; this is a
    /// programming error in the workflow source.
    pub fn python_fn(spec: &str) -> Task {
        let (module, function) = spec
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("python_fn spec `{spec}` must look like `module:function`"));
        Task::with(Exec::PythonFn {
            module: module.to_string(),
            function: function.to_string(),
        })
    }

    /// A plain command task.
    ///
    /// ```
    /// let t = orch::Task::command(["sh", "-c", "echo hello"]);
    /// assert!(matches!(t.exec, orch::Exec::Command { .. }));
    /// ```
    pub fn command<I, S>(argv: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Task::with(Exec::Command {
            argv: argv.into_iter().map(Into::into).collect(),
        })
    }

    /// A task that waits for external input, holding no process: a person
    /// approving, a value from another system.
    ///
    /// ```
    /// let t = orch::Task::input();
    /// assert!(matches!(t.exec, orch::Exec::Input { listen: None }));
    /// ```
    pub fn input() -> Task {
        Task::with(Exec::Input { listen: None })
    }

    /// An input task that also takes the payload of the next event pushed
    /// under `key` while it waits (`orch event push KEY JSON`).
    ///
    /// ```
    /// let t = orch::Task::input_on("orders.approved");
    /// assert_eq!(t.exec, orch::Exec::Input { listen: Some("orders.approved".into()) });
    /// ```
    pub fn input_on(key: impl Into<String>) -> Task {
        Task::with(Exec::Input {
            listen: Some(key.into()),
        })
    }

    /// A task that runs in a container: an image name alone runs the
    /// image's own command; a [`Container`] says what runs and how
    /// (command or Python, env, mounts, working directory, cpu and memory
    /// limits, network: off unless asked for). The engine is Podman or
    /// Docker, whichever the host has, or the one `ORCH_CONTAINER_ENGINE`
    /// or [`crate::Workflow::container_engine`] names; a run whose tasks
    /// need one the host lacks is refused when it registers.
    ///
    /// ```
    /// use orch::model::{Container, Mount};
    /// use orch::{Exec, Task};
    ///
    /// let shell = Task::container(
    ///     Container::new("localhost/orch-busybox")
    ///         .command(["sh", "-c", "echo '{\"orch\": 1, \"seq\": 1, \"type\": \"output\", \"value\": 42}'"])
    ///         .env("GREETING", "hello")
    ///         .mount(Mount::bind("/srv/data", "/data").read_only())
    ///         .cpus(1.0)
    ///         .memory(128 << 20),
    /// )
    /// .timeout(std::time::Duration::from_secs(60));
    /// let Exec::Container(c) = &shell.exec else { unreachable!() };
    /// assert_eq!(c.image, "localhost/orch-busybox");
    /// assert!(!c.network);
    ///
    /// let py = Task::container(Container::new("localhost/orch-python").python_fn("stats:mean"));
    /// assert_eq!(py.exec.kind(), "container");
    /// // Just an image: its own command runs.
    /// assert_eq!(Task::container("localhost/tool"), Task::container(Container::new("localhost/tool")));
    /// ```
    pub fn container(spec: impl Into<Container>) -> Task {
        Task::with(Exec::Container(Box::new(spec.into())))
    }

    /// Sets the task name (default: the node id).
    pub fn named(mut self, name: impl Into<String>) -> Task {
        self.name = name.into();
        self
    }

    /// Kills an attempt (with its process group) after `d`.
    pub fn timeout(mut self, d: Duration) -> Task {
        self.timeout = Some(d.as_secs_f64());
        self
    }

    /// Tries a failed attempt again up to `n` times.
    pub fn retries(mut self, n: u32) -> Task {
        self.retries = n;
        self
    }

    /// Waits `d` before the first retry, twice as long before each next
    /// one (exponential backoff, at most an hour).
    ///
    /// ```
    /// let t = orch::Task::python("flaky.py").retries(3).retry_delay(std::time::Duration::from_secs(2));
    /// assert_eq!(t.backoff(1), std::time::Duration::from_secs(2));
    /// assert_eq!(t.backoff(3), std::time::Duration::from_secs(8));
    /// ```
    pub fn retry_delay(mut self, d: Duration) -> Task {
        self.retry_delay = Some(d.as_secs_f64());
        self
    }

    /// Declares that the task produces an output: an attempt that exits 0
    /// without sending one fails.
    ///
    /// ```
    /// let t = orch::Task::python("report.py").requires_output();
    /// assert!(t.output_required);
    /// ```
    pub fn requires_output(mut self) -> Task {
        self.output_required = true;
        self
    }

    /// Declares what an attempt needs of its machine.
    pub fn requires(mut self, needs: Resources) -> Task {
        self.requires = Some(Box::new(needs));
        self
    }

    /// Declares the files a successful attempt leaves (relative paths,
    /// in the folder tasks run in): a missing one fails the attempt, and
    /// the export lists the ones produced with their sizes.
    ///
    /// ```
    /// let t = orch::Task::command(["sh", "-c", "date > stamp.txt"]).produces(["stamp.txt"]);
    /// assert_eq!(t.produces, ["stamp.txt"]);
    /// ```
    pub fn produces<I, S>(mut self, paths: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.produces = paths.into_iter().map(Into::into).collect();
        self
    }

    /// How long to wait before retrying after failed attempt number
    /// `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_delay.unwrap_or(0.0).max(0.0);
        let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((base * factor).min(3600.0))
    }
}

/// Names an edge by its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeRef {
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
}

/// One change to the graph. The graph only grows: there is no removal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    /// Adds a node. References to outputs inside `inputs` imply edges.
    AddNode {
        /// Unique id within the run.
        id: String,
        /// What runs (boxed: a `Mutation` is as large as its largest
        /// variant, and most mutations of a big workflow are edges).
        task: Box<Task>,
        /// JSON inputs, possibly with `{"$output": "X"}` references.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        inputs: Value,
        /// Cosmetic attributes.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        attrs: Attrs,
    },
    /// Adds the edge `from -> to`: `to` runs after `from` succeeded.
    AddEdge {
        /// Source node id.
        from: String,
        /// Target node id.
        to: String,
        /// Cosmetic attributes.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        attrs: Attrs,
    },
    /// Merges cosmetic attributes into a node (`node`) or an edge (`edge`).
    SetAttrs {
        /// The node, when the target is a node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        /// The edge, when the target is an edge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edge: Option<EdgeRef>,
        /// Attributes to merge (a `null` value removes the key).
        attrs: Attrs,
    },
    /// Declares a promise about every future batch.
    AddPromise {
        /// The promise.
        promise: crate::promise::Promise,
    },
    /// Declares a rule: a batch committed once, when its predicate holds
    /// (see [`Rule`]).
    AddRule {
        /// The rule (boxed: it holds a whole batch).
        rule: Box<Rule>,
    },
    /// Declares a loop: iterations of its body added as batches with
    /// origin `loop:<id>` until its exit condition holds (see [`Loop`]).
    AddLoop {
        /// The loop (boxed: it holds the body's tasks).
        #[serde(rename = "loop")]
        def: Box<Loop>,
    },
}

impl Mutation {
    /// `add_node` of `id` running `task`, with no inputs or attributes.
    ///
    /// ```
    /// use orch::{Mutation, Task};
    /// let m = Mutation::add_node("a", Task::python("a.py"));
    /// assert_eq!(m.describe(), "add_node `a`");
    /// ```
    pub fn add_node(id: impl Into<String>, task: Task) -> Mutation {
        Mutation::AddNode {
            id: id.into(),
            task: Box::new(task),
            inputs: Value::Null,
            attrs: Attrs::new(),
        }
    }

    /// `add_edge` `from -> to`, with no attributes.
    ///
    /// ```
    /// use orch::Mutation;
    /// assert_eq!(Mutation::add_edge("a", "b").describe(), "add_edge `a` -> `b`");
    /// ```
    pub fn add_edge(from: impl Into<String>, to: impl Into<String>) -> Mutation {
        Mutation::AddEdge {
            from: from.into(),
            to: to.into(),
            attrs: Attrs::new(),
        }
    }

    /// A short human description used in error messages, e.g.
    /// `add_edge A -> B`.
    pub fn describe(&self) -> String {
        match self {
            Mutation::AddNode { id, .. } => format!("add_node `{id}`"),
            Mutation::AddEdge { from, to, .. } => format!("add_edge `{from}` -> `{to}`"),
            Mutation::SetAttrs { node: Some(n), .. } => format!("set_attrs on node `{n}`"),
            Mutation::SetAttrs { edge: Some(e), .. } => {
                format!("set_attrs on edge `{}` -> `{}`", e.from, e.to)
            }
            Mutation::SetAttrs { .. } => "set_attrs".to_string(),
            Mutation::AddPromise { promise } => format!("add_promise `{promise}`"),
            Mutation::AddRule { rule } => format!("add_rule `{}`", rule.id),
            Mutation::AddLoop { def } => format!("add_loop `{}`", def.id),
        }
    }
}

/// Where a batch came from.
///
/// ```
/// let o = orch::Origin::Rule { rule: "merge".into() };
/// assert_eq!(o.to_string(), "rule:merge");
/// assert_eq!(serde_json::to_value(&o).unwrap(), serde_json::json!({"by": "rule", "rule": "merge"}));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// The registration batch.
    Registration,
    /// The attempt of a node's task.
    Attempt {
        /// The node whose task sent the batch.
        node: String,
        /// The attempt number (from 1).
        attempt: u32,
    },
    /// The body of a rule that fired.
    Rule {
        /// The rule's id.
        rule: String,
    },
    /// An iteration of a loop, or its exit, decided by a node's output.
    Loop {
        /// The loop's id.
        id: String,
        /// The node (the body's last step of the iteration before) whose
        /// output decided the batch.
        after: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Registration => f.write_str("registration"),
            Origin::Attempt { node, attempt } => write!(f, "{node}#{attempt}"),
            Origin::Rule { rule } => write!(f, "rule:{rule}"),
            Origin::Loop { id, .. } => write!(f, "loop:{id}"),
        }
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $var),* }

        impl $name {
            /// The plain string used in exports and the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$var),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }
    };
}

string_enum! {
    /// The state of a node (SPEC §3).
    NodeState {
        /// Waiting for predecessors.
        Pending => "pending",
        /// Every predecessor succeeded; waits for a free slot.
        Ready => "ready",
        /// An attempt is running.
        Running => "running",
        /// Waiting for external input, no process held.
        Waiting => "waiting",
        /// Finished successfully.
        Succeeded => "succeeded",
        /// Failed for good (retries exhausted).
        Failed => "failed",
        /// Cancelled before it could finish.
        Cancelled => "cancelled",
        /// Never started: a node upstream of it failed for good and the
        /// run keeps going ([`FailurePolicy::KeepGoing`]).
        UpstreamFailed => "upstream_failed",
    }
}

impl NodeState {
    /// True before the node's first attempt started (`pending`, `ready`):
    /// only such nodes may receive new edges.
    pub fn not_started(self) -> bool {
        matches!(self, NodeState::Pending | NodeState::Ready)
    }

    /// True for `succeeded`, `failed`, `cancelled` and `upstream_failed`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeState::Succeeded
                | NodeState::Failed
                | NodeState::Cancelled
                | NodeState::UpstreamFailed
        )
    }
}

string_enum! {
    /// The status of a run (SPEC §3).
    RunStatus {
        /// Tasks are being started.
        Running => "running",
        /// No new task starts; running ones finish.
        Paused => "paused",
        /// Every node succeeded.
        Succeeded => "succeeded",
        /// A node failed for good.
        Failed => "failed",
        /// A batch broke a promise.
        PromiseBroken => "promise_broken",
        /// Cancelled by a person or a program.
        Cancelled => "cancelled",
    }
}

impl RunStatus {
    /// True once the run can no longer change by itself.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running | RunStatus::Paused)
    }
}

string_enum! {
    /// How an attempt ended.
    AttemptOutcome {
        /// Exit code 0, batch committed.
        Succeeded => "succeeded",
        /// Non-zero exit, protocol error or rejected batch.
        Failed => "failed",
        /// Killed after its timeout.
        TimedOut => "timed_out",
        /// Killed by the orchestrator (cancel, shutdown).
        Killed => "killed",
    }
}

/// Builds the reference `{"$output": node}` to the output of `node`; used
/// inside inputs, it implies the edge `node -> consumer`.
///
/// ```
/// let r = orch::output("A");
/// assert_eq!(r, serde_json::json!({"$output": "A"}));
/// ```
pub fn output(node: &str) -> Value {
    serde_json::json!({ "$output": node })
}

/// Builds a reference to a part of `node`'s output, selected by a JSON
/// pointer (RFC 6901).
///
/// ```
/// let r = orch::output_at("A", "/items/0");
/// assert_eq!(r, serde_json::json!({"$output": "A", "pointer": "/items/0"}));
/// ```
pub fn output_at(node: &str, pointer: &str) -> Value {
    serde_json::json!({ "$output": node, "pointer": pointer })
}

/// One output reference found inside inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRef {
    /// The referenced node.
    pub node: String,
    /// The JSON pointer into its output (empty: the whole output).
    pub pointer: String,
}

/// Collects the output references inside `inputs` (objects in key order).
///
/// An object with the key `$output` is a reference; it may have `pointer`
/// and nothing else. A malformed reference is an error naming it.
pub fn output_refs(inputs: &Value) -> Result<Vec<OutputRef>, String> {
    let mut out = Vec::new();
    collect_refs(inputs, &mut out)?;
    Ok(out)
}

fn collect_refs(v: &Value, out: &mut Vec<OutputRef>) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            if let Some(target) = map.get("$output") {
                let node = target
                    .as_str()
                    .ok_or_else(|| format!("reference {v}: `$output` must be a node id string"))?;
                let pointer = match map.get("pointer") {
                    None => String::new(),
                    Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => p.clone(),
                    Some(p) => {
                        return Err(format!(
                            "reference {v}: `pointer` must be a JSON pointer string like \"/a/0\", got {p}"
                        ))
                    }
                };
                if let Some(extra) = map.keys().find(|k| *k != "$output" && *k != "pointer") {
                    return Err(format!("reference {v}: unexpected key `{extra}`"));
                }
                out.push(OutputRef {
                    node: node.to_string(),
                    pointer,
                });
                return Ok(());
            }
            map.values().try_for_each(|x| collect_refs(x, out))
        }
        Value::Array(items) => items.iter().try_for_each(|x| collect_refs(x, out)),
        _ => Ok(()),
    }
}

/// Replaces every output reference in `inputs` with the value it names.
/// `lookup` returns the output of a node. The result nests at most
/// [`MAX_JSON_DEPTH`](crate::limits::MAX_JSON_DEPTH) levels, like every
/// value a task sends or receives: an output placed deep inside inputs
/// could otherwise make a start message no task can read.
///
/// ```
/// use serde_json::json;
/// let deep = (0..40).fold(json!(1), |v, _| json!([v]));
/// let inputs = (0..30).fold(orch::output("A"), |v, _| json!([v]));
/// let err = orch::model::resolve_refs(&inputs, &|_| Some(deep.clone())).unwrap_err();
/// assert!(err.contains("deeper than 64 levels"), "{err}");
/// ```
pub fn resolve_refs(
    inputs: &Value,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Result<Value, String> {
    let resolved = resolve(inputs, lookup)?;
    crate::limits::check_value(&resolved)
        .map_err(|e| format!("the inputs with their references resolved: {e}"))?;
    Ok(resolved)
}

fn resolve(inputs: &Value, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
    match inputs {
        Value::Object(map) if map.contains_key("$output") => {
            let r = output_refs(inputs)?.remove(0);
            let whole =
                lookup(&r.node).ok_or_else(|| format!("node `{}` has no output", r.node))?;
            if r.pointer.is_empty() {
                Ok(whole)
            } else {
                whole.pointer(&r.pointer).cloned().ok_or_else(|| {
                    format!(
                        "output of `{}` has nothing at pointer `{}`",
                        r.node, r.pointer
                    )
                })
            }
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), resolve(v, lookup)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| resolve(v, lookup))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// Refuses a parameter value holding an object with a `$output` or
/// `$param` key: a value put in place of a parameter is data, and must not
/// become a reference to another node's output (or to a parameter).
///
/// ```
/// use serde_json::json;
/// assert!(orch::model::check_param_value(&json!({"a": [1, "x"]})).is_ok());
/// assert!(orch::model::check_param_value(&json!({"a": {"$output": "secret"}})).is_err());
/// ```
pub fn check_param_value(value: &Value) -> Result<(), String> {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > crate::limits::MAX_JSON_DEPTH {
            return Err(format!(
                "it nests deeper than {} levels",
                crate::limits::MAX_JSON_DEPTH
            ));
        }
        match v {
            Value::Object(map) => {
                if let Some(key) = ["$output", "$param"].iter().find(|k| map.contains_key(**k)) {
                    return Err(format!(
                        "it holds a `{key}` object: a parameter's value is data, not a reference"
                    ));
                }
                stack.extend(map.values().map(|x| (x, depth + 1)));
            }
            Value::Array(items) => stack.extend(items.iter().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// `value` with each `{"$param": "name"}` replaced by that parameter of
/// `params`; an unknown name is an error naming it. Bounded like every
/// value a run keeps (see [`crate::limits`]).
///
/// ```
/// use serde_json::json;
/// let params = json!({"day": "2026-01-01"});
/// let filled = orch::model::fill_params(&json!({"d": {"$param": "day"}, "n": 1}), params.as_object().unwrap());
/// assert_eq!(filled.unwrap(), json!({"d": "2026-01-01", "n": 1}));
/// assert!(orch::model::fill_params(&json!({"$param": "nope"}), params.as_object().unwrap()).is_err());
/// ```
pub fn fill_params(value: &Value, params: &Map<String, Value>) -> Result<Value, String> {
    fn go(v: &Value, params: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        if depth > crate::limits::MAX_JSON_DEPTH {
            return Err(format!(
                "values nest deeper than {} levels",
                crate::limits::MAX_JSON_DEPTH
            ));
        }
        Ok(match v {
            Value::Object(map) if map.contains_key("$param") => {
                match (map.get("$param"), map.len()) {
                    (Some(Value::String(name)), 1) => params
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("`$param` names `{name}`, which is no parameter"))?,
                    _ => return Err(format!("{v} must look like {{\"$param\": \"name\"}}")),
                }
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, x)| Ok((k.clone(), go(x, params, depth + 1)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| go(x, params, depth + 1))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    go(value, params, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_json_shape() {
        let t = Task::python("a.py").named("A");
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"name": "A", "kind": "python", "script": "a.py"})
        );
        let back: Task =
            serde_json::from_value(json!({"kind": "command", "argv": ["true"]})).unwrap();
        assert_eq!(back.name, "");
    }

    #[test]
    fn refs_are_found_and_resolved() {
        let inputs = json!({"x": [output("A"), {"y": output_at("B", "/k")}], "z": 1});
        let refs = output_refs(&inputs).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].pointer, "/k");
        let resolved = resolve_refs(&inputs, &|n| match n {
            "A" => Some(json!(1)),
            "B" => Some(json!({"k": "v"})),
            _ => None,
        })
        .unwrap();
        assert_eq!(resolved, json!({"x": [1, {"y": "v"}], "z": 1}));
    }

    #[test]
    fn malformed_refs_are_named() {
        let err = output_refs(&json!({"$output": 3})).unwrap_err();
        assert!(err.contains("must be a node id"), "{err}");
        let err = output_refs(&json!({"$output": "A", "other": 1})).unwrap_err();
        assert!(err.contains("unexpected key `other`"), "{err}");
    }

    #[test]
    fn states_round_trip_as_strings() {
        for s in [
            "pending",
            "ready",
            "running",
            "waiting",
            "succeeded",
            "failed",
            "cancelled",
            "upstream_failed",
        ] {
            assert_eq!(s.parse::<NodeState>().unwrap().as_str(), s);
        }
        assert_eq!(RunStatus::PromiseBroken.to_string(), "promise_broken");
    }
}
