//! Authentication and authorization in one place: passwords (argon2id),
//! tokens (random, prefixed, stored as SHA-256, compared in constant
//! time), and the one table that says which permission each route needs,
//! enforced by one middleware for every request.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header::AUTHORIZATION, Method};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::AppState;
use crate::access::{self, Grant, Permission, Role};
use crate::error::{Error, Result};
use crate::store::{Store, TokenRecord, UserRecord};

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: `status`, the OpenAPI document, login.
    Public,
    /// A token granting this permission.
    Needs(Permission),
}

/// The permission every route needs: the one place authorization is
/// decided (the middleware [`authorize`] applies it to every request; a
/// route missing here is refused, never let through).
pub const ROUTES: &[(&str, &str, Access)] = {
    use Access::*;
    use Permission::*;
    &[
        ("GET", "/api/v1/status", Public),
        ("GET", "/api/v1/openapi.json", Public),
        ("POST", "/api/v1/auth/token", Public),
        ("GET", "/api/v1/runs", Needs(Read)),
        ("POST", "/api/v1/runs", Needs(Operate)),
        ("GET", "/api/v1/runs/{run}", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/export", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/events", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/stream", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/wait", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/outlook", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/picture", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/nodes", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/nodes/{node}", Needs(Read)),
        ("GET", "/api/v1/runs/{run}/nodes/{node}/logs", Needs(Read)),
        ("POST", "/api/v1/runs/{run}/pause", Needs(Operate)),
        ("POST", "/api/v1/runs/{run}/unpause", Needs(Operate)),
        ("POST", "/api/v1/runs/{run}/cancel", Needs(Operate)),
        (
            "POST",
            "/api/v1/runs/{run}/nodes/{node}/restart",
            Needs(Operate),
        ),
        (
            "POST",
            "/api/v1/runs/{run}/nodes/{node}/input",
            Needs(Operate),
        ),
        ("GET", "/api/v1/workflows", Needs(Read)),
        ("GET", "/api/v1/workflows/{name}", Needs(Read)),
        ("PUT", "/api/v1/workflows/{name}", Needs(Operate)),
        ("DELETE", "/api/v1/workflows/{name}", Needs(Operate)),
        ("GET", "/api/v1/workflows/{name}/history", Needs(Read)),
        ("POST", "/api/v1/workflows/{name}/runs", Needs(Operate)),
        ("GET", "/api/v1/pipelines", Needs(Read)),
        ("GET", "/api/v1/events", Needs(Read)),
        ("POST", "/api/v1/events", Needs(Operate)),
        ("GET", "/api/v1/timers", Needs(Read)),
        ("POST", "/api/v1/timers", Needs(Operate)),
        ("DELETE", "/api/v1/timers/{id}", Needs(Operate)),
        ("GET", "/api/v1/users", Needs(Admin)),
        ("POST", "/api/v1/users", Needs(Admin)),
        ("PATCH", "/api/v1/users/{name}", Needs(Admin)),
        ("DELETE", "/api/v1/users/{name}", Needs(Admin)),
        // Anyone signed in manages their own tokens; the handlers ask for
        // Admin to touch another user's or a runner's.
        ("GET", "/api/v1/tokens", Needs(Read)),
        ("POST", "/api/v1/tokens", Needs(Read)),
        ("DELETE", "/api/v1/tokens/{id}", Needs(Read)),
        ("GET", "/api/v1/runners", Needs(Read)),
        ("POST", "/api/v1/runners/register", Needs(Runner)),
        ("POST", "/api/v1/runners/{id}/heartbeat", Needs(Runner)),
        ("POST", "/api/v1/runners/{id}/claim", Needs(Runner)),
        (
            "POST",
            "/api/v1/attempts/{run}/{node}/{attempt}/report",
            Needs(Runner),
        ),
        (
            "POST",
            "/api/v1/attempts/{run}/{node}/{attempt}/file",
            Needs(Runner),
        ),
        (
            "POST",
            "/api/v1/attempts/{run}/{node}/{attempt}/artefact",
            Needs(Runner),
        ),
        ("GET", "/api/v1/runs/{run}/artefacts", Needs(Read)),
        (
            "GET",
            "/api/v1/runs/{run}/artefacts/{node}/{attempt}",
            Needs(Read),
        ),
        ("POST", "/api/v1/runners/{id}/shutdown", Needs(Operate)),
        ("GET", "/api/v1/queues", Needs(Read)),
        ("POST", "/api/v1/queues/{key}/clear", Needs(Operate)),
        ("POST", "/api/v1/admin/cancel_all", Needs(Admin)),
        ("POST", "/api/v1/admin/shutdown", Needs(Admin)),
    ]
};

/// The access rule of a route (its template, as axum matched it).
pub fn access(method: &Method, template: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|(m, t, _)| *m == method.as_str() && *t == template)
        .map(|(_, _, a)| *a)
}

/// Who is calling: set by [`authorize`] on every request that needs a
/// token, read by handlers that act for the caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: String,
    /// The token's id.
    pub token: String,
    /// What the token may do.
    pub grant: Grant,
}

impl Caller {
    /// Refuses unless the token grants `p`.
    pub fn require(&self, p: Permission) -> std::result::Result<(), ApiError> {
        if self.grant.allows(p) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user `{}` ({}) with token `{}` may not do this: it needs `{p}`",
                self.user,
                self.grant.role(),
                self.token
            )))
        }
    }
}

/// The middleware: finds the route's rule, checks the bearer token, and
/// refuses what the token's grant does not allow.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> std::result::Result<Response, ApiError> {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let Some(template) = template else {
        // No route matched: the fallback answers 404 or 405.
        return Ok(next.run(req).await);
    };
    let rule = access(req.method(), &template).ok_or_else(|| {
        if ROUTES.iter().any(|(_, t, _)| *t == template) {
            // The route exists; this method is not one it takes.
            ApiError::new(
                Code::MethodNotAllowed,
                format!("{template} does not take {}", req.method()),
            )
        } else {
            ApiError::forbidden(format!(
                "{} {template} has no access rule; refused",
                req.method()
            ))
        }
    })?;
    let Access::Needs(needed) = rule else {
        return Ok(next.run(req).await);
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "this call needs a token: `Authorization: Bearer orch_…`",
            )
        })?;
    let caller = match state.tokens.get(token) {
        Some(caller) => caller,
        None => {
            let store = state.store.clone();
            let presented = token.to_string();
            let (caller, expires_ms) =
                tokio::task::spawn_blocking(move || checked_token(store.as_ref(), &presented))
                    .await
                    .map_err(|e| ApiError::internal(format!("checking the token: {e}")))??;
            state.tokens.keep(token, &caller, expires_ms);
            caller
        }
    };
    caller.require(needed)?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Finds and checks a presented token. Every refusal reads the same to
/// the client (which part was wrong is not told).
pub fn check_token(store: &dyn Store, token: &str) -> std::result::Result<Caller, ApiError> {
    checked_token(store, token).map(|(caller, _)| caller)
}

/// [`check_token`], and when the token expires (ms since the Unix epoch).
fn checked_token(
    store: &dyn Store,
    token: &str,
) -> std::result::Result<(Caller, Option<i64>), ApiError> {
    let refused = || {
        ApiError::new(
            Code::Unauthorized,
            "the token is not valid (unknown, revoked or expired)",
        )
    };
    let (id, _) = access::split_token(token).ok_or_else(refused)?;
    let record = store.token(id)?.ok_or_else(refused)?;
    if !constant_time_eq(hash_token(token).as_bytes(), record.hash.as_bytes()) {
        return Err(refused());
    }
    let now = crate::time::unix_millis() as i64;
    if record.revoked_ms.is_some() || record.expires_ms.is_some_and(|e| e <= now) {
        return Err(refused());
    }
    let user = store.user(&record.user)?.ok_or_else(refused)?;
    let role = if record.runner {
        Role::Runner
    } else {
        user.role
    };
    Ok((
        Caller {
            user: user.name,
            token: record.id,
            grant: Grant::new(role, &record.scopes),
        },
        record.expires_ms,
    ))
}

/// How long a checked token is taken again without reading the store:
/// a runner's claims, heartbeats and reports each present it, and each
/// check is two reads (on PostgreSQL, two transactions).
pub const TOKEN_FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// The most checked tokens kept; when full, all are forgotten.
pub const MAX_KEPT_TOKENS: usize = 1024;

/// Tokens checked in the last [`TOKEN_FRESH`], by their SHA-256: what
/// their caller may do. A token revoked, or its user changed or removed,
/// through this server is forgotten at once
/// ([`TokenCache::forget_all`]); through another server or the command
/// line it is refused within [`TOKEN_FRESH`]. An expired token is never
/// taken.
#[derive(Debug, Default)]
pub struct TokenCache {
    kept: std::sync::Mutex<std::collections::HashMap<String, Kept>>,
}

#[derive(Debug)]
struct Kept {
    caller: Caller,
    at: std::time::Instant,
    expires_ms: Option<i64>,
}

impl TokenCache {
    /// The caller of `token`, if it was checked less than
    /// [`TOKEN_FRESH`] ago and has not expired.
    pub fn get(&self, token: &str) -> Option<Caller> {
        self.get_at(token, crate::time::unix_millis() as i64)
    }

    fn get_at(&self, token: &str, now_ms: i64) -> Option<Caller> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let k = kept.get(&hash_token(token))?;
        let fresh = k.at.elapsed() < TOKEN_FRESH && k.expires_ms.is_none_or(|e| e > now_ms);
        fresh.then(|| k.caller.clone())
    }

    /// Keeps `token`, just checked: its caller, and when it expires.
    pub fn keep(&self, token: &str, caller: &Caller, expires_ms: Option<i64>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_KEPT_TOKENS {
            kept.clear();
        }
        kept.insert(
            hash_token(token),
            Kept {
                caller: caller.clone(),
                at: std::time::Instant::now(),
                expires_ms,
            },
        );
    }

    /// Forgets every token: a token was revoked, a user changed or
    /// removed.
    pub fn forget_all(&self) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// SHA-256 of a token, hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit: the time taken does not tell how
/// much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// `n` random letters and digits (tokens; the web view's login form).
pub fn random_alnum(n: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(|e| Error::Io {
            context: "reading random bytes for a token".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // Rejection sampling: 62 * 4 = 248, so bytes below 248 are uniform.
        for b in buf {
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// What [`mint`] asks for.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// A name to tell tokens apart.
    pub name: String,
    /// Narrows the user's role to these permissions (empty: all of it).
    pub scopes: Vec<Permission>,
    /// A runner's token.
    pub runner: bool,
    /// It stops working after this many milliseconds.
    pub expires_in_ms: Option<i64>,
}

/// Makes a token for `user`, stores its hash and returns the token (the
/// only time it exists in the clear) with its record.
pub fn mint(store: &dyn Store, user: &str, req: &TokenRequest) -> Result<(String, TokenRecord)> {
    if store.user(user)?.is_none() {
        return Err(Error::Refused {
            what: format!("a token for `{user}`"),
            message: format!("there is no user `{user}`"),
        });
    }
    if req.name.len() > 128 || req.name.chars().any(char::is_control) {
        return Err(Error::Refused {
            what: format!("a token for `{user}`"),
            message: "its name is at most 128 printable characters".into(),
        });
    }
    let id = random_alnum(access::TOKEN_ID_LEN)?;
    let secret = random_alnum(access::TOKEN_SECRET_LEN)?;
    let token = format!("{}{id}_{secret}", access::TOKEN_PREFIX);
    let now = crate::time::unix_millis() as i64;
    let mut record = TokenRecord::new(&id, user, &req.name, &hash_token(&token), now);
    record.scopes = req.scopes.clone();
    record.runner = req.runner;
    record.expires_ms = req.expires_in_ms.map(|ms| now.saturating_add(ms));
    store.add_token(&record)?;
    Ok((token, record))
}

/// An argon2id hash of a password (PHC string, random salt).
pub fn hash_password(password: &str) -> Result<String> {
    access::check_password(password).map_err(|message| Error::Refused {
        what: "the password".into(),
        message,
    })?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Io {
        context: "reading random bytes for a salt".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Refused {
        what: "the password's salt".into(),
        message: e.to_string(),
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Refused {
            what: "the password".into(),
            message: e.to_string(),
        })
}

/// Whether `password` is the user's. A user that does not exist costs a
/// hash all the same (the time taken does not tell which names exist).
pub fn verify_password(user: Option<&UserRecord>, password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if password.len() > access::MAX_PASSWORD {
        return false;
    }
    let stored = match user {
        Some(u) => u.password_hash.clone(),
        None => DUMMY
            .get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
            .clone(),
    };
    let Ok(parsed) = PasswordHash::new(&stored) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && user.is_some()
}

/// Adds a user (the CLI's `orch user add`, the API's `POST /users`).
pub fn add_user(store: &dyn Store, name: &str, role: Role, password: &str) -> Result<()> {
    access::check_user_name(name).map_err(|message| Error::Refused {
        what: format!("user `{name}`"),
        message,
    })?;
    if role == Role::Runner {
        return Err(Error::Refused {
            what: format!("user `{name}`"),
            message: "`runner` is a kind of token, not a user's role (admin, operator or viewer)"
                .into(),
        });
    }
    let hash = hash_password(password)?;
    let now = crate::time::unix_millis() as i64;
    if !store.add_user(&UserRecord::new(name, role, &hash, now))? {
        return Err(Error::Refused {
            what: format!("user `{name}`"),
            message: "a user of this name exists".into(),
        });
    }
    tracing::info!(user = name, role = %role, "user added");
    Ok(())
}

/// Maps an [`Code::Unauthorized`] refusal for a login.
pub fn bad_login() -> ApiError {
    ApiError::new(Code::Unauthorized, "wrong user name or password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_rule() {
        let mut seen = std::collections::HashSet::new();
        for (m, t, _) in ROUTES {
            assert!(seen.insert((m, t)), "{m} {t} twice");
        }
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let u = UserRecord::new("ada", Role::Admin, &h, 0);
        assert!(verify_password(Some(&u), "correct horse"));
        assert!(!verify_password(Some(&u), "correct horsE"));
        assert!(!verify_password(None, "correct horse"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn tokens_are_random_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path().join("o.db")).unwrap();
        add_user(&store, "ada", Role::Operator, "a long password").unwrap();
        let (a, rec) = mint(&store, "ada", &TokenRequest::default()).unwrap();
        let (b, _) = mint(&store, "ada", &TokenRequest::default()).unwrap();
        assert_ne!(a, b);
        assert!(access::split_token(&a).is_some(), "{a}");
        assert_eq!(rec.hash, hash_token(&a));
        assert!(!rec.hash.contains(&a[5..]));
        let caller = check_token(&store, &a).unwrap();
        assert_eq!(caller.user, "ada");
        assert!(caller.grant.allows(Permission::Operate));
        // One character off, a revoked token, an unknown user: refused.
        let mut wrong = a.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(
            check_token(&store, &wrong).unwrap_err().code(),
            Code::Unauthorized
        );
        store.revoke_token(&rec.id).unwrap();
        assert_eq!(
            check_token(&store, &a).unwrap_err().code(),
            Code::Unauthorized
        );
        assert!(mint(&store, "nobody", &TokenRequest::default()).is_err());
        // Expired.
        let req = TokenRequest {
            expires_in_ms: Some(-1),
            ..TokenRequest::default()
        };
        let (c, _) = mint(&store, "ada", &req).unwrap();
        assert!(check_token(&store, &c).is_err());
    }

    #[test]
    fn kept_tokens_are_taken_until_they_expire_or_are_forgotten() {
        let cache = TokenCache::default();
        let caller = Caller {
            user: "u".into(),
            token: "t".into(),
            grant: Grant::new(Role::Runner, &[]),
        };
        assert!(cache.get_at("orch_a", 0).is_none());
        cache.keep("orch_a", &caller, Some(1_000));
        assert_eq!(
            cache.get_at("orch_a", 999).map(|c| c.user),
            Some("u".into())
        );
        assert!(cache.get_at("orch_a", 1_000).is_none(), "expired");
        assert!(cache.get_at("orch_b", 0).is_none(), "another token");
        cache.forget_all();
        assert!(cache.get_at("orch_a", 0).is_none(), "forgotten");
        cache.keep("orch_a", &caller, None);
        assert!(cache.get_at("orch_a", i64::MAX).is_some(), "never expires");
    }

    #[test]
    fn equal_is_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
