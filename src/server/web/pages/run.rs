//! A run's pages: `GET /runs/{run}` (its summary, its live picture with
//! the slider through its history, its nodes and the buttons to steer
//! it), the picture at any event, the nodes table the page redraws, the
//! live stream of its commits, and a node's page with its log.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::super::html::{self, badge, esc, or_dash, table, url};
use super::super::session::{page_response, Session, WebError, WebResult};
use super::{duration, when_ms};
use crate::access::Permission;
use crate::history::RunExport;
use crate::server::api;
use crate::server::AppState;

/// A run's export, by id, unique prefix or `latest`.
async fn export_of(s: &Arc<AppState>, run: String) -> WebResult<RunExport> {
    let store = s.store.clone();
    Ok(api::blocking(move || {
        let id = store.resolve_run(&run)?;
        store.export(&id)
    })
    .await?)
}

/// The picture of a run after event `at` (default: now), as an `<svg>`
/// element to put in a page (the SVG renderer escapes every name).
fn svg_of(s: &AppState, run: &str, at: Option<u64>) -> crate::Result<String> {
    let store = s.store.as_ref();
    let id = store.resolve_run(run)?;
    if let Some(at) = at {
        let last = store.export(&id)?.event;
        if at == 0 || at > last {
            return Err(crate::Error::Refused {
                what: format!("the picture at event {at}"),
                message: format!("run {id} has events 1 to {last}"),
            });
        }
    }
    let state = store.replay(&id, at)?;
    let o = crate::picture::outlook::outlook(&state, crate::picture::outlook::Options::default());
    let svg = crate::picture::render::svg(&o);
    Ok(match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    })
}

/// Which moment of a run.
#[derive(Debug, Deserialize)]
pub struct AtQuery {
    /// After this event (default: now).
    pub at: Option<u64>,
}

/// `GET /runs/{run}/picture.svg?at=N`: the picture after event `N`.
pub async fn picture(
    State(s): State<Arc<AppState>>,
    Path(run): Path<String>,
    Query(q): Query<AtQuery>,
) -> WebResult<Response> {
    let st = s.clone();
    let svg = api::blocking(move || svg_of(&st, &run, q.at)).await?;
    Ok(([(CONTENT_TYPE, "image/svg+xml; charset=utf-8")], svg).into_response())
}

fn run_ended(e: &RunExport) -> bool {
    e.status.is_terminal()
}

/// A run's estimate (its expected end, each pending node's expected
/// start) while it has not ended; `None` without history to go by.
pub(super) async fn estimate_of(
    s: &Arc<AppState>,
    run: &str,
) -> Option<crate::estimate::RunEstimate> {
    let (store, id) = (s.store.clone(), run.to_string());
    api::blocking(move || {
        let now = crate::time::unix_millis() as i64;
        Ok(crate::estimate::for_run(store.as_ref(), &id, now).ok())
    })
    .await
    .ok()
    .flatten()
}

/// The nodes of a run as a table, with the buttons the session may press
/// and, for nodes that have not started, their expected start.
fn nodes_table(e: &RunExport, me: &Session, est: Option<&crate::estimate::RunEstimate>) -> String {
    let operate = me.may(Permission::Operate);
    let ended = run_ended(e);
    let rows: Vec<Vec<String>> = e
        .nodes
        .iter()
        .map(|n| {
            let base = format!("/runs/{}/nodes/{}", url(&e.run), url(&n.id));
            let kind = n.task.exec.kind();
            let mut actions = String::new();
            if operate && kind == "input" && !n.state.is_terminal() && !ended {
                let _ = write!(
                    actions,
                    r#"<form method="post" action="{base}/input" class="action input">{}<input name="value" value="true" aria-label="value (JSON)" size="8"><button type="submit" class="input-send">Send input</button></form>{}<form method="post" action="{base}/input" class="action reject">{}<input type="hidden" name="value" value="false"><button type="submit" class="reject danger">✖ Reject</button></form>"#,
                    html::csrf_field(&me.csrf),
                    html::button(&format!("{base}/input"), "✔ Approve", &me.csrf, "approve"),
                    html::csrf_field(&me.csrf)
                );
            }
            if operate && n.state.is_terminal() {
                actions.push_str(&html::button(
                    &format!("{base}/restart"),
                    "Restart",
                    &me.csrf,
                    "restart",
                ));
            }
            vec![
                format!(r#"<a href="{base}">{}</a>"#, esc(&n.id)),
                esc(&n.task.name),
                esc(kind),
                badge(n.state.as_str()),
                n.attempts.len().to_string(),
                or_dash(n.started_at.as_deref()),
                duration(n.started_at.as_deref(), n.finished_at.as_deref()),
                expected_start(n, est),
                actions,
            ]
        })
        .collect();
    table(
        "nodes-table",
        &[
            "node",
            "task",
            "kind",
            "state",
            "attempts",
            "started",
            "took",
            "expected start",
            "",
        ],
        &rows,
    )
}

/// A node's expected start, while it has not started.
fn expected_start(
    n: &crate::history::NodeExport,
    est: Option<&crate::estimate::RunEstimate>,
) -> String {
    if n.started_at.is_some() || n.state.is_terminal() {
        return "–".into();
    }
    est.and_then(|e| e.nodes.iter().find(|x| x.node == n.id))
        .and_then(|x| x.expected_start_ms)
        .map(|ms| {
            format!(
                r#"<span class="expected" data-ms="{ms}">≈ {}</span>"#,
                esc(&when_ms(ms))
            )
        })
        .unwrap_or_else(|| "–".into())
}

/// `GET /runs/{run}/nodes.html`: the nodes table alone (the run page
/// redraws it as events arrive).
pub async fn nodes_fragment(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(run): Path<String>,
) -> WebResult<Response> {
    let e = export_of(&s, run).await?;
    let est = if run_ended(&e) {
        None
    } else {
        estimate_of(&s, &e.run).await
    };
    Ok(axum::response::Html(nodes_table(&e, &me, est.as_ref())).into_response())
}

/// The run's summary lines (status, times, source).
fn summary(e: &RunExport, expected_end: Option<String>) -> String {
    let mut out = String::from(r#"<dl class="summary" id="summary">"#);
    let _ = write!(
        out,
        r#"<dt>workflow</dt><dd><a href="/workflows/{}">{}</a></dd><dt>status</dt><dd id="status" data-status="{}">{}</dd>"#,
        url(&e.workflow),
        esc(&e.workflow),
        esc(e.status.as_str()),
        badge(e.status.as_str())
    );
    if let Some(r) = &e.reason {
        let _ = write!(out, r#"<dt>reason</dt><dd id="reason">{}</dd>"#, esc(r));
    }
    let _ = write!(
        out,
        "<dt>started</dt><dd>{}</dd><dt>ended</dt><dd>{}</dd><dt>took</dt><dd>{}</dd>",
        or_dash(e.created_at.as_deref()),
        or_dash(e.finished_at.as_deref()),
        duration(e.created_at.as_deref(), e.finished_at.as_deref())
    );
    if let Some(end) = expected_end {
        let _ = write!(
            out,
            r#"<dt>expected end</dt><dd id="expected">{}</dd>"#,
            esc(&end)
        );
    }
    if let Some(src) = &e.source {
        let _ = write!(
            out,
            r#"<dt>commit</dt><dd><a href="/workflows/{}?at={}"><code>{}</code></a></dd>"#,
            url(&e.workflow),
            url(&src.commit),
            esc(src.commit.get(..12).unwrap_or(&src.commit))
        );
    }
    out.push_str("</dl>");
    out
}

/// `GET /runs/{run}`: the run, its live picture, the slider through its
/// history, its nodes and the buttons to steer it.
pub async fn page(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(run): Path<String>,
) -> WebResult<Response> {
    let e = export_of(&s, run).await?;
    let (st, id) = (s.clone(), e.run.clone());
    let svg = api::blocking(move || svg_of(&st, &id, None)).await?;
    let est = if run_ended(&e) {
        None
    } else {
        estimate_of(&s, &e.run).await
    };
    let expected_end = est
        .as_ref()
        .and_then(|est| est.expected_end_ms)
        .map(when_ms);
    let base = format!("/runs/{}", url(&e.run));
    let mut body = summary(&e, expected_end);
    if me.may(Permission::Operate) && !run_ended(&e) {
        body.push_str(r#"<div class="actions" id="actions">"#);
        if e.status == crate::model::RunStatus::Paused {
            body.push_str(&html::button(
                &format!("{base}/unpause"),
                "Unpause",
                &me.csrf,
                "unpause",
            ));
        } else {
            body.push_str(&html::button(
                &format!("{base}/pause"),
                "Pause",
                &me.csrf,
                "pause",
            ));
        }
        body.push_str(&html::button(
            &format!("{base}/cancel"),
            "Cancel",
            &me.csrf,
            "cancel danger",
        ));
        body.push_str("</div>");
    }
    if !e.violations.is_empty() {
        body.push_str(r#"<h2>Broken promises</h2><ul class="violations" id="violations">"#);
        for v in &e.violations {
            let _ = write!(
                body,
                "<li><code>{}</code>: {}{}</li>",
                esc(&v.promise_text),
                esc(&v.message),
                v.node
                    .as_deref()
                    .map(|n| format!(" (node <code>{}</code>)", esc(n)))
                    .unwrap_or_default()
            );
        }
        body.push_str("</ul>");
    }
    let last = e.event.max(1);
    let _ = write!(
        body,
        r#"<h2>Picture</h2><div class="slider"><input type="range" id="at" min="1" max="{last}" value="{last}" aria-label="event"> <span id="at-label">event {last} of {last}</span> <button type="button" id="now">now</button> <span class="zoom" title="Ctrl and the wheel zoom at the pointer; a drag pans"><button type="button" id="zoom-in" aria-label="zoom in">+</button><button type="button" id="zoom-out" aria-label="zoom out">−</button><button type="button" id="zoom-fit">whole</button></span></div>
<div class="picture" id="picture">{svg}</div>
<h2>Nodes</h2><div id="nodes">{}</div>
<div id="live" hidden data-run="{}" data-event="{}" data-ended="{}"></div>"#,
        nodes_table(&e, &me, est.as_ref()),
        esc(&e.run),
        e.event,
        run_ended(&e)
    );
    Ok(page_response(html::page(
        &format!("Run {}", e.run),
        Some(&me.viewer()),
        &body,
    )))
}

/// What the live stream says after each commit.
#[derive(Debug, Serialize)]
struct Tick {
    event: u64,
    status: String,
    ended: bool,
}

/// The items of a channel, as a stream (for the live response).
struct Channel<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for Channel<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// `GET /runs/{run}/live`: server-sent events, one `commit` (its event
/// number and the run's status) each time the run's history grows, until
/// it ends. The page redraws its picture and nodes on each.
pub async fn live(State(s): State<Arc<AppState>>, Path(run): Path<String>) -> WebResult<Response> {
    let e = export_of(&s, run).await?;
    let id = e.run;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(16);
    tokio::spawn(async move {
        let mut commits = s.hub.subscribe();
        let mut seen = None;
        loop {
            // Where the run stands: its status and last event, without
            // its history or its nodes.
            let store = s.store.clone();
            let rid = id.clone();
            let from = seen.unwrap_or(0);
            let Ok((event, status)) =
                api::blocking(move || store.run_tail(&rid, from, 0).map(|t| (t.last, t.status)))
                    .await
            else {
                return;
            };
            if seen != Some(event) || status.is_terminal() {
                seen = Some(event);
                let tick = Tick {
                    event,
                    status: status.to_string(),
                    ended: status.is_terminal(),
                };
                let data = serde_json::to_string(&tick).unwrap_or_default();
                let ev = SseEvent::default().event("commit").data(data);
                if tx.send(Ok(ev)).await.is_err() || status.is_terminal() {
                    return;
                }
            }
            // The next commit of this run (or a look at the store each
            // second, for runs another process drives).
            tokio::select! {
                () = crate::server::hub::next_of(&mut commits, &id, Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(Channel(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /runs/{run}/nodes/{node}`: a node with its task, inputs, output,
/// attempts and a log that follows while it runs.
pub async fn node(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path((run, node)): Path<(String, String)>,
) -> WebResult<Response> {
    let e = export_of(&s, run).await?;
    let n = e.node(&node).cloned().ok_or_else(|| {
        WebError::from(crate::Error::UnknownNode {
            run: e.run.clone(),
            node: node.clone(),
        })
    })?;
    let (store, rid, nid) = (s.store.clone(), e.run.clone(), n.id.clone());
    let lines = api::blocking(move || store.logs(&rid, &nid, None)).await?;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let mut body = format!(
        r#"<p><a href="/runs/{}">← run {}</a></p><dl class="summary"><dt>task</dt><dd>{}</dd><dt>kind</dt><dd>{}</dd><dt>state</dt><dd id="node-state">{}</dd><dt>started</dt><dd>{}</dd><dt>took</dt><dd>{}</dd></dl>"#,
        url(&e.run),
        esc(&e.run),
        esc(&n.task.name),
        esc(n.task.exec.kind()),
        badge(n.state.as_str()),
        or_dash(n.started_at.as_deref()),
        duration(n.started_at.as_deref(), n.finished_at.as_deref())
    );
    let _ = write!(
        body,
        "<h2>Inputs</h2><pre>{}</pre><h2>Output</h2><pre id=\"output\">{}</pre>",
        esc(&pretty(&n.inputs)),
        n.output
            .as_ref()
            .map(|o| esc(&pretty(o)))
            .unwrap_or_else(|| "–".into())
    );
    let rows: Vec<Vec<String>> = n
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                esc(&a.started_at),
                duration(Some(&a.started_at), a.finished_at.as_deref()),
                a.outcome
                    .as_ref()
                    .map(|o| esc(&format!("{o:?}").to_lowercase()))
                    .unwrap_or_else(|| "running".into()),
                a.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "–".into()),
                or_dash(a.error.as_deref()),
            ]
        })
        .collect();
    body.push_str("<h2>Attempts</h2>");
    body.push_str(&table(
        "attempts",
        &["attempt", "started", "took", "outcome", "exit", "error"],
        &rows,
    ));
    let mut log = String::new();
    for l in &lines {
        log.push_str(&log_line(l));
    }
    let done = n.state.is_terminal() || run_ended(&e);
    let _ = write!(
        body,
        r#"<h2>Log</h2><pre class="log" id="log" data-run="{}" data-node="{}" data-after="{}" data-done="{}">{log}</pre>"#,
        esc(&e.run),
        esc(&n.id),
        lines.len(),
        done
    );
    Ok(page_response(html::page(
        &format!("Node {}", n.id),
        Some(&me.viewer()),
        &body,
    )))
}

fn log_line(l: &crate::store::LogLine) -> String {
    format!(
        r#"<span class="l-{}">{}</span>{}"#,
        esc(&l.stream),
        esc(&l.text),
        "\n"
    )
}

/// Which log lines.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Skip this many lines (those the page shows already).
    pub after: Option<usize>,
}

/// New lines of a node's log.
#[derive(Debug, Serialize)]
struct LogChunk {
    lines: Vec<LogText>,
    done: bool,
}

#[derive(Debug, Serialize)]
struct LogText {
    stream: String,
    text: String,
}

/// `GET /runs/{run}/nodes/{node}/log?after=N`: the lines after the
/// first `N`, as JSON, and whether the node is done (the page polls it
/// while the node runs).
pub async fn log(
    State(s): State<Arc<AppState>>,
    Path((run, node)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> WebResult<Json<serde_json::Value>> {
    let store = s.store.clone();
    let chunk = api::blocking(move || {
        let id = store.resolve_run(&run)?;
        let e = store.export(&id)?;
        let n = e.node(&node).ok_or_else(|| crate::Error::UnknownNode {
            run: id.clone(),
            node: node.clone(),
        })?;
        let done = n.state.is_terminal() || e.status.is_terminal();
        let lines = store.logs(&id, &node, None)?;
        Ok(LogChunk {
            lines: lines
                .into_iter()
                .skip(q.after.unwrap_or(0))
                .map(|l| LogText {
                    stream: l.stream,
                    text: l.text,
                })
                .collect(),
            done,
        })
    })
    .await?;
    Ok(Json(serde_json::to_value(chunk).unwrap_or_default()))
}
