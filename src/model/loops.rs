//! Loops: a cycle in the definition, unrolled at run time (SPEC §10).
//!
//! A [`Loop`] is plain data, like a rule: a body (one step or a sub-chain
//! of steps), the node it starts after (`from`), the node that runs after
//! its last iteration (`to`), an exit condition on the output of the
//! body's last step ([`Until`]) and a bound on the iterations. The run's
//! graph stays acyclic: iteration `k` of step `s` is the ordinary node
//! `s#k`, added by a batch with origin `loop:<id>` when iteration `k - 1`
//! succeeded without meeting the exit condition, and the region between
//! `from` and `to` is promised to be `chain(body, 1, max)`. How the next
//! batch is decided is in [`crate::loops`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attrs, Mutation, Task};
use crate::limits::{
    check_len, MAX_LOOP_ITERATIONS, MAX_LOOP_STEPS, MAX_NAME_BYTES, MAX_PATTERN_BYTES,
};
use crate::promise::shape::Shape;
use crate::promise::Promise;

/// One step of a loop's body: a node template. Iteration `k` of step `s`
/// is the node `s#k`.
///
/// Inside `inputs`:
/// - `{"$previous": POINTER}` is the output of the previous iteration's
///   last step (of `from` in the first iteration) at the JSON pointer
///   (`""`: all of it), an ordinary output reference once unrolled;
/// - `{"$output": STEP}` (with an optional `pointer`) naming another step
///   of the body is that step in the same iteration;
/// - `{"$iteration": true}` is the iteration's number, from 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoopStep {
    /// The step's id; its node in iteration `k` is `<id>#<k>`.
    pub id: String,
    /// What runs in every iteration.
    pub task: Task,
    /// The inputs of every iteration, with the placeholders above.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub inputs: Value,
    /// Cosmetic attributes of every iteration's node.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attrs: Attrs,
}

impl LoopStep {
    /// A step running `task`, with no inputs.
    ///
    /// ```
    /// use orch::model::LoopStep;
    /// let s = LoopStep::new("refine", orch::Task::python("newton.py"));
    /// assert_eq!(s.node(3), "refine#3");
    /// ```
    pub fn new(id: impl Into<String>, task: Task) -> LoopStep {
        LoopStep {
            id: id.into(),
            task,
            inputs: Value::Null,
            attrs: Attrs::new(),
        }
    }

    /// The same step with these inputs.
    ///
    /// ```
    /// use orch::model::{previous, LoopStep};
    /// let s = LoopStep::new("refine", orch::Task::python("newton.py"))
    ///     .inputs(serde_json::json!({"x": previous("/x")}));
    /// assert_eq!(s.inputs["x"], serde_json::json!({"$previous": "/x"}));
    /// ```
    pub fn inputs(mut self, inputs: Value) -> LoopStep {
        self.inputs = inputs;
        self
    }

    /// The same step with this cosmetic attribute on every iteration.
    ///
    /// ```
    /// use orch::model::LoopStep;
    /// let s = LoopStep::new("refine", orch::Task::python("n.py")).attr("color", "blue");
    /// assert_eq!(s.attrs["color"], "blue");
    /// ```
    pub fn attr(mut self, key: &str, value: impl Into<Value>) -> LoopStep {
        self.attrs.insert(key.to_string(), value.into());
        self
    }

    /// The id of this step's node in iteration `k` (from 1).
    pub fn node(&self, k: u32) -> String {
        format!("{}#{k}", self.id)
    }
}

/// `{"$previous": pointer}`: in a loop step's inputs, the previous
/// iteration's output (the output of `from` in the first iteration) at
/// the JSON pointer (`""`: the whole output).
///
/// ```
/// assert_eq!(orch::model::previous(""), serde_json::json!({"$previous": ""}));
/// ```
pub fn previous(pointer: &str) -> Value {
    serde_json::json!({ "$previous": pointer })
}

/// `{"$iteration": true}`: in a loop step's inputs, the iteration's
/// number, from 1.
///
/// ```
/// assert_eq!(orch::model::iteration(), serde_json::json!({"$iteration": true}));
/// ```
pub fn iteration() -> Value {
    serde_json::json!({ "$iteration": true })
}

/// When a loop exits: a test of the output of the body's last step at a
/// JSON pointer. With no comparison, the value there must be `true`.
///
/// ```
/// use orch::model::Until;
/// let u = Until::at("/done");
/// assert!(u.holds(&serde_json::json!({"done": true})));
/// assert!(!u.holds(&serde_json::json!({"done": false})));
/// let close = Until::below("/delta", 1e-9);
/// assert!(close.holds(&serde_json::json!({"delta": 1e-12})));
/// assert_eq!(close.to_string(), "/delta < 0.000000001");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Until {
    /// The JSON pointer into the output (`""`: the whole output).
    #[serde(default = "default_at")]
    pub at: String,
    /// Exits when the value there equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// Exits when the value there is a number below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Exits when the value there is a number above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
}

fn default_at() -> String {
    "/done".to_string()
}

impl Default for Until {
    /// `/done = true`.
    fn default() -> Until {
        Until::at("/done")
    }
}

impl Until {
    /// Exits when the output's value at `pointer` is `true`.
    pub fn at(pointer: &str) -> Until {
        Until {
            at: pointer.to_string(),
            equals: None,
            below: None,
            above: None,
        }
    }

    /// Exits when the output's value at `pointer` equals `value`.
    ///
    /// ```
    /// let u = orch::model::Until::equals("/status", "converged");
    /// assert!(u.holds(&serde_json::json!({"status": "converged"})));
    /// ```
    pub fn equals(pointer: &str, value: impl Into<Value>) -> Until {
        Until {
            equals: Some(value.into()),
            ..Until::at(pointer)
        }
    }

    /// Exits when the output's value at `pointer` is a number below
    /// `bound`.
    pub fn below(pointer: &str, bound: f64) -> Until {
        Until {
            below: Some(bound),
            ..Until::at(pointer)
        }
    }

    /// Exits when the output's value at `pointer` is a number above
    /// `bound`.
    ///
    /// ```
    /// assert!(orch::model::Until::above("/score", 0.9).holds(&serde_json::json!({"score": 0.95})));
    /// ```
    pub fn above(pointer: &str, bound: f64) -> Until {
        Until {
            above: Some(bound),
            ..Until::at(pointer)
        }
    }

    /// True when `output` meets the condition. A missing value, or a
    /// value of the wrong type, does not.
    pub fn holds(&self, output: &Value) -> bool {
        let Some(v) = output.pointer(&self.at) else {
            return false;
        };
        match (&self.equals, self.below, self.above) {
            (Some(want), ..) => v == want,
            (None, Some(b), _) => v.as_f64().is_some_and(|x| x < b),
            (None, None, Some(a)) => v.as_f64().is_some_and(|x| x > a),
            (None, None, None) => v == &Value::Bool(true),
        }
    }

    /// A pointer that is one, and at most one comparison.
    pub fn check(&self) -> Result<(), String> {
        if !(self.at.is_empty() || self.at.starts_with('/')) {
            return Err(format!(
                "`until.at` must be a JSON pointer like \"/done\", got {:?}",
                self.at
            ));
        }
        check_len("pointer", &self.at, MAX_PATTERN_BYTES, "MAX_PATTERN_BYTES")?;
        let n = [
            self.equals.is_some(),
            self.below.is_some(),
            self.above.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err("`until` takes at most one of `equals`, `below`, `above`".into());
        }
        if self.below.is_some_and(|b| !b.is_finite()) || self.above.is_some_and(|a| !a.is_finite())
        {
            return Err("`until`'s bound must be a finite number".into());
        }
        Ok(())
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.at.is_empty() {
            "output"
        } else {
            &self.at
        };
        match (&self.equals, self.below, self.above) {
            (Some(v), ..) => write!(f, "{at} = {v}"),
            (None, Some(b), _) => write!(f, "{at} < {b}"),
            (None, None, Some(a)) => write!(f, "{at} > {a}"),
            (None, None, None) => write!(f, "{at} = true"),
        }
    }
}

/// What happens when the last allowed iteration succeeds without meeting
/// the exit condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnCap {
    /// The run fails, with an error naming the loop and its bound.
    #[default]
    Fail,
    /// The loop exits as if the condition held: `to` runs.
    Exit,
}

/// A loop: `body` runs after `from`, again and again, until the output of
/// its last step meets `until` or `max` iterations ran; then `to` runs.
///
/// ```
/// use orch::model::{previous, Loop, LoopStep, Until};
/// use orch::{Task, Workflow};
///
/// let mut wf = Workflow::new("sqrt2");
/// wf.node("start", Task::python("start.py"));
/// wf.node("report", Task::python("report.py"));
/// let refine = LoopStep::new("refine", Task::python("newton.py"))
///     .inputs(serde_json::json!({"x": previous("/x")}));
/// let l = Loop::new("newton", "start", "report", Until::at("/done"), 10).step(refine);
/// assert_eq!(l.to_string(), "loop newton: refine until /done = true, at most 10");
/// wf.add_loop(l);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Loop {
    /// Unique among the run's loops; the origin of its batches is
    /// `loop:<id>`.
    pub id: String,
    /// The node the first iteration runs after.
    pub from: String,
    /// The node that runs after the last iteration.
    pub to: String,
    /// The body: steps one after another.
    pub body: Vec<LoopStep>,
    /// When the loop exits (tested on the output of the body's last step).
    #[serde(default)]
    pub until: Until,
    /// The most iterations (1 ..= [`MAX_LOOP_ITERATIONS`]).
    pub max: u32,
    /// What the bound does when it is reached without `until` holding.
    #[serde(default, skip_serializing_if = "is_fail")]
    pub on_cap: OnCap,
}

fn is_fail(o: &OnCap) -> bool {
    *o == OnCap::Fail
}

impl Loop {
    /// A loop with an empty body (add steps with [`Loop::step`]).
    pub fn new(
        id: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
        until: Until,
        max: u32,
    ) -> Loop {
        Loop {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            body: Vec::new(),
            until,
            max,
            on_cap: OnCap::Fail,
        }
    }

    /// Appends a step to the body (after the steps before it).
    pub fn step(mut self, s: LoopStep) -> Loop {
        self.body.push(s);
        self
    }

    /// The same loop with this behaviour at the bound.
    ///
    /// ```
    /// use orch::model::{Loop, OnCap, Until};
    /// let l = Loop::new("l", "a", "b", Until::default(), 3).on_cap(OnCap::Exit);
    /// assert_eq!(l.on_cap, OnCap::Exit);
    /// ```
    pub fn on_cap(mut self, on_cap: OnCap) -> Loop {
        self.on_cap = on_cap;
        self
    }

    /// The body's last step, whose output `until` tests.
    pub fn last(&self) -> Option<&LoopStep> {
        self.body.last()
    }

    /// The shape of the region between `from` and `to`:
    /// `chain(seq(steps…), 1, max)`, each step matched by its nodes' ids
    /// (`<step>#*`).
    ///
    /// ```
    /// use orch::model::{Loop, LoopStep, Until};
    /// let l = Loop::new("l", "a", "b", Until::default(), 5)
    ///     .step(LoopStep::new("s", orch::Task::python("s.py")));
    /// assert_eq!(l.shape().to_string(), "\"s#*\"→{1,5}");
    /// ```
    pub fn shape(&self) -> Shape {
        let steps: Vec<Shape> = self
            .body
            .iter()
            .map(|s| Shape::task(&format!("{}#*", s.id)))
            .collect();
        let one = match steps.len() {
            1 => steps.into_iter().next().expect("one step"),
            _ => Shape::Seq(steps),
        };
        Shape::chain(one, 1, Some(self.max))
    }

    /// The `shape` promise the loop keeps: the region between `from` and
    /// `to` is `chain(body, 1, max)`.
    pub fn promise(&self) -> Promise {
        Promise::shape(&self.from, &self.to, self.shape())
    }

    /// The loop's declaration with its first iteration, as a batch: the
    /// nodes of iteration 1 wired after `from`, the `shape` promise, and
    /// `add_loop`. What [`crate::Workflow::add_loop`] registers.
    ///
    /// ```
    /// use orch::model::{Loop, LoopStep, Until};
    /// let l = Loop::new("l", "a", "b", Until::default(), 5)
    ///     .step(LoopStep::new("s", orch::Task::python("s.py")));
    /// let d: Vec<String> = l.declaration().iter().map(|m| m.describe()).collect();
    /// assert_eq!(d, ["add_node `s#1`", "add_edge `a` -> `s#1`", "add_promise `shape(a, b, \"s#*\"→{1,5})`", "add_loop `l`"]);
    /// ```
    pub fn declaration(&self) -> Vec<Mutation> {
        let mut out = crate::loops::iteration(self, 1);
        out.push(Mutation::AddPromise {
            promise: self.promise(),
        });
        out.push(Mutation::AddLoop {
            def: Box::new(self.clone()),
        });
        out
    }

    /// What can be checked without a graph: ids, 1 to
    /// [`MAX_LOOP_STEPS`] steps with distinct ids, `until`, a bound of 1
    /// to [`MAX_LOOP_ITERATIONS`], well-formed placeholders.
    ///
    /// ```
    /// use orch::model::{Loop, LoopStep, Until};
    /// let l = Loop::new("l", "a", "b", Until::default(), 5000)
    ///     .step(LoopStep::new("s", orch::Task::python("s.py")));
    /// assert!(l.check().unwrap_err().contains("MAX_LOOP_ITERATIONS"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        let name = |what: &str, s: &str| -> Result<(), String> {
            if s.is_empty() {
                return Err(format!("the {what} is empty"));
            }
            check_len(what, s, MAX_NAME_BYTES, "MAX_NAME_BYTES")?;
            if let Some(c) = s.chars().find(|c| c.is_control() || *c == '"') {
                return Err(format!("the {what} {s:?} contains the character {c:?}"));
            }
            Ok(())
        };
        name("loop id", &self.id)?;
        let at = |e: String| format!("loop `{}`: {e}", self.id);
        name("node id `from`", &self.from).map_err(at)?;
        name("node id `to`", &self.to).map_err(at)?;
        if self.from == self.to {
            return Err(at(format!("`from` and `to` are both `{}`", self.from)));
        }
        if self.body.is_empty() {
            return Err(at("the body has no step".into()));
        }
        if self.body.len() > MAX_LOOP_STEPS {
            return Err(at(format!(
                "the body has {} steps, more than {MAX_LOOP_STEPS} (MAX_LOOP_STEPS)",
                self.body.len()
            )));
        }
        if self.max == 0 || self.max > MAX_LOOP_ITERATIONS {
            return Err(at(format!(
                "`max` is {}, it must be 1 to {MAX_LOOP_ITERATIONS} (MAX_LOOP_ITERATIONS)",
                self.max
            )));
        }
        self.until.check().map_err(at)?;
        for (k, s) in self.body.iter().enumerate() {
            // The longest node id an iteration makes must fit too.
            name("step id", &format!("{}#{MAX_LOOP_ITERATIONS}", s.id)).map_err(at)?;
            if s.id.contains(['*', '?', '[', '#']) {
                return Err(at(format!(
                    "step id {:?} may not contain `*`, `?`, `[` or `#`",
                    s.id
                )));
            }
            if self.body[..k].iter().any(|o| o.id == s.id) {
                return Err(at(format!("two steps are named `{}`", s.id)));
            }
            crate::loops::placeholders(self, k, &s.inputs)
                .map_err(|e| at(format!("step `{}`: {e}", s.id)))?;
        }
        Ok(())
    }
}

impl fmt::Display for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body: Vec<&str> = self.body.iter().map(|s| s.id.as_str()).collect();
        write!(
            f,
            "loop {}: {} until {}, at most {}",
            self.id,
            body.join(" → "),
            self.until,
            self.max
        )
    }
}
