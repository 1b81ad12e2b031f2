//! Schedules on PostgreSQL: claimed fires, timers, and the counts a
//! scheduler reads before it starts a run.

use super::conn::Tx;
use super::{PgStore, NOW_MS};
use crate::error::Result;
use crate::store::{Fire, Timer};

impl PgStore {
    pub(super) fn insert_fire(
        &self,
        workflow: &str,
        at_ms: i64,
        run: &str,
        kind: &str,
    ) -> Result<bool> {
        // The primary key settles a race: of two inserts, one waits for
        // the other and then does nothing.
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS}) ON CONFLICT DO NOTHING"
                ),
                &[&workflow, &at_ms, &run, &kind],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn replace_fire(
        &self,
        workflow: &str,
        at_ms: i64,
        run: &str,
        kind: &str,
    ) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                &format!(
                    "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS})
                     ON CONFLICT (workflow, fire_at)
                     DO UPDATE SET run = $3, kind = $4, claimed_at = {NOW_MS}"
                ),
                &[&workflow, &at_ms, &run, &kind],
            )?;
            Ok(())
        })
    }

    pub(super) fn read_fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at, r.status FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE f.workflow = $1 AND f.fire_at BETWEEN $2 AND $3
                 ORDER BY f.fire_at",
                &[&workflow, &from_ms, &to_ms],
            )?;
            rows.iter()
                .map(|r| {
                    let mut f = PgStore::fire(tx, r)?;
                    f.status = tx.get::<Option<String>>(r, 5)?.and_then(|s| s.parse().ok());
                    Ok(f)
                })
                .collect()
        })
    }

    pub(super) fn read_last_fire(&self, workflow: &str) -> Result<Option<i64>> {
        self.read(|tx| {
            let r = tx.one(
                "SELECT max(fire_at) FROM fires WHERE workflow = $1",
                &[&workflow],
            )?;
            tx.get(&r, 0)
        })
    }

    pub(super) fn count_active_runs(&self, workflow: &str) -> Result<u64> {
        self.read(|tx| {
            let r = tx.one(
                "SELECT count(*) FROM runs WHERE workflow = $1 AND status IN ('running', 'paused')",
                &[&workflow],
            )?;
            Ok(tx.get::<i64>(&r, 0)? as u64)
        })
    }

    pub(super) fn read_orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE r.id IS NULL AND f.claimed_at BETWEEN $1 AND $2
                 ORDER BY f.claimed_at, f.workflow, f.fire_at",
                &[&since_ms, &until_ms],
            )?;
            rows.iter().map(|r| PgStore::fire(tx, r)).collect()
        })
    }

    fn fire(tx: &Tx<'_>, r: &postgres::Row) -> Result<Fire> {
        Ok(Fire {
            workflow: tx.get(r, 0)?,
            at_ms: tx.get(r, 1)?,
            run: tx.get(r, 2)?,
            kind: tx.get(r, 3)?,
            claimed_ms: tx.get(r, 4)?,
            status: None,
        })
    }

    pub(super) fn insert_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64> {
        self.write(|tx| {
            let r = tx.one(
                &format!(
                    "INSERT INTO timers (workflow, at_ms, cron, timezone, created_at)
                     VALUES ($1, $2, $3, $4, {NOW_MS}) RETURNING id"
                ),
                &[&workflow, &at_ms, &cron, &timezone],
            )?;
            tx.get(&r, 0)
        })
    }

    pub(super) fn end_timer(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "UPDATE timers SET stopped_at = {NOW_MS} WHERE id = $1 AND stopped_at IS NULL"
                ),
                &[&id],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn read_timers(&self) -> Result<Vec<Timer>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, workflow, at_ms, cron, timezone, created_at, stopped_at
                 FROM timers ORDER BY id",
                &[],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Timer {
                        id: tx.get(r, 0)?,
                        workflow: tx.get(r, 1)?,
                        at_ms: tx.get(r, 2)?,
                        cron: tx.get(r, 3)?,
                        timezone: tx.get(r, 4)?,
                        created_ms: tx.get(r, 5)?,
                        stopped_ms: tx.get(r, 6)?,
                    })
                })
                .collect()
        })
    }
}
