use super::*;
use crate::store::queue::{QueuedAttempt, RunnerRecord, RunnerSpec};
use std::time::Duration;

fn record(labels: &[&str], lease_until_ms: i64, now_ms: i64, draining: bool) -> RunnerRecord {
    let offer = Offer {
        cpu: 4.0,
        memory: None,
        gpu: 0,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    RunnerRecord {
        spec: RunnerSpec::new("id", "r", offer, 4, "0"),
        registered_ms: 0,
        lease_until_ms,
        draining,
        running: 0,
        alive: lease_until_ms >= now_ms,
    }
}

fn need(labels: &[&str]) -> Resources {
    Resources {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Resources::default()
    }
}

#[test]
fn a_read_runner_list_serves_while_fresh_and_leased() {
    let list = RunnerList::new(&[record(&["ssd"], 10_500, 10_000, false)], 10_000);
    assert!(list.serves_after(&need(&["ssd"]), Duration::ZERO));
    assert!(list.serves_after(&need(&[]), Duration::from_millis(400)));
    // Its lease ran out by the store's clock, counted on.
    assert!(!list.serves_after(&need(&["ssd"]), Duration::from_millis(501)));
    // A label it does not offer.
    assert!(!list.serves_after(&need(&["gpu-box"]), Duration::ZERO));
    // Too old to decide, whatever the lease.
    let long = RunnerList::new(&[record(&[], 1_000_000, 10_000, false)], 10_000);
    assert!(long.serves_after(&need(&[]), RUNNERS_FRESH - Duration::from_millis(1)));
    assert!(!long.serves_after(&need(&[]), RUNNERS_FRESH));
}

/// Whether `w` got a wake by now (without waiting).
fn woken(w: &mut Waiting) -> Option<Wake> {
    match w.woken.try_recv().ok()? {
        Woken::Wake(wake) => Some(wake),
        Woken::Handed(h) => panic!("a wake expected, got {h:?}"),
    }
}

/// Whether `w` was handed an attempt by now (without waiting).
fn handed(w: &mut Waiting) -> Option<Handed> {
    match w.woken.try_recv().ok()? {
        Woken::Handed(h) => Some(h),
        Woken::Wake(wake) => panic!("an attempt expected, got {wake:?}"),
    }
}

#[test]
fn a_queued_attempt_goes_to_a_waiting_claim_and_back_when_it_left() {
    use crate::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap());
    for (id, labels) in [("ra", &[][..]), ("rb", &[][..]), ("rg", &["gpu"][..])] {
        let offer = Offer {
            cpu: 4.0,
            memory: None,
            gpu: 0,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        store
            .register_runner(&RunnerSpec::new(id, id, offer, 4, "0"), 60_000)
            .unwrap();
    }
    let remote = Arc::new(Remote::new(store.clone(), 15_000));
    let wait_for = |node: &str| {
        let id = AttemptId::new("run", node, 1);
        let (tx, rx) = mpsc::unbounded_channel();
        remote.waiting.lock().unwrap().insert(id.clone(), tx);
        (id, rx)
    };
    let queued =
        |id: &AttemptId, labels: &[&str]| QueuedAttempt::new(id.clone(), need(labels), "{}".into());
    // A claim waits: the attempt is claimed for its runner and handed
    // to it; the other claim hears nothing.
    let (a, _ra) = wait_for("a");
    let mut ca = remote.wait_for_attempts("ra");
    let mut cb = remote.wait_for_attempts("rb");
    remote.queue(queued(&a, &[])).unwrap();
    let h = handed(&mut ca).expect("handed to the claim that waited longest");
    assert!(woken(&mut cb).is_none());
    assert_eq!(h.take(4).id, a);
    store.claim_holds(&a, "ra").unwrap();
    // As a read that came up short: its next claim need not read.
    assert!(remote.may_wait("ra").is_some());
    assert_eq!(
        remote.holders.lock().unwrap().get(&a).map(|r| r.as_str()),
        Some("ra")
    );
    // The runner that waits does not fit: it is woken to read, as
    // before, and the attempt waits in the queue.
    let (g, _rg) = wait_for("g");
    remote.queue(queued(&g, &["gpu"])).unwrap();
    let wake = woken(&mut cb).expect("woken, not handed");
    assert!(store.claim_holds(&g, "rb").is_err());
    drop(wake);
    assert_eq!(store.claim("rg", 4, 15_000).unwrap().len(), 1);
    // The claim left before it took the attempt handed to it: put
    // back in the queue, and another waiting claim is woken for it.
    let ca = remote.wait_for_attempts("ra");
    let mut cb = remote.wait_for_attempts("rb");
    let (c, _rc) = wait_for("c");
    remote.queue(queued(&c, &[])).unwrap();
    assert!(store.claim_holds(&c, "ra").is_ok());
    drop(ca);
    let e = store.claim_holds(&c, "ra").unwrap_err();
    assert!(e.to_string().contains("waits in its queue"), "{e}");
    assert!(!remote.holders.lock().unwrap().contains_key(&c));
    let wake = woken(&mut cb).expect("another claim woken for it");
    // (`rb` would leave it to the runners serving its run.)
    let got = store.claim("ra", 4, 15_000).unwrap();
    assert_eq!(got.iter().map(|q| &q.id).collect::<Vec<_>>(), [&c]);
    drop(wake);
}

#[test]
fn a_queued_attempt_wakes_one_claim_and_the_wake_goes_on_until_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
    let remote = Arc::new(Remote::new(Arc::new(store), 15_000));
    let id = AttemptId::new("run", "a", 1);
    let (tx, _rx) = mpsc::unbounded_channel();
    remote.waiting.lock().unwrap().insert(id.clone(), tx);
    let mut a = remote.wait_for_attempts("ra");
    let mut b = remote.wait_for_attempts("rb");
    let mut c = remote.wait_for_attempts("rc");
    remote.wake(id.clone(), Vec::new());
    // One claim, the one that waited longest.
    let wake = woken(&mut a).expect("the first claim is woken");
    assert!(woken(&mut b).is_none() && woken(&mut c).is_none());
    // Its read did not take the attempt: the next runner's claim.
    let mut a2 = remote.wait_for_attempts("ra");
    wake.declined_by("ra");
    let wake = woken(&mut b).expect("handed on");
    // A claim that stops waiting hands on a wake it got: not to the
    // runner that declined it.
    drop(wake);
    assert!(woken(&mut a2).is_none());
    let mut d = remote.wait_for_attempts("rd");
    let mut b2 = remote.wait_for_attempts("rb");
    assert!(woken(&mut d).is_none());
    drop(c);
    let wake = woken(&mut d).expect("handed on by the claim that stopped waiting");
    // Every runner waiting declined: the wake ends.
    wake.declined_by("rd");
    let wake = woken(&mut b2).expect("rb did not decline it");
    wake.declined_by("rb");
    assert!(woken(&mut a2).is_none());
    // Claimed through this server: a wake for it ends at once, and
    // the runner is the one its run's next attempts wake first.
    let mut e = remote.wait_for_attempts("re");
    remote.claimed("rb", std::slice::from_ref(&id));
    remote.wake(id.clone(), Vec::new());
    assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
    let next = AttemptId::new("run", "b", 1);
    let (tx, _rx2) = mpsc::unbounded_channel();
    remote.waiting.lock().unwrap().insert(next.clone(), tx);
    let mut b3 = remote.wait_for_attempts("rb");
    remote.wake(next.clone(), Vec::new());
    let wake = woken(&mut b3).expect("the run's last runner is woken first");
    assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
    // It took it: the wake ends there.
    remote.claimed("rb", std::slice::from_ref(&next));
    wake.declined_by("rb");
    assert!(woken(&mut e).is_none() && woken(&mut a2).is_none());
    // Gone: a dropped claim leaves the list.
    drop((a, d, e, a2, b3));
    assert!(remote.claims.lock().unwrap().is_empty());
}

#[test]
fn a_claim_after_a_short_read_waits_until_something_changes_here() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
    let remote = Remote::new(Arc::new(store), 15_000);
    let now = std::time::Instant::now;
    remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
    assert!(remote.may_wait("ra").is_some());
    assert!(remote.may_wait("rb").is_none());
    // Its heartbeat or an end of its: it reads.
    remote.runner_changed("ra");
    assert!(remote.may_wait("ra").is_none());
    // A runner drained through this server: every runner reads.
    remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
    remote.runners_changed();
    assert!(remote.may_wait("ra").is_none());
    // Another runner took an attempt: it reads too; the taker not.
    remote.looked("ra", remote.queue_epoch(), now(), 0, 4);
    remote.looked("rb", remote.queue_epoch(), now(), 1, 4);
    assert!(remote.may_wait("ra").is_none());
    assert!(remote.may_wait("rb").is_some());
}

#[test]
fn draining_and_dead_runners_serve_nothing() {
    let list = RunnerList::new(
        &[
            record(&[], 20_000, 10_000, true),
            record(&[], 9_000, 10_000, false),
        ],
        10_000,
    );
    assert!(!list.serves_after(&need(&[]), Duration::ZERO));
}
