//! The server itself: status (public), the pipelines of its scheduler,
//! and the admin calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::error::ApiResult;
use super::super::AppState;
use super::blocking;
use crate::model::RunStatus;
use crate::store::{RunFilter, Signal};

/// The store's health.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StoreHealth {
    /// Whether it answered.
    pub ok: bool,
    /// What went wrong, when not.
    pub error: Option<String>,
}

/// The server's status.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// orch's version.
    pub version: String,
    /// The store's health.
    pub store: StoreHealth,
    /// How many runs have each status.
    pub runs: BTreeMap<String, u64>,
    /// How many runs this server drives now.
    pub hosted: usize,
    /// The live runners, by name (none: this server runs every task
    /// itself).
    pub runners: Vec<String>,
    /// Attempts waiting in the queues, over all queues.
    pub queued: u64,
    /// Attempts runners hold now.
    pub claimed: u64,
    /// When the server started (ms since the Unix epoch).
    pub started_ms: u64,
}

/// What `status` counts in the store, at most once a second.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    /// Runs by status.
    pub runs: BTreeMap<String, u64>,
    /// Live runners by name.
    pub runners: Vec<String>,
    /// Attempts waiting in the queues.
    pub queued: u64,
    /// Attempts runners hold.
    pub claimed: u64,
}

/// `GET /status`: no token needed.
#[utoipa::path(get, path = "/api/v1/status", tag = "system",
    responses((status = 200, body = Status)))]
pub async fn status(State(s): State<Arc<AppState>>) -> ApiResult<Json<Status>> {
    let cached = s
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1))
        .map(|(_, c)| c.clone());
    let counts = match cached {
        Some(c) => Ok(c),
        None => {
            let store = s.store.clone();
            let fresh = blocking(move || {
                let runs = store.run_counts()?.into_iter().collect();
                let (runners, _) = store.runners()?;
                let (queues, _) = store.queue_rows()?;
                Ok(Counted {
                    runs,
                    runners: runners
                        .into_iter()
                        .filter(|r| r.alive)
                        .map(|r| r.spec.name)
                        .collect(),
                    queued: queues.iter().map(|q| q.depth).sum(),
                    claimed: queues.iter().map(|q| q.running).sum(),
                })
            })
            .await;
            if let Ok(c) = &fresh {
                *s.counts.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), c.clone()));
            }
            fresh
        }
    };
    let (counted, store) = match counts {
        Ok(c) => (
            c,
            StoreHealth {
                ok: true,
                error: None,
            },
        ),
        Err(e) => (
            Counted::default(),
            StoreHealth {
                ok: false,
                error: Some(e.error.message),
            },
        ),
    };
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        store,
        runs: counted.runs,
        hosted: s.engine.hosted().len(),
        runners: counted.runners,
        queued: counted.queued,
        claimed: counted.claimed,
        started_ms: s.started_ms,
    }))
}

/// A pipeline of the scheduler's folder, or a file that does not load.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PipelineItem {
    /// The file.
    pub file: String,
    /// The pipeline (absent for an import error).
    pub pipeline: Option<String>,
    /// Its cron schedule.
    pub schedule: Option<String>,
    /// The schedule's time zone.
    pub timezone: Option<String>,
    /// Its next fire time.
    pub next_fire: Option<String>,
    /// The event keys that start it.
    pub events: Vec<String>,
    /// Why the file does not load (an import error).
    pub error: Option<String>,
}

/// `GET /pipelines`: the scheduler's pipelines and import errors.
#[utoipa::path(get, path = "/api/v1/pipelines", tag = "system",
    responses((status = 200, body = Vec<PipelineItem>)), security(("token" = [])))]
pub async fn pipelines(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<PipelineItem>>> {
    let Some(dir) = s.pipelines.clone() else {
        return Ok(Json(Vec::new()));
    };
    let store = s.store.clone();
    let home = s.engine.home().to_path_buf();
    let lines = blocking(move || {
        let mut folder = crate::scheduler::Folder::new(dir).skipping(&home);
        folder.reload();
        Ok(crate::scheduler::listing(
            &folder,
            Some(store.as_ref()),
            jiff::Timestamp::now(),
        ))
    })
    .await?;
    Ok(Json(
        lines
            .into_iter()
            .map(|l| PipelineItem {
                file: l.file.display().to_string(),
                pipeline: l.pipeline,
                schedule: l.schedule,
                timezone: l.timezone,
                next_fire: l.next_fire,
                events: l.events,
                error: l.error,
            })
            .collect(),
    ))
}

/// Runs that were cancelled.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    /// Their ids.
    pub runs: Vec<String>,
}

/// `POST /admin/cancel_all`: cancels every running or paused run.
#[utoipa::path(post, path = "/api/v1/admin/cancel_all", tag = "admin",
    responses((status = 200, body = Cancelled)), security(("token" = [])))]
pub async fn cancel_all(State(s): State<Arc<AppState>>) -> ApiResult<Json<Cancelled>> {
    let store = s.store.clone();
    let live = blocking(move || {
        let mut ids = Vec::new();
        for status in [RunStatus::Running, RunStatus::Paused] {
            let mut f = RunFilter::newest(crate::store::MAX_RUNS_PAGE);
            f.status = Some(status);
            ids.extend(store.runs_page(&f)?.into_iter().map(|r| r.id));
        }
        Ok(ids)
    })
    .await?;
    let mut runs = Vec::new();
    for id in live {
        match s.engine.signal(&id, Signal::Cancel).await {
            Ok(()) => runs.push(id),
            Err(e) => tracing::warn!(run = %id, error = %e, "cancel_all: not cancelled"),
        }
    }
    Ok(Json(Cancelled { runs }))
}

/// `POST /admin/shutdown`: stops the server gracefully (runs stay
/// resumable; the next server adopts them).
#[utoipa::path(post, path = "/api/v1/admin/shutdown", tag = "admin",
    responses((status = 202)), security(("token" = [])))]
pub async fn shutdown(State(s): State<Arc<AppState>>) -> StatusCode {
    tracing::warn!("shutdown requested through the API");
    s.engine.shutdown(crate::engine::stop_grace());
    s.stop.send_modify(|n| *n += 1);
    StatusCode::ACCEPTED
}
