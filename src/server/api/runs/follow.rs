//! A run's history: as a JSON array, as server-sent events while it
//! grows, and waiting for the run's end.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{resolve, status_of, RunStatusBody, MAX_WAIT_S};
use crate::history::Event;
use crate::server::api::blocking;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Path, Query};
use crate::server::AppState;

/// Which events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this sequence number.
    pub after: Option<u64>,
}

/// `GET /runs/{run}/events`: the history as a JSON array.
#[utoipa::path(get, path = "/api/v1/runs/{run}/events", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), EventsQuery),
    responses((status = 200, description = "the events, in order", body = Vec<Object>),
        (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn events(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let store = s.store.clone();
    let after = q.after.unwrap_or(0);
    let events = blocking(move || {
        let id = store.resolve_run(&run)?;
        Ok(store
            .events(&id, None)?
            .into_iter()
            .filter(|e| e.seq > after)
            .collect())
    })
    .await?;
    Ok(Json(events))
}

/// How many events the stream reads from the store at a time.
const STREAM_PAGE: usize = 1000;

/// `GET /runs/{run}/stream`: server-sent events, one per history event
/// (`id` its sequence number, `data` the event as JSON), from `after`
/// (or the `Last-Event-ID` header) on, until the run ended and its last
/// event was sent.
#[utoipa::path(get, path = "/api/v1/runs/{run}/stream", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), EventsQuery),
    responses((status = 200, description = "text/event-stream of the run's events", content_type = "text/event-stream", body = String),
        (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn stream(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let id = resolve(&s, run).await?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut after = q.after.or(last).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let mut commits = s.hub.subscribe();
    let store = s.store.clone();
    tokio::spawn(async move {
        loop {
            // What the store has past `after` (the first time, and
            // whenever the live feed may have skipped something): only
            // the events after it, a page at a time, never the whole
            // history again.
            let ended = loop {
                let store = store.clone();
                let id = id.clone();
                let from = after;
                let Ok(tail) = blocking(move || store.run_tail(&id, from, STREAM_PAGE)).await
                else {
                    return;
                };
                let full = tail.events.len() == STREAM_PAGE;
                for e in tail.events {
                    after = e.seq;
                    if tx.send(Ok(sse(&e))).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break tail.status.is_terminal() && after >= tail.last;
                }
            };
            if ended {
                return;
            }
            // Then live commits while they follow on; a gap, a lag or a
            // quiet second sends the loop back to the store.
            let deadline = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    c = commits.recv() => match c {
                        Ok(c) if c.run == id => {
                            let first = c.events.first().map_or(0, |e| e.seq);
                            if first > after + 1 {
                                break;
                            }
                            let mut end = false;
                            let from = after;
                            for e in c.events.iter().filter(|e| e.seq > from) {
                                after = e.seq;
                                end |= matches!(&e.kind, crate::EventKind::RunStatus { status, .. } if status.is_terminal());
                                if tx.send(Ok(sse(e))).await.is_err() {
                                    return;
                                }
                            }
                            if end {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    () = &mut deadline => break,
                    () = tx.closed() => return,
                }
            }
        }
    });
    let body = Sse::new(tokio_stream_from(rx)).keep_alive(KeepAlive::default());
    Ok(body.into_response())
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// A stream over a channel's receiver.
pub(super) fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> ChannelStream<T> {
    ChannelStream(rx)
}

/// The items of a channel, as a stream (for response bodies).
pub struct ChannelStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ChannelStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// At most this many seconds (default 30, at most 300).
    #[param(minimum = 0, maximum = 300)]
    pub timeout: Option<f64>,
}

/// The answer of `wait`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Waited {
    /// Whether the run ended.
    pub ended: bool,
    /// Its status now.
    pub status: RunStatusBody,
}

/// `GET /runs/{run}/wait`: returns when the run ends, or after
/// `timeout` seconds with `ended: false`.
#[utoipa::path(get, path = "/api/v1/runs/{run}/wait", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), WaitQuery),
    responses((status = 200, body = Waited), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn wait(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Waited>> {
    let timeout = q.timeout.unwrap_or(30.0);
    if !(timeout.is_finite() && (0.0..=MAX_WAIT_S).contains(&timeout)) {
        return Err(ApiError::bad(format!(
            "query parameter `timeout`: {timeout} is not from 0 to {MAX_WAIT_S} seconds"
        )));
    }
    let id = resolve(&s, run).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    let mut commits = s.hub.subscribe();
    loop {
        // The run's status alone (one row) while it runs; its export (every
        // node) once, for the answer: an export at each commit made a
        // waiter on a big run cost O(nodes) a commit.
        let store = s.store.clone();
        let rid = id.clone();
        let tail = blocking(move || store.run_tail(&rid, u64::MAX, 0)).await?;
        if tail.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            let store = s.store.clone();
            let rid = id.clone();
            let export = blocking(move || store.export(&rid)).await?;
            return Ok(Json(Waited {
                ended: export.status.is_terminal(),
                status: status_of(&export),
            }));
        }
        // Woken by a commit of this run (driven here), or every 250 ms
        // (a run driven by another process), or at the deadline.
        tokio::select! {
            () = crate::server::hub::next_of(&mut commits, &id, Duration::from_millis(250)) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
