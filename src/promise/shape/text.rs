//! The text form of a shape: writing it (`Display`, also what serde
//! stores) and reading it back (`FromStr`), within the limits of
//! [`crate::limits`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{too_deep, Shape};
use crate::limits::{
    check_len, MAX_PATTERN_BYTES, MAX_SHAPE_ATOMS, MAX_SHAPE_DEPTH, MAX_SHAPE_TEXT,
};

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
}
