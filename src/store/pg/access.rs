//! Users, tokens and the server's paged run list, in PostgreSQL.

use postgres::Row;

use super::conn::Tx;
use super::{is_unique_violation, PgStore, NOW_MS};
use crate::access::{Permission, Role};
use crate::error::{Error, Result};
use crate::store::{RunFilter, RunSummary, TokenRecord, UserRecord, MAX_RUNS_PAGE};

const TOKEN_COLUMNS: &str =
    "id, \"user\", name, hash, scopes, runner, created_at, expires_at, revoked_at";

impl PgStore {
    fn user_row(&self, tx: &Tx<'_>, r: &Row) -> Result<UserRecord> {
        let role: String = tx.get(r, 1)?;
        Ok(UserRecord {
            name: tx.get(r, 0)?,
            role: role
                .parse()
                .map_err(|_| self.corrupt(format!("stored role `{role}` is not one orch knows")))?,
            password_hash: tx.get(r, 2)?,
            created_ms: tx.get(r, 3)?,
        })
    }

    fn token_row(&self, tx: &Tx<'_>, r: &Row) -> Result<TokenRecord> {
        let scopes: String = tx.get(r, 4)?;
        let scopes = scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Permission>()
                    .map_err(|_| self.corrupt(format!("stored scope `{s}` is not one orch knows")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenRecord {
            id: tx.get(r, 0)?,
            user: tx.get(r, 1)?,
            name: tx.get(r, 2)?,
            hash: tx.get(r, 3)?,
            scopes,
            runner: tx.get(r, 5)?,
            created_ms: tx.get(r, 6)?,
            expires_ms: tx.get(r, 7)?,
            revoked_ms: tx.get(r, 8)?,
        })
    }

    pub(super) fn page_of_runs(&self, f: &RunFilter) -> Result<Vec<RunSummary>> {
        let limit = f.limit.clamp(1, MAX_RUNS_PAGE) as i64;
        let status = f.status.map(|s| s.as_str());
        // Stored times are UTC text of one width (text order is time
        // order); `runs_created`, `runs_workflow_created` and
        // `runs_status_created` serve the range.
        let after = f.created_after.map(crate::store::stored_moment);
        let before = f.created_before.map(crate::store::stored_moment);
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT id, workflow, status, created_at, finished_at,
                        (SELECT count(*) FROM nodes WHERE nodes.run = runs.id),
                        config::json ->> 'fired_at'
                 FROM runs
                 WHERE ($1::text IS NULL OR workflow = $1)
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::text IS NULL OR (created_at, pos) <
                        (SELECT created_at, pos FROM runs AS b WHERE b.id = $3))
                   AND ($5::text IS NULL OR created_at >= $5)
                   AND ($6::text IS NULL OR created_at < $6)
                 ORDER BY created_at DESC, pos DESC LIMIT $4",
                &[&f.workflow, &status, &f.before, &limit, &after, &before],
            )?;
            rows.iter().map(|r| PgStore::summary(tx, r)).collect()
        })
    }

    pub(super) fn counts_of_runs(&self) -> Result<Vec<(String, u64)>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status",
                &[],
            )?;
            rows.iter()
                .map(|r| Ok((tx.get(r, 0)?, tx.get::<i64>(r, 1)? as u64)))
                .collect()
        })
    }

    pub(super) fn insert_user(&self, u: &UserRecord) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                &[&u.name, &u.role.as_str(), &u.password_hash, &u.created_ms],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn read_user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.read(|tx| {
            let r = tx.row(
                "SELECT name, role, password_hash, created_at FROM users WHERE name = $1",
                &[&name],
            )?;
            r.map(|r| self.user_row(tx, &r)).transpose()
        })
    }

    pub(super) fn read_users(&self) -> Result<Vec<UserRecord>> {
        self.read(|tx| {
            let rows = tx.rows(
                "SELECT name, role, password_hash, created_at FROM users ORDER BY name",
                &[],
            )?;
            rows.iter().map(|r| self.user_row(tx, r)).collect()
        })
    }

    pub(super) fn change_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<bool> {
        let role = role.map(Role::as_str);
        self.write(|tx| {
            let n = tx.exec(
                "UPDATE users SET role = coalesce($2, role), password_hash = coalesce($3, password_hash)
                 WHERE name = $1",
                &[&name, &role, &password_hash],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn delete_user(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            tx.exec(
                &format!(
                    "UPDATE tokens SET revoked_at = {NOW_MS} WHERE \"user\" = $1 AND revoked_at IS NULL"
                ),
                &[&name],
            )?;
            let n = tx.exec("DELETE FROM users WHERE name = $1", &[&name])?;
            Ok(n == 1)
        })
    }

    pub(super) fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        let scopes: Vec<&str> = t.scopes.iter().map(|p| p.as_str()).collect();
        let scopes = scopes.join(",");
        self.write(|tx| {
            tx.exec_raw(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &t.id,
                    &t.user,
                    &t.name,
                    &t.hash,
                    &scopes,
                    &t.runner,
                    &t.created_ms,
                    &t.expires_ms,
                    &t.revoked_ms,
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Refused {
                        what: format!("token `{}`", t.id),
                        message: "a token with this id exists".into(),
                    }
                } else {
                    tx.err(e)
                }
            })?;
            Ok(())
        })
    }

    pub(super) fn read_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.read(|tx| {
            let r = tx.row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &[&id],
            )?;
            r.map(|r| self.token_row(tx, &r)).transpose()
        })
    }

    pub(super) fn read_tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.read(|tx| {
            let rows = tx.rows(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1::text IS NULL OR \"user\" = $1)
                     ORDER BY created_at, id"
                ),
                &[&user],
            )?;
            rows.iter().map(|r| self.token_row(tx, r)).collect()
        })
    }

    pub(super) fn revoke(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.exec(
                &format!(
                    "UPDATE tokens SET revoked_at = {NOW_MS} WHERE id = $1 AND revoked_at IS NULL"
                ),
                &[&id],
            )?;
            Ok(n == 1)
        })
    }
}
