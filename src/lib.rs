//! # orch: workflows that are Rust programs
//!
//! A workflow is a DAG of uniform nodes built with [`Workflow`]; every task
//! runs as a subprocess (a Python script, a Python function, any command)
//! that talks to the orchestrator in JSON lines over stdio and may grow the
//! graph while it runs. Each attempt's mutations form a batch that commits
//! atomically with its output; the whole history lives in SQLite.
//!
//! ```no_run
//! use orch::{Task, Workflow};
//!
//! let mut wf = Workflow::new("pipeline");
//! wf.dir("examples/static_pipeline");
//! wf.node("extract", Task::python("step.py"));
//! wf.node("load", Task::python("step.py")).input("rows", orch::output("extract"));
//! let outcome = wf.run()?;
//! assert!(outcome.succeeded());
//! # Ok::<(), orch::Error>(())
//! ```
//!
//! Tasks can also be typed Rust functions, wired by value and checked by
//! rustc ([`task`], [`typed`], `docs/typed.md`).
//!
//! See `docs/protocol.md` for the task protocol and `docs/concepts.md`
//! for the model.
#![deny(missing_docs)]

extern crate self as orch;

pub mod access;
#[cfg(feature = "client")]
pub mod client;
#[cfg(any(feature = "server", feature = "client"))]
mod digest;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod exec;
#[cfg(feature = "files")]
pub mod file;
pub mod graph;
pub mod history;
pub mod host;
pub mod limits;
pub mod loops;
mod markup;
pub mod model;
pub mod picture;
pub mod promise;
#[cfg(feature = "server")]
pub mod repo;
pub mod rule;
#[cfg(feature = "client")]
pub mod runner;
#[cfg(feature = "client")]
mod runner_files;
#[cfg(feature = "files")]
pub mod schedule;
#[cfg(feature = "files")]
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
pub mod time;
pub mod typed;
pub mod workflow;

pub use exec::protocol;
pub use typed::native;

pub use engine::{Engine, RunHandle, RunOptions};
pub use error::{Error, Result, StructuralError};
pub use history::{Event, EventKind, RunExport, RunState};
pub use model::{
    collect, output, output_at, AttemptOutcome, Attrs, EdgeRef, Exec, Loop, LoopStep, Mutation,
    NodeState, OnCap, Origin, Predicate, Rule, RunStatus, Task, Until,
};
pub use native::{Context, Failure, TaskDef};
/// Turns a function into a typed task: a definition named like the function
/// (implementing [`TaskDef`]) whose `call(..)` takes each argument as a
/// plain value or the `.output()` of a node producing its type, run as a
/// subprocess of the workflow binary (see `docs/typed.md`).
///
/// Options: `name = "..."`, `retries = N`, `timeout = "30s"`,
/// `retry_delay = "2s"`. A first argument `ctx: &mut orch::Context` lets the
/// task grow the graph.
///
/// ```
/// #[orch::task(retries = 2, timeout = "10s")]
/// fn greet(name: String) -> String {
///     format!("hello {name}")
/// }
///
/// let mut wf = orch::Workflow::new("hello");
/// let who = wf.add(greet::call("ada"));
/// wf.add(greet::call(who.output()));
/// assert_eq!(greet("bob".into()), "hello bob"); // the function is unchanged
/// ```
pub use orch_macros::task;
pub use promise::shape::Shape;
pub use promise::Promise;
pub use store::{SqliteStore, Store};
pub use typed::{Branch, Call, Case, IntoInput, Node, Output};
pub use workflow::{EdgeBuilder, NodeBuilder, RunOutcome, Workflow};

/// What `#[orch::task]` expands to calls only this module. Not a public
/// API: its contents change without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::typed::native::support::*;
    pub use crate::typed::native::{Failure, Field, TaskDef};
    pub use crate::typed::{Call, IntoInput};
    pub use crate::{Context, Task};
}

/// Installs a `tracing` subscriber that prints to stderr, filtered by
/// `RUST_LOG` (default `info` for orch), in colour only when stderr is a
/// terminal and `NO_COLOR` is unset. For binaries and examples (the `cli`
/// feature, on by default).
///
/// ```
/// orch::init_tracing();
/// ```
#[cfg(feature = "cli")]
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("orch=info"));
    // Colour only for a person at a terminal: never into a file or a pipe,
    // nor when NO_COLOR asks for none.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Resumes a run whose orchestrator stopped (even by `kill -9`), blocking
/// until it ends: what committed stays committed, attempts that were
/// running are run again under a new attempt number, no batch is applied
/// twice. Refused when the run ended; while another engine owns the run
/// and its lease holds (the owner's process is alive, or another host's
/// lease has not expired); or when a Python script of the registered
/// workflow changed since the run started; the last two unless `force`. `run` may be `latest` or an id prefix.
/// [`Takeover`] does the same with a chosen executor.
///
/// ```no_run
/// let outcome = orch::resume(".orch/orch.db", "latest", false)?;
/// println!("run {} {}", outcome.run, outcome.status);
/// # Ok::<(), orch::Error>(())
/// ```
pub fn resume(db: impl AsRef<std::path::Path>, run: &str, force: bool) -> Result<RunOutcome> {
    Takeover::new(db, run).force(force).resume()
}

/// [`resume`] for async contexts.
pub async fn resume_async(
    db: impl AsRef<std::path::Path>,
    run: &str,
    force: bool,
) -> Result<RunOutcome> {
    Takeover::new(db, run).force(force).resume_async().await
}

/// Restarts `node` and everything downstream of it in a new generation of
/// the graph, then runs the run to the end (blocking). Nodes that the
/// restarted tasks added at run time are retracted from the new
/// generation (they stay in the history and in pictures of earlier
/// moments); the restarted nodes that remain run again; promises are
/// checked again as the new generation grows. See `docs/durability.md`.
/// [`Takeover`] does the same with a chosen executor.
///
/// ```no_run
/// let outcome = orch::restart(".orch/orch.db", "latest", "A", false)?;
/// assert!(outcome.succeeded());
/// # Ok::<(), orch::Error>(())
/// ```
pub fn restart(
    db: impl AsRef<std::path::Path>,
    run: &str,
    node: &str,
    force: bool,
) -> Result<RunOutcome> {
    Takeover::new(db, run).force(force).restart(node)
}

/// An orchestrator taking over a stored run: it [resumes](Takeover::resume)
/// the run or [restarts](Takeover::restart) part of it, like [`resume`] and
/// [`restart`], and sends the attempts to the executor it is given (as
/// [`Workflow::executor`] does for a new run), else to the process
/// executor the run was started with.
///
/// ```no_run
/// use std::sync::Arc;
/// use orch::exec::{AttemptLink, AttemptSpec, Executor, LaunchError};
///
/// /// Starts nothing: every attempt fails to start, saying why.
/// struct Elsewhere;
/// impl Executor for Elsewhere {
///     fn launch(&self, spec: AttemptSpec, _link: AttemptLink) -> Result<Option<u32>, LaunchError> {
///         Err(LaunchError::Refused(format!("`{}` does not run on this machine", spec.id.node)))
///     }
/// }
/// let outcome = orch::Takeover::new(".orch/orch.db", "latest")
///     .executor(Arc::new(Elsewhere))
///     .resume()?;
/// println!("run {} {}", outcome.run, outcome.status);
/// # Ok::<(), orch::Error>(())
/// ```
pub struct Takeover {
    db: std::path::PathBuf,
    run: String,
    force: bool,
    executor: Option<std::sync::Arc<dyn exec::Executor>>,
}

impl Takeover {
    /// The run `run` (an id, a unique prefix of one, or `latest`) of the
    /// database `db`.
    pub fn new(db: impl AsRef<std::path::Path>, run: &str) -> Takeover {
        Takeover {
            db: db.as_ref().to_path_buf(),
            run: run.to_string(),
            force: false,
            executor: None,
        }
    }

    /// Takes over even while another engine owns the run and its lease
    /// holds (that engine is fenced off: it writes nothing more), or when a
    /// Python script changed since the run started.
    pub fn force(mut self, force: bool) -> Takeover {
        self.force = force;
        self
    }

    /// Sends the run's attempts to `executor`.
    pub fn executor(mut self, executor: std::sync::Arc<dyn exec::Executor>) -> Takeover {
        self.executor = Some(executor);
        self
    }

    /// [`resume`], blocking until the run ends.
    pub fn resume(self) -> Result<RunOutcome> {
        block_on(self.resume_async())
    }

    /// [`resume`] for async contexts.
    pub async fn resume_async(self) -> Result<RunOutcome> {
        self.take_over(engine::TakeoverKind::Resume).await
    }

    /// [`restart`] of `node`, blocking until the run ends.
    pub fn restart(self, node: &str) -> Result<RunOutcome> {
        block_on(self.take_over(engine::TakeoverKind::Restart(node.to_string())))
    }

    async fn take_over(self, kind: engine::TakeoverKind) -> Result<RunOutcome> {
        let engine = engine::Engine::open_existing(&self.db)?;
        let handle = engine
            .take_over(&self.run, kind, self.force, self.executor)
            .await?;
        engine::wait_or_stop(&engine, handle).await
    }
}

/// Runs a future to completion on a fresh current-thread tokio runtime:
/// the blocking entry points (`Workflow::run`, `resume`, `restart`).
pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the tokio runtime", e))?
        .block_on(f)
}

/// Hands memory that was freed back to the OS. A registration allocates
/// and frees a lot at once (its JSON, the staging's indices, the rows), on
/// two threads; glibc keeps freed memory in its arenas, and gives a
/// thread's arena back only from its top, so without this the peak RSS of
/// a 100,000-node run held about 70 MiB nobody used (`benches/README.md`).
/// Costs about 5 µs on a small heap; the 100,000-node registration took
/// no longer with it. A no-op off glibc.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // is thread-safe and frees nothing that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
