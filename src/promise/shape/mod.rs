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

mod matcher;
mod region;
mod text;

use crate::limits::{check_len, MAX_PATTERN_BYTES, MAX_SHAPE_ATOMS, MAX_SHAPE_DEPTH};
use crate::promise::glob::Glob;

pub use region::{Region, RegionNode};
pub use text::ShapeParseError;

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

fn too_deep() -> String {
    format!("shape nested deeper than {MAX_SHAPE_DEPTH} levels (the limit MAX_SHAPE_DEPTH)")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
