//! Schedules on SQLite: claimed fires, timers, and the counts a
//! scheduler reads before it starts a run.

use rusqlite::params;

use super::schema::NOW_MS;
use super::SqliteStore;
use crate::error::Result;
use crate::store::{Fire, Timer};

impl SqliteStore {
    pub(super) fn insert_fire(
        &self,
        workflow: &str,
        at_ms: i64,
        run: &str,
        kind: &str,
    ) -> Result<bool> {
        let c = self.lock();
        let n = c
            .prepare_cached(&format!(
                "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
                 VALUES (?1, ?2, ?3, ?4, {NOW_MS}) ON CONFLICT DO NOTHING"
            ))
            .and_then(|mut s| s.execute(params![workflow, at_ms, run, kind]))
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn replace_fire(
        &self,
        workflow: &str,
        at_ms: i64,
        run: &str,
        kind: &str,
    ) -> Result<()> {
        let c = self.lock();
        c.prepare_cached(&format!(
            "INSERT INTO fires (workflow, fire_at, run, kind, claimed_at)
             VALUES (?1, ?2, ?3, ?4, {NOW_MS})
             ON CONFLICT (workflow, fire_at) DO UPDATE SET run = ?3, kind = ?4, claimed_at = {NOW_MS}"
        ))
        .and_then(|mut s| s.execute(params![workflow, at_ms, run, kind]))
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(super) fn read_fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT f.fire_at, f.run, f.kind, r.status, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE f.workflow = ?1 AND f.fire_at BETWEEN ?2 AND ?3
                 ORDER BY f.fire_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workflow, from_ms, to_ms], |r| {
                let status: Option<String> = r.get(3)?;
                Ok(Fire {
                    workflow: workflow.to_string(),
                    at_ms: r.get(0)?,
                    run: r.get(1)?,
                    kind: r.get(2)?,
                    status: status.and_then(|s| s.parse().ok()),
                    claimed_ms: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn read_last_fire(&self, workflow: &str) -> Result<Option<i64>> {
        let c = self.lock();
        c.query_row(
            "SELECT max(fire_at) FROM fires WHERE workflow = ?1",
            [workflow],
            |r| r.get(0),
        )
        .map_err(|e| self.err(e))
    }

    pub(super) fn count_active_runs(&self, workflow: &str) -> Result<u64> {
        let c = self.lock();
        c.query_row(
            "SELECT count(*) FROM runs WHERE workflow = ?1 AND status IN ('running', 'paused')",
            [workflow],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| self.err(e))
    }

    pub(super) fn read_orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT f.workflow, f.fire_at, f.run, f.kind, f.claimed_at FROM fires f
                 LEFT JOIN runs r ON r.id = f.run
                 WHERE r.id IS NULL AND f.claimed_at BETWEEN ?1 AND ?2
                 ORDER BY f.claimed_at, f.workflow, f.fire_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since_ms, until_ms], |r| {
                Ok(Fire {
                    workflow: r.get(0)?,
                    at_ms: r.get(1)?,
                    run: r.get(2)?,
                    kind: r.get(3)?,
                    status: None,
                    claimed_ms: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn insert_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64> {
        let c = self.lock();
        c.execute(
            &format!(
                "INSERT INTO timers (workflow, at_ms, cron, timezone, created_at) VALUES (?1, ?2, ?3, ?4, {NOW_MS})"
            ),
            params![workflow, at_ms, cron, timezone],
        )
        .map_err(|e| self.err(e))?;
        Ok(c.last_insert_rowid())
    }

    pub(super) fn end_timer(&self, id: i64) -> Result<bool> {
        let c = self.lock();
        let n = c
            .execute(
                &format!(
                    "UPDATE timers SET stopped_at = {NOW_MS} WHERE id = ?1 AND stopped_at IS NULL"
                ),
                [id],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn read_timers(&self) -> Result<Vec<Timer>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT id, workflow, at_ms, cron, timezone, created_at, stopped_at FROM timers ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Timer {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    at_ms: r.get(2)?,
                    cron: r.get(3)?,
                    timezone: r.get(4)?,
                    created_ms: r.get(5)?,
                    stopped_ms: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }
}
