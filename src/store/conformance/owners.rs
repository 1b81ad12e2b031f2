//! The checks of run leases: a stale owner writes nothing, takeovers
//! follow the owner's liveness, one of racing takeovers wins, renewals
//! and releases.

use std::sync::Arc;
use std::time::Duration;

use super::{node_state, owner, register};
use crate::error::Error;
use crate::model::NodeState;
use crate::store::{Lease, Store};

/// A pid no process can have (above the kernel's largest `pid_max`).
const NO_PID: u32 = 1 << 30;

pub(super) fn a_stale_lease_writes_nothing(store: &dyn Store) {
    let mut f = register(store, "run-fence", &owner("engine-a"));
    let stale = Lease::new("run-fence", "engine-a", 7);
    let before = store.events("run-fence", None).expect("events");
    let err = f
        .commit(store, &stale, vec![node_state("ask", NodeState::Waiting)])
        .expect_err("a wrong epoch is fenced");
    assert!(matches!(err, Error::Fenced { epoch: 7, .. }), "{err}");
    assert!(
        err.to_string().contains("engine-a"),
        "names the holder: {err}"
    );
    let other = Lease::new("run-fence", "engine-b", 1);
    assert!(matches!(
        f.commit(store, &other, vec![node_state("ask", NodeState::Waiting)]),
        Err(Error::Fenced { .. })
    ));
    assert_eq!(store.events("run-fence", None).expect("events"), before);
}

pub(super) fn takeovers_follow_the_owners_liveness(store: &dyn Store) {
    // A live owner on this host (this very process) holds its run.
    let mut live = register(store, "run-live", &owner("engine-a"));
    let b = owner("engine-b");
    let err = store
        .take_over("run-live", &b, false)
        .expect_err("a live owner holds");
    assert!(
        matches!(&err, Error::Owned { owner, .. } if owner.contains("engine-a")),
        "{err}"
    );
    // Forced: epoch 2, and the old owner is fenced off.
    let lease = store.take_over("run-live", &b, true).expect("forced");
    assert_eq!(lease.epoch, 2);
    let old = live.lease.clone();
    assert!(matches!(
        live.commit(store, &old, vec![node_state("ask", NodeState::Waiting)]),
        Err(Error::Fenced { .. })
    ));
    live.commit(store, &lease, vec![node_state("ask", NodeState::Waiting)])
        .expect("the new owner writes");
    assert_eq!(store.owner("run-live").expect("owner").epoch, 2);

    // A dead owner: no such process on this host.
    let mut gone = owner("engine-gone");
    gone.pid = NO_PID;
    register(store, "run-dead", &gone);
    assert_eq!(
        store.take_over("run-dead", &b, false).expect("dead").epoch,
        2
    );

    // A recycled pid: the pid runs, but started at another time.
    let mut recycled = owner("engine-recycled");
    recycled.started = recycled.started.map(|s| s + 1).or(Some(1));
    register(store, "run-recycled", &recycled);
    assert_eq!(
        store
            .take_over("run-recycled", &b, false)
            .expect("a recycled pid is no owner")
            .epoch,
        2
    );

    // Another host: its pid says nothing; only the lease's expiry does.
    let mut far = owner("engine-far");
    far.host = "elsewhere/boot".into();
    far.pid = NO_PID;
    register(store, "run-far", &far);
    assert!(matches!(
        store.take_over("run-far", &b, false),
        Err(Error::Owned { .. })
    ));
    let far_now = far.with_ttl(Duration::ZERO);
    register(store, "run-far-expired", &far_now);
    assert_eq!(
        store
            .take_over("run-far-expired", &b, false)
            .expect("an expired lease")
            .epoch,
        2
    );
    assert!(matches!(
        store.take_over("nope", &b, false),
        Err(Error::UnknownRun(_))
    ));
}

pub(super) fn a_takeover_race_has_one_winner(store: Arc<dyn Store>) {
    let mut gone = owner("engine-gone");
    gone.pid = NO_PID;
    register(store.as_ref(), "run-race", &gone);
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.take_over("run-race", &owner(&format!("racer-{i}")), false)
            })
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|r| r.join().expect("racer"))
        .collect();
    let winners: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one takeover wins: {results:?}");
    let winner = &winners[0].owner;
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::Owned { owner, .. } if owner.contains(winner.as_str())),
                "a loser is told who won: {e}"
            );
        }
    }
    assert_eq!(store.owner("run-race").expect("owner").epoch, 2);
}

pub(super) fn renewal_reports_lost_runs_and_release_frees(store: &dyn Store) {
    let a = owner("engine-a");
    let one = register(store, "run-1", &a).lease;
    let two = register(store, "run-2", &a).lease;
    assert!(store
        .renew(&a, &[one.clone(), two.clone()])
        .expect("renew")
        .is_empty());
    store
        .take_over("run-2", &owner("engine-b"), true)
        .expect("forced");
    assert_eq!(
        store.renew(&a, &[one.clone(), two]).expect("renew"),
        vec!["run-2".to_string()]
    );
    store.release(&one).expect("release");
    assert!(store.owner("run-1").expect("owner").owner.is_none());
    let c = owner("engine-c");
    assert_eq!(store.take_over("run-1", &c, false).expect("free").epoch, 2);
}
