//! Run leases on PostgreSQL: takeovers, renewals, releases and the owner
//! row, locked `FOR UPDATE`, that fences a stale owner's writes.

use super::conn::Tx;
use super::{PgStore, NOW_MS};
use crate::error::{Error, Result};
use crate::store::lease::{self, Lease, Owner, OwnerRecord};
use crate::store::sqlite::to_json;

impl PgStore {
    pub(super) fn take_over_run(&self, run: &str, owner: &Owner, force: bool) -> Result<Lease> {
        self.write(|tx| {
            // The row locked: two takeovers (in any processes) read and
            // write the owner one after the other, so one wins and the
            // other sees it.
            let (record, _, now) = PgStore::owner_row(tx, run, true)?
                .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
            let verdict =
                lease::may_take_over(&record, owner, now, force, &crate::host::process_start);
            if let lease::Verdict::Held(why) = verdict {
                return Err(Error::Owned {
                    run: run.to_string(),
                    owner: why,
                });
            }
            let epoch = record.epoch + 1;
            tx.exec(
                &format!(
                    "UPDATE runs SET owner_id = $2, owner = $3, epoch = $4, lease_until = {NOW_MS} + $5
                     WHERE id = $1"
                ),
                &[
                    &run,
                    &owner.id,
                    &to_json(owner),
                    &(epoch as i64),
                    &(owner.ttl.as_millis() as i64),
                ],
            )?;
            Ok(Lease::new(run, &owner.id, epoch))
        })
    }

    pub(super) fn renew_leases(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>> {
        // Exactly the leases the engine passes (the runs it drives), in
        // one transaction and one statement; rows are locked in id order.
        let runs: Vec<&str> = leases.iter().map(|l| l.run.as_str()).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch as i64).collect();
        let ttl = owner.ttl.as_millis() as i64;
        let renewed: Vec<String> = self.write(|tx| {
            let rows = tx.rows(
                &format!(
                    "WITH mine AS (
                         SELECT r.id FROM runs r
                         JOIN unnest($1::text[], $2::bigint[]) AS l(run, epoch)
                           ON r.id = l.run AND r.epoch = l.epoch
                         WHERE r.owner_id = $3 AND r.finished_at IS NULL
                         ORDER BY r.id FOR UPDATE OF r
                     )
                     UPDATE runs SET lease_until = {NOW_MS} + $4
                     FROM mine WHERE runs.id = mine.id RETURNING runs.id"
                ),
                &[&runs, &epochs, &owner.id, &ttl],
            )?;
            rows.iter().map(|r| tx.get(r, 0)).collect()
        })?;
        let renewed: std::collections::HashSet<&str> = renewed.iter().map(String::as_str).collect();
        Ok(leases
            .iter()
            .filter(|l| !renewed.contains(l.run.as_str()))
            .map(|l| l.run.clone())
            .collect())
    }

    pub(super) fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE runs SET owner_id = NULL, owner = NULL, lease_until = 0
                 WHERE id = $1 AND owner_id = $2 AND epoch = $3",
                &[&lease.run, &lease.owner, &(lease.epoch as i64)],
            )?;
            Ok(())
        })
    }

    pub(super) fn read_owner(&self, run: &str) -> Result<OwnerRecord> {
        self.read(|tx| {
            PgStore::owner_row(tx, run, false)?
                .map(|(rec, ..)| rec)
                .ok_or_else(|| Error::UnknownRun(run.to_string()))
        })
    }

    /// A run's owner row, the run's status, and the database's clock.
    fn owner_row(
        tx: &mut Tx<'_>,
        run: &str,
        lock: bool,
    ) -> Result<Option<(OwnerRecord, String, i64)>> {
        let sql = format!(
            "SELECT owner, epoch, lease_until, status, {NOW_MS} FROM runs WHERE id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let Some(r) = tx.row(&sql, &[&run])? else {
            return Ok(None);
        };
        let owner: Option<String> = tx.get(&r, 0)?;
        Ok(Some((
            OwnerRecord {
                owner: owner.and_then(|o| serde_json::from_str(&o).ok()),
                epoch: tx.get::<i64>(&r, 1)? as u64,
                until_ms: tx.get(&r, 2)?,
            },
            tx.get(&r, 3)?,
            tx.get(&r, 4)?,
        )))
    }

    /// The error for a write fenced off `lease`.
    pub(super) fn fenced(tx: &mut Tx<'_>, lease: &Lease) -> Error {
        let now = PgStore::owner_row(tx, &lease.run, false).ok().flatten();
        Error::Fenced {
            run: lease.run.clone(),
            epoch: lease.epoch,
            owner: match now {
                Some((rec, ..)) => match rec.owner {
                    Some(o) => format!("{} holds it at epoch {}", o.describe(), rec.epoch),
                    None => format!("it was released at epoch {}", rec.epoch),
                },
                None => "the run is gone".into(),
            },
        }
    }
}
