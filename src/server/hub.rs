//! Committed events of the runs this server's engine drives, fanned out
//! to whoever waits on them (`wait`, the event stream): an engine
//! [`Observer`] that costs nothing while nobody listens.

use tokio::sync::broadcast;

use crate::engine::Observer;
use crate::history::{Event, RunState};

/// One commit of one run.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The run.
    pub run: String,
    /// Its events, in order.
    pub events: Vec<Event>,
}

/// The fan-out.
pub struct Hub {
    tx: broadcast::Sender<Commit>,
}

impl Hub {
    /// A hub keeping up to `capacity` commits for slow listeners (a
    /// listener that falls further behind reads the store instead).
    pub fn new(capacity: usize) -> Hub {
        Hub {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Commits from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Commit> {
        self.tx.subscribe()
    }
}

/// Waits until a commit of `run` arrives on `rx`, the feed lags or
/// closes, or `within` passed: the moment for a waiter to look at the
/// store again.
pub async fn next_of(rx: &mut broadcast::Receiver<Commit>, run: &str, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(c) if c.run == run => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

impl Observer for Hub {
    fn committed(&self, state: &RunState, events: &[Event]) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Commit {
                run: state.run.clone(),
                events: events.to_vec(),
            });
        }
    }
}
