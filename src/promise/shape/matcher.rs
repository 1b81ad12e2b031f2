//! The matcher: whether a region's series-parallel tree is an instance
//! of a shape, within fixed budgets of steps, glob work and states, so
//! that a check never hangs the engine (it gives up instead).

use std::collections::HashMap;

use super::region::{Region, RegionNode, Tree};
use super::Shape;
use crate::promise::glob::Glob;

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

pub(super) struct Matcher<'r> {
    pub(super) region: &'r Region,
    pub(super) patterns: Vec<Glob>,
    pub(super) steps: u64,
    pub(super) glob_work: u64,
    pub(super) gave_up: bool,
}

/// Whether the node's task name or id matches `g`, charged to `work`.
fn glob_hit(work: &mut u64, g: &Glob, n: &RegionNode) -> bool {
    let cost = (g.as_str().len() as u64 + 1) * (n.task.len() as u64 + n.id.len() as u64 + 2);
    *work = work.saturating_add(cost);
    g.matches(&n.task) || g.matches(&n.id)
}

impl Matcher<'_> {
    pub(super) fn matches(&mut self, s: &Shape, t: &Tree) -> bool {
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
