//! Runs: list, start, status, export, history, event stream, wait,
//! outlook and picture, nodes and logs, and the signals that steer them.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::super::auth::Caller;
use super::super::error::{ApiError, ApiResult};
use super::super::extract::Path;
use super::super::AppState;
use super::blocking;
use crate::history::RunExport;

mod follow;
mod list;
mod nodes;
mod pictures;
mod signals;
mod start;

pub use follow::*;
pub use list::*;
pub use nodes::*;
pub use pictures::*;
pub use signals::*;
pub use start::*;

/// The most runs a page lists.
pub const MAX_LIMIT: usize = 500;
/// The longest `wait`, in seconds.
pub const MAX_WAIT_S: f64 = 300.0;

/// A node in a run's status.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeItem {
    /// The node id.
    pub id: String,
    /// The task's name.
    pub task: String,
    /// The task's kind.
    pub kind: String,
    /// Its state.
    pub state: String,
    /// When its first attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How many attempts it had.
    pub attempts: u32,
}

/// A run's status.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStatusBody {
    /// The run id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// Its status.
    pub status: String,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// When it started.
    pub created_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The last event of its history.
    pub event: u64,
    /// Its nodes.
    pub nodes: Vec<NodeItem>,
    /// The published version it runs (commit and file hashes).
    #[schema(value_type = Option<Object>)]
    pub source: Option<crate::model::Source>,
    /// Expected start and end of what is left, from the history of past
    /// attempts.
    #[schema(value_type = Option<Object>)]
    pub expected: Option<Value>,
}

fn status_of(export: &RunExport) -> RunStatusBody {
    RunStatusBody {
        run: export.run.clone(),
        workflow: export.workflow.clone(),
        status: export.status.to_string(),
        reason: export.reason.clone(),
        created_at: export.created_at.clone(),
        finished_at: export.finished_at.clone(),
        event: export.event,
        nodes: export
            .nodes
            .iter()
            .map(|n| NodeItem {
                id: n.id.clone(),
                task: n.task.name.clone(),
                kind: n.task.exec.kind().to_string(),
                state: n.state.to_string(),
                started_at: n.started_at.clone(),
                finished_at: n.finished_at.clone(),
                attempts: n.attempts.len() as u32,
            })
            .collect(),
        source: export.source.clone(),
        expected: None,
    }
}

/// Resolves a run id (or unique prefix, or `latest`) off the runtime.
async fn resolve(s: &Arc<AppState>, run: String) -> ApiResult<String> {
    let store = s.store.clone();
    blocking(move || store.resolve_run(&run)).await
}

/// `GET /runs/{run}`.
#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = RunStatusBody), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn status(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<RunStatusBody>> {
    let store = s.store.clone();
    let body = blocking(move || {
        let id = store.resolve_run(&run)?;
        let export = store.export(&id)?;
        let mut body = status_of(&export);
        // What is left has an expected end; an ended run has its end.
        if !export.status.is_terminal() {
            body.expected = super::expected(store.as_ref(), &id);
        }
        Ok(body)
    })
    .await?;
    Ok(Json(body))
}

/// `GET /runs/{run}/export`.
#[utoipa::path(get, path = "/api/v1/runs/{run}/export", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, description = "the run's export (nodes, edges, attempts, promises, violations, source)", body = Object),
        (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn export(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<RunExport>> {
    let store = s.store.clone();
    let export = blocking(move || {
        let id = store.resolve_run(&run)?;
        store.export(&id)
    })
    .await?;
    Ok(Json(export))
}

/// Who is calling (handlers that act for the caller).
pub type Me = Extension<Caller>;
