//! The scheduler: reads every pipeline file of a folder, reloads them when
//! they change, and starts their runs on their cron schedules through an
//! [`Engine`] (`docs/scheduler.md`).
//!
//! - Each fire time runs at most once, even across restarts and with two
//!   schedulers on one database: a fire time is claimed in the store
//!   ([`Store::claim_fire`]) before its run starts, and the run's id
//!   carries the fire time.
//! - No catch-up by default (what fell due while no scheduler ran is
//!   skipped); `catchup: true` runs every missed fire time. A pipeline
//!   with `max_active_runs` fires only while fewer of its runs are active.
//! - A file that does not load is an import error, listed with its
//!   message, and the others go on.
//! - [`backfill`] runs the fire times of a range, with reprocessing modes.

pub mod folder;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::engine::{Engine, RunHandle, StopSignals};
use crate::error::{Error, Result};
use crate::file::Compiled;
use crate::model::RunStatus;
use crate::store::Store;

pub use folder::Folder;

/// How often the folder is read again for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// A fire claimed but whose run never registered (its scheduler died in
/// between) is started again after this long.
const ORPHAN_AFTER_MS: i64 = 30_000;

/// One line of `orch scheduler DIR --list`: a pipeline with its schedule
/// and next fire time, or a file's import error.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Listing {
    /// The file.
    pub file: PathBuf,
    /// The pipeline's name (none for a file that did not load).
    pub pipeline: Option<String>,
    /// Its cron schedule, if it has one.
    pub schedule: Option<String>,
    /// The schedule's time zone.
    pub timezone: Option<String>,
    /// The next fire time (RFC 3339, UTC).
    pub next_fire: Option<String>,
    /// The latest fire time recorded in the database.
    pub last_fire: Option<String>,
    /// Why the file does not load.
    pub error: Option<String>,
}

/// Lists a folder's pipelines and import errors, with the fire times the
/// store (when given) recorded.
pub fn listing(folder: &Folder, store: Option<&dyn Store>, now: Timestamp) -> Vec<Listing> {
    let (pipelines, errors) = folder.pipelines();
    let mut out: Vec<Listing> = pipelines
        .into_iter()
        .map(|(name, (file, c))| {
            let last = store
                .and_then(|s| s.last_fire(&name).ok().flatten())
                .and_then(|ms| Timestamp::from_millisecond(ms).ok());
            Listing {
                file: file.to_path_buf(),
                pipeline: Some(name),
                schedule: c.schedule.as_ref().map(|s| s.text().to_string()),
                timezone: c.schedule.as_ref().map(|s| s.zone().to_string()),
                next_fire: c
                    .schedule
                    .as_ref()
                    .and_then(|s| plan::next(s, last, now))
                    .map(|t| t.to_string()),
                last_fire: last.map(|t| t.to_string()),
                error: None,
            }
        })
        .collect();
    out.extend(errors.into_iter().map(|e| Listing {
        file: e.place.file.clone(),
        pipeline: None,
        schedule: None,
        timezone: None,
        next_fire: None,
        last_fire: None,
        error: Some(e.to_string()),
    }));
    if let Some(problem) = &folder.problem {
        out.push(Listing {
            file: folder.dir().to_path_buf(),
            pipeline: None,
            schedule: None,
            timezone: None,
            next_fire: None,
            last_fire: None,
            error: Some(problem.clone()),
        });
    }
    out.sort_by(|a, b| (&a.file, &a.pipeline).cmp(&(&b.file, &b.pipeline)));
    out
}

/// Fires the pipelines of a folder on their schedules.
pub struct Scheduler {
    folder: Folder,
    engine: Engine,
    /// When this scheduler began to watch each pipeline.
    since: BTreeMap<String, Timestamp>,
    /// Orphaned fires already started again by this scheduler.
    recovered: HashSet<(String, i64)>,
    runs: JoinSet<(String, Result<crate::RunOutcome>)>,
}

impl Scheduler {
    /// A scheduler of the folder `dir` starting runs on `engine`.
    pub fn new(dir: impl Into<PathBuf>, engine: Engine) -> Scheduler {
        Scheduler {
            folder: Folder::new(dir),
            engine,
            since: BTreeMap::new(),
            recovered: HashSet::new(),
            runs: JoinSet::new(),
        }
    }

    /// The folder as last read.
    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// Reads the folder again (new, changed and removed files).
    pub fn reload(&mut self) {
        let changed = self.folder.reload();
        if !changed.is_empty() {
            info!(files = changed.len(), dir = %self.folder.dir().display(), "pipeline files loaded");
        }
    }

    /// Starts the runs due at `now`; returns how many it started.
    pub async fn tick(&mut self, now: Timestamp) -> Result<usize> {
        let store = self.engine.store().clone();
        let mut due: Vec<(String, Compiled, Vec<Timestamp>)> = Vec::new();
        {
            let (pipelines, _) = self.folder.pipelines();
            for (name, (_, c)) in pipelines {
                let Some(schedule) = &c.schedule else {
                    continue;
                };
                let since = *self.since.entry(name.clone()).or_insert(now);
                let last = store
                    .last_fire(&name)?
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok());
                let times = plan::due(schedule, last, since, now, c.catchup);
                if !times.is_empty() {
                    due.push((name, c.clone(), times));
                }
            }
        }
        let mut started = 0;
        for (name, c, times) in due {
            for at in times {
                if let Some(max) = c.max_active_runs {
                    if store.active_runs(&name)? >= u64::from(max) {
                        info!(pipeline = %name, max, "max_active_runs reached: the fire time waits");
                        break;
                    }
                }
                if let Some(handle) = fire(&self.engine, &c, at, "schedule").await? {
                    started += 1;
                    self.watch(name.clone(), handle);
                }
            }
        }
        Ok(started)
    }

    /// Starts again the fires some scheduler claimed but never started a
    /// run for (it died in between), once each.
    pub async fn recover(&mut self, now: Timestamp) -> Result<usize> {
        let store = self.engine.store().clone();
        let names: Vec<(String, Compiled)> = {
            let (pipelines, _) = self.folder.pipelines();
            pipelines
                .into_iter()
                .map(|(n, (_, c))| (n, c.clone()))
                .collect()
        };
        let now_ms = now.as_millisecond();
        let mut started = 0;
        for (name, c) in names {
            let day = 86_400_000;
            for f in store.fires(&name, now_ms - day, now_ms - ORPHAN_AFTER_MS)? {
                if f.status.is_some() || !self.recovered.insert((name.clone(), f.at_ms)) {
                    continue;
                }
                warn!(pipeline = %name, run = %f.run, "a fire time was claimed but its run never started: starting it");
                let mut opts = c.options();
                opts.run_id = Some(f.run.clone());
                opts.fired_at = Some(f.at_ms as u64);
                opts.params = c.params.clone();
                match self.engine.start(&c.definition, &opts).await {
                    Ok(handle) => {
                        started += 1;
                        self.watch(name.clone(), handle);
                    }
                    // Another scheduler got there first.
                    Err(Error::Refused { .. }) => {}
                    Err(e) => {
                        warn!(pipeline = %name, error = %e, "the run of a claimed fire time did not start")
                    }
                }
            }
        }
        Ok(started)
    }

    fn watch(&mut self, name: String, handle: RunHandle) {
        self.runs.spawn(async move { (name, handle.wait().await) });
    }

    /// The earliest next fire time of the folder's pipelines.
    fn next_fire(&self, now: Timestamp) -> Option<Timestamp> {
        let (pipelines, _) = self.folder.pipelines();
        pipelines
            .values()
            .filter_map(|(_, c)| c.schedule.as_ref().and_then(|s| s.next_after(now)))
            .min()
    }

    /// Runs until `SIGINT` or `SIGTERM`: reads the folder every
    /// [`RELOAD_EVERY`], fires what is due, then stops gracefully (the
    /// runs it started are left resumable; a second signal stops at
    /// once).
    pub async fn run(&mut self) -> Result<()> {
        let mut signals = StopSignals::install();
        let mut reloaded = tokio::time::Instant::now();
        self.reload();
        self.recover(Timestamp::now()).await?;
        loop {
            if reloaded.elapsed() >= RELOAD_EVERY {
                self.reload();
                self.recover(Timestamp::now()).await?;
                reloaded = tokio::time::Instant::now();
            }
            let now = Timestamp::now();
            self.tick(now).await?;
            let until_reload = RELOAD_EVERY.saturating_sub(reloaded.elapsed());
            let until_fire = self
                .next_fire(Timestamp::now())
                .and_then(|t| {
                    let d = t.duration_since(Timestamp::now());
                    Duration::try_from(d).ok()
                })
                .unwrap_or(until_reload);
            let wait = until_fire.min(until_reload);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                signal = signals.next() => {
                    warn!(signal, "stopping the scheduler: no new run starts; running ones are asked to stop and stay resumable");
                    self.engine.shutdown(crate::engine::stop_grace());
                    break;
                }
                Some(done) = self.runs.join_next() => log_outcome(done),
            }
        }
        loop {
            tokio::select! {
                done = self.runs.join_next() => match done {
                    Some(done) => log_outcome(done),
                    None => return Ok(()),
                },
                _ = signals.next() => self.engine.shutdown(Duration::ZERO),
            }
        }
    }
}

fn log_outcome(
    done: std::result::Result<(String, Result<crate::RunOutcome>), tokio::task::JoinError>,
) {
    match done {
        Ok((name, Ok(outcome))) => {
            info!(pipeline = %name, run = %outcome.run, status = %outcome.status, "scheduled run ended")
        }
        Ok((name, Err(e))) => warn!(pipeline = %name, error = %e, "scheduled run failed to run"),
        Err(e) => warn!(error = %e, "a scheduled run's task ended abnormally"),
    }
}

/// Claims the fire time `at` of the pipeline `c` and starts its run, whose
/// id carries the fire time; `None` when another scheduler claimed it.
async fn fire(
    engine: &Engine,
    c: &Compiled,
    at: Timestamp,
    kind: &str,
) -> Result<Option<RunHandle>> {
    let name = &c.definition.name;
    let ms = at.as_millisecond();
    let run = crate::time::run_id_at(ms.max(0) as u64);
    if !engine.store().claim_fire(name, ms, &run, kind)? {
        return Ok(None);
    }
    info!(pipeline = %name, fire_time = %at, run = %run, "fired");
    start_for(engine, c, at, run).await.map(Some)
}

async fn start_for(engine: &Engine, c: &Compiled, at: Timestamp, run: String) -> Result<RunHandle> {
    let mut opts = c.options();
    opts.run_id = Some(run);
    opts.fired_at = Some(at.as_millisecond().max(0) as u64);
    opts.params = c.params.clone();
    engine.start(&c.definition, &opts).await
}

/// Which fire times of a range a backfill runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reprocess {
    /// Only fire times with no run yet (the default).
    Missing,
    /// Those, and fire times whose run failed, was cancelled or broke a
    /// promise.
    Failed,
    /// Every fire time of the range, again.
    All,
}

impl std::str::FromStr for Reprocess {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Reprocess, String> {
        match s {
            "missing" => Ok(Reprocess::Missing),
            "failed" => Ok(Reprocess::Failed),
            "all" => Ok(Reprocess::All),
            other => Err(format!(
                "unknown reprocess mode `{other}` (expected missing, failed or all)"
            )),
        }
    }
}

/// One fire time of a backfill and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Backfilled {
    /// The fire time (RFC 3339, UTC).
    pub fire_time: String,
    /// The run (the one that was there when it was skipped).
    pub run: String,
    /// The run's final status, or why it was skipped.
    pub status: String,
}

/// The most fire times one backfill covers.
pub const MAX_BACKFILL: usize = 10_000;

/// Runs the fire times of `c`'s schedule in `[from, to]` that `reprocess`
/// selects, at most `max_active` at once, each to its end; returns each
/// fire time of the range with what became of it.
pub async fn backfill(
    engine: &Engine,
    c: &Compiled,
    from: Timestamp,
    to: Timestamp,
    reprocess: Reprocess,
    max_active: usize,
) -> Result<Vec<Backfilled>> {
    let name = &c.definition.name;
    let schedule = c.schedule.as_ref().ok_or_else(|| Error::Refused {
        what: format!("a backfill of `{name}`"),
        message: "the workflow has no schedule".into(),
    })?;
    if to < from {
        return Err(Error::Refused {
            what: format!("a backfill of `{name}`"),
            message: format!("--to {to} is before --from {from}"),
        });
    }
    let start = from
        .checked_sub(jiff::SignedDuration::from_millis(1))
        .unwrap_or(from);
    let times = schedule.between(start, to, MAX_BACKFILL + 1);
    if times.len() > MAX_BACKFILL {
        return Err(Error::Refused {
            what: format!("a backfill of `{name}`"),
            message: format!(
                "the range holds more than {MAX_BACKFILL} fire times: backfill it in parts"
            ),
        });
    }
    let store: Arc<dyn Store> = engine.store().clone();
    let recorded: BTreeMap<i64, crate::store::Fire> = store
        .fires(name, from.as_millisecond(), to.as_millisecond())?
        .into_iter()
        .map(|f| (f.at_ms, f))
        .collect();
    let mut report: BTreeMap<i64, Backfilled> = BTreeMap::new();
    let mut running: JoinSet<(i64, String, Result<crate::RunOutcome>)> = JoinSet::new();
    let max_active = max_active.max(1);
    for at in times {
        let ms = at.as_millisecond();
        let before = recorded.get(&ms);
        let again = match (before, reprocess) {
            (None, _) => true,
            (Some(_), Reprocess::All) => true,
            (Some(f), Reprocess::Failed) => matches!(
                f.status,
                None | Some(RunStatus::Failed | RunStatus::Cancelled | RunStatus::PromiseBroken)
            ),
            (Some(_), Reprocess::Missing) => false,
        };
        if !again {
            let f = before.expect("recorded");
            report.insert(
                ms,
                Backfilled {
                    fire_time: at.to_string(),
                    run: f.run.clone(),
                    status: format!(
                        "skipped ({})",
                        f.status
                            .map_or("not started".to_string(), |s| s.to_string())
                    ),
                },
            );
            continue;
        }
        while running.len() >= max_active {
            collect(&mut running, &mut report).await;
        }
        let run = crate::time::run_id_at(ms.max(0) as u64);
        if before.is_some() {
            store.refire(name, ms, &run, "backfill")?;
        } else if !store.claim_fire(name, ms, &run, "backfill")? {
            // A scheduler fired it meanwhile.
            report.insert(
                ms,
                Backfilled {
                    fire_time: at.to_string(),
                    run: String::new(),
                    status: "skipped (fired meanwhile)".into(),
                },
            );
            continue;
        }
        info!(pipeline = %name, fire_time = %at, run = %run, "backfill");
        let handle = start_for(engine, c, at, run.clone()).await?;
        running.spawn(async move { (ms, run, handle.wait().await) });
    }
    while !running.is_empty() {
        collect(&mut running, &mut report).await;
    }
    Ok(report.into_values().collect())
}

async fn collect(
    running: &mut JoinSet<(i64, String, Result<crate::RunOutcome>)>,
    report: &mut BTreeMap<i64, Backfilled>,
) {
    if let Some(Ok((ms, run, outcome))) = running.join_next().await {
        let status = match outcome {
            Ok(o) => o.status.to_string(),
            Err(e) => format!("error: {e}"),
        };
        let fire_time = Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        report.insert(
            ms,
            Backfilled {
                fire_time,
                run,
                status,
            },
        );
    }
}

/// The pipeline named `name` in the folder `dir`, or the workflow file
/// `dir` itself.
pub fn find(
    path: &Path,
    name: Option<&str>,
) -> std::result::Result<Compiled, crate::file::FileError> {
    if path.is_dir() {
        let mut folder = Folder::new(path);
        folder.reload();
        let (pipelines, errors) = folder.pipelines();
        let want = name.unwrap_or_default();
        if let Some((_, c)) = pipelines.get(want) {
            return Ok((*c).clone());
        }
        let known: Vec<&str> = pipelines.keys().map(String::as_str).collect();
        let mut message = format!(
            "no pipeline `{want}` in the folder (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        if !errors.is_empty() {
            message.push_str(&format!("; {} file(s) do not load", errors.len()));
        }
        return Err(crate::file::FileError::new(
            crate::file::Place::file(path),
            message,
        ));
    }
    crate::file::load_pipeline(path, name, &serde_json::Map::new())
}
