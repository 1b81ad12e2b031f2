//! The group commit: what the loop queued (events, log lines, taken
//! signals) is written in one transaction fenced by the lease, now or by a
//! deadline, and the observers hear of it.

use super::{Runner, GROUP_MAX_DELAY, GROUP_MAX_EVENTS};
use crate::engine::fault::Fault;
use crate::error::Result;
use crate::history::EventKind;

impl Runner {
    /// Writes the queued events, logs and taken signals in one
    /// transaction fenced by the lease, then tells the observers.
    pub(in crate::engine) fn flush(&mut self) -> Result<()> {
        if self.queued.is_empty() && self.logs.is_empty() && self.taken.is_empty() {
            return Ok(());
        }
        self.store.commit(
            &self.lease,
            &self.state,
            &self.queued,
            &self.logs,
            &self.taken,
        )?;
        self.enablers.clear();
        self.logs.clear();
        self.write_due = None;
        self.deferred = 0;
        self.taken.clear();
        if !self.queued.is_empty() {
            for o in &self.observers {
                o.committed(&self.state, &self.queued);
            }
        }
        // Cleared, not replaced: the next commit reuses the allocation.
        self.queued.clear();
        self.gathering = None;
        Ok(())
    }

    /// Writes what waits alone by `at` at the latest.
    pub(super) fn write_by(&mut self, at: tokio::time::Instant) {
        self.write_due = Some(self.write_due.map_or(at, |due| due.min(at)));
    }

    /// The `start_unwritten` fault: dies before a started attempt that
    /// waited alone for a commit is written.
    pub(super) fn fault_unwritten(&mut self) {
        if self.fault.is_none() || self.deferred == 0 {
            return;
        }
        let started: Vec<String> = self
            .queued
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::AttemptStarted { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect();
        for node in started {
            self.fault(Fault::StartUnwritten, &node);
        }
    }

    /// Whether the queued events are a full group commit: as many as one
    /// may hold, or gathered for as long.
    pub(super) fn group_full(&mut self) -> bool {
        if self.queued.is_empty() {
            return false;
        }
        let since = *self.gathering.get_or_insert_with(tokio::time::Instant::now);
        self.queued.len() >= GROUP_MAX_EVENTS || since.elapsed() >= GROUP_MAX_DELAY
    }
}
