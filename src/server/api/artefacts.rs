//! A run's artefacts: the files its attempts declared they produce
//! (`produces`), kept in the run's folder on the server whether the
//! attempt ran here (copied when it succeeded) or on a runner (uploaded
//! before its end): `runs/RUN/artefacts/NODE/ATTEMPT/PATH`.

use std::io::Read;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::super::error::{ApiError, ApiResult};
use super::super::extract::{Path, Query};
use super::super::AppState;
use super::blocking;
use crate::exec::remote::{artefact_dir, MAX_ARTEFACT};

/// An artefact of a run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtefactView {
    /// The node whose attempt produced it.
    pub node: String,
    /// The attempt.
    pub attempt: u32,
    /// Its path, as the task declares it.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Where the attempt ran: a runner's name, or `local`.
    pub runner: Option<String>,
}

/// `GET /runs/{run}/artefacts`: every artefact of the run, by node and
/// attempt (those of successful attempts: a failed one keeps none).
#[utoipa::path(get, path = "/api/v1/runs/{run}/artefacts", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`")),
    responses((status = 200, body = [ArtefactView]), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> ApiResult<Json<Vec<ArtefactView>>> {
    let store = s.store.clone();
    let export = blocking(move || {
        let id = store.resolve_run(&run)?;
        store.export(&id)
    })
    .await?;
    let mut out = Vec::new();
    for n in &export.nodes {
        for a in &n.attempts {
            for f in &a.files {
                out.push(ArtefactView {
                    node: n.id.clone(),
                    attempt: a.attempt,
                    path: f.path.clone(),
                    bytes: f.bytes,
                    runner: a.runner.clone(),
                });
            }
        }
    }
    Ok(Json(out))
}

/// Which artefact.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtefactQuery {
    /// Its path, as the task declares it.
    pub path: String,
}

/// `GET /runs/{run}/artefacts/{node}/{attempt}?path=P`: the content of
/// an artefact the run's record lists (`404` for any other path).
#[utoipa::path(get, path = "/api/v1/runs/{run}/artefacts/{node}/{attempt}", tag = "runs",
    params(("run" = String, Path, description = "run id, unique prefix, or `latest`"),
           ("node" = String, Path, description = "the node"),
           ("attempt" = u32, Path, description = "the attempt number"),
           ArtefactQuery),
    responses((status = 200, description = "the file's content", content_type = "application/octet-stream"),
              (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Path((run, node, attempt)): Path<(String, String, u32)>,
    Query(q): Query<ArtefactQuery>,
) -> ApiResult<Response> {
    let store = s.store.clone();
    let home = s.engine.home().to_path_buf();
    let content = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let id = store.resolve_run(&run)?;
        let export = store.export(&id)?;
        let listed = export.node(&node).is_some_and(|n| {
            n.attempts
                .iter()
                .any(|a| a.attempt == attempt && a.files.iter().any(|f| f.path == q.path))
        });
        let missing = || {
            ApiError::not_found(format!(
                "the record of {id}/{node}#{attempt} lists no artefact `{}`",
                q.path
            ))
        };
        if !listed {
            return Err(missing());
        }
        let rel = crate::exec::remote::check_relative(&q.path).map_err(|_| missing())?;
        let path = artefact_dir(&home.join("runs").join(&id), &node, attempt).join(rel);
        let mut content = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_ARTEFACT).read_to_end(&mut content))
            .map_err(|e| {
                ApiError::internal(format!("reading artefact `{}` of {id}: {e}", q.path))
            })?;
        Ok(content)
    })
    .await
    .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))??;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        content,
    )
        .into_response())
}
