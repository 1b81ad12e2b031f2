//! `GET /runs`: a page of runs, filtered.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::MAX_LIMIT;
use crate::model::RunStatus;
use crate::server::api::blocking;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::Query;
use crate::server::AppState;
use crate::store::{RunFilter, RunSummary};

/// A run in a list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunItem {
    /// The run id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// `running`, `paused`, `succeeded`, `failed`, `promise_broken` or
    /// `cancelled`.
    pub status: String,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How many nodes it has.
    pub nodes: u64,
    /// The fire time of a scheduled run.
    pub fired_at: Option<String>,
}

impl From<RunSummary> for RunItem {
    fn from(r: RunSummary) -> RunItem {
        RunItem {
            id: r.id,
            workflow: r.workflow,
            status: r.status,
            created_at: r.created_at,
            finished_at: r.finished_at,
            nodes: r.nodes,
            fired_at: r.fired_at,
        }
    }
}

/// A page of runs.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunItem>,
    /// Pass as `before` for the next page (absent: this is the last).
    pub next: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this status.
    #[param(pattern = "^(running|paused|succeeded|failed|promise_broken|cancelled)$")]
    pub status: Option<String>,
    /// Runs older than this run id (the previous page's `next`).
    pub before: Option<String>,
    /// Only runs created at or after this moment: RFC 3339
    /// (`2026-11-30T09:00:00Z`, `2026-11-30T10:00:00+01:00`) or
    /// milliseconds since the Unix epoch.
    #[param(example = "2026-11-30T09:00:00Z")]
    pub created_after: Option<String>,
    /// Only runs created before this moment (the same forms).
    #[param(example = "1796029200000")]
    pub created_before: Option<String>,
    /// At most this many (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// The longest text a moment parameter may be.
const MAX_MOMENT_TEXT: usize = 64;

/// A moment given to a query parameter: RFC 3339 or milliseconds since the
/// Unix epoch (from 1970 to the end of year 9999); a 400 naming the
/// parameter otherwise.
///
/// ```
/// use orch::server::api::runs::moment;
/// assert_eq!(moment("created_after", "1970-01-01T00:00:01Z").unwrap(), 1000);
/// assert_eq!(moment("created_after", "2026-11-30T10:00:00+01:00").unwrap(), 1_796_029_200_000);
/// assert_eq!(moment("created_after", "1796029200000").unwrap(), 1_796_029_200_000);
/// let e = moment("created_before", "yesterday").unwrap_err();
/// assert!(e.error.message.contains("`created_before`"), "{}", e.error.message);
/// ```
pub fn moment(param: &str, text: &str) -> ApiResult<u64> {
    let bad = |why: &str| {
        let shown: String = text.chars().take(MAX_MOMENT_TEXT).collect();
        ApiError::bad(format!(
            "query parameter `{param}`: {shown:?} {why} (RFC 3339 such as 2026-11-30T09:00:00Z, or milliseconds since the Unix epoch)"
        ))
    };
    let t = text.trim();
    if t.len() > MAX_MOMENT_TEXT {
        return Err(bad("is too long for a moment"));
    }
    let ms = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().map_err(|_| bad("is too large"))?
    } else {
        let ts = t
            .parse::<jiff::Timestamp>()
            .map_err(|_| bad("is not a moment"))?;
        u64::try_from(ts.as_millisecond()).map_err(|_| bad("is before 1970"))?
    };
    if ms > crate::store::MAX_MOMENT_MS {
        return Err(bad("is after the year 9999"));
    }
    Ok(ms)
}

/// `GET /runs`.
#[utoipa::path(get, path = "/api/v1/runs", params(ListQuery), tag = "runs",
    responses((status = 200, body = RunList), (status = 400, body = ApiError)),
    security(("token" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad(format!(
            "query parameter `limit`: {limit} is not from 1 to {MAX_LIMIT}"
        )));
    }
    let status = q
        .status
        .as_deref()
        .map(|t| t.parse::<RunStatus>())
        .transpose()
        .map_err(|e| ApiError::bad(format!("query parameter `status`: {e}")))?;
    let after = q
        .created_after
        .as_deref()
        .map(|t| moment("created_after", t))
        .transpose()?;
    let before = q
        .created_before
        .as_deref()
        .map(|t| moment("created_before", t))
        .transpose()?;
    let mut f = RunFilter::newest(limit + 1);
    f.workflow = q.workflow;
    f.status = status;
    f.before = q.before;
    f.created_after = after;
    f.created_before = before;
    let store = s.store.clone();
    let mut runs = blocking(move || store.runs_page(&f)).await?;
    let next = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(RunList {
        runs: runs.into_iter().map(RunItem::from).collect(),
        next,
    }))
}
