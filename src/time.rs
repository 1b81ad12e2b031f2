//! Timestamps and run ids.
//!
//! Every timestamp orch stores or exports is RFC 3339 in UTC with
//! millisecond precision, e.g. `2026-11-24T01:31:11.123Z`: it sorts as a
//! string and every language parses it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as an RFC 3339 UTC timestamp with milliseconds.
///
/// ```
/// let t = orch::time::now();
/// assert_eq!(t.len(), 24);
/// assert!(t.ends_with('Z'));
/// ```
pub fn now() -> String {
    format_millis(unix_millis())
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// ```
/// assert_eq!(orch::time::format_millis(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(orch::time::format_millis(1_795_311_071_123), "2026-11-22T01:31:11.123Z");
/// ```
pub fn format_millis(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
            ms % 1000
        );
    }
    // Written digit by digit: every event is stamped, and `format!` with
    // padding cost a 100,000-node run 7% of its instructions.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for k in (at..at + width).rev() {
            b[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, mo.into());
    put(8, 2, d.into());
    put(11, 2, h.into());
    put(14, 2, mi.into());
    put(17, 2, s.into());
    put(20, 3, ms % 1000);
    String::from_utf8(b.to_vec()).expect("ASCII digits")
}

/// Parses a timestamp in the format orch writes back to milliseconds
/// since the epoch; `None` when it is not in that format.
///
/// ```
/// let t = orch::time::format_millis(1_795_311_071_123);
/// assert_eq!(orch::time::parse_millis(&t), Some(1_795_311_071_123));
/// assert_eq!(orch::time::parse_millis("yesterday"), None);
/// ```
pub fn parse_millis(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Howard Hinnant's days-from-civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms;
    u64::try_from(total).ok()
}

/// (year, month, day, hour, minute, second) of a Unix time in seconds.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// A duration written by a person: seconds (`90`, `0.5`), or a number with
/// a unit: `ms`, `s`, `m`, `h` or `d`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(orch::time::parse_duration("1.5m"), Ok(Duration::from_secs(90)));
/// assert_eq!(orch::time::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert!(orch::time::parse_duration("soon").is_err());
/// assert!(orch::time::parse_duration("3w").unwrap_err().contains("unknown unit `w`"));
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{t}` is not a duration (say 30, \"30s\", \"5m\" or \"1h\")"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => {
            return Err(format!(
                "`{t}` has the unknown unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    seconds(secs)
}

/// A number of seconds as a duration: finite, not negative, under a
/// century.
pub fn seconds(secs: f64) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| d.as_secs() < 100 * 365 * 86_400)
        .ok_or_else(|| {
            format!("{secs} is not a duration (a positive number of seconds, under a century)")
        })
}

/// A new run id: `YYYYMMDD-HHMMSS-xxxxxxxxxxxx`, the UTC start time plus
/// twelve random hex digits (48 bits: an engine starting thousands of
/// runs a second met collisions with the six it used to have). Sorting
/// ids sorts runs by start time.
///
/// ```
/// let id = orch::time::new_run_id();
/// assert_eq!(id.len(), 28);
/// assert_ne!(id, orch::time::new_run_id());
/// ```
pub fn new_run_id() -> String {
    run_id_at(unix_millis())
}

/// A new run id for a run of the moment `ms` (milliseconds since the Unix
/// epoch): a scheduled run's id carries its fire time.
///
/// ```
/// let id = orch::time::run_id_at(1_780_000_000_000);
/// assert!(id.starts_with("20260528-202640-"), "{id}");
/// ```
pub fn run_id_at(ms: u64) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    // Randomly keyed per call, and fed a counter: two ids of one process
    // never hash the same input.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(ms);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    let rnd = hasher.finish() & 0xffff_ffff_ffff;
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{rnd:012x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_written_digit_by_digit_read_as_format_writes_them() {
        let by_format = |ms: u64| {
            let (y, mo, d, h, mi, s) = super::civil(ms / 1000);
            format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
                ms % 1000
            )
        };
        let mut ms = 0u64;
        // From 1970 to past 9999, in uneven steps.
        while ms < 260_000_000_000_000 {
            assert_eq!(super::format_millis(ms), by_format(ms), "at {ms}");
            ms = ms * 3 / 2 + 7_919;
        }
        assert_eq!(
            super::format_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            super::format_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    use super::*;

    #[test]
    fn leap_days_and_ends_of_years() {
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_millis(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn parse_inverts_format() {
        for ms in [0, 951_782_400_000, 1_767_225_599_999, unix_millis()] {
            assert_eq!(parse_millis(&format_millis(ms)), Some(ms));
        }
    }

    #[test]
    fn run_ids_differ_and_sort_by_time() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 28);
    }
}
