//! Runners and the queue of attempts on PostgreSQL: a claim locks the
//! runner's row (its slots) and takes the oldest waiting rows it can
//! serve with `FOR UPDATE SKIP LOCKED`, so runners claiming at once never
//! wait on each other nor get the same attempt.

use postgres::Row;

use super::conn::Tx;
use super::{PgStore, NOW_MS};
use crate::error::{Error, Result};
use crate::exec::resources::Offer;
use crate::exec::AttemptId;
use crate::model::Resources;
use crate::store::queue::{
    candidates_needed, is_lost, pick, takes_alone, why_fenced, Affinity, Beat, Candidate, Claim,
    QueueRow, QueuedAttempt, Rival, RunnerRecord, RunnerSpec, MAX_CLAIM,
};

/// What a claim starts from, in one statement (one round trip, where it
/// took three):
///
/// - the claiming runner's row, locked (its own claims take turns, so
///   its slots are never over-counted): its capabilities, slots, whether
///   it drains, whether its lease holds, its affinity, and how many
///   attempts it holds;
/// - the queues that have waiting attempts, each with the requirements
///   of one of them (a queue's key names its requirement set): a "loose
///   index scan" of `queue_waiting (queue, seq)`, one index descent per
///   queue, not a scan of every waiting row; two arrays in the order of
///   the keys;
/// - the other live runners, not draining, with free slots: their
///   capabilities, free slots and affinity, three arrays in the order of
///   their ids (read, not locked: a preference may be a moment old).
///
/// `{now}` stands for the store's clock.
const LOOK: &str = "WITH RECURSIVE k(queue) AS (
        (SELECT queue FROM queue WHERE runner IS NULL ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT q.queue FROM queue q WHERE q.runner IS NULL AND q.queue > k.queue
                ORDER BY q.queue LIMIT 1)
        FROM k WHERE k.queue IS NOT NULL
    ),
    w AS (SELECT k.queue, (SELECT q.requires FROM queue q WHERE q.runner IS NULL AND q.queue = k.queue
                           ORDER BY q.seq LIMIT 1) AS requires
          FROM k WHERE k.queue IS NOT NULL),
    r AS (SELECT id, capabilities, affinity,
                 slots - (SELECT count(*) FROM queue q WHERE q.runner = runners.id) AS free
          FROM runners WHERE id <> $1 AND NOT draining AND lease_until >= {now})
    SELECT m.capabilities, m.slots, m.draining, m.lease_until >= {now}, m.affinity,
           (SELECT count(*) FROM queue WHERE runner = $1),
           ARRAY(SELECT queue FROM w ORDER BY queue),
           ARRAY(SELECT requires FROM w ORDER BY queue),
           ARRAY(SELECT capabilities FROM r WHERE free > 0 ORDER BY id),
           ARRAY(SELECT free FROM r WHERE free > 0 ORDER BY id),
           ARRAY(SELECT affinity FROM r WHERE free > 0 ORDER BY id)
    FROM runners m WHERE m.id = $1 FOR UPDATE OF m";

/// The waiting attempts a claim of at most `$3` candidates may rank
/// among its first `$3`, in the queues `$1` its runner serves: the oldest
/// `$3` of each of its runs `$2` (index `queue_waiting_run`) and the
/// oldest `$3` of each of those queues (index `queue_waiting`), each an
/// index range however many attempts wait. The first `$3` in the order
/// [`pick`] reads them (its runs first, then its queues, each oldest
/// first) are always among these: one outside its run's or its queue's
/// first `$3` has `$3` rows ranked before it. When its runs alone give
/// `$3` (distinct runs: distinct rows), those are the first `$3` and the
/// queues are not read. A row may come twice; the claim ranks and dedups
/// them.
const CANDIDATES: &str = "WITH mine AS MATERIALIZED (
        SELECT c.run, c.node, c.queue, c.seq FROM unnest($2::text[]) AS r(run),
            LATERAL (SELECT q.run, q.node, q.queue, q.seq FROM queue q
                     WHERE q.run = r.run AND q.runner IS NULL AND q.queue = ANY($1)
                     ORDER BY q.seq LIMIT $3) c
    )
    SELECT run, node, queue, seq FROM mine
    UNION ALL
    SELECT c.run, c.node, c.queue, c.seq FROM unnest($1::text[]) AS k(queue),
        LATERAL (SELECT q.run, q.node, q.queue, q.seq FROM queue q
                 WHERE q.queue = k.queue AND q.runner IS NULL
                 ORDER BY q.seq LIMIT $3) c
    WHERE (SELECT count(*) FROM mine) < $3";

/// What a hand-off ([`crate::store::Store::enqueue_for`]) decides by, in
/// one statement: the runner's row, locked as a claim locks it (its
/// claims and hand-offs take turns over its slots): capabilities, slots,
/// whether it drains, whether its lease holds, its affinity, how many
/// attempts it holds; whether any attempt but node `$2`/`$3`'s waits
/// (one descent of `queue_waiting`); and the other live runners, not
/// draining, with free slots, as in [`LOOK`]. `{now}` stands for the
/// store's clock.
const HAND_LOOK: &str = "WITH r AS (SELECT id, capabilities, affinity,
                 slots - (SELECT count(*) FROM queue q WHERE q.runner = runners.id) AS free
          FROM runners WHERE id <> $1 AND NOT draining AND lease_until >= {now})
    SELECT m.capabilities, m.slots, m.draining, m.lease_until >= {now}, m.affinity,
           (SELECT count(*) FROM queue WHERE runner = $1),
           EXISTS (SELECT 1 FROM queue q WHERE q.runner IS NULL AND NOT (q.run = $2 AND q.node = $3)),
           ARRAY(SELECT capabilities FROM r WHERE free > 0 ORDER BY id),
           ARRAY(SELECT free FROM r WHERE free > 0 ORDER BY id),
           ARRAY(SELECT affinity FROM r WHERE free > 0 ORDER BY id)
    FROM runners m WHERE m.id = $1 FOR UPDATE OF m";

/// Queues an attempt for a hand-off (`$1`..`$6`: run, node, attempt,
/// queue, requirements, payload), replacing whatever the queue held for
/// its node; claimed by runner `$7` under a lease of `$8` ms when `$7` is
/// not null, else waiting. (A plain enqueue keeps its own statement: in
/// the claims bench this one queued 20,000 attempts at a third of its
/// rate, for reasons not found before the deadline.)
const INSERT_QUEUED: &str =
    "INSERT INTO queue (run, node, attempt, queue, requires, payload, queued_at, seq,
                           runner, claimed_at, lease_until)
     VALUES ($1, $2, $3, $4, $5, $6, {now}, nextval('queue_seq'), $7::text,
             CASE WHEN $7::text IS NULL THEN NULL ELSE {now} END,
             CASE WHEN $7::text IS NULL THEN NULL ELSE {now} + $8 END)
     ON CONFLICT (run, node) DO UPDATE SET attempt = $3, queue = $4, requires = $5,
        payload = $6, queued_at = {now}, seq = nextval('queue_seq'), runner = excluded.runner,
        claimed_at = excluded.claimed_at, lease_until = excluded.lease_until";

const RUNNER_COLUMNS: &str =
    "id, name, capabilities, slots, version, registered_at, lease_until, draining,
     (SELECT count(*) FROM queue q WHERE q.runner = runners.id)";

impl PgStore {
    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, text: &str) -> Result<T> {
        serde_json::from_str(text)
            .map_err(|e| self.corrupt(format!("a stored {what} does not parse: {e}")))
    }

    fn runner_row(&self, tx: &Tx<'_>, r: &Row, now: i64) -> Result<RunnerRecord> {
        let caps: String = tx.get(r, 2)?;
        let lease_until: i64 = tx.get(r, 6)?;
        let slots: i64 = tx.get(r, 3)?;
        let running: i64 = tx.get(r, 8)?;
        Ok(RunnerRecord {
            spec: RunnerSpec {
                id: tx.get(r, 0)?,
                name: tx.get(r, 1)?,
                capabilities: self.parse::<Offer>("runner's capabilities", &caps)?,
                slots: slots as u32,
                version: tx.get(r, 4)?,
            },
            registered_ms: tx.get(r, 5)?,
            lease_until_ms: lease_until,
            draining: tx.get(r, 7)?,
            running: running as u64,
            alive: lease_until >= now,
        })
    }

    fn now(tx: &mut Tx<'_>) -> Result<i64> {
        let r = tx.one(&format!("SELECT {NOW_MS}"), &[])?;
        tx.get(&r, 0)
    }

    fn queue_row(tx: &mut Tx<'_>, a: &AttemptId) -> Result<Option<crate::store::queue::FenceRow>> {
        let Some(r) = tx.row(
            &format!(
                "SELECT attempt, runner, lease_until, {NOW_MS} FROM queue
                 WHERE run = $1 AND node = $2 FOR UPDATE"
            ),
            &[&a.run, &a.node],
        )?
        else {
            return Ok(None);
        };
        Ok(Some((
            tx.get(&r, 0)?,
            tx.get(&r, 1)?,
            tx.get(&r, 2)?,
            tx.get(&r, 3)?,
        )))
    }

    pub(super) fn q_register_runner(
        &self,
        spec: &RunnerSpec,
        lease_ms: i64,
    ) -> Result<RunnerRecord> {
        let caps = serde_json::to_string(&spec.capabilities).expect("an offer is JSON");
        let slots = spec.slots as i64;
        self.write(|tx| {
            tx.exec(
                &format!(
                    "INSERT INTO runners (id, name, capabilities, slots, version, registered_at, lease_until, draining)
                     VALUES ($1, $2, $3, $4, $5, {NOW_MS}, {NOW_MS} + $6, false)
                     ON CONFLICT (id) DO UPDATE SET name = $2, capabilities = $3, slots = $4,
                        version = $5, lease_until = {NOW_MS} + $6, draining = false,
                        affinity = '{{}}'"
                ),
                &[&spec.id, &spec.name, &caps, &slots, &spec.version, &lease_ms],
            )?;
            let now = Self::now(tx)?;
            let r = tx.one(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE id = $1"),
                &[&spec.id],
            )?;
            self.runner_row(tx, &r, now)
        })
    }

    pub(super) fn q_heartbeat(
        &self,
        id: &str,
        holding: &[AttemptId],
        lease_ms: i64,
    ) -> Result<Beat> {
        self.write(|tx| {
            let Some(r) = tx.row(
                &format!(
                    "UPDATE runners SET lease_until = {NOW_MS} + $2 WHERE id = $1 RETURNING draining"
                ),
                &[&id, &lease_ms],
            )?
            else {
                return Err(Error::UnknownRunner(id.to_string()));
            };
            let draining: bool = tx.get(&r, 0)?;
            // Only the claims it says it holds are renewed: one it gave up
            // (an end no server would take) expires, and the engine that
            // waits for it runs its node again. One statement renews those
            // `why_fenced` passes (this attempt, this runner, lease not
            // expired); the others are lost.
            if holding.is_empty() {
                return Ok(Beat {
                    draining,
                    lost: Vec::new(),
                });
            }
            let runs: Vec<&str> = holding.iter().map(|a| a.run.as_str()).collect();
            let nodes: Vec<&str> = holding.iter().map(|a| a.node.as_str()).collect();
            let attempts: Vec<i64> = holding.iter().map(|a| a.attempt as i64).collect();
            let renewed = tx.rows(
                &format!(
                    "UPDATE queue q SET lease_until = {NOW_MS} + $5
                     FROM unnest($2::text[], $3::text[], $4::bigint[]) AS h(run, node, attempt)
                     WHERE q.run = h.run AND q.node = h.node AND q.attempt = h.attempt
                       AND q.runner = $1 AND (q.lease_until IS NULL OR q.lease_until >= {NOW_MS})
                     RETURNING q.run, q.node, q.attempt"
                ),
                &[&id, &runs, &nodes, &attempts, &lease_ms],
            )?;
            let mut held = std::collections::HashSet::new();
            for r in &renewed {
                let n: i64 = tx.get(r, 2)?;
                held.insert(AttemptId::new(
                    tx.get::<String>(r, 0)?,
                    tx.get::<String>(r, 1)?,
                    n as u32,
                ));
            }
            let lost = holding
                .iter()
                .filter(|a| !held.contains(*a))
                .cloned()
                .collect();
            Ok(Beat { draining, lost })
        })
    }

    pub(super) fn q_runners(&self) -> Result<(Vec<RunnerRecord>, i64)> {
        self.read(|tx| {
            let now = Self::now(tx)?;
            let rows = tx.rows(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners ORDER BY name, id"),
                &[],
            )?;
            let runners = rows
                .iter()
                .map(|r| self.runner_row(tx, r, now))
                .collect::<Result<Vec<_>>>()?;
            Ok((runners, now))
        })
    }

    pub(super) fn q_drain_runner(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.exec("UPDATE runners SET draining = true WHERE id = $1", &[&id])? == 1)
        })
    }

    pub(super) fn q_enqueue(&self, a: &QueuedAttempt) -> Result<()> {
        let requires = serde_json::to_string(&a.requires).expect("resources are JSON");
        let attempt = a.id.attempt as i64;
        self.write(|tx| {
            tx.exec(
                &format!(
                    "INSERT INTO queue (run, node, attempt, queue, requires, payload, queued_at, seq)
                     VALUES ($1, $2, $3, $4, $5, $6, {NOW_MS}, nextval('queue_seq'))
                     ON CONFLICT (run, node) DO UPDATE SET attempt = $3, queue = $4, requires = $5,
                        payload = $6, queued_at = {NOW_MS}, seq = nextval('queue_seq'), runner = NULL, claimed_at = NULL,
                        lease_until = NULL"
                ),
                &[
                    &a.id.run, &a.id.node, &attempt, &a.queue, &requires, &a.payload,
                ],
            )?;
            Ok(())
        })
    }

    pub(super) fn q_enqueue_for(
        &self,
        a: &QueuedAttempt,
        runner: &str,
        lease_ms: i64,
    ) -> Result<bool> {
        let requires = serde_json::to_string(&a.requires).expect("resources are JSON");
        let attempt = a.id.attempt as i64;
        let look = HAND_LOOK.replace("{now}", NOW_MS);
        let insert = INSERT_QUEUED.replace("{now}", NOW_MS);
        self.write(|tx| {
            let mine = match tx.row(&look, &[&runner, &a.id.run, &a.id.node])? {
                Some(r) => self.hand_off(tx, &r, a)?,
                None => None,
            };
            let to = mine.as_ref().map(|_| runner);
            tx.exec(
                &insert,
                &[
                    &a.id.run, &a.id.node, &attempt, &a.queue, &requires, &a.payload, &to,
                    &lease_ms,
                ],
            )?;
            let Some(mut mine) = mine else {
                return Ok(false);
            };
            if let Some(text) = mine.noted([(a.id.run.as_str(), a.queue.as_str())]) {
                tx.exec(
                    "UPDATE runners SET affinity = $2 WHERE id = $1",
                    &[&runner, &text],
                )?;
            }
            Ok(true)
        })
    }

    /// Whether `a` goes at once to the runner of `r` (a [`HAND_LOOK`]
    /// row): its affinity when it does.
    fn hand_off(&self, tx: &Tx<'_>, r: &Row, a: &QueuedAttempt) -> Result<Option<Affinity>> {
        let slots: i64 = tx.get(r, 1)?;
        let draining: bool = tx.get(r, 2)?;
        let alive: bool = tx.get(r, 3)?;
        let running: i64 = tx.get(r, 5)?;
        // Another attempt waiting might be the one a claim takes first.
        let others: bool = tx.get(r, 6)?;
        if !alive || draining || running >= slots || others {
            return Ok(None);
        }
        let caps: String = tx.get(r, 0)?;
        let offer: Offer = self.parse("runner's capabilities", &caps)?;
        if offer.refuses(&a.requires).is_some() {
            return Ok(None);
        }
        let affinity: String = tx.get(r, 4)?;
        let mine: Affinity = self.parse("runner's affinity", &affinity)?;
        let rival_caps: Vec<String> = tx.get(r, 7)?;
        let rival_free: Vec<i64> = tx.get(r, 8)?;
        let rival_affinity: Vec<String> = tx.get(r, 9)?;
        let mut rivals = Vec::new();
        for ((caps, free), affinity) in rival_caps.iter().zip(&rival_free).zip(&rival_affinity) {
            let offer: Offer = self.parse("runner's capabilities", caps)?;
            let mut serves = std::collections::HashSet::new();
            if offer.refuses(&a.requires).is_none() {
                serves.insert(a.queue.clone());
            }
            rivals.push(Rival {
                free: *free as usize,
                affinity: self.parse("runner's affinity", affinity)?,
                serves,
            });
        }
        Ok(takes_alone(&mine, &rivals, &a.id.run, &a.queue).then_some(mine))
    }

    pub(super) fn q_release_claim(&self, a: &AttemptId, runner: &str) -> Result<bool> {
        let attempt = a.attempt as i64;
        self.write(|tx| {
            Ok(tx.exec(
                "UPDATE queue SET runner = NULL, claimed_at = NULL, lease_until = NULL
                 WHERE run = $1 AND node = $2 AND attempt = $3 AND runner = $4",
                &[&a.run, &a.node, &attempt, &runner],
            )? == 1)
        })
    }

    pub(super) fn q_claim(
        &self,
        runner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<QueuedAttempt>> {
        self.write(|tx| {
            let look = LOOK.replace("{now}", NOW_MS);
            let Some(r) = tx.row(&look, &[&runner])? else {
                return Err(Error::UnknownRunner(runner.to_string()));
            };
            let caps: String = tx.get(&r, 0)?;
            let slots: i64 = tx.get(&r, 1)?;
            let draining: bool = tx.get(&r, 2)?;
            let alive: bool = tx.get(&r, 3)?;
            let affinity: String = tx.get(&r, 4)?;
            let running: i64 = tx.get(&r, 5)?;
            // A runner whose lease ran out (paused, partitioned) claims
            // nothing, even through a long poll it began before: it must
            // heartbeat first.
            if !alive {
                return Ok(Vec::new());
            }
            let n = (slots - running).max(0).min(max.min(MAX_CLAIM) as i64);
            if draining || n == 0 {
                return Ok(Vec::new());
            }
            let offer: Offer = self.parse("runner's capabilities", &caps)?;
            let queue_keys: Vec<String> = tx.get(&r, 6)?;
            let requires: Vec<String> = tx.get(&r, 7)?;
            let mut waiting = Vec::new();
            for (key, req) in queue_keys.into_iter().zip(&requires) {
                waiting.push((key, self.parse::<Resources>("requirement", req)?));
            }
            let keys: Vec<&String> = waiting
                .iter()
                .filter(|(_, need)| offer.refuses(need).is_none())
                .map(|(k, _)| k)
                .collect();
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut mine: Affinity = self.parse("runner's affinity", &affinity)?;
            let rival_caps: Vec<String> = tx.get(&r, 8)?;
            let rival_free: Vec<i64> = tx.get(&r, 9)?;
            let rival_affinity: Vec<String> = tx.get(&r, 10)?;
            let mut rivals = Vec::new();
            for ((caps, free), affinity) in rival_caps.iter().zip(&rival_free).zip(&rival_affinity) {
                let offer: Offer = self.parse("runner's capabilities", caps)?;
                rivals.push(Rival {
                    free: *free as usize,
                    affinity: self.parse("runner's affinity", affinity)?,
                    serves: waiting
                        .iter()
                        .filter(|(_, need)| offer.refuses(need).is_none())
                        .map(|(k, _)| k.clone())
                        .collect(),
                });
            }
            let limit = candidates_needed(n as usize, &rivals) as i64;
            // The runner's own runs first, then its queues, then the
            // oldest: the candidates `pick` ranks (read, not locked).
            // Each run once, so that rows of its runs are distinct rows.
            let mut own_runs = mine.runs.clone();
            own_runs.sort_unstable();
            own_runs.dedup();
            let rows = tx.rows(CANDIDATES, &[&keys, &own_runs, &limit])?;
            let mut read = Vec::new();
            for r in &rows {
                let c = Candidate {
                    run: tx.get(r, 0)?,
                    queue: tx.get(r, 2)?,
                    seq: tx.get(r, 3)?,
                };
                let level = mine.level(&c.run, &c.queue);
                read.push((std::cmp::Reverse(level), c.seq, tx.get::<String>(r, 1)?, c));
            }
            // Ranked here rather than by a sort in the database: a seq
            // names one waiting row, so equal ones are the same row.
            read.sort_by_key(|x| (x.0, x.1));
            read.dedup_by_key(|x| x.1);
            read.truncate(limit as usize);
            let (nodes, candidates): (Vec<String>, Vec<Candidate>) =
                read.into_iter().map(|(_, _, node, c)| (node, c)).unzip();
            // Every open candidate in the order the runner takes them;
            // then the first `n` of those no other claim holds, locked
            // (`SKIP LOCKED`: claims at once never wait on each other,
            // and a row another claim took meanwhile no longer matches).
            let ranked = pick(&mine, &rivals, &candidates, candidates.len());
            let runs: Vec<&str> = ranked.iter().map(|&i| candidates[i].run.as_str()).collect();
            let ranked_nodes: Vec<&str> = ranked.iter().map(|&i| nodes[i].as_str()).collect();
            // One statement locks and claims them, and says each one's
            // rank, so the claim is in the runner's order.
            let claimed = tx.rows(
                &format!(
                    "UPDATE queue q SET runner = $4, claimed_at = {NOW_MS}, lease_until = {NOW_MS} + $5
                     FROM (SELECT q.run, q.node, p.rank FROM queue q
                           JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(run, node, rank)
                             ON q.run = p.run AND q.node = p.node
                           WHERE q.runner IS NULL
                           ORDER BY p.rank
                           LIMIT $3 FOR UPDATE OF q SKIP LOCKED) t
                     WHERE q.run = t.run AND q.node = t.node
                     RETURNING t.rank, q.attempt, q.requires, q.payload"
                ),
                &[&runs, &ranked_nodes, &n, &runner, &lease_ms],
            )?;
            let mut taken = Vec::new();
            for r in &claimed {
                let rank: i64 = tx.get(r, 0)?;
                let Some(&i) = usize::try_from(rank - 1).ok().and_then(|k| ranked.get(k)) else {
                    return Err(self.corrupt(format!("a claim ranked {rank} of {}", ranked.len())));
                };
                taken.push((rank, i, r));
            }
            taken.sort_by_key(|&(rank, _, _)| rank);
            let mut picked = Vec::new();
            for (_, i, r) in taken {
                let c = &candidates[i];
                let attempt: i64 = tx.get(r, 1)?;
                let req: String = tx.get(r, 2)?;
                picked.push(QueuedAttempt {
                    id: AttemptId::new(c.run.clone(), nodes[i].clone(), attempt as u32),
                    queue: c.queue.clone(),
                    requires: self.parse("requirement", &req)?,
                    payload: tx.get(r, 3)?,
                });
            }
            // Unchanged (it claimed from the runs and queues it served
            // last), the affinity is not written again.
            if let Some(text) = mine.noted(picked.iter().map(|a| (a.id.run.as_str(), a.queue.as_str()))) {
                tx.exec(
                    "UPDATE runners SET affinity = $2 WHERE id = $1",
                    &[&runner, &text],
                )?;
            }
            Ok(picked)
        })
    }

    pub(super) fn q_claim_holds(&self, a: &AttemptId, runner: &str) -> Result<()> {
        self.write(|tx| {
            let row = Self::queue_row(tx, a)?;
            match why_fenced(a, runner, row) {
                None => Ok(()),
                Some(why) => Err(Error::AttemptFenced {
                    attempt: a.to_string(),
                    why,
                }),
            }
        })
    }

    pub(super) fn q_finish_claim(&self, a: &AttemptId, runner: &str) -> Result<()> {
        let n = a.attempt as i64;
        // The claim as `why_fenced` passes it, ended by one statement
        // that commits on its own: one round trip, where a transaction
        // around it takes three.
        match self.write_alone(
            &format!(
                "DELETE FROM queue WHERE run = $1 AND node = $2 AND attempt = $3 AND runner = $4
                   AND (lease_until IS NULL OR lease_until >= {NOW_MS})"
            ),
            &[&a.run, &a.node, &n, &runner],
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => {}
            // Refused, or the connection lost (whether it landed is
            // unknown): the transaction below finds the claim still held
            // (and ends it) or says why not.
            Err(e) => {
                tracing::debug!(db = %self.pool.loc, error = %e,
                    "ending a claim in one statement failed; trying in a transaction");
            }
        }
        self.write(|tx| {
            let row = Self::queue_row(tx, a)?;
            if let Some(why) = why_fenced(a, runner, row) {
                return Err(Error::AttemptFenced {
                    attempt: a.to_string(),
                    why,
                });
            }
            tx.exec(
                "DELETE FROM queue WHERE run = $1 AND node = $2",
                &[&a.run, &a.node],
            )?;
            Ok(())
        })
    }

    pub(super) fn q_lost_claims(&self, attempts: &[AttemptId]) -> Result<Vec<AttemptId>> {
        self.write(|tx| {
            let mut lost = Vec::new();
            for a in attempts {
                let row = Self::queue_row(tx, a)?;
                if is_lost(a, row.as_ref()) {
                    let n = a.attempt as i64;
                    tx.exec(
                        "DELETE FROM queue WHERE run = $1 AND node = $2 AND attempt = $3",
                        &[&a.run, &a.node, &n],
                    )?;
                    lost.push(a.clone());
                }
            }
            Ok(lost)
        })
    }

    pub(super) fn q_dequeue(&self, a: &AttemptId) -> Result<bool> {
        let n = a.attempt as i64;
        self.write(|tx| {
            Ok(tx.exec(
                "DELETE FROM queue WHERE run = $1 AND node = $2 AND attempt = $3",
                &[&a.run, &a.node, &n],
            )? == 1)
        })
    }

    pub(super) fn q_queue_rows(&self) -> Result<(Vec<QueueRow>, i64)> {
        self.read(|tx| {
            let now = Self::now(tx)?;
            let rows = tx.rows(
                "SELECT queue, min(requires), count(*) FILTER (WHERE runner IS NULL),
                        count(runner), min(queued_at) FILTER (WHERE runner IS NULL)
                 FROM queue GROUP BY queue ORDER BY queue",
                &[],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let req: String = tx.get(r, 1)?;
                let depth: i64 = tx.get(r, 2)?;
                let running: i64 = tx.get(r, 3)?;
                out.push(QueueRow {
                    key: tx.get(r, 0)?,
                    requires: self.parse("requirement", &req)?,
                    depth: depth as u64,
                    running: running as u64,
                    oldest_queued_ms: tx.get(r, 4)?,
                });
            }
            Ok((out, now))
        })
    }

    pub(super) fn q_claims(&self, limit: usize) -> Result<Vec<Claim>> {
        self.read(|tx| {
            let limit = limit.min(i64::MAX as usize) as i64;
            let rows = tx.rows(
                "SELECT runner, run, node, attempt, claimed_at FROM queue
                 WHERE runner IS NOT NULL ORDER BY runner, run, node LIMIT $1",
                &[&limit],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let n: i64 = tx.get(r, 3)?;
                let at: Option<i64> = tx.get(r, 4)?;
                out.push(Claim {
                    runner: tx.get(r, 0)?,
                    attempt: AttemptId::new(
                        tx.get::<String>(r, 1)?,
                        tx.get::<String>(r, 2)?,
                        n as u32,
                    ),
                    claimed_ms: at.unwrap_or(0),
                });
            }
            Ok(out)
        })
    }

    pub(super) fn q_clear_queue(&self, key: &str) -> Result<Vec<AttemptId>> {
        self.write(|tx| {
            let rows = tx.rows(
                "DELETE FROM queue WHERE queue = $1 AND runner IS NULL RETURNING run, node, attempt",
                &[&key],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let n: i64 = tx.get(r, 2)?;
                out.push(AttemptId::new(tx.get::<String>(r, 0)?, tx.get::<String>(r, 1)?, n as u32));
            }
            out.sort();
            Ok(out)
        })
    }
}
