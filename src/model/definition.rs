//! A workflow definition: what to run, as plain serde data. How to run it
//! (database, directory, interpreter, parallelism, executor) is separate:
//! [`crate::engine::RunOptions`]. A definition built in Rust and one read
//! from a file are the same type.

use serde::{Deserialize, Serialize};

use super::Mutation;

/// What a run runs: a name and the registration batch (nodes, edges,
/// attributes and promises, in order).
///
/// ```
/// use orch::model::{Definition, Mutation};
/// use orch::Task;
///
/// let def = Definition::new("hello", vec![Mutation::add_node("a", Task::command(["true"]))]);
/// let json = serde_json::to_string(&def).unwrap();
/// assert_eq!(serde_json::from_str::<Definition>(&json).unwrap(), def);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Definition {
    /// The workflow's name.
    pub name: String,
    /// The registration batch.
    #[serde(default)]
    pub registration: Vec<Mutation>,
}

impl Definition {
    /// A definition from its name and registration batch.
    pub fn new(name: impl Into<String>, registration: Vec<Mutation>) -> Definition {
        Definition {
            name: name.into(),
            registration,
        }
    }
}
