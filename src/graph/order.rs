//! The topological order the graph and each batch keep incrementally
//! (Pearce–Kelly).

use std::hash::Hash;

use super::{FastMap, FastSet};

/// Calls back with each successor (or predecessor) of a node.
type Neighbours<'a, N> = &'a dyn Fn(N, &mut dyn FnMut(N));

/// Pearce–Kelly: keeps a topological order when the edge `x -> y` is
/// added while `ord(y) < ord(x)`. Searches forward from `y` among nodes
/// before `x` in the order; reaching `x` means a cycle (`Err` with the path
/// `y ~> x`). Otherwise the nodes found (`y` and its descendants up to
/// `x`) must come after `x`. When they have no descendant beyond `x` (the
/// common case of an edge into a node that waits at the end of a region,
/// or into a node no other node follows yet), they move to the end of the
/// order, after every node (places from `next` on). Otherwise a backward
/// search from `x` among nodes after `y` finds the nodes that must stay
/// before them, and both groups share their own places again, those
/// reaching `x` first. Returns the new places to set. Only nodes between
/// `y` and `x` in the order are ever looked at, so adding an edge that
/// already agrees with the order costs nothing at all.
pub(super) fn reorder<N: Copy + Eq + Hash>(
    y: N,
    x: N,
    next: &mut u64,
    ord: &dyn Fn(N) -> u64,
    succs: Neighbours<'_, N>,
    preds: Neighbours<'_, N>,
) -> Result<Vec<(N, u64)>, Vec<N>> {
    let (lo, hi) = (ord(y), ord(x));
    let mut parent: FastMap<N, N> = FastMap::default();
    let mut forward = vec![y];
    let mut stack = vec![y];
    let mut seen: FastSet<N> = FastSet::default();
    seen.insert(y);
    let mut found = None;
    let mut beyond = false;
    while let Some(n) = stack.pop() {
        succs(n, &mut |s| {
            if found.is_some() {
                return;
            }
            if s == x {
                found = Some(n);
            } else if ord(s) > hi {
                beyond = true;
            } else if seen.insert(s) {
                parent.insert(s, n);
                forward.push(s);
                stack.push(s);
            }
        });
        if let Some(last) = found {
            let mut path = vec![x, last];
            let mut cur = last;
            while let Some(&p) = parent.get(&cur) {
                path.push(p);
                cur = p;
            }
            path.reverse();
            return Err(path);
        }
    }
    forward.sort_by_key(|&n| ord(n));
    if !beyond {
        let start = *next;
        *next += forward.len() as u64;
        return Ok(forward.into_iter().zip(start..).collect());
    }
    let mut backward = vec![x];
    let mut stack = vec![x];
    let mut seen: FastSet<N> = FastSet::default();
    seen.insert(x);
    while let Some(n) = stack.pop() {
        preds(n, &mut |p| {
            if ord(p) > lo && seen.insert(p) {
                backward.push(p);
                stack.push(p);
            }
        });
    }
    backward.sort_by_key(|&n| ord(n));
    let mut slots: Vec<u64> = backward.iter().chain(&forward).map(|&n| ord(n)).collect();
    slots.sort_unstable();
    Ok(backward.into_iter().chain(forward).zip(slots).collect())
}
