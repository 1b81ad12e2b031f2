//! `GET /runners`: the runners attached to the server and the queues of
//! attempts waiting for them (SERVICE.md §6), with the operators' two
//! actions, drain a runner and clear a queue.
//!
//! The rows are the API's ([`api_runners::RunnerView`],
//! [`api_runners::QueueView`]: `GET /api/v1/runners` and
//! `GET /api/v1/queues`), read in one blocking call with the attempts the
//! runners hold and the store's clock, so the "last heartbeat" of a runner
//! and the waits of the queues are measured on the clock that stamped
//! them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::super::html::{self, badge, esc, table, url};
use super::super::session::{page_response, Session, WebResult};
use super::span;
use crate::access::Permission;
use crate::server::api::{self, runners as api_runners, system};
use crate::server::AppState;
use crate::store::queue::Claim;

/// At most this many held attempts are listed (the runners' counts stay
/// exact).
pub const MAX_CLAIMS_SHOWN: usize = 1000;

/// At most this many held attempts are listed in one runner's row.
const CLAIMS_PER_RUNNER: usize = 20;

/// Everything the page shows, read at one moment.
struct Snapshot {
    runners: Vec<api_runners::RunnerView>,
    queues: Vec<api_runners::QueueView>,
    /// Held attempts by runner id.
    claims: BTreeMap<String, Vec<Claim>>,
    /// The store's clock (ms since the Unix epoch).
    now: i64,
}

async fn snapshot(s: &Arc<AppState>) -> WebResult<Snapshot> {
    let queues = api_runners::queues(State(s.clone())).await?.0;
    let store = s.store.clone();
    let (records, claims, now) = api::blocking(move || {
        let (records, now) = store.runners()?;
        Ok((records, store.claims(MAX_CLAIMS_SHOWN)?, now))
    })
    .await?;
    let mut by_runner: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
    for c in claims {
        by_runner.entry(c.runner.clone()).or_default().push(c);
    }
    Ok(Snapshot {
        runners: records.into_iter().map(Into::into).collect(),
        queues,
        claims: by_runner,
        now,
    })
}

/// A runner's capabilities as people read them: `2 cpus · 4.0 GiB ·
/// 1 gpu · labels: a, b`.
pub fn capabilities(c: &api_runners::Capabilities) -> String {
    let mut parts = vec![format!(
        "{} cpu{}",
        c.cpu,
        if c.cpu == 1.0 { "" } else { "s" }
    )];
    if let Some(m) = c.memory {
        parts.push(bytes(m));
    }
    if c.gpu > 0 {
        parts.push(format!(
            "{} gpu{}",
            c.gpu,
            if c.gpu == 1 { "" } else { "s" }
        ));
    }
    if !c.labels.is_empty() {
        parts.push(format!("labels: {}", c.labels.join(", ")));
    }
    parts.join(" · ")
}

/// A queue's requirements (the API's JSON of [`crate::model::Resources`])
/// as people read them; `none` when it asks for nothing.
pub fn requirements(r: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(c) = r.get("cpu").and_then(|v| v.as_f64()).filter(|c| *c > 0.0) {
        parts.push(format!("{c} cpu{}", if c == 1.0 { "" } else { "s" }));
    }
    if let Some(m) = r.get("memory").and_then(|v| v.as_u64()) {
        parts.push(bytes(m));
    }
    if let Some(g) = r.get("gpu").and_then(|v| v.as_u64()).filter(|g| *g > 0) {
        parts.push(format!("{g} gpu{}", if g == 1 { "" } else { "s" }));
    }
    if let Some(labels) = r.get("labels").and_then(|v| v.as_array()) {
        let labels: Vec<&str> = labels.iter().filter_map(|l| l.as_str()).collect();
        if !labels.is_empty() {
            parts.push(format!("labels: {}", labels.join(", ")));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" · ")
    }
}

fn bytes(b: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = b as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", (b / MIB).max(1.0))
    }
}

/// A runner's condition: `draining`, `lost` (its lease ran out: it
/// stopped heartbeating) or `serving`.
pub fn condition(r: &api_runners::RunnerView) -> &'static str {
    if !r.alive {
        "lost"
    } else if r.draining {
        "draining"
    } else {
        "serving"
    }
}

fn runners_table(snap: &Snapshot, me: &Session, lease_ms: Option<i64>) -> String {
    let operate = me.may(Permission::Operate);
    let rows: Vec<Vec<String>> = snap
        .runners
        .iter()
        .map(|r| {
            // A heartbeat (or the registration) sets the lease to the
            // store's now plus the lease.
            let beat = match lease_ms {
                Some(l) => format!("{} ago", span(snap.now - (r.lease_until_ms - l))),
                None => "–".into(),
            };
            let held = snap.claims.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
            let mut attempts = format!("{} of {} slots", r.running, r.slots);
            if !held.is_empty() {
                attempts.push_str(r#"<ul class="held">"#);
                for c in held.iter().take(CLAIMS_PER_RUNNER) {
                    let a = &c.attempt;
                    let _ = write!(
                        attempts,
                        r#"<li><a href="/runs/{}/nodes/{}">{}/{} #{}</a> <span class="note">for {}</span></li>"#,
                        url(&a.run),
                        url(&a.node),
                        esc(&a.run),
                        esc(&a.node),
                        a.attempt,
                        span(snap.now - c.claimed_ms)
                    );
                }
                if held.len() > CLAIMS_PER_RUNNER {
                    let _ = write!(
                        attempts,
                        "<li>… and {} more</li>",
                        held.len() - CLAIMS_PER_RUNNER
                    );
                }
                attempts.push_str("</ul>");
            }
            let action = if operate && r.alive && !r.draining {
                html::button(
                    &format!("/runners/{}/shutdown", url(&r.id)),
                    "Drain",
                    &me.csrf,
                    "drain danger",
                )
            } else {
                String::new()
            };
            vec![
                format!(
                    r#"{}<br><code class="note">{}</code>"#,
                    esc(&r.name),
                    esc(&r.id)
                ),
                esc(&capabilities(&r.capabilities)),
                esc(&r.version),
                attempts,
                beat,
                badge(condition(r)),
                action,
            ]
        })
        .collect();
    table(
        "runners",
        &[
            "runner",
            "capabilities",
            "version",
            "attempts",
            "last heartbeat",
            "state",
            "",
        ],
        &rows,
    )
}

fn queues_table(snap: &Snapshot, me: &Session) -> String {
    let operate = me.may(Permission::Operate);
    let rows: Vec<Vec<String>> = snap
        .queues
        .iter()
        .map(|q| {
            let serving = if q.unservable {
                r#"<span class="flag unservable">⚠ no runner can serve this</span>"#.to_string()
            } else {
                esc(&q.serving.join(", "))
            };
            let action = if operate && q.depth > 0 {
                html::button(
                    &format!("/queues/{}/clear", url(&q.key)),
                    "Clear",
                    &me.csrf,
                    "clear danger",
                )
            } else {
                String::new()
            };
            vec![
                format!("<code>{}</code>", esc(&q.key)),
                esc(&requirements(&q.requires)),
                q.depth.to_string(),
                q.oldest_wait_ms.map(span).unwrap_or_else(|| "–".into()),
                q.running.to_string(),
                serving,
                action,
            ]
        })
        .collect();
    table(
        "queues",
        &[
            "queue",
            "requirements",
            "waiting",
            "oldest wait",
            "running",
            "served by",
            "",
        ],
        &rows,
    )
}

/// `GET /runners`: the runners (name, capabilities, slots, the attempts
/// they hold, last heartbeat, draining) and the queues (requirements,
/// depth, oldest wait, running, who serves them, or that no runner can);
/// who may operate gets a Drain button per runner and a Clear button per
/// queue with waiting attempts. Then what the server runs itself.
pub async fn page(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
) -> WebResult<Response> {
    let snap = snapshot(&s).await?;
    let status = system::status(State(s.clone())).await?.0;
    let lease_ms = s.engine.remote().map(|r| r.lease_ms());
    let mut body = String::from("<h2>Runners</h2>");
    if snap.runners.is_empty() {
        body.push_str(
            r#"<p class="empty" id="no-runners">No runners attached (this server runs tasks itself). Start one with <code>orch runner --server URL</code>.</p>"#,
        );
    } else {
        body.push_str(&runners_table(&snap, &me, lease_ms));
        if snap.claims.values().map(Vec::len).sum::<usize>() >= MAX_CLAIMS_SHOWN {
            let _ = write!(
                body,
                r#"<p class="note">The first {MAX_CLAIMS_SHOWN} attempts held are listed.</p>"#
            );
        }
    }
    body.push_str("<h2>Queues</h2>");
    if snap.queues.is_empty() {
        body.push_str(
            r#"<p class="empty" id="no-queues">No attempt waits for a runner or is held by one.</p>"#,
        );
    } else {
        body.push_str(&queues_table(&snap, &me));
    }
    let _ = write!(
        body,
        "<h2>This server</h2><p>It drives {} run(s) now, up to {} attempts of each at once on its own slots (its default).</p>",
        status.hosted, s.slots
    );
    let rows: Vec<Vec<String>> = status
        .runs
        .iter()
        .map(|(k, v)| {
            vec![
                format!(r#"<a href="/runs?status={}">{}</a>"#, url(k), badge(k)),
                v.to_string(),
            ]
        })
        .collect();
    body.push_str(&table("by-status", &["status", "runs"], &rows));
    Ok(page_response(html::page(
        "Runners & queues",
        Some(&me.viewer()),
        &body,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capabilities_and_requirements_read_well() {
        let c = api_runners::Capabilities {
            cpu: 2.0,
            memory: Some(4 << 30),
            gpu: 1,
            labels: vec!["blue".into(), "ssd".into()],
        };
        assert_eq!(
            capabilities(&c),
            "2 cpus · 4.0 GiB · 1 gpu · labels: blue, ssd"
        );
        assert_eq!(
            requirements(&json!({"cpu": 1.0, "memory": 512 << 20, "labels": ["red"]})),
            "1 cpu · 512 MiB · labels: red"
        );
        assert_eq!(requirements(&json!({})), "none");
    }
}
