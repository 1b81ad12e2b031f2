//! A workflow definition: what to run, as plain serde data. How to run it
//! (database, directory, interpreter, parallelism, executor) is separate:
//! [`crate::engine::RunOptions`]. A definition built in Rust and one read
//! from a file are the same type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// When runs start by themselves: schedule, events, parameters.
    #[serde(default, skip_serializing_if = "Triggers::is_empty")]
    pub triggers: Triggers,
}

/// What starts a workflow's runs besides a direct start, and the
/// parameters a run gets (plain data: the scheduler reads it).
///
/// ```
/// let t = orch::model::Triggers::default();
/// assert!(t.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Triggers {
    /// A cron pattern (6 fields with seconds first, or 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's IANA time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Run the fire times missed while no scheduler ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catchup: bool,
    /// At most this many runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_runs: Option<u32>,
    /// Event keys that start a run, the payload's fields as parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The parameters and their defaults: a run started with others gets
    /// them in place of each `{"$param": "name"}` of its inputs.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
}

impl Triggers {
    /// True when nothing but a direct start runs the workflow.
    pub fn is_empty(&self) -> bool {
        *self == Triggers::default()
    }
}

impl Definition {
    /// A definition from its name and registration batch.
    pub fn new(name: impl Into<String>, registration: Vec<Mutation>) -> Definition {
        Definition {
            name: name.into(),
            registration,
            triggers: Triggers::default(),
        }
    }
}
