//! Users, tokens and the server's paged run list, in SQLite.

use rusqlite::{params, OptionalExtension, Row};

use super::schema::NOW_MS;
use super::SqliteStore;
use crate::access::{Permission, Role};
use crate::error::{Error, Result};
use crate::store::{RunFilter, RunSummary, TokenRecord, UserRecord};

use crate::store::MAX_RUNS_PAGE as MAX_PAGE;

fn bad_column(what: &str, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} `{text}` is not one orch knows").into(),
    )
}

/// A line of the run list: `id, workflow, status, created_at,
/// finished_at, node count, fired_at`, in that order.
pub(super) fn summary_row(r: &Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        id: r.get(0)?,
        workflow: r.get(1)?,
        status: r.get(2)?,
        created_at: r.get(3)?,
        finished_at: r.get(4)?,
        nodes: r.get::<_, i64>(5)? as u64,
        fired_at: r.get(6)?,
    })
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let role: String = r.get(1)?;
    Ok(UserRecord {
        name: r.get(0)?,
        role: role.parse().map_err(|_| bad_column("role", &role))?,
        password_hash: r.get(2)?,
        created_ms: r.get(3)?,
    })
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scopes: String = r.get(4)?;
    let scopes = scopes
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Permission>().map_err(|_| bad_column("scope", s)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(TokenRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        name: r.get(2)?,
        hash: r.get(3)?,
        scopes,
        runner: r.get(5)?,
        created_ms: r.get(6)?,
        expires_ms: r.get(7)?,
        revoked_ms: r.get(8)?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, user, name, hash, scopes, runner, created_at, expires_at, revoked_at";

impl SqliteStore {
    pub(super) fn page_of_runs(&self, f: &RunFilter) -> Result<Vec<RunSummary>> {
        // Only the filters given, so that SQLite picks the index that
        // fits (`runs_workflow_status`, `runs_workflow_created`,
        // `runs_status`, `runs_created`)
        // and a deep page starts at its cursor, not at the newest run.
        let mut conds = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(w) = &f.workflow {
            args.push(w.clone().into());
            conds.push(format!("workflow = ?{}", args.len()));
        }
        if let Some(st) = f.status {
            args.push(st.as_str().to_string().into());
            conds.push(format!("status = ?{}", args.len()));
        }
        if let Some(b) = &f.before {
            args.push(b.clone().into());
            let n = args.len();
            // One row value, so that the cursor is an index range
            // (`SEARCH runs USING INDEX runs_created (created_at<?)`): the
            // same test written with `OR` made SQLite scan from the newest
            // run and filter, 0.7 ms for a page 180 deep in 10,000 runs.
            conds.push(format!(
                "(created_at, rowid) < (SELECT created_at, rowid FROM runs AS b WHERE b.id = ?{n})"
            ));
        }
        // Stored times are UTC text of one width: text order is time
        // order, and the `created_at` at the end of each runs index serves
        // the range.
        if let Some(t) = f.created_after {
            args.push(crate::store::stored_moment(t).into());
            conds.push(format!("created_at >= ?{}", args.len()));
        }
        if let Some(t) = f.created_before {
            args.push(crate::store::stored_moment(t).into());
            conds.push(format!("created_at < ?{}", args.len()));
        }
        args.push((f.limit.clamp(1, MAX_PAGE) as i64).into());
        let limit = args.len();
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT id, workflow, status, created_at, finished_at,
                    (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                    json_extract(config, '$.fired_at')
             FROM runs {filter}
             ORDER BY created_at DESC, rowid DESC LIMIT ?{limit}"
        );
        let c = self.lock();
        let mut stmt = c.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), summary_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn counts_of_runs(&self) -> Result<Vec<(String, u64)>> {
        let c = self.lock();
        let mut stmt = c
            .prepare_cached("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn insert_user(&self, u: &UserRecord) -> Result<bool> {
        let c = self.lock();
        let n = c
            .execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO NOTHING",
                params![u.name, u.role.as_str(), u.password_hash, u.created_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn read_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let c = self.lock();
        c.query_row(
            "SELECT name, role, password_hash, created_at FROM users WHERE name = ?1",
            [name],
            user_row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub(super) fn read_users(&self) -> Result<Vec<UserRecord>> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT name, role, password_hash, created_at FROM users ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], user_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn change_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<bool> {
        let c = self.lock();
        let n = c
            .execute(
                "UPDATE users SET role = coalesce(?2, role), password_hash = coalesce(?3, password_hash)
                 WHERE name = ?1",
                params![name, role.map(Role::as_str), password_hash],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn delete_user(&self, name: &str) -> Result<bool> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            &format!(
                "UPDATE tokens SET revoked_at = {NOW_MS} WHERE user = ?1 AND revoked_at IS NULL"
            ),
            [name],
        )
        .map_err(|e| self.err(e))?;
        let n = tx
            .execute("DELETE FROM users WHERE name = ?1", [name])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    pub(super) fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        let scopes: Vec<&str> = t.scopes.iter().map(|p| p.as_str()).collect();
        let c = self.lock();
        c.execute(
            &format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                t.id,
                t.user,
                t.name,
                t.hash,
                scopes.join(","),
                t.runner,
                t.created_ms,
                t.expires_ms,
                t.revoked_ms
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Error::Refused {
                    what: format!("token `{}`", t.id),
                    message: "a token with this id exists".into(),
                }
            }
            e => self.err(e),
        })?;
        Ok(())
    }

    pub(super) fn read_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let c = self.lock();
        c.query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
            [id],
            token_row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub(super) fn read_tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let c = self.lock();
        let mut stmt = c
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE (?1 IS NULL OR user = ?1) ORDER BY created_at, id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([user], token_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e));
        rows
    }

    pub(super) fn revoke(&self, id: &str) -> Result<bool> {
        let c = self.lock();
        let n = c
            .execute(
                &format!(
                    "UPDATE tokens SET revoked_at = {NOW_MS} WHERE id = ?1 AND revoked_at IS NULL"
                ),
                [id],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }
}
