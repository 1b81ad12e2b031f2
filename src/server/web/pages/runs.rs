//! `GET /runs`: the runs, newest first, 50 a page, filtered by workflow,
//! status and start time: one call of the API's list (its time filter is
//! served by an index of the runs' creation time).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::super::html::{self, badge, esc, table, url};
use super::super::session::{page_response, Session, WebError, WebResult};
use super::run::estimate_of;
use super::{duration, span, when_ms};
use crate::server::api::runs as api_runs;
use crate::server::extract::Query as ApiQuery;
use crate::server::AppState;

/// How many runs a page of the list shows.
pub const RUNS_PAGE: usize = 50;

/// The run statuses the filter offers.
const STATUSES: &[&str] = &[
    "running",
    "paused",
    "succeeded",
    "failed",
    "promise_broken",
    "cancelled",
];

/// Which runs the list shows.
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    /// Only this workflow's (empty: every workflow).
    pub workflow: Option<String>,
    /// Only runs with this status (empty: any).
    pub status: Option<String>,
    /// Older than this run (the previous page's last).
    pub before: Option<String>,
    /// Only runs started at or after this moment (RFC 3339, a date and
    /// time in UTC, or a date: its midnight UTC).
    pub from: Option<String>,
    /// Only runs started before this moment (the same forms).
    pub to: Option<String>,
}

/// A moment of the time filter: RFC 3339, a date and time (UTC, as a
/// browser's `datetime-local` field sends it) or a date (midnight UTC).
pub fn moment(field: &str, text: &str) -> WebResult<i64> {
    let text = text.trim();
    let utc = |dt: jiff::civil::DateTime| {
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .ok()
    };
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
        .or_else(|| text.parse::<jiff::civil::DateTime>().ok().and_then(utc))
        .or_else(|| {
            text.parse::<jiff::civil::Date>()
                .ok()
                .and_then(|d| utc(d.to_datetime(jiff::civil::Time::midnight())))
        })
        .ok_or_else(|| {
            WebError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    "field `{field}`: {text:?} is not a moment (2026-11-30T09:00:00Z, 2026-11-30T09:00 in UTC, or 2026-11-30)"
                ),
            )
        })
}

fn millis_of(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// `GET /runs`: the runs, newest first, filtered by workflow, status and
/// start time.
pub async fn page(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
    Query(q): Query<RunsQuery>,
) -> WebResult<Response> {
    let (workflow, status) = (nonempty(q.workflow), nonempty(q.status));
    let (from_text, to_text) = (nonempty(q.from), nonempty(q.to));
    let from = from_text
        .as_deref()
        .map(|t| moment("from", t))
        .transpose()?;
    let to = to_text.as_deref().map(|t| moment("to", t)).transpose()?;
    // Newest first, one page of the API: the store's index on the
    // creation time serves the time filter.
    let list = api_runs::list(
        State(s.clone()),
        ApiQuery(api_runs::ListQuery {
            workflow: workflow.clone(),
            status: status.clone(),
            before: nonempty(q.before),
            created_after: from.map(|f| f.max(0).to_string()),
            created_before: to.map(|t| t.max(0).to_string()),
            limit: Some(RUNS_PAGE),
        }),
    )
    .await?
    .0;
    let (shown, next) = (list.runs, list.next);
    // Runs not ended yet: their expected end, from their history.
    let now = crate::time::unix_millis() as i64;
    let mut ends = std::collections::BTreeMap::new();
    for r in shown.iter().filter(|r| r.finished_at.is_none()) {
        if let Some(end) = estimate_of(&s, &r.id).await.and_then(|e| e.expected_end_ms) {
            ends.insert(r.id.clone(), end);
        }
    }
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<form method="get" action="/runs" class="filter" id="filter"><label>Workflow <input name="workflow" value="{}"></label> <label>Started after <input name="from" id="from" value="{}" placeholder="2026-11-30T09:00" size="17"></label> <label>before <input name="to" id="to" value="{}" placeholder="UTC, or a date" size="17"></label> <label>Status <select name="status"><option value="">any</option>"#,
        or_empty(workflow.as_deref()),
        or_empty(from_text.as_deref()),
        or_empty(to_text.as_deref())
    );
    for st in STATUSES {
        let sel = if status.as_deref() == Some(*st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, r#"<option{sel}>{st}</option>"#);
    }
    body.push_str(r#"</select></label> <button type="submit">Filter</button></form>"#);
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            let took = match (&r.finished_at, millis_of(&r.created_at)) {
                (Some(_), _) => duration(Some(&r.created_at), r.finished_at.as_deref()),
                (None, Some(a)) => format!("{} so far", span(now - a)),
                (None, None) => "–".into(),
            };
            let end = match (&r.finished_at, ends.get(&r.id)) {
                (Some(f), _) => esc(f),
                (None, Some(e)) => {
                    format!(r#"<span class="expected">≈ {}</span>"#, esc(&when_ms(*e)))
                }
                (None, None) => "–".into(),
            };
            vec![
                format!(r#"<a href="/runs/{}">{}</a>"#, url(&r.id), esc(&r.id)),
                format!(
                    r#"<a href="/workflows/{}">{}</a>"#,
                    url(&r.workflow),
                    esc(&r.workflow)
                ),
                badge(&r.status),
                esc(&r.created_at),
                took,
                end,
                r.nodes.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str(r#"<p class="empty" id="no-runs">No runs match.</p>"#);
    } else {
        body.push_str(&table(
            "runs",
            &[
                "run",
                "workflow",
                "status",
                "started",
                "took",
                "ended (≈ expected)",
                "nodes",
            ],
            &rows,
        ));
    }
    if let Some(next) = next {
        let _ = write!(
            body,
            r#"<p><a id="older" href="/runs?workflow={}&amp;status={}&amp;from={}&amp;to={}&amp;before={}">Older runs →</a></p>"#,
            url(workflow.as_deref().unwrap_or("")),
            url(status.as_deref().unwrap_or("")),
            url(from_text.as_deref().unwrap_or("")),
            url(to_text.as_deref().unwrap_or("")),
            url(&next)
        );
    }
    Ok(page_response(html::page("Runs", Some(&me.viewer()), &body)))
}

fn or_empty(s: Option<&str>) -> String {
    s.map(esc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_filter_reads_moments() {
        let at = |t: &str| moment("from", t).ok();
        let nine = jiff::Timestamp::from_second(1_795_942_800).unwrap(); // 2026-11-29T09:00:00Z
        assert_eq!(nine.to_string(), "2026-11-29T09:00:00Z");
        assert_eq!(at("2026-11-29T09:00:00Z"), Some(nine.as_millisecond()));
        assert_eq!(at("2026-11-29T10:00:00+01:00"), Some(nine.as_millisecond()));
        assert_eq!(at("2026-11-29T09:00"), Some(nine.as_millisecond()));
        assert_eq!(
            at("2026-11-29"),
            Some(nine.as_millisecond() - 9 * 3_600_000)
        );
        let e = moment("to", "yesterday").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("field `to`"), "{}", e.message);
        assert_eq!(span(61_000), "1m 01s");
        assert_eq!(span(3_720_000), "1h 02m");
    }
}
