//! What the pages' buttons do: each calls the API's handler with the
//! session's caller and answers with a redirect (or the page again, with
//! the refusal, when a form was wrong).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;

use super::html::{self, url};
use super::pages;
use super::session::{page_response, redirect, Form, Session, WebError, WebResult};
use crate::server::api::{
    events as api_events, runners as api_runners, runs as api_runs, workflows,
};
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

/// `POST /runners/{id}/shutdown`: the runner drains (finishes what it
/// holds, claims nothing new, then exits), as
/// `POST /api/v1/runners/{id}/shutdown`.
pub async fn drain(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> WebResult<Response> {
    api_runners::shutdown(State(s), ApiPath(id.clone())).await?;
    tracing::info!(runner = %crate::protocol::quote(&id), "a runner was asked to drain from the web view");
    Ok(redirect("/runners"))
}

/// `POST /queues/{key}/clear`: removes the queue's waiting attempts (they
/// fail; retries queue them again), as `POST /api/v1/queues/{key}/clear`,
/// by the session's user.
pub async fn clear_queue(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(key): Path<String>,
) -> WebResult<Response> {
    let cleared = api_runners::clear(State(s), Extension(me.caller), ApiPath(key.clone()))
        .await?
        .0;
    tracing::info!(queue = %crate::protocol::quote(&key), attempts = cleared.attempts.len(), "a queue was cleared from the web view");
    Ok(redirect("/runners"))
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

/// What the editor's check found: nothing (the files would publish), or
/// the first error and where it is.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// Whether a publish of these files would pass the checks.
    pub ok: bool,
    /// The error, as a publish would refuse it (and `orch validate` says).
    pub error: Option<String>,
    /// The file the error is in, when it names one of the files.
    pub file: Option<String>,
    /// Its line (from 1).
    pub line: Option<u32>,
    /// Its column (from 1).
    pub column: Option<u32>,
}

impl Checked {
    /// The first `file:line:column` in `message` naming one of `paths`.
    pub fn refused(message: &str, paths: &[String]) -> Checked {
        let mut best: Option<(usize, &String, u32, u32)> = None;
        for path in paths.iter().filter(|p| !p.is_empty()) {
            let needle = format!("{path}:");
            for (at, _) in message.match_indices(&needle) {
                // Only a whole name: not the tail of a longer one.
                let before = message[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                {
                    continue;
                }
                let rest = &message[at + needle.len()..];
                let Some((line, rest)) = leading_number(rest) else {
                    continue;
                };
                let column = rest
                    .strip_prefix(':')
                    .and_then(leading_number)
                    .map(|(c, _)| c);
                let column = column.unwrap_or(1);
                if best.is_none_or(|(b, ..)| at < b) {
                    best = Some((at, path, line, column));
                }
                break;
            }
        }
        Checked {
            ok: false,
            error: Some(message.to_string()),
            file: best.map(|(_, p, ..)| p.clone()),
            line: best.map(|(_, _, l, _)| l),
            column: best.map(|(.., c)| c),
        }
    }
}

/// A number at the start of `text`, and what follows it.
fn leading_number(text: &str) -> Option<(u32, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let n = text[..end].parse::<u32>().ok().filter(|n| *n > 0)?;
    Some((n, &text[end..]))
}

/// `POST /workflows/{name}/check`: the editor's files checked exactly as
/// a publish checks them (`check_publishable`: read,
/// compiled and validated in a scratch folder), and nothing committed.
/// The editor calls it as the text is typed.
pub async fn check(
    State(s): State<Arc<AppState>>,
    Extension(form): Extension<Form>,
    Path(name): Path<String>,
) -> WebResult<Response> {
    let files: Vec<(String, Vec<u8>)> = pages::form_files(&form)
        .into_iter()
        .map(|(p, c)| (p, c.into_bytes()))
        .collect();
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let data = s.data.clone();
    let result =
        tokio::task::spawn_blocking(move || workflows::check_publishable(&data, &name, &files))
            .await
            .map_err(|e| {
                WebError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("a worker failed: {e}"),
                )
            })?;
    let checked = match result {
        Ok(()) => Checked {
            ok: true,
            ..Checked::default()
        },
        Err(e) => {
            let web = WebError::from(e.clone());
            if web.status.is_server_error() {
                return Err(web);
            }
            Checked::refused(&e.error.message, &paths)
        }
    };
    Ok(Json(checked).into_response())
}

/// `POST /pipelines/backfill`: runs the fire times of a pipeline of the
/// server's pipelines folder (`--pipelines`) in `[from, to]` that the
/// `reprocess` mode selects (missing, failed, all), one at a time, with
/// [`crate::scheduler::backfill`] as `orch backfill` does; the form's
/// mistakes are refused at once, then the backfill goes on detached and
/// the page shows the pipeline's runs.
pub async fn backfill(
    State(s): State<Arc<AppState>>,
    Extension(form): Extension<Form>,
) -> WebResult<Response> {
    let bad = |m: String| WebError::new(StatusCode::BAD_REQUEST, m);
    let folder = s.pipelines.clone().ok_or_else(|| {
        bad("this server has no pipelines folder (orch serve --pipelines DIR)".into())
    })?;
    let name = form.get("pipeline").unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(bad("field `pipeline`: name the pipeline".into()));
    }
    let reprocess: crate::scheduler::Reprocess = form
        .get("reprocess")
        .unwrap_or("missing")
        .parse()
        .map_err(|e| bad(format!("field `reprocess`: {e}")))?;
    let moment = |field: &str| -> WebResult<jiff::Timestamp> {
        let text = form.get(field).unwrap_or("");
        let ms = pages::runs::moment(field, text)?;
        jiff::Timestamp::from_millisecond(ms).map_err(|e| bad(format!("field `{field}`: {e}")))
    };
    let (from, to) = (moment("from")?, moment("to")?);
    let wanted = name.clone();
    let pipeline =
        tokio::task::spawn_blocking(move || crate::scheduler::find(&folder, Some(&wanted)))
            .await
            .map_err(|e| {
                WebError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("a worker failed: {e}"),
                )
            })?
            .map_err(|e| WebError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    // What the backfill itself would refuse, refused here, where the
    // person can read it.
    if !pipeline.needs.is_empty() {
        return Err(bad(format!(
            "pipeline `{name}`: the parameters {} have no default",
            pipeline.needs.join(", ")
        )));
    }
    let Some(schedule) = pipeline.schedule.as_ref() else {
        return Err(bad(format!("pipeline `{name}` has no schedule")));
    };
    if to < from {
        return Err(bad(format!("field `to`: {to} is before `from` {from}")));
    }
    let start = from
        .checked_sub(jiff::SignedDuration::from_millis(1))
        .unwrap_or(from);
    let times = schedule
        .between(start, to, crate::scheduler::MAX_BACKFILL + 1)
        .len();
    if times == 0 {
        return Err(bad(format!(
            "pipeline `{name}` fires no time from {from} to {to}"
        )));
    }
    if times > crate::scheduler::MAX_BACKFILL {
        return Err(bad(format!(
            "the range holds more than {} fire times: backfill it in parts",
            crate::scheduler::MAX_BACKFILL
        )));
    }
    tracing::info!(pipeline = %name, %from, %to, times, "a backfill from the web view");
    let state = s.clone();
    tokio::spawn(async move {
        match crate::scheduler::backfill(&state.engine, &pipeline, from, to, reprocess, 1).await {
            Ok(report) => tracing::info!(
                pipeline = %pipeline.name,
                fire_times = report.len(),
                "the backfill ended"
            ),
            Err(e) => tracing::warn!(pipeline = %pipeline.name, "the backfill stopped: {e}"),
        }
    });
    Ok(redirect(&format!("/runs?workflow={}", url(&name))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_placed_at_its_file_line_and_column() {
        let paths = vec!["workflow.yaml".to_string(), "run.sh".to_string()];
        let c = Checked::refused(
            "workflow `w` does not load: workflow.yaml:3:5: unknown field `nme`",
            &paths,
        );
        assert_eq!(
            (c.ok, c.file.as_deref(), c.line, c.column),
            (false, Some("workflow.yaml"), Some(3), Some(5))
        );
        // A line without a column is at its first column; a longer name
        // that ends like a file is not that file.
        let c = Checked::refused("in my-run.sh:2: x; then run.sh:7: y", &paths);
        assert_eq!(
            (c.file.as_deref(), c.line, c.column),
            (Some("run.sh"), Some(7), Some(1))
        );
        // No place named: the message alone.
        let c = Checked::refused("workflow `w`: a cycle a -> b -> a", &paths);
        assert_eq!((c.file, c.line, c.error.is_some()), (None, None, true));
    }
}
