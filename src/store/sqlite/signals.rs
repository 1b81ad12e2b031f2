//! Signals and pushed events on SQLite: requests to runs, inputs to
//! nodes, and the events pushed to listening runs and workflows.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::schema::NOW_MS;
use super::{json_col, to_json, wrapper, SqliteStore};
use crate::error::{Error, Result};
use crate::model::RunStatus;
use crate::store::{Pending, Pushed, Signal, SignalId};

impl SqliteStore {
    /// Delivers a value to a node whose task is [`crate::Task::input`]: it
    /// becomes the node's output when the orchestrator takes it (at once
    /// if the node waits, else when it starts waiting).
    pub(super) fn insert_signal(&self, run: &str, signal: &Signal) -> Result<SignalId> {
        let c = self.lock();
        let status = SqliteStore::status(&c, run)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::UnknownRun(run.to_string()))?;
        if status.is_terminal() {
            return Err(Error::RunEnded {
                run: run.to_string(),
                status: status.to_string(),
                control: match signal {
                    Signal::Input { .. } => "deliver input".into(),
                    other => other.as_str().to_string(),
                },
            });
        }
        let (node, value) = match signal {
            Signal::Input { node, value } => {
                self.check_input(&c, run, node)?;
                (Some(node.as_str()), Some(to_json(value)))
            }
            _ => (None, None),
        };
        c.prepare_cached(
            "INSERT INTO signals (run, kind, node, value, requested_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![run, signal.as_str(), node, value, crate::time::now()]))
        .map_err(|e| self.err(e))?;
        Ok(SignalId(c.last_insert_rowid()))
    }

    pub(super) fn read_pending(&self) -> Result<Vec<Pending>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT s.id, s.run, s.kind, s.node, s.value FROM signals s
                 JOIN runs r ON r.id = s.run
                 WHERE s.taken_at IS NULL AND r.finished_at IS NULL ORDER BY s.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, run, kind, node, value)| {
                let signal = match (kind.as_str(), node) {
                    ("input", Some(node)) => Signal::Input {
                        node,
                        value: value
                            .and_then(|v| serde_json::from_str(&v).ok())
                            .unwrap_or(Value::Null),
                    },
                    (other, _) => other.parse().ok()?,
                };
                Some(Pending {
                    id: SignalId(id),
                    run,
                    signal,
                })
            })
            .collect())
    }

    /// The first lines of a run's `runs` row that a takeover or a signal
    /// needs: its status.
    fn status(c: &Connection, run: &str) -> rusqlite::Result<Option<RunStatus>> {
        c.query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map(|s| s.map(|s| s.parse().unwrap_or(RunStatus::Failed)))
    }

    /// Refuses an input for a node that is not an input node, or that
    /// finished (one row read, not the run).
    fn check_input(&self, c: &Connection, run: &str, node: &str) -> Result<()> {
        let (task, state) =
            SqliteStore::node_row(c, &self.path, run, node)?.ok_or_else(|| Error::UnknownNode {
                run: run.to_string(),
                node: node.to_string(),
            })?;
        if !matches!(task.exec, crate::model::Exec::Input { .. }) {
            return Err(Error::NotInput {
                run: run.to_string(),
                node: node.to_string(),
                kind: task.exec.kind().to_string(),
            });
        }
        if state.is_terminal() {
            return Err(Error::RunEnded {
                run: format!("{run}` node `{node}"),
                status: state.to_string(),
                control: "deliver input to".into(),
            });
        }
        Ok(())
    }

    pub(super) fn insert_push(
        &self,
        key: &str,
        payload: &Value,
    ) -> Result<(i64, Vec<(String, String)>)> {
        let wrap = wrapper(&self.path);
        let mut c = self.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&wrap)?;
        let now = crate::time::now();
        let value = to_json(payload);
        tx.execute(
            "INSERT INTO pushes (key, payload, pushed_at) VALUES (?1, ?2, ?3)",
            params![key, value, now],
        )
        .map_err(&wrap)?;
        let id = tx.last_insert_rowid();
        let listening: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT n.run, n.id FROM nodes n JOIN runs r ON r.id = n.run
                     WHERE r.finished_at IS NULL
                       AND json_extract(n.task, '$.kind') = 'input'
                       AND json_extract(n.task, '$.listen') = ?1
                       AND n.state NOT IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')
                     ORDER BY n.run, n.id",
                )
                .map_err(&wrap)?;
            let rows = stmt
                .query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&wrap)?;
            rows
        };
        for (run, node) in &listening {
            tx.execute(
                "INSERT INTO signals (run, kind, node, value, requested_at) VALUES (?1, 'input', ?2, ?3, ?4)",
                params![run, node, value, now],
            )
            .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)?;
        Ok((id, listening))
    }

    pub(super) fn read_pushes(
        &self,
        after: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Pushed>> {
        let c = self.lock();
        let since = crate::time::format_millis(since_ms.max(0) as u64);
        let mut stmt = c
            .prepare_cached(
                "SELECT id, key, payload, pushed_at FROM pushes
                 WHERE id > ?1 AND pushed_at >= ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after, since, limit as i64], |r| {
                Ok(Pushed {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    payload: json_col(r, 2)?,
                    pushed_at: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn insert_push_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool> {
        let c = self.lock();
        let n = c
            .prepare_cached(
                &format!("INSERT INTO push_runs (push, workflow, run, claimed_at) VALUES (?1, ?2, ?3, {NOW_MS}) ON CONFLICT DO NOTHING"),
            )
            .and_then(|mut s| s.execute(params![event, workflow, run]))
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn read_orphaned_push_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT p.id, p.key, p.payload, p.pushed_at, r.workflow, r.run FROM push_runs r
                 JOIN pushes p ON p.id = r.push
                 LEFT JOIN runs x ON x.id = r.run
                 WHERE x.id IS NULL AND r.claimed_at BETWEEN ?1 AND ?2
                 ORDER BY p.id, r.workflow",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since_ms, until_ms], |r| {
                Ok((
                    Pushed {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        payload: json_col(r, 2)?,
                        pushed_at: r.get(3)?,
                    },
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }
}
