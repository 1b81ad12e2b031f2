//! Runners and the queue of attempts on SQLite: every claim inside one
//! `BEGIN IMMEDIATE` transaction, so two claims never overlap.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::schema::NOW_MS;
use super::SqliteStore;
use crate::error::{Error, Result};
use crate::exec::resources::Offer;
use crate::exec::AttemptId;
use crate::model::Resources;
use crate::store::queue::{
    candidates_needed, pick, takes_alone, Affinity, Beat, Candidate, Claim, QueueRow,
    QueuedAttempt, Rival, RunnerRecord, RunnerSpec,
};

const RUNNER_COLUMNS: &str =
    "id, name, capabilities, slots, version, registered_at, lease_until, draining,
     (SELECT count(*) FROM queue q WHERE q.runner = runners.id)";

fn runner_row(r: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<RunnerRecord> {
    let caps: String = r.get(2)?;
    let capabilities: Offer = serde_json::from_str(&caps).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let lease_until: i64 = r.get(6)?;
    Ok(RunnerRecord {
        spec: RunnerSpec {
            id: r.get(0)?,
            name: r.get(1)?,
            capabilities,
            slots: r.get(3)?,
            version: r.get(4)?,
        },
        registered_ms: r.get(5)?,
        lease_until_ms: lease_until,
        draining: r.get::<_, i64>(7)? != 0,
        running: r.get::<_, i64>(8)? as u64,
        alive: lease_until >= now,
    })
}

fn requires(text: &str) -> rusqlite::Result<Resources> {
    json(0, text)
}

/// A JSON column (number `col`) read back.
fn json<T: serde::de::DeserializeOwned>(col: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn now(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(&format!("SELECT {NOW_MS}"), [], |r| r.get(0))
}

/// Why `runner` does not hold `attempt`, if it does not.
fn fence(
    tx: &Transaction<'_>,
    attempt: &AttemptId,
    runner: &str,
) -> rusqlite::Result<Option<String>> {
    let row: Option<crate::store::queue::FenceRow> = tx
        .query_row(
            &format!(
                "SELECT attempt, runner, lease_until, {NOW_MS} FROM queue WHERE run = ?1 AND node = ?2"
            ),
            params![attempt.run, attempt.node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    Ok(crate::store::queue::why_fenced(attempt, runner, row))
}

/// Queues `a`, replacing whatever the queue held for its node, waiting.
fn insert_queued(tx: &Transaction<'_>, a: &QueuedAttempt) -> rusqlite::Result<()> {
    let requires = serde_json::to_string(&a.requires).expect("resources are JSON");
    tx.execute(
        &format!(
            "INSERT INTO queue (run, node, attempt, queue, requires, payload, queued_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW_MS}, (SELECT coalesce(max(seq), 0) + 1 FROM queue))
             ON CONFLICT (run, node) DO UPDATE SET attempt = ?3, queue = ?4, requires = ?5,
                payload = ?6, queued_at = {NOW_MS}, seq = (SELECT coalesce(max(seq), 0) + 1 FROM queue), runner = NULL, claimed_at = NULL, lease_until = NULL"
        ),
        params![a.id.run, a.id.node, a.id.attempt, a.queue, requires, a.payload],
    )?;
    Ok(())
}

/// What a claim by `runner` (or a hand-off to it) decides by: its
/// capabilities, slots, whether it drains, how many attempts it holds,
/// whether its lease holds, and its affinity; `None` for an unknown runner.
type Claimant = (String, u32, i64, i64, bool, String);

fn claimant(tx: &Transaction<'_>, runner: &str) -> rusqlite::Result<Option<Claimant>> {
    tx.query_row(
        &format!(
            "SELECT capabilities, slots, draining,
                (SELECT count(*) FROM queue WHERE runner = ?1),
                lease_until >= {NOW_MS}, affinity
             FROM runners WHERE id = ?1"
        ),
        [runner],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )
    .optional()
}

/// Whether `a`, about to be queued, goes to `runner` at once
/// ([`crate::store::Store::enqueue_for`]): the runner's affinity when it
/// does.
fn hand_off_to(
    tx: &Transaction<'_>,
    a: &QueuedAttempt,
    runner: &str,
) -> rusqlite::Result<Option<Affinity>> {
    let Some((caps, slots, draining, running, alive, affinity)) = claimant(tx, runner)? else {
        return Ok(None);
    };
    if !alive || draining != 0 || running >= slots as i64 {
        return Ok(None);
    }
    let offer: Offer = json(0, &caps)?;
    if offer.refuses(&a.requires).is_some() {
        return Ok(None);
    }
    // Another attempt waiting might be the one a claim takes first.
    let others: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM queue WHERE runner IS NULL AND NOT (run = ?1 AND node = ?2))",
        params![a.id.run, a.id.node],
        |r| r.get(0),
    )?;
    if others {
        return Ok(None);
    }
    let mine: Affinity = json(5, &affinity)?;
    let mut stmt = tx.prepare(&format!(
        "SELECT capabilities, slots - (SELECT count(*) FROM queue q WHERE q.runner = runners.id),
                affinity
         FROM runners WHERE id <> ?1 AND draining = 0 AND lease_until >= {NOW_MS}"
    ))?;
    let rows = stmt
        .query_map([runner], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut rivals = Vec::new();
    for (caps, free, affinity) in rows.into_iter().filter(|r| r.1 > 0) {
        let offer: Offer = json(0, &caps)?;
        let mut serves = std::collections::HashSet::new();
        if offer.refuses(&a.requires).is_none() {
            serves.insert(a.queue.clone());
        }
        rivals.push(Rival {
            free: free as usize,
            affinity: json(2, &affinity)?,
            serves,
        });
    }
    Ok(takes_alone(&mine, &rivals, &a.id.run, &a.queue).then_some(mine))
}

impl SqliteStore {
    fn immediate<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let v = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// A read in one snapshot, without taking the write lock.
    fn snapshot<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.err(e))?;
        let v = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(v)
    }

    pub(super) fn q_register_runner(
        &self,
        spec: &RunnerSpec,
        lease_ms: i64,
    ) -> Result<RunnerRecord> {
        let caps = serde_json::to_string(&spec.capabilities).expect("an offer is JSON");
        self.immediate(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO runners (id, name, capabilities, slots, version, registered_at, lease_until, draining)
                     VALUES (?1, ?2, ?3, ?4, ?5, {NOW_MS}, {NOW_MS} + ?6, 0)
                     ON CONFLICT (id) DO UPDATE SET name = ?2, capabilities = ?3, slots = ?4,
                        version = ?5, lease_until = {NOW_MS} + ?6, draining = 0, affinity = '{{}}'"
                ),
                params![spec.id, spec.name, caps, spec.slots, spec.version, lease_ms],
            )?;
            let now = now(tx)?;
            tx.query_row(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE id = ?1"),
                [&spec.id],
                |r| runner_row(r, now),
            )
        })
    }

    pub(super) fn q_heartbeat(
        &self,
        id: &str,
        holding: &[AttemptId],
        lease_ms: i64,
    ) -> Result<Beat> {
        let beat = self.immediate(|tx| {
            let n = tx.execute(
                &format!("UPDATE runners SET lease_until = {NOW_MS} + ?2 WHERE id = ?1"),
                params![id, lease_ms],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let draining: i64 =
                tx.query_row("SELECT draining FROM runners WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
            // Only the claims it says it holds are renewed: one it gave up
            // (an end no server would take) expires, and the engine that
            // waits for it runs its node again.
            let mut lost = Vec::new();
            for a in holding {
                if fence(tx, a, id)?.is_some() {
                    lost.push(a.clone());
                } else {
                    tx.execute(
                        &format!(
                            "UPDATE queue SET lease_until = {NOW_MS} + ?3 WHERE run = ?1 AND node = ?2"
                        ),
                        params![a.run, a.node, lease_ms],
                    )?;
                }
            }
            Ok(Some(Beat {
                draining: draining != 0,
                lost,
            }))
        })?;
        beat.ok_or_else(|| Error::UnknownRunner(id.to_string()))
    }

    pub(super) fn q_runners(&self) -> Result<(Vec<RunnerRecord>, i64)> {
        self.snapshot(|tx| {
            let now = now(tx)?;
            let mut stmt = tx.prepare(&format!(
                "SELECT {RUNNER_COLUMNS} FROM runners ORDER BY name, id"
            ))?;
            let rows = stmt
                .query_map([], |r| runner_row(r, now))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, now))
        })
    }

    pub(super) fn q_drain_runner(&self, id: &str) -> Result<bool> {
        self.immediate(|tx| {
            Ok(tx.execute("UPDATE runners SET draining = 1 WHERE id = ?1", [id])? == 1)
        })
    }

    pub(super) fn q_enqueue(&self, a: &QueuedAttempt) -> Result<()> {
        self.immediate(|tx| insert_queued(tx, a))
    }

    pub(super) fn q_enqueue_for(
        &self,
        a: &QueuedAttempt,
        runner: &str,
        lease_ms: i64,
    ) -> Result<bool> {
        self.immediate(|tx| {
            let taker = hand_off_to(tx, a, runner)?;
            insert_queued(tx, a)?;
            let Some(mut mine) = taker else {
                return Ok(false);
            };
            tx.execute(
                &format!(
                    "UPDATE queue SET runner = ?3, claimed_at = {NOW_MS}, lease_until = {NOW_MS} + ?4
                     WHERE run = ?1 AND node = ?2"
                ),
                params![a.id.run, a.id.node, runner, lease_ms],
            )?;
            if let Some(text) = mine.noted([(a.id.run.as_str(), a.queue.as_str())]) {
                tx.execute(
                    "UPDATE runners SET affinity = ?2 WHERE id = ?1",
                    params![runner, text],
                )?;
            }
            Ok(true)
        })
    }

    pub(super) fn q_release_claim(&self, a: &AttemptId, runner: &str) -> Result<bool> {
        self.immediate(|tx| {
            Ok(tx.execute(
                "UPDATE queue SET runner = NULL, claimed_at = NULL, lease_until = NULL
                 WHERE run = ?1 AND node = ?2 AND attempt = ?3 AND runner = ?4",
                params![a.run, a.node, a.attempt, runner],
            )? == 1)
        })
    }

    pub(super) fn q_claim(
        &self,
        runner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedAttempt>> {
        let claimed = self.immediate(|tx| {
            let Some((caps, slots, draining, running, alive, affinity)) = claimant(tx, runner)?
            else {
                return Ok(None);
            };
            // A runner whose lease ran out (paused, partitioned) claims
            // nothing, even through a long poll it began before: it must
            // heartbeat first.
            if !alive {
                return Ok(Some(Vec::new()));
            }
            let free = (slots as i64 - running).max(0) as usize;
            let n = max.min(free).min(crate::store::queue::MAX_CLAIM);
            if draining != 0 || n == 0 {
                return Ok(Some(Vec::new()));
            }
            let offer: Offer = json(0, &caps)?;
            let mut waiting = Vec::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT DISTINCT queue, requires FROM queue WHERE runner IS NULL",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for (key, req) in rows {
                    waiting.push((key, requires(&req)?));
                }
            }
            let keys: Vec<&String> = waiting
                .iter()
                .filter(|(_, need)| offer.refuses(need).is_none())
                .map(|(k, _)| k)
                .collect();
            if keys.is_empty() {
                return Ok(Some(Vec::new()));
            }
            let mut mine: Affinity = json(5, &affinity)?;
            let rivals = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT capabilities, slots - (SELECT count(*) FROM queue q WHERE q.runner = runners.id),
                            affinity
                     FROM runners WHERE id <> ?1 AND draining = 0 AND lease_until >= {NOW_MS}"
                ))?;
                let rows = stmt
                    .query_map([runner], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut rivals = Vec::new();
                for (caps, free, affinity) in rows.into_iter().filter(|r| r.1 > 0) {
                    let offer: Offer = json(0, &caps)?;
                    rivals.push(Rival {
                        free: free as usize,
                        affinity: json(2, &affinity)?,
                        serves: waiting
                            .iter()
                            .filter(|(_, need)| offer.refuses(need).is_none())
                            .map(|(k, _)| k.clone())
                            .collect(),
                    });
                }
                rivals
            };
            let keys = serde_json::to_string(&keys).expect("strings are JSON");
            let runs = serde_json::to_string(&mine.runs).expect("strings are JSON");
            let queues = serde_json::to_string(&mine.queues).expect("strings are JSON");
            let limit = candidates_needed(n, &rivals) as i64;
            // The runner's own runs first, then its queues, then the oldest:
            // the candidates `pick` chooses from.
            let candidates = {
                let mut stmt = tx.prepare(
                    "SELECT run, node, queue, seq FROM queue
                     WHERE runner IS NULL AND queue IN (SELECT value FROM json_each(?1))
                     ORDER BY run IN (SELECT value FROM json_each(?2)) DESC,
                              queue IN (SELECT value FROM json_each(?3)) DESC,
                              seq
                     LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![keys, runs, queues, limit], |r| {
                    Ok((
                        r.get::<_, String>(1)?,
                        Candidate {
                            run: r.get(0)?,
                            queue: r.get(2)?,
                            seq: r.get(3)?,
                        },
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let chosen: Vec<Candidate> = candidates.iter().map(|(_, c)| c.clone()).collect();
            let mut picked = Vec::new();
            for i in pick(&mine, &rivals, &chosen, n) {
                let (node, c) = &candidates[i];
                let a = tx.query_row(
                    &format!(
                        "UPDATE queue SET runner = ?3, claimed_at = {NOW_MS}, lease_until = {NOW_MS} + ?4
                         WHERE run = ?1 AND node = ?2
                         RETURNING attempt, requires, payload"
                    ),
                    params![c.run, node, runner, lease_ms],
                    |r| {
                        Ok(QueuedAttempt {
                            id: AttemptId::new(c.run.clone(), node.clone(), r.get(0)?),
                            queue: c.queue.clone(),
                            requires: requires(&r.get::<_, String>(1)?)?,
                            payload: r.get(2)?,
                        })
                    },
                )?;
                picked.push(a);
            }
            // Unchanged (it claimed from the runs and queues it served
            // last, or nothing), the affinity is not written again.
            if let Some(text) =
                mine.noted(picked.iter().map(|a| (a.id.run.as_str(), a.queue.as_str())))
            {
                tx.execute(
                    "UPDATE runners SET affinity = ?2 WHERE id = ?1",
                    params![runner, text],
                )?;
            }
            Ok(Some(picked))
        })?;
        claimed.ok_or_else(|| Error::UnknownRunner(runner.to_string()))
    }

    pub(super) fn q_claim_holds(&self, attempt: &AttemptId, runner: &str) -> Result<()> {
        let why = self.immediate(|tx| fence(tx, attempt, runner))?;
        match why {
            None => Ok(()),
            Some(why) => Err(Error::AttemptFenced {
                attempt: attempt.to_string(),
                why,
            }),
        }
    }

    pub(super) fn q_finish_claim(&self, attempt: &AttemptId, runner: &str) -> Result<()> {
        let why = self.immediate(|tx| {
            let why = fence(tx, attempt, runner)?;
            if why.is_none() {
                tx.execute(
                    "DELETE FROM queue WHERE run = ?1 AND node = ?2",
                    params![attempt.run, attempt.node],
                )?;
            }
            Ok(why)
        })?;
        match why {
            None => Ok(()),
            Some(why) => Err(Error::AttemptFenced {
                attempt: attempt.to_string(),
                why,
            }),
        }
    }

    pub(super) fn q_lost_claims(&self, attempts: &[AttemptId]) -> Result<Vec<AttemptId>> {
        self.immediate(|tx| {
            let mut lost = Vec::new();
            for a in attempts {
                let row: Option<crate::store::queue::FenceRow> = tx
                    .query_row(
                        &format!(
                            "SELECT attempt, runner, lease_until, {NOW_MS} FROM queue WHERE run = ?1 AND node = ?2"
                        ),
                        params![a.run, a.node],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                if crate::store::queue::is_lost(a, row.as_ref()) {
                    tx.execute(
                        "DELETE FROM queue WHERE run = ?1 AND node = ?2 AND attempt = ?3",
                        params![a.run, a.node, a.attempt],
                    )?;
                    lost.push(a.clone());
                }
            }
            Ok(lost)
        })
    }

    pub(super) fn q_dequeue(&self, a: &AttemptId) -> Result<bool> {
        self.immediate(|tx| {
            Ok(tx.execute(
                "DELETE FROM queue WHERE run = ?1 AND node = ?2 AND attempt = ?3",
                params![a.run, a.node, a.attempt],
            )? == 1)
        })
    }

    pub(super) fn q_queue_rows(&self) -> Result<(Vec<QueueRow>, i64)> {
        self.snapshot(|tx| {
            let now = now(tx)?;
            let mut stmt = tx.prepare(
                "SELECT queue, min(requires), count(*) FILTER (WHERE runner IS NULL),
                        count(runner), min(queued_at) FILTER (WHERE runner IS NULL)
                 FROM queue GROUP BY queue ORDER BY queue",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(QueueRow {
                        key: r.get(0)?,
                        requires: requires(&r.get::<_, String>(1)?)?,
                        depth: r.get::<_, i64>(2)? as u64,
                        running: r.get::<_, i64>(3)? as u64,
                        oldest_queued_ms: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, now))
        })
    }

    pub(super) fn q_claims(&self, limit: usize) -> Result<Vec<Claim>> {
        self.snapshot(|tx| {
            let mut stmt = tx.prepare(
                "SELECT runner, run, node, attempt, claimed_at FROM queue
                 WHERE runner IS NOT NULL ORDER BY runner, run, node LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit.min(i64::MAX as usize) as i64], |r| {
                    Ok(Claim {
                        runner: r.get(0)?,
                        attempt: AttemptId::new(
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get(3)?,
                        ),
                        claimed_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub(super) fn q_clear_queue(&self, key: &str) -> Result<Vec<AttemptId>> {
        self.immediate(|tx| {
            let mut stmt = tx.prepare(
                "DELETE FROM queue WHERE queue = ?1 AND runner IS NULL RETURNING run, node, attempt",
            )?;
            let mut out = stmt
                .query_map([key], |r| {
                    Ok(AttemptId::new(
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.sort();
            Ok(out)
        })
    }
}
