//! Reads of runs and their history on PostgreSQL: run ids, the run list,
//! events, exports, nodes, logs and the durations of past runs.

use super::conn::Tx;
use super::{clamp, millis, PgStore};
use crate::error::{Error, Result};
use crate::history::{AttemptRecord, EdgeExport, Event, EventKind, NodeExport, RunExport};
use crate::model::{RunStatus, Task};
use crate::store::{LogLine, RunSample, RunSummary, RunTail, TaskSample};

impl PgStore {
    pub(super) fn find_run(&self, what: &str) -> Result<String> {
        let found = self.read(|tx| {
            if what == "latest" {
                let r = tx.row(
                    "SELECT id FROM runs ORDER BY created_at DESC, pos DESC LIMIT 1",
                    &[],
                )?;
                return r.map(|r| tx.get(&r, 0)).transpose();
            }
            // Ids are lower-case ASCII; `starts_with` under the "C"
            // collation of the column.
            let prefix = what.to_ascii_lowercase();
            let rows = tx.rows(
                "SELECT id FROM runs WHERE starts_with(id, $1) ORDER BY id LIMIT 3",
                &[&prefix],
            )?;
            let ids: Vec<String> = rows.iter().map(|r| tx.get(r, 0)).collect::<Result<_>>()?;
            match ids.as_slice() {
                [one] => Ok(Some(one.clone())),
                many if many.contains(&prefix) => Ok(Some(prefix.clone())),
                [] => Ok(None),
                _ => Err(Error::AmbiguousRun {
                    prefix: what.to_string(),
                    matches: ids.join(", "),
                }),
            }
        })?;
        found.ok_or_else(|| Error::UnknownRun(what.to_string()))
    }

    pub(super) fn all_runs(&self) -> Result<Vec<RunSummary>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, workflow, status, created_at, finished_at,
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                        config::json ->> 'fired_at'
                 FROM runs ORDER BY created_at DESC, pos DESC",
                &[],
            )?;
            rows.iter().map(|r| PgStore::summary(tx, r)).collect()
        })
    }

    pub(super) fn read_events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT seq, at, data FROM events WHERE run = $1 AND seq <= $2 ORDER BY seq",
                &[&run, &upto.map_or(i64::MAX, |u| u as i64)],
            )?;
            rows.iter()
                .map(|r| {
                    let seq = tx.get::<i64>(r, 0)? as u64;
                    let data: String = tx.get(r, 2)?;
                    let kind: EventKind = serde_json::from_str(&data).map_err(|e| {
                        self.corrupt(format!("run {run} event {seq} does not parse: {e}"))
                    })?;
                    Ok(Event {
                        seq,
                        at: tx.get(r, 1)?,
                        kind,
                    })
                })
                .collect()
        })
    }

    pub(super) fn read_tail(&self, run: &str, after: u64, limit: usize) -> Result<RunTail> {
        let after = after.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|tx| {
            let Some(head) = tx.row("SELECT status, last_seq FROM runs WHERE id = $1", &[&run])?
            else {
                return Err(Error::UnknownRun(run.to_string()));
            };
            let status: String = tx.get(&head, 0)?;
            let last: i64 = tx.get(&head, 1)?;
            let rows = tx.rows(
                "SELECT seq, at, data FROM events WHERE run = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&run, &after, &limit],
            )?;
            let events = rows
                .iter()
                .map(|r| {
                    let seq = tx.get::<i64>(r, 0)? as u64;
                    let data: String = tx.get(r, 2)?;
                    let kind: EventKind = serde_json::from_str(&data).map_err(|e| {
                        self.corrupt(format!("run {run} event {seq} does not parse: {e}"))
                    })?;
                    Ok(Event {
                        seq,
                        at: tx.get(r, 1)?,
                        kind,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RunTail {
                events,
                status: status.parse().map_err(|e| {
                    self.corrupt(format!("run {run} has the status {status:?}: {e}"))
                })?,
                last: last as u64,
            })
        })
    }

    pub(super) fn read_export(&self, tx: &mut Tx<'_>, run: &str) -> Result<RunExport> {
        let Some(r) = tx.row(
            "SELECT workflow, status, reason, orchestrator_pid, created_at, finished_at, last_seq,
                    (config::json -> 'source')::text
             FROM runs WHERE id = $1",
            &[&run],
        )?
        else {
            return Err(Error::UnknownRun(run.to_string()));
        };
        let status: String = tx.get(&r, 1)?;
        let mut ex = RunExport {
            run: run.to_string(),
            workflow: tx.get(&r, 0)?,
            status: status.parse().unwrap_or(RunStatus::Failed),
            reason: tx.get(&r, 2)?,
            orchestrator_pid: tx.get::<Option<i64>>(&r, 3)?.map(|p| p as u32),
            created_at: tx.get(&r, 4)?,
            finished_at: tx.get(&r, 5)?,
            event: tx.get::<i64>(&r, 6)? as u64,
            nodes: Vec::new(),
            edges: Vec::new(),
            promises: Vec::new(),
            violations: Vec::new(),
            source: tx
                .get::<Option<String>>(&r, 7)?
                .and_then(|s| serde_json::from_str(&s).ok()),
        };
        let mut attempts: std::collections::HashMap<String, Vec<AttemptRecord>> =
            Default::default();
        for r in tx.rows(
            "SELECT node, attempt, pid, started_at, finished_at, outcome, exit_code, error, files,
                    runner
             FROM attempts WHERE run = $1 ORDER BY node, attempt",
            &[&run],
        )? {
            let outcome: Option<String> = tx.get(&r, 5)?;
            let files: Option<String> = tx.get(&r, 8)?;
            let a = AttemptRecord {
                attempt: tx.get::<i64>(&r, 1)? as u32,
                pid: tx.get::<Option<i64>>(&r, 2)?.map(|p| p as u32),
                started_at: tx.get(&r, 3)?,
                finished_at: tx.get(&r, 4)?,
                outcome: outcome.and_then(|o| o.parse().ok()),
                exit_code: tx.get::<Option<i64>>(&r, 6)?.map(|c| c as i32),
                error: tx.get(&r, 7)?,
                files: match files {
                    Some(_) => self.json(tx, &r, 8, "an attempt's files")?,
                    None => Vec::new(),
                },
                runner: tx.get(&r, 9)?,
            };
            attempts.entry(tx.get(&r, 0)?).or_default().push(a);
        }
        for r in tx.rows(
            "SELECT n.id, n.task, n.state, n.inputs, n.attrs, o.value, n.started_at, n.finished_at
             FROM nodes n LEFT JOIN outputs o ON o.run = n.run AND o.node = n.id
             WHERE n.run = $1 ORDER BY n.pos",
            &[&run],
        )? {
            let id: String = tx.get(&r, 0)?;
            let state: String = tx.get(&r, 2)?;
            let output: Option<String> = tx.get(&r, 5)?;
            ex.nodes.push(NodeExport {
                attempts: attempts.remove(&id).unwrap_or_default(),
                task: self.json(tx, &r, 1, "a node's task")?,
                state: state
                    .parse()
                    .map_err(|e: String| self.corrupt(format!("node `{id}`: {e}")))?,
                inputs: self.json(tx, &r, 3, "a node's inputs")?,
                attrs: self.json(tx, &r, 4, "a node's attributes")?,
                // An output that does not read back is a damaged
                // database, not a null.
                output: output
                    .map(|o| {
                        serde_json::from_str(&o).map_err(|e| {
                            self.corrupt(format!("node `{id}`'s output does not parse: {e}"))
                        })
                    })
                    .transpose()?,
                started_at: tx.get(&r, 6)?,
                finished_at: tx.get(&r, 7)?,
                id,
            });
        }
        for r in tx.rows(
            "SELECT src, dst, attrs FROM edges WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.edges.push(EdgeExport {
                from: tx.get(&r, 0)?,
                to: tx.get(&r, 1)?,
                attrs: self.json(tx, &r, 2, "an edge's attributes")?,
            });
        }
        for r in tx.rows(
            "SELECT promise FROM promises WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.promises.push(self.json(tx, &r, 0, "a promise")?);
        }
        for r in tx.rows(
            "SELECT violation FROM violations WHERE run = $1 ORDER BY pos",
            &[&run],
        )? {
            ex.violations.push(self.json(tx, &r, 0, "a violation")?);
        }
        Ok(ex)
    }

    pub(super) fn summary(tx: &Tx<'_>, r: &postgres::Row) -> Result<RunSummary> {
        Ok(RunSummary {
            id: tx.get(r, 0)?,
            workflow: tx.get(r, 1)?,
            status: tx.get(r, 2)?,
            created_at: tx.get(r, 3)?,
            finished_at: tx.get(r, 4)?,
            nodes: tx.get::<i64>(r, 5)? as u64,
            fired_at: tx.get(r, 6)?,
        })
    }

    /// A node's task and state, from its row.
    pub(super) fn node_row(
        &self,
        tx: &mut Tx<'_>,
        run: &str,
        node: &str,
    ) -> Result<Option<(Task, crate::model::NodeState)>> {
        let Some(r) = tx.row(
            "SELECT task, state FROM nodes WHERE run = $1 AND id = $2",
            &[&run, &node],
        )?
        else {
            return Ok(None);
        };
        let (task, state): (String, String) = (tx.get(&r, 0)?, tx.get(&r, 1)?);
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            self.corrupt(format!(
                "run {run} node `{node}` has an unreadable {what}: {e}"
            ))
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
        self.read(|tx| {
            let exists = tx.row(
                "SELECT 1 FROM nodes WHERE run = $1 AND id = $2",
                &[&run, &node],
            )?;
            if exists.is_none() {
                return Err(Error::UnknownNode {
                    run: run.to_string(),
                    node: node.to_string(),
                });
            }
            let rows = tx.rows(
                "SELECT attempt, line, stream, text FROM logs
                 WHERE run = $1 AND node = $2 AND ($3::bigint IS NULL OR attempt = $3)
                   AND (attempt > $4 OR (attempt = $4 AND line > $5))
                 ORDER BY attempt, line LIMIT $6",
                &[
                    &run,
                    &node,
                    &attempt.map(i64::from),
                    &i64::from(after.0),
                    &i64::from(after.1),
                    &limit.map(clamp),
                ],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(LogLine {
                        node: node.to_string(),
                        attempt: tx.get::<i64>(r, 0)? as u32,
                        line: tx.get::<i64>(r, 1)? as u32,
                        stream: tx.get(r, 2)?,
                        text: tx.get(r, 3)?,
                    })
                })
                .collect()
        })
    }

    pub(super) fn read_task_durations(
        &self,
        workflow: &str,
        runs: usize,
        per_task: usize,
    ) -> Result<Vec<TaskSample>> {
        let rows: Vec<(String, String, String, i64, String, String)> = self.read(|tx| {
            let rows = tx.rows(
                "WITH recent AS (
                     SELECT id FROM runs WHERE workflow = $1
                     ORDER BY created_at DESC, pos DESC LIMIT $2
                 ), ok AS (
                     SELECT a.run, a.node, a.attempt, a.started_at, a.finished_at,
                            (n.task::json ->> 'name') COLLATE \"C\" AS task
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
                 WHERE k <= $3 ORDER BY task, k",
                &[&workflow, &clamp(runs), &clamp(per_task)],
            )?;
            rows.iter()
                .map(|r| {
                    Ok((
                        tx.get(r, 0)?,
                        tx.get(r, 1)?,
                        tx.get(r, 2)?,
                        tx.get(r, 3)?,
                        tx.get(r, 4)?,
                        tx.get(r, 5)?,
                    ))
                })
                .collect()
        })?;
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
        let rows: Vec<(String, String, String)> = self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, created_at, finished_at FROM runs
                 WHERE workflow = $1 AND status = 'succeeded' AND finished_at IS NOT NULL
                 ORDER BY created_at DESC, pos DESC LIMIT $2",
                &[&workflow, &clamp(limit)],
            )?;
            rows.iter()
                .map(|r| Ok((tx.get(r, 0)?, tx.get(r, 1)?, tx.get(r, 2)?)))
                .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(run, started, finished)| {
                Some(RunSample::new(&run, millis(&started)?, millis(&finished)?))
            })
            .collect())
    }
}
