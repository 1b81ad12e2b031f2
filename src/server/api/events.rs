//! Events (push a payload under a key; list the recent pushes) and timers
//! (start, stop, list with status and next fire time).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::super::error::{ApiError, ApiResult};
use super::super::extract::{Body, Path, Query};
use super::super::AppState;
use super::blocking;
use crate::scheduler::timers::{self, TimerView, When};

/// An event to push.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The key (1 to 256 printable characters).
    pub key: String,
    /// The payload (default `{}`): the parameters of the runs it starts,
    /// the value of the input nodes listening for the key.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
}

/// A node that took an event's payload.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivered {
    /// The run.
    pub run: String,
    /// The input node.
    pub node: String,
}

/// What a push did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PushedItem {
    /// The event's number.
    pub id: i64,
    /// The key.
    pub key: String,
    /// The input nodes of running runs that took the payload (the
    /// scheduler starts the subscribed workflows within a second).
    pub delivered: Vec<Delivered>,
}

/// `POST /events`.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = PushBody,
    responses((status = 201, body = PushedItem), (status = 400, body = ApiError)),
    security(("token" = [])))]
pub async fn push(
    State(s): State<Arc<AppState>>,
    Body(body): Body<PushBody>,
) -> ApiResult<(StatusCode, Json<PushedItem>)> {
    let key = body.key;
    if key.trim().is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "field `key`: an event key is 1 to 256 printable characters",
        ));
    }
    let payload = body.payload.unwrap_or_else(|| serde_json::json!({}));
    let store = s.store.clone();
    let k = key.clone();
    let (id, delivered) = blocking(move || store.push_event(&k, &payload)).await?;
    Ok((
        StatusCode::CREATED,
        Json(PushedItem {
            id,
            key,
            delivered: delivered
                .into_iter()
                .map(|(run, node)| Delivered { run, node })
                .collect(),
        }),
    ))
}

/// Which events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this number.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A pushed event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventItem {
    /// Its number.
    pub id: i64,
    /// The key.
    pub key: String,
    /// The payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// When it was pushed.
    pub pushed_at: String,
}

/// `GET /events`: pushed events, oldest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = Vec<EventItem>), (status = 400, body = ApiError)),
    security(("token" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<EventItem>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(format!(
            "query parameter `limit`: {limit} is not from 1 to 1000"
        )));
    }
    let store = s.store.clone();
    let after = q.after.unwrap_or(0);
    let pushed = blocking(move || store.events_after(after, 0, limit)).await?;
    Ok(Json(
        pushed
            .into_iter()
            .map(|p| EventItem {
                id: p.id,
                key: p.key,
                payload: p.payload,
                pushed_at: p.pushed_at,
            })
            .collect(),
    ))
}

/// A timer to start: exactly one of `at`, `after` and `cron`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerBody {
    /// The workflow (a pipeline of the server's scheduler) it fires.
    pub workflow: String,
    /// Once, at this moment (RFC 3339, or a date).
    pub at: Option<String>,
    /// Once, after this delay (`90`, `30s`, `5m`, `2h`).
    pub after: Option<String>,
    /// Recurring, on this cron pattern (6 fields with seconds, or 5).
    pub cron: Option<String>,
    /// The cron pattern's IANA time zone (default UTC).
    pub timezone: Option<String>,
}

/// `POST /timers`.
#[utoipa::path(post, path = "/api/v1/timers", tag = "timers", request_body = TimerBody,
    responses((status = 201, body = TimerView), (status = 400, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn start(
    State(s): State<Arc<AppState>>,
    Body(b): Body<TimerBody>,
) -> ApiResult<(StatusCode, Json<TimerView>)> {
    let when = match (b.at, b.after, b.cron) {
        (Some(at), None, None) => When::At(at),
        (None, Some(after), None) => When::After(after),
        (None, None, Some(cron)) => When::Cron(cron, b.timezone.clone()),
        _ => {
            return Err(ApiError::bad(
                "give exactly one of the fields `at`, `after` and `cron`",
            ))
        }
    };
    if b.timezone.is_some() && !matches!(when, When::Cron(..)) {
        return Err(ApiError::bad("field `timezone`: only with `cron`"));
    }
    let store = s.store.clone();
    let view = blocking(move || {
        let now = jiff::Timestamp::now();
        let id = timers::start(store.as_ref(), &b.workflow, &when, now)?;
        timers::list(store.as_ref(), now)?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| crate::Error::Refused {
                what: format!("timer {id}"),
                message: "it was not found right after it was stored".into(),
            })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /timers`.
#[utoipa::path(get, path = "/api/v1/timers", tag = "timers",
    responses((status = 200, body = Vec<TimerView>)),
    security(("token" = [])))]
pub async fn list_timers(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<TimerView>>> {
    let store = s.store.clone();
    let all = blocking(move || timers::list(store.as_ref(), jiff::Timestamp::now())).await?;
    Ok(Json(all))
}

/// `DELETE /timers/{id}`: stops it.
#[utoipa::path(delete, path = "/api/v1/timers/{id}", tag = "timers",
    params(("id" = i64, Path, description = "the timer")),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn stop(State(s): State<Arc<AppState>>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    let store = s.store.clone();
    if blocking(move || store.stop_timer(id)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "timer {id} does not run (no such timer, or stopped already)"
        )))
    }
}
