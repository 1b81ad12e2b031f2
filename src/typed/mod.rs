//! Typed workflows: node handles that carry their output type, calls of
//! `#[orch::task]` functions whose arguments rustc checks, and the typed
//! map and branch built on the uniform primitives (a `repeat` or `alt`
//! shape region filled at run time by a built-in native task).
//!
//! ```no_run
//! use orch::Workflow;
//!
//! #[orch::task]
//! fn numbers(n: u64) -> Vec<u64> {
//!     (1..=n).collect()
//! }
//!
//! #[orch::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[orch::task]
//! fn total(xs: Vec<u64>) -> u64 {
//!     xs.iter().sum()
//! }
//!
//! let mut wf = Workflow::new("squares");
//! let xs = wf.add(numbers::call(10));
//! let squares = wf.map(&xs, square::call);
//! let sum = wf.add(total::call(squares.output()));
//! assert_eq!(sum.id(), "total");
//! let outcome = wf.run()?;
//! assert!(outcome.succeeded());
//! # Ok::<(), orch::Error>(())
//! ```
//!
//! A handle can only be made by adding a node, and a call can only refer
//! to handles, so a static workflow built from handles is acyclic by
//! construction.

pub mod native;

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::model::{Attrs, Task};
use crate::promise::shape::Shape;
use crate::promise::Promise;
use crate::typed::native::{TaskDef, ITEM};
use crate::workflow::{NodeBuilder, Workflow};

/// A type that can be a task's input or output: it travels as JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task input or output",
    label = "not a serde type",
    note = "task arguments and return values travel as JSON between processes: use a type that implements serde's `Serialize` and `Deserialize` (derive both, or pick an owned type such as `String` or `Vec<T>`)"
)]
pub trait TaskValue: Sized {
    /// The value as JSON.
    #[doc(hidden)]
    fn __orch_to_json(&self) -> Result<Value, String>;
    /// The value from JSON.
    #[doc(hidden)]
    fn __orch_from_json(v: Value) -> Result<Self, String>;
    /// Whether JSON deserialises into the type.
    #[doc(hidden)]
    fn __orch_check(v: &Value) -> Result<(), String>;
}

// No supertraits on purpose: a type that is not a serde type then fails
// `TaskValue` as a whole, and rustc reports it once, in the words above.
impl<T: Serialize + DeserializeOwned> TaskValue for T {
    fn __orch_to_json(&self) -> Result<Value, String> {
        serde_json::to_value(self).map_err(|e| e.to_string())
    }

    fn __orch_from_json(v: Value) -> Result<Self, String> {
        T::deserialize(v).map_err(|e| e.to_string())
    }

    fn __orch_check(v: &Value) -> Result<(), String> {
        T::deserialize(v).map(drop).map_err(|e| e.to_string())
    }
}

/// Checks that JSON is an array of `O`s.
fn check_vec<O: TaskValue>(v: &Value) -> Result<(), String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| O::__orch_check(x).map_err(|e| format!("item {i}: {e}"))),
        other => Err(format!(
            "invalid type: {}, expected a sequence",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

/// The output of a node, as an input of another: a reference that the
/// orchestrator resolves when the consuming node starts. `T` is the
/// output's type.
pub struct Output<T> {
    json: Value,
    node: Option<String>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Output<T> {
    fn new(json: Value, node: Option<String>) -> Output<T> {
        Output {
            json,
            node,
            _t: PhantomData,
        }
    }

    /// The node it refers to (none for a map item or a branch value).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The reference as JSON (`{"$output": "<node>"}`).
    pub fn json(&self) -> &Value {
        &self.json
    }
}

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        Output::new(self.json.clone(), self.node.clone())
    }
}

impl<T> fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Output<{}>({})", std::any::type_name::<T>(), self.json)
    }
}

/// Untyped builders take an `Output` as a plain reference.
impl<T> Serialize for Output<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// A node in the graph whose task produces a `T`. Made only by adding a
/// node (so it always refers to a node that exists).
pub struct Node<T> {
    id: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> Node<T> {
    pub(crate) fn new(id: &str) -> Node<T> {
        Node {
            id: id.to_string(),
            _t: PhantomData,
        }
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's output, to wire into another node's input.
    ///
    /// ```
    /// #[orch::task]
    /// fn one() -> u64 { 1 }
    /// #[orch::task]
    /// fn twice(x: u64) -> u64 { 2 * x }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let a = wf.add(one::call());
    /// let b = wf.add(twice::call(a.output()));
    /// assert_eq!(b.id(), "twice");
    /// ```
    pub fn output(&self) -> Output<T> {
        Output::new(crate::model::output(&self.id), Some(self.id.clone()))
    }
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node::new(&self.id)
    }
}

impl<T> fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node<{}>({})", std::any::type_name::<T>(), self.id)
    }
}

/// A value accepted for a task argument of type `T`: a plain `T`, or the
/// output of a node whose task produces a `T`. The generated
/// `my_task::call(..)` takes each argument as `impl IntoInput<ArgType>`,
/// so rustc rejects a mismatched type on the argument itself.
#[diagnostic::on_unimplemented(
    message = "this task argument takes a `{T}`, not a `{Self}`",
    label = "expected a `{T}`, or `.output()` of a node that produces a `{T}`",
    note = "an argument takes a plain value of its type or the output of a node whose task returns exactly that type; check the return type of the node wired in here"
)]
pub trait IntoInput<T> {
    /// The JSON the node's inputs hold for it.
    fn into_input(self) -> Value;
}

impl<T: Serialize> IntoInput<T> for T {
    fn into_input(self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            panic!(
                "a task argument of type `{}` does not serialise to JSON: {e}",
                std::any::type_name::<T>()
            )
        })
    }
}

impl<T> IntoInput<T> for Output<T> {
    fn into_input(self) -> Value {
        self.json
    }
}

impl IntoInput<String> for &str {
    fn into_input(self) -> Value {
        Value::String(self.to_string())
    }
}

/// An invocation of a task: its task and typed inputs, not yet placed in a
/// graph. Add it with [`Workflow::add`] or [`crate::Context::add`].
pub struct Call<T> {
    inputs: Map<String, Value>,
    attrs: Attrs,
    after: Vec<String>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("task", &std::any::type_name::<T>())
            .field("inputs", &self.inputs)
            .field("after", &self.after)
            .finish()
    }
}

impl<T: TaskDef> Call<T> {
    pub(crate) fn from_inputs(inputs: Map<String, Value>) -> Call<T> {
        Call {
            inputs,
            attrs: Attrs::new(),
            after: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Also runs after `node` (an ordering edge, no data).
    ///
    /// ```
    /// #[orch::task]
    /// fn setup() {}
    /// #[orch::task]
    /// fn work(n: u32) -> u32 { n }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let s = wf.add(setup::call());
    /// wf.add(work::call(3).after(&s));
    /// ```
    pub fn after<U>(mut self, node: &Node<U>) -> Self {
        self.after.push(node.id.clone());
        self
    }

    /// Sets a cosmetic attribute of the node (`label`, `color`, …).
    pub fn attr(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(key.to_string(), value.into());
        self
    }

    /// The inputs as JSON (output references included).
    pub fn inputs(&self) -> &Map<String, Value> {
        &self.inputs
    }

    pub(crate) fn into_parts(self) -> (Map<String, Value>, Attrs, Vec<String>) {
        (self.inputs, self.attrs, self.after)
    }
}

/// The placeholder handed to a map's or a branch's template.
fn item<T>() -> Output<T> {
    Output::new(json!({ ITEM: null }), None)
}

impl Workflow {
    /// Adds a node running a typed task, with the task's name as id (made
    /// unique with `_2`, `_3`, …). Returns its typed handle.
    ///
    /// ```
    /// #[orch::task]
    /// fn hello(name: String) -> String { format!("hello {name}") }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let a = wf.add(hello::call("ada"));
    /// let b = wf.add(hello::call(a.output()));
    /// assert_eq!((a.id(), b.id()), ("hello", "hello_2"));
    /// ```
    pub fn add<T: TaskDef>(&mut self, call: Call<T>) -> Node<T::Output> {
        let id = self.fresh_id(T::NAME);
        self.add_as(&id, call)
    }

    /// Adds a node running a typed task, with the given id.
    pub fn add_as<T: TaskDef>(&mut self, id: &str, call: Call<T>) -> Node<T::Output> {
        self.promise_quiet(T::NAME, T::GROWS);
        let (inputs, attrs, after) = call.into_parts();
        self.node(id, T::task())
            .inputs(Value::Object(inputs))
            .attrs(attrs);
        for from in after {
            self.edge(from, id.to_string());
        }
        Node::new(id)
    }

    /// A task that cannot change the graph (it takes no `Context`) is
    /// promised never to: once per task name.
    pub(crate) fn promise_quiet(&mut self, task: &str, grows: bool) {
        if grows || !self.quiet.insert(task.to_string()) {
            return;
        }
        let by = Some(crate::promise::glob::Selector::new(&format!("task:{task}")));
        self.promise(Promise::NoNewNodes { by: by.clone() });
        self.promise(Promise::NoNewEdges { by });
    }

    fn fresh_id(&self, base: &str) -> String {
        if !self.has_id(base) {
            return base.to_string();
        }
        (2..)
            .map(|k| format!("{base}_{k}"))
            .find(|id| !self.has_id(id))
            .expect("some suffix is free")
    }

    /// A **map** over a collection output: one copy of the task `each`
    /// returns per item, side by side, then a node that collects their
    /// outputs, in order, into a `Vec`. `each` gets a placeholder for the
    /// item and may also use other nodes' outputs and plain values.
    ///
    /// Built from the uniform primitives: a built-in native node
    /// (`<task>.each`) that adds the copies `<task>[i]` at run time, a
    /// collecting node (`<task>.all`, returned), and the promise
    /// `shape(<task>.each, <task>.all, <task>*)`.
    ///
    /// ```
    /// #[orch::task]
    /// fn words() -> Vec<String> { vec!["a".into(), "bb".into()] }
    /// #[orch::task]
    /// fn len(w: String) -> usize { w.len() }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let ws = wf.add(words::call());
    /// let lens = wf.map(&ws, len::call); // a Node<Vec<usize>>
    /// assert_eq!(lens.id(), "len.all");
    /// ```
    pub fn map<T, M: TaskDef>(
        &mut self,
        items: &Node<Vec<T>>,
        each: impl FnOnce(Output<T>) -> Call<M>,
    ) -> Node<Vec<M::Output>> {
        let base = self.fresh_id(M::NAME);
        // Reserved, so a later map (or node) of the same task gets `_2`.
        self.reserved.insert(base.clone());
        self.map_as(&base, items, each)
    }

    /// [`Workflow::map`] with the copies named `<base>[i]`.
    pub fn map_as<T, M: TaskDef>(
        &mut self,
        base: &str,
        items: &Node<Vec<T>>,
        each: impl FnOnce(Output<T>) -> Call<M>,
    ) -> Node<Vec<M::Output>> {
        self.promise_quiet(M::NAME, M::GROWS);
        self.promise_quiet(native::COLLECT, false);
        let (inputs, attrs, after) = each(item()).into_parts();
        let t = Template::new(Value::Object(inputs), &BTreeSet::new());
        let expand = format!("{base}.each");
        let collect = format!("{base}.all");
        let task = M::task();
        self.node(&expand, native::support::task(native::MAP))
            .inputs(json!({
                "items": items.output(),
                "task": task,
                "inputs": t.inputs,
                "items_at": t.items_at,
                "attrs": attrs,
                "base": base,
                "to": collect,
            }))
            .label(&format!("map {}", M::NAME));
        for from in after {
            self.edge(from, expand.clone());
        }
        self.node(&collect, collect_task::<M::Output>())
            .input("base", base)
            .label(&format!("collect {}", M::NAME));
        self.promise(Promise::shape(
            &expand,
            &collect,
            Shape::repeat(Shape::task(M::NAME), 0, None),
        ));
        Node::new(&collect)
    }

    /// A **branch** on the value of a node's output: the cases added with
    /// [`Branch::case`] (and [`Branch::otherwise`]) are templates; at run
    /// time exactly one of them is added, the one whose key equals the
    /// value. [`Branch::join`] returns a node that passes on the chosen
    /// case's result.
    ///
    /// Built from the uniform primitives: a built-in native node
    /// (`<on>.switch`) that adds the chosen case, a joining node
    /// (`<on>.join`), and the promise `shape(<on>.switch, <on>.join,
    /// case₁ | case₂ | …)`.
    ///
    /// ```
    /// #[orch::task]
    /// fn coin() -> bool { true }
    /// #[orch::task]
    /// fn heads() -> String { "heads".into() }
    /// #[orch::task]
    /// fn tails(times: u32) -> String { format!("tails {times}") }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let c = wf.add(coin::call());
    /// let result = wf
    ///     .branch(&c)
    ///     .case(true, |b, _| b.add(heads::call()))
    ///     .case(false, |b, _| b.add(tails::call(2)))
    ///     .join(); // a Node<String>
    /// assert_eq!(result.id(), "coin.join");
    /// ```
    pub fn branch<T: Serialize, R>(&mut self, on: &Node<T>) -> Branch<'_, T, R> {
        // A second branch on the same node is named `<on>_2.switch`, ….
        let base = std::iter::once(on.id.clone())
            .chain((2..).map(|k| format!("{}_{k}", on.id)))
            .find(|b| !self.has_id(&format!("{b}.switch")))
            .expect("some suffix is free");
        Branch {
            on: on.id.clone(),
            base,
            wf: self,
            cases: Vec::new(),
            problem: None,
            _t: PhantomData,
        }
    }
}

fn collect_task<O: TaskValue>() -> Task {
    let mut task = native::support::task(native::COLLECT);
    let name = std::any::type_name::<Vec<O>>();
    native::register_checker(name, check_vec::<O>);
    task.output_type = Some(name.into());
    task
}

/// A branch being built; see [`Workflow::branch`]. `T` is the value
/// branched on, `R` what every case produces.
pub struct Branch<'a, T, R> {
    wf: &'a mut Workflow,
    on: String,
    /// The prefix of the switch, the join and the case nodes.
    base: String,
    cases: Vec<CaseTemplate>,
    problem: Option<String>,
    _t: PhantomData<fn(T) -> R>,
}

impl<T, R> fmt::Debug for Branch<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Branch")
            .field("on", &self.on)
            .field("cases", &self.cases.len())
            .finish()
    }
}

struct CaseTemplate {
    key: Option<Value>,
    label: String,
    nodes: Vec<TemplateNode>,
    outside: Vec<String>,
    result: String,
}

struct TemplateNode {
    id: String,
    name: &'static str,
    grows: bool,
    task: Task,
    template: Template,
    attrs: Attrs,
    /// Nodes of the case it runs after, without data.
    after: Vec<String>,
    /// Nodes of the case it uses or runs after.
    deps: Vec<String>,
}

/// One case of a branch being built: add its nodes with [`Case::add`].
pub struct Case {
    prefix: String,
    nodes: Vec<TemplateNode>,
    /// Nodes outside the branch that a node of the case runs after.
    outside: Vec<String>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("prefix", &self.prefix)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Case {
    /// Adds a node to this case. Its inputs may use the branch value,
    /// outputs of earlier nodes of the case, outputs of nodes outside the
    /// branch (resolved when the branch is chosen) and plain values.
    pub fn add<M: TaskDef>(&mut self, call: Call<M>) -> Node<M::Output> {
        let (inputs, attrs, after) = call.into_parts();
        let mut id = format!("{}.{}", self.prefix, M::NAME);
        let mut k = 2;
        while self.nodes.iter().any(|n| n.id == id) {
            id = format!("{}.{}_{k}", self.prefix, M::NAME);
            k += 1;
        }
        let local: BTreeSet<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let template = Template::new(Value::Object(inputs), &local);
        let (after, outside): (Vec<String>, Vec<String>) =
            after.into_iter().partition(|a| local.contains(a));
        // Ordering edges from outside the branch go into the switch, so
        // the case still runs after them and the region stays its shape.
        self.outside.extend(outside);
        let mut deps: Vec<String> = template
            .locals_at
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        deps.extend(after.iter().cloned());
        self.nodes.push(TemplateNode {
            id: id.clone(),
            name: M::NAME,
            grows: M::GROWS,
            task: M::task(),
            template,
            attrs,
            after,
            deps,
        });
        Node::new(&id)
    }
}

/// A node's inputs as a template: the item (or branch value) placeholders
/// and the references to other nodes of the same template are replaced by
/// `null` and remembered by JSON pointer, so that filling the template in
/// touches those places only, whatever the rest of the data holds.
struct Template {
    inputs: Value,
    /// Where the item (or the branch value) goes.
    items_at: Vec<String>,
    /// Where a reference to another node of the template goes, and to
    /// which.
    locals_at: Vec<(String, String)>,
}

impl Template {
    fn new(mut inputs: Value, local: &BTreeSet<String>) -> Template {
        let mut t = Template {
            inputs: Value::Null,
            items_at: Vec::new(),
            locals_at: Vec::new(),
        };
        t.scan(&mut inputs, String::new(), local);
        t.inputs = inputs;
        t
    }

    fn scan(&mut self, v: &mut Value, at: String, local: &BTreeSet<String>) {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key(ITEM) => {
                self.items_at.push(at);
                *v = Value::Null;
            }
            Value::Object(m)
                if m.len() == 1
                    && m.get("$output")
                        .and_then(Value::as_str)
                        .is_some_and(|t| local.contains(t)) =>
            {
                let target = m["$output"].as_str().unwrap_or_default().to_string();
                self.locals_at.push((at, target));
                *v = Value::Null;
            }
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let key = k.replace('~', "~0").replace('/', "~1");
                    self.scan(x, format!("{at}/{key}"), local);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    self.scan(x, format!("{at}/{i}"), local);
                }
            }
            _ => {}
        }
    }
}

impl<T: Serialize, R> Branch<'_, T, R> {
    /// Adds the case taken when the value equals `key`. `build` adds the
    /// case's nodes (a chain, or nodes side by side) and returns the one
    /// whose output is the branch's result.
    pub fn case(self, key: T, build: impl FnOnce(&mut Case, Output<T>) -> Node<R>) -> Self {
        let key = match serde_json::to_value(&key) {
            Ok(k) => k,
            Err(e) => {
                let mut me = self;
                me.problem = Some(format!("a branch key does not serialise to JSON: {e}"));
                return me;
            }
        };
        let label = match &key {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.add_case(Some(key), label, build)
    }

    /// Adds the case taken when no other key matches.
    pub fn otherwise(self, build: impl FnOnce(&mut Case, Output<T>) -> Node<R>) -> Self {
        self.add_case(None, "otherwise".to_string(), build)
    }

    fn add_case(
        mut self,
        key: Option<Value>,
        label: String,
        build: impl FnOnce(&mut Case, Output<T>) -> Node<R>,
    ) -> Self {
        let safe: String = label
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut case = Case {
            prefix: format!("{}.{safe}", self.base),
            nodes: Vec::new(),
            outside: Vec::new(),
        };
        let result = build(&mut case, item());
        if self.cases.iter().any(|c| c.key == key) {
            self.problem = Some(format!(
                "branch on `{}`: the case `{label}` is given twice",
                self.on
            ));
        }
        self.cases.push(CaseTemplate {
            key,
            label,
            nodes: case.nodes,
            outside: case.outside,
            result: result.id,
        });
        self
    }

    /// Finishes the branch: registers the switch, the join and the `alt`
    /// promise; returns the join, whose output is the chosen case's
    /// result.
    pub fn join(self) -> Node<R>
    where
        R: TaskValue,
    {
        let switch = format!("{}.switch", self.base);
        let join = format!("{}.join", self.base);
        let mut problem = self.problem;
        let mut shapes = Vec::new();
        let mut cases = Vec::new();
        let mut results = Vec::new();
        for c in &self.cases {
            match case_shape(c) {
                Ok(s) => shapes.push(s),
                Err(e) => {
                    problem
                        .get_or_insert(format!("branch on `{}`, case `{}`: {e}", self.on, c.label));
                }
            }
            results.push(c.result.clone());
            let mut case = json!({
                "label": c.label,
                "nodes": c.nodes.iter().map(|n| json!({
                    "id": n.id,
                    "task": n.task,
                    "inputs": n.template.inputs,
                    "items_at": n.template.items_at,
                    "locals_at": n.template.locals_at,
                    "after": n.after,
                    "attrs": n.attrs,
                })).collect::<Vec<_>>(),
            });
            if let Some(k) = &c.key {
                case["key"] = k.clone();
            }
            cases.push(case);
        }
        if self.cases.is_empty() {
            problem.get_or_insert(format!("branch on `{}` has no case", self.on));
        }
        let wf = self.wf;
        if let Some(p) = problem {
            wf.problems.push(p);
        }
        wf.promise_quiet(native::JOIN, false);
        for n in self.cases.iter().flat_map(|c| &c.nodes) {
            wf.promise_quiet(n.name, n.grows);
        }
        let on = Node::<T>::new(&self.on);
        wf.node(&switch, native::support::task(native::SWITCH))
            .inputs(json!({"value": on.output(), "cases": cases, "to": join}))
            .label(&format!("branch on {}", self.on));
        let outside: BTreeSet<&String> = self.cases.iter().flat_map(|c| &c.outside).collect();
        for a in outside {
            wf.edge(a.clone(), switch.clone());
        }
        let mut task = native::support::task(native::JOIN);
        task.output_type = Some(native::register_type::<R>().into());
        wf.node(&join, task).input("results", results).label("join");
        wf.promise(Promise::shape(&switch, &join, Shape::alt(shapes)));
        Node::new(&join)
    }
}

/// The shape of a case: one node, a chain, or nodes side by side.
fn case_shape(c: &CaseTemplate) -> Result<Shape, String> {
    if c.nodes.is_empty() {
        return Err("it adds no node".into());
    }
    let sinks: Vec<&TemplateNode> = c
        .nodes
        .iter()
        .filter(|n| !c.nodes.iter().any(|m| m.deps.contains(&n.id)))
        .collect();
    if !sinks.iter().any(|n| n.id == c.result) {
        return Err(format!(
            "its result `{}` must be a node of the case that no other node of the case uses",
            c.result
        ));
    }
    let chain = c.nodes.iter().enumerate().all(|(i, n)| match i {
        0 => n.deps.is_empty(),
        _ => n.deps.iter().all(|d| *d == c.nodes[i - 1].id) && !n.deps.is_empty(),
    });
    if chain {
        return Ok(Shape::seq(c.nodes.iter().map(|n| Shape::task(n.name))));
    }
    if c.nodes.iter().all(|n| n.deps.is_empty()) {
        return Ok(Shape::par(c.nodes.iter().map(|n| Shape::task(n.name))));
    }
    Err("a case is one node, a chain (each node uses the one before), or nodes side by side".into())
}

impl<'a> NodeBuilder<'a> {
    /// Declares the type of the node's output and returns its typed
    /// handle. The orchestrator checks the output against `T` before the
    /// attempt commits (a mismatch fails the attempt, naming the node).
    /// Useful for Python tasks feeding typed ones.
    ///
    /// ```
    /// #[orch::task]
    /// fn total(xs: Vec<u64>) -> u64 { xs.iter().sum() }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// let xs = wf.node("load", orch::Task::python("load.py")).returns::<Vec<u64>>();
    /// wf.add(total::call(xs.output()));
    /// ```
    pub fn returns<T: TaskValue>(mut self) -> Node<T> {
        let name = native::register_type::<T>();
        let id = self.id().to_string();
        self.task_mut().output_type = Some(name.into());
        Node::new(&id)
    }

    /// Declares the type the node's inputs must deserialise into: checked
    /// when the node is added (when its inputs hold no references) and when
    /// it starts (references resolved).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Params { n: u32 }
    ///
    /// let mut wf = orch::Workflow::new("w");
    /// wf.node("fit", orch::Task::python("fit.py")).input("n", 3).takes::<Params>();
    /// ```
    pub fn takes<T: TaskValue>(mut self) -> Self {
        let name = native::register_type::<T>();
        self.task_mut().input_type = Some(name.into());
        self
    }

    /// The node's handle with an untyped (`serde_json::Value`) output.
    pub fn handle(self) -> Node<Value> {
        Node::new(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_remember_their_slots_by_pointer() {
        let local: BTreeSet<String> = ["b.x".to_string()].into();
        let t = Template::new(
            json!({"a": {"$output": "b.x"}, "c": {"$output": "outside"}, "d": [{"$item": null}], "e/f": {"$item": null}}),
            &local,
        );
        assert_eq!(
            t.inputs,
            json!({"a": null, "c": {"$output": "outside"}, "d": [null], "e/f": null})
        );
        assert_eq!(t.items_at, ["/d/0", "/e~1f"]);
        assert_eq!(t.locals_at, [("/a".to_string(), "b.x".to_string())]);
    }
}
