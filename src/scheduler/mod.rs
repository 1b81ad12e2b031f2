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
#[cfg(feature = "server")]
pub mod ship;
pub mod timers;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{info, warn};

use serde_json::{Map, Value};

use crate::engine::{Engine, RunHandle, RunOptions, StopSignals};
use crate::error::{Error, Result};
use crate::file::Compiled;
use crate::model::{Definition, RunStatus};
use crate::schedule::Schedule;
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
    /// The event keys that start it.
    pub events: Vec<String>,
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
                events: c.events.clone(),
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
    let error = |file: PathBuf, message: String| Listing {
        file,
        pipeline: None,
        schedule: None,
        timezone: None,
        events: Vec::new(),
        next_fire: None,
        last_fire: None,
        error: Some(message),
    };
    out.extend(
        errors
            .into_iter()
            .map(|e| error(e.place.file.clone(), e.to_string())),
    );
    if let Some(problem) = &folder.problem {
        out.push(error(folder.dir().to_path_buf(), problem.clone()));
    }
    out.sort_by(|a, b| (&a.file, &a.pipeline).cmp(&(&b.file, &b.pipeline)));
    out
}

/// A workflow a scheduler fires: what runs, how, and what starts it
/// (its definition's [triggers](crate::model::Triggers)).
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Its name, unique among a scheduler's pipelines.
    pub name: String,
    /// What runs, with its triggers.
    pub definition: Definition,
    /// How its runs run.
    pub options: RunOptions,
    /// Its schedule, parsed.
    pub schedule: Option<Schedule>,
    /// The file it comes from (`None`: a Rust program's workflow).
    pub file: Option<PathBuf>,
    /// Parameters a run must be given (it starts only from an event
    /// whose payload has them).
    pub needs: Vec<String>,
}

impl Pipeline {
    /// A Rust program's workflow, with the schedule, events and
    /// parameters set on it ([`crate::Workflow::schedule`],
    /// [`crate::Workflow::on_event`], [`crate::Workflow::param`]); its
    /// schedule is checked here.
    ///
    /// ```
    /// let mut wf = orch::Workflow::new("hourly");
    /// wf.schedule("0 0 * * * *");
    /// wf.node("a", orch::Task::command(["true"]));
    /// let p = orch::scheduler::Pipeline::from_workflow(&wf).unwrap();
    /// assert_eq!(p.schedule.unwrap().text(), "0 0 * * * *");
    /// wf.schedule("0 99 * * *");
    /// assert!(orch::scheduler::Pipeline::from_workflow(&wf).is_err());
    /// ```
    pub fn from_workflow(wf: &crate::Workflow) -> Result<Pipeline> {
        let definition = wf.definition().clone();
        let t = &definition.triggers;
        if t.max_active_runs == Some(0) {
            return Err(Error::Refused {
                what: format!("the triggers of `{}`", definition.name),
                message: "max_active_runs(0) would never start a run".into(),
            });
        }
        let schedule =
            match &t.schedule {
                Some(cron) => Some(Schedule::parse(cron, t.timezone.as_deref()).map_err(|e| {
                    Error::Refused {
                        what: format!("the schedule of `{}`", definition.name),
                        message: e,
                    }
                })?),
                None => None,
            };
        Ok(Pipeline {
            name: definition.name.clone(),
            options: wf.options().clone(),
            schedule,
            file: None,
            definition,
            needs: Vec::new(),
        })
    }

    /// A pipeline of a workflow file.
    pub fn from_file(path: &Path, c: &Compiled) -> Pipeline {
        Pipeline {
            name: c.definition.name.clone(),
            definition: c.definition.clone(),
            options: c.options(),
            schedule: c.schedule.clone(),
            file: Some(path.to_path_buf()),
            needs: c.needs.clone(),
        }
    }

    /// What a run started with `params` runs, and how: a file is compiled
    /// again with them; a program's workflow gets them in place of its
    /// `$param` references when it starts.
    pub fn for_params(
        &self,
        params: &Map<String, Value>,
    ) -> std::result::Result<(Definition, RunOptions), String> {
        if params.is_empty() {
            return Ok((self.definition.clone(), self.options.clone()));
        }
        match &self.file {
            Some(path) => {
                let c = crate::file::load_pipeline(path, Some(&self.name), params)
                    .map_err(|e| e.to_string())?;
                Ok((c.definition.clone(), c.options()))
            }
            None => {
                let mut opts = self.options.clone();
                opts.params = params.clone();
                Ok((self.definition.clone(), opts))
            }
        }
    }
}

/// Fires pipelines on their schedules, on events and on timers: those of
/// a folder of pipeline files, or those a Rust program defines.
pub struct Scheduler {
    folder: Option<Folder>,
    program: Vec<Pipeline>,
    /// The pipelines by name, as last read.
    table: BTreeMap<String, Pipeline>,
    engine: Engine,
    /// When this scheduler began to watch each pipeline.
    since: BTreeMap<String, Timestamp>,
    started: Timestamp,
    /// Orphaned fires already started again by this scheduler.
    recovered: HashSet<(String, i64)>,
    /// The last event looked at.
    cursor: i64,
    /// Timers whose workflow is unknown here, reported once.
    reported: HashSet<i64>,
    runs: JoinSet<(String, Result<crate::RunOutcome>)>,
}

impl Scheduler {
    /// A scheduler of the folder `dir` starting runs on `engine`.
    pub fn new(dir: impl Into<PathBuf>, engine: Engine) -> Scheduler {
        let home = engine.home().to_path_buf();
        let mut s = Scheduler::with(engine, Vec::new());
        s.folder = Some(Folder::new(dir).skipping(&home));
        s
    }

    /// A scheduler of a Rust program's workflows (their schedules,
    /// events and parameters set with [`crate::Workflow::schedule`] and
    /// the methods beside it), starting runs on `engine`.
    ///
    /// ```no_run
    /// # async fn f() -> orch::Result<()> {
    /// let mut wf = orch::Workflow::new("every_minute");
    /// wf.schedule("0 * * * * *");
    /// wf.node("a", orch::Task::command(["true"]));
    /// let engine = orch::Engine::open(".orch/orch.db")?;
    /// let mut scheduler = orch::scheduler::Scheduler::for_workflows(engine, &[wf])?;
    /// scheduler.run().await
    /// # }
    /// ```
    pub fn for_workflows(engine: Engine, workflows: &[crate::Workflow]) -> Result<Scheduler> {
        let program = workflows
            .iter()
            .map(Pipeline::from_workflow)
            .collect::<Result<Vec<_>>>()?;
        let mut names = HashSet::new();
        for p in &program {
            if !names.insert(p.name.clone()) {
                return Err(Error::Refused {
                    what: "the scheduler's workflows".into(),
                    message: format!("two workflows are named `{}`", p.name),
                });
            }
        }
        Ok(Scheduler::with(engine, program))
    }

    fn with(engine: Engine, program: Vec<Pipeline>) -> Scheduler {
        let table = program
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Scheduler {
            folder: None,
            program,
            table,
            engine,
            since: BTreeMap::new(),
            started: Timestamp::now(),
            recovered: HashSet::new(),
            cursor: 0,
            reported: HashSet::new(),
            runs: JoinSet::new(),
        }
    }

    /// The folder as last read, for a folder's scheduler.
    pub fn folder(&self) -> Option<&Folder> {
        self.folder.as_ref()
    }

    /// The pipelines by name, as last read.
    pub fn pipelines(&self) -> &BTreeMap<String, Pipeline> {
        &self.table
    }

    /// Reads the folder again (new, changed and removed files). Reading
    /// a Python file may take its time limit: on a multi-threaded runtime
    /// the other tasks go on meanwhile.
    pub fn reload(&mut self) {
        blocking(|| self.reload_now());
    }

    fn reload_now(&mut self) {
        let Some(folder) = &mut self.folder else {
            return;
        };
        let changed = folder.reload();
        if changed.is_empty() && !self.table.is_empty() {
            return;
        }
        if !changed.is_empty() {
            info!(files = changed.len(), dir = %folder.dir().display(), "pipeline files loaded");
        }
        let (found, _) = folder.pipelines();
        let mut table: BTreeMap<String, Pipeline> = found
            .into_iter()
            .map(|(name, (path, c))| (name, Pipeline::from_file(path, c)))
            .collect();
        for p in &self.program {
            table.entry(p.name.clone()).or_insert_with(|| p.clone());
        }
        self.table = table;
    }

    /// Starts the runs due at `now` (schedules, timers, events); returns
    /// how many it started.
    pub async fn tick(&mut self, now: Timestamp) -> Result<usize> {
        let scheduled = self.fire_schedules(now).await?;
        let timed = self.fire_timers(now).await?;
        let pushed = self.fire_events().await?;
        Ok(scheduled + timed + pushed)
    }

    async fn fire_schedules(&mut self, now: Timestamp) -> Result<usize> {
        let store = self.engine.store().clone();
        let mut due: Vec<(Pipeline, Vec<Timestamp>)> = Vec::new();
        for (name, p) in &self.table {
            let Some(schedule) = &p.schedule else {
                continue;
            };
            let since = *self.since.entry(name.clone()).or_insert(now);
            let last = store
                .last_fire(name)?
                .and_then(|ms| Timestamp::from_millisecond(ms).ok());
            let times = plan::due(schedule, last, since, now, p.definition.triggers.catchup);
            if !times.is_empty() {
                due.push((p.clone(), times));
            }
        }
        let mut started = 0;
        for (p, times) in due {
            for at in times {
                if let Some(max) = p.definition.triggers.max_active_runs {
                    if store.active_runs(&p.name)? >= u64::from(max) {
                        info!(pipeline = %p.name, max, "max_active_runs reached: the fire time waits");
                        break;
                    }
                }
                match fire(&self.engine, &p, &p.name, at, "schedule").await {
                    Ok(Some(handle)) => {
                        started += 1;
                        self.watch(p.name.clone(), handle);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(pipeline = %p.name, fire_time = %at, error = %e, "the scheduled run did not start");
                        break;
                    }
                }
            }
        }
        Ok(started)
    }

    /// Fires the timers that are due: a one-shot timer once at its
    /// moment, a recurring one on its cron schedule (no catch-up), each
    /// fire time claimed like a schedule's.
    async fn fire_timers(&mut self, now: Timestamp) -> Result<usize> {
        let store = self.engine.store().clone();
        let mut started = 0;
        for t in store.timers()? {
            if t.stopped_ms.is_some() {
                continue;
            }
            let Some(p) = self.table.get(&t.workflow).cloned() else {
                if self.reported.insert(t.id) {
                    warn!(timer = t.id, workflow = %t.workflow, "a timer fires a workflow this scheduler does not know");
                }
                continue;
            };
            let key = t.fire_key();
            let last = store.last_fire(&key)?;
            let times: Vec<Timestamp> = match (t.at_ms, &t.cron) {
                (Some(at), _) if last.is_none() && at <= now.as_millisecond() => {
                    Timestamp::from_millisecond(at).into_iter().collect()
                }
                (None, Some(cron)) => match Schedule::parse(cron, t.timezone.as_deref()) {
                    Ok(schedule) => {
                        let since = Timestamp::from_millisecond(t.created_ms).unwrap_or(now);
                        let last = last.and_then(|ms| Timestamp::from_millisecond(ms).ok());
                        plan::due(&schedule, last, since, now, false)
                    }
                    Err(e) => {
                        if self.reported.insert(t.id) {
                            warn!(timer = t.id, error = %e, "a timer's schedule does not parse");
                        }
                        Vec::new()
                    }
                },
                _ => Vec::new(),
            };
            for at in times {
                match fire(&self.engine, &p, &key, at, "timer").await {
                    Ok(Some(handle)) => {
                        started += 1;
                        self.watch(p.name.clone(), handle);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if self.reported.insert(t.id) {
                            warn!(timer = t.id, pipeline = %p.name, error = %e, "the timer's run did not start");
                        }
                    }
                }
            }
        }
        Ok(started)
    }

    /// Starts the workflows subscribed to the events pushed since the last
    /// look (those of the last day, when it starts), each event once per
    /// workflow, its payload's fields as parameters.
    async fn fire_events(&mut self) -> Result<usize> {
        if !self
            .table
            .values()
            .any(|p| !p.definition.triggers.events.is_empty())
        {
            return Ok(0);
        }
        let store = self.engine.store().clone();
        let since = self.started.as_millisecond() - 86_400_000;
        let mut started = 0;
        loop {
            let events = store.events_after(self.cursor, since, 100)?;
            if events.is_empty() {
                return Ok(started);
            }
            for e in events {
                let subscribed: Vec<Pipeline> = self
                    .table
                    .values()
                    .filter(|p| p.definition.triggers.events.contains(&e.key))
                    .cloned()
                    .collect();
                for p in subscribed {
                    let params = match &e.payload {
                        Value::Object(map) => map.clone(),
                        Value::Null => Map::new(),
                        other => {
                            warn!(pipeline = %p.name, event = e.id, "an event's payload must be an object of parameters, not {other}");
                            continue;
                        }
                    };
                    if let Some(missing) = p.needs.iter().find(|n| !params.contains_key(*n)) {
                        warn!(pipeline = %p.name, event = e.id, "the event's payload lacks the parameter `{missing}`, which has no default: it starts nothing");
                        continue;
                    }
                    let (definition, mut opts) = match blocking(|| p.for_params(&params)) {
                        Ok(x) => x,
                        Err(err) => {
                            warn!(pipeline = %p.name, event = e.id, error = %err, "the event cannot start the workflow");
                            continue;
                        }
                    };
                    let run = crate::time::new_run_id();
                    if !store.claim_event_run(e.id, &p.name, &run)? {
                        continue;
                    }
                    info!(pipeline = %p.name, event = e.id, key = %e.key, run = %run, "started by an event");
                    opts.run_id = Some(run);
                    with_folder_files(&self.engine, &p, &mut opts);
                    match self.engine.start(&definition, &opts).await {
                        Ok(handle) => {
                            started += 1;
                            self.watch(p.name.clone(), handle);
                        }
                        Err(err) => {
                            warn!(pipeline = %p.name, event = e.id, error = %err, "the run of an event did not start")
                        }
                    }
                }
                // Looked at only once every subscribed workflow was
                // handled: an error above leaves the event for the next pass.
                self.cursor = e.id;
            }
        }
    }

    /// Starts again the fires and events some scheduler claimed but never
    /// started a run for (it died in between), once each, with the run id
    /// the claim recorded.
    pub async fn recover(&mut self, now: Timestamp) -> Result<usize> {
        let store = self.engine.store().clone();
        let now_ms = now.as_millisecond();
        let mut started = 0;
        let orphans = store.orphaned_event_runs(now_ms - 86_400_000, now_ms - ORPHAN_AFTER_MS)?;
        for (event, workflow, run) in orphans {
            let Some(p) = self.table.get(&workflow).cloned() else {
                continue;
            };
            if !self
                .recovered
                .insert((format!("event:{}:{workflow}", event.id), 0))
            {
                continue;
            }
            let params = event.payload.as_object().cloned().unwrap_or_default();
            let Ok((definition, mut opts)) = p.for_params(&params) else {
                continue;
            };
            warn!(pipeline = %workflow, run = %run, event = event.id, "an event's run was claimed but never started: starting it");
            opts.run_id = Some(run);
            with_folder_files(&self.engine, &p, &mut opts);
            match self.engine.start(&definition, &opts).await {
                Ok(handle) => {
                    started += 1;
                    self.watch(workflow.clone(), handle);
                }
                Err(Error::Refused { .. }) => {}
                Err(e) => {
                    warn!(pipeline = %workflow, error = %e, "the run of a claimed event did not start")
                }
            }
        }
        // Fire times claimed under a pipeline's name, or a timer's key.
        let timers: BTreeMap<String, String> = store
            .timers()?
            .into_iter()
            .map(|t| (t.fire_key(), t.workflow))
            .collect();
        let day = 86_400_000;
        for f in store.orphaned_fires(now_ms - day, now_ms - ORPHAN_AFTER_MS)? {
            let name = timers.get(&f.workflow).unwrap_or(&f.workflow);
            let Some(p) = self.table.get(name).cloned() else {
                continue;
            };
            if !self.recovered.insert((f.workflow.clone(), f.at_ms)) {
                continue;
            }
            warn!(pipeline = %p.name, run = %f.run, "a fire time was claimed but its run never started: starting it");
            match start_for(&self.engine, &p, f.at_ms, f.run.clone()).await {
                Ok(handle) => {
                    started += 1;
                    self.watch(p.name.clone(), handle);
                }
                // Another scheduler got there first.
                Err(Error::Refused { .. }) => {}
                Err(e) => {
                    warn!(pipeline = %p.name, error = %e, "the run of a claimed fire time did not start")
                }
            }
        }
        Ok(started)
    }

    fn watch(&mut self, name: String, handle: RunHandle) {
        self.runs.spawn(async move { (name, handle.wait().await) });
    }

    /// The earliest next fire time of the schedules.
    fn next_fire(&self, now: Timestamp) -> Option<Timestamp> {
        self.table
            .values()
            .filter_map(|p| p.schedule.as_ref().and_then(|s| s.next_after(now)))
            .min()
    }

    /// Runs until `SIGINT` or `SIGTERM`: reads the folder every
    /// [`RELOAD_EVERY`], fires what is due, then stops gracefully (the
    /// runs it started are left resumable; a second signal stops at
    /// once).
    pub async fn run(&mut self) -> Result<()> {
        let mut signals = StopSignals::install();
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        let forward = async move {
            loop {
                let signal = signals.next().await;
                warn!(signal, "stop signal");
                tx.send_modify(|n| *n += 1);
            }
        };
        tokio::select! {
            r = self.run_until(rx) => r,
            () = forward => unreachable!("the forwarder never ends"),
        }
    }

    /// Runs until `stop` changes: the first change stops gracefully (no
    /// new run starts; running ones are asked to stop and stay
    /// resumable), the next one at once. A host with its own signal
    /// handling (the server) drives the scheduler this way.
    pub async fn run_until(&mut self, mut stop: tokio::sync::watch::Receiver<u32>) -> Result<()> {
        let mut reloaded = tokio::time::Instant::now();
        self.reload();
        // A scheduler keeps going whatever one pass meets (a database
        // busy for a moment, a run that does not start): it says so.
        if let Err(e) = self.recover(Timestamp::now()).await {
            warn!(error = %e, "looking for claimed fire times without runs failed");
        }
        loop {
            if reloaded.elapsed() >= RELOAD_EVERY {
                self.reload();
                if let Err(e) = self.recover(Timestamp::now()).await {
                    warn!(error = %e, "looking for claimed fire times without runs failed");
                }
                reloaded = tokio::time::Instant::now();
            }
            if let Err(e) = self.tick(Timestamp::now()).await {
                warn!(error = %e, "a scheduler pass failed; the next one tries again");
            }
            let until_reload = RELOAD_EVERY.saturating_sub(reloaded.elapsed());
            let until_fire = self
                .next_fire(Timestamp::now())
                .and_then(|t| {
                    let d = t.duration_since(Timestamp::now());
                    Duration::try_from(d).ok()
                })
                .unwrap_or(until_reload);
            // Events and timers are looked for at least every second.
            let wait = until_fire.min(until_reload).min(Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {
                    warn!("stopping the scheduler: no new run starts; running ones are asked to stop and stay resumable");
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
                changed = stop.changed() => {
                    self.engine.shutdown(Duration::ZERO);
                    if changed.is_err() {
                        // The sender is gone: nothing more can come.
                        while let Some(done) = self.runs.join_next().await {
                            log_outcome(done);
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Runs `f`, which may block for long (reading files, evaluating Python),
/// letting a multi-threaded runtime's other tasks go on meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
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

/// Claims the fire time `at` under `key` (the pipeline's name, or a
/// timer's) and starts the pipeline's run, whose id carries the fire time;
/// `None` when another scheduler claimed it.
async fn fire(
    engine: &Engine,
    p: &Pipeline,
    key: &str,
    at: Timestamp,
    kind: &str,
) -> Result<Option<RunHandle>> {
    if !p.needs.is_empty() {
        return Err(Error::Refused {
            what: format!("a {kind} run of `{}`", p.name),
            message: format!(
                "the parameters {} have no default: only an event with them starts it",
                p.needs.join(", ")
            ),
        });
    }
    let ms = at.as_millisecond();
    let run = crate::time::run_id_at(ms.max(0) as u64);
    if !engine.store().claim_fire(key, ms, &run, kind)? {
        return Ok(None);
    }
    info!(pipeline = %p.name, fire_time = %at, run = %run, kind, "fired");
    start_for(engine, p, ms, run).await.map(Some)
}

async fn start_for(engine: &Engine, p: &Pipeline, at_ms: i64, run: String) -> Result<RunHandle> {
    let mut opts = p.options.clone();
    opts.run_id = Some(run);
    opts.fired_at = Some(at_ms.max(0) as u64);
    with_folder_files(engine, p, &mut opts);
    engine.start(&p.definition, &opts).await
}

/// A pipeline-folder run on an engine with runners records the files of
/// its workflow's folder as its source, so they go with its attempts to
/// runners ([`ship`]). Programs' workflows and runs that have a source
/// (a published commit's) are left as they are.
#[cfg(feature = "server")]
fn with_folder_files(engine: &Engine, p: &Pipeline, opts: &mut RunOptions) {
    let Some(file) = &p.file else {
        return;
    };
    if opts.source.is_some() || engine.remote().is_none() {
        return;
    }
    let Some(dir) = opts
        .dir
        .clone()
        .or_else(|| file.parent().map(Path::to_path_buf))
    else {
        return;
    };
    let skip = [engine.home().to_path_buf()];
    match blocking(|| ship::folder_source(&dir, &skip)) {
        Ok(source) => opts.source = Some(source),
        Err(e) => {
            warn!(pipeline = %p.name, error = %e, "the folder's files cannot go to runners: its attempts there run without them")
        }
    }
}

#[cfg(not(feature = "server"))]
fn with_folder_files(_: &Engine, _: &Pipeline, _: &mut RunOptions) {}

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
    p: &Pipeline,
    from: Timestamp,
    to: Timestamp,
    reprocess: Reprocess,
    max_active: usize,
) -> Result<Vec<Backfilled>> {
    let name = &p.name;
    if !p.needs.is_empty() {
        return Err(Error::Refused {
            what: format!("a backfill of `{name}`"),
            message: format!("the parameters {} have no default", p.needs.join(", ")),
        });
    }
    let schedule = p.schedule.as_ref().ok_or_else(|| Error::Refused {
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
        match start_for(engine, p, ms, run.clone()).await {
            Ok(handle) => {
                running.spawn(async move { (ms, run, handle.wait().await) });
            }
            // A scheduler's recovery started this very run meanwhile.
            Err(Error::Refused { .. }) => {
                report.insert(
                    ms,
                    Backfilled {
                        fire_time: at.to_string(),
                        run,
                        status: "skipped (started elsewhere)".into(),
                    },
                );
            }
            Err(e) => {
                // The runs already started still run to their end.
                while !running.is_empty() {
                    collect(&mut running, &mut report).await;
                }
                return Err(e);
            }
        }
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
) -> std::result::Result<Pipeline, crate::file::FileError> {
    if path.is_dir() {
        let mut folder = Folder::new(path);
        folder.reload();
        let (pipelines, errors) = folder.pipelines();
        let want = name.unwrap_or_default();
        if let Some((file, c)) = pipelines.get(want) {
            return Ok(Pipeline::from_file(file, c));
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
    let c = crate::file::load_pipeline(path, name, &Map::new())?;
    Ok(Pipeline::from_file(path, &c))
}
