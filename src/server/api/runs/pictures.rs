//! A run's outlook, as JSON and as SVG.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::server::api::blocking;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Path, Query};
use crate::server::AppState;
use crate::store::Store;

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
