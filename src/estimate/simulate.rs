//! A greedy list scheduler over expected durations: when each remaining
//! piece of a run starts and ends if every piece takes what history
//! expects and the run's parallelism holds the rest in the queue.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// One piece of the remaining work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    /// How long it (still) takes, in milliseconds.
    pub duration: i64,
    /// It takes one of the run's slots (a task); a region's placeholder
    /// does not.
    pub slot: bool,
    /// Items that must end first (positions in the same list).
    pub deps: Vec<usize>,
    /// Already running since this moment: it holds its slot from the
    /// start and ends `duration` after now.
    pub running_since: Option<i64>,
}

/// When each item starts and ends (`None`: it waits for an item that
/// never ends, which a well-formed list does not have). Ready items start
/// in list order (the engine starts ready nodes in insertion order) as
/// long as fewer than `slots` slot-holding items run; items without a
/// slot start as soon as they are ready.
pub(crate) fn schedule(items: &[Item], slots: usize, now: i64) -> Vec<Option<(i64, i64)>> {
    let slots = slots.max(1);
    let mut out = vec![None; items.len()];
    let mut waiting: Vec<usize> = items.iter().map(|i| i.deps.len()).collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (i, item) in items.iter().enumerate() {
        for &d in &item.deps {
            succs[d].push(i);
        }
    }
    let mut ends: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut used = 0usize;
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        match item.running_since {
            Some(since) => {
                let end = now + item.duration.max(0);
                out[i] = Some((since, end));
                ends.push(Reverse((end, i)));
                used += usize::from(item.slot);
            }
            None if waiting[i] == 0 => {
                ready.insert(i);
            }
            None => {}
        }
    }
    let mut t = now;
    loop {
        let mut started = Vec::new();
        for &i in &ready {
            if !items[i].slot || used < slots {
                used += usize::from(items[i].slot);
                started.push(i);
            }
        }
        for i in started {
            ready.remove(&i);
            let end = t + items[i].duration.max(0);
            out[i] = Some((t, end));
            ends.push(Reverse((end, i)));
        }
        let Some(Reverse((end, i))) = ends.pop() else {
            break;
        };
        t = end;
        used -= usize::from(items[i].slot);
        for &s in &succs[i] {
            waiting[s] -= 1;
            if waiting[s] == 0 && items[s].running_since.is_none() {
                ready.insert(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(duration: i64, deps: &[usize]) -> Item {
        Item {
            duration,
            slot: true,
            deps: deps.to_vec(),
            running_since: None,
        }
    }

    #[test]
    fn one_slot_queues_independent_items_in_order() {
        let items = [task(10, &[]), task(20, &[]), task(5, &[])];
        let got = schedule(&items, 1, 100);
        assert_eq!(got, [Some((100, 110)), Some((110, 130)), Some((130, 135))]);
        let free = schedule(&items, usize::MAX, 100);
        assert_eq!(free, [Some((100, 110)), Some((100, 120)), Some((100, 105))]);
    }

    #[test]
    fn placeholders_take_no_slot() {
        let mut gap = task(50, &[]);
        gap.slot = false;
        let items = [task(10, &[]), gap, task(10, &[1])];
        let got = schedule(&items, 1, 0);
        assert_eq!(got, [Some((0, 10)), Some((0, 50)), Some((50, 60))]);
    }

    #[test]
    fn running_items_hold_their_slot_from_the_start() {
        let mut running = task(30, &[]);
        running.running_since = Some(-70);
        let items = [running, task(10, &[]), task(10, &[0])];
        let got = schedule(&items, 1, 0);
        assert_eq!(got, [Some((-70, 30)), Some((30, 40)), Some((40, 50))]);
    }
}
