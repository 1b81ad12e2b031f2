//! The checks of signals: stored, listed, refused for ended runs, taken.

use serde_json::json;

use super::{owner, register};
use crate::error::Error;
use crate::history::{Event, EventKind};
use crate::model::RunStatus;
use crate::store::{Signal, Store};

pub(super) fn signals_are_stored_listed_and_taken(store: &dyn Store) {
    let a = owner("engine-a");
    let mut f = register(store, "run-sig", &a);
    let pause = store.request("run-sig", &Signal::Pause).expect("pause");
    let input = store
        .request(
            "run-sig",
            &Signal::Input {
                node: "ask".into(),
                value: json!([1, 2]),
            },
        )
        .expect("input");
    let pending = store.pending().expect("pending");
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.id, p.run.as_str(), p.signal.clone()))
            .collect::<Vec<_>>(),
        vec![
            (pause, "run-sig", Signal::Pause),
            (
                input,
                "run-sig",
                Signal::Input {
                    node: "ask".into(),
                    value: json!([1, 2])
                }
            ),
        ]
    );
    let e = Event {
        seq: f.state.last_seq + 1,
        at: crate::time::now(),
        kind: EventKind::RunStatus {
            status: RunStatus::Paused,
            reason: None,
        },
    };
    f.state.apply(&e);
    store
        .commit(&f.lease, &f.state, &[e], &[], &[pause])
        .expect("commit taking the pause");
    assert_eq!(store.pending().expect("pending").len(), 1);
    assert!(matches!(
        store.request(
            "run-sig",
            &Signal::Input {
                node: "work".into(),
                value: json!(1)
            }
        ),
        Err(Error::NotInput { .. })
    ));
    assert!(matches!(
        store.request("nope", &Signal::Cancel),
        Err(Error::UnknownRun(_))
    ));
    let lease = f.lease.clone();
    f.commit(
        store,
        &lease,
        vec![EventKind::RunStatus {
            status: RunStatus::Cancelled,
            reason: None,
        }],
    )
    .expect("end");
    assert!(matches!(
        store.request("run-sig", &Signal::Cancel),
        Err(Error::RunEnded { .. })
    ));
    assert!(
        store.pending().expect("pending").is_empty(),
        "an ended run's signals are not pending"
    );
}
