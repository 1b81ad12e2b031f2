//! The attempts sent to runners and waited for.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Remote, Shipment, WireSpec};
use crate::error::{Error, Result};
use crate::exec::{AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Exit, Interrupt, Report};
use crate::store::queue::QueuedAttempt;

impl Remote {
    pub(super) fn enqueue(
        self: &Arc<Self>,
        spec: &AttemptSpec,
        link: AttemptLink,
        shipment: Option<&Arc<Shipment>>,
    ) -> Result<()> {
        let need = self.remote_need(&spec.task);
        let mut wire = WireSpec::from(spec);
        if let Some(s) = shipment {
            wire.files = s.files().to_vec();
        }
        let payload = serde_json::to_string(&wire).expect("a spec is JSON");
        if payload.len() > crate::store::queue::MAX_PAYLOAD {
            return Err(Error::Refused {
                what: format!("attempt {}", spec.id),
                message: format!(
                    "its inputs are {} bytes, more than a runner takes ({})",
                    payload.len(),
                    crate::store::queue::MAX_PAYLOAD
                ),
            });
        }
        let AttemptLink {
            id, reports, kill, ..
        } = link;
        self.enqueuing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reports);
        if let Some(s) = shipment {
            self.shipments
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), s.clone());
        }
        if !spec.task.produces.is_empty() {
            self.produces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), spec.task.produces.clone());
        }
        let queued = self.queue(QueuedAttempt::new(id.clone(), need, payload));
        self.enqueuing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Err(e) = queued {
            self.take(&id);
            return Err(e);
        }
        self.watch(id, kill);
        Ok(())
    }

    /// Withdraws attempt `id` when the engine asks it gone through `kill`
    /// (a runner holding it learns from its next heartbeat and kills it);
    /// nothing when the line closes (the attempt ended or was detached).
    fn watch(self: &Arc<Self>, id: AttemptId, mut kill: mpsc::UnboundedReceiver<super::Stop>) {
        let me = self.clone();
        tokio::spawn(async move {
            if kill.recv().await.is_some() {
                if let Some(tx) = me.take(&id) {
                    let gone = id.clone();
                    let remote = me.clone();
                    let runner = tokio::task::spawn_blocking(move || {
                        let _ = remote.store.dequeue(&gone);
                        // The slot of the runner that held it frees.
                        remote.queue_changed();
                        remote.ran_on(&gone)
                    })
                    .await
                    .ok()
                    .flatten();
                    let mut end = AttemptEnd::ended(Exit::Unknown);
                    end.interrupt(Interrupt::Killed);
                    end.runner = runner;
                    let _ = tx.send(Report::Finished { attempt: id, end });
                }
            }
        });
    }

    /// Waits again for attempt `link.id`, queued or claimed before this
    /// engine took its run over (the previous owner stopped or died):
    /// its reports go to `link` from now on. `false` (and nothing waits)
    /// when the attempt will never report: its queue row is gone or
    /// names a later attempt, or its runner lost the claim's lease; the
    /// row is removed then, and the caller runs the node again.
    pub fn reattach(self: &Arc<Self>, link: AttemptLink) -> Result<bool> {
        let AttemptLink {
            id, reports, kill, ..
        } = link;
        // In the map first: a report arriving while the store is asked is
        // not refused as unexpected.
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reports);
        match self.store.lost_claims(std::slice::from_ref(&id)) {
            Ok(lost) if lost.is_empty() => {
                self.watch(id, kill);
                Ok(true)
            }
            Ok(_) => {
                self.take(&id);
                self.queue_changed();
                Ok(false)
            }
            Err(e) => {
                self.take(&id);
                Err(e)
            }
        }
    }

    /// Stops waiting for attempt `id` without withdrawing it: its runner
    /// keeps it, and the engine that takes the run over next re-attaches
    /// to it ([`Remote::reattach`]). `false` when this engine did not wait
    /// for it (it runs here, or it ended).
    pub fn detach(&self, id: &AttemptId) -> bool {
        self.take(id).is_some()
    }

    pub(super) fn take(&self, id: &AttemptId) -> Option<mpsc::UnboundedSender<Report>> {
        self.shipments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.produces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// The attempts this engine waits for.
    pub fn waiting(&self) -> Vec<AttemptId> {
        let mut v: Vec<_> = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Ends, as interrupted, every attempt this engine waits for whose
    /// runner lost its lease (or that left the queue): their nodes run
    /// again as their next attempt. Returns them (not those a report
    /// ended while the sweep looked).
    pub fn sweep(&self) -> Result<Vec<AttemptId>> {
        let _turn = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let mut waiting = self.waiting();
        {
            let enqueuing = self.enqueuing.lock().unwrap_or_else(|p| p.into_inner());
            waiting.retain(|id| !enqueuing.contains(id));
        }
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        // Only those this sweep ends: one a report ended meanwhile is not
        // lost, and its node does not run again.
        let mut ended = Vec::new();
        let lost = self.store.lost_claims(&waiting)?;
        if !lost.is_empty() {
            // Their runners' slots free.
            self.queue_changed();
        }
        for id in lost {
            if let Some(tx) = self.take(&id) {
                let mut end = AttemptEnd::ended(Exit::Unknown);
                end.interrupt(Interrupt::Lost(format!(
                    "interrupted: attempt {id} lost its runner (no heartbeat within the {} ms lease); the node runs again",
                    self.lease_ms
                )));
                end.runner = self.ran_on(&id);
                let _ = tx.send(Report::Finished {
                    attempt: id.clone(),
                    end,
                });
                ended.push(id);
            }
        }
        Ok(ended)
    }

    /// Removes the waiting attempts of queue `key`; those this engine
    /// waits for fail (their retries, if any, queue them again).
    pub fn clear(&self, key: &str, by: &str) -> Result<Vec<AttemptId>> {
        let _turn = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let cleared = self.store.clear_queue(key)?;
        for id in &cleared {
            if let Some(tx) = self.take(id) {
                let end = AttemptEnd::broken(format!(
                    "cleared from queue `{key}` by {by} before a runner claimed it"
                ));
                let _ = tx.send(Report::Finished {
                    attempt: id.clone(),
                    end,
                });
            }
        }
        Ok(cleared)
    }
}
