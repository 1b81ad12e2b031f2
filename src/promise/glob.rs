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

    #[test]
    fn selectors() {
        assert!(Selector::new("B").matches("B", "reduce"));
        assert!(Selector::new("reduce").matches("B", "reduce"));
        assert!(!Selector::new("id:reduce").matches("B", "reduce"));
        assert!(Selector::new("task:red*").matches("B", "reduce"));
    }
}
