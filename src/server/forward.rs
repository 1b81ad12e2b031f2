//! Several servers on one database: a runner talks to one server, but
//! its reports on an attempt (mutations, log lines, the end), the files
//! it fetches and the artefacts it uploads must reach the engine that
//! drives the attempt's run, which may be another server's. Each
//! server's engine records, with every lease it takes, the URL it is
//! reached at ([`crate::store::Owner::url`]); a server that
//! receives a report for an attempt none of its engines waits for looks
//! the run's owner up in the store and forwards the report there, once,
//! with the runner's own token. When the owner is gone (its lease ran
//! out, it released the run, it cannot be reached) the answer is `503`
//! naming the run and the owner: the runner retries, and once a server
//! adopts the run (and re-attaches to the attempt) the report lands.
//!
//! Every report is fenced before it is forwarded: a runner that does not
//! hold the attempt is refused (`409`) by the server it talks to.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::{debug, warn};

use super::error::{ApiError, ApiResult, Code};
use super::AppState;
use crate::exec::AttemptId;
use crate::store::OwnerRecord;

/// The header a forwarded report carries: the id of the engine of the
/// server that forwarded it. A server never forwards a report that
/// carries it (one hop at most).
pub const FORWARDED_HEADER: &str = "x-orch-forwarded-by";
/// How long a forwarded report may take (a mutation waits for the
/// owner's engine to judge it).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the owner may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer of an owner that is relayed, in bytes.
pub const MAX_ANSWER: u64 = 1 << 20;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(FORWARD_TIMEOUT))
            .build()
            .new_agent()
    })
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(Code::Unavailable, message)
}

/// Where a report for attempt `id` goes, given the run's owner record
/// (`record`), this server's engine id (`me`) and the time (`now_ms`):
/// the owner's URL, or the error to answer. Pure, for the tests.
pub(crate) fn route(
    id: &AttemptId,
    record: &OwnerRecord,
    me: &str,
    now_ms: i64,
) -> Result<String, ApiError> {
    let Some(owner) = &record.owner else {
        return Err(unavailable(format!(
            "attempt {id}: run {} has no owner (its last engine released it); a server adopts it soon, retry",
            id.run
        )));
    };
    if owner.id == me {
        // It owns the run but waits for no such attempt: a takeover in
        // progress (it re-attaches to the claimed attempts next).
        return Err(unavailable(format!(
            "attempt {id}: this server's engine {me} is taking run {} over and does not wait for the attempt yet; retry",
            id.run
        )));
    }
    if record.until_ms < now_ms {
        return Err(unavailable(format!(
            "attempt {id}: the owner of run {}, {}{}, lost its lease {} ms ago; a server adopts the run soon, retry",
            id.run,
            owner.describe(),
            owner.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default(),
            now_ms - record.until_ms
        )));
    }
    match &owner.url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(url.clone()),
        Some(url) => Err(ApiError::internal(format!(
            "attempt {id}: the owner of run {}, {}, advertises `{url}`, which is not an http(s) URL",
            id.run,
            owner.describe()
        ))),
        None => Err(ApiError::conflict(format!(
            "attempt {id}: run {} is driven by {}, which is not a server and takes no reports from runners",
            id.run,
            owner.describe()
        ))),
    }
}

/// Sends the report `body` on attempt `id`, which `runner` claims to
/// hold and which no engine of this server waits for, to the server
/// whose engine owns the run, as the request `path`; relays its answer.
pub async fn forward(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    path: &str,
    id: &AttemptId,
    runner: &str,
    body: Value,
) -> ApiResult<Response> {
    let text = serde_json::to_vec(&body).expect("a report is JSON");
    forward_bytes(s, headers, path, id, runner, Sent::json(text), MAX_ANSWER).await
}

/// What a forwarded request carries: its body and that body's type.
#[derive(Debug)]
pub struct Sent {
    content_type: &'static str,
    body: Vec<u8>,
}

impl Sent {
    /// A JSON body.
    pub fn json(body: Vec<u8>) -> Sent {
        Sent {
            content_type: "application/json",
            body,
        }
    }

    /// Raw bytes (an artefact's content).
    pub fn bytes(body: Vec<u8>) -> Sent {
        Sent {
            content_type: "application/octet-stream",
            body,
        }
    }
}

/// [`forward`] for any runner call on an attempt (a report, a shipped
/// file, an artefact's upload): `path_and_query` as the request was
/// made, `sent` as its body; the owner's answer (JSON, or a file's bytes)
/// of at most `max_answer` bytes is relayed with its status.
pub async fn forward_bytes(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    path_and_query: &str,
    id: &AttemptId,
    runner: &str,
    sent: Sent,
    max_answer: u64,
) -> ApiResult<Response> {
    let me = s.engine.owner().id.clone();
    if let Some(by) = headers.get(FORWARDED_HEADER) {
        let by = String::from_utf8_lossy(by.as_bytes())
            .chars()
            .take(128)
            .collect::<String>();
        return Err(unavailable(format!(
            "attempt {id}: server {me} does not drive run {} either (the request was forwarded by {by}); its owner changed, retry",
            id.run
        )));
    }
    let store = s.store.clone();
    let (aid, who) = (id.clone(), runner.to_string());
    let record = super::api::blocking(move || {
        // The fence first: a runner that does not hold the attempt is
        // refused here, whoever owns the run.
        store.claim_holds(&aid, &who)?;
        store.owner(&aid.run)
    })
    .await?;
    let url = route(id, &record, &me, crate::time::unix_millis() as i64)?;
    let owner = record
        .owner
        .map(|o| o.id)
        .unwrap_or_else(|| "(none)".into());
    let target = format!("{}{path_and_query}", url.trim_end_matches('/'));
    let auth = headers.get(axum::http::header::AUTHORIZATION).cloned();
    debug!(attempt = %id, %target, "forwarding a runner's call to the run's owner");
    let sent = tokio::task::spawn_blocking(move || {
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(&target)
            .header("content-type", sent.content_type)
            .header(FORWARDED_HEADER, me.as_str());
        if let Some(a) = auth {
            req = req.header(axum::http::header::AUTHORIZATION.as_str(), a.as_bytes());
        }
        let req = req.body(sent.body).map_err(|e| e.to_string())?;
        let mut resp = agent().run(req).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let binary = resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/octet-stream"));
        let answer = resp
            .body_mut()
            .with_config()
            .limit(max_answer)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, binary, answer))
    })
    .await
    .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?;
    let (status, binary, answer) = match sent {
        Ok(got) => got,
        Err(e) => {
            warn!(attempt = %id, %url, owner = %owner, error = %e, "the owner of a run cannot be reached");
            return Err(unavailable(format!(
                "attempt {id}: the owner of run {}, engine {owner} at {url}, cannot be reached ({e}); retry",
                id.run
            )));
        }
    };
    let ok = StatusCode::from_u16(status).is_ok_and(|s| s.is_success());
    let content_type = if binary && ok {
        "application/octet-stream"
    } else {
        if serde_json::from_slice::<Value>(&answer).is_err() {
            return Err(unavailable(format!(
                "attempt {id}: the owner of run {}, engine {owner} at {url}, answered {status} without JSON; retry",
                id.run
            )));
        }
        "application/json"
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        answer,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;

    fn id() -> AttemptId {
        AttemptId::new("r1", "n", 2)
    }

    fn status(e: ApiError) -> (Code, String) {
        (e.code(), e.error.message)
    }

    #[test]
    fn a_report_goes_to_the_live_owner_or_is_retried() {
        let other = Owner::this_process().with_url("http://10.0.0.2:8080");
        let live = OwnerRecord::new(Some(other.clone()), 3, 2_000);
        assert_eq!(
            route(&id(), &live, "engine-me", 1_000).unwrap(),
            "http://10.0.0.2:8080"
        );
        // Expired: retry after adoption, naming run, attempt and owner.
        let (code, msg) = status(route(&id(), &live, "engine-me", 3_000).unwrap_err());
        assert_eq!(code, Code::Unavailable);
        assert!(msg.contains("run r1"), "{msg}");
        assert!(msg.contains(&other.id) && msg.contains("10.0.0.2"), "{msg}");
        // Released, or this very engine (a takeover in progress): retry.
        let released = OwnerRecord::new(None, 3, 0);
        assert_eq!(
            status(route(&id(), &released, "engine-me", 1_000).unwrap_err()).0,
            Code::Unavailable
        );
        let mine = OwnerRecord::new(Some(other.clone()), 3, 2_000);
        assert_eq!(
            status(route(&id(), &mine, &other.id, 1_000).unwrap_err()).0,
            Code::Unavailable
        );
        // An engine that is no server: refused for good.
        let embedded = OwnerRecord::new(Some(Owner::this_process()), 3, 2_000);
        assert_eq!(
            status(route(&id(), &embedded, "engine-me", 1_000).unwrap_err()).0,
            Code::Conflict
        );
    }
}
