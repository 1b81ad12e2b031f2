//! When a pipeline fires: pure functions of its schedule, its last
//! recorded fire time and the clock, unit-tested with fixed clocks.

use jiff::Timestamp;

use crate::schedule::Schedule;

/// The most fire times one tick starts for one pipeline: a catch-up after
/// a long outage runs in steps, and a clock jump cannot start thousands
/// of runs at once.
pub const MAX_PER_TICK: usize = 100;

/// The fire times of `schedule` due at `now`, oldest first. `last` is the
/// latest fire time recorded for the pipeline (by any scheduler), `since`
/// when this scheduler began to watch it.
///
/// Without `catchup`, only fire times after both `last` and `since` count,
/// and of those only the latest: what fell due while no scheduler ran is
/// skipped, and a scheduler that falls behind fires once, late. With
/// `catchup`, every fire time after `last` runs, at most
/// [`MAX_PER_TICK`] a tick (after `since` when nothing was ever fired).
///
/// ```
/// use orch::schedule::Schedule;
/// use orch::scheduler::plan::due;
/// let every_second = Schedule::parse("* * * * * *", None).unwrap();
/// let t = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
/// let since = t("2026-01-01T00:00:00.500Z");
/// // Three seconds fell due; without catch-up only the latest fires.
/// assert_eq!(due(&every_second, None, since, t("2026-01-01T00:00:03.200Z"), false), [t("2026-01-01T00:00:03Z")]);
/// // With catch-up, each of them.
/// assert_eq!(due(&every_second, None, since, t("2026-01-01T00:00:03.200Z"), true).len(), 3);
/// ```
pub fn due(
    schedule: &Schedule,
    last: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
    catchup: bool,
) -> Vec<Timestamp> {
    if catchup {
        let from = last.unwrap_or(since);
        return schedule.between(from, now, MAX_PER_TICK);
    }
    let from = last.map_or(since, |l| l.max(since));
    // The latest fire time in (from, now]: step from the one before `now`
    // found through the times after `from`, without walking every one
    // (a per-second schedule after a day asleep would be 86,400 steps).
    match schedule.next_after(from) {
        Some(first) if first <= now => {
            let mut latest = first;
            // Jump close to `now`, then walk the last few.
            let window = jiff::SignedDuration::from_secs(3600);
            if let Ok(near) = now.checked_sub(window) {
                if near > latest {
                    if let Some(t) = schedule.next_after(near) {
                        if t <= now {
                            latest = t;
                        }
                    }
                }
            }
            while let Some(next) = schedule.next_after(latest) {
                if next > now {
                    break;
                }
                latest = next;
            }
            vec![latest]
        }
        _ => Vec::new(),
    }
}

/// The next fire time after `now` (and after `last`), for listings and
/// for how long the scheduler may sleep.
pub fn next(schedule: &Schedule, last: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    schedule.next_after(last.map_or(now, |l| l.max(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hourly() -> Schedule {
        Schedule::parse("0 0 * * * *", None).unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_first_fire_time() {
        let s = hourly();
        assert!(due(
            &s,
            None,
            t("2026-01-01T10:00:01Z"),
            t("2026-01-01T10:59:59Z"),
            false
        )
        .is_empty());
        assert_eq!(
            due(
                &s,
                None,
                t("2026-01-01T10:00:01Z"),
                t("2026-01-01T11:00:00Z"),
                false
            ),
            [t("2026-01-01T11:00:00Z")]
        );
    }

    #[test]
    fn a_fire_time_recorded_is_never_due_again() {
        let s = hourly();
        let last = Some(t("2026-01-01T11:00:00Z"));
        for catchup in [false, true] {
            assert!(
                due(
                    &s,
                    last,
                    t("2026-01-01T10:00:00Z"),
                    t("2026-01-01T11:30:00Z"),
                    catchup
                )
                .is_empty(),
                "catchup {catchup}"
            );
        }
    }

    #[test]
    fn without_catchup_an_outage_is_skipped_and_a_restart_does_not_go_back() {
        let s = hourly();
        // Last fired at 11:00, the scheduler was down until 15:30.
        let last = Some(t("2026-01-01T11:00:00Z"));
        let restart = t("2026-01-01T15:30:00Z");
        assert!(due(&s, last, restart, t("2026-01-01T15:59:00Z"), false).is_empty());
        assert_eq!(
            due(&s, last, restart, t("2026-01-01T16:00:00.010Z"), false),
            [t("2026-01-01T16:00:00Z")]
        );
    }

    #[test]
    fn with_catchup_every_missed_fire_time_runs_in_bounded_steps() {
        let s = hourly();
        let last = Some(t("2026-01-01T11:00:00Z"));
        let missed = due(
            &s,
            last,
            t("2026-01-01T15:30:00Z"),
            t("2026-01-01T15:30:00Z"),
            true,
        );
        assert_eq!(
            missed,
            [
                t("2026-01-01T12:00:00Z"),
                t("2026-01-01T13:00:00Z"),
                t("2026-01-01T14:00:00Z"),
                t("2026-01-01T15:00:00Z")
            ]
        );
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        let long = due(
            &every_second,
            last,
            t("2026-01-02T00:00:00Z"),
            t("2026-01-02T00:00:00Z"),
            true,
        );
        assert_eq!(long.len(), MAX_PER_TICK);
        assert_eq!(
            long[0],
            t("2026-01-01T11:00:01Z"),
            "from the last fire time on"
        );
    }

    #[test]
    fn a_day_behind_on_a_per_second_schedule_fires_the_latest_once_quickly() {
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        let d = due(
            &every_second,
            None,
            t("2026-01-01T00:00:00Z"),
            t("2026-01-02T00:00:00.5Z"),
            false,
        );
        assert_eq!(d, [t("2026-01-02T00:00:00Z")]);
    }

    #[test]
    fn next_is_after_now_and_after_the_last_fire() {
        let s = hourly();
        assert_eq!(
            next(&s, None, t("2026-01-01T10:20:00Z")),
            Some(t("2026-01-01T11:00:00Z"))
        );
        assert_eq!(
            next(
                &s,
                Some(t("2026-01-01T11:00:00Z")),
                t("2026-01-01T10:20:00Z")
            ),
            Some(t("2026-01-01T12:00:00Z"))
        );
    }
}
