//! A run's nodes, one node, and its log lines (followed or not).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::follow::tokio_stream_from;
use super::{status_of, NodeItem};
use crate::server::api::blocking;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Path, Query};
use crate::server::AppState;

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
