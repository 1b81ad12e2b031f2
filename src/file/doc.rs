//! The workflow file format as serde types: what a YAML or JSON file
//! holds, before it is compiled into a [`Definition`](crate::model::Definition).
//! The JSON Schema (`orch schema`) is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

/// A workflow file: its name, parameters, promises and tasks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "orch workflow file")]
pub struct WorkflowDoc {
    /// The workflow's name (runs are listed under it).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the workflow does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// When the scheduler starts runs: cron with 6 fields (seconds first,
    /// `"0 0 * * * *"`) or 5 (`"*/15 * * * *"`), or `@hourly`, `@daily`, ….
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// The IANA time zone of the schedule (default `UTC`), e.g.
    /// `Europe/Berlin`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// Run the fire times missed while no scheduler ran (default: only
    /// the next one).
    #[serde(default)]
    pub catchup: bool,
    /// At most this many runs of the workflow at once (scheduled or
    /// backfilled); a fire time waits while as many run.
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Event keys that start a run (`orch event push KEY JSON`, the
    /// payload's fields as parameters), while a scheduler reads the file.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub events: Vec<Spanned<String>>,
    /// Run parameters: each has a default value, or must be given when the
    /// run starts (`orch run FILE --param name=value`). Tasks read them in
    /// their inputs as `{"$param": "name"}`, and commands as `{{name}}`
    /// inside an argument.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDoc>,
    /// Promises about the run's future (see docs/promises.md), e.g.
    /// `{"no_new_nodes": {}}` or
    /// `{"shape": {"from": "split", "to": "join", "shape": "M*"}}`.
    #[serde(default)]
    #[schemars(with = "Vec<Value>")]
    pub promises: Vec<Spanned<Value>>,
    /// Rules (see docs/rules.md): when a rule's predicate holds, its
    /// tasks are added once, e.g. a merge that runs after the last PDF
    /// producer that can ever exist.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Loops (see docs/loops.md): a body that runs after `from`, again
    /// and again, until its output meets `until` or `max` iterations ran;
    /// then `to` runs.
    #[serde(default)]
    pub loops: Vec<LoopDoc>,
    /// Keep going when a task fails for good: what does not depend on it
    /// runs to the end (default: stop starting tasks at the first failure).
    #[serde(default)]
    pub keep_going: bool,
    /// How many tasks may run at once (default 1).
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// The tasks, in any order: `after` says what runs before what.
    pub tasks: Vec<TaskDoc>,
}

/// A rule: `id`, `when` (a predicate) and `then` (tasks, added once
/// when the predicate holds).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// The rule's id, unique among the workflow's rules; its batch is
    /// recorded with origin `rule:<id>`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The predicate: `{"closed": PATTERN}` (no more nodes the pattern
    /// selects can appear), `{"count": {"pattern": PATTERN, "at_least":
    /// N, "state"?: STATE}}`, `{"state": {"node": ID, "is": STATE}}`, or
    /// `{"all": [PREDICATE, …]}`.
    #[schemars(with = "Value")]
    pub when: Spanned<Value>,
    /// The tasks it adds, like the file's `tasks`; their `after` may name
    /// the file's tasks, and in their inputs `{"$collect": PATTERN}` is the
    /// list of the outputs of every node the pattern selects when the rule
    /// fires.
    pub then: Vec<TaskDoc>,
}

/// A loop: `id`, `from`, `to`, `body` (tasks run one after another in
/// every iteration), `until` and `max`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopDoc {
    /// The loop's id, unique among the workflow's loops; its batches are
    /// recorded with origin `loop:<id>`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The task the first iteration runs after.
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    /// The task that runs after the last iteration.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    /// The body: tasks written like the file's `tasks`, run one after
    /// another in this order in every iteration (`after` is not used);
    /// iteration k of task `s` is the node `s#k`. In their inputs,
    /// `{"$previous": "/x"}` is the previous iteration's output (of `from`
    /// in the first) at a JSON pointer, `{"$iteration": true}` the
    /// iteration's number, and `{"$output": STEP}` an earlier step of the
    /// same iteration.
    pub body: Vec<TaskDoc>,
    /// The exit condition on the output of the body's last task:
    /// `{"at": "/done"}` (the value there is `true`; the default), with
    /// `equals: VALUE`, `below: N` or `above: N` to compare instead.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub until: Option<Spanned<Value>>,
    /// The most iterations (1 to 1000, `orch::limits::MAX_LOOP_ITERATIONS`).
    #[schemars(with = "u32")]
    pub max: Spanned<u32>,
    /// At the bound without `until` holding: `fail` (the default: the run
    /// fails naming the loop) or `exit` (`to` runs).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_cap: Option<crate::model::OnCap>,
}

/// A run parameter: `name: {default: …, description: …}`, or `name:
/// {}` for one that must be given.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamDoc {
    /// The value when the run is started without one.
    #[serde(default)]
    pub default: Option<Value>,
    /// What it means, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// A task: an `id` and exactly one of `python`, `python_fn`, `command`,
/// `input`, `parallel`, `each` or `workflow` (`container` runs the first
/// three, or the image's own command, in a container).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDoc {
    /// The node id, unique in the workflow (sugar adds nodes named after
    /// it: `ID[0]`, `ID.each`, `PARENT.ID`).
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// The task name promises and pictures use (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// A Python script, relative to the file's folder.
    #[serde(default)]
    pub python: Option<String>,
    /// A Python function, `module:function` (the module importable from
    /// the file's folder); it is called with the inputs as keyword
    /// arguments and returns the output.
    #[serde(default)]
    pub python_fn: Option<String>,
    /// A program and its arguments (a list), or a shell command line (a
    /// string, run with `sh -c`).
    #[serde(default)]
    pub command: Option<CommandDoc>,
    /// Runs the task in a container: an image name, or `{image, env,
    /// mounts, workdir, cpus, memory, network, pull}`. With `command`,
    /// `python` or `python_fn` that runs in it; alone, the image's own
    /// command runs.
    #[serde(default)]
    pub container: Option<ContainerDoc>,
    /// `true`: no process; the node waits for a value (`orch input`).
    #[serde(default)]
    pub input: Option<bool>,
    /// With `input: true`: the node also takes the payload of an event
    /// pushed under this key while it waits.
    #[serde(default)]
    pub listen: Option<String>,
    /// Tasks that run side by side; `after: [ID]` waits for all of them.
    #[serde(default)]
    pub parallel: Option<Vec<TaskDoc>>,
    /// A fan-out decided while the run runs: one copy of `task` per item
    /// of a list.
    #[serde(default)]
    pub each: Option<Box<EachDoc>>,
    /// Another workflow file (relative to this one) whose tasks run here,
    /// their ids prefixed with `ID.`.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Parameters for the sub-workflow of `workflow`.
    #[serde(default)]
    pub params: Option<BTreeMap<String, Value>>,
    /// Ids of tasks that must succeed before this one starts.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub after: Vec<Spanned<String>>,
    /// The task's inputs (a JSON object); `{"$output": "ID"}` is the
    /// output of task ID (and implies `after: [ID]`), `{"$param": "p"}`
    /// a run parameter.
    #[serde(default)]
    pub inputs: Option<Value>,
    /// How many times a failed attempt is tried again.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Seconds (or `"30s"`, `"5m"`, `"1h"`) before the first retry; each
    /// further one waits twice as long.
    #[serde(default)]
    pub retry_delay: Option<DurationDoc>,
    /// Seconds (or `"30s"`, `"5m"`, `"1h"`) an attempt may run.
    #[serde(default)]
    pub timeout: Option<DurationDoc>,
    /// Fail an attempt that exits 0 without sending an output.
    #[serde(default)]
    pub output_required: Option<bool>,
    /// Files a successful attempt leaves in the run's folder (relative
    /// paths): a missing one fails the attempt; the export lists them.
    #[serde(default)]
    pub produces: Vec<String>,
    /// What an attempt needs of its machine: `cpu` (cores), `memory`
    /// (bytes, or `"512M"`, `"4G"`), `gpu`, `labels`.
    #[serde(default)]
    pub requires: Option<RequiresDoc>,
    /// Cosmetic attributes (`label`, `color`, `shape`, `tooltip`).
    #[serde(default)]
    pub attrs: Option<serde_json::Map<String, Value>>,
    /// Tasks that run before this one, in order.
    #[serde(default)]
    pub pre: Vec<TaskDoc>,
    /// Tasks that run after this one, in order; tasks that run `after`
    /// this one wait for them too.
    #[serde(default)]
    pub post: Vec<TaskDoc>,
}

/// A program with its arguments, or a shell command line.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum CommandDoc {
    /// `["program", "arg", …]` (numbers and booleans are taken as their
    /// text: `[sleep, 1]`, `[true]`).
    Argv(Vec<String>),
    /// `"a shell command line"`, run with `sh -c`.
    Shell(String),
}

impl<'de> Deserialize<'de> for CommandDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CommandDoc, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CommandDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of program and arguments, or a shell command line")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandDoc, E> {
                Ok(CommandDoc::Shell(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CommandDoc, A::Error> {
                let mut argv = Vec::new();
                while let Some(Arg(a)) = seq.next_element()? {
                    argv.push(a);
                }
                Ok(CommandDoc::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// One argument: text, or an integer or boolean taken as its text.
struct Arg(String);

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Arg;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an argument (text, an integer or a boolean)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Arg, E> {
                Err(E::custom(format!(
                    "the argument {v} is a number that may not keep its text: write it in quotes"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A container: an image name, or the image with what the container
/// gets.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum ContainerDoc {
    /// `"localhost/orch-busybox"`: the image, with no network and nothing
    /// mounted.
    Image(String),
    /// The image with env, mounts, working directory, limits, network.
    Spec(ContainerSpecDoc),
}

impl<'de> Deserialize<'de> for ContainerDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ContainerDoc, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ContainerDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an image name, or a map with `image` and the container's settings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ContainerDoc, E> {
                Ok(ContainerDoc::Image(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ContainerDoc, A::Error> {
                ContainerSpecDoc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ContainerDoc::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// A container's settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpecDoc {
    /// The image (`localhost/orch-python`, `python:3.12-slim`).
    pub image: String,
    /// Environment variables of the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host paths bound into the container; a relative `source` is
    /// relative to the file's folder.
    #[serde(default)]
    pub mounts: Vec<MountDoc>,
    /// The working directory in the container (absolute).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Cores the container may use.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory the container may use: bytes, or a number with `K`, `M`,
    /// `G` or `T` (powers of 1024).
    #[serde(default)]
    pub memory: Option<DurationDoc>,
    /// `true`: the container gets the engine's default network (default:
    /// none, only loopback).
    #[serde(default)]
    pub network: bool,
    /// When the engine pulls the image: `missing` (default), `never`,
    /// `always`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pull: Option<crate::model::Pull>,
}

/// A host path bound into a container.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountDoc {
    /// The host path (relative: to the file's folder).
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
    /// The container may only read it.
    #[serde(default)]
    pub read_only: bool,
}

/// What a task needs of the machine it runs on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiresDoc {
    /// Cores.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory: bytes, or a number with `K`, `M`, `G` or `T` (powers of
    /// 1024).
    #[serde(default)]
    pub memory: Option<DurationDoc>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<u32>,
    /// Labels the machine must have.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A duration: seconds, or a number with a unit (`ms`, `s`, `m`, `h`).
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum DurationDoc {
    /// Seconds.
    Seconds(f64),
    /// `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
    Text(String),
}

impl<'de> Deserialize<'de> for DurationDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DurationDoc, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration: seconds, or text like \"30s\", \"5m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationDoc, E> {
                Ok(DurationDoc::Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationDoc, E> {
                Ok(DurationDoc::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationDoc, E> {
                Ok(DurationDoc::Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationDoc, E> {
                Ok(DurationDoc::Seconds(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// `each`: one copy of `task` per item of `items`, decided when the task
/// runs. Each copy gets the item as its input `item` and its position as
/// `index`; the task `ID` itself gathers their outputs into a list, in
/// order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EachDoc {
    /// The list: literal, `{"$output": "ID"}` or `{"$param": "p"}`.
    pub items: Value,
    /// What runs for each item: a task of one node (`python`,
    /// `python_fn` or `command`). Its `id` is the copies' task name (what
    /// promises and pictures see); the copies' node ids are `ID[0]`,
    /// `ID[1]`, … after the `each` task's id.
    pub task: TaskDoc,
    /// At most this many items (more fail the fan-out).
    #[serde(default)]
    pub max: Option<u32>,
}
