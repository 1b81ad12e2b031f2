//! Users (admin only), tokens (your own; an admin's for anyone and for
//! runners) and the login that exchanges a password for a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::super::auth::{self, Caller, TokenRequest};
use super::super::error::{ApiError, ApiResult};
use super::super::extract::{Body, Path, Query};
use super::super::AppState;
use super::blocking;
use crate::access::{Permission, Role};
use crate::store::{TokenRecord, UserRecord};

/// A user.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UserItem {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// When it was added (ms since the Unix epoch).
    pub created_ms: i64,
}

impl From<UserRecord> for UserItem {
    fn from(u: UserRecord) -> UserItem {
        UserItem {
            name: u.name,
            role: u.role,
            created_ms: u.created_ms,
        }
    }
}

/// A token as listed (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenItem {
    /// Its id (the part after `orch_`).
    pub id: String,
    /// The user it acts for.
    pub user: String,
    /// Its name.
    pub name: String,
    /// What it is narrowed to (empty: the user's role).
    pub scopes: Vec<Permission>,
    /// A runner's token.
    pub runner: bool,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: i64,
    /// When it stops working.
    pub expires_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
}

impl From<TokenRecord> for TokenItem {
    fn from(t: TokenRecord) -> TokenItem {
        TokenItem {
            id: t.id,
            user: t.user,
            name: t.name,
            scopes: t.scopes,
            runner: t.runner,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            revoked_ms: t.revoked_ms,
        }
    }
}

/// A new token: shown this once.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    /// The token (`orch_…`): keep it; it is not stored.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub record: TokenItem,
}

fn expiry(expires: Option<&str>) -> ApiResult<Option<i64>> {
    expires
        .map(|e| {
            crate::time::parse_duration(e)
                .map(|d| d.as_millis() as i64)
                .map_err(|m| ApiError::bad(format!("field `expires`: {m}")))
        })
        .transpose()
}

/// A login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// A name for the token (default `login`).
    pub name: Option<String>,
    /// It stops working after this long (default `30d`; `90`, `12h`,
    /// `7d`).
    pub expires: Option<String>,
    /// Narrow it to these permissions.
    #[serde(default)]
    pub scopes: Vec<Permission>,
}

/// `POST /auth/token`: a token for a user name and password.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", request_body = Login,
    responses((status = 201, body = NewToken), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn login(
    State(s): State<Arc<AppState>>,
    Body(b): Body<Login>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let expires = expiry(Some(b.expires.as_deref().unwrap_or("30d")))?;
    if b.scopes.contains(&Permission::Runner) {
        return Err(ApiError::bad(
            "field `scopes`: `runner` tokens are made by an admin (POST /api/v1/tokens)",
        ));
    }
    let store = s.store.clone();
    let (token, record) = blocking(move || {
        let user = store.user(&b.user)?;
        if !auth::verify_password(user.as_ref(), &b.password) {
            tracing::warn!(user = %crate::protocol::quote(&b.user), "a login was refused");
            return Ok(None);
        }
        let req = TokenRequest {
            name: b.name.unwrap_or_else(|| "login".into()),
            scopes: b.scopes,
            runner: false,
            expires_in_ms: expires,
        };
        auth::mint(store.as_ref(), &b.user, &req).map(Some)
    })
    .await?
    .ok_or_else(auth::bad_login)?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            token,
            record: record.into(),
        }),
    ))
}

/// `GET /users`.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserItem>)), security(("token" = [])))]
pub async fn list(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<UserItem>>> {
    let store = s.store.clone();
    let users = blocking(move || store.users()).await?;
    Ok(Json(users.into_iter().map(Into::into).collect()))
}

/// A user to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The name (1 to 64 of `A-Z a-z 0-9 _ . -`).
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: Role,
    /// The password (8 to 1024 bytes).
    pub password: String,
}

/// `POST /users`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserItem), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn add(
    State(s): State<Arc<AppState>>,
    Body(b): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<UserItem>)> {
    let store = s.store.clone();
    let user = blocking(move || {
        if store.user(&b.name)?.is_some() {
            return Ok(Err(ApiError::conflict(format!("user `{}` exists", b.name))));
        }
        auth::add_user(store.as_ref(), &b.name, b.role, &b.password)?;
        Ok(store
            .user(&b.name)?
            .ok_or_else(|| ApiError::internal("the user vanished")))
    })
    .await??;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// A change to a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// A new role.
    pub role: Option<Role>,
    /// A new password.
    pub password: Option<String>,
}

/// `PATCH /users/{name}`.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "the user")), request_body = UserChange,
    responses((status = 200, body = UserItem), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("token" = [])))]
pub async fn change(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Body(b): Body<UserChange>,
) -> ApiResult<Json<UserItem>> {
    if b.role == Some(Role::Runner) {
        return Err(ApiError::bad(
            "field `role`: `runner` is a kind of token, not a user's role",
        ));
    }
    let store = s.store.clone();
    let user = blocking(move || {
        let hash = b.password.as_deref().map(auth::hash_password).transpose()?;
        if !store.update_user(&name, b.role, hash.as_deref())? {
            return Ok(None);
        }
        store.user(&name)
    })
    .await?;
    s.tokens.forget_all();
    let user = user.ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(user.into()))
}

/// `DELETE /users/{name}`: removes the user and revokes their tokens.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "the user")),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("token" = [])))]
pub async fn remove(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if name == me.user {
        return Err(ApiError::conflict(
            "you cannot remove yourself (another admin can)",
        ));
    }
    let store = s.store.clone();
    let n = name.clone();
    if blocking(move || store.remove_user(&n)).await? {
        s.tokens.forget_all();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no user `{name}`")))
    }
}

/// Whose tokens.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokensQuery {
    /// Another user's (admin only; default: yours). `*`: everyone's.
    pub user: Option<String>,
}

/// `GET /tokens`.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(TokensQuery),
    responses((status = 200, body = Vec<TokenItem>), (status = 403, body = ApiError)),
    security(("token" = [])))]
pub async fn tokens(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Query(q): Query<TokensQuery>,
) -> ApiResult<Json<Vec<TokenItem>>> {
    let user = q.user.unwrap_or_else(|| me.user.clone());
    if user != me.user {
        me.require(Permission::Admin)?;
    }
    let store = s.store.clone();
    let all = blocking(move || store.tokens((user != "*").then_some(user.as_str()))).await?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

/// A token to make.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// For this user (admin only; default: you).
    pub user: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Narrow it to these permissions.
    #[serde(default)]
    pub scopes: Vec<Permission>,
    /// A runner's token (admin only): runner calls alone.
    #[serde(default)]
    pub runner: bool,
    /// It stops working after this long (`90`, `12h`, `30d`).
    pub expires: Option<String>,
}

/// `POST /tokens`: the token is in the answer, once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenBody,
    responses((status = 201, body = NewToken), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("token" = [])))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Body(b): Body<TokenBody>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let user = b.user.clone().unwrap_or_else(|| me.user.clone());
    if user != me.user || b.runner {
        me.require(Permission::Admin)?;
    }
    if b.scopes.contains(&Permission::Runner) && !b.runner {
        return Err(ApiError::bad(
            "field `scopes`: ask for a runner token with `runner: true`",
        ));
    }
    // A token never grants more than the token that made it.
    if user == me.user {
        for p in &b.scopes {
            me.require(*p)?;
        }
    }
    let req = TokenRequest {
        name: b.name.unwrap_or_default(),
        scopes: b.scopes,
        runner: b.runner,
        expires_in_ms: expiry(b.expires.as_deref())?,
    };
    let store = s.store.clone();
    let (token, record) = blocking(move || auth::mint(store.as_ref(), &user, &req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            token,
            record: record.into(),
        }),
    ))
}

/// `DELETE /tokens/{id}`: revokes it (yours; an admin: anyone's).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("token" = [])))]
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let store = s.store.clone();
    let i = id.clone();
    let record = blocking(move || store.token(&i))
        .await?
        .filter(|t| t.revoked_ms.is_none())
        .ok_or_else(|| ApiError::not_found(format!("no live token `{id}`")))?;
    if record.user != me.user {
        me.require(Permission::Admin)?;
    }
    let store = s.store.clone();
    blocking(move || store.revoke_token(&id)).await?;
    s.tokens.forget_all();
    Ok(StatusCode::NO_CONTENT)
}
