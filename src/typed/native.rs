//! Native Rust tasks: what `#[orch::task]` generates code against, the
//! registry of a binary's tasks and types, and *task mode*.
//!
//! A native task runs as a subprocess like every other task: the
//! orchestrator starts the workflow binary itself again with
//! `ORCH_NATIVE_TASK=<task name>` in its environment. Each `#[task]` adds a
//! constructor that runs before `main` (and before libtest's `main` under
//! `cargo test`); in such a child, the constructor of the named task
//! clears the variable, speaks the JSON-lines protocol on stdio (the same
//! as Python tasks, `docs/protocol.md`), and exits. `main` never runs in a
//! child, so a workflow program cannot start itself again by accident.
//!
//! In the orchestrating process the same constructors fill a registry:
//! task names with their input fields and output types, used to check the
//! inputs of nodes added at run time and the outputs of typed Python tasks
//! (`docs/typed.md`).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::exec::protocol::{Start, VERSION};
use crate::model::{output_refs, Task};
use crate::promise::Promise;
use crate::typed::{Call, Node};

pub use crate::exec::NATIVE_TASK_ENV as TASK_ENV;

/// A typed task definition. `#[orch::task]` implements it for a marker
/// type named like the function; you do not implement it by hand.
///
/// ```
/// use orch::native::TaskDef;
///
/// /// Squares a number.
/// #[orch::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// assert_eq!(<square as TaskDef>::NAME, "square");
/// assert_eq!(<square as TaskDef>::fields()[0].name, "x");
/// assert_eq!(square(3), 9); // the function itself is unchanged
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an orch task",
    label = "not a `#[orch::task]`",
    note = "annotate a function with `#[orch::task]`: the type named like the function implements `TaskDef`"
)]
pub trait TaskDef: 'static {
    /// The stable task name: the function name unless renamed with
    /// `#[task(name = "...")]`. Promises and pictures use it.
    const NAME: &'static str;
    /// Whether the task can change the graph: only a task that takes a
    /// [`Context`] can. Workflows promise that the others never do
    /// (`no_new_nodes` and `no_new_edges` by the task), so the picture
    /// draws no possible growth after them.
    const GROWS: bool;
    /// What the task returns (the `T` of a `Result<T, E>`).
    type Output: crate::typed::TaskValue;
    /// The task as the graph stores it, options applied.
    fn task() -> Task;
    /// The input fields: the function's arguments, in order.
    fn fields() -> &'static [Field];
    /// Runs the body in task mode: deserialises each argument from
    /// `inputs` and serialises the result.
    fn invoke(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure>;

    /// Serialises an output.
    #[doc(hidden)]
    fn encode(output: Self::Output) -> std::result::Result<Value, Failure> {
        crate::typed::TaskValue::__orch_to_json(&output)
            .map_err(|e| Failure::terminal(format!("the output does not serialise to JSON: {e}")))
    }
}

/// One input field of a native task: an argument of its function.
#[derive(Clone, Copy)]
pub struct Field {
    /// The argument name.
    pub name: &'static str,
    /// The argument's Rust type, as `std::any::type_name` spells it.
    pub type_name: fn() -> &'static str,
    /// Checks that a JSON value deserialises into the argument's type.
    pub check: fn(&Value) -> std::result::Result<(), String>,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, short_type_name((self.type_name)()))
    }
}

/// Why a native task failed: its error's message, and whether retries may
/// try again. Return `Err(Failure::terminal(..))` from a task to fail
/// without retrying; any other error converts into a retryable failure
/// (failures are retryable unless said otherwise).
///
/// ```
/// use orch::native::Failure;
///
/// #[orch::task]
/// fn check(n: i64) -> Result<i64, Failure> {
///     if n < 0 {
///         return Err(Failure::terminal(format!("{n} is negative")));
///     }
///     let parsed: i64 = "42".parse()?; // any std error converts, retryable
///     Ok(n + parsed)
/// }
/// assert_eq!(check(1).unwrap(), 43);
/// assert!(!check(-1).unwrap_err().retry);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// Whether retries may try again.
    pub retry: bool,
}

impl Failure {
    /// A failure that retries may try again.
    pub fn retryable(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure that ends the node however many retries are left.
    pub fn terminal(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::retryable(e.to_string())
    }
}

/// The orchestrator-side record of a native task.
#[derive(Clone, Copy)]
struct Registered {
    name: &'static str,
    module: &'static str,
    fields: &'static [Field],
}

type Checker = fn(&Value) -> std::result::Result<(), String>;

static TASKS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static TYPES: Mutex<BTreeMap<&'static str, Checker>> = Mutex::new(BTreeMap::new());
/// Task names defined twice in this binary: (name, first module, second).
static CLASHES: Mutex<Vec<(&'static str, &'static str, &'static str)>> = Mutex::new(Vec::new());

/// Registers a task in this process, or, when this process was started in
/// task mode for this task (or for a built-in task), runs it and exits.
/// Called by the constructor `#[task]` generates.
pub(crate) fn register<T: TaskDef>(module: &'static str) {
    if let Some(asked) = std::env::var_os(TASK_ENV) {
        if asked == T::NAME {
            task_mode(T::NAME, T::invoke);
        }
        if let Some((name, invoke)) = BUILTINS.iter().find(|(n, _)| asked == *n) {
            task_mode(name, *invoke);
        }
        // Another constructor may claim it; if none does, `run` refuses.
    }
    let mut tasks = lock(&TASKS);
    if let Some(first) = tasks.iter().find(|t| t.name == T::NAME) {
        let clash = (T::NAME, first.module, module);
        lock(&CLASHES).push(clash);
    }
    tasks.push(Registered {
        name: T::NAME,
        module,
        fields: T::fields(),
    });
    drop(tasks);
    register_type::<T::Output>();
}

/// Makes `T` known by name, so values declared to be a `T` can be checked.
pub(crate) fn register_type<T: crate::typed::TaskValue>() -> &'static str {
    let name = std::any::type_name::<T>();
    register_checker(name, T::__orch_check);
    name
}

/// Makes the type named `name` known with its checker.
pub(crate) fn register_checker(name: &'static str, check: Checker) {
    lock(&TYPES).insert(name, check);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `std::any::type_name` without module paths: `Vec<u64>` for
/// `alloc::vec::Vec<u64>`.
///
/// ```
/// assert_eq!(orch::native::short_type_name("alloc::vec::Vec<(u64, alloc::string::String)>"), "Vec<(u64, String)>");
/// ```
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word.rsplit("::").next().unwrap_or(word));
        word.clear();
    };
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Why this process must not orchestrate: it was started in task mode but
/// no task of this binary claimed the run (no fork bomb), or two tasks of
/// this binary share a name (a child could run the wrong one).
pub(crate) fn refuse_task_mode() -> Result<()> {
    if let Some(&(name, first, second)) = lock(&CLASHES).first() {
        return Err(Error::DuplicateTask {
            name: name.to_string(),
            first: first.to_string(),
            second: second.to_string(),
        });
    }
    match std::env::var(TASK_ENV) {
        Ok(task) => {
            let mut known: Vec<&str> = lock(&TASKS).iter().map(|t| t.name).collect();
            known.sort_unstable();
            Err(Error::UnknownNativeTask {
                task,
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            })
        }
        Err(_) => Ok(()),
    }
}

/// Checks a node's inputs against its task's declared input types, as far
/// as they are known before the node runs: literal values must deserialise
/// into their field's type; a reference to a node whose task declares an
/// output type must name the same type. `output_type_of` gives a node's
/// declared output type. Errors name the field.
pub(crate) fn check_inputs(
    task: &Task,
    inputs: &Value,
    output_type_of: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    if let crate::model::Exec::Native { task: name } = &task.exec {
        if BUILTINS.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let tasks = lock(&TASKS);
        if tasks.is_empty() {
            // Not the workflow binary (the `orch` CLI resuming a run):
            // nothing is known here; the child checks when it starts.
            return Ok(());
        }
        let Some(reg) = tasks.iter().find(|t| t.name == name).copied() else {
            let mut known: Vec<&str> = tasks.iter().map(|t| t.name).collect();
            known.sort_unstable();
            return Err(format!(
                "this binary defines no native task `{name}` (its tasks: {})",
                known.join(", ")
            ));
        };
        drop(tasks);
        return check_fields(&reg, inputs, output_type_of);
    }
    match &task.input_type {
        // Only declared types are checked: an untyped node's inputs are
        // never walked.
        Some(type_name) if !has_refs(inputs) => check_typed(type_name, inputs, "inputs"),
        _ => Ok(()),
    }
}

/// Checks inputs whose references are resolved (the node is starting).
pub(crate) fn check_resolved_inputs(
    task: &Task,
    inputs: &Value,
) -> std::result::Result<(), String> {
    check_inputs(task, inputs, &|_| None)
}

/// Checks an output against the task's declared output type.
pub(crate) fn check_output(task: &Task, output: &Value) -> std::result::Result<(), String> {
    match &task.output_type {
        Some(type_name) => check_typed(type_name, output, "the output"),
        None => Ok(()),
    }
}

fn check_typed(type_name: &str, value: &Value, what: &str) -> std::result::Result<(), String> {
    let checker = lock(&TYPES).get(type_name).copied();
    match checker {
        Some(check) => check(value).map_err(|e| {
            format!(
                "{what} {} is not a `{}`: {e}",
                abbreviate(value),
                short_type_name(type_name)
            )
        }),
        None => Ok(()),
    }
}

fn check_fields(
    reg: &Registered,
    inputs: &Value,
    output_type_of: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(), String> {
    let takes = || {
        reg.fields
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let empty = Map::new();
    let map = match inputs {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(format!(
                "task `{}` takes named inputs ({}), not {}",
                reg.name,
                takes(),
                abbreviate(other)
            ))
        }
    };
    if let Some(extra) = map
        .keys()
        .find(|k| !reg.fields.iter().any(|f| f.name == k.as_str()))
    {
        return Err(format!(
            "task `{}` has no input `{extra}`; it takes {}",
            reg.name,
            takes()
        ));
    }
    for f in reg.fields {
        let want = (f.type_name)();
        let Some(value) = map.get(f.name) else {
            return Err(format!(
                "input `{}` of task `{}` is missing (a `{}`)",
                f.name,
                reg.name,
                short_type_name(want)
            ));
        };
        if value.get("$output").is_some() {
            let Ok(refs) = output_refs(value) else {
                continue; // the graph reports malformed references
            };
            let r = &refs[0];
            if r.pointer.is_empty() {
                if let Some(have) = output_type_of(&r.node) {
                    if have != want {
                        return Err(format!(
                            "input `{}` of task `{}` is a `{}`, but node `{}` produces a `{}`",
                            f.name,
                            reg.name,
                            short_type_name(want),
                            r.node,
                            short_type_name(&have)
                        ));
                    }
                }
            }
            continue;
        }
        if has_refs(value) {
            continue;
        }
        (f.check)(value).map_err(|e| {
            format!(
                "input `{}` of task `{}` must be a `{}`: {e} (got {})",
                f.name,
                reg.name,
                short_type_name(want),
                abbreviate(value)
            )
        })?;
    }
    Ok(())
}

fn has_refs(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$output") || m.values().any(has_refs),
        Value::Array(a) => a.iter().any(has_refs),
        _ => false,
    }
}

fn abbreviate(v: &Value) -> String {
    crate::exec::protocol::quote(&v.to_string())
}

// ---------------------------------------------------------------------------
// Task mode: the child side.

type Invoke = fn(&mut Context, Value) -> std::result::Result<Value, Failure>;

/// Runs one attempt of a native task in this (child) process and exits.
fn task_mode(name: &str, invoke: Invoke) -> ! {
    // The marker goes before any task code runs: nothing this process
    // starts inherits it.
    std::env::remove_var(TASK_ENV);
    // As a Rust `main` would: a closed pipe is an error, not a signal.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = match Context::connect() {
        Ok(mut ctx) => ctx.run(name, invoke),
        Err(e) => {
            eprintln!("orch: native task `{name}` cannot start: {e}");
            2
        }
    };
    std::process::exit(code)
}

/// What a running native task can do: read where it runs, add nodes,
/// edges and promises to the graph (they commit with the attempt's output,
/// as one batch), and log. A task gets one by taking `ctx: &mut
/// orch::Context` as its first argument.
///
/// ```
/// use orch::Context;
///
/// #[orch::task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Adds one `square` node per number, at run time.
/// #[orch::task]
/// fn fan_out(ctx: &mut Context, n: u64) -> orch::Result<Vec<String>> {
///     let mut ids = Vec::new();
///     for i in 0..n {
///         ids.push(ctx.add(square::call(i))?.id().to_string());
///     }
///     Ok(ids)
/// }
/// ```
pub struct Context {
    start: Start,
    reader: Box<dyn BufRead + Send>,
    writer: Box<dyn Write + Send>,
    seq: u64,
    added: BTreeMap<String, usize>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("run", &self.start.run)
            .field("node", &self.start.node)
            .field("attempt", &self.start.attempt)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Takes over stdio the way the Python helper does: the protocol goes
    /// through private copies of fds 0 and 1; fd 0 becomes `/dev/null` and
    /// fd 1 a copy of fd 2, so `println!` (and any child process) writes to
    /// the log and can never corrupt or steal the protocol.
    fn connect() -> std::io::Result<Context> {
        use std::os::fd::FromRawFd;
        let os = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        // The protocol moves to private, close-on-exec copies of fds 0 and
        // 1, so nothing the task starts inherits them. fd 0 becomes
        // /dev/null (a child reading stdin gets EOF, never the replies),
        // fd 1 a copy of fd 2 (the attempt's log).
        // SAFETY: fcntl/open/dup2 on the standard descriptors; each new
        // descriptor is owned by exactly one File below.
        let (proto_in, proto_out) = unsafe {
            let proto_in = os(libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3))?;
            let proto_out = os(libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3))?;
            let null = os(libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY))?;
            os(libc::dup2(null, 0))?;
            if null != 0 {
                libc::close(null);
            }
            os(libc::dup2(2, 1))?;
            (
                std::fs::File::from_raw_fd(proto_in),
                std::fs::File::from_raw_fd(proto_out),
            )
        };
        let writer = proto_out;
        let mut reader = std::io::BufReader::new(proto_in);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let start: Start = serde_json::from_str(line.trim()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the first line on stdin is not a start message ({e}): {}",
                    crate::exec::protocol::quote(line.trim())
                ),
            )
        })?;
        Ok(Context {
            start,
            reader: Box::new(reader),
            writer: Box::new(std::io::BufWriter::new(writer)),
            seq: 0,
            added: BTreeMap::new(),
        })
    }

    fn run(&mut self, name: &str, invoke: Invoke) -> i32 {
        let inputs = std::mem::take(&mut self.start.inputs);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| invoke(self, inputs)));
        // The exit code says what happened, as for a Python task (whose
        // `fail` exits with 1) and a Rust program (101 after a panic).
        let (sent, code) = match result {
            Ok(Ok(value)) => (self.send("output", json!({ "value": value })), 0),
            Ok(Err(f)) => (
                self.send("fail", json!({ "message": f.message, "retry": f.retry })),
                1,
            ),
            Err(panic) => {
                let message = panic_message(&*panic);
                let sent = self.send(
                    "fail",
                    json!({ "message": format!("native task `{name}` panicked: {message}"), "retry": true }),
                );
                (sent, 101)
            }
        };
        match sent {
            Ok(()) => code,
            Err(e) => {
                eprintln!("orch: native task `{name}`: {e}");
                code.max(1)
            }
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.start.run
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.start.node
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.start.attempt
    }

    /// The output of each direct predecessor, by node id.
    pub fn upstream(&self) -> &Map<String, Value> {
        &self.start.upstream
    }

    /// Adds a node running a native task, with an id made from this node's
    /// id and the task name (`<node>.<task>[<k>]`). The node joins this
    /// attempt's batch; its inputs are checked against the task's types
    /// before the orchestrator accepts it.
    pub fn add<T: TaskDef>(&mut self, call: Call<T>) -> Result<Node<T::Output>> {
        let k = self.added.entry(T::NAME.to_string()).or_insert(0);
        let id = format!("{}.{}[{}]", self.start.node, T::NAME, k);
        *k += 1;
        self.add_as(&id, call)
    }

    /// Adds a node with the given id (see [`Context::add`]).
    pub fn add_as<T: TaskDef>(&mut self, id: &str, call: Call<T>) -> Result<Node<T::Output>> {
        let (inputs, attrs, after) = call.into_parts();
        self.add_node(id, T::task(), Value::Object(inputs), attrs)?;
        for from in after {
            self.edge(&from, id)?;
        }
        Ok(Node::new(id))
    }

    /// Adds a node running any task (untyped): a Python script, a command,
    /// a native task by name.
    pub fn add_node(
        &mut self,
        id: &str,
        task: Task,
        inputs: Value,
        attrs: Map<String, Value>,
    ) -> Result<()> {
        self.send(
            "add_node",
            json!({ "id": id, "task": task, "inputs": inputs, "attrs": attrs }),
        )
    }

    /// Adds the edge `from -> to`.
    pub fn edge(&mut self, from: &str, to: &str) -> Result<()> {
        self.send("add_edge", json!({ "from": from, "to": to }))
    }

    /// Declares a promise about every later batch.
    pub fn promise(&mut self, promise: Promise) -> Result<()> {
        self.send("promise", json!({ "promise": promise }))
    }

    /// Writes a structured line to the attempt's log.
    pub fn log(&mut self, message: impl fmt::Display) -> Result<()> {
        self.send(
            "log",
            json!({ "message": message.to_string(), "level": "info" }),
        )
    }

    fn send(&mut self, kind: &str, mut fields: Value) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let what = match kind {
            "add_node" => format!("add_node `{}`", fields["id"].as_str().unwrap_or("?")),
            "add_edge" => format!(
                "add_edge `{}` -> `{}`",
                fields["from"].as_str().unwrap_or("?"),
                fields["to"].as_str().unwrap_or("?")
            ),
            other => other.to_string(),
        };
        let obj = fields
            .as_object_mut()
            .expect("protocol fields are an object");
        obj.insert("orch".into(), json!(VERSION));
        obj.insert("type".into(), json!(kind));
        obj.insert("seq".into(), json!(seq));
        let broken = |message: String| Error::Refused {
            what: what.clone(),
            message,
        };
        let mut line = serde_json::to_string(&fields).map_err(|e| broken(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|e| broken(format!("cannot write to the orchestrator: {e}")))?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(0) => return Err(broken("the orchestrator closed stdin".into())),
            Ok(_) => {}
            Err(e) => return Err(broken(format!("cannot read the reply: {e}"))),
        }
        let reply: Value = serde_json::from_str(reply.trim())
            .map_err(|e| broken(format!("bad reply ({e}): {}", reply.trim())))?;
        if reply["seq"].as_u64() != Some(seq) {
            return Err(broken(format!("reply out of sequence: {reply}")));
        }
        match reply["type"].as_str() {
            Some("ack") => Ok(()),
            Some("error") => Err(broken(
                reply["message"].as_str().unwrap_or("rejected").to_string(),
            )),
            _ => Err(broken(format!("bad reply: {reply}"))),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

// ---------------------------------------------------------------------------
// Built-in tasks: the run-time halves of the typed map and branch. They
// are ordinary native tasks (one subprocess each) that use the uniform
// primitives: add nodes and edges, read `upstream`.

/// Task names of the built-ins.
pub(crate) const MAP: &str = "orch.map";
pub(crate) const COLLECT: &str = "orch.collect";
pub(crate) const SWITCH: &str = "orch.switch";
pub(crate) const JOIN: &str = "orch.join";

const BUILTINS: [(&str, Invoke); 4] = [
    (MAP, builtin_map),
    (COLLECT, builtin_collect),
    (SWITCH, builtin_switch),
    (JOIN, builtin_join),
];

/// The placeholder a template holds where the mapped item (or the branch
/// value) goes.
pub(crate) const ITEM: &str = "$item";

fn input<T: DeserializeOwned>(inputs: &Value, key: &str) -> std::result::Result<T, Failure> {
    T::deserialize(&inputs[key])
        .map_err(|e| Failure::terminal(format!("built-in input `{key}` is malformed: {e}")))
}

/// A template filled in: the item at each of `items_at`, a reference to
/// the named node at each of `locals_at` (pointers recorded when the
/// template was built, so data elsewhere is never touched).
fn fill(template: &Value, spec: &Value, item: &Value) -> std::result::Result<Value, Failure> {
    let items_at: Vec<String> = input(spec, "items_at")?;
    let locals_at: Vec<(String, String)> = if spec.get("locals_at").is_some() {
        input(spec, "locals_at")?
    } else {
        Vec::new()
    };
    let mut v = template.clone();
    for at in &items_at {
        let slot = v
            .pointer_mut(at)
            .ok_or_else(|| Failure::terminal(format!("template has no slot at `{at}`")))?;
        *slot = item.clone();
    }
    for (at, id) in &locals_at {
        let slot = v
            .pointer_mut(at)
            .ok_or_else(|| Failure::terminal(format!("template has no slot at `{at}`")))?;
        *slot = json!({ "$output": id });
    }
    Ok(v)
}

fn refused(e: Error) -> Failure {
    Failure::terminal(e.to_string())
}

/// `orch.map`: adds one copy of the template per item of `items`, between
/// itself and `to`.
fn builtin_map(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let items: Vec<Value> = input(&inputs, "items")?;
    let task: Task = input(&inputs, "task")?;
    let base: String = input(&inputs, "base")?;
    let to: String = input(&inputs, "to")?;
    let me = ctx.node_id().to_string();
    if items.is_empty() {
        ctx.edge(&me, &to).map_err(refused)?;
    }
    let attrs: Map<String, Value> = input(&inputs, "attrs").unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let id = format!("{base}[{i}]");
        let copy_inputs = fill(&inputs["inputs"], &inputs, item)?;
        ctx.add_node(&id, task.clone(), copy_inputs, attrs.clone())
            .map_err(refused)?;
        ctx.edge(&me, &id).map_err(refused)?;
        ctx.edge(&id, &to).map_err(refused)?;
    }
    Ok(json!(items.len()))
}

/// `orch.collect`: the outputs of the copies `<base>[i]`, in order.
fn builtin_collect(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let base: String = input(&inputs, "base")?;
    let prefix = format!("{base}[");
    let mut found: Vec<(usize, Value)> = ctx
        .upstream()
        .iter()
        .filter_map(|(id, v)| {
            let i = id.strip_prefix(&prefix)?.strip_suffix(']')?.parse().ok()?;
            Some((i, v.clone()))
        })
        .collect();
    found.sort_by_key(|(i, _)| *i);
    Ok(Value::Array(found.into_iter().map(|(_, v)| v).collect()))
}

/// `orch.switch`: adds the nodes of the case whose key equals `value`
/// (or of the default case), between itself and `to`.
fn builtin_switch(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let value = inputs["value"].clone();
    let cases: Vec<Value> = input(&inputs, "cases")?;
    let to: String = input(&inputs, "to")?;
    let chosen = cases
        .iter()
        .find(|c| c.get("key") == Some(&value))
        .or_else(|| cases.iter().find(|c| c.get("key").is_none()))
        .ok_or_else(|| {
            let keys: Vec<String> = cases.iter().map(|c| c["key"].to_string()).collect();
            Failure::terminal(format!(
                "no branch for the value {}: the branches are {}",
                abbreviate(&value),
                keys.join(", ")
            ))
        })?;
    let nodes: Vec<Value> = input(chosen, "nodes")?;
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect();
    // What each node of the case uses or runs after, among the case's.
    let mut deps = Vec::new();
    for n in &nodes {
        let locals: Vec<(String, String)> = input(n, "locals_at")?;
        let after: Vec<String> = input(n, "after")?;
        let mut d: Vec<String> = locals.into_iter().map(|(_, id)| id).collect();
        d.extend(after);
        deps.push(d);
    }
    let used: std::collections::BTreeSet<&String> = deps.iter().flatten().collect();
    let me = ctx.node_id().to_string();
    for ((n, id), d) in nodes.iter().zip(&ids).zip(&deps) {
        let task: Task = input(n, "task")?;
        let attrs: Map<String, Value> = input(n, "attrs").unwrap_or_default();
        ctx.add_node(id, task, fill(&n["inputs"], n, &value)?, attrs)
            .map_err(refused)?;
        if d.is_empty() {
            ctx.edge(&me, id).map_err(refused)?;
        }
        let after: Vec<String> = input(n, "after")?;
        for a in &after {
            ctx.edge(a, id).map_err(refused)?;
        }
    }
    for id in ids.iter().filter(|id| !used.contains(id)) {
        ctx.edge(id, &to).map_err(refused)?;
    }
    Ok(chosen["label"].clone())
}

/// `orch.join`: passes on the output of whichever branch result ran.
fn builtin_join(ctx: &mut Context, inputs: Value) -> std::result::Result<Value, Failure> {
    let results: Vec<String> = input(&inputs, "results")?;
    results
        .iter()
        .find_map(|id| ctx.upstream().get(id).cloned())
        .ok_or_else(|| Failure::terminal("no branch result arrived".to_string()))
}

// ---------------------------------------------------------------------------

/// Support for the code `#[orch::task]` generates. Not a public API: its
/// contents change without notice.
#[doc(hidden)]
pub mod support {
    use super::*;

    pub use serde_json::Value;

    /// Registers `T` (defined in `module`) in this process, or runs it
    /// when this process was started for it (task mode).
    pub fn register<T: TaskDef>(module: &'static str) {
        super::register::<T>(module)
    }

    /// The failure an `Err` of a task becomes: itself when it is a
    /// [`Failure`], else a retryable failure with its message.
    pub fn failure<E: fmt::Display + 'static>(e: E) -> Failure {
        match (&e as &dyn Any).downcast_ref::<Failure>() {
            Some(f) => f.clone(),
            None => Failure::retryable(e.to_string()),
        }
    }

    /// One argument of a task: the generated code names each argument's
    /// type once, here, so a type that cannot be a task value is reported
    /// once, where it is written.
    pub trait Slot {
        /// The argument's type.
        type T: crate::typed::TaskValue;

        /// The type's name, for [`Field::type_name`].
        fn type_name() -> &'static str {
            std::any::type_name::<Self::T>()
        }

        /// Checks a value against the type, for [`Field::check`].
        fn check(value: &Value) -> std::result::Result<(), String> {
            <Self::T as crate::typed::TaskValue>::__orch_check(value)
        }

        /// Takes argument `name` out of the inputs.
        fn take(
            task: &str,
            inputs: &mut Value,
            name: &str,
        ) -> std::result::Result<Self::T, Failure> {
            let v = inputs
                .as_object_mut()
                .and_then(|m| m.remove(name))
                .unwrap_or(Value::Null);
            <Self::T as crate::typed::TaskValue>::__orch_from_json(v).map_err(|e| {
                Failure::terminal(format!(
                    "input `{name}` of task `{task}` must be a `{}`: {e}",
                    short_type_name(std::any::type_name::<Self::T>())
                ))
            })
        }
    }

    /// Runs an async task body on a fresh current-thread runtime.
    pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the native task")
            .block_on(f)
    }

    /// A call from its inputs (used by the generated `call`).
    pub fn call<T: TaskDef>(inputs: Vec<(&'static str, Value)>) -> Call<T> {
        Call::from_inputs(
            inputs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The task value of a definition: a native task named `name`.
    pub fn task(name: &'static str) -> Task {
        Task::native(name).named(name)
    }

    /// The task value of `T`, options applied.
    pub fn task_def<T: TaskDef>(
        retries: u32,
        timeout: Option<f64>,
        retry_delay: Option<f64>,
    ) -> Task {
        let mut t = task(T::NAME);
        t.output_type = Some(std::any::type_name::<T::Output>().into());
        t.retries = retries;
        t.timeout = timeout;
        t.retry_delay = retry_delay;
        t
    }

    /// Makes sure the constructor of the task is linked whenever its
    /// generated functions are.
    pub fn keep<T>(_: &T) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_paths() {
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(
            short_type_name("std::collections::hash::map::HashMap<alloc::string::String, u8>"),
            "HashMap<String, u8>"
        );
        assert_eq!(short_type_name("&str"), "&str");
    }

    #[test]
    fn templates_fill_only_their_slots() {
        let spec = json!({"items_at": ["/x"], "locals_at": [["/y/0", "a"]]});
        // Data that looks like a placeholder or a reference stays data.
        let template = json!({"x": null, "y": [null], "z": {"$item": 1}});
        assert_eq!(
            fill(&template, &spec, &json!(7)).unwrap(),
            json!({"x": 7, "y": [{"$output": "a"}], "z": {"$item": 1}})
        );
    }

    #[test]
    fn failures_keep_their_retry_flag() {
        assert_eq!(
            support::failure(Failure::terminal("no")),
            Failure::terminal("no")
        );
        let e = "x".parse::<u8>().unwrap_err();
        assert!(support::failure(e).retry);
    }
}
