//! The pages: runs ([`runs`]), a run and its nodes ([`run`]: its live
//! picture, the slider through its history, a node's attempts and a log
//! that follows), runners and queues ([`runners`]); here, workflows
//! (schedule, history, diffs, the editor) and events and timers. Reads go
//! through the API's handlers or the same store calls, so a page shows
//! what the API answers.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

pub mod run;
pub mod runners;
pub mod runs;

use super::diff;
use super::html::{self, badge, esc, or_dash, table, url};
use super::session::{self, page_response, redirect, Session, WebError, WebResult};
use crate::access::Permission;
use crate::server::api::{self, events as api_events, runs as api_runs, system, workflows};
use crate::server::extract::{Path as ApiPath, Query as ApiQuery};
use crate::server::AppState;

/// Milliseconds since the epoch as RFC 3339 (seconds).
fn when_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The time between two RFC 3339 moments, as people read it.
fn duration(from: Option<&str>, to: Option<&str>) -> String {
    let parse = |t: Option<&str>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match (parse(from), parse(to)) {
        (Some(a), Some(b)) => {
            let ms = b.as_millisecond() - a.as_millisecond();
            if ms < 60_000 {
                format!("{:.1} s", ms as f64 / 1000.0)
            } else {
                format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
            }
        }
        _ => "–".into(),
    }
}

/// How long a span of milliseconds is, as people read it.
fn span(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Timers of a workflow, as people read them.
fn schedule_of(timers: &[crate::scheduler::timers::TimerView], name: &str) -> String {
    let live: Vec<String> = timers
        .iter()
        .filter(|t| t.workflow == name && (t.status == "active" || t.status == "waiting"))
        .map(|t| {
            format!(
                "{} (next {})",
                esc(&t.when),
                or_dash(t.next_fire.as_deref())
            )
        })
        .collect();
    if live.is_empty() {
        "–".into()
    } else {
        live.join("<br>")
    }
}

/// `GET /workflows`: published workflows with their schedule and last
/// commit, and the pipelines folder's.
pub async fn workflows(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
) -> WebResult<Response> {
    let list = workflows::list(State(s.clone())).await?.0;
    let timers = api_events::list_timers(State(s.clone())).await?.0;
    let pipelines = system::pipelines(State(s.clone())).await?.0;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                format!(
                    r#"<a href="/workflows/{}">{}</a>"#,
                    url(&w.name),
                    esc(&w.name)
                ),
                esc(&w.main_file),
                schedule_of(&timers, &w.name),
                format!(
                    "<code>{}</code> {}",
                    esc(w.last.commit.get(..12).unwrap_or(&w.last.commit)),
                    esc(&w.last.message)
                ),
                esc(&w.last.time),
            ]
        })
        .collect();
    let mut body = String::new();
    if me.may(Permission::Operate) {
        body.push_str(r#"<form method="get" action="/new" class="filter" id="new"><label>New workflow <input name="name" pattern="[A-Za-z0-9][A-Za-z0-9_.\-]*" required></label> <button type="submit">Edit</button></form>"#);
    }
    if rows.is_empty() {
        body.push_str(r#"<p class="empty">No workflow is published.</p>"#);
    } else {
        body.push_str(&table(
            "workflows",
            &["workflow", "main file", "schedule", "last commit", "when"],
            &rows,
        ));
    }
    body.push_str(&pipelines_table(&pipelines));
    if me.may(Permission::Operate) {
        body.push_str(&backfill_form(&pipelines, &me.csrf));
    }
    Ok(page_response(html::page(
        "Workflows",
        Some(&me.viewer()),
        &body,
    )))
}

/// The backfill form: a scheduled pipeline of the folder, a range and
/// which fire times to run again.
fn backfill_form(pipelines: &[system::PipelineItem], csrf: &str) -> String {
    let mut names: Vec<&str> = pipelines
        .iter()
        .filter(|p| p.error.is_none() && p.schedule.is_some())
        .filter_map(|p| p.pipeline.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return String::new();
    }
    let mut options = String::new();
    for n in names {
        let _ = write!(options, "<option>{}</option>", esc(n));
    }
    format!(
        r#"<h2>Backfill</h2><form method="post" action="/pipelines/backfill" class="action backfill" id="backfill">{}<label>Pipeline <select name="pipeline" id="backfill-pipeline">{options}</select></label> <label>From <input name="from" id="backfill-from" required placeholder="2026-11-01" size="17"></label> <label>to <input name="to" id="backfill-to" required placeholder="2026-11-30T23:59" size="17"></label> <label>Run <select name="reprocess" id="backfill-reprocess"><option value="missing">missing fire times</option><option value="failed">missing and failed</option><option value="all">every fire time again</option></select></label> <button type="submit" id="backfill-start">Backfill</button></form><p class="note">Moments in UTC; the fire times run one at a time, each to its end, and show in the pipeline's runs.</p>"#,
        html::csrf_field(csrf)
    )
}

fn pipelines_table(pipelines: &[system::PipelineItem]) -> String {
    if pipelines.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = pipelines
        .iter()
        .map(|p| {
            vec![
                esc(&p.file),
                or_dash(p.pipeline.as_deref()),
                format!(
                    "{}{}",
                    or_dash(p.schedule.as_deref()),
                    p.timezone
                        .as_deref()
                        .map(|z| format!(" ({})", esc(z)))
                        .unwrap_or_default()
                ),
                or_dash(p.next_fire.as_deref()),
                esc(&p.events.join(", ")),
                p.error
                    .as_deref()
                    .map(|e| format!(r#"<span class="error">{}</span>"#, esc(e)))
                    .unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    format!(
        "<h2>Pipelines folder</h2>{}",
        table(
            "pipelines",
            &[
                "file",
                "pipeline",
                "schedule",
                "next fire",
                "events",
                "import error"
            ],
            &rows
        )
    )
}

/// The name of a new workflow.
#[derive(Debug, Deserialize)]
pub struct NewQuery {
    /// Its name.
    pub name: String,
}

/// `GET /new?name=N`: the editor of a workflow of that name.
pub async fn new_workflow(Query(q): Query<NewQuery>) -> WebResult<Response> {
    crate::repo::validate_name(&q.name).map_err(|e| {
        WebError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("workflow name {:?}: {e}", q.name),
        )
    })?;
    Ok(redirect(&format!("/workflows/{}/edit", url(&q.name))))
}

/// Which version of a workflow.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    /// A commit (default: the newest).
    pub at: Option<String>,
}

/// `GET /workflows/{name}`: its files (at a commit), schedule, last runs
/// and history with diffs.
pub async fn workflow(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> WebResult<Response> {
    let history = workflows::history(
        State(s.clone()),
        ApiPath(name.clone()),
        ApiQuery(workflows::HistoryQuery {
            limit: Some(100),
            before: None,
        }),
    )
    .await?
    .0;
    let version = workflows::get(
        State(s.clone()),
        ApiPath(name.clone()),
        ApiQuery(workflows::AtQuery { at: q.at.clone() }),
    )
    .await;
    let timers = api_events::list_timers(State(s.clone())).await?.0;
    let pipelines = system::pipelines(State(s.clone())).await?.0;
    let runs = api_runs::list(
        State(s.clone()),
        ApiQuery(api_runs::ListQuery {
            workflow: Some(name.clone()),
            status: None,
            before: None,
            created_after: None,
            created_before: None,
            limit: Some(10),
        }),
    )
    .await?
    .0;
    let base = format!("/workflows/{}", url(&name));
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<dl class="summary"><dt>schedule</dt><dd id="schedule">{}</dd>"#,
        schedule_of(&timers, &name)
    );
    for p in pipelines
        .iter()
        .filter(|p| p.pipeline.as_deref() == Some(&name))
    {
        let _ = write!(
            body,
            "<dt>pipeline schedule</dt><dd>{} (next {})</dd>",
            or_dash(p.schedule.as_deref()),
            or_dash(p.next_fire.as_deref())
        );
    }
    // The expected duration: the median of its last successful runs.
    let mut took: Vec<i64> = runs
        .runs
        .iter()
        .filter(|r| r.status == "succeeded")
        .filter_map(|r| {
            let a = r.created_at.parse::<jiff::Timestamp>().ok()?;
            let b = r.finished_at.as_deref()?.parse::<jiff::Timestamp>().ok()?;
            Some(b.as_millisecond() - a.as_millisecond())
        })
        .collect();
    took.sort_unstable();
    if let Some(m) = took.get(took.len() / 2) {
        let _ = write!(
            body,
            r#"<dt>expected duration</dt><dd id="expected-duration">{:.1} s (median of {} runs)</dd>"#,
            *m as f64 / 1000.0,
            took.len()
        );
    }
    body.push_str("</dl>");
    if me.may(Permission::Operate) {
        let _ = write!(
            body,
            r#"<div class="actions"><a class="button" id="edit" href="{base}/edit">Edit</a><form method="post" action="{base}/run" class="action run">{}<label>Params <input name="params" value="{{}}" size="24" aria-label="params (a JSON object)"></label><button type="submit" id="run">Run</button></form></div>"#,
            html::csrf_field(&me.csrf)
        );
    } else {
        let _ = write!(
            body,
            r#"<p><a href="{base}/edit">View in the editor</a></p>"#
        );
    }
    body.push_str("<h2>Last runs</h2>");
    let rows: Vec<Vec<String>> = runs
        .runs
        .iter()
        .map(|r| {
            vec![
                format!(r#"<a href="/runs/{}">{}</a>"#, url(&r.id), esc(&r.id)),
                badge(&r.status),
                esc(&r.created_at),
                duration(Some(&r.created_at), r.finished_at.as_deref()),
            ]
        })
        .collect();
    body.push_str(&table(
        "workflow-runs",
        &["run", "status", "started", "took"],
        &rows,
    ));
    match version {
        Ok(v) => {
            let _ = write!(
                body,
                r#"<h2>Files at <code id="commit">{}</code></h2>"#,
                esc(v.commit.get(..12).unwrap_or(&v.commit))
            );
            for f in &v.0.files {
                let _ = write!(
                    body,
                    r#"<h3>{}</h3><pre class="file">{}</pre>"#,
                    esc(&f.path),
                    esc(&f.content)
                );
            }
        }
        Err(e) => {
            let _ = write!(body, r#"<p class="error">{}</p>"#, esc(&e.error.message));
        }
    }
    body.push_str("<h2>History</h2>");
    let versions = &history.versions;
    let rows: Vec<Vec<String>> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let diff = match versions.get(i + 1) {
                Some(older) => format!(
                    r#"<a href="{base}/diff?from={}&amp;to={}">diff</a>"#,
                    url(&older.commit),
                    url(&v.commit)
                ),
                None => "first".into(),
            };
            vec![
                format!(
                    r#"<a href="{base}?at={}"><code>{}</code></a>"#,
                    url(&v.commit),
                    esc(v.commit.get(..12).unwrap_or(&v.commit))
                ),
                esc(&v.author),
                esc(&v.time),
                format!(
                    "{}{}",
                    esc(&v.message),
                    if v.deleted { " (deleted)" } else { "" }
                ),
                diff,
            ]
        })
        .collect();
    body.push_str(&table(
        "history",
        &["commit", "author", "when", "message", ""],
        &rows,
    ));
    Ok(page_response(html::page(
        &format!("Workflow {name}"),
        Some(&me.viewer()),
        &body,
    )))
}

/// Two versions to compare.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    /// The older commit.
    pub from: String,
    /// The newer commit.
    pub to: String,
}

/// The files of a workflow at a commit (none when it was deleted there).
async fn files_at(
    s: &Arc<AppState>,
    name: &str,
    commit: &str,
) -> WebResult<std::collections::BTreeMap<String, String>> {
    let v = workflows::get(
        State(s.clone()),
        ApiPath(name.to_string()),
        ApiQuery(workflows::AtQuery {
            at: Some(commit.to_string()),
        }),
    )
    .await;
    match v {
        Ok(v) => Ok(v.0.files.into_iter().map(|f| (f.path, f.content)).collect()),
        Err(e) if e.code() == crate::server::error::Code::NotFound => Ok(Default::default()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /workflows/{name}/diff?from=A&to=B`: what changed, file by file,
/// line by line.
pub async fn diff(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> WebResult<Response> {
    let old = files_at(&s, &name, &q.from).await?;
    let new = files_at(&s, &name, &q.to).await?;
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut body = format!(
        r#"<p><a href="/workflows/{}">← workflow {}</a>: <code>{}</code> → <code>{}</code></p>"#,
        url(&name),
        esc(&name),
        esc(q.from.get(..12).unwrap_or(&q.from)),
        esc(q.to.get(..12).unwrap_or(&q.to))
    );
    for p in paths {
        let a = old.get(p).map(String::as_str).unwrap_or("");
        let b = new.get(p).map(String::as_str).unwrap_or("");
        let _ = write!(body, r#"<h2>{}</h2><pre class="diff">"#, esc(p));
        for l in diff::lines(a, b) {
            let (class, mark, text) = match l {
                diff::Line::Same(t) => ("same", ' ', t),
                diff::Line::Removed(t) => ("del", '-', t),
                diff::Line::Added(t) => ("add", '+', t),
            };
            let _ = writeln!(body, r#"<span class="{class}">{mark} {}</span>"#, esc(text));
        }
        body.push_str("</pre>");
    }
    Ok(page_response(html::page(
        &format!("Diff of {name}"),
        Some(&me.viewer()),
        &body,
    )))
}

/// The editor's page: one text area per file, the commit message, and
/// (for who may publish) the button; `error` is the last refusal.
pub fn editor_page(
    me: &Session,
    name: &str,
    files: &[(String, String)],
    message: &str,
    error: Option<&str>,
) -> String {
    let operate = me.may(Permission::Operate);
    let mut body = String::new();
    if let Some(e) = error {
        let _ = write!(body, r#"<p class="error" id="error">{}</p>"#, esc(e));
    }
    // Who may publish gets the check as they type (`static/web.js`).
    let check = if operate {
        format!(r#" data-check="/workflows/{}/check""#, url(name))
    } else {
        String::new()
    };
    let _ = write!(
        body,
        r#"<form method="post" action="/workflows/{}/edit" class="editor" id="editor"{check}>{}"#,
        url(name),
        html::csrf_field(&me.csrf)
    );
    let ro = if operate { "" } else { " readonly" };
    for (i, (path, content)) in files.iter().enumerate() {
        let _ = write!(
            body,
            r#"<label>File <input name="path" value="{}" id="path-{i}"{ro}></label><textarea name="content" id="content-{i}" rows="{}" spellcheck="false"{ro}>{}</textarea><div class="check" id="check-{i}" aria-live="polite"></div>"#,
            esc(path),
            content.lines().count().clamp(8, 40) + 1,
            esc(content)
        );
    }
    if operate {
        let _ = write!(
            body,
            r#"<label>Message <input name="message" id="message" value="{}" required size="60"></label> <button type="submit" id="publish">Validate and publish</button>"#,
            esc(message)
        );
    } else {
        body.push_str(r#"<p class="note">Your role may read this workflow, not publish it.</p>"#);
    }
    body.push_str("</form>");
    body
}

/// `GET /workflows/{name}/edit`: the editor, with the newest version (or
/// a first file for a new workflow).
pub async fn editor(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Path(name): Path<String>,
) -> WebResult<Response> {
    crate::repo::validate_name(&name).map_err(|e| {
        WebError::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("workflow name {name:?}: {e}"),
        )
    })?;
    let version = workflows::get(
        State(s.clone()),
        ApiPath(name.clone()),
        ApiQuery(workflows::AtQuery { at: None }),
    )
    .await;
    let files: Vec<(String, String)> = match version {
        Ok(v) => v.0.files.into_iter().map(|f| (f.path, f.content)).collect(),
        Err(e) if e.code() == crate::server::error::Code::NotFound => vec![(
            "workflow.yaml".into(),
            format!("name: {name}\ntasks:\n  - id: hello\n    command: echo hello\n"),
        )],
        Err(e) => return Err(e.into()),
    };
    Ok(page_response(html::page(
        &format!("Edit {name}"),
        Some(&me.viewer()),
        &editor_page(&me, &name, &files, "", None),
    )))
}

/// `GET /events`: pushed events, timers and the pipelines folder (with
/// its import errors).
pub async fn events(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
) -> WebResult<Response> {
    // The newest 100: the store lists oldest first from a number.
    let store = s.store.clone();
    let pushed = api::blocking(move || {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = store.events_after(after, 0, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            all.extend(page);
            if all.len() > 100 {
                all.drain(..all.len() - 100);
            }
        }
        Ok(all)
    })
    .await?;
    let timers = api_events::list_timers(State(s.clone())).await?.0;
    let pipelines = system::pipelines(State(s.clone())).await?.0;
    let mut body = String::new();
    if me.may(Permission::Operate) {
        let _ = write!(
            body,
            r#"<form method="post" action="/events" class="action push" id="push">{}<label>Key <input name="key" id="event-key" required></label> <label>Payload (JSON) <input name="payload" value="null" size="30"></label> <button type="submit">Push event</button></form>"#,
            html::csrf_field(&me.csrf)
        );
    }
    body.push_str("<h2>Events</h2>");
    let rows: Vec<Vec<String>> = pushed
        .iter()
        .rev()
        .map(|p| {
            vec![
                p.id.to_string(),
                esc(&p.key),
                format!("<code>{}</code>", esc(&p.payload.to_string())),
                esc(&p.pushed_at),
            ]
        })
        .collect();
    body.push_str(&table("events", &["#", "key", "payload", "pushed"], &rows));
    body.push_str("<h2>Timers</h2>");
    let rows: Vec<Vec<String>> = timers
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                format!(
                    r#"<a href="/workflows/{}">{}</a>"#,
                    url(&t.workflow),
                    esc(&t.workflow)
                ),
                esc(&t.when),
                badge(&t.status),
                or_dash(t.next_fire.as_deref()),
                when_ms(t.created_ms),
            ]
        })
        .collect();
    body.push_str(&table(
        "timers",
        &["#", "workflow", "when", "status", "next fire", "started"],
        &rows,
    ));
    body.push_str(&pipelines_table(&pipelines));
    Ok(page_response(html::page(
        "Events & timers",
        Some(&me.viewer()),
        &body,
    )))
}

/// Serves [`session::Form`] pairs `path`/`content` as files (the
/// editor's form, in order).
pub fn form_files(form: &session::Form) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut path: Option<String> = None;
    for (k, v) in &form.0 {
        match k.as_str() {
            "path" => path = Some(v.clone()),
            "content" => {
                // Browsers send text areas with CRLF line ends.
                out.push((path.take().unwrap_or_default(), v.replace("\r\n", "\n")));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(
            duration(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:01.5Z")),
            "1.5 s"
        );
        assert_eq!(
            duration(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:02:05Z")),
            "2m 05s"
        );
        assert_eq!(duration(Some("2026-01-01T00:00:00Z"), None), "–");
    }

    #[test]
    fn editor_forms_pair_paths_and_contents() {
        let f = session::Form::parse(
            b"csrf=x&path=workflow.yaml&content=a%0D%0Ab&path=s.sh&content=echo",
        );
        assert_eq!(
            form_files(&f),
            vec![
                ("workflow.yaml".to_string(), "a\nb".to_string()),
                ("s.sh".to_string(), "echo".to_string())
            ]
        );
    }
}
