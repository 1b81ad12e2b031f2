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
