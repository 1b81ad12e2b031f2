//! Globs over node ids and task names, and selectors built from them.
//!
//! A glob matches a whole string: `*` any run of characters, `?` one
//! character, everything else itself.
//!
//! A [`Selector`] picks nodes: a plain glob matches a node whose **id or
//! task name** matches; `id:GLOB` looks at the id only, `task:GLOB` at the
//! task name only.
//!
//! ```
//! use orch::promise::glob::{Glob, Selector};
//! assert!(Glob::new("M_*").matches("M_12"));
//! assert!(!Glob::new("M_?").matches("M_12"));
//! let s = Selector::new("task:M");
//! assert!(s.matches("M_3", "M"));
//! assert!(!s.matches("M", "other"));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// A glob pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Glob(String);

impl Glob {
    /// A glob from its text.
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern has no `*` or `?`: it names one string.
    pub fn is_literal(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    /// Whether the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = s.chars().collect();
        // Iterative wildcard matching with backtracking to the last `*`.
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while j < t.len() {
            if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
                i += 1;
                j += 1;
            } else if i < p.len() && p[i] == '*' {
                star = Some((i, j));
                i += 1;
            } else if let Some((si, sj)) = star {
                i = si + 1;
                j = sj + 1;
                star = Some((si, sj + 1));
            } else {
                return false;
            }
        }
        p[i..].iter().all(|&c| c == '*')
    }

    /// Whether some string matches both globs. Exact; costs at most the
    /// product of the two lengths (each at most
    /// [`MAX_PATTERN_BYTES`](crate::limits::MAX_PATTERN_BYTES) for a
    /// pattern that passed its checks).
    ///
    /// ```
    /// use orch::promise::glob::Glob;
    /// assert!(Glob::new("pdf_*").overlaps(&Glob::new("*_3")));
    /// assert!(!Glob::new("pdf_*").overlaps(&Glob::new("png_*")));
    /// assert!(!Glob::new("a?").overlaps(&Glob::new("a")));
    /// ```
    pub fn overlaps(&self, other: &Glob) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let q: Vec<char> = other.0.chars().collect();
        // Reachable pairs of positions of the two patterns' automata.
        let w = q.len() + 1;
        let mut seen = vec![false; (p.len() + 1) * w];
        let mut stack = vec![(0usize, 0usize)];
        seen[0] = true;
        let mut push = |i: usize, j: usize, stack: &mut Vec<(usize, usize)>| {
            if !seen[i * w + j] {
                seen[i * w + j] = true;
                stack.push((i, j));
            }
        };
        while let Some((i, j)) = stack.pop() {
            if i == p.len() && j == q.len() {
                return true;
            }
            let (a, b) = (p.get(i).copied(), q.get(j).copied());
            // A star matches nothing.
            if a == Some('*') {
                push(i + 1, j, &mut stack);
            }
            if b == Some('*') {
                push(i, j + 1, &mut stack);
            }
            // Both read one character.
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            let wild = |c: char| c == '*' || c == '?';
            if wild(a) || wild(b) || a == b {
                let ni = if a == '*' { i } else { i + 1 };
                let nj = if b == '*' { j } else { j + 1 };
                push(ni, nj, &mut stack);
            }
        }
        false
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Selects nodes by id and task name; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(String);

impl Selector {
    /// A selector from its text (`GLOB`, `id:GLOB` or `task:GLOB`).
    pub fn new(text: &str) -> Selector {
        Selector(text.to_string())
    }

    /// The selector text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the node with this id and task name is selected.
    pub fn matches(&self, id: &str, task: &str) -> bool {
        if let Some(g) = self.0.strip_prefix("id:") {
            Glob::new(g).matches(id)
        } else if let Some(g) = self.0.strip_prefix("task:") {
            Glob::new(g).matches(task)
        } else {
            let g = Glob::new(&self.0);
            g.matches(id) || g.matches(task)
        }
    }

    /// Whether some node (any id, any task name) is selected by both.
    /// Exact: two selectors are disjoint only when both look at the same
    /// field (`id:` or `task:`) with globs no string matches together.
    ///
    /// ```
    /// use orch::promise::glob::Selector;
    /// assert!(!Selector::new("task:pdf").overlaps(&Selector::new("task:png")));
    /// assert!(Selector::new("task:pdf").overlaps(&Selector::new("id:png")));
    /// assert!(Selector::new("pdf").overlaps(&Selector::new("task:png")));
    /// ```
    pub fn overlaps(&self, other: &Selector) -> bool {
        match (self.field(), other.field()) {
            ((Some(a), g), (Some(b), h)) if a == b => g.overlaps(&h),
            _ => true,
        }
    }

    /// The field looked at (`Some("id")`, `Some("task")`, `None` for
    /// either) and the glob.
    fn field(&self) -> (Option<&'static str>, Glob) {
        if let Some(g) = self.0.strip_prefix("id:") {
            (Some("id"), Glob::new(g))
        } else if let Some(g) = self.0.strip_prefix("task:") {
            (Some("task"), Glob::new(g))
        } else {
            (None, Glob::new(&self.0))
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Selector {
    fn from(s: &str) -> Selector {
        Selector::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*_1", "left_1", true),
            ("M", "M_0", false),
            ("M*", "M_0", true),
            ("**x", "yx", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p} vs {s}");
        }
    }

    /// `overlaps` agrees with matching over every string of up to 4
    /// characters from a small alphabet.
    #[test]
    fn overlap_is_exact_on_small_alphabets() {
        let mut words = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| ["a", "b"].map(|c| format!("{w}{c}")))
                .collect();
            words.extend(longer);
        }
        words.sort();
        words.dedup();
        let pats = [
            "", "*", "a", "b", "a*", "*a", "?", "??", "a?b", "*b*", "**", "?*a", "ab",
        ];
        for p in pats {
            for q in pats {
                let (gp, gq) = (Glob::new(p), Glob::new(q));
                let brute = words.iter().any(|w| gp.matches(w) && gq.matches(w));
                assert_eq!(gp.overlaps(&gq), brute, "{p:?} vs {q:?}");
            }
        }
    }

    #[test]
    fn selectors() {
        assert!(Selector::new("B").matches("B", "reduce"));
        assert!(Selector::new("reduce").matches("B", "reduce"));
        assert!(!Selector::new("id:reduce").matches("B", "reduce"));
        assert!(Selector::new("task:red*").matches("B", "reduce"));
    }
}
