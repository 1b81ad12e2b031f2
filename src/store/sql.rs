//! Conversions both SQL stores (SQLite and PostgreSQL) make the same way.

/// A count as SQL's `LIMIT` takes it.
pub(super) fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored timestamp in milliseconds since the epoch.
pub(super) fn millis(t: &str) -> Option<i64> {
    crate::time::parse_millis(t).and_then(|ms| i64::try_from(ms).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_saturates() {
        assert_eq!(clamp(0), 0);
        assert_eq!(clamp(1_000), 1_000);
        assert_eq!(clamp(usize::MAX), i64::MAX);
    }

    #[test]
    fn millis_reads_stored_times() {
        let at = 1_700_000_000_123;
        assert_eq!(millis(&crate::time::format_millis(at)), Some(at as i64));
        assert_eq!(millis("not a time"), None);
    }
}
