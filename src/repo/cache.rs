//! Snapshots already read, by workflow and commit.
//!
//! A commit's files never change, so a workflow read at a commit can be
//! kept and handed out again without asking git: a run started through
//! the API reads the workflow at the head, and the next run of the same
//! version (a schedule, a retry, a burst of starts) finds it here. What
//! the cache cannot know is whether that commit is still on `main` (a
//! writer other than orch may move the branch); [`Repo::get`] checks
//! that before it hands a kept snapshot out.
//!
//! Bounded by entries and by the bytes of the files kept; the oldest
//! snapshot is forgotten first. A snapshot larger than the whole budget
//! is not kept.
//!
//! [`Repo::get`]: super::Repo::get

use std::collections::VecDeque;

use super::Snapshot;

/// The most snapshots kept.
pub(super) const MAX_ENTRIES: usize = 64;

/// The most bytes of file content kept, all snapshots together.
pub(super) const MAX_BYTES: usize = 16 << 20;

/// Snapshots by (workflow, full commit id), oldest first.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    kept: VecDeque<Snapshot>,
    bytes: usize,
}

/// The bytes a snapshot holds (its files' content and names).
fn weight(s: &Snapshot) -> usize {
    s.files
        .iter()
        .map(|f| f.content.len() + f.path.len() + f.sha256.len())
        .sum::<usize>()
        + s.workflow.len()
        + s.commit.len()
        + s.main_file.len()
}

impl Snapshots {
    /// The snapshot of `workflow` at `commit` (a full id), if kept.
    pub(super) fn get(&self, workflow: &str, commit: &str) -> Option<Snapshot> {
        self.kept
            .iter()
            .find(|s| s.workflow == workflow && s.commit == commit)
            .cloned()
    }

    /// Keeps `snap`, forgetting the oldest snapshots to stay within the
    /// bounds.
    pub(super) fn put(&mut self, snap: &Snapshot) {
        let w = weight(snap);
        let kept = |s: &Snapshot| s.workflow == snap.workflow && s.commit == snap.commit;
        if w > MAX_BYTES || self.kept.iter().any(kept) {
            return;
        }
        while self.kept.len() >= MAX_ENTRIES || self.bytes + w > MAX_BYTES {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= weight(&old);
        }
        self.bytes += w;
        self.kept.push_back(snap.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::WorkflowFile;

    fn snap(workflow: &str, commit: &str, size: usize) -> Snapshot {
        Snapshot {
            workflow: workflow.into(),
            commit: commit.into(),
            main_file: "workflow.yaml".into(),
            files: vec![WorkflowFile {
                path: "workflow.yaml".into(),
                content: vec![b'x'; size],
                sha256: "0".repeat(64),
            }],
        }
    }

    #[test]
    fn a_kept_snapshot_is_found_by_workflow_and_commit_only() {
        let mut c = Snapshots::default();
        c.put(&snap("a", "c1", 10));
        assert_eq!(c.get("a", "c1"), Some(snap("a", "c1", 10)));
        assert_eq!(c.get("a", "c2"), None);
        assert_eq!(c.get("b", "c1"), None);
        // The same snapshot again is kept once.
        c.put(&snap("a", "c1", 10));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_oldest_go_first_when_entries_or_bytes_run_out() {
        let mut c = Snapshots::default();
        for i in 0..MAX_ENTRIES + 3 {
            c.put(&snap("a", &format!("c{i}"), 1));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.get("a", "c0"), None);
        assert_eq!(c.get("a", "c2"), None);
        assert!(c.get("a", "c3").is_some());

        let mut c = Snapshots::default();
        let half = MAX_BYTES / 2;
        c.put(&snap("a", "big1", half));
        c.put(&snap("a", "big2", half));
        // Two halves and their names are over the budget: the first went.
        assert_eq!(c.get("a", "big1"), None);
        assert!(c.get("a", "big2").is_some());
        assert!(c.bytes <= MAX_BYTES);
    }

    #[test]
    fn a_snapshot_over_the_whole_budget_is_not_kept() {
        let mut c = Snapshots::default();
        c.put(&snap("a", "small", 1));
        c.put(&snap("a", "huge", MAX_BYTES + 1));
        assert_eq!(c.get("a", "huge"), None);
        assert!(c.get("a", "small").is_some());
    }
}
