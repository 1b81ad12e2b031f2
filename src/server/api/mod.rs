//! The handlers of `/api/v1`, a module per resource, and the router that
//! puts them together.

pub mod artefacts;
pub mod events;
pub mod runners;
pub mod runs;
pub mod system;
pub mod users;
pub mod workflows;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::error::{ApiError, ApiResult};
use super::{AppState, MAX_BODY, MAX_PUBLISH_BODY};
use crate::store::Store;

/// Every route of the API (their access rules are in
/// [`super::auth::ROUTES`]).
pub fn routes(_state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/status", get(system::status))
        .route("/api/v1/openapi.json", get(super::openapi::document))
        .route("/api/v1/auth/token", post(users::login))
        .route("/api/v1/runs", get(runs::list).post(runs::start))
        .route("/api/v1/runs/{run}", get(runs::status))
        .route("/api/v1/runs/{run}/export", get(runs::export))
        .route("/api/v1/runs/{run}/events", get(runs::events))
        .route("/api/v1/runs/{run}/stream", get(runs::stream))
        .route("/api/v1/runs/{run}/wait", get(runs::wait))
        .route("/api/v1/runs/{run}/outlook", get(runs::outlook))
        .route("/api/v1/runs/{run}/picture", get(runs::picture))
        .route("/api/v1/runs/{run}/nodes", get(runs::nodes))
        .route("/api/v1/runs/{run}/nodes/{node}", get(runs::node))
        .route("/api/v1/runs/{run}/nodes/{node}/logs", get(runs::logs))
        .route("/api/v1/runs/{run}/pause", post(runs::pause))
        .route("/api/v1/runs/{run}/unpause", post(runs::unpause))
        .route("/api/v1/runs/{run}/cancel", post(runs::cancel))
        .route(
            "/api/v1/runs/{run}/nodes/{node}/restart",
            post(runs::restart),
        )
        .route("/api/v1/runs/{run}/nodes/{node}/input", post(runs::input))
        .route("/api/v1/workflows", get(workflows::list))
        .route(
            "/api/v1/workflows/{name}",
            get(workflows::get)
                .put(workflows::publish)
                .delete(workflows::delete)
                .layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY)),
        )
        .route("/api/v1/workflows/{name}/history", get(workflows::history))
        .route("/api/v1/workflows/{name}/runs", post(workflows::execute))
        .route("/api/v1/pipelines", get(system::pipelines))
        .route("/api/v1/events", get(events::list).post(events::push))
        .route(
            "/api/v1/timers",
            get(events::list_timers).post(events::start),
        )
        .route("/api/v1/timers/{id}", axum::routing::delete(events::stop))
        .route("/api/v1/users", get(users::list).post(users::add))
        .route(
            "/api/v1/users/{name}",
            axum::routing::patch(users::change).delete(users::remove),
        )
        .route(
            "/api/v1/tokens",
            get(users::tokens).post(users::create_token),
        )
        .route("/api/v1/tokens/{id}", axum::routing::delete(users::revoke))
        .route("/api/v1/runners", get(runners::list))
        .route("/api/v1/runners/register", post(runners::register))
        .route("/api/v1/runners/{id}/heartbeat", post(runners::heartbeat))
        .route("/api/v1/runners/{id}/claim", post(runners::claim))
        .route("/api/v1/runners/{id}/shutdown", post(runners::shutdown))
        .route(
            "/api/v1/attempts/{run}/{node}/{attempt}/report",
            post(runners::report),
        )
        .route(
            "/api/v1/attempts/{run}/{node}/{attempt}/file",
            post(runners::file),
        )
        .route(
            "/api/v1/attempts/{run}/{node}/{attempt}/artefact",
            post(runners::artefact).layer(DefaultBodyLimit::max(
                crate::exec::remote::MAX_ARTEFACT as usize,
            )),
        )
        .route("/api/v1/runs/{run}/artefacts", get(artefacts::list))
        .route(
            "/api/v1/runs/{run}/artefacts/{node}/{attempt}",
            get(artefacts::get),
        )
        .route("/api/v1/queues", get(runners::queues))
        .route("/api/v1/queues/{key}/clear", post(runners::clear))
        .route("/api/v1/admin/cancel_all", post(system::cancel_all))
        .route("/api/v1/admin/shutdown", post(system::shutdown))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Runs store work (short, but blocking) off the runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
        .map_err(ApiError::from)
}

/// A run's expected times from the history of past attempts, as JSON
/// (none, with a warning, when they cannot be estimated).
pub(crate) fn expected(store: &dyn Store, run: &str) -> Option<serde_json::Value> {
    let now = crate::time::unix_millis() as i64;
    match crate::estimate::for_run(store, run, now) {
        Ok(e) => serde_json::to_value(e).ok(),
        Err(e) => {
            tracing::warn!(%run, error = %e, "estimating the run failed");
            None
        }
    }
}
