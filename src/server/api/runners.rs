//! Runners and queues: the calls of `orch runner` (register, heartbeat,
//! claim, report; runner tokens) and the operators' view (list runners,
//! drain one, queue status, clear a queue).

use crate::digest::sha256_hex;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::super::auth::Caller;
use super::super::error::{ApiError, ApiResult, Code};
use super::super::extract::{Body, Path, Query};
use super::super::AppState;
use super::blocking;
use crate::exec::remote::{Remote, ReportError, Wake, WireEnd, Woken, LOOK_AGAIN};
use crate::exec::resources::Offer;
use crate::exec::AttemptId;
use crate::model::Mutation;
use crate::store::queue::{self, RunnerRecord, RunnerSpec, MAX_CLAIM, MAX_NAME, MAX_SLOTS};

/// The longest a claim waits for work, in milliseconds.
pub const MAX_CLAIM_WAIT_MS: u64 = 60_000;
/// The most attempts a heartbeat may list.
pub const MAX_HOLDING: usize = 4096;
/// The most labels a runner may declare.
pub const MAX_LABELS: usize = 64;

/// What a runner offers.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Cores.
    pub cpu: f64,
    /// Memory in bytes (absent: not checked).
    #[serde(default)]
    pub memory: Option<u64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: u32,
    /// Labels (`exec=slurm`, `ssd`, …).
    #[serde(default)]
    pub labels: Vec<String>,
}

impl From<Offer> for Capabilities {
    fn from(o: Offer) -> Capabilities {
        Capabilities {
            cpu: o.cpu,
            memory: o.memory,
            gpu: o.gpu,
            labels: o.labels,
        }
    }
}

/// `POST /runners/register`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Its name (1 to 128 printable characters).
    pub name: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// How many attempts it runs at once (1 to 1024).
    pub slots: u32,
    /// The orch version it runs (at most 128 characters).
    #[serde(default)]
    pub version: String,
}

/// A runner as listed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunnerView {
    /// Its id: the runner calls name it.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Its slots.
    pub slots: u32,
    /// Its orch version.
    pub version: String,
    /// When it registered (ms since the Unix epoch, the store's clock).
    pub registered_ms: i64,
    /// Until when its lease holds.
    pub lease_until_ms: i64,
    /// It drains: finishes what it holds, claims nothing new.
    pub draining: bool,
    /// Attempts it holds.
    pub running: u64,
    /// Its lease holds.
    pub alive: bool,
}

impl From<RunnerRecord> for RunnerView {
    fn from(r: RunnerRecord) -> RunnerView {
        RunnerView {
            id: r.spec.id,
            name: r.spec.name,
            capabilities: r.spec.capabilities.into(),
            slots: r.spec.slots,
            version: r.spec.version,
            registered_ms: r.registered_ms,
            lease_until_ms: r.lease_until_ms,
            draining: r.draining,
            running: r.running,
            alive: r.alive,
        }
    }
}

/// A registered runner and the lease it must renew.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The runner.
    pub runner: RunnerView,
    /// Its lease (and its claims'), in milliseconds: heartbeat well
    /// within it.
    pub lease_ms: i64,
}

fn printable(field: &str, text: &str, min: usize) -> ApiResult<()> {
    if text.chars().count() < min || text.len() > MAX_NAME || text.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "field `{field}`: {min} to {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

/// Refuses unless the caller's token registered runner `runner`: a
/// runner's id starts with the id of the token that registered it
/// (`TOKEN-MILLIS-RANDOM`), so a runner token heartbeats, claims and
/// reports only as the runners it registered itself. Runners that share a
/// token share this right; give each runner its own token to keep them
/// apart.
fn acting_for(me: &Caller, field: &str, runner: &str) -> ApiResult<()> {
    match runner.split_once('-') {
        Some((token, _)) if token == me.token => Ok(()),
        _ => Err(ApiError::forbidden(format!(
            "{field}: token `{}` may not act for runner `{runner}`: a runner token acts only for \
             the runners it registered (register again with this token)",
            me.token
        ))),
    }
}

fn remote(s: &AppState) -> ApiResult<Arc<Remote>> {
    s.engine
        .remote()
        .cloned()
        .ok_or_else(|| ApiError::new(Code::Unavailable, "this server sends no attempt to runners"))
}

/// `POST /runners/register`: a runner joins.
#[utoipa::path(post, path = "/api/v1/runners/register", tag = "runners", request_body = RegisterBody,
    responses((status = 201, body = Registered), (status = 400, body = ApiError)),
    security(("token" = [])))]
pub async fn register(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Body(body): Body<RegisterBody>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    printable("name", &body.name, 1)?;
    if body.name == crate::history::LOCAL {
        return Err(ApiError::bad(format!(
            "field `name`: `{}` names the server's own machine in attempt records; choose another",
            crate::history::LOCAL
        )));
    }
    printable("version", &body.version, 0)?;
    if body.slots == 0 || body.slots > MAX_SLOTS {
        return Err(ApiError::bad(format!(
            "field `slots`: 1 to {MAX_SLOTS} attempts at once"
        )));
    }
    let c = body.capabilities;
    if !c.cpu.is_finite() || c.cpu < 0.0 || c.cpu > 1e6 {
        return Err(ApiError::bad(
            "field `capabilities.cpu`: a number of cores from 0 to 1000000",
        ));
    }
    if c.labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "field `capabilities.labels`: at most {MAX_LABELS} labels"
        )));
    }
    for (i, l) in c.labels.iter().enumerate() {
        printable(&format!("capabilities.labels[{i}]"), l, 1)?;
    }
    let remote = remote(&s)?;
    let lease_ms = remote.lease_ms();
    // The token's id first: it binds the runner to the token
    // (`acting_for`).
    let id = format!(
        "{}-{}-{}",
        me.token,
        crate::time::unix_millis(),
        random_suffix()
    );
    let spec = RunnerSpec::new(
        &id,
        &body.name,
        Offer {
            cpu: c.cpu,
            memory: c.memory,
            gpu: c.gpu,
            labels: c.labels,
        },
        body.slots,
        &body.version,
    );
    let store = s.store.clone();
    let record = blocking(move || store.register_runner(&spec, lease_ms)).await?;
    tracing::info!(runner = %record.spec.name, id = %record.spec.id, "a runner registered");
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            runner: record.into(),
            lease_ms,
        }),
    ))
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    // A failure leaves zeros: the millisecond still tells runners apart.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An attempt, as runner calls name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptRef {
    /// The run.
    pub run: String,
    /// The node.
    pub node: String,
    /// The attempt number.
    pub attempt: u32,
}

impl From<AttemptId> for AttemptRef {
    fn from(a: AttemptId) -> AttemptRef {
        AttemptRef {
            run: a.run,
            node: a.node,
            attempt: a.attempt,
        }
    }
}

impl From<AttemptRef> for AttemptId {
    fn from(a: AttemptRef) -> AttemptId {
        AttemptId::new(a.run, a.node, a.attempt)
    }
}

/// `POST /runners/{id}/heartbeat`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// The attempts it runs (at most 4096).
    #[serde(default)]
    pub holding: Vec<AttemptRef>,
}

/// What a heartbeat answers.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BeatView {
    /// It drains: claim nothing new, exit once idle.
    pub draining: bool,
    /// Attempts it must stop: no longer its own.
    pub lost: Vec<AttemptRef>,
    /// Its lease, in milliseconds.
    pub lease_ms: i64,
}

/// `POST /runners/{id}/heartbeat`: renews the runner's lease and its
/// claims'.
#[utoipa::path(post, path = "/api/v1/runners/{id}/heartbeat", tag = "runners",
    params(("id" = String, Path, description = "the runner")), request_body = HeartbeatBody,
    responses((status = 200, body = BeatView), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn heartbeat(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(id): Path<String>,
    Body(body): Body<HeartbeatBody>,
) -> ApiResult<Json<BeatView>> {
    acting_for(&me, "the path's runner", &id)?;
    if body.holding.len() > MAX_HOLDING {
        return Err(ApiError::bad(format!(
            "field `holding`: at most {MAX_HOLDING} attempts"
        )));
    }
    let remote = remote(&s)?;
    let lease_ms = remote.lease_ms();
    let holding: Vec<AttemptId> = body.holding.into_iter().map(Into::into).collect();
    let store = s.store.clone();
    let runner = id.clone();
    let beat = blocking(move || store.heartbeat(&runner, &holding, lease_ms)).await?;
    // Its lease may have run out (its claims found nothing): its next
    // claim reads.
    remote.runner_changed(&id);
    Ok(Json(BeatView {
        draining: beat.draining,
        lost: beat.lost.into_iter().map(Into::into).collect(),
        lease_ms,
    }))
}

/// `POST /runners/{id}/claim`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// At most this many attempts (1 to 64; its free slots bound it too).
    #[serde(default = "one")]
    pub max: u32,
    /// How long to wait for work, in milliseconds (at most 60000).
    #[serde(default)]
    pub wait_ms: u64,
}

fn one() -> u32 {
    1
}

/// A claimed attempt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedView {
    /// Which attempt.
    pub id: AttemptRef,
    /// Its queue.
    pub queue: String,
    /// What to run: the task, its inputs and its predecessors' outputs.
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// What a claim hands out.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Claimed {
    /// The attempts, possibly none (the wait ran out).
    pub attempts: Vec<ClaimedView>,
}

/// `POST /runners/{id}/claim`: attempts of the queues the runner serves,
/// waiting up to `wait_ms` for one.
#[utoipa::path(post, path = "/api/v1/runners/{id}/claim", tag = "runners",
    params(("id" = String, Path, description = "the runner")), request_body = ClaimBody,
    responses((status = 200, body = Claimed), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn claim(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(id): Path<String>,
    Body(body): Body<ClaimBody>,
) -> ApiResult<Json<Claimed>> {
    acting_for(&me, "the path's runner", &id)?;
    if body.max == 0 || body.max as usize > MAX_CLAIM {
        return Err(ApiError::bad(format!("field `max`: 1 to {MAX_CLAIM}")));
    }
    if body.wait_ms > MAX_CLAIM_WAIT_MS {
        return Err(ApiError::bad(format!(
            "field `wait_ms`: at most {MAX_CLAIM_WAIT_MS}"
        )));
    }
    let remote = remote(&s)?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(body.wait_ms);
    let mut stopping = s.stop.subscribe();
    // A wake this claim got: its next read decides it.
    let mut held: Option<Wake> = None;
    loop {
        // Waiting before the store is asked: an attempt queued while the
        // claim reads wakes this claim (a wake sent between the read and
        // the wait would miss it, and the attempt would wait for the next
        // look, up to `LOOK_AGAIN` later).
        let mut waiting = remote.wait_for_attempts(&id);
        // A claim that waits, unwoken, need not read when this runner's
        // last read came up short moments ago and nothing changed through
        // this server since: it waits for a wake, and looks when that
        // read's `LOOK_AGAIN` is up.
        let skip = match held {
            None if body.wait_ms > 0 => remote.may_wait(&id),
            _ => None,
        };
        let look = match skip {
            Some(due) => tokio::time::Instant::from_std(due),
            None => {
                let store = s.store.clone();
                let runner = id.clone();
                let lease_ms = remote.lease_ms();
                let max = body.max as usize;
                let (before, at) = (remote.queue_epoch(), std::time::Instant::now());
                let got = blocking(move || store.claim(&runner, max, lease_ms)).await?;
                let ids: Vec<AttemptId> = got.iter().map(|a| a.id.clone()).collect();
                remote.claimed(&id, &ids);
                remote.looked(&id, before, at, ids.len(), max);
                // This read came after the wake: unless it took the
                // attempt, the wake goes on to another runner's claim.
                if let Some(wake) = held.take() {
                    wake.declined_by(&id);
                }
                if !got.is_empty() {
                    return Ok(Json(claimed(got)));
                }
                tokio::time::Instant::now() + LOOK_AGAIN
            }
        };
        if tokio::time::Instant::now() >= deadline || *stopping.borrow() > 0 {
            return Ok(Json(Claimed {
                attempts: Vec::new(),
            }));
        }
        // Woken by a new attempt, else looks again now and then (another
        // server may have queued it, a slot may have freed).
        tokio::select! {
            woken = waiting.woken() => match woken {
                Some(Woken::Wake(wake)) => held = Some(wake),
                // Claimed for this runner as it was queued: the answer,
                // without reading.
                Some(Woken::Handed(handed)) => {
                    let got = handed.take(body.max as usize);
                    return Ok(Json(claimed(vec![got])));
                }
                None => held = None,
            },
            _ = tokio::time::sleep_until(look) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// A claim's answer: the attempts it took.
fn claimed(got: Vec<crate::store::queue::QueuedAttempt>) -> Claimed {
    let attempts = got
        .into_iter()
        .map(|a| ClaimedView {
            spec: serde_json::from_str(&a.payload).unwrap_or(Value::Null),
            id: a.id.into(),
            queue: a.queue,
        })
        .collect();
    Claimed { attempts }
}

/// The most log lines one report carries.
pub const MAX_REPORT_LINES: usize = 4096;

/// A runner's report on an attempt it holds: exactly one of `mutation`,
/// `logs` and `end`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The runner's id (the fence: it must hold the attempt).
    pub runner: String,
    /// A mutation the task sent: answered as it is judged.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub mutation: Option<Value>,
    /// Log lines as they are written: `[line, stream, text]` each (at
    /// most 4096).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub logs: Option<Vec<Value>>,
    /// How the attempt ended.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub end: Option<Value>,
}

/// The answer to a report.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportAnswer {
    /// The mutation was accepted (always true for an end).
    pub ok: bool,
    /// Why the engine refused the mutation.
    pub error: Option<String>,
}

fn report_error(e: ReportError) -> ApiError {
    match e {
        ReportError::Store(e @ crate::Error::AttemptFenced { .. }) => {
            ApiError::conflict(e.to_string())
        }
        ReportError::Store(e) => e.into(),
        e @ ReportError::NotWaiting(_) => ApiError::conflict(e.to_string()),
        e @ ReportError::NoSuchFile { .. } => ApiError::not_found(e.to_string()),
        e @ ReportError::NotDeclared { .. } => ApiError::bad(e.to_string()),
        ReportError::Bad(message) => ApiError::bad(message),
    }
}

/// `POST /attempts/{run}/{node}/{attempt}/report`: a mutation or the
/// end of an attempt the runner holds; refused (409) when it does not.
/// A report on a run another server drives is forwarded there
/// ([`super::super::forward`]); `503` when the run's owner is gone (the
/// runner retries once a server adopted the run).
#[utoipa::path(post, path = "/api/v1/attempts/{run}/{node}/{attempt}/report", tag = "runners",
    params(("run" = String, Path, description = "the run"),
           ("node" = String, Path, description = "the node"),
           ("attempt" = u32, Path, description = "the attempt number")),
    request_body = ReportBody,
    responses((status = 200, body = ReportAnswer), (status = 403, body = ApiError), (status = 409, body = ApiError),
              (status = 503, body = ApiError, description = "the run's owner is gone: retry once a server adopts it")),
    security(("token" = [])))]
pub async fn report(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    Path((run, node, attempt)): Path<(String, String, u32)>,
    Body(body): Body<ReportBody>,
) -> ApiResult<Response> {
    acting_for(&me, "field `runner`", &body.runner)?;
    let id = AttemptId::new(run, node, attempt);
    let runner = body.runner.clone();
    // Kept to forward the report when another server drives the run.
    let original = serde_json::json!({
        "runner": body.runner,
        "mutation": body.mutation,
        "logs": body.logs,
        "end": body.end,
    });
    let ends = body.end.is_some();
    let answer = match take_report(&s, &id, body).await {
        Err(ReportError::NotWaiting(_)) => {
            let mut original = original;
            if let Some(o) = original.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            super::super::forward::forward(&s, &headers, uri.path(), &id, &runner, original).await
        }
        Err(e) => Err(report_error(e)),
        Ok(answer) => Ok(Json(answer).into_response()),
    };
    if ends {
        // A slot of the runner freed (here or on the run's owner): its
        // next claim reads.
        if let Some(remote) = s.engine.remote() {
            remote.runner_changed(&runner);
        }
    }
    answer
}

/// A report handed to the engine of this server that waits for the
/// attempt; [`ReportError::NotWaiting`] when none does.
async fn take_report(
    s: &Arc<AppState>,
    id: &AttemptId,
    body: ReportBody,
) -> Result<ReportAnswer, ReportError> {
    let remote = remote(s).map_err(|_| ReportError::NotWaiting(id.clone()))?;
    let id = id.clone();
    let worker = |e: tokio::task::JoinError| {
        ReportError::Store(crate::Error::Engine {
            run: String::new(),
            message: format!("a worker failed: {e}"),
        })
    };
    match (body.mutation, body.logs, body.end) {
        (None, Some(lines), None) => {
            let lines = checked_lines(lines).map_err(ReportError::Bad)?;
            let runner = body.runner;
            tokio::task::spawn_blocking(move || remote.logs(&id, &runner, lines))
                .await
                .map_err(worker)??;
            Ok(ReportAnswer {
                ok: true,
                error: None,
            })
        }
        (Some(m), None, None) => {
            let m: Mutation = serde_json::from_value(m)
                .map_err(|e| ReportError::Bad(format!("field `mutation`: {e}")))?;
            let answer = remote.mutation(&id, &body.runner, m).await?;
            Ok(ReportAnswer {
                ok: answer.is_ok(),
                error: answer.err(),
            })
        }
        (None, None, Some(end)) => {
            let end: WireEnd = serde_json::from_value(end)
                .map_err(|e| ReportError::Bad(format!("field `end`: {e}")))?;
            let runner = body.runner;
            tokio::task::spawn_blocking(move || remote.end(&id, &runner, end))
                .await
                .map_err(worker)??;
            Ok(ReportAnswer {
                ok: true,
                error: None,
            })
        }
        _ => Err(ReportError::Bad(
            "a report has exactly one of the fields `mutation`, `logs` and `end`".into(),
        )),
    }
}

/// `POST /attempts/{run}/{node}/{attempt}/file`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    /// The runner's id (the fence: it must hold the attempt).
    pub runner: String,
    /// The SHA-256 (hex) of the content wanted, as the attempt's `files`
    /// name it.
    pub sha256: String,
}

/// `POST /attempts/{run}/{node}/{attempt}/file`: the content of a file
/// of the published workflow the attempt runs from (the attempt's
/// `files` name each by hash), for the runner that holds the attempt;
/// `409` when it does not, `404` for a hash the attempt does not need.
/// The content is read again and checked against its hash.
#[utoipa::path(post, path = "/api/v1/attempts/{run}/{node}/{attempt}/file", tag = "runners",
    params(("run" = String, Path, description = "the run"),
           ("node" = String, Path, description = "the node"),
           ("attempt" = u32, Path, description = "the attempt number")),
    request_body = FileBody,
    responses((status = 200, description = "the file's content", content_type = "application/octet-stream"),
              (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError),
              (status = 503, body = ApiError, description = "the run's owner is gone: retry once a server adopts it")),
    security(("token" = [])))]
pub async fn file(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    Path((run, node, attempt)): Path<(String, String, u32)>,
    Body(body): Body<FileBody>,
) -> ApiResult<Response> {
    use std::io::Read;
    acting_for(&me, "field `runner`", &body.runner)?;
    if body.sha256.len() != 64 || !body.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(
            "field `sha256`: 64 hexadecimal digits (a SHA-256)",
        ));
    }
    let id = AttemptId::new(run, node, attempt);
    let Ok(remote) = remote(&s) else {
        return forward_file(&s, &headers, &uri, &id, &body).await;
    };
    let (aid, runner, sha256) = (id.clone(), body.runner.clone(), body.sha256.clone());
    let found = tokio::task::spawn_blocking(move || remote.shipped_file(&aid, &runner, &sha256))
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?;
    let (path, want) = match found {
        Err(ReportError::NotWaiting(_)) => {
            return forward_file(&s, &headers, &uri, &id, &body).await;
        }
        other => other.map_err(report_error)?,
    };
    let content = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let mut content = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| {
                f.take(crate::exec::remote::MAX_SHIPPED_FILE + 1)
                    .read_to_end(&mut content)
            })
            .map_err(|e| ApiError::internal(format!("reading `{}`: {e}", want.path)))?;
        if sha256_hex(&content) != want.sha256 {
            return Err(ApiError::conflict(format!(
                "file `{}` of attempt {id} changed on the server since its run started",
                want.path
            )));
        }
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

/// A file request on an attempt of a run this server does not drive,
/// sent to the run's owner ([`super::super::forward`]).
async fn forward_file(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    uri: &Uri,
    id: &AttemptId,
    body: &FileBody,
) -> ApiResult<Response> {
    let text = serde_json::to_vec(&serde_json::json!({
        "runner": body.runner,
        "sha256": body.sha256,
    }))
    .expect("a file request is JSON");
    super::super::forward::forward_bytes(
        s,
        headers,
        uri.path(),
        id,
        &body.runner,
        super::super::forward::Sent::json(text),
        crate::exec::remote::MAX_SHIPPED_FILE + 1,
    )
    .await
}

/// Which artefact an upload is, and by whom.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtefactUpload {
    /// The runner's id (the fence: it must hold the attempt).
    pub runner: String,
    /// The file's path, exactly as the task's `produces` names it.
    pub path: String,
}

/// What an upload kept.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    /// The file's path.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `POST /attempts/{run}/{node}/{attempt}/artefact?runner=ID&path=P`: a
/// file the attempt produced (the body, at most 256 MiB), kept in the
/// run's folder on the server. Only the runner holding the attempt may
/// upload (`409` otherwise), only a path its task `produces` (`400`).
/// An upload of the same path again replaces it.
#[utoipa::path(post, path = "/api/v1/attempts/{run}/{node}/{attempt}/artefact", tag = "runners",
    params(("run" = String, Path, description = "the run"),
           ("node" = String, Path, description = "the node"),
           ("attempt" = u32, Path, description = "the attempt number"),
           ArtefactUpload),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Uploaded), (status = 400, body = ApiError),
              (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 413),
              (status = 503, body = ApiError, description = "the run's owner is gone: retry once a server adopts it")),
    security(("token" = [])))]
pub async fn artefact(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    Path((run, node, attempt)): Path<(String, String, u32)>,
    Query(q): Query<ArtefactUpload>,
    content: axum::body::Bytes,
) -> ApiResult<Response> {
    acting_for(&me, "query `runner`", &q.runner)?;
    let id = AttemptId::new(run, node, attempt);
    let forward = |s: Arc<AppState>, content: axum::body::Bytes| {
        let (headers, id, runner) = (headers.clone(), id.clone(), q.runner.clone());
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
        async move {
            super::super::forward::forward_bytes(
                &s,
                &headers,
                &target,
                &id,
                &runner,
                super::super::forward::Sent::bytes(content.to_vec()),
                super::super::forward::MAX_ANSWER,
            )
            .await
        }
    };
    let Ok(remote) = remote(&s) else {
        return forward(s.clone(), content).await;
    };
    let (aid, runner, path) = (id.clone(), q.runner.clone(), q.path.clone());
    let rel = tokio::task::spawn_blocking(move || remote.artefact_path(&aid, &runner, &path))
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?;
    let rel = match rel {
        Err(ReportError::NotWaiting(_)) => return forward(s.clone(), content).await,
        other => other.map_err(report_error)?,
    };
    let home = s.engine.home().to_path_buf();
    tokio::task::spawn_blocking(move || -> ApiResult<Response> {
        let dir = crate::exec::remote::artefact_dir(
            &home.join("runs").join(&id.run),
            &id.node,
            id.attempt,
        );
        let to = dir.join(rel);
        let parent = to.parent().unwrap_or(&dir).to_path_buf();
        let tmp = parent.join(format!(".upload-{}", random_suffix()));
        std::fs::create_dir_all(&parent)
            .and_then(|()| std::fs::write(&tmp, &content))
            .and_then(|()| std::fs::rename(&tmp, &to))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                ApiError::internal(format!(
                    "keeping artefact `{}` of attempt {id}: {e}",
                    q.path
                ))
            })?;
        tracing::info!(attempt = %id, path = %q.path, bytes = content.len(), "artefact uploaded");
        Ok((
            StatusCode::CREATED,
            Json(Uploaded {
                path: q.path,
                bytes: content.len() as u64,
            }),
        )
            .into_response())
    })
    .await
    .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}

/// Log lines of a report, checked: at most [`MAX_REPORT_LINES`], each
/// `[line, stream, text]`.
fn checked_lines(lines: Vec<Value>) -> Result<Vec<(u32, String, String)>, String> {
    if lines.len() > MAX_REPORT_LINES {
        return Err(format!(
            "field `logs`: at most {MAX_REPORT_LINES} lines a report"
        ));
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_value::<(u32, String, String)>(l)
                .map_err(|e| format!("field `logs[{i}]`: [line, stream, text]: {e}"))
        })
        .collect()
}

/// `GET /runners`: every registered runner.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runners",
    responses((status = 200, body = [RunnerView])), security(("token" = [])))]
pub async fn list(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<RunnerView>>> {
    let store = s.store.clone();
    let (runners, _) = blocking(move || store.runners()).await?;
    Ok(Json(runners.into_iter().map(Into::into).collect()))
}

/// `POST /runners/{id}/shutdown`: the runner drains (finishes what it
/// holds, claims nothing new) and then exits.
#[utoipa::path(post, path = "/api/v1/runners/{id}/shutdown", tag = "runners",
    params(("id" = String, Path, description = "the runner")),
    responses((status = 202), (status = 404, body = ApiError)), security(("token" = [])))]
pub async fn shutdown(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let store = s.store.clone();
    let who = id.clone();
    if blocking(move || store.drain_runner(&who)).await? {
        if let Some(remote) = s.engine.remote() {
            remote.runners_changed();
        }
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!(
            "no runner `{id}` is registered"
        )))
    }
}

/// A queue's status.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Its key: the normalised requirement set.
    pub key: String,
    /// Its requirements.
    #[schema(value_type = Object)]
    pub requires: Value,
    /// Attempts waiting.
    pub depth: u64,
    /// Attempts held by runners.
    pub running: u64,
    /// How long the oldest waiting attempt has waited, in milliseconds.
    pub oldest_wait_ms: Option<i64>,
    /// The live runners that serve it, by name.
    pub serving: Vec<String>,
    /// No live runner can serve it: its attempts wait for one.
    pub unservable: bool,
}

/// `GET /queues`: every queue with waiting or held attempts.
#[utoipa::path(get, path = "/api/v1/queues", tag = "runners",
    responses((status = 200, body = [QueueView])), security(("token" = [])))]
pub async fn queues(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<QueueView>>> {
    let store = s.store.clone();
    let ((rows, now), (runners, _)) =
        blocking(move || Ok((store.queue_rows()?, store.runners()?))).await?;
    Ok(Json(
        queue::statuses(rows, &runners, now)
            .into_iter()
            .map(|q| QueueView {
                requires: serde_json::to_value(&q.requires).unwrap_or(Value::Null),
                key: q.key,
                depth: q.depth,
                running: q.running,
                oldest_wait_ms: q.oldest_wait_ms,
                serving: q.serving,
                unservable: q.unservable,
            })
            .collect(),
    ))
}

/// What a clear removed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Cleared {
    /// The waiting attempts removed (they fail; retries queue them again).
    pub attempts: Vec<AttemptRef>,
}

/// `POST /queues/{key}/clear`: removes the waiting attempts of a queue.
#[utoipa::path(post, path = "/api/v1/queues/{key}/clear", tag = "runners",
    params(("key" = String, Path, description = "the queue's key")),
    responses((status = 200, body = Cleared)), security(("token" = [])))]
pub async fn clear(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult<Json<Cleared>> {
    let remote = remote(&s)?;
    let by = format!("user `{}`", me.user);
    let cleared = blocking(move || remote.clear(&key, &by)).await?;
    Ok(Json(Cleared {
        attempts: cleared.into_iter().map(Into::into).collect(),
    }))
}
