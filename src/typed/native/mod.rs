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

use std::fmt;

use serde_json::Value;

use crate::model::Task;

mod builtins;
mod child;
mod registry;

pub(crate) use builtins::{COLLECT, ITEM, JOIN, MAP, SWITCH};
pub use child::Context;
pub use registry::short_type_name;
pub(crate) use registry::{check_inputs, check_output, check_resolved_inputs};
pub(crate) use registry::{refuse_task_mode, register, register_checker, register_type};

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

/// Support for the code `#[orch::task]` generates. Not a public API: its
/// contents change without notice.
#[doc(hidden)]
pub mod support;
