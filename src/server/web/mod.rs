//! The web view (SERVICE.md §8): server-rendered pages at `/` to watch,
//! steer and edit runs and workflows in a browser.
//!
//! Pages are built in Rust ([`html`]; every outside string escaped) and
//! call the API's own handlers, so a page shows and does exactly what the
//! API would. A session is an API token in an HttpOnly, SameSite=Strict
//! cookie; every form carries a token derived from it ([`session`]);
//! roles are the API's. A run's picture is redrawn as its events arrive
//! (a server-sent event per commit), and a running node's log follows;
//! the only script is `static/web.js`, served from the binary.

pub mod actions;
pub mod diff;
pub mod html;
pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::auth::{self, TokenRequest};
use super::AppState;
use session::{Form, Session, WebError, WebResult};

/// Every page route, behind [`session::guard`] (their rules are in
/// [`session::ROUTES`]); merged beside the API by [`super::router`].
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { session::redirect("/runs") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/web.css", get(css))
        .route("/static/web.js", get(js))
        .route("/runs", get(pages::runs::page))
        .route("/runs/{run}", get(pages::run::page))
        .route("/runs/{run}/picture.svg", get(pages::run::picture))
        .route("/runs/{run}/nodes.html", get(pages::run::nodes_fragment))
        .route("/runs/{run}/live", get(pages::run::live))
        .route("/runs/{run}/nodes/{node}", get(pages::run::node))
        .route("/runs/{run}/nodes/{node}/log", get(pages::run::log))
        .route("/runs/{run}/pause", post(actions::pause))
        .route("/runs/{run}/unpause", post(actions::unpause))
        .route("/runs/{run}/cancel", post(actions::cancel))
        .route("/runs/{run}/nodes/{node}/restart", post(actions::restart))
        .route("/runs/{run}/nodes/{node}/input", post(actions::input))
        .route("/workflows", get(pages::workflows))
        .route("/new", get(pages::new_workflow))
        .route("/workflows/{name}", get(pages::workflow))
        .route("/workflows/{name}/diff", get(pages::diff))
        .route(
            "/workflows/{name}/edit",
            get(pages::editor).post(actions::publish),
        )
        .route("/workflows/{name}/check", post(actions::check))
        .route("/workflows/{name}/run", post(actions::execute))
        .route("/pipelines/backfill", post(actions::backfill))
        .route("/events", get(pages::events).post(actions::push_event))
        .route("/runners", get(pages::runners::page))
        .route("/runners/{id}/shutdown", post(actions::drain))
        .route("/queues/{key}/clear", post(actions::clear_queue))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::guard,
        ))
        .with_state(state)
}

async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/web.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/web.js"),
    )
        .into_response()
}

/// Where to go after the login.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    /// A path of this site (anything else is ignored).
    pub next: Option<String>,
}

/// Only a path of this site: never another origin (`//host`, `/\host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/runs".to_string(),
    }
}

fn login_form(next: &str, login_csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" id="error">{}</p>"#, html::esc(e)))
        .unwrap_or_default();
    format!(
        r#"{error}<form method="post" action="/login" class="login" id="login">
<input type="hidden" name="csrf" value="{}"><input type="hidden" name="next" value="{}">
<label>User <input name="user" id="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="signin">Sign in</button></form>"#,
        html::esc(login_csrf),
        html::esc(next)
    )
}

/// A fresh login page, with its form token in a cookie of its own.
fn login_response(next: &str, error: Option<&str>, status: StatusCode) -> WebResult<Response> {
    let token = auth::random_alnum(32).map_err(WebError::from)?;
    let mut r = session::page_response(html::page(
        "Sign in",
        None,
        &login_form(next, &token, error),
    ));
    *r.status_mut() = status;
    session::set_cookie(
        &mut r,
        session::cookie(session::LOGIN_COOKIE, &token, "/login", 3600),
    );
    Ok(r)
}

/// `GET /login`.
pub async fn login_page(Query(q): Query<NextQuery>) -> WebResult<Response> {
    login_response(&safe_next(q.next.as_deref()), None, StatusCode::OK)
}

/// `POST /login`: checks the password like `POST /api/v1/auth/token`,
/// mints a token named `web` and sets it as the session cookie.
pub async fn login(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Extension(form): Extension<Form>,
) -> WebResult<Response> {
    let next = safe_next(form.get("next"));
    // The login form's own token (double submit): a page of another
    // site cannot sign a browser in as someone else.
    let expected = session::read_cookie(&headers, session::LOGIN_COOKIE).unwrap_or_default();
    let sent = form.get("csrf").unwrap_or("");
    if expected.is_empty() || !auth::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return login_response(
            &next,
            Some("the form expired; sign in again"),
            StatusCode::FORBIDDEN,
        );
    }
    let user = form.get("user").unwrap_or("").to_string();
    let password = form.get("password").unwrap_or("").to_string();
    let store = s.store.clone();
    let minted = super::api::blocking(move || {
        let record = store.user(&user)?;
        if !auth::verify_password(record.as_ref(), &password) {
            tracing::warn!(user = %crate::protocol::quote(&user), "a web login was refused");
            return Ok(None);
        }
        let req = TokenRequest {
            name: "web".into(),
            scopes: Vec::new(),
            runner: false,
            expires_in_ms: Some(session::SESSION_MS),
        };
        auth::mint(store.as_ref(), &user, &req).map(|(t, _)| Some(t))
    })
    .await?;
    let Some(token) = minted else {
        return login_response(
            &next,
            Some("wrong user name or password"),
            StatusCode::UNAUTHORIZED,
        );
    };
    let mut r = session::redirect(&next);
    session::set_cookie(
        &mut r,
        session::cookie(
            session::SESSION_COOKIE,
            &token,
            "/",
            session::SESSION_MS / 1000,
        ),
    );
    session::set_cookie(
        &mut r,
        session::cookie(session::LOGIN_COOKIE, "", "/login", 0),
    );
    Ok(r)
}

/// `POST /logout`: revokes the session's token and clears the cookie.
pub async fn logout(
    State(s): State<Arc<AppState>>,
    Extension(me): Extension<Session>,
) -> WebResult<Response> {
    let store = s.store.clone();
    let id = me.caller.token.clone();
    super::api::blocking(move || store.revoke_token(&id)).await?;
    s.tokens.forget_all();
    let mut r = session::redirect("/login");
    session::set_cookie(&mut r, session::cookie(session::SESSION_COOKIE, "", "/", 0));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_sends_only_to_this_site() {
        assert_eq!(safe_next(Some("/runs/abc?x=1")), "/runs/abc?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/runs");
        assert_eq!(safe_next(Some("/\\evil.example")), "/runs");
        assert_eq!(safe_next(Some("https://evil.example")), "/runs");
        assert_eq!(safe_next(None), "/runs");
    }
}
