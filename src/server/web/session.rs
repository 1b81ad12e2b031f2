//! Sessions of the web view: a login mints an API token (named `web`)
//! that lives in an HttpOnly, SameSite=Strict cookie; every form carries
//! a token derived from it (HMAC-SHA-256 keyed by the session token), and
//! every POST is refused without it. What a session may do is the API's
//! [`Caller`] and [`crate::access::Grant`]: the same roles, the same
//! checks.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::html;
use crate::access::Permission;
use crate::server::auth::{self, Caller};
use crate::server::error::ApiError;
use crate::server::AppState;

/// The cookie holding the session token.
pub const SESSION_COOKIE: &str = "orch_session";
/// The cookie holding the login form's token (before a session exists).
pub const LOGIN_COOKIE: &str = "orch_login";
/// How long a session lasts: 12 hours.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// The largest form a page posts (the editor's files), in bytes.
pub const MAX_FORM: usize = crate::server::MAX_PUBLISH_BODY;

/// What a page route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Anyone (the login page, the stylesheet and the script).
    Public,
    /// A session whose grant allows this.
    Needs(Permission),
}

/// The rule of every page route: the web view's one place authorization
/// is decided, applied by [`guard`] (a route missing here is refused).
pub const ROUTES: &[(&str, &str, Rule)] = {
    use Permission::*;
    use Rule::*;
    &[
        ("GET", "/", Needs(Read)),
        ("GET", "/login", Public),
        ("POST", "/login", Public),
        ("POST", "/logout", Needs(Read)),
        ("GET", "/static/web.css", Public),
        ("GET", "/static/web.js", Public),
        ("GET", "/runs", Needs(Read)),
        ("GET", "/runs/{run}", Needs(Read)),
        ("GET", "/runs/{run}/picture.svg", Needs(Read)),
        ("GET", "/runs/{run}/nodes.html", Needs(Read)),
        ("GET", "/runs/{run}/live", Needs(Read)),
        ("GET", "/runs/{run}/nodes/{node}", Needs(Read)),
        ("GET", "/runs/{run}/nodes/{node}/log", Needs(Read)),
        ("POST", "/runs/{run}/pause", Needs(Operate)),
        ("POST", "/runs/{run}/unpause", Needs(Operate)),
        ("POST", "/runs/{run}/cancel", Needs(Operate)),
        ("POST", "/runs/{run}/nodes/{node}/restart", Needs(Operate)),
        ("POST", "/runs/{run}/nodes/{node}/input", Needs(Operate)),
        ("GET", "/workflows", Needs(Read)),
        ("GET", "/new", Needs(Read)),
        ("GET", "/workflows/{name}", Needs(Read)),
        ("GET", "/workflows/{name}/diff", Needs(Read)),
        ("GET", "/workflows/{name}/edit", Needs(Read)),
        ("POST", "/workflows/{name}/edit", Needs(Operate)),
        ("POST", "/workflows/{name}/check", Needs(Operate)),
        ("POST", "/workflows/{name}/run", Needs(Operate)),
        ("POST", "/pipelines/backfill", Needs(Operate)),
        ("GET", "/events", Needs(Read)),
        ("POST", "/events", Needs(Operate)),
        ("GET", "/runners", Needs(Read)),
        ("POST", "/runners/{id}/shutdown", Needs(Operate)),
        ("POST", "/queues/{key}/clear", Needs(Operate)),
    ]
};

/// The rule of a page route.
pub fn rule(method: &Method, template: &str) -> Option<Rule> {
    ROUTES
        .iter()
        .find(|(m, t, _)| *m == method.as_str() && *t == template)
        .map(|(_, _, r)| *r)
}

/// A signed-in person, as [`guard`] found them.
#[derive(Clone, Debug)]
pub struct Session {
    /// The API's caller: user, token id and grant.
    pub caller: Caller,
    /// The form token of this session.
    pub csrf: String,
}

impl Session {
    /// Whether the session's grant allows `p` (pages show a button only
    /// when pressing it would be allowed).
    pub fn may(&self, p: Permission) -> bool {
        self.caller.grant.allows(p)
    }

    /// The layout's view of the person.
    pub fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            user: &self.caller.user,
            role: self.caller.grant.role().to_string(),
            csrf: &self.csrf,
        }
    }
}

/// A form's fields, in order (read once by [`guard`] and handed on).
#[derive(Clone, Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// Parses `application/x-www-form-urlencoded`.
    pub fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An error page: a status and a message (escaped when shown).
#[derive(Debug)]
pub struct WebError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl WebError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> WebError {
        WebError {
            status,
            message: message.into(),
        }
    }
}

/// The API's errors keep their status and message.
impl From<ApiError> for WebError {
    fn from(e: ApiError) -> WebError {
        let status = e.clone().into_response().status();
        WebError::new(status, e.error.message)
    }
}

impl From<crate::Error> for WebError {
    fn from(e: crate::Error) -> WebError {
        WebError::from(ApiError::from(e))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = format!(
            r#"<p class="error" id="error">{}</p><p><a href="/runs">Back to the runs</a></p>"#,
            html::esc(&self.message)
        );
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let mut r = page_response(html::page(&title, None, &body));
        *r.status_mut() = self.status;
        r
    }
}

/// What page handlers return.
pub type WebResult<T> = std::result::Result<T, WebError>;

/// An HTML page with the headers every page carries: no caching, no
/// framing, no scripts but the view's own file (a string that escaped
/// escaping still could not run).
pub fn page_response(body: String) -> Response {
    let mut r = axum::response::Html(body).into_response();
    secure_headers(r.headers_mut());
    r
}

/// The headers of every answer of the web view.
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
}

/// A `303 See Other` to `to` (after a form post).
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for `path`.
pub fn cookie(name: &str, value: &str, path: &str, max_age_s: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age_s}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("orch_invalid=; Max-Age=0"))
}

/// Adds a `Set-Cookie` to a response.
pub fn set_cookie(r: &mut Response, value: HeaderValue) {
    r.headers_mut().append(SET_COOKIE, value);
}

/// A cookie's value from the request's `Cookie` headers.
pub fn read_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// HMAC-SHA-256 (RFC 2104), hex.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// The form token of a session: only who holds the (HttpOnly) session
/// token can compute it, and it never reveals the token.
pub fn csrf_of(session_token: &str) -> String {
    hmac_sha256(session_token.as_bytes(), b"orch web form token v1")
}

/// The middleware of every page: finds the route's rule, checks the
/// session cookie (a page without one leads to the login), reads a
/// POST's form and refuses it without the session's form token, and
/// refuses what the session's grant does not allow (403).
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let Some(template) = template else {
        return next.run(req).await;
    };
    let Some(rule) = rule(req.method(), &template) else {
        return WebError::new(
            StatusCode::FORBIDDEN,
            format!("{} {template} has no access rule; refused", req.method()),
        )
        .into_response();
    };
    let is_post = req.method() == Method::POST;
    let (parts, body) = req.into_parts();
    let mut req = if is_post {
        // Read the form once; handlers get it as an extension.
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(e) => {
                return WebError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the form could not be read (at most {MAX_FORM} bytes): {e}"),
                )
                .into_response()
            }
        };
        let form = Form::parse(&bytes);
        let mut req = Request::from_parts(parts, axum::body::Body::empty());
        req.extensions_mut().insert(form);
        req
    } else {
        Request::from_parts(parts, body)
    };
    let Rule::Needs(needed) = rule else {
        return next.run(req).await;
    };
    let token = read_cookie(req.headers(), SESSION_COOKIE);
    let caller = match token.clone() {
        Some(token) => {
            let store = state.store.clone();
            tokio::task::spawn_blocking(move || auth::check_token(store.as_ref(), &token))
                .await
                .map_err(|e| ApiError::internal(format!("checking the session: {e}")))
                .and_then(|r| r)
                .ok()
        }
        None => None,
    };
    let (Some(caller), Some(token)) = (caller, token) else {
        if is_post {
            return WebError::new(
                StatusCode::UNAUTHORIZED,
                "you are not signed in (or your session ended); sign in again",
            )
            .into_response();
        }
        let here = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return redirect(&format!("/login?next={}", html::url(here)));
    };
    let csrf = csrf_of(&token);
    if is_post {
        let sent = req
            .extensions()
            .get::<Form>()
            .and_then(|f| f.get("csrf"))
            .unwrap_or("");
        if !auth::constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
            return WebError::new(
                StatusCode::FORBIDDEN,
                "the form's token is missing or wrong (reload the page and try again)",
            )
            .into_response();
        }
    }
    if let Err(e) = caller.require(needed) {
        return WebError::from(e).into_response();
    }
    req.extensions_mut().insert(Session { caller, csrf });
    let mut r = next.run(req).await;
    secure_headers(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_ne!(csrf_of("orch_a_b"), csrf_of("orch_a_c"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; orch_session=xyz; b=2"),
        );
        assert_eq!(read_cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(read_cookie(&h, "c"), None);
        let c = cookie(SESSION_COOKIE, "t", "/", 10);
        let c = c.to_str().unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }

    #[test]
    fn every_page_route_has_one_rule_and_posts_need_a_session_or_are_login() {
        let mut seen = std::collections::HashSet::new();
        for (m, t, r) in ROUTES {
            assert!(seen.insert((m, t)), "{m} {t} twice");
            assert!(!t.starts_with("/api/"), "{t}: the API has its own table");
            if *m == "POST" && *t != "/login" {
                assert!(matches!(r, Rule::Needs(_)), "{m} {t}");
            }
        }
    }
}
