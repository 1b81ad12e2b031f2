//! Run leases on SQLite: takeovers, renewals, releases and the owner row
//! that fences a stale owner's writes.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::schema::NOW_MS;
use super::{to_json, wrapper, SqliteStore};
use crate::error::{Error, Result};
use crate::store::lease::{self, Lease, Owner, OwnerRecord};

impl SqliteStore {
    pub(super) fn take_over_run(&self, run: &str, owner: &Owner, force: bool) -> Result<Lease> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        // IMMEDIATE: two takeovers (in any processes) read and write the
        // owner row one after the other, so one wins and the other sees it.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let (record, _, now) = SqliteStore::owner_row(&tx, run)
            .map_err(wrap)?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        let verdict = lease::may_take_over(&record, owner, now, force, &crate::host::process_start);
        if let lease::Verdict::Held(why) = verdict {
            return Err(Error::Owned {
                run: run.to_string(),
                owner: why,
            });
        }
        let epoch = record.epoch + 1;
        tx.execute(
            &format!(
                "UPDATE runs SET owner_id = ?2, owner = ?3, epoch = ?4, lease_until = {NOW_MS} + ?5 WHERE id = ?1"
            ),
            params![run, owner.id, to_json(owner), epoch as i64, owner.ttl.as_millis() as i64],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(Lease::new(run, &owner.id, epoch))
    }

    pub(super) fn renew_leases(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        // Exactly the leases the engine passes (the runs it drives), in one
        // transaction: a run this owner holds but no longer drives (its
        // loop died) is not kept from a takeover.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let mut lost = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE runs SET lease_until = {NOW_MS} + ?4
                     WHERE id = ?1 AND owner_id = ?2 AND epoch = ?3 AND finished_at IS NULL"
                ))
                .map_err(wrap)?;
            let ttl = owner.ttl.as_millis() as i64;
            for l in leases {
                let renewed = stmt
                    .execute(params![l.run, owner.id, l.epoch as i64, ttl])
                    .map_err(wrap)?;
                if renewed == 0 {
                    lost.push(l.run.clone());
                }
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(lost)
    }

    pub(super) fn release_lease(&self, lease: &Lease) -> Result<()> {
        let c = self.lock();
        c.execute(
            "UPDATE runs SET owner_id = NULL, owner = NULL, lease_until = 0
             WHERE id = ?1 AND owner_id = ?2 AND epoch = ?3",
            params![lease.run, lease.owner, lease.epoch as i64],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn read_owner(&self, run: &str) -> Result<OwnerRecord> {
        let c = self.lock();
        SqliteStore::owner_row(&c, run)
            .map_err(|e| self.err(e))?
            .map(|(rec, ..)| rec)
            .ok_or_else(|| Error::UnknownRun(run.to_string()))
    }

    /// Reads a run's owner row.
    fn owner_row(
        c: &Connection,
        run: &str,
    ) -> rusqlite::Result<Option<(OwnerRecord, String, i64)>> {
        c.query_row(
            &format!("SELECT owner, epoch, lease_until, status, {NOW_MS} FROM runs WHERE id = ?1"),
            [run],
            |r| {
                let owner: Option<String> = r.get(0)?;
                Ok((
                    OwnerRecord {
                        owner: owner.and_then(|o| serde_json::from_str(&o).ok()),
                        epoch: r.get::<_, i64>(1)? as u64,
                        until_ms: r.get(2)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()
    }

    /// The error for a write fenced off `lease`.
    pub(super) fn fenced(&self, c: &Connection, lease: &Lease) -> Error {
        let now = SqliteStore::owner_row(c, &lease.run).ok().flatten();
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
