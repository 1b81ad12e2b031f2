//! Timers as people start and read them: when (a moment, a delay or a
//! cron pattern), checked before anything is stored, and each timer's
//! status and next fire time. The CLI and the server both use these.

use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{Store, Timer};

/// When a timer fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// Once, at this moment (RFC 3339, or a date: its midnight UTC).
    At(String),
    /// Once, after this delay (`90`, `30s`, `5m`, `2h`).
    After(String),
    /// On a cron pattern in a time zone (default UTC).
    Cron(String, Option<String>),
}

/// A moment: RFC 3339, or a date (its midnight UTC); `what` names it in
/// the error.
///
/// ```
/// let t = orch::scheduler::timers::parse_moment("--at", "2026-01-01").unwrap();
/// assert_eq!(t.to_string(), "2026-01-01T00:00:00Z");
/// assert!(orch::scheduler::timers::parse_moment("--at", "soon").is_err());
/// ```
pub fn parse_moment(what: &str, text: &str) -> std::result::Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!(
                "{what} `{}` is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a date (2026-01-01)",
                crate::protocol::quote(text)
            )
        })
}

/// Checks and stores a timer firing `workflow`; returns its id.
pub fn start(store: &dyn Store, workflow: &str, when: &When, now: Timestamp) -> Result<i64> {
    let refuse = |message: String| Error::Refused {
        what: format!("a timer for `{}`", crate::protocol::quote(workflow)),
        message,
    };
    if workflow.is_empty() || workflow.len() > 256 || workflow.chars().any(char::is_control) {
        return Err(refuse(
            "the workflow name is 1 to 256 printable characters".into(),
        ));
    }
    let (at_ms, cron, zone) = match when {
        When::At(at) => (
            Some(parse_moment("at", at).map_err(refuse)?.as_millisecond()),
            None,
            None,
        ),
        When::After(after) => {
            let d =
                crate::time::parse_duration(after).map_err(|e| refuse(format!("after: {e}")))?;
            let ms = i64::try_from(d.as_millis()).map_err(|_| refuse("after: too long".into()))?;
            (Some(now.as_millisecond().saturating_add(ms)), None, None)
        }
        When::Cron(c, zone) => {
            crate::schedule::Schedule::parse(c, zone.as_deref())
                .map_err(|e| refuse(e.to_string()))?;
            (None, Some(c.as_str()), zone.as_deref())
        }
    };
    store.add_timer(workflow, at_ms, cron, zone)
}

/// A timer with its status and next fire time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TimerView {
    /// Its number.
    pub id: i64,
    /// The workflow it fires.
    pub workflow: String,
    /// A one-shot timer's moment (ms since the Unix epoch).
    pub at_ms: Option<i64>,
    /// A recurring timer's cron pattern.
    pub cron: Option<String>,
    /// The pattern's time zone.
    pub timezone: Option<String>,
    /// When it was started (ms since the Unix epoch).
    pub created_ms: i64,
    /// When it was stopped.
    pub stopped_ms: Option<i64>,
    /// `waiting`, `done`, `active` or `stopped`.
    pub status: String,
    /// Its next fire time (RFC 3339).
    pub next_fire: Option<String>,
    /// When, as people read it (`at …`, `cron `…` (UTC)`).
    pub when: String,
}

/// Every timer with its status, as of `now`.
pub fn list(store: &dyn Store, now: Timestamp) -> Result<Vec<TimerView>> {
    let mut out = Vec::new();
    for t in store.timers()? {
        let last = store.last_fire(&t.fire_key())?;
        out.push(view(t, last, now));
    }
    Ok(out)
}

fn view(t: Timer, last: Option<i64>, now: Timestamp) -> TimerView {
    let (status, next) = if t.stopped_ms.is_some() {
        ("stopped", None)
    } else if let Some(at) = t.at_ms {
        if last.is_some() {
            ("done", None)
        } else {
            ("waiting", Timestamp::from_millisecond(at).ok())
        }
    } else {
        let next = t.cron.as_deref().and_then(|c| {
            crate::schedule::Schedule::parse(c, t.timezone.as_deref())
                .ok()
                .and_then(|s| s.next_after(now))
        });
        ("active", next)
    };
    let when = match (&t.cron, t.at_ms) {
        (Some(c), _) => format!("cron `{c}` ({})", t.timezone.as_deref().unwrap_or("UTC")),
        (None, Some(at)) => format!(
            "at {}",
            Timestamp::from_millisecond(at)
                .map(|t| t.to_string())
                .unwrap_or_default()
        ),
        (None, None) => String::new(),
    };
    TimerView {
        id: t.id,
        workflow: t.workflow,
        at_ms: t.at_ms,
        cron: t.cron,
        timezone: t.timezone,
        created_ms: t.created_ms,
        stopped_ms: t.stopped_ms,
        status: status.to_string(),
        next_fire: next.map(|n| n.to_string()),
        when,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_are_checked_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert!(start(&store, "", &When::After("5s".into()), now).is_err());
        assert!(start(&store, "w", &When::After("soon".into()), now).is_err());
        assert!(start(&store, "w", &When::Cron("61 * * * *".into(), None), now).is_err());
        assert!(start(&store, "w", &When::At("never".into()), now).is_err());
        assert!(store.timers().unwrap().is_empty());
        let a = start(&store, "w", &When::After("5s".into()), now).unwrap();
        let b = start(
            &store,
            "w",
            &When::Cron("0 * * * *".into(), Some("Europe/Paris".into())),
            now,
        )
        .unwrap();
        let all = list(&store, now).unwrap();
        assert_eq!(all[0].id, a);
        assert_eq!(all[0].status, "waiting");
        assert_eq!(all[0].at_ms, Some(1_800_000_005_000));
        assert_eq!(all[1].id, b);
        assert_eq!(all[1].status, "active");
        assert!(all[1].next_fire.is_some());
        store.stop_timer(a).unwrap();
        assert_eq!(list(&store, now).unwrap()[0].status, "stopped");
    }
}
