//! Runs: list, start, status, export, history, event stream, wait,
//! outlook and picture, nodes and logs, and the signals that steer them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::super::auth::Caller;
use super::super::error::{ApiError, ApiResult};
use super::super::extract::{Body, Path, Query};
use super::super::AppState;
use super::blocking;
use crate::engine::{RunOptions, TakeoverKind};
use crate::history::{Event, RunExport};
use crate::model::{Definition, RunStatus};
use crate::store::{RunFilter, RunSummary, Signal, Store};

/// The most runs a page lists.
pub const MAX_LIMIT: usize = 500;
/// The longest `wait`, in seconds.
pub const MAX_WAIT_S: f64 = 300.0;

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

/// What to run: a published workflow (at its newest version or a
/// commit), or a definition sent whole (a Rust program's, say).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// A published workflow's name.
    pub workflow: Option<String>,
    /// With `workflow`: the commit to run (default: the newest).
    pub commit: Option<String>,
    /// A workflow definition (orch's serde form), instead of `workflow`.
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// Run parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// Parameters of a published workflow's run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// The commit to run (default: the newest).
    pub commit: Option<String>,
    /// Run parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// A run that started.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Started {
    /// Its id.
    pub run: String,
    /// The workflow's name.
    pub workflow: String,
    /// The commit it is pinned to (a published workflow's run).
    pub commit: Option<String>,
}

/// `POST /runs`.
#[utoipa::path(post, path = "/api/v1/runs", request_body = StartRun, tag = "runs",
    responses((status = 201, body = Started), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn start(
    State(s): State<Arc<AppState>>,
    Body(body): Body<StartRun>,
) -> ApiResult<(axum::http::StatusCode, Json<Started>)> {
    let started = match (body.workflow, body.definition) {
        (Some(name), None) => {
            super::workflows::execute_published(&s, &name, body.commit, body.params).await?
        }
        (None, Some(def)) => {
            if body.commit.is_some() {
                return Err(ApiError::bad(
                    "field `commit`: only with `workflow` (a definition has no commit)",
                ));
            }
            let def: Definition = super::super::extract::parse(def.to_string().as_bytes())
                .map_err(|e| {
                    ApiError::bad(
                        e.error
                            .message
                            .replace("the body", "field `definition`")
                            .replacen("field `", "field `definition.", 1),
                    )
                })?;
            start_definition(&s, def, body.params).await?
        }
        _ => {
            return Err(ApiError::bad(
                "give exactly one of the fields `workflow` and `definition`",
            ))
        }
    };
    Ok((axum::http::StatusCode::CREATED, Json(started)))
}

/// Starts a definition sent whole, in a folder of its own.
async fn start_definition(
    s: &Arc<AppState>,
    def: Definition,
    params: Map<String, Value>,
) -> ApiResult<Started> {
    crate::engine::validate(&def)?;
    let run = crate::time::new_run_id();
    let dir = s.data.join("runs").join(&run);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let opts = RunOptions {
        dir: Some(dir),
        max_parallel: s.slots,
        run_id: Some(run.clone()),
        params,
        live_picture: false,
        ..RunOptions::default()
    };
    let handle = s.engine.start(&def, &opts).await?;
    detach(handle);
    Ok(Started {
        run,
        workflow: def.name,
        commit: None,
    })
}

/// Lets a started run go on by itself (its end is in the store).
pub(super) fn detach(handle: crate::RunHandle) {
    tokio::spawn(async move {
        if let Err(e) = handle.wait().await {
            tracing::warn!(error = %e, "a run of the server failed");
        }
    });
}

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
fn tokio_stream_from<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> ChannelStream<T> {
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
            () = super::super::hub::next_of(&mut commits, &id, Duration::from_millis(250)) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Which picture.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PictureQuery {
    /// The run as it was after this event (default: now).
    #[param(minimum = 1)]
    pub at: Option<u64>,
    /// Draw every copy of a map.
    pub expand: Option<bool>,
}

fn outlook_of(
    store: &dyn Store,
    run: &str,
    q: &PictureQuery,
) -> crate::Result<crate::picture::outlook::Outlook> {
    let id = store.resolve_run(run)?;
    if let Some(at) = q.at {
        let last = store.export(&id)?.event;
        if at == 0 || at > last {
            return Err(crate::Error::Refused {
                what: format!("query parameter `at` ({at})"),
                message: format!("run {id} has events 1 to {last}"),
            });
        }
    }
    let state = store.replay(&id, q.at)?;
    let opts = crate::picture::outlook::Options {
        expand: q.expand.unwrap_or(false),
        ..Default::default()
    };
    Ok(crate::picture::outlook::outlook(&state, opts))
}

/// `GET /runs/{run}/outlook`: the picture's model as JSON.
#[utoipa::path(get, path = "/api/v1/runs/{run}/outlook", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), PictureQuery),
    responses((status = 200, description = "the outlook: the graph plus every future the promises allow", body = Object),
        (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn outlook(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<PictureQuery>,
) -> ApiResult<Response> {
    let store = s.store.clone();
    let o = blocking(move || outlook_of(store.as_ref(), &run, &q)).await?;
    Ok(Json(o).into_response())
}

/// `GET /runs/{run}/picture`: the picture as SVG.
#[utoipa::path(get, path = "/api/v1/runs/{run}/picture", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), PictureQuery),
    responses((status = 200, description = "SVG", content_type = "image/svg+xml", body = String),
        (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn picture(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<PictureQuery>,
) -> ApiResult<Response> {
    let store = s.store.clone();
    let svg = blocking(move || {
        outlook_of(store.as_ref(), &run, &q).map(|o| crate::picture::render::svg(&o))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// `GET /runs/{run}/nodes`.
#[utoipa::path(get, path = "/api/v1/runs/{run}/nodes", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = Vec<NodeItem>), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn nodes(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Vec<NodeItem>>> {
    let store = s.store.clone();
    let export = blocking(move || {
        let id = store.resolve_run(&run)?;
        store.export(&id)
    })
    .await?;
    Ok(Json(status_of(&export).nodes))
}

/// `GET /runs/{run}/nodes/{node}`: the node with its task, inputs,
/// output and attempts.
#[utoipa::path(get, path = "/api/v1/runs/{run}/nodes/{node}", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), ("node" = String, Path, description = "node id")),
    responses((status = 200, description = "the node's export", body = Object), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn node(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
) -> ApiResult<Response> {
    let store = s.store.clone();
    let n = blocking(move || {
        let id = store.resolve_run(&run)?;
        let export = store.export(&id)?;
        export
            .node(&node)
            .cloned()
            .ok_or(crate::Error::UnknownNode { run: id, node })
    })
    .await?;
    Ok(Json(n).into_response())
}

/// Which lines.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this attempt.
    pub attempt: Option<u32>,
    /// Only lines after this line number (of that attempt).
    pub after: Option<u32>,
    /// Keep the response open and send lines as the task writes them
    /// (newline-delimited JSON), until the node ends.
    pub follow: Option<bool>,
}

/// A line a task wrote.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LogItem {
    /// The attempt.
    pub attempt: u32,
    /// Its line number in the attempt, from 1.
    pub line: u32,
    /// `stdout`, `stderr` or `log`.
    pub stream: String,
    /// The text.
    pub text: String,
}

fn log_item(l: &crate::store::LogLine) -> LogItem {
    LogItem {
        attempt: l.attempt,
        line: l.line,
        stream: l.stream.clone(),
        text: l.text.clone(),
    }
}

/// `GET /runs/{run}/nodes/{node}/logs`: the node's log lines; with
/// `follow=true`, newline-delimited JSON that keeps coming until the
/// node ends.
#[utoipa::path(get, path = "/api/v1/runs/{run}/nodes/{node}/logs", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), ("node" = String, Path, description = "node id"), LogsQuery),
    responses((status = 200, body = Vec<LogItem>), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn logs(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let store = s.store.clone();
    let (id, n) = {
        let node = node.clone();
        blocking(move || {
            let id = store.resolve_run(&run)?;
            let export = store.export(&id)?;
            if export.node(&node).is_none() {
                return Err(crate::Error::UnknownNode { run: id, node });
            }
            Ok((id, node))
        })
        .await?
    };
    let after = q.after.unwrap_or(0);
    if !q.follow.unwrap_or(false) {
        let store = s.store.clone();
        let lines = blocking(move || store.logs(&id, &n, q.attempt)).await?;
        let items: Vec<LogItem> = lines
            .iter()
            .filter(|l| l.line > after || q.attempt.is_none() && after == 0)
            .map(log_item)
            .collect();
        return Ok(Json(items).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(64);
    let store = s.store.clone();
    tokio::spawn(async move {
        let mut seen: std::collections::HashMap<u32, u32> = Default::default();
        if let Some(a) = q.attempt {
            seen.insert(a, after);
        }
        loop {
            let (lines, done) = {
                let store = store.clone();
                let (id, n) = (id.clone(), n.clone());
                match blocking(move || {
                    let lines = store.logs(&id, &n, q.attempt)?;
                    let export = store.export(&id)?;
                    let done = export.status.is_terminal()
                        || export.node(&n).is_some_and(|x| x.state.is_terminal());
                    Ok((lines, done))
                })
                .await
                {
                    Ok(x) => x,
                    Err(_) => return,
                }
            };
            for l in &lines {
                let last = seen.entry(l.attempt).or_insert(0);
                if l.line > *last {
                    *last = l.line;
                    let mut text = serde_json::to_string(&log_item(l)).unwrap_or_default();
                    text.push('\n');
                    if tx.send(Ok(text)).await.is_err() {
                        return;
                    }
                }
            }
            if done {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = tx.closed() => return,
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream_from(rx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// What a signal did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Signalled {
    /// The run.
    pub run: String,
    /// The signal (`pause`, `unpause`, `cancel`, `input`, `restart`).
    pub signal: String,
}

async fn send(s: &Arc<AppState>, run: String, signal: Signal) -> ApiResult<Json<Signalled>> {
    let id = resolve(s, run).await?;
    let word = signal.as_str().to_string();
    // A run that ended takes no signal: said plainly.
    let store = s.store.clone();
    let rid = id.clone();
    let status = blocking(move || Ok(store.export(&rid)?.status)).await?;
    if status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run `{id}` already ended ({status}); there is nothing to {word}"
        )));
    }
    s.engine.signal(&id, signal).await?;
    Ok(Json(Signalled {
        run: id,
        signal: word,
    }))
}

/// `POST /runs/{run}/pause`.
#[utoipa::path(post, path = "/api/v1/runs/{run}/pause", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = Signalled), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("token" = [])))]
pub async fn pause(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Signalled>> {
    send(&s, run, Signal::Pause).await
}

/// `POST /runs/{run}/unpause`.
#[utoipa::path(post, path = "/api/v1/runs/{run}/unpause", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = Signalled), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("token" = [])))]
pub async fn unpause(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Signalled>> {
    send(&s, run, Signal::Unpause).await
}

/// `POST /runs/{run}/cancel`: running attempts are killed with their
/// process groups; the run ends `cancelled`.
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = Signalled), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("token" = [])))]
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Signalled>> {
    send(&s, run, Signal::Cancel).await
}

/// A value for an input node.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// The value; it becomes the node's output.
    #[schema(value_type = Object)]
    pub value: Value,
}

/// `POST /runs/{run}/nodes/{node}/input`.
#[utoipa::path(post, path = "/api/v1/runs/{run}/nodes/{node}/input", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), ("node" = String, Path, description = "the input node")),
    request_body = InputBody,
    responses((status = 200, body = Signalled), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn input(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
    Body(body): Body<InputBody>,
) -> ApiResult<Json<Signalled>> {
    let store = s.store.clone();
    let (rid, n) = (run.clone(), node.clone());
    // The node must exist and be an input node: said before anything is
    // stored.
    blocking(move || {
        let id = store.resolve_run(&rid)?;
        match store.node(&id, &n)? {
            None => Err(crate::Error::UnknownNode { run: id, node: n }),
            Some((task, _)) if task.exec.kind() != "input" => Err(crate::Error::NotInput {
                run: id,
                node: n,
                kind: task.exec.kind().to_string(),
            }),
            Some(_) => Ok(()),
        }
    })
    .await?;
    send(
        &s,
        run,
        Signal::Input {
            node,
            value: body.value,
        },
    )
    .await
}

/// `POST /runs/{run}/nodes/{node}/restart`: the node and everything
/// downstream run again in a new generation, driven by this server.
#[utoipa::path(post, path = "/api/v1/runs/{run}/nodes/{node}/restart", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"), ("node" = String, Path, description = "the node to restart")),
    responses((status = 200, body = Signalled), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("token" = [])))]
pub async fn restart(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
) -> ApiResult<Json<Signalled>> {
    let id = resolve(&s, run).await?;
    let handle = s
        .engine
        .take_over(&id, TakeoverKind::Restart(node), false, None)
        .await?;
    detach(handle);
    Ok(Json(Signalled {
        run: id,
        signal: "restart".into(),
    }))
}

/// Who is calling (handlers that act for the caller).
pub type Me = Extension<Caller>;
