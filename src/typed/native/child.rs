//! Task mode: the child side. The process started for one native task
//! connects to the orchestrator, runs it once and exits.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::exec::protocol::{Start, VERSION};
use crate::model::Task;
use crate::promise::Promise;
use crate::typed::{Call, Node};

use super::{Failure, TaskDef, TASK_ENV};

pub(super) type Invoke = fn(&mut Context, Value) -> std::result::Result<Value, Failure>;

/// Runs one attempt of a native task in this (child) process and exits.
pub(super) fn task_mode(name: &str, invoke: Invoke) -> ! {
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
