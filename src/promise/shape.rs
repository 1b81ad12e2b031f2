//! Shapes: regular expressions over series-parallel graphs (SPEC §5).
//!
//! A shape describes what the region between two nodes `from` and `to`
//! looks like once finished. Its **instance** is a DAG with sources and
//! sinks: `from` is wired to every source and every sink to `to`; an empty
//! instance is the single edge `from -> to`.
//!
//! | shape | text | instance |
//! |---|---|---|
//! | `task(p)` | `M`, `"my task"`, `M_*` | one node whose task name (or id) matches `p` |
//! | `seq(a, b)` | `a → b` (or `a -> b`) | every sink of `a` before every source of `b` |
//! | `par(a, b)` | `a ‖ b` (or `a & b`) | side by side |
//! | `alt(a, b)` | `a \| b` | exactly one of |
//! | `repeat(s, m, n)` | `s*`, `s+`, `s?`, `s{m,n}`, `s{m,}`, `s{n}` | `k` copies side by side, `m ≤ k ≤ n` (the map) |
//! | `chain(s, m, n)` | `s→*`, `s→+`, `s→{m,n}` | `k` copies one after another |
//! | `empty` | `ε` (or `empty`, `()`) | nothing: the edge `from -> to` |
//! | `any` | `any` | anything (that part is fully dynamic) |
//!
//! Binding, tightest first: postfix marks, `→`, `‖`, `|`. The text form
//! parses back to the same shape; it is what errors and pictures show.
//!
//! ```
//! use orch::promise::shape::Shape;
//! let s: Shape = "A → (B | C)*".parse().unwrap();
//! assert_eq!(s.to_string(), "A → (B | C)*");
//! assert_eq!(s, Shape::seq([Shape::task("A"), Shape::repeat(Shape::alt([Shape::task("B"), Shape::task("C")]), 0, None)]));
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits::{
    check_len, MAX_PATTERN_BYTES, MAX_SHAPE_ATOMS, MAX_SHAPE_DEPTH, MAX_SHAPE_TEXT,
};
use crate::promise::glob::Glob;

/// A shape. Build with the constructors or parse the text form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One node whose task name or id matches the glob.
    Task(Glob),
    /// One after another.
    Seq(Vec<Shape>),
    /// Side by side.
    Par(Vec<Shape>),
    /// Exactly one of.
    Alt(Vec<Shape>),
    /// `k` copies side by side, `min ≤ k ≤ max` (`None`: unbounded).
    Repeat(Box<Shape>, u32, Option<u32>),
    /// `k` copies one after another.
    Chain(Box<Shape>, u32, Option<u32>),
    /// Nothing.
    Empty,
    /// Anything.
    Any,
}

impl Shape {
    /// `task(pattern)`.
    pub fn task(pattern: &str) -> Shape {
        Shape::Task(Glob::new(pattern))
    }

    /// `seq(parts…)`, flattened.
    pub fn seq(parts: impl IntoIterator<Item = Shape>) -> Shape {
        Shape::Seq(flatten(parts, |s| matches!(s, Shape::Seq(_)))).simplify()
    }

    /// `par(parts…)`, flattened.
    pub fn par(parts: impl IntoIterator<Item = Shape>) -> Shape {
        Shape::Par(flatten(parts, |s| matches!(s, Shape::Par(_)))).simplify()
    }

    /// `alt(parts…)`, flattened.
    pub fn alt(parts: impl IntoIterator<Item = Shape>) -> Shape {
        Shape::Alt(flatten(parts, |s| matches!(s, Shape::Alt(_)))).simplify()
    }

    /// `repeat(s, min, max)`: the map.
    pub fn repeat(s: Shape, min: u32, max: Option<u32>) -> Shape {
        Shape::Repeat(Box::new(s), min, max)
    }

    /// `chain(s, min, max)`.
    pub fn chain(s: Shape, min: u32, max: Option<u32>) -> Shape {
        Shape::Chain(Box::new(s), min, max)
    }

    fn simplify(self) -> Shape {
        match self {
            Shape::Seq(mut v) | Shape::Par(mut v) | Shape::Alt(mut v) if v.len() == 1 => {
                v.remove(0)
            }
            Shape::Seq(v) if v.is_empty() => Shape::Empty,
            Shape::Par(v) if v.is_empty() => Shape::Empty,
            s => s,
        }
    }

    /// True when some instance is empty.
    pub fn can_be_empty(&self) -> bool {
        match self {
            Shape::Task(_) => false,
            Shape::Seq(v) | Shape::Par(v) => v.iter().all(Shape::can_be_empty),
            Shape::Alt(v) => v.iter().any(Shape::can_be_empty),
            Shape::Repeat(s, min, _) | Shape::Chain(s, min, _) => *min == 0 || s.can_be_empty(),
            Shape::Empty | Shape::Any => true,
        }
    }

    /// True when every instance is non-empty and weakly connected.
    fn connected(&self) -> bool {
        match self {
            Shape::Task(_) => true,
            Shape::Seq(v) => {
                let never_empty: Vec<&Shape> = v.iter().filter(|s| !s.can_be_empty()).collect();
                match never_empty.len() {
                    0 => false,
                    1 => never_empty[0].connected(),
                    _ => true,
                }
            }
            Shape::Alt(v) => v.iter().all(Shape::connected),
            Shape::Repeat(s, min, max) => *min == 1 && *max == Some(1) && s.connected(),
            Shape::Chain(s, min, _) => *min >= 1 && s.connected(),
            Shape::Par(_) | Shape::Empty | Shape::Any => false,
        }
    }

    /// True when the shape contains `any`.
    pub fn has_any(&self) -> bool {
        match self {
            Shape::Any => true,
            Shape::Task(_) | Shape::Empty => false,
            Shape::Seq(v) | Shape::Par(v) | Shape::Alt(v) => v.iter().any(Shape::has_any),
            Shape::Repeat(s, ..) | Shape::Chain(s, ..) => s.has_any(),
        }
    }

    /// The task patterns the shape mentions.
    pub fn patterns(&self) -> Vec<&Glob> {
        let mut out = Vec::new();
        self.walk(&mut |s| {
            if let Shape::Task(g) = s {
                out.push(g);
            }
        });
        out
    }

    /// Checks a shape however it was built (the parser checks its text as
    /// it goes) against the limits of [`crate::limits`], and that its text
    /// form parses back: a promise that is stored must read back.
    /// Walks without recursion until the depth is known to be bounded.
    ///
    /// ```
    /// use orch::Shape;
    /// assert!(Shape::seq([Shape::task("A"), Shape::task("B")]).check().is_ok());
    /// let mut deep = Shape::task("M");
    /// for _ in 0..100 {
    ///     deep = Shape::repeat(deep, 0, None);
    /// }
    /// assert!(deep.check().unwrap_err().contains("deeper than 64 levels"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        let mut stack = vec![(self, 1usize)];
        let mut atoms = 0usize;
        while let Some((s, depth)) = stack.pop() {
            if depth > MAX_SHAPE_DEPTH {
                return Err(too_deep());
            }
            match s {
                Shape::Seq(v) | Shape::Par(v) | Shape::Alt(v) => {
                    stack.extend(v.iter().map(|c| (c, depth + 1)));
                }
                Shape::Repeat(c, ..) | Shape::Chain(c, ..) => stack.push((c, depth + 1)),
                Shape::Task(g) => {
                    atoms += 1;
                    check_len(
                        "task pattern",
                        g.as_str(),
                        MAX_PATTERN_BYTES,
                        "MAX_PATTERN_BYTES",
                    )?;
                }
                Shape::Empty | Shape::Any => atoms += 1,
            }
            if atoms > MAX_SHAPE_ATOMS {
                return Err(format!(
                    "shape has more than {MAX_SHAPE_ATOMS} atoms (the limit MAX_SHAPE_ATOMS)"
                ));
            }
        }
        match self.to_string().parse::<Shape>() {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("the shape does not read back: {e}")),
        }
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Shape)) {
        f(self);
        match self {
            Shape::Seq(v) | Shape::Par(v) | Shape::Alt(v) => v.iter().for_each(|s| s.walk(f)),
            Shape::Repeat(s, ..) | Shape::Chain(s, ..) => s.walk(f),
            _ => {}
        }
    }
}

fn flatten(parts: impl IntoIterator<Item = Shape>, same: impl Fn(&Shape) -> bool) -> Vec<Shape> {
    let mut out = Vec::new();
    for p in parts {
        if same(&p) {
            match p {
                Shape::Seq(v) | Shape::Par(v) | Shape::Alt(v) => out.extend(v),
                _ => unreachable!(),
            }
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------- text form

fn prec(s: &Shape) -> u8 {
    match s {
        Shape::Alt(_) => 1,
        Shape::Par(_) => 2,
        Shape::Seq(_) => 3,
        _ => 4,
    }
}

fn bounds(f: &mut fmt::Formatter<'_>, min: u32, max: Option<u32>, chain: bool) -> fmt::Result {
    if chain {
        f.write_str("→")?;
    }
    match (min, max) {
        (0, None) => f.write_str("*"),
        (1, None) => f.write_str("+"),
        (0, Some(1)) if !chain => f.write_str("?"),
        (m, None) => write!(f, "{{{m},}}"),
        (m, Some(n)) if m == n => write!(f, "{{{m}}}"),
        (m, Some(n)) => write!(f, "{{{m},{n}}}"),
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, v: &[Shape], sep: &str, me: u8| -> fmt::Result {
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                if prec(s) <= me {
                    write!(f, "({s})")?;
                } else {
                    write!(f, "{s}")?;
                }
            }
            Ok(())
        };
        match self {
            Shape::Task(g) => {
                let p = g.as_str();
                let bare =
                    !p.is_empty() && p.chars().all(is_name_char) && p != "any" && p != "empty";
                if bare {
                    f.write_str(p)
                } else {
                    write!(f, "{}", serde_json::Value::String(p.to_string()))
                }
            }
            Shape::Seq(v) => join(f, v, " → ", 3),
            Shape::Par(v) => join(f, v, " ‖ ", 2),
            // Alternatives of compound shapes read better bracketed.
            Shape::Alt(v) => join(f, v, " | ", 3),
            Shape::Repeat(s, min, max) | Shape::Chain(s, min, max) => {
                if prec(s) < 4 || matches!(**s, Shape::Repeat(..) | Shape::Chain(..)) {
                    write!(f, "({s})")?;
                } else {
                    write!(f, "{s}")?;
                }
                bounds(f, *min, *max, matches!(self, Shape::Chain(..)))
            }
            Shape::Empty => f.write_str("ε"),
            Shape::Any => f.write_str("any"),
        }
    }
}

/// Characters of a bare (unquoted) task name; anything else (globs with
/// `*` or `?`, spaces, the words `any` and `empty`) is written quoted.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/')
}

/// A shape text that does not parse, or passes a limit of
/// [`crate::limits`]: says where and what was expected. Its message quotes
/// the text shortened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "shape `{}`: {message} at character {at}",
    crate::exec::protocol::quote(text)
)]
pub struct ShapeParseError {
    /// The text.
    pub text: String,
    /// Character offset of the problem.
    pub at: usize,
    /// What was expected.
    pub message: String,
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    /// Brackets open at `pos`: bounds the parser's own recursion.
    open: usize,
    /// Atoms read so far.
    atoms: usize,
}

/// A parsed part and the depth of its tree (an upper bound: flattening
/// `seq`, `par` and `alt` may make the tree shallower).
type Parsed = (Shape, usize);

fn too_deep() -> String {
    format!("shape nested deeper than {MAX_SHAPE_DEPTH} levels (the limit MAX_SHAPE_DEPTH)")
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> ShapeParseError {
        ShapeParseError {
            text: self.text.to_string(),
            at: self.pos,
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        if self.chars[self.pos..].iter().take(n).copied().eq(s.chars()) {
            self.pos += n;
            true
        } else {
            false
        }
    }

    /// `parts` joined by `join` one level up (the only part as it is).
    fn join(
        &self,
        mut parts: Vec<Parsed>,
        join: fn(Vec<Shape>) -> Shape,
    ) -> Result<Parsed, ShapeParseError> {
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let depth = 1 + parts.iter().map(|p| p.1).max().unwrap_or(0);
        if depth > MAX_SHAPE_DEPTH {
            return Err(self.err(too_deep()));
        }
        Ok((join(parts.into_iter().map(|p| p.0).collect()), depth))
    }

    fn alt(&mut self) -> Result<Parsed, ShapeParseError> {
        let mut parts = vec![self.par()?];
        while self.eat("|") {
            parts.push(self.par()?);
        }
        self.join(parts, Shape::alt)
    }

    fn par(&mut self) -> Result<Parsed, ShapeParseError> {
        let mut parts = vec![self.seq()?];
        while self.eat("‖") || self.eat("&") {
            parts.push(self.seq()?);
        }
        self.join(parts, Shape::par)
    }

    fn arrow(&mut self) -> bool {
        self.eat("→") || self.eat("->")
    }

    fn seq(&mut self) -> Result<Parsed, ShapeParseError> {
        let mut parts = vec![self.postfix()?];
        loop {
            let save = self.pos;
            if !self.arrow() {
                break;
            }
            // `→*`, `→+`, `→{` after an atom is a chain mark, handled in
            // postfix; here an arrow always separates two parts.
            if matches!(self.peek(), Some('*' | '+' | '{')) {
                self.pos = save;
                break;
            }
            parts.push(self.postfix()?);
        }
        self.join(parts, Shape::seq)
    }

    fn number(&mut self) -> Result<u32, ShapeParseError> {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.chars.len() && self.chars[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a number"));
        }
        let s: String = self.chars[start..self.pos].iter().collect();
        s.parse().map_err(|_| self.err("number too large"))
    }

    fn bounds(&mut self) -> Result<Option<(u32, Option<u32>)>, ShapeParseError> {
        if self.eat("*") {
            return Ok(Some((0, None)));
        }
        if self.eat("+") {
            return Ok(Some((1, None)));
        }
        if self.eat("{") {
            let min = self.number()?;
            let max = if self.eat(",") {
                if self.peek() == Some('}') {
                    None
                } else {
                    Some(self.number()?)
                }
            } else {
                Some(min)
            };
            if !self.eat("}") {
                return Err(self.err("expected `}`"));
            }
            if max.is_some_and(|m| m < min) {
                return Err(self.err(format!(
                    "bounds {{{min},{}}} have max below min",
                    max.unwrap()
                )));
            }
            return Ok(Some((min, max)));
        }
        Ok(None)
    }

    fn postfix(&mut self) -> Result<Parsed, ShapeParseError> {
        let (mut s, mut depth) = self.atom()?;
        loop {
            let start = self.pos;
            let wrapped = if self.eat("?") {
                Shape::repeat(s, 0, Some(1))
            } else if let Some((min, max)) = self.bounds()? {
                Shape::repeat(s, min, max)
            } else {
                let save = self.pos;
                match self.arrow().then(|| self.bounds()).transpose()?.flatten() {
                    Some((min, max)) => Shape::chain(s, min, max),
                    None => {
                        self.pos = save;
                        return Ok((s, depth));
                    }
                }
            };
            depth += 1;
            if depth > MAX_SHAPE_DEPTH {
                self.pos = start;
                return Err(self.err(too_deep()));
            }
            s = wrapped;
        }
    }

    /// Counts one atom against [`MAX_SHAPE_ATOMS`].
    fn count_atom(&mut self, start: usize) -> Result<(), ShapeParseError> {
        self.atoms += 1;
        if self.atoms > MAX_SHAPE_ATOMS {
            self.pos = start;
            return Err(self.err(format!(
                "shape has more than {MAX_SHAPE_ATOMS} atoms (the limit MAX_SHAPE_ATOMS)"
            )));
        }
        Ok(())
    }

    fn task(&mut self, start: usize, name: &str) -> Result<Parsed, ShapeParseError> {
        if let Err(e) = check_len("task pattern", name, MAX_PATTERN_BYTES, "MAX_PATTERN_BYTES") {
            self.pos = start;
            return Err(self.err(e));
        }
        Ok((Shape::task(name), 1))
    }

    fn atom(&mut self) -> Result<Parsed, ShapeParseError> {
        let next = self.peek();
        let start = self.pos;
        if !matches!(next, None | Some('(')) {
            self.count_atom(start)?;
        }
        match next {
            None => Err(self.err("expected a shape, found the end")),
            Some('(') => {
                if self.open == MAX_SHAPE_DEPTH {
                    return Err(self.err(too_deep()));
                }
                self.pos += 1;
                if self.eat(")") {
                    self.count_atom(start)?;
                    return Ok((Shape::Empty, 1));
                }
                self.open += 1;
                let s = self.alt()?;
                self.open -= 1;
                if !self.eat(")") {
                    return Err(self.err("expected `)`"));
                }
                Ok(s)
            }
            Some('ε') => {
                self.pos += 1;
                Ok((Shape::Empty, 1))
            }
            Some('"') => {
                // The quoted text ends at the first `"` not escaped; JSON
                // decodes it (linear: no copy of the rest of the text).
                let from = self.pos;
                let mut end = from + 1;
                while end < self.chars.len() && self.chars[end] != '"' {
                    end += if self.chars[end] == '\\' { 2 } else { 1 };
                }
                let quoted: String = self.chars[from..(end + 1).min(self.chars.len())]
                    .iter()
                    .collect();
                match serde_json::from_str::<String>(&quoted) {
                    Ok(name) if end < self.chars.len() => {
                        self.pos = end + 1;
                        self.task(start, &name)
                    }
                    _ => Err(self.err("unterminated quoted task name")),
                }
            }
            Some(c) if is_name_char(c) => {
                while self.pos < self.chars.len() && is_name_char(self.chars[self.pos]) {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                match name.as_str() {
                    "any" => Ok((Shape::Any, 1)),
                    "empty" => Ok((Shape::Empty, 1)),
                    _ => self.task(start, &name),
                }
            }
            Some(c) => Err(self.err(format!("unexpected `{c}`"))),
        }
    }
}

impl FromStr for Shape {
    type Err = ShapeParseError;

    /// Parses the text form, within the limits of [`crate::limits`]:
    /// [`MAX_SHAPE_TEXT`] bytes, [`MAX_SHAPE_DEPTH`] levels,
    /// [`MAX_SHAPE_ATOMS`] atoms, task patterns of [`MAX_PATTERN_BYTES`].
    fn from_str(text: &str) -> Result<Shape, ShapeParseError> {
        if text.len() > MAX_SHAPE_TEXT {
            return Err(ShapeParseError {
                text: text.to_string(),
                at: 0,
                message: format!(
                    "shape text is {} bytes, longer than the limit of {MAX_SHAPE_TEXT} (MAX_SHAPE_TEXT)",
                    text.len()
                ),
            });
        }
        let mut p = Parser {
            text,
            chars: text.chars().collect(),
            pos: 0,
            open: 0,
            atoms: 0,
        };
        let (s, _) = p.alt()?;
        if p.peek().is_some() {
            return Err(p.err("unexpected text after the shape"));
        }
        Ok(s)
    }
}

impl Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- matching

/// A node of a region, as the matcher sees it.
#[derive(Clone, Debug)]
pub struct RegionNode {
    /// Node id.
    pub id: String,
    /// Task name.
    pub task: String,
}

/// A region: its nodes and the edges among them, plus which nodes `from`
/// points at and which point at `to`.
#[derive(Clone, Debug, Default)]
pub struct Region {
    /// The nodes strictly between `from` and `to`.
    pub nodes: Vec<RegionNode>,
    /// Edges among region nodes, by index into `nodes`.
    pub edges: Vec<(usize, usize)>,
    /// Region nodes with an edge from `from`.
    pub from_edges: Vec<usize>,
    /// Region nodes with an edge into `to`.
    pub to_edges: Vec<usize>,
    /// Whether the edge `from -> to` exists.
    pub direct: bool,
}

#[derive(Clone, Debug)]
enum Tree {
    Empty,
    Node(usize),
    Seq(Vec<Tree>),
    Par(Vec<Tree>),
    /// A connected piece that is not series-parallel: only `any` matches.
    Opaque,
}

impl Region {
    /// Why the region is not an instance of `shape`, or `None` when it is.
    ///
    /// ```
    /// use orch::promise::shape::{Region, RegionNode, Shape};
    /// let m = |i: usize| RegionNode { id: format!("M_{i}"), task: "M".into() };
    /// let r = Region { nodes: vec![m(0), m(1)], edges: vec![], from_edges: vec![0, 1], to_edges: vec![0, 1], direct: false };
    /// assert!(r.mismatch(&"M*".parse().unwrap()).is_none());
    /// assert!(r.mismatch(&"M".parse().unwrap()).is_some());
    /// ```
    pub fn mismatch(&self, shape: &Shape) -> Option<String> {
        let n = self.nodes.len();
        if n == 0 {
            if !self.direct {
                return Some("the region is empty and has no edge from → to".into());
            }
            return if shape.can_be_empty() {
                None
            } else {
                Some(format!("the region is empty, but `{shape}` needs nodes"))
            };
        }
        if self.direct {
            return Some("the direct edge from → to stands beside region nodes".into());
        }
        let mut succ = vec![Vec::new(); n];
        let mut pred = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            succ[a].push(b);
            pred[b].push(a);
        }
        // Boundary wiring: exactly the sources are fed by `from`, exactly
        // the sinks feed `to`.
        let from: HashSet<usize> = self.from_edges.iter().copied().collect();
        let to: HashSet<usize> = self.to_edges.iter().copied().collect();
        for i in 0..n {
            let id = &self.nodes[i].id;
            if pred[i].is_empty() != from.contains(&i) {
                return Some(if from.contains(&i) {
                    format!("`{id}` has an edge from `from` but is not a source of the region")
                } else {
                    format!("`{id}` is a source of the region without an edge from `from`")
                });
            }
            if succ[i].is_empty() != to.contains(&i) {
                return Some(if to.contains(&i) {
                    format!("`{id}` has an edge into `to` but is not a sink of the region")
                } else {
                    format!("`{id}` is a sink of the region without an edge into `to`")
                });
            }
        }
        let all: Vec<usize> = (0..n).collect();
        let tree = decompose(&all, &succ, &pred, MAX_SHAPE_DEPTH);
        let mut seen = HashSet::new();
        let mut m = Matcher {
            region: self,
            patterns: shape
                .patterns()
                .into_iter()
                .filter(|g| seen.insert(*g))
                .cloned()
                .collect(),
            steps: 0,
            glob_work: 0,
            gave_up: false,
        };
        if m.matches(shape, &tree) {
            None
        } else if m.gave_up {
            Some(format!(
                "the region is too complex to check against `{shape}` (too many ways to split its parallel parts; see docs/promises.md)"
            ))
        } else {
            Some(format!("the region is not an instance of `{shape}`"))
        }
    }
}

/// The series-parallel tree of `nodes`, at most `room` levels deep: a
/// deeper part is opaque. A shape of depth `d` has instances of depth at
/// most `d`, so past [`MAX_SHAPE_DEPTH`] only `any` can match, and opaque
/// says exactly that; the bound keeps this recursion, the matcher's and the
/// tree's drop shallow however a task nests the nodes it adds.
fn decompose(nodes: &[usize], succ: &[Vec<usize>], pred: &[Vec<usize>], room: usize) -> Tree {
    match nodes.len() {
        0 => return Tree::Empty,
        1 => return Tree::Node(nodes[0]),
        _ if room < 2 => return Tree::Opaque,
        _ => {}
    }
    let inside: HashSet<usize> = nodes.iter().copied().collect();
    // Weakly connected components.
    let mut comp: HashMap<usize, usize> = HashMap::new();
    let mut comps: Vec<Vec<usize>> = Vec::new();
    for &start in nodes {
        if comp.contains_key(&start) {
            continue;
        }
        let c = comps.len();
        let mut members = vec![start];
        comp.insert(start, c);
        let mut k = 0;
        while k < members.len() {
            let v = members[k];
            k += 1;
            for &w in succ[v].iter().chain(&pred[v]) {
                if inside.contains(&w) && !comp.contains_key(&w) {
                    comp.insert(w, c);
                    members.push(w);
                }
            }
        }
        comps.push(members);
    }
    if comps.len() > 1 {
        return Tree::Par(
            comps
                .iter()
                .map(|c| decompose(c, succ, pred, room - 1))
                .collect(),
        );
    }
    // Connected: split into series factors along one topological order.
    let mut indeg: HashMap<usize, usize> = nodes
        .iter()
        .map(|&v| (v, pred[v].iter().filter(|p| inside.contains(p)).count()))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack: Vec<usize> = nodes.iter().copied().filter(|v| indeg[v] == 0).collect();
    stack.sort_unstable_by(|a, b| b.cmp(a));
    while let Some(v) = stack.pop() {
        order.push(v);
        for &w in &succ[v] {
            if let Some(d) = indeg.get_mut(&w) {
                *d -= 1;
                if *d == 0 {
                    stack.push(w);
                }
            }
        }
    }
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let inside_succ = |v: usize| succ[v].iter().copied().filter(|w| pos.contains_key(w));
    // Preds of each node still in the rest; sources of the rest; sinks of
    // the current factor; edges from the current factor to the rest.
    let mut pending_in: HashMap<usize, usize> = order
        .iter()
        .map(|&v| (v, pred[v].iter().filter(|p| pos.contains_key(p)).count()))
        .collect();
    let mut frontier = order.iter().filter(|v| pending_in[v] == 0).count() as i64;
    let mut succ_in_factor: HashMap<usize, usize> = HashMap::new();
    let (mut sinks, mut crossing) = (0i64, 0i64);
    let mut factors = Vec::new();
    let mut start = 0;
    for i in 0..order.len() - 1 {
        let v = order[i];
        frontier -= 1;
        for w in inside_succ(v) {
            let d = pending_in.get_mut(&w).expect("inside");
            *d -= 1;
            if *d == 0 {
                frontier += 1;
            }
            crossing += 1;
        }
        sinks += 1;
        for &p in pred[v]
            .iter()
            .filter(|p| pos.get(p).is_some_and(|&k| k >= start))
        {
            crossing -= 1;
            let c = succ_in_factor.entry(p).or_insert(0);
            *c += 1;
            if *c == 1 {
                sinks -= 1;
            }
        }
        if crossing == sinks * frontier
            && is_series_cut(&order[start..=i], &pos, i, succ, &pending_in)
        {
            factors.push(order[start..=i].to_vec());
            start = i + 1;
            sinks = 0;
            crossing = 0;
        }
    }
    if factors.is_empty() {
        return Tree::Opaque;
    }
    factors.push(order[start..].to_vec());
    Tree::Seq(
        factors
            .iter()
            .map(|f| decompose(f, succ, pred, room - 1))
            .collect(),
    )
}

/// With the counts already equal, checks that every edge leaving the
/// factor `a` (positions up to `last`) goes from a sink of `a` to a source
/// of the rest: then the edges are exactly sinks × sources.
fn is_series_cut(
    a: &[usize],
    pos: &HashMap<usize, usize>,
    last: usize,
    succ: &[Vec<usize>],
    pending_in: &HashMap<usize, usize>,
) -> bool {
    let first = pos[&a[0]];
    a.iter().all(|&u| {
        let outs = succ[u].iter().filter_map(|w| pos.get(w).map(|&k| (w, k)));
        let mut to_factor = false;
        let mut to_rest = false;
        for (w, k) in outs {
            if k > last {
                to_rest = true;
                if pending_in[w] != 0 {
                    return false;
                }
            } else if k >= first {
                to_factor = true;
            }
        }
        !(to_factor && to_rest)
    })
}

/// At most this many sub-multisets of parallel components are tried when
/// partitioning them among the parts of a `par` or the copies of a
/// `repeat`; see `docs/promises.md`.
const MAX_STATES: usize = 4096;

/// Match steps one check may take before it gives up (deterministic, so
/// a check never depends on the machine's speed).
const MAX_STEPS: u64 = 100_000;

/// Glob work one check may do before it gives up: the sum, over every
/// pattern matched against a node, of the pattern's length times the
/// length of the node's id and task name (a glob match costs at most
/// that). Far above any honest region, far below hanging the engine on
/// thousands of patterns like `*a*a*a…b`.
const MAX_GLOB_WORK: u64 = 50_000_000;

struct Matcher<'r> {
    region: &'r Region,
    patterns: Vec<Glob>,
    steps: u64,
    glob_work: u64,
    gave_up: bool,
}

/// Whether the node's task name or id matches `g`, charged to `work`.
fn glob_hit(work: &mut u64, g: &Glob, n: &RegionNode) -> bool {
    let cost = (g.as_str().len() as u64 + 1) * (n.task.len() as u64 + n.id.len() as u64 + 2);
    *work = work.saturating_add(cost);
    g.matches(&n.task) || g.matches(&n.id)
}

impl Matcher<'_> {
    fn matches(&mut self, s: &Shape, t: &Tree) -> bool {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            self.gave_up = true;
        }
        if self.gave_up {
            return false;
        }
        match (s, t) {
            (Shape::Any, _) => true,
            (_, Tree::Opaque) => false,
            (Shape::Empty, t) => matches!(t, Tree::Empty),
            (Shape::Task(g), Tree::Node(i)) => {
                let hit = glob_hit(&mut self.glob_work, g, &self.region.nodes[*i]);
                if self.glob_work > MAX_GLOB_WORK {
                    self.gave_up = true;
                }
                hit && !self.gave_up
            }
            (Shape::Task(_), _) => false,
            (Shape::Alt(v), t) => v.iter().any(|a| self.matches(a, t)),
            (Shape::Seq(parts), t) => {
                let factors = series_factors(t);
                let refs: Vec<&Shape> = parts.iter().collect();
                self.seq_groups(&refs, &factors)
            }
            (Shape::Chain(inner, min, max), t) => {
                let factors = series_factors(t);
                self.chain_groups(inner, *min, *max, &factors)
            }
            (Shape::Par(parts), t) => {
                let comps = par_components(t);
                let refs: Vec<&Shape> = parts.iter().collect();
                self.par_groups(&refs, &comps)
            }
            (Shape::Repeat(inner, min, max), t) => {
                let comps = par_components(t);
                self.repeat_groups(inner, *min, *max, &comps)
            }
        }
    }

    /// Whether `trees` (consecutive series factors) split into one group
    /// per part, in order, each matching its part.
    fn seq_groups(&mut self, parts: &[&Shape], trees: &[&Tree]) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return trees.is_empty();
        };
        (0..=trees.len()).any(|k| {
            let group = series_of(&trees[..k]);
            self.matches(first, &group) && self.seq_groups(rest, &trees[k..])
        })
    }

    fn chain_groups(&mut self, s: &Shape, min: u32, max: Option<u32>, trees: &[&Tree]) -> bool {
        // reach[j] = the numbers of non-empty copies that cover trees[..j].
        let n = trees.len();
        let cap = max.map_or(n as u32, |m| m.min(n as u32)) as usize;
        let mut reach = vec![vec![false; cap + 1]; n + 1];
        reach[0][0] = true;
        for j in 0..n {
            for c in 0..cap {
                if !reach[j][c] {
                    continue;
                }
                for k in j + 1..=n {
                    if self.matches(s, &series_of(&trees[j..k])) {
                        reach[k][c + 1] = true;
                    }
                }
            }
        }
        let empty_ok = s.can_be_empty();
        (0..=cap).any(|c| {
            reach[n][c] && max.is_none_or(|m| c as u32 <= m) && (c as u32 >= min || empty_ok)
        })
    }

    fn par_groups(&mut self, parts: &[&Shape], comps: &[&Tree]) -> bool {
        let m = comps.len();
        if parts.iter().all(|p| p.connected()) {
            if parts.len() != m {
                return false;
            }
            // Perfect matching of components to parts (augmenting paths).
            let mut owner: Vec<Option<usize>> = vec![None; m];
            for p in 0..parts.len() {
                let mut seen = vec![false; m];
                if !self.augment(p, parts, comps, &mut owner, &mut seen) {
                    return false;
                }
            }
            return true;
        }
        let Some(kinds) = self.kinds(comps) else {
            return false;
        };
        let left: Vec<usize> = kinds.iter().map(Vec::len).collect();
        let mut memo = HashMap::new();
        self.par_multiset(parts, &kinds, 0, left, &mut memo)
    }

    /// Groups components into kinds of interchangeable ones (same
    /// structure, every node matching the same patterns); `None` when the
    /// sub-multisets to try would be too many.
    fn kinds<'t>(&mut self, comps: &[&'t Tree]) -> Option<Vec<Vec<&'t Tree>>> {
        let mut by_key: Vec<(String, Vec<&'t Tree>)> = Vec::new();
        for (k, c) in comps.iter().enumerate() {
            let key = self.key(c, k);
            if self.glob_work > MAX_GLOB_WORK {
                self.gave_up = true;
                return None;
            }
            match by_key.iter_mut().find(|(x, _)| *x == key) {
                Some((_, v)) => v.push(c),
                None => by_key.push((key, vec![c])),
            }
        }
        let states = by_key
            .iter()
            .try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len() + 1))
            .unwrap_or(usize::MAX);
        if states > MAX_STATES {
            self.gave_up = true;
            return None;
        }
        Some(by_key.into_iter().map(|(_, v)| v).collect())
    }

    /// A canonical key: equal keys mean isomorphic components whose nodes
    /// match the same task patterns of the shape.
    fn key(&mut self, t: &Tree, salt: usize) -> String {
        match t {
            Tree::Empty => "E".into(),
            Tree::Node(i) => {
                let n = &self.region.nodes[*i];
                let sig: String = self
                    .patterns
                    .iter()
                    .map(|g| {
                        if glob_hit(&mut self.glob_work, g, n) {
                            '1'
                        } else {
                            '0'
                        }
                    })
                    .collect();
                format!("N{sig}")
            }
            Tree::Seq(v) => format!(
                "S({})",
                v.iter()
                    .map(|x| self.key(x, salt))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Tree::Par(v) => {
                let mut keys: Vec<String> = v.iter().map(|x| self.key(x, salt)).collect();
                keys.sort();
                format!("P({})", keys.join(","))
            }
            Tree::Opaque => format!("O{salt}"),
        }
    }

    /// Whether the multiset `left` (a count per kind) splits into one
    /// group per part, in order, each matching its part.
    fn par_multiset(
        &mut self,
        parts: &[&Shape],
        kinds: &[Vec<&Tree>],
        i: usize,
        left: Vec<usize>,
        memo: &mut HashMap<(usize, Vec<usize>), bool>,
    ) -> bool {
        if i == parts.len() {
            return left.iter().all(|&c| c == 0);
        }
        if let Some(&r) = memo.get(&(i, left.clone())) {
            return r;
        }
        let mut found = false;
        for take in sub_multisets(&left) {
            let group = group_of(kinds, &take);
            if self.matches(parts[i], &group) {
                let rest: Vec<usize> = left.iter().zip(&take).map(|(l, t)| l - t).collect();
                if self.par_multiset(parts, kinds, i + 1, rest, memo) {
                    found = true;
                    break;
                }
            }
        }
        memo.insert((i, left), found);
        found
    }

    fn augment(
        &mut self,
        p: usize,
        parts: &[&Shape],
        comps: &[&Tree],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for c in 0..comps.len() {
            if seen[c] || !self.matches(parts[p], comps[c]) {
                continue;
            }
            seen[c] = true;
            if owner[c].is_none() || self.augment(owner[c].unwrap(), parts, comps, owner, seen) {
                owner[c] = Some(p);
                return true;
            }
        }
        false
    }

    fn repeat_groups(&mut self, s: &Shape, min: u32, max: Option<u32>, comps: &[&Tree]) -> bool {
        let m = comps.len();
        if s.connected() {
            let k = m as u32;
            return k >= min
                && max.is_none_or(|x| k <= x)
                && comps.iter().all(|c| self.matches(s, c));
        }
        if m == 0 {
            return min == 0 || s.can_be_empty();
        }
        let Some(kinds) = self.kinds(comps) else {
            return false;
        };
        let left: Vec<usize> = kinds.iter().map(Vec::len).collect();
        let mut memo = HashMap::new();
        let counts = self.cover_counts(s, &kinds, left, &mut memo);
        let empty_ok = s.can_be_empty();
        counts
            .iter()
            .any(|&c| max.is_none_or(|x| c <= x) && (c >= min || empty_ok))
    }

    /// The numbers of non-empty groups, each matching `s`, that partition
    /// the multiset `left`.
    fn cover_counts(
        &mut self,
        s: &Shape,
        kinds: &[Vec<&Tree>],
        left: Vec<usize>,
        memo: &mut HashMap<Vec<usize>, Vec<u32>>,
    ) -> Vec<u32> {
        let Some(first) = left.iter().position(|&c| c > 0) else {
            return vec![0];
        };
        if let Some(r) = memo.get(&left) {
            return r.clone();
        }
        let mut out: Vec<u32> = Vec::new();
        // Each group holds one of the first kind left: no partition is
        // counted twice.
        for take in sub_multisets(&left).filter(|t| t[first] > 0) {
            if self.matches(s, &group_of(kinds, &take)) {
                let rest: Vec<usize> = left.iter().zip(&take).map(|(l, t)| l - t).collect();
                for c in self.cover_counts(s, kinds, rest, memo) {
                    if !out.contains(&(c + 1)) {
                        out.push(c + 1);
                    }
                }
            }
        }
        memo.insert(left, out.clone());
        out
    }
}

/// Every count vector `t` with `t ≤ left` elementwise.
fn sub_multisets(left: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let mut cur = vec![0usize; left.len()];
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let out = cur.clone();
        // Mixed-radix increment.
        let mut k = 0;
        loop {
            if k == left.len() {
                done = true;
                break;
            }
            if cur[k] < left[k] {
                cur[k] += 1;
                break;
            }
            cur[k] = 0;
            k += 1;
        }
        Some(out)
    })
}

/// The parallel composition of `take[k]` components of each kind `k`.
fn group_of(kinds: &[Vec<&Tree>], take: &[usize]) -> Tree {
    let trees: Vec<&Tree> = kinds
        .iter()
        .zip(take)
        .flat_map(|(v, &n)| v[..n].iter().copied())
        .collect();
    parallel_of(&trees)
}

fn series_factors(t: &Tree) -> Vec<&Tree> {
    match t {
        Tree::Empty => Vec::new(),
        Tree::Seq(v) => v.iter().collect(),
        other => vec![other],
    }
}

fn par_components(t: &Tree) -> Vec<&Tree> {
    match t {
        Tree::Empty => Vec::new(),
        Tree::Par(v) => v.iter().collect(),
        other => vec![other],
    }
}

fn series_of(trees: &[&Tree]) -> Tree {
    match trees {
        [] => Tree::Empty,
        [one] => (*one).clone(),
        many => Tree::Seq(many.iter().map(|t| (*t).clone()).collect()),
    }
}

fn parallel_of(trees: &[&Tree]) -> Tree {
    match trees {
        [] => Tree::Empty,
        [one] => (*one).clone(),
        many => Tree::Par(many.iter().map(|t| (*t).clone()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Shape {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "M*",
            "M{2,5}",
            "M{3}",
            "M{2,}",
            "M+",
            "M?",
            "(N → M) | (J → K)",
            "A → B ‖ C → D",
            "(A | B) → C",
            "(A → B)*",
            "M→*",
            "(A ‖ B)→{1,3}",
            "ε",
            "any",
            "\"my task\" → \"any\"",
            "\"M_*\" → B",
            "A → (B | ε)",
            "(A ‖ B) | C",
        ] {
            let s = parse(text);
            assert_eq!(s.to_string(), text, "display of {text}");
            assert_eq!(parse(&s.to_string()), s);
        }
        assert_eq!(parse("A -> B & C"), parse("A → B ‖ C"));
        assert_eq!(parse("()"), Shape::Empty);
        assert_eq!(parse("empty"), Shape::Empty);
    }

    #[test]
    fn parse_errors_say_where() {
        let e = "A → ".parse::<Shape>().unwrap_err();
        assert!(e.to_string().contains("expected a shape"), "{e}");
        let e = "M{5,2}".parse::<Shape>().unwrap_err();
        assert!(e.to_string().contains("max below min"), "{e}");
        let e = "(A | B".parse::<Shape>().unwrap_err();
        assert!(e.to_string().contains("expected `)`"), "{e}");
    }

    #[test]
    fn limits_are_named_and_cheap() {
        let err = |text: &str| text.parse::<Shape>().unwrap_err().to_string();
        // 64 brackets parse; 100,000 stop at the 65th, where they are.
        let ok = format!("{}A{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(parse(&ok), Shape::task("A"));
        let e = err(&format!("{}A{}", "(".repeat(100_000), ")".repeat(100_000)));
        assert!(
            e.contains("too long") || e.contains("MAX_SHAPE_TEXT"),
            "200,001 bytes are over the text limit first: {e}"
        );
        let e = err(&format!("{}A{}", "(".repeat(1000), ")".repeat(1000)));
        assert!(
            e.contains(
                "shape nested deeper than 64 levels (the limit MAX_SHAPE_DEPTH) at character 64"
            ),
            "{e}"
        );
        assert!(e.len() < 500, "the text is quoted shortened: {e}");
        // Postfix marks nest the tree without brackets.
        let ok = format!("M{}", "*".repeat(63));
        assert!(ok.parse::<Shape>().is_ok());
        assert!(err(&format!("M{}", "*".repeat(64))).contains("MAX_SHAPE_DEPTH"));
        assert!(err(&format!("M{}", "→*".repeat(5000))).contains("MAX_SHAPE_DEPTH"));
        // Nested operators count as levels, too.
        let mut text = "A".to_string();
        for i in 0..70 {
            text = format!("({text}) {} B", ["|", "‖", "→"][i % 3]);
        }
        assert!(err(&text).contains("MAX_SHAPE_DEPTH"), "{}", err(&text));
        // Atoms, pattern length and text length.
        let many = vec!["A"; 1025].join(" | ");
        assert!(err(&many).contains("more than 1024 atoms (the limit MAX_SHAPE_ATOMS)"));
        assert!(vec!["A"; 1024].join(" | ").parse::<Shape>().is_ok());
        let long = "M".repeat(1025);
        assert!(
            err(&long).contains("1025 bytes, longer than the limit of 1024 (MAX_PATTERN_BYTES)")
        );
        assert!(err(&format!("\"{long}\"")).contains("MAX_PATTERN_BYTES"));
        let e = err(&"A ".repeat(40_000));
        assert!(
            e.contains("80000 bytes, longer than the limit of 65536 (MAX_SHAPE_TEXT)"),
            "{e}"
        );
        // Quoted names are read without copying the rest of the text.
        let quoted = vec!["\"a b\""; 1000].join(" → ");
        assert!(quoted.parse::<Shape>().is_ok());
        assert!(err("\"abc").contains("unterminated"));
        assert!(err("\"abc\\").contains("unterminated"));
        assert!(err("\"abc\\\"").contains("unterminated"));
    }

    #[test]
    fn built_shapes_are_checked_like_parsed_ones() {
        let mut deep = Shape::task("M");
        for _ in 0..63 {
            deep = Shape::repeat(deep, 0, None);
        }
        assert_eq!(deep.check(), Ok(()));
        let deeper = Shape::chain(deep, 1, None);
        assert!(deeper.check().unwrap_err().contains("MAX_SHAPE_DEPTH"));
        let wide = Shape::par((0..2000).map(|i| Shape::task(&format!("t{i}"))));
        assert!(wide.check().unwrap_err().contains("MAX_SHAPE_ATOMS"));
        // A shape built in Rust that its text cannot express.
        let unreadable = Shape::Seq(Vec::new());
        assert!(unreadable
            .check()
            .unwrap_err()
            .contains("does not read back"));
    }

    fn region(
        nodes: &[(&str, &str)],
        edges: &[(usize, usize)],
        from: &[usize],
        to: &[usize],
    ) -> Region {
        Region {
            nodes: nodes
                .iter()
                .map(|(id, t)| RegionNode {
                    id: id.to_string(),
                    task: t.to_string(),
                })
                .collect(),
            edges: edges.to_vec(),
            from_edges: from.to_vec(),
            to_edges: to.to_vec(),
            direct: false,
        }
    }

    #[test]
    fn must_have_shapes() {
        // alt(A, B) with the A-variant being a chain of two.
        let branch = parse("(left_1 → left_2) | right");
        let left = region(
            &[("left_1", "left_1"), ("left_2", "left_2")],
            &[(0, 1)],
            &[0],
            &[1],
        );
        assert!(left.mismatch(&branch).is_none());
        let right = region(&[("right", "right")], &[], &[0], &[0]);
        assert!(right.mismatch(&branch).is_none());
        let both = region(
            &[
                ("left_1", "left_1"),
                ("left_2", "left_2"),
                ("right", "right"),
            ],
            &[(0, 1)],
            &[0, 2],
            &[1, 2],
        );
        assert!(both.mismatch(&branch).is_some());

        let map = parse("M*");
        let empty = Region {
            direct: true,
            ..Region::default()
        };
        assert!(empty.mismatch(&map).is_none());
        assert!(empty.mismatch(&parse("M+")).is_some());
        let unfilled = Region::default();
        assert!(unfilled.mismatch(&map).is_some());
        let three = region(
            &[("M_0", "M"), ("M_1", "M"), ("M_2", "M")],
            &[],
            &[0, 1, 2],
            &[0, 1, 2],
        );
        assert!(three.mismatch(&map).is_none());
        assert!(three.mismatch(&parse("M{4,}")).is_some());
        let mut with_direct = three.clone();
        with_direct.direct = true;
        assert!(with_direct.mismatch(&map).is_some());
    }

    #[test]
    fn series_inside_parallel_inside_series() {
        // A → (B ‖ C → D) → E
        let s = parse("A → (B ‖ C → D) → E");
        let r = region(
            &[("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"), ("e", "E")],
            &[(0, 1), (0, 2), (2, 3), (1, 4), (3, 4)],
            &[0],
            &[4],
        );
        assert!(r.mismatch(&s).is_none(), "{:?}", r.mismatch(&s));
        // N-shaped: not series-parallel; only `any` matches.
        let n = region(
            &[("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")],
            &[(0, 2), (1, 2), (1, 3)],
            &[0, 1],
            &[2, 3],
        );
        assert!(n.mismatch(&parse("(A ‖ B) → (C ‖ D)")).is_some());
        assert!(n.mismatch(&parse("any")).is_none());
    }

    #[test]
    fn deeply_nested_regions_are_opaque_past_the_depth_limit() {
        // a_0 → (b_0 ‖ (a_1 → (b_1 ‖ …))): 2,000 levels of series inside
        // parallel, all wired like a region. Only `any` matches it, and
        // checking it must not recurse 2,000 deep (on a small stack).
        let levels = 1_000;
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let (mut from_edges, mut to_edges) = (Vec::new(), Vec::new());
        let last = 2 * levels;
        for i in 0..levels {
            let (a, b) = (2 * i, 2 * i + 1);
            nodes.push(RegionNode {
                id: format!("a_{i}"),
                task: "A".into(),
            });
            nodes.push(RegionNode {
                id: format!("b_{i}"),
                task: "B".into(),
            });
            // a_i → b_i and a_i → a_{i+1}; b_i → the end
            edges.push((a, b));
            edges.push((a, if i + 1 < levels { a + 2 } else { last }));
            to_edges.push(b);
        }
        nodes.push(RegionNode {
            id: "z".into(),
            task: "Z".into(),
        });
        to_edges.push(last);
        from_edges.push(0);
        let r = Region {
            nodes,
            edges,
            from_edges,
            to_edges,
            direct: false,
        };
        let checker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                (
                    r.mismatch(&"any".parse().unwrap()),
                    r.mismatch(&"A → (B ‖ any)".parse().unwrap()),
                    r.mismatch(&"(A ‖ B)*".parse().unwrap()),
                )
            })
            .unwrap();
        let (any, head, other) = checker.join().expect("no stack overflow");
        assert_eq!(any, None);
        assert_eq!(head, None, "`any` matches the opaque depths");
        assert!(other.is_some());
    }

    #[test]
    fn costly_globs_give_up_instead_of_hanging() {
        // Hundreds of patterns whose match backtracks at every position of
        // thousands of long names: the check gives up within its budget.
        let patterns: Vec<String> = (0..200)
            .map(|i| format!("\"*{}b{i}\"", "a".repeat(128)))
            .collect();
        let shape = parse(&format!("({})*", patterns.join(" ‖ ")));
        let name = "a".repeat(255);
        let n = 2_000;
        let r = Region {
            nodes: (0..n)
                .map(|_| RegionNode {
                    id: name.clone(),
                    task: name.clone(),
                })
                .collect(),
            edges: vec![],
            from_edges: (0..n).collect(),
            to_edges: (0..n).collect(),
            direct: false,
        };
        let started = std::time::Instant::now();
        let why = r.mismatch(&shape).expect("no match");
        assert!(why.contains("too complex to check"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn ten_thousand_copies_match_quickly() {
        let n = 10_000;
        let nodes: Vec<(String, String)> = (0..n)
            .map(|i| (format!("M_{i}"), "M".to_string()))
            .collect();
        let r = Region {
            nodes: nodes
                .iter()
                .map(|(id, t)| RegionNode {
                    id: id.clone(),
                    task: t.clone(),
                })
                .collect(),
            edges: vec![],
            from_edges: (0..n).collect(),
            to_edges: (0..n).collect(),
            direct: false,
        };
        assert!(r.mismatch(&parse("M*")).is_none());
    }
}
