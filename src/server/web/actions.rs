//! What the pages' buttons do: each calls the API's handler with the
//! session's caller and answers with a redirect (or the page again, with
//! the refusal, when a form was wrong).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::Value;

use super::html::{self, url};
use super::pages;
use super::session::{page_response, redirect, Form, Session, WebError, WebResult};
use crate::server::api::{events as api_events, runs as api_runs, workflows};
use crate::server::extract::{Body, Path as ApiPath};
use crate::server::AppState;

fn back_to_run(run: &str) -> Response {
    redirect(&format!("/runs/{}", url(run)))
}

/// `POST /runs/{run}/pause`.
pub async fn pause(State(s): State<Arc<AppState>>, Path(run): Path<String>) -> WebResult<Response> {
    let done = api_runs::pause(State(s), ApiPath(run)).await?;
    Ok(back_to_run(&done.run))
}

/// `POST /runs/{run}/unpause`.
pub async fn unpause(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> WebResult<Response> {
    let done = api_runs::unpause(State(s), ApiPath(run)).await?;
    Ok(back_to_run(&done.run))
}

/// `POST /runs/{run}/cancel`.
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
) -> WebResult<Response> {
    let done = api_runs::cancel(State(s), ApiPath(run)).await?;
    Ok(back_to_run(&done.run))
}

/// `POST /runs/{run}/nodes/{node}/restart`.
pub async fn restart(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
) -> WebResult<Response> {
    let done = api_runs::restart(State(s), ApiPath((run, node))).await?;
    Ok(back_to_run(&done.run))
}

/// A form field read as JSON.
fn json_field(form: &Form, field: &str, default: &str) -> WebResult<Value> {
    let text = form.get(field).unwrap_or(default);
    let text = if text.trim().is_empty() {
        default
    } else {
        text
    };
    serde_json::from_str(text).map_err(|e| {
        WebError::new(
            StatusCode::BAD_REQUEST,
            format!("field `{field}` is not JSON ({e}): {text}"),
        )
    })
}

/// `POST /runs/{run}/nodes/{node}/input`: the form's `value` (JSON;
/// `true` approves) becomes the input node's output.
pub async fn input(
    State(s): State<Arc<AppState>>,
    Extension(form): Extension<Form>,
    Path((run, node)): Path<(String, String)>,
) -> WebResult<Response> {
    let value = json_field(&form, "value", "true")?;
    let done = api_runs::input(
        State(s),
        ApiPath((run, node)),
        Body(api_runs::InputBody { value }),
    )
    .await?;
    Ok(back_to_run(&done.run))
}

/// `POST /workflows/{name}/run`: runs the newest version with the form's
/// `params` (a JSON object).
pub async fn execute(
    State(s): State<Arc<AppState>>,
    Extension(form): Extension<Form>,
    Path(name): Path<String>,
) -> WebResult<Response> {
    let params = match json_field(&form, "params", "{}")? {
        Value::Object(m) => m,
        other => {
            return Err(WebError::new(
                StatusCode::BAD_REQUEST,
                format!("field `params` must be a JSON object, not {other}"),
            ))
        }
    };
    let started = workflows::execute(
        State(s),
        ApiPath(name),
        Body(api_runs::ExecuteBody {
            commit: None,
            params,
        }),
    )
    .await?
    .1;
    Ok(back_to_run(&started.run))
}

/// `POST /workflows/{name}/edit`: validates and publishes the editor's
/// files as one commit by the session's user; a refusal shows the editor
/// again with the user's text and the error (file, line and column).
pub async fn publish(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Extension(form): Extension<Form>,
    Path(name): Path<String>,
) -> WebResult<Response> {
    let files = pages::form_files(&form);
    let message = form.get("message").unwrap_or("").trim().to_string();
    let refused = |status: StatusCode, error: &str| {
        let body = pages::editor_page(&me, &name, &files, &message, Some(error));
        let mut r = page_response(html::page(
            &format!("Edit {name}"),
            Some(&me.viewer()),
            &body,
        ));
        *r.status_mut() = status;
        r
    };
    if message.is_empty() {
        return Ok(refused(
            StatusCode::BAD_REQUEST,
            "a commit message is needed: say why it changed",
        ));
    }
    let body = workflows::PublishBody {
        message: message.clone(),
        files: files
            .iter()
            .map(|(path, content)| workflows::FileItem {
                path: path.clone(),
                content: content.clone(),
                sha256: None,
            })
            .collect(),
    };
    match workflows::publish(
        State(s),
        Extension(me.caller.clone()),
        ApiPath(name.clone()),
        Body(body),
    )
    .await
    {
        Ok(_) => Ok(redirect(&format!("/workflows/{}", url(&name)))),
        Err(e) => {
            let status = WebError::from(e.clone()).status;
            Ok(refused(status, &e.error.message))
        }
    }
}

/// `POST /events`: pushes an event (`key`, `payload` as JSON).
pub async fn push_event(
    State(s): State<Arc<AppState>>,
    Extension(form): Extension<Form>,
) -> WebResult<Response> {
    let key = form.get("key").unwrap_or("").to_string();
    let payload = json_field(&form, "payload", "null")?;
    let (_, _pushed) = api_events::push(
        State(s),
        Body(api_events::PushBody {
            key,
            payload: Some(payload),
        }),
    )
    .await?;
    Ok(redirect("/events"))
}
