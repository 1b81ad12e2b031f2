//! Percentiles of past durations: per task name, per shape region, per
//! run of a workflow.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::store::{RunSample, TaskSample};

/// Samples from the same commit are preferred once there are at least this
/// many of them; with fewer, every sample of the task counts.
pub const MIN_SAME_COMMIT: usize = 3;

/// The `p`-th percentile (`0.0..=1.0`) of `sorted` (ascending), linearly
/// interpolated between the two nearest ranks and rounded to the
/// millisecond; `None` for no samples.
///
/// ```
/// use orch::estimate::percentile;
/// assert_eq!(percentile(&[100, 200], 0.5), Some(150));
/// assert_eq!(percentile(&[10, 20, 30, 40, 50], 0.8), Some(42));
/// assert_eq!(percentile(&[], 0.5), None);
/// ```
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let frac = rank - lo as f64;
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    Some((a + (b - a) * frac).round() as i64)
}

/// What past durations say about one thing (a task, a region, a run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The median, in milliseconds.
    pub median_ms: i64,
    /// The 80th percentile, in milliseconds.
    pub p80_ms: i64,
    /// How many samples they are built from.
    pub samples: usize,
    /// True when the samples are all from the commit the run started
    /// from.
    pub same_commit: bool,
}

impl Stats {
    /// The statistics of `durations` (milliseconds, any order); `None`
    /// for no samples.
    ///
    /// ```
    /// use orch::estimate::Stats;
    /// let s = Stats::from_durations(vec![300, 100, 200]).unwrap();
    /// assert_eq!((s.median_ms, s.p80_ms, s.samples), (200, 260, 3));
    /// assert_eq!(Stats::from_durations(vec![]), None);
    /// ```
    pub fn from_durations(mut durations: Vec<i64>) -> Option<Stats> {
        durations.sort_unstable();
        Some(Stats {
            median_ms: percentile(&durations, 0.5)?,
            p80_ms: percentile(&durations, 0.8)?,
            samples: durations.len(),
            same_commit: false,
        })
    }

    /// The statistics of the durations of `items`, preferring those of
    /// `commit` when there are at least [`MIN_SAME_COMMIT`] of them.
    fn preferring<'a>(
        items: impl Iterator<Item = (i64, Option<&'a str>)> + Clone,
        commit: Option<&str>,
    ) -> Option<Stats> {
        if let Some(c) = commit {
            let same: Vec<i64> = items
                .clone()
                .filter(|(_, k)| *k == Some(c))
                .map(|(d, _)| d)
                .collect();
            if same.len() >= MIN_SAME_COMMIT {
                return Stats::from_durations(same).map(|s| Stats {
                    same_commit: true,
                    ..s
                });
            }
        }
        Stats::from_durations(items.map(|(d, _)| d).collect())
    }
}

/// The history of a workflow that estimates are built from: statistics
/// of each task name's successful attempts, of the workflow's runs, and
/// the raw samples (for the regions between two nodes).
#[derive(Clone, Debug, Default)]
pub struct History {
    tasks: BTreeMap<String, Stats>,
    fallback: Option<Stats>,
    runs: Option<Stats>,
    /// Per past run, per node: (start, end) of its successful attempt.
    nodes: HashMap<String, HashMap<String, (i64, i64)>>,
    commit: Option<String>,
}

impl History {
    /// The history of `samples` (successful attempts) and `runs`
    /// (succeeded runs), for a run of `commit` (`None`: no preference).
    ///
    /// ```
    /// use orch::estimate::History;
    /// use orch::store::TaskSample;
    /// let samples: Vec<TaskSample> = [100, 200, 300]
    ///     .iter()
    ///     .enumerate()
    ///     .map(|(i, ms)| TaskSample::new(&format!("r{i}"), "a", "extract", 1, 0, *ms))
    ///     .collect();
    /// let h = History::new(&samples, &[], None);
    /// assert_eq!(h.task("extract").unwrap().median_ms, 200);
    /// assert!(h.task("load").is_none());
    /// ```
    pub fn new(samples: &[TaskSample], runs: &[RunSample], commit: Option<&str>) -> History {
        let mut by_task: BTreeMap<&str, Vec<&TaskSample>> = BTreeMap::new();
        let mut nodes: HashMap<String, HashMap<String, (i64, i64)>> = HashMap::new();
        for s in samples {
            by_task.entry(&s.task).or_default().push(s);
            nodes
                .entry(s.run.clone())
                .or_default()
                .insert(s.node.clone(), (s.started_ms, s.finished_ms));
        }
        let tasks = by_task
            .into_iter()
            .filter_map(|(task, list)| {
                let items = list.iter().map(|s| (s.duration_ms(), s.commit.as_deref()));
                Some((task.to_string(), Stats::preferring(items, commit)?))
            })
            .collect();
        let all = samples
            .iter()
            .map(|s| (s.duration_ms(), s.commit.as_deref()));
        let runs_items = runs.iter().map(|r| (r.duration_ms(), r.commit.as_deref()));
        History {
            tasks,
            fallback: Stats::preferring(all, commit),
            runs: Stats::preferring(runs_items, commit),
            nodes,
            commit: commit.map(str::to_string),
        }
    }

    /// The statistics of a task name's successful attempts.
    pub fn task(&self, name: &str) -> Option<&Stats> {
        self.tasks.get(name)
    }

    /// The statistics of every successful attempt of the workflow,
    /// whatever the task: the fallback for a task with no history.
    pub fn fallback(&self) -> Option<&Stats> {
        self.fallback.as_ref()
    }

    /// The statistics of the workflow's succeeded runs, start to end.
    pub fn runs(&self) -> Option<&Stats> {
        self.runs.as_ref()
    }

    /// How long, in past runs, node `to` started after node `from`
    /// finished: what a region between them (a shape promise's) took,
    /// queue waits included. Only runs where both succeeded count.
    pub fn gap(&self, from: &str, to: &str) -> Option<Stats> {
        let gaps: Vec<i64> = self
            .nodes
            .values()
            .filter_map(|n| Some((n.get(to)?.0 - n.get(from)?.1).max(0)))
            .collect();
        Stats::from_durations(gaps)
    }

    /// The commit preferred, if any.
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }
}
