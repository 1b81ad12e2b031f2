//! The signals that steer a run: pause, unpause, cancel, a value for an
//! input node, restarting a node.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::resolve;
use super::start::detach;
use crate::engine::TakeoverKind;
use crate::server::api::blocking;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Body, Path};
use crate::server::AppState;
use crate::store::Signal;

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
