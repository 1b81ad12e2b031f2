//! Signals and pushed events on PostgreSQL: requests to runs, inputs to
//! nodes, and the events pushed to listening runs and workflows.

use serde_json::Value;

use super::conn::Tx;
use super::{clamp, PgStore, NOW_MS};
use crate::error::{Error, Result};
use crate::model::RunStatus;
use crate::store::sqlite::to_json;
use crate::store::{Pending, Pushed, Signal, SignalId};

impl PgStore {
    pub(super) fn insert_signal(&self, run: &str, signal: &Signal) -> Result<SignalId> {
        self.write(|tx| {
            // The run's row locked: its end and this signal are ordered.
            let status = match tx.row("SELECT status FROM runs WHERE id = $1 FOR SHARE", &[&run])? {
                Some(r) => tx
                    .get::<String>(&r, 0)?
                    .parse()
                    .unwrap_or(RunStatus::Failed),
                None => return Err(Error::UnknownRun(run.to_string())),
            };
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
                    self.check_input(tx, run, node)?;
                    (Some(node.as_str()), Some(to_json(value)))
                }
                _ => (None, None),
            };
            let r = tx.one(
                "INSERT INTO signals (run, kind, node, value, requested_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&run, &signal.as_str(), &node, &value, &crate::time::now()],
            )?;
            Ok(SignalId(tx.get(&r, 0)?))
        })
    }

    pub(super) fn read_pending(&self) -> Result<Vec<Pending>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT s.id, s.run, s.kind, s.node, s.value FROM signals s
                 JOIN runs r ON r.id = s.run
                 WHERE s.taken_at IS NULL AND r.finished_at IS NULL ORDER BY s.id",
                &[],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let kind: String = tx.get(r, 2)?;
                let node: Option<String> = tx.get(r, 3)?;
                let value: Option<String> = tx.get(r, 4)?;
                let signal = match (kind.as_str(), node) {
                    ("input", Some(node)) => Signal::Input {
                        node,
                        value: value
                            .and_then(|v| serde_json::from_str(&v).ok())
                            .unwrap_or(Value::Null),
                    },
                    (other, _) => match other.parse() {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                out.push(Pending {
                    id: SignalId(tx.get(r, 0)?),
                    run: tx.get(r, 1)?,
                    signal,
                });
            }
            Ok(out)
        })
    }

    /// Refuses an input for a node that is not an input node, or that
    /// finished.
    fn check_input(&self, tx: &mut Tx<'_>, run: &str, node: &str) -> Result<()> {
        let (task, state) = self
            .node_row(tx, run, node)?
            .ok_or_else(|| Error::UnknownNode {
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
        let value = to_json(payload);
        self.write(|tx| {
            let now = crate::time::now();
            let r = tx.one(
                "INSERT INTO pushes (key, payload, pushed_at) VALUES ($1, $2, $3) RETURNING id",
                &[&key, &value, &now],
            )?;
            let id: i64 = tx.get(&r, 0)?;
            let rows = tx.rows(
                "SELECT n.run, n.id FROM nodes n JOIN runs r ON r.id = n.run
                 WHERE r.finished_at IS NULL
                   AND n.task::json ->> 'kind' = 'input'
                   AND n.task::json ->> 'listen' = $1
                   AND n.state NOT IN ('succeeded', 'failed', 'cancelled', 'upstream_failed')
                 ORDER BY n.run, n.id",
                &[&key],
            )?;
            let listening: Vec<(String, String)> = rows
                .iter()
                .map(|r| Ok((tx.get(r, 0)?, tx.get(r, 1)?)))
                .collect::<Result<_>>()?;
            let runs: Vec<&str> = listening.iter().map(|(r, _)| r.as_str()).collect();
            let nodes: Vec<&str> = listening.iter().map(|(_, n)| n.as_str()).collect();
            tx.exec(
                "INSERT INTO signals (run, kind, node, value, requested_at)
                 SELECT r, 'input', n, $3, $4
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(r, n, o) ORDER BY o",
                &[&runs, &nodes, &value, &now],
            )?;
            Ok((id, listening))
        })
    }

    pub(super) fn read_pushes(
        &self,
        after: i64,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Pushed>> {
        let since = crate::time::format_millis(since_ms.max(0) as u64);
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, key, payload, pushed_at FROM pushes
                 WHERE id > $1 AND pushed_at >= $2 ORDER BY id LIMIT $3",
                &[&after, &since, &clamp(limit)],
            )?;
            rows.iter().map(|r| self.pushed(tx, r)).collect()
        })
    }

    pub(super) fn insert_push_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "INSERT INTO push_runs (push, workflow, run, claimed_at)
                     VALUES ($1, $2, $3, {NOW_MS}) ON CONFLICT DO NOTHING"
                ),
                &[&event, &workflow, &run],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn read_orphaned_push_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT p.id, p.key, p.payload, p.pushed_at, r.workflow, r.run FROM push_runs r
                 JOIN pushes p ON p.id = r.push
                 LEFT JOIN runs x ON x.id = r.run
                 WHERE x.id IS NULL AND r.claimed_at BETWEEN $1 AND $2
                 ORDER BY p.id, r.workflow",
                &[&since_ms, &until_ms],
            )?;
            rows.iter()
                .map(|r| Ok((self.pushed(tx, r)?, tx.get(r, 4)?, tx.get(r, 5)?)))
                .collect()
        })
    }

    fn pushed(&self, tx: &Tx<'_>, r: &postgres::Row) -> Result<Pushed> {
        Ok(Pushed {
            id: tx.get(r, 0)?,
            key: tx.get(r, 1)?,
            payload: self.json(tx, r, 2, "a pushed event's payload")?,
            pushed_at: tx.get(r, 3)?,
        })
    }
}
