use std::any::Any;

use super::*;
use crate::typed::Call;

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
    fn take(task: &str, inputs: &mut Value, name: &str) -> std::result::Result<Self::T, Failure> {
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
pub fn task_def<T: TaskDef>(retries: u32, timeout: Option<f64>, retry_delay: Option<f64>) -> Task {
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

#[cfg(test)]
mod tests {
    use super::*;

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
