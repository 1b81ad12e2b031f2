//! `POST /runs`: starting a published workflow or a definition sent whole.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::engine::RunOptions;
use crate::model::Definition;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::Body;
use crate::server::AppState;

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
            crate::server::api::workflows::execute_published(&s, &name, body.commit, body.params)
                .await?
        }
        (None, Some(def)) => {
            if body.commit.is_some() {
                return Err(ApiError::bad(
                    "field `commit`: only with `workflow` (a definition has no commit)",
                ));
            }
            let def: Definition = crate::server::extract::parse(def.to_string().as_bytes())
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
pub(in crate::server::api) fn detach(handle: crate::RunHandle) {
    tokio::spawn(async move {
        if let Err(e) = handle.wait().await {
            tracing::warn!(error = %e, "a run of the server failed");
        }
    });
}
