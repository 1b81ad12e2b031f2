//! Reads of runs and their history on SQLite: run ids, the run list,
//! events, exports, nodes, logs and the durations of past runs.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{access, clamp, json_col, millis, wrapper, SqliteStore};
use crate::error::{Error, Result};
use crate::history::{AttemptRecord, EdgeExport, Event, EventKind, NodeExport, RunExport};
use crate::model::{RunStatus, Task};
use crate::store::{LogLine, RunSample, RunSummary, RunTail, TaskSample};

impl SqliteStore {
    /// Resolves `latest`, a full run id or a unique prefix of one.
    pub(super) fn find_run(&self, what: &str) -> Result<String> {
        let c = self.lock();
        let found: Option<String> = if what == "latest" {
            c.query_row(
                "SELECT id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
        } else {
            // A range over the primary key: the exact id, then the ids it
            // prefixes (ids are lower-case ASCII; U+10FFFF sorts after
            // every one of them).
            let prefix = what.to_ascii_lowercase();
            let mut stmt = c
                .prepare_cached(
                    "SELECT id FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 3",
                )
                .map_err(|e| self.err(e))?;
            let ids: Vec<String> = stmt
                .query_map(params![prefix, format!("{prefix}\u{10FFFF}")], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            match ids.as_slice() {
                [one] => Some(one.clone()),
                many if many.contains(&prefix) => Some(prefix.clone()),
                [] => None,
                _ => {
                    return Err(Error::AmbiguousRun {
                        prefix: what.to_string(),
                        matches: ids.join(", "),
                    })
                }
            }
        };
        found.ok_or_else(|| Error::UnknownRun(what.to_string()))
    }

    /// Every run, newest first.
    pub(super) fn all_runs(&self) -> Result<Vec<RunSummary>> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, workflow, status, created_at, finished_at,
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                        json_extract(config, '$.fired_at')
                 FROM runs ORDER BY created_at DESC, rowid DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], access::summary_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    /// The history of a run, in order; with `upto`, only the events up to
    /// and including that sequence number.
    pub(super) fn read_events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT seq, at, data FROM events WHERE run = ?1 AND seq <= ?2 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(u64, String, String)> = stmt
            .query_map(params![run, upto.map_or(i64::MAX, |u| u as i64)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(seq, at, data)| {
                let kind: EventKind = serde_json::from_str(&data).map_err(|e| Error::Corrupt {
                    path: self.path.clone(),
                    message: format!("run {run} event {seq} does not parse: {e}"),
                })?;
                Ok(Event { seq, at, kind })
            })
            .collect()
    }

    pub(super) fn read_tail(&self, run: &str, after: u64, limit: usize) -> Result<RunTail> {
        let mut c = self.lock();
        // One read transaction: the status and the events agree.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.err(e))?;
        let head = tx
            .query_row(
                "SELECT status, last_seq FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((status, last)) = head else {
            return Err(Error::UnknownRun(run.to_string()));
        };
        let rows: Vec<(u64, String, String)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, at, data FROM events WHERE run = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(
                    params![
                        run,
                        after.min(i64::MAX as u64) as i64,
                        limit.min(i64::MAX as usize) as i64
                    ],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
                )
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?;
            rows
        };
        tx.commit().map_err(|e| self.err(e))?;
        let events = rows
            .into_iter()
            .map(|(seq, at, data)| {
                let kind: EventKind = serde_json::from_str(&data).map_err(|e| Error::Corrupt {
                    path: self.path.clone(),
                    message: format!("run {run} event {seq} does not parse: {e}"),
                })?;
                Ok(Event { seq, at, kind })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RunTail {
            events,
            status: status.parse().map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                message: format!("run {run} has the status {status:?}: {e}"),
            })?,
            last: last as u64,
        })
    }

    pub(super) fn read_export(&self, run: &str) -> rusqlite::Result<RunExport> {
        let c = self.lock();
        let c = &*c;
        let mut ex = c.query_row(
            "SELECT workflow, status, reason, orchestrator_pid, created_at, finished_at, last_seq,
                    json_extract(config, '$.source') FROM runs WHERE id = ?1",
            [run],
            |r| {
                let status: String = r.get(1)?;
                Ok(RunExport {
                    run: run.to_string(),
                    workflow: r.get(0)?,
                    status: status.parse().unwrap_or(RunStatus::Failed),
                    reason: r.get(2)?,
                    orchestrator_pid: r.get(3)?,
                    created_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    event: r.get::<_, i64>(6)? as u64,
                    nodes: Vec::new(),
                    edges: Vec::new(),
                    promises: Vec::new(),
                    violations: Vec::new(),
                    source: r
                        .get::<_, Option<String>>(7)?
                        .and_then(|s| serde_json::from_str(&s).ok()),
                })
            },
        )?;
        let mut attempts: std::collections::HashMap<String, Vec<AttemptRecord>> =
            Default::default();
        let mut stmt = c.prepare(
            "SELECT node, attempt, pid, started_at, finished_at, outcome, exit_code, error, files,
                    runner
             FROM attempts WHERE run = ?1 ORDER BY node, attempt",
        )?;
        let rows = stmt.query_map([run], |r| {
            let outcome: Option<String> = r.get(5)?;
            Ok((
                r.get::<_, String>(0)?,
                AttemptRecord {
                    attempt: r.get(1)?,
                    pid: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    outcome: outcome.and_then(|o| o.parse().ok()),
                    exit_code: r.get(6)?,
                    error: r.get(7)?,
                    files: match r.get::<_, Option<String>>(8)? {
                        Some(_) => json_col(r, 8)?,
                        None => Vec::new(),
                    },
                    runner: r.get(9)?,
                },
            ))
        })?;
        for row in rows {
            let (node, a) = row?;
            attempts.entry(node).or_default().push(a);
        }
        let mut stmt = c.prepare(
            "SELECT n.id, n.task, n.state, n.inputs, n.attrs, o.value, n.started_at, n.finished_at
             FROM nodes n LEFT JOIN outputs o ON o.run = n.run AND o.node = n.id
             WHERE n.run = ?1 ORDER BY n.rowid",
        )?;
        let rows = stmt.query_map([run], |r| {
            let id: String = r.get(0)?;
            let state: String = r.get(2)?;
            let output: Option<String> = r.get(5)?;
            Ok(NodeExport {
                attempts: attempts.remove(&id).unwrap_or_default(),
                id,
                task: json_col(r, 1)?,
                state: state.parse().map_err(|e: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                inputs: json_col(r, 3)?,
                attrs: json_col(r, 4)?,
                // An output that does not read back is a damaged
                // database, not a null.
                output: output
                    .map(|o| {
                        serde_json::from_str(&o).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                5,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })
                    })
                    .transpose()?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
            })
        })?;
        ex.nodes = rows.collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT src, dst, attrs FROM edges WHERE run = ?1 ORDER BY rowid")?;
        ex.edges = stmt
            .query_map([run], |r| {
                Ok(EdgeExport {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    attrs: json_col(r, 2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = c.prepare("SELECT promise FROM promises WHERE run = ?1 ORDER BY rowid")?;
        ex.promises = stmt
            .query_map([run], |r| json_col(r, 0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            c.prepare("SELECT violation FROM violations WHERE run = ?1 ORDER BY rowid")?;
        ex.violations = stmt
            .query_map([run], |r| json_col(r, 0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ex)
    }

    /// A node's task and state, from its row.
    pub(super) fn node_row(
        c: &Connection,
        path: &Path,
        run: &str,
        node: &str,
    ) -> Result<Option<(Task, crate::model::NodeState)>> {
        let row: Option<(String, String)> = c
            .prepare_cached("SELECT task, state FROM nodes WHERE run = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![run, node], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(wrapper(path))?;
        let Some((task, state)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("run {run} node `{node}` has an unreadable {what}: {e}"),
        };
        let task: Task = serde_json::from_str(&task).map_err(|e| corrupt("task", &e))?;
        let state = state.parse().map_err(|e: String| corrupt("state", &e))?;
        Ok(Some((task, state)))
    }

    /// The log lines of a node's attempts (all attempts when `attempt` is
    /// `None`) after line `after.1` of attempt `after.0`, in order, at most
    /// `limit` of them.
    pub(super) fn log_lines(
        &self,
        run: &str,
        node: &str,
        attempt: Option<u32>,
        after: (u32, u32),
        limit: Option<usize>,
    ) -> Result<Vec<LogLine>> {
        let c = self.lock();
        let exists: bool = c
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM nodes WHERE run = ?1 AND id = ?2)",
                params![run, node],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !exists {
            return Err(Error::UnknownNode {
                run: run.to_string(),
                node: node.to_string(),
            });
        }
        let mut stmt = c
            .prepare(
                "SELECT attempt, line, stream, text FROM logs
                 WHERE run = ?1 AND node = ?2 AND (?3 IS NULL OR attempt = ?3)
                   AND (attempt > ?4 OR (attempt = ?4 AND line > ?5))
                 ORDER BY attempt, line LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    run,
                    node,
                    attempt,
                    after.0,
                    after.1,
                    // SQLite's "no limit".
                    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
                ],
                |r| {
                    Ok(LogLine {
                        node: node.to_string(),
                        attempt: r.get(0)?,
                        line: r.get(1)?,
                        stream: r.get(2)?,
                        text: r.get(3)?,
                    })
                },
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn read_task_durations(
        &self,
        workflow: &str,
        runs: usize,
        per_task: usize,
    ) -> Result<Vec<TaskSample>> {
        // The workflow's runs through `runs_workflow_created`, their attempts and
        // nodes through their primary keys; the window keeps the newest
        // `per_task` of each task name.
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "WITH recent AS (
                     SELECT id FROM runs WHERE workflow = ?1
                     ORDER BY created_at DESC, rowid DESC LIMIT ?2
                 ), ok AS (
                     SELECT a.run, a.node, a.attempt, a.started_at, a.finished_at,
                            json_extract(n.task, '$.name') AS task
                     FROM recent r
                     JOIN attempts a ON a.run = r.id
                     JOIN nodes n ON n.run = a.run AND n.id = a.node
                     WHERE a.outcome = 'succeeded' AND a.finished_at IS NOT NULL
                 ), ranked AS (
                     SELECT *, row_number() OVER (
                         PARTITION BY task ORDER BY finished_at DESC, run, node, attempt
                     ) AS k FROM ok
                 )
                 SELECT run, node, task, attempt, started_at, finished_at FROM ranked
                 WHERE k <= ?3 ORDER BY task, k",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String, i64, String, String)> = stmt
            .query_map(params![workflow, clamp(runs), clamp(per_task)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, node, task, attempt, started, finished)| {
                let (s, f) = (millis(&started)?, millis(&finished)?);
                Some(TaskSample::new(&run, &node, &task, attempt as u32, s, f))
            })
            .collect())
    }

    pub(super) fn read_run_durations(
        &self,
        workflow: &str,
        limit: usize,
    ) -> Result<Vec<RunSample>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached(
                "SELECT id, created_at, finished_at FROM runs
                 WHERE workflow = ?1 AND status = 'succeeded' AND finished_at IS NOT NULL
                 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String)> = stmt
            .query_map(params![workflow, clamp(limit)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, started, finished)| {
                Some(RunSample::new(&run, millis(&started)?, millis(&finished)?))
            })
            .collect())
    }
}
