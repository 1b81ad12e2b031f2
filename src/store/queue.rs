//! Runners and the queue of attempts they claim, as the store keeps them.
//!
//! A runner registers with its capabilities (an [`Offer`]) and a number of
//! slots, and holds a lease it renews by heartbeat (the store's clock
//! decides expiry). An attempt sent to runners is queued under its
//! normalised requirement set ([`queue_key`]); a runner claims the oldest
//! attempts of the queues its capabilities satisfy, atomically, and holds
//! each claim under its own lease. The queue row of a node names the
//! attempt number it is for: that number is the fence a report must
//! carry ([`crate::store::Store::claim_holds`]).

use serde::{Deserialize, Serialize};

use crate::exec::resources::Offer;
use crate::exec::AttemptId;
use crate::model::Resources;

/// The most attempts one claim hands out.
pub const MAX_CLAIM: usize = 64;
/// The most slots a runner may declare.
pub const MAX_SLOTS: u32 = 1024;
/// The longest runner name, version or queued payload the store keeps
/// (bytes): names and versions up to 128, payloads up to 8 MiB.
pub const MAX_NAME: usize = 128;
/// The largest attempt payload (the spec a runner runs), in bytes.
pub const MAX_PAYLOAD: usize = 8 << 20;

/// The queue of an attempt: its requirement set, normalised so that the
/// same requirements always name the same queue (labels sorted and
/// deduplicated, absent numbers left out). No requirement at all is the
/// queue `default`.
///
/// ```
/// use orch::model::Resources;
/// use orch::store::queue::queue_key;
/// let r = Resources { cpu: Some(2.0), labels: vec!["ssd".into(), "exec=slurm".into(), "ssd".into()], ..Default::default() };
/// assert_eq!(queue_key(&r), "cpu=2,labels=exec=slurm+ssd");
/// assert_eq!(queue_key(&Resources::default()), "default");
/// ```
pub fn queue_key(need: &Resources) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = need.cpu {
        parts.push(format!("cpu={cpu}"));
    }
    if let Some(gpu) = need.gpu {
        parts.push(format!("gpu={gpu}"));
    }
    if let Some(mem) = need.memory {
        parts.push(format!("memory={mem}"));
    }
    let mut labels = need.labels.clone();
    labels.sort();
    labels.dedup();
    if !labels.is_empty() {
        parts.push(format!("labels={}", labels.join("+")));
    }
    if parts.is_empty() {
        "default".to_string()
    } else {
        parts.join(",")
    }
}

/// What a runner declares when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunnerSpec {
    /// Its id (chosen by the server, unique).
    pub id: String,
    /// Its name, for people (`--name`, else the host name).
    pub name: String,
    /// What it offers a task.
    pub capabilities: Offer,
    /// How many attempts it runs at once.
    pub slots: u32,
    /// The orch version it runs.
    pub version: String,
}

impl RunnerSpec {
    /// A runner `id` named `name` offering `capabilities` in `slots` slots.
    pub fn new(id: &str, name: &str, capabilities: Offer, slots: u32, version: &str) -> RunnerSpec {
        RunnerSpec {
            id: id.to_string(),
            name: name.to_string(),
            capabilities,
            slots,
            version: version.to_string(),
        }
    }
}

/// A registered runner, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunnerRecord {
    /// What it declared.
    #[serde(flatten)]
    pub spec: RunnerSpec,
    /// When it registered (milliseconds since the Unix epoch, the store's
    /// clock).
    pub registered_ms: i64,
    /// Until when its lease holds.
    pub lease_until_ms: i64,
    /// Whether it drains: it finishes what it holds and claims nothing
    /// new.
    pub draining: bool,
    /// How many attempts it holds now.
    pub running: u64,
    /// Whether its lease holds (against the store's clock when read).
    pub alive: bool,
}

/// An attempt a runner holds now ([`Store::claims`](crate::store::Store::claims)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claim {
    /// The runner's id.
    pub runner: String,
    /// The attempt.
    pub attempt: AttemptId,
    /// When the runner claimed it (milliseconds since the Unix epoch, the
    /// store's clock).
    pub claimed_ms: i64,
}

/// An attempt waiting for (or held by) a runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueuedAttempt {
    /// The attempt.
    pub id: AttemptId,
    /// Its queue ([`queue_key`] of `requires`).
    pub queue: String,
    /// Its requirements.
    pub requires: Resources,
    /// What the runner needs to run it (opaque to the store; JSON).
    pub payload: String,
}

impl QueuedAttempt {
    /// Attempt `id`, requiring `requires`, with its `payload`.
    pub fn new(id: AttemptId, requires: Resources, payload: String) -> QueuedAttempt {
        QueuedAttempt {
            id,
            queue: queue_key(&requires),
            requires,
            payload,
        }
    }
}

/// What a heartbeat learns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Beat {
    /// The runner was asked to drain.
    pub draining: bool,
    /// Attempts it believes it holds that are no longer its own (their
    /// claim expired or was cleared): it must stop them.
    pub lost: Vec<AttemptId>,
}

/// One queue as the store sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueRow {
    /// Its key.
    pub key: String,
    /// Its requirements.
    pub requires: Resources,
    /// Attempts waiting.
    pub depth: u64,
    /// Attempts held by runners.
    pub running: u64,
    /// When its oldest waiting attempt was queued (the store's clock).
    pub oldest_queued_ms: Option<i64>,
}

/// The status of one queue (`GET /api/v1/queues`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStatus {
    /// The queue's key.
    pub key: String,
    /// Its requirements.
    pub requires: Resources,
    /// Attempts waiting.
    pub depth: u64,
    /// Attempts held by runners.
    pub running: u64,
    /// How long its oldest waiting attempt has waited, in milliseconds.
    pub oldest_wait_ms: Option<i64>,
    /// The live runners whose capabilities satisfy it (by name).
    pub serving: Vec<String>,
    /// True when no live runner can serve it: its attempts wait until
    /// one registers.
    pub unservable: bool,
}

/// The status of each queue, given the queues and the runners as stored
/// and the store's clock.
pub fn statuses(rows: Vec<QueueRow>, runners: &[RunnerRecord], now_ms: i64) -> Vec<QueueStatus> {
    rows.into_iter()
        .map(|q| {
            let serving: Vec<String> = runners
                .iter()
                .filter(|r| r.alive && r.spec.capabilities.refuses(&q.requires).is_none())
                .map(|r| r.spec.name.clone())
                .collect();
            QueueStatus {
                unservable: serving.is_empty(),
                oldest_wait_ms: q.oldest_queued_ms.map(|t| (now_ms - t).max(0)),
                key: q.key,
                requires: q.requires,
                depth: q.depth,
                running: q.running,
                serving,
            }
        })
        .collect()
}

/// A node's queue row as fences read it: the attempt number, the
/// claiming runner, the claim's lease, and the store's clock.
pub(crate) type FenceRow = (i64, Option<String>, Option<i64>, i64);

/// Why `runner` does not hold `attempt`, given the queue row of its node
/// (attempt number, claiming runner, claim lease, the store's clock):
/// `None` when it does. Shared by every backend.
pub(crate) fn why_fenced(
    attempt: &AttemptId,
    runner: &str,
    row: Option<FenceRow>,
) -> Option<String> {
    let Some((n, holder, lease_until, now)) = row else {
        return Some(
            "no attempt of this node is queued or claimed (it ended, was cleared or was withdrawn)"
                .into(),
        );
    };
    if n != attempt.attempt as i64 {
        return Some(format!("attempt {n} of this node superseded it"));
    }
    match holder {
        None => Some("it waits in its queue, claimed by no runner".into()),
        Some(h) if h != runner => Some(format!("runner `{h}` holds it, not `{runner}`")),
        Some(_) if lease_until.is_some_and(|l| l < now) => {
            Some("its claim's lease expired (the runner missed its heartbeats)".into())
        }
        Some(_) => None,
    }
}

/// Whether an engine waiting for `attempt` will never hear of it, given
/// its node's queue row: gone, superseded, or claimed under an expired
/// lease.
pub(crate) fn is_lost(attempt: &AttemptId, row: Option<&FenceRow>) -> bool {
    match row {
        None => true,
        Some((n, _, _, _)) if *n != attempt.attempt as i64 => true,
        Some((_, Some(_), Some(lease_until), now)) => lease_until < now,
        Some(_) => false,
    }
}

/// How many runs and queues a runner's [`Affinity`] remembers.
pub const MAX_AFFINITY: usize = 32;

/// What a runner claimed lately, most recent first (at most
/// [`MAX_AFFINITY`] each): the runs it serves and the queues it serves.
/// A claim prefers attempts of those, and leaves to another runner with
/// free slots the attempts that runner has the stronger affinity for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Affinity {
    /// Runs it ran attempts of lately.
    #[serde(default)]
    pub runs: Vec<String>,
    /// Queues it claimed from lately.
    #[serde(default)]
    pub queues: Vec<String>,
}

impl Affinity {
    /// How strongly a runner with this affinity is drawn to an attempt of
    /// `run` in `queue`: 2 when it serves the run, 1 when it serves the
    /// queue, else 0.
    pub fn level(&self, run: &str, queue: &str) -> u8 {
        if self.runs.iter().any(|r| r == run) {
            2
        } else if self.queues.iter().any(|q| q == queue) {
            1
        } else {
            0
        }
    }

    /// Remembers the attempts just claimed (in claim order): their runs
    /// and queues come first.
    pub fn note<'a>(&mut self, claimed: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let claimed: Vec<(&str, &str)> = claimed.into_iter().collect();
        fn front(list: &mut Vec<String>, new: Vec<&str>) {
            let mut out: Vec<String> = Vec::with_capacity(MAX_AFFINITY);
            for x in new.into_iter().map(str::to_string).chain(list.drain(..)) {
                if out.len() < MAX_AFFINITY && !out.contains(&x) {
                    out.push(x);
                }
            }
            *list = out;
        }
        front(&mut self.runs, claimed.iter().map(|(r, _)| *r).collect());
        front(&mut self.queues, claimed.iter().map(|(_, q)| *q).collect());
    }

    /// [`Affinity::note`], then what a store writes of it: its JSON when
    /// that changed it, `None` when it did not (a runner claiming from the
    /// runs and queues it served last, or claiming nothing).
    pub(crate) fn noted<'a>(
        &mut self,
        claimed: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<String> {
        let before = self.clone();
        self.note(claimed);
        (*self != before).then(|| serde_json::to_string(self).expect("an affinity is JSON"))
    }
}

/// A waiting attempt a claim may take: its run, its queue and its place
/// in the order attempts were queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) run: String,
    pub(crate) queue: String,
    pub(crate) seq: i64,
}

/// Another live runner, not draining, with free slots: attempts it has
/// the stronger affinity for wait for it, up to its free slots.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rival {
    /// Its free slots.
    pub(crate) free: usize,
    /// What it claimed lately.
    pub(crate) affinity: Affinity,
    /// The queues (of the candidates) its capabilities satisfy.
    pub(crate) serves: std::collections::HashSet<String>,
}

/// The most attempts a claim leaves to rivals (bounds how many
/// candidates a claim reads).
pub(crate) const MAX_RESERVED: usize = 1024;

/// How many candidates a claim of `n` reads, given its rivals: enough
/// that `n` remain after those left to the rivals.
pub(crate) fn candidates_needed(n: usize, rivals: &[Rival]) -> usize {
    n + rivals
        .iter()
        .map(|r| r.free)
        .sum::<usize>()
        .min(MAX_RESERVED)
}

/// Which of `candidates` a runner with affinity `me` claims, at most `n`,
/// in the order it takes them (indexes into `candidates`).
///
/// The same requirements go to the same runner while it has slots, and a
/// run's attempts prefer the runner already serving it: in order of
/// queueing, each attempt that a rival with free slots is drawn to more
/// strongly than `me` (it serves the run, or the queue while `me` serves
/// neither) is left to the most strongly drawn such rival, as long as
/// that rival has slots for it. Of the others, `me` takes those of runs
/// it serves first, then those of queues it serves, then the rest, each
/// oldest first.
pub(crate) fn pick(
    me: &Affinity,
    rivals: &[Rival],
    candidates: &[Candidate],
    n: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| candidates[i].seq);
    let mut budget: Vec<usize> = rivals.iter().map(|r| r.free).collect();
    let mut open = Vec::new();
    for i in order {
        let c = &candidates[i];
        let mine = me.level(&c.run, &c.queue);
        let rival = rivals
            .iter()
            .enumerate()
            .filter(|(k, r)| budget[*k] > 0 && r.serves.contains(&c.queue))
            .map(|(k, r)| (r.affinity.level(&c.run, &c.queue), k))
            .filter(|(level, _)| *level > mine)
            // The most strongly drawn; of those, the first.
            .max_by_key(|(level, k)| (*level, std::cmp::Reverse(*k)));
        match rival {
            Some((_, k)) => budget[k] -= 1,
            None => open.push((std::cmp::Reverse(mine), c.seq, i)),
        }
    }
    open.sort();
    open.into_iter().take(n).map(|(_, _, i)| i).collect()
}

/// Whether a claim of one attempt of `run` in `queue`, made now by a
/// runner with affinity `me` whose capabilities satisfy it and that has
/// a free slot, with no other attempt waiting, would take it: [`pick`]
/// with that one candidate (a rival with free slots that serves the
/// queue and is drawn to it more strongly keeps it). What a hand-off
/// ([`crate::store::Store::enqueue_for`]) decides by.
pub(crate) fn takes_alone(me: &Affinity, rivals: &[Rival], run: &str, queue: &str) -> bool {
    let only = [Candidate {
        run: run.to_string(),
        queue: queue.to_string(),
        seq: 0,
    }];
    pick(me, rivals, &only, 1) == [0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(run: &str, queue: &str, seq: i64) -> Candidate {
        Candidate {
            run: run.into(),
            queue: queue.into(),
            seq,
        }
    }

    fn affinity(runs: &[&str], queues: &[&str]) -> Affinity {
        Affinity {
            runs: runs.iter().map(|s| s.to_string()).collect(),
            queues: queues.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn rival(free: usize, runs: &[&str], queues: &[&str], serves: &[&str]) -> Rival {
        Rival {
            free,
            affinity: affinity(runs, queues),
            serves: serves.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn alone_a_runner_takes_its_runs_then_its_queues_then_the_oldest() {
        let cs = [
            cand("r1", "default", 1),
            cand("r2", "gpu", 2),
            cand("r3", "default", 3),
            cand("r4", "ssd", 4),
        ];
        let me = affinity(&["r4"], &["gpu"]);
        assert_eq!(pick(&me, &[], &cs, 10), [3, 1, 0, 2]);
        assert_eq!(pick(&me, &[], &cs, 2), [3, 1]);
        assert_eq!(pick(&Affinity::default(), &[], &cs, 3), [0, 1, 2]);
    }

    #[test]
    fn a_queue_waits_for_its_runner_while_it_has_slots() {
        let cs = [
            cand("r1", "default", 1),
            cand("r2", "default", 2),
            cand("r3", "default", 3),
            cand("r4", "ssd", 4),
        ];
        let me = Affinity::default();
        // The rival serves `default` with two free slots: the two oldest
        // are left to it; the third and the other queue are open.
        let r = rival(2, &[], &["default"], &["default", "ssd"]);
        assert_eq!(pick(&me, &[r], &cs, 10), [2, 3]);
        // Full, it holds nothing back.
        let full = rival(0, &[], &["default"], &["default", "ssd"]);
        assert_eq!(pick(&me, &[full], &cs, 10), [0, 1, 2, 3]);
        // A rival that cannot serve the queue holds nothing back either.
        let cannot = rival(2, &[], &["default"], &["ssd"]);
        assert_eq!(pick(&me, &[cannot], &cs, 10), [0, 1, 2, 3]);
        // Nor from a runner that serves the queue too.
        let r = rival(2, &[], &["default"], &["default", "ssd"]);
        let both = affinity(&[], &["default"]);
        assert_eq!(pick(&both, &[r], &cs, 10), [0, 1, 2, 3]);
    }

    #[test]
    fn a_runs_attempts_wait_for_the_runner_serving_it() {
        let cs = [cand("r1", "default", 1), cand("r2", "default", 2)];
        // `me` serves the queue, the rival serves run r1: r1's attempt is
        // the rival's.
        let me = affinity(&[], &["default"]);
        let r = rival(1, &["r1"], &[], &["default"]);
        assert_eq!(pick(&me, &[r], &cs, 10), [1]);
        // When `me` serves r1 too, it keeps it.
        let me = affinity(&["r1"], &[]);
        let r = rival(1, &["r1"], &[], &["default"]);
        assert_eq!(pick(&me, &[r], &cs, 10), [0, 1]);
        // Of two rivals, the one serving the run gets it; the one serving
        // the queue gets the other.
        let me = Affinity::default();
        let by_queue = rival(1, &[], &["default"], &["default"]);
        let by_run = rival(1, &["r1"], &[], &["default"]);
        assert_eq!(pick(&me, &[by_queue, by_run], &cs, 10), Vec::<usize>::new());
    }

    #[test]
    fn alone_an_attempt_goes_to_the_runner_unless_a_rival_is_drawn_more() {
        let me = affinity(&[], &["default"]);
        assert!(takes_alone(&me, &[], "r1", "default"));
        assert!(takes_alone(&Affinity::default(), &[], "r1", "default"));
        // A rival serving the run keeps it, while it has a free slot.
        let by_run = rival(1, &["r1"], &[], &["default"]);
        assert!(!takes_alone(&me, &[by_run], "r1", "default"));
        let full = rival(0, &["r1"], &[], &["default"]);
        assert!(takes_alone(&me, &[full], "r1", "default"));
        // One drawn only as strongly does not.
        let same = rival(1, &[], &["default"], &["default"]);
        assert!(takes_alone(&me, &[same], "r1", "default"));
        // Nor one that cannot serve the queue.
        let cannot = rival(1, &["r1"], &[], &["gpu"]);
        assert!(takes_alone(&me, &[cannot], "r1", "default"));
    }

    #[test]
    fn affinity_keeps_the_latest_first_and_bounded() {
        let mut a = affinity(&["old"], &["q"]);
        a.note([("r1", "q"), ("r2", "gpu"), ("r1", "q")]);
        assert_eq!(a, affinity(&["r1", "r2", "old"], &["q", "gpu"]));
        for i in 0..100 {
            a.note([(format!("run{i}").as_str(), "q")]);
        }
        assert_eq!(a.runs.len(), MAX_AFFINITY);
        assert_eq!(a.runs[0], "run99");
        assert_eq!(a.level("run99", "x"), 2);
        assert_eq!(a.level("nope", "q"), 1);
        assert_eq!(a.level("nope", "x"), 0);
    }

    #[test]
    fn an_affinity_is_written_only_when_a_claim_changed_it() {
        let mut a = affinity(&["r1"], &["q"]);
        assert_eq!(a.noted([("r1", "q")]), None, "the same run and queue");
        assert_eq!(a.noted([]), None, "nothing claimed");
        let text = a.noted([("r2", "q")]).expect("a new run");
        assert_eq!(text, serde_json::to_string(&a).unwrap());
        assert_eq!(a, affinity(&["r2", "r1"], &["q"]));
        assert!(
            a.noted([("r1", "q")]).is_some(),
            "an older run comes first again"
        );
    }
}
