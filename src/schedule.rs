//! Cron schedules: when a workflow's runs fire. Pure: the fire times
//! after a given instant, in a time zone, with daylight-saving gaps and
//! overlaps fired once (croner on jiff's zoned times).
//!
//! ```
//! use orch::schedule::Schedule;
//! let s = Schedule::parse("0 0 * * * *", None).unwrap();
//! let t: jiff::Timestamp = "2026-03-01T10:20:00Z".parse().unwrap();
//! assert_eq!(s.next_after(t).unwrap().to_string(), "2026-03-01T11:00:00Z");
//! ```

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A cron pattern in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
    text: String,
    zone: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text && self.zone == other.zone
    }
}

impl Schedule {
    /// Parses `cron` (6 fields with seconds first, or 5, or `@hourly`,
    /// `@daily`, …) in the IANA zone `tz` (default UTC). The error says
    /// which field is at fault.
    ///
    /// ```
    /// use orch::schedule::Schedule;
    /// assert!(Schedule::parse("*/15 * * * *", Some("Europe/Berlin")).is_ok());
    /// let e = Schedule::parse("0 61 * * * *", None).unwrap_err();
    /// assert!(e.contains("0 61 * * * *"), "{e}");
    /// assert!(Schedule::parse("0 0 * * *", Some("Mars/Olympus")).unwrap_err().contains("Mars/Olympus"));
    /// ```
    pub fn parse(cron: &str, tz: Option<&str>) -> Result<Schedule, String> {
        let text = cron.trim();
        if text.len() > 256 {
            return Err("the schedule is longer than 256 bytes".into());
        }
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "schedule `{text}`: {}",
                    field_at_fault(text, &e.to_string())
                )
            })?;
        let zone = tz.unwrap_or("UTC").trim();
        let tz = TimeZone::get(zone)
            .map_err(|e| format!("timezone `{zone}` is no IANA time zone ({e})"))?;
        Ok(Schedule {
            cron: parsed,
            tz,
            text: text.to_string(),
            zone: zone.to_string(),
        })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone's name.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The first fire time strictly after `t`, if there is one.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let now = Zoned::new(t, self.tz.clone());
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The fire times in `(after, until]`, at most `limit` of them.
    pub fn between(&self, after: Timestamp, until: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut at = after;
        while out.len() < limit {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    out.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        out
    }
}

/// The field of a cron pattern that does not parse, found by parsing each
/// field alone (the others `*`), with croner's reason.
fn field_at_fault(text: &str, reason: &str) -> String {
    const SIX: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day of month",
        "month",
        "day of week",
    ];
    let fields: Vec<&str> = text.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &SIX[1..],
        6 => &SIX,
        _ if text.starts_with('@') => return format!("unknown nickname ({reason})"),
        n => return format!("a cron pattern has 5 or 6 fields (seconds first), this one has {n}"),
    };
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build();
    for (i, field) in fields.iter().enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { *field } else { "*" })
            .collect();
        if let Err(e) = parser.parse(&alone.join(" ")) {
            return format!("the {} field `{field}` is wrong ({e})", names[i]);
        }
    }
    reason.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn six_fields_have_seconds_five_do_not() {
        let s = Schedule::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(
            s.between(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:00:30Z"), 10),
            [
                ts("2026-01-01T00:00:10Z"),
                ts("2026-01-01T00:00:20Z"),
                ts("2026-01-01T00:00:30Z")
            ]
        );
        let s = Schedule::parse("30 2 * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T02:30:00Z"))
        );
    }

    #[test]
    fn a_daylight_saving_gap_fires_once_and_an_overlap_once() {
        // Europe/Berlin: 2026-03-29 02:00 -> 03:00 (02:30 does not exist);
        // 2026-10-25 03:00 -> 02:00 (02:30 happens twice).
        let s = Schedule::parse("0 30 2 * * *", Some("Europe/Berlin")).unwrap();
        let spring = s.between(ts("2026-03-28T00:00:00Z"), ts("2026-03-31T00:00:00Z"), 10);
        assert_eq!(
            spring.len(),
            3,
            "one a day, the gap day included: {spring:?}"
        );
        let autumn = s.between(ts("2026-10-24T00:00:00Z"), ts("2026-10-27T00:00:00Z"), 10);
        assert_eq!(
            autumn.len(),
            3,
            "one a day, the overlap day fires once: {autumn:?}"
        );
        assert_eq!(
            autumn[1],
            ts("2026-10-25T00:30:00Z"),
            "the first 02:30 (CEST)"
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_named() {
        for bad in ["", "* * *", "0 0 32 * *", "61 * * * * *", "x y z a b"] {
            let e = Schedule::parse(bad, None).unwrap_err();
            assert!(e.starts_with("schedule `"), "{bad}: {e}");
        }
        assert!(Schedule::parse("@hourly", None).is_ok());
        let e = Schedule::parse("0 99 * * *", None).unwrap_err();
        assert!(
            e.starts_with("schedule `0 99 * * *`: the hour field `99` is wrong"),
            "{e}"
        );
        let e = Schedule::parse("0 0 0 * * 9", None).unwrap_err();
        assert!(e.contains("the day of week field `9` is wrong"), "{e}");
        let e = Schedule::parse("* * *", None).unwrap_err();
        assert!(e.contains("5 or 6 fields"), "{e}");
        let e = Schedule::parse("0 0 * * *", Some("Nowhere/City")).unwrap_err();
        assert!(
            e.starts_with("timezone `Nowhere/City` is no IANA time zone"),
            "{e}"
        );
    }
}
