//! The checks of schedules: fire times claimed once, pushed events and
//! timers kept.

use std::sync::Arc;

use super::{owner, register};
use crate::model::RunStatus;
use crate::store::Store;

/// A fire time has one run: of many claims racing, one wins; a backfill
/// replaces it; listings join the runs' statuses.
pub(super) fn fire_times_are_claimed_once(store: Arc<dyn Store>) {
    let wins: Vec<bool> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .claim_fire("nightly", 1_000, &format!("run-{i}"), "schedule")
                    .expect("claim")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("a claimer"))
        .collect();
    assert_eq!(
        wins.iter().filter(|w| **w).count(),
        1,
        "one winner: {wins:?}"
    );
    assert!(store
        .claim_fire("nightly", 2_000, "run-b", "schedule")
        .expect("claim"));
    assert!(store
        .claim_fire("other", 1_000, "run-o", "schedule")
        .expect("another workflow"));
    assert_eq!(store.last_fire("nightly").expect("last"), Some(2_000));
    assert_eq!(store.last_fire("never").expect("last"), None);
    let fires = store.fires("nightly", 0, 1_500).expect("fires");
    assert_eq!(fires.len(), 1);
    assert_eq!(
        (fires[0].at_ms, fires[0].kind.as_str()),
        (1_000, "schedule")
    );
    assert_eq!(fires[0].status, None, "no run registered under that id");
    let now = crate::time::unix_millis() as i64;
    let orphans = store
        .orphaned_fires(now - 60_000, now + 60_000)
        .expect("orphans");
    assert_eq!(
        orphans.len(),
        3,
        "no run registered for any claim yet: {orphans:?}"
    );
    assert!(store
        .orphaned_fires(0, now - 60_000)
        .expect("orphans")
        .is_empty());
    store
        .refire("nightly", 1_000, "run-again", "backfill")
        .expect("refire");
    let fires = store.fires("nightly", 1_000, 1_000).expect("fires");
    assert_eq!(
        (fires[0].run.as_str(), fires[0].kind.as_str()),
        ("run-again", "backfill")
    );
    register(store.as_ref(), "run-b", &owner("e1"));
    let fires = store.fires("nightly", 2_000, 2_000).expect("fires");
    assert_eq!(
        fires[0].status,
        Some(RunStatus::Running),
        "the run's status joined"
    );
    assert_eq!(store.active_runs("conformance").expect("active"), 1);
    assert_eq!(store.active_runs("nightly").expect("active"), 0);
}

/// Events are kept in order and claimed once per workflow; timers start,
/// list and stop once.
pub(super) fn events_and_timers_are_kept(store: &dyn Store) {
    let (first, delivered) = store
        .push_event("orders.new", &serde_json::json!({"id": 7}))
        .expect("push");
    assert!(delivered.is_empty(), "nothing listens yet");
    let (second, _) = store
        .push_event("other", &serde_json::json!(1))
        .expect("push");
    assert!(second > first);
    let all = store.events_after(0, 0, 10).expect("events");
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(all[0].payload, serde_json::json!({"id": 7}));
    assert_eq!(store.events_after(first, 0, 10).expect("events").len(), 1);
    let tomorrow = crate::time::unix_millis() as i64 + 86_400_000;
    assert!(
        store
            .events_after(0, tomorrow, 10)
            .expect("events")
            .is_empty(),
        "older than since"
    );
    assert!(store.claim_event_run(first, "w", "r1").expect("claim"));
    assert!(
        !store.claim_event_run(first, "w", "r2").expect("claim"),
        "once per workflow"
    );
    assert!(store.claim_event_run(first, "v", "r3").expect("claim"));
    let now = crate::time::unix_millis() as i64;
    let orphans = store
        .orphaned_event_runs(now - 60_000, now + 60_000)
        .expect("orphans");
    assert_eq!(
        orphans
            .iter()
            .map(|(e, w, r)| (e.id, w.as_str(), r.as_str()))
            .collect::<Vec<_>>(),
        [(first, "v", "r3"), (first, "w", "r1")],
        "claimed runs that never registered"
    );
    assert!(store
        .orphaned_event_runs(0, now - 60_000)
        .expect("orphans")
        .is_empty());
    let once = store
        .add_timer("w", Some(5_000), None, None)
        .expect("timer");
    let every = store
        .add_timer("w", None, Some("0 0 * * * *"), Some("Europe/Berlin"))
        .expect("timer");
    let timers = store.timers().expect("timers");
    assert_eq!(timers.len(), 2);
    assert_eq!((timers[0].id, timers[0].at_ms), (once, Some(5_000)));
    assert_eq!(timers[1].cron.as_deref(), Some("0 0 * * * *"));
    assert_eq!(timers[1].fire_key(), format!("timer:{every}"));
    assert!(store.stop_timer(every).expect("stop"));
    assert!(!store.stop_timer(every).expect("stop"), "stopped once");
    assert!(!store.stop_timer(999).expect("stop"), "no such timer");
    assert!(store.timers().expect("timers")[1].stopped_ms.is_some());
}
