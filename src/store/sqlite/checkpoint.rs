//! The write-ahead log's checkpoints, beside the store's commits instead
//! of inside them.
//!
//! Left to itself, SQLite checkpoints a WAL database from the commit that
//! takes the log past 1,000 pages: that commit copies the log into the
//! database file (and syncs both) before it returns, on the committing
//! thread: the registration's writer, the run loop. A writing
//! [`SqliteStore`](super::SqliteStore) instead hooks its connection's
//! commits ([`Connection::wal_hook`], which replaces SQLite's automatic
//! checkpoint) and, past those 1,000 pages, wakes its checkpointer: a
//! thread with a connection of its own to the same file that runs a
//! passive checkpoint (which takes no writer lock and never waits on the
//! busy handler, so it never holds up a commit). The log starts again
//! from its beginning only when a write transaction begins with it wholly
//! copied; should that not happen (the checkpointer failing, or never
//! done before the next commit begins), the committing connection
//! checkpoints the log itself once it has grown by ten times that since
//! the checkpointer was first woken, as SQLite would have, so the log
//! stays bounded. (One transaction can be larger than any bound: the
//! registration of 100,000 nodes writes some 14,000 pages; the
//! checkpointer copies them while the run goes on.) Checkpoints do not change what
//! is committed: a commit is durable in the log whether or not it was
//! copied yet.

use std::ffi::c_int;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use super::wrapper;
use crate::error::{Error, Result};

/// The log's size (in pages) from which the checkpointer is woken after a
/// commit: SQLite's own automatic checkpoint threshold.
pub(super) const WAKE_PAGES: c_int = 1_000;

/// By how many pages the log may grow after the checkpointer was first
/// woken, without the log starting again, before the committing
/// connection checkpoints the log itself.
pub(super) const SELF_PAGES: c_int = 10 * WAKE_PAGES;

/// What a commit that left `pages` pages in the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCommit {
    /// Nothing: the log is small.
    Nothing,
    /// Wakes the checkpointer.
    Wake,
    /// Checkpoints the log itself, on the committing thread.
    Checkpoint,
}

/// What a commit that left `pages` pages in the log does, and the log's
/// size from which its growth now counts: `since`, the size at the first
/// wake since the log last started again (`None`: no wake yet). A log
/// smaller than `since` was checkpointed and started again meanwhile, so
/// the count starts again.
fn after_commit(pages: c_int, since: Option<c_int>) -> (AfterCommit, Option<c_int>) {
    match since {
        _ if pages < WAKE_PAGES => (AfterCommit::Nothing, since),
        Some(from) if pages >= from && pages - from >= SELF_PAGES => {
            (AfterCommit::Checkpoint, Some(pages))
        }
        Some(from) if pages >= from => (AfterCommit::Wake, Some(from)),
        _ => (AfterCommit::Wake, Some(pages)),
    }
}

/// What the committing side tells the thread.
#[derive(Debug, Default)]
struct Signals {
    /// The log has grown past [`WAKE_PAGES`] since the last checkpoint began.
    pending: bool,
    /// The store is being dropped.
    stop: bool,
    /// The log's size at the first wake since it last started again (or
    /// since the committer's own last checkpoint).
    since: Option<c_int>,
}

#[derive(Debug, Default)]
struct Shared {
    signals: Mutex<Signals>,
    woken: Condvar,
    /// Held by the thread while it checkpoints, and by the committing
    /// side for its own checkpoint: SQLite refuses a second checkpoint at
    /// once (busy) instead of waiting, so the committer's would fail
    /// against a thread that keeps checkpointing and the bound not hold.
    checkpointing: Mutex<()>,
}

impl Shared {
    fn signals(&self) -> MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The committing side, after a commit that left `pages` pages in the
    /// log: what it does beyond waking the thread.
    fn committed(&self, pages: c_int) -> AfterCommit {
        if pages < WAKE_PAGES {
            // The common case takes no lock.
            return AfterCommit::Nothing;
        }
        let action = {
            let mut s = self.signals();
            let (action, since) = after_commit(pages, s.since);
            s.since = since;
            s.pending |= action == AfterCommit::Wake;
            action
        };
        if action == AfterCommit::Wake {
            self.woken.notify_one();
        }
        action
    }

    /// The right to checkpoint (see [`Shared::checkpointing`]).
    fn checkpointing(&self) -> MutexGuard<'_, ()> {
        self.checkpointing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self) {
        self.signals().stop = true;
        self.woken.notify_one();
    }

    /// Waits for a wake; `false` when the store is being dropped.
    fn next(&self) -> bool {
        let mut s = self.signals();
        while !s.pending && !s.stop {
            s = self.woken.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.pending = false;
        !s.stop
    }
}

/// The checkpointer of one writing store: its thread ends, and is joined,
/// when this is dropped (after a checkpoint under way has finished).
#[derive(Debug)]
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Hooks `conn`'s commits and starts the thread that checkpoints the
    /// database at `path` when they tell it to. The thread opens its
    /// connection at its first checkpoint: a store whose log never grows
    /// past [`WAKE_PAGES`] opens none.
    pub(super) fn attach(conn: &mut Connection, path: &Path) -> Result<Checkpointer> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let (shared, path) = (Arc::clone(&shared), path.to_path_buf());
            std::thread::Builder::new()
                .name("orch-checkpoint".into())
                .spawn(move || run(&path, &shared))
                .map_err(|e| Error::io("starting the store's checkpointer", e))?
        };
        let checkpointer = Checkpointer {
            shared: Arc::clone(&shared),
            thread: Some(thread),
        };
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if shared.committed(pages) == AfterCommit::Checkpoint {
                // As SQLite's automatic checkpoint: passive, after the
                // thread's checkpoint under way if any (so that this one
                // finishes and the next transaction starts the log again);
                // a failure (another process's checkpoint) leaves it to a
                // later commit; the commit itself has happened.
                let _turn = shared.checkpointing();
                if let Err(e) = wal.checkpoint() {
                    tracing::debug!(error = %e, pages, "the committing connection's checkpoint");
                }
            }
            Ok(())
        }))
        .map_err(wrapper(path))?;
        Ok(checkpointer)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a passive checkpoint at every wake.
fn run(path: &Path, shared: &Shared) {
    let mut conn: Option<Connection> = None;
    while shared.next() {
        if conn.is_none() {
            conn = open(path)
                .inspect_err(|e| tracing::debug!(error = %e, path = %path.display(), "opening the checkpointer's connection"))
                .ok();
        }
        if let Some(c) = &conn {
            let _turn = shared.checkpointing();
            match c.wal_checkpoint_v2(Some("main"), Default::default()) {
                // (-1: the connection does not see the file in WAL mode.)
                Ok((log, copied)) if log >= 0 => tracing::trace!(log, copied, "checkpoint"),
                Ok(_) => tracing::debug!(path = %path.display(), "checkpoint: no log"),
                // Busy: another connection's checkpoint under way.
                Err(e) => tracing::debug!(error = %e, path = %path.display(), "checkpoint"),
            }
        }
    }
}

/// The checkpointer's connection: the file exists (the store created it),
/// `synchronous` as the store's, so that a checkpoint syncs as before.
/// It reads once: a connection learns that the file is in WAL mode (and
/// opens the log) at its first read; until then SQLite's checkpoint does
/// nothing.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_wakes_the_checkpointer_past_sqlites_threshold_and_checkpoints_itself_past_ten_times_it(
    ) {
        use AfterCommit::*;
        // A small log: nothing, whatever is owed.
        assert_eq!(after_commit(0, None), (Nothing, None));
        assert_eq!(
            after_commit(WAKE_PAGES - 1, Some(5_000)),
            (Nothing, Some(5_000))
        );
        // Past the threshold: a wake, the count starting there.
        assert_eq!(after_commit(WAKE_PAGES, None), (Wake, Some(WAKE_PAGES)));
        // A large first transaction (a registration) only wakes it.
        assert_eq!(after_commit(14_000, None), (Wake, Some(14_000)));
        // Later commits while the log has not started again: wakes, the
        // count kept...
        assert_eq!(after_commit(14_500, Some(14_000)), (Wake, Some(14_000)));
        assert_eq!(
            after_commit(14_000 + SELF_PAGES - 1, Some(14_000)),
            (Wake, Some(14_000))
        );
        // ...until the log grew by the bound: the committer checkpoints.
        assert_eq!(
            after_commit(14_000 + SELF_PAGES, Some(14_000)),
            (Checkpoint, Some(14_000 + SELF_PAGES))
        );
        // A log restarted meanwhile (smaller than where the count began).
        assert_eq!(after_commit(1_200, Some(14_000)), (Wake, Some(1_200)));
    }

    #[test]
    fn wakes_are_coalesced_and_a_stop_ends_the_wait() {
        let shared = Shared::default();
        assert_eq!(shared.committed(10), AfterCommit::Nothing);
        assert!(!shared.signals().pending);
        assert_eq!(shared.committed(WAKE_PAGES), AfterCommit::Wake);
        assert_eq!(shared.committed(WAKE_PAGES + 1), AfterCommit::Wake);
        assert!(shared.next());
        assert!(!shared.signals().pending);
        assert_eq!(shared.signals().since, Some(WAKE_PAGES));
        shared.committed(WAKE_PAGES);
        shared.stop();
        assert!(!shared.next());
    }

    #[test]
    fn a_dropped_checkpointer_ends_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut conn = Connection::open(&path).unwrap();
        let c = Checkpointer::attach(&mut conn, &path).unwrap();
        c.shared.committed(WAKE_PAGES);
        // Joins the thread, which opened its connection or is about to.
        drop(c);
    }
}
