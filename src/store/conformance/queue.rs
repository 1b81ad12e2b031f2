//! The checks of runners and the queue: claims by capability, fences,
//! expired claims, heartbeats, queues, affinity, hand-offs and races.

use std::sync::Arc;

use crate::error::Error;
use crate::store::Store;

fn offer(cpu: f64, labels: &[&str]) -> crate::exec::resources::Offer {
    crate::exec::resources::Offer {
        cpu,
        memory: Some(8 << 30),
        gpu: 0,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

fn queued(
    run: &str,
    node: &str,
    attempt: u32,
    labels: &[&str],
) -> crate::store::queue::QueuedAttempt {
    let need = crate::model::Resources {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    };
    crate::store::queue::QueuedAttempt::new(
        crate::exec::AttemptId::new(run, node, attempt),
        need,
        format!("{{\"node\": \"{node}\"}}"),
    )
}

pub(super) fn runners_claim_by_capability_and_are_fenced(store: &dyn Store) {
    use crate::exec::AttemptId;
    use crate::store::queue::RunnerSpec;
    let plain = store
        .register_runner(
            &RunnerSpec::new("r-plain", "plain", offer(2.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(
        plain.alive && !plain.draining && plain.running == 0,
        "{plain:?}"
    );
    store
        .register_runner(
            &RunnerSpec::new("r-gpu", "gpu", offer(2.0, &["gpu"]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(matches!(
        store.claim("nobody", 1, 1000),
        Err(Error::UnknownRunner(_))
    ));
    assert!(matches!(
        store.heartbeat("nobody", &[], 1000),
        Err(Error::UnknownRunner(_))
    ));

    store.enqueue(&queued("run1", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run1", "g", 1, &["gpu"])).unwrap();
    store.enqueue(&queued("run1", "b", 1, &[])).unwrap();
    store.enqueue(&queued("run1", "c", 1, &[])).unwrap();

    // The plain runner cannot serve `gpu`; it takes its two slots' worth,
    // oldest first.
    let got = store.claim("r-plain", 10, 60_000).unwrap();
    let nodes: Vec<&str> = got.iter().map(|a| a.id.node.as_str()).collect();
    assert_eq!(nodes, ["a", "b"], "{got:?}");
    assert_eq!(got[0].payload, "{\"node\": \"a\"}");
    assert!(
        store.claim("r-plain", 10, 60_000).unwrap().is_empty(),
        "no free slot"
    );
    let got = store.claim("r-gpu", 10, 60_000).unwrap();
    let nodes: Vec<&str> = got.iter().map(|a| a.id.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["g"],
        "the labelled runner takes the labelled queue first (it is older)"
    );

    // Fences: the holder passes, anyone else and any other attempt fail.
    let a1 = AttemptId::new("run1", "a", 1);
    store.claim_holds(&a1, "r-plain").unwrap();
    let e = store.claim_holds(&a1, "r-gpu").unwrap_err();
    assert!(
        matches!(e, Error::AttemptFenced { .. }) && e.to_string().contains("r-plain"),
        "{e}"
    );
    let e = store
        .claim_holds(&AttemptId::new("run1", "a", 2), "r-plain")
        .unwrap_err();
    assert!(matches!(e, Error::AttemptFenced { .. }), "{e}");
    let beat = store
        .heartbeat(
            "r-plain",
            &[a1.clone(), AttemptId::new("run1", "zz", 1)],
            60_000,
        )
        .unwrap();
    assert_eq!(beat.lost, vec![AttemptId::new("run1", "zz", 1)]);
    assert!(!beat.draining);

    // A finished claim frees its slot; a second report is refused.
    store.finish_claim(&a1, "r-plain").unwrap();
    assert!(matches!(
        store.finish_claim(&a1, "r-plain"),
        Err(Error::AttemptFenced { .. })
    ));
    let got = store.claim("r-plain", 10, 60_000).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id.node, "c");

    // A re-queued node (next attempt) supersedes its claimed attempt.
    store.enqueue(&queued("run1", "b", 2, &[])).unwrap();
    let e = store
        .finish_claim(&AttemptId::new("run1", "b", 1), "r-plain")
        .unwrap_err();
    assert!(e.to_string().contains("attempt 2"), "{e}");

    // Draining: nothing new, and the heartbeat says so.
    assert!(store.drain_runner("r-plain").unwrap());
    assert!(!store.drain_runner("nobody").unwrap());
    assert!(store.heartbeat("r-plain", &[], 60_000).unwrap().draining);
    assert!(store.claim("r-plain", 10, 60_000).unwrap().is_empty());

    let (runners, _) = store.runners().unwrap();
    let names: Vec<&str> = runners.iter().map(|r| r.spec.name.as_str()).collect();
    assert_eq!(names, ["gpu", "plain"]);
    assert_eq!(runners[0].running, 1);
    assert_eq!(runners[1].spec.capabilities, offer(2.0, &[]));
    assert!(runners[1].draining);
    // Registering again under the same id clears the drain.
    let again = store
        .register_runner(
            &RunnerSpec::new("r-plain", "plain", offer(2.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    assert!(!again.draining);
    assert!(store.dequeue(&AttemptId::new("run1", "b", 2)).unwrap());
    assert!(!store.dequeue(&AttemptId::new("run1", "b", 2)).unwrap());
}

pub(super) fn expired_claims_are_lost_and_their_reports_refused(store: &dyn Store) {
    use crate::exec::AttemptId;
    use crate::store::queue::RunnerSpec;
    store
        .register_runner(
            &RunnerSpec::new("r1", "one", offer(1.0, &[]), 4, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run2", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run2", "b", 1, &[])).unwrap();
    // A claim under a lease that is over at once (the runner died).
    let got = store.claim("r1", 1, -1).unwrap();
    assert_eq!(got.len(), 1);
    let a1 = AttemptId::new("run2", "a", 1);
    let b1 = AttemptId::new("run2", "b", 1);
    let lost = store.lost_claims(&[a1.clone(), b1.clone()]).unwrap();
    assert_eq!(lost, vec![a1.clone()], "b still waits; a's claim expired");
    let e = store.finish_claim(&a1, "r1").unwrap_err();
    assert!(matches!(e, Error::AttemptFenced { .. }), "{e}");
    // Its next attempt is queued and claimed afresh.
    store.enqueue(&queued("run2", "a", 2, &[])).unwrap();
    let got = store.claim("r1", 4, 60_000).unwrap();
    let ids: Vec<String> = got.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, ["run2/b#1", "run2/a#2"]);
    assert!(store
        .lost_claims(&[AttemptId::new("run2", "a", 2)])
        .unwrap()
        .is_empty());
    store
        .finish_claim(&AttemptId::new("run2", "a", 2), "r1")
        .unwrap();
    assert!(matches!(
        store.finish_claim(&a1, "r1"),
        Err(Error::AttemptFenced { .. })
    ));
    // A runner whose own lease is over shows as not alive.
    store
        .register_runner(
            &RunnerSpec::new("r0", "zero", offer(1.0, &["zero"]), 1, "0.1.0"),
            -1,
        )
        .unwrap();
    let (runners, _) = store.runners().unwrap();
    let zero = runners.iter().find(|r| r.spec.id == "r0").unwrap();
    assert!(!zero.alive, "{zero:?}");
    // It claims nothing until a heartbeat renews its lease (an attempt
    // only it can serve: r1 serves run2 and would keep the others).
    store.enqueue(&queued("run2", "c", 1, &["zero"])).unwrap();
    assert!(store.claim("r0", 1, 60_000).unwrap().is_empty());
    store.heartbeat("r0", &[], 60_000).unwrap();
    assert_eq!(store.claim("r0", 1, 60_000).unwrap().len(), 1);
}

pub(super) fn a_heartbeat_renews_only_the_claims_it_lists(store: &dyn Store) {
    use crate::exec::AttemptId;
    use crate::store::queue::RunnerSpec;
    store
        .register_runner(
            &RunnerSpec::new("r9", "nine", offer(1.0, &[]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run9", "kept", 1, &[])).unwrap();
    store.enqueue(&queued("run9", "dropped", 1, &[])).unwrap();
    assert_eq!(store.claim("r9", 2, 60_000).unwrap().len(), 2);
    let kept = AttemptId::new("run9", "kept", 1);
    let dropped = AttemptId::new("run9", "dropped", 1);
    // A beat that sets a lease already over (the clock cannot be moved
    // here): only the claim it lists gets it.
    let beat = store
        .heartbeat("r9", std::slice::from_ref(&kept), -1)
        .unwrap();
    assert!(beat.lost.is_empty(), "{beat:?}");
    let lost = store.lost_claims(&[kept.clone(), dropped.clone()]).unwrap();
    assert_eq!(
        lost,
        vec![kept],
        "a heartbeat renews only the claims it lists"
    );
    store.claim_holds(&dropped, "r9").unwrap();
}

pub(super) fn queues_are_listed_and_cleared(store: &dyn Store) {
    use crate::store::queue::{statuses, RunnerSpec};
    store
        .register_runner(
            &RunnerSpec::new("r1", "one", offer(1.0, &[]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    store.enqueue(&queued("run3", "a", 1, &[])).unwrap();
    store.enqueue(&queued("run3", "b", 1, &[])).unwrap();
    store
        .enqueue(&queued("run3", "s", 1, &["exec=slurm"]))
        .unwrap();
    assert_eq!(store.claim("r1", 1, 60_000).unwrap().len(), 1);
    // The claim is listed with its runner; waiting attempts are not.
    let claims = store.claims(10).unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].runner, "r1");
    assert_eq!(claims[0].attempt.run, "run3");
    assert!(claims[0].claimed_ms > 0, "{claims:?}");
    assert!(store.claims(0).unwrap().is_empty());
    let (rows, now) = store.queue_rows().unwrap();
    let (runners, _) = store.runners().unwrap();
    let st = statuses(rows, &runners, now);
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!(st[0].key, "default");
    assert_eq!((st[0].depth, st[0].running), (1, 1));
    assert_eq!(st[0].serving, ["one"]);
    assert!(!st[0].unservable);
    assert!(st[0].oldest_wait_ms.is_some_and(|w| w >= 0));
    assert_eq!(st[1].key, "labels=exec=slurm");
    assert_eq!(st[1].requires.labels, ["exec=slurm"]);
    assert!(st[1].unservable && st[1].serving.is_empty(), "{:?}", st[1]);
    let cleared = store.clear_queue("labels=exec=slurm").unwrap();
    assert_eq!(cleared, vec![crate::exec::AttemptId::new("run3", "s", 1)]);
    // Clearing leaves claimed attempts alone.
    let cleared = store.clear_queue("default").unwrap();
    assert_eq!(cleared.len(), 1);
    let (rows, _) = store.queue_rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].depth, rows[0].running), (0, 1));
}

/// The same requirements go to the same runner while it has slots, and a
/// run's attempts prefer the runner already serving it.
pub(crate) fn runners_keep_their_queues_and_runs(store: &dyn Store) {
    use crate::store::queue::RunnerSpec;
    for (id, slots) in [("r-a", 2), ("r-b", 3)] {
        store
            .register_runner(
                &RunnerSpec::new(id, id, offer(2.0, &["ssd"]), slots, "0.1.0"),
                60_000,
            )
            .unwrap();
    }
    let nodes = |got: Vec<crate::store::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    store.enqueue(&queued("ra", "a1", 1, &[])).unwrap();
    assert_eq!(nodes(store.claim("r-a", 1, 60_000).unwrap()), ["ra/a1"]);
    // r-a serves `default` now, with a free slot: the oldest `default`
    // attempt waits for it; r-b takes the labelled one and the rest.
    store.enqueue(&queued("rb", "b1", 1, &[])).unwrap();
    store.enqueue(&queued("rc", "c1", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("rd", "d1", 1, &[])).unwrap();
    assert_eq!(
        nodes(store.claim("r-b", 3, 60_000).unwrap()),
        ["rc/c1", "rd/d1"]
    );
    assert_eq!(nodes(store.claim("r-a", 3, 60_000).unwrap()), ["rb/b1"]);
    // r-a is full: `default` no longer waits for it.
    store.enqueue(&queued("re", "e1", 1, &[])).unwrap();
    assert_eq!(nodes(store.claim("r-b", 3, 60_000).unwrap()), ["re/e1"]);
    // A slot of each frees. Run `rc` is r-b's: its next attempt waits for
    // r-b although r-a claims first, and r-a takes its own run's.
    store
        .finish_claim(&crate::exec::AttemptId::new("ra", "a1", 1), "r-a")
        .unwrap();
    store
        .finish_claim(&crate::exec::AttemptId::new("rd", "d1", 1), "r-b")
        .unwrap();
    store.enqueue(&queued("rc", "c2", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("ra", "a2", 1, &[])).unwrap();
    assert_eq!(
        nodes(store.claim("r-a", 3, 60_000).unwrap()),
        ["ra/a2"],
        "r-a takes its own run's attempt and leaves r-b's run to r-b"
    );
    assert_eq!(nodes(store.claim("r-b", 3, 60_000).unwrap()), ["rc/c2"]);
}

/// A queued attempt handed at once to a runner that a claim of one
/// would give it to (`enqueue_for`), and such a claim put back
/// (`release_claim`).
pub(super) fn a_queued_attempt_is_handed_to_a_runner_that_would_claim_it(store: &dyn Store) {
    use crate::exec::AttemptId;
    use crate::store::queue::RunnerSpec;
    store
        .register_runner(
            &RunnerSpec::new("r-a", "a", offer(2.0, &["ssd"]), 1, "0.1.0"),
            60_000,
        )
        .unwrap();
    store
        .register_runner(
            &RunnerSpec::new("r-b", "b", offer(2.0, &[]), 3, "0.1.0"),
            60_000,
        )
        .unwrap();
    let nodes = |got: Vec<crate::store::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    let id = |run: &str, node: &str| AttemptId::new(run, node, 1);
    // No such runner: queued, waiting.
    assert!(!store
        .enqueue_for(&queued("h", "a", 1, &[]), "nobody", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-b", 1, 60_000).unwrap()), ["h/a"]);
    // Its capabilities do not satisfy it.
    assert!(!store
        .enqueue_for(&queued("h", "s", 1, &["ssd"]), "r-b", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 1, 60_000).unwrap()), ["h/s"]);
    // It fits, a slot is free, nothing else waits: claimed for it, as a
    // claim would (fenced, counted, no longer waiting).
    assert!(store
        .enqueue_for(&queued("h", "b", 1, &[]), "r-b", 60_000)
        .unwrap());
    store.claim_holds(&id("h", "b"), "r-b").unwrap();
    assert!(store.claim_holds(&id("h", "b"), "r-a").is_err());
    let (runners, _) = store.runners().unwrap();
    assert_eq!(
        runners.iter().map(|r| r.running).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(store.claim("r-b", 4, 60_000).unwrap().is_empty());
    let (rows, _) = store.queue_rows().unwrap();
    assert_eq!((rows[0].depth, rows[0].running), (0, 2), "{rows:?}");
    // No free slot.
    assert!(!store
        .enqueue_for(&queued("h", "w", 1, &[]), "r-a", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-b", 4, 60_000).unwrap()), ["h/w"]);
    // Another attempt waits (a claim might take that one first).
    store.enqueue(&queued("h2", "x", 1, &[])).unwrap();
    store.finish_claim(&id("h", "s"), "r-a").unwrap();
    assert!(!store
        .enqueue_for(&queued("h2", "y", 1, &[]), "r-a", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/x"]);
    assert_eq!(
        nodes(store.claim("r-b", 4, 60_000).unwrap()),
        Vec::<String>::new()
    );
    for node in ["a", "b", "w"] {
        store.finish_claim(&id("h", node), "r-b").unwrap();
    }
    store.finish_claim(&id("h2", "x"), "r-a").unwrap();
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/y"]);
    store.finish_claim(&id("h2", "y"), "r-a").unwrap();
    // A rival with a free slot serves the attempt's run, `r-b` only its
    // queue: the attempt waits for the rival, as a claim would leave it.
    assert!(!store
        .enqueue_for(&queued("h2", "z", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert_eq!(nodes(store.claim("r-a", 4, 60_000).unwrap()), ["h2/z"]);
    // The rival full, it goes to `r-b`; put back, it waits again, and only
    // its holder's claim of exactly that attempt is put back.
    assert!(store
        .enqueue_for(&queued("h2", "r", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-a").unwrap());
    assert!(!store
        .release_claim(&AttemptId::new("h2", "r", 2), "r-b")
        .unwrap());
    assert!(store.release_claim(&id("h2", "r"), "r-b").unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-b").unwrap());
    let e = store.claim_holds(&id("h2", "r"), "r-b").unwrap_err();
    assert!(e.to_string().contains("waits in its queue"), "{e}");
    assert_eq!(nodes(store.claim("r-b", 4, 60_000).unwrap()), ["h2/r"]);
    // A withdrawn attempt is not put back.
    assert!(store.dequeue(&id("h2", "r")).unwrap());
    assert!(!store.release_claim(&id("h2", "r"), "r-b").unwrap());
    assert!(store.queue_rows().unwrap().0.iter().all(|q| q.depth == 0));
    // Draining, or its lease run out: no hand-off.
    assert!(store.drain_runner("r-b").unwrap());
    assert!(!store
        .enqueue_for(&queued("h3", "d", 1, &[]), "r-b", 60_000)
        .unwrap());
    assert!(store.dequeue(&id("h3", "d")).unwrap());
    store
        .register_runner(&RunnerSpec::new("r-c", "c", offer(2.0, &[]), 1, "0.1.0"), 1)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!store
        .enqueue_for(&queued("h3", "e", 1, &[]), "r-c", 60_000)
        .unwrap());
    assert!(store.claim_holds(&id("h3", "e"), "r-c").is_err());
}

/// A claim ranks every waiting attempt it may take, not only the oldest
/// few: the runner's own run, then its queue, come first however many
/// older attempts wait before them.
pub(super) fn a_runners_own_attempts_are_found_behind_a_deep_queue(store: &dyn Store) {
    use crate::exec::AttemptId;
    use crate::store::queue::RunnerSpec;
    store
        .register_runner(
            &RunnerSpec::new("deep", "deep", offer(2.0, &["ssd"]), 2, "0.1.0"),
            60_000,
        )
        .unwrap();
    let nodes = |got: Vec<crate::store::queue::QueuedAttempt>| -> Vec<String> {
        got.into_iter()
            .map(|a| format!("{}/{}", a.id.run, a.id.node))
            .collect()
    };
    // It serves run `mine` and the `ssd` queue now.
    store.enqueue(&queued("mine", "m1", 1, &["ssd"])).unwrap();
    assert_eq!(nodes(store.claim("deep", 1, 60_000).unwrap()), ["mine/m1"]);
    for i in 0..40 {
        store
            .enqueue(&queued("old", &format!("o{i:02}"), 1, &[]))
            .unwrap();
    }
    store.enqueue(&queued("new", "s1", 1, &["ssd"])).unwrap();
    store.enqueue(&queued("mine", "m2", 1, &["ssd"])).unwrap();
    assert_eq!(
        nodes(store.claim("deep", 1, 60_000).unwrap()),
        ["mine/m2"],
        "its own run's attempt first, behind 41 older ones (one of its queue)"
    );
    store
        .finish_claim(&AttemptId::new("mine", "m1", 1), "deep")
        .unwrap();
    assert_eq!(
        nodes(store.claim("deep", 1, 60_000).unwrap()),
        ["new/s1"],
        "then its queue's, behind 40 older ones"
    );
    store
        .finish_claim(&AttemptId::new("mine", "m2", 1), "deep")
        .unwrap();
    assert_eq!(nodes(store.claim("deep", 1, 60_000).unwrap()), ["old/o00"]);
}

pub(super) fn a_claim_race_hands_each_attempt_out_once(store: Arc<dyn Store>) {
    use crate::store::queue::RunnerSpec;
    for i in 0..40 {
        store
            .enqueue(&queued("run4", &format!("n{i:02}"), 1, &[]))
            .unwrap();
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = format!("racer{t}");
                store
                    .register_runner(
                        &RunnerSpec::new(&id, &id, offer(1.0, &[]), 1000, "0.1.0"),
                        60_000,
                    )
                    .unwrap();
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(&id, 3, 60_000).unwrap();
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|a| a.id));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an attempt was claimed twice");
    assert_eq!(all.len(), 40);
}
