//! Opening a SQLite database: recognising it as orch's, upgrading an older
//! schema, and the connection's settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::schema::{
    MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4, MIGRATE_5_TO_6, MIGRATE_5_TO_6_RUNNERS,
    READ_ONLY_2_AS_3, READ_ONLY_3_AS_4, READ_ONLY_4_AS_5, READ_ONLY_5_AS_6, SCHEMA, SCHEMA_VERSION,
};
use super::{wrapper, Mode, SqliteStore};
use crate::error::{Error, Result};

impl SqliteStore {
    pub(super) fn init(conn: &Connection, path: &Path, mode: Mode) -> Result<()> {
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(wrapper(path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrapper(path))?;
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: format!(
                    "schema version {version} is newer than this orch understands ({SCHEMA_VERSION})"
                ),
            });
        }
        // Before anything is written: a file that is not an orch database
        // (empty, or another application's) is left as it is.
        SqliteStore::recognise(conn, path, mode)?;
        if mode == Mode::ReadOnly && version == 2 {
            // An older orch's database, read by this one without changing it.
            conn.execute_batch(READ_ONLY_2_AS_3)
                .map_err(wrapper(path))?;
        }
        if mode == Mode::ReadOnly && (2..=3).contains(&version) {
            conn.execute_batch(READ_ONLY_3_AS_4)
                .map_err(wrapper(path))?;
        }
        if mode == Mode::ReadOnly && (2..=4).contains(&version) {
            conn.execute_batch(READ_ONLY_4_AS_5)
                .map_err(wrapper(path))?;
        }
        // (Version 2's view of the attempts has the runner already.)
        if mode == Mode::ReadOnly && (3..=5).contains(&version) {
            conn.execute_batch(READ_ONLY_5_AS_6)
                .map_err(wrapper(path))?;
        }
        if mode != Mode::ReadOnly {
            // Switching to WAL takes the file for a moment; another process
            // opening a new database at the same time may hold it, and
            // SQLite answers "locked" at once instead of waiting.
            retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))
                .map_err(wrapper(path))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(wrapper(path))?;
            // The migration, the schema and its version in one
            // transaction: a crash or a full disk halfway leaves the old
            // version whole. A database already at this version is not
            // written to at all.
            if version < SCHEMA_VERSION {
                retry_busy(|| {
                    SqliteStore::upgrade(conn).inspect_err(|_| {
                        let _ = conn.execute_batch("ROLLBACK");
                    })
                })
                .map_err(wrapper(path))?;
            }
        }
        // Room for the multi-row statements of big batches beside the
        // per-event ones.
        conn.set_prepared_statement_cache_capacity(32);
        // A testing aid: simulate a full disk once the file reaches this
        // many pages (SQLite's max_page_count is per connection).
        #[cfg(feature = "testing")]
        if let Some(pages) = std::env::var("ORCH_TEST_MAX_PAGES")
            .ok()
            .and_then(|p| p.parse::<i64>().ok())
        {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(wrapper(path))?;
        }
        Ok(())
    }

    /// Refuses a file that is not an orch database: one with orch's
    /// version mark and tables; for [`Mode::Create`], also a database with
    /// no tables at all (a new file).
    fn recognise(conn: &Connection, path: &Path, mode: Mode) -> Result<()> {
        // The version read again with the tables, in one snapshot: another
        // process may have created the schema since the version was read.
        let (tables, ours, version): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE name IN ('runs', 'events')),
                        (SELECT user_version FROM pragma_user_version)
                 FROM sqlite_master WHERE type = 'table'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(wrapper(path))?;
        let orch = version >= 1 && ours == 2;
        let fresh = version == 0 && tables == 0;
        if orch || (fresh && mode == Mode::Create) {
            return Ok(());
        }
        let what = if fresh {
            "it is empty: no workflow ran with it; run a workflow first".to_string()
        } else {
            format!(
                "it holds {tables} table(s) but not orch's (schema version {version}): another application's database? point --db or ORCH_DB at the file a workflow wrote"
            )
        };
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("not an orch database: {what}; it was left as it is"),
        })
    }

    /// Brings the schema to this version in one transaction. The version
    /// is read again inside it: another process may have upgraded the
    /// file meanwhile.
    fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            if version == 1 {
                conn.execute_batch(MIGRATE_1_TO_2)?;
            }
            if (1..=2).contains(&version) {
                conn.execute_batch(MIGRATE_2_TO_3)?;
            }
            if (1..=3).contains(&version) {
                conn.execute_batch(MIGRATE_3_TO_4)?;
            }
            if (1..=5).contains(&version) {
                conn.execute_batch(MIGRATE_5_TO_6)?;
            }
            // (Older ones get the runners from `SCHEMA`.)
            if version == 5 {
                conn.execute_batch(MIGRATE_5_TO_6_RUNNERS)?;
            }
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        conn.execute_batch("COMMIT")
    }
}

/// `f`, tried again for up to 10 s while SQLite answers "busy" or
/// "locked" without waiting (a schema change racing another process's).
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
