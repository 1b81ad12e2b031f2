//! A small blocking client of the server's API (`orch --server URL`,
//! tests, benchmarks): one JSON shape in, one out, errors as the server
//! said them.
//!
//! ```no_run
//! let c = orch::client::Client::new("http://127.0.0.1:8080", Some("orch_…".into()));
//! let status = c.get("/api/v1/status")?;
//! println!("{}", status["version"]);
//! # Ok::<(), orch::client::ClientError>(())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

/// The largest response body read, in bytes.
pub const MAX_RESPONSE: u64 = 256 << 20;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached or the exchange broke.
    #[error("{url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What happened.
        message: String,
    },
    /// The server answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// The server's message.
        message: String,
    },
}

/// A server and a token; optionally other servers of the same database
/// to fall back on ([`Client::with_fallbacks`]).
#[derive(Clone)]
pub struct Client {
    /// The servers, the first given first.
    bases: Arc<[String]>,
    /// Which of them answered last (shared by the clones: a runner's
    /// threads move to the next server together).
    current: Arc<AtomicUsize>,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Never prints the token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base())
            .field("servers", &self.bases.len())
            .finish_non_exhaustive()
    }
}

/// An answer: its status and body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The content type.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl Client {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .new_agent();
        Client {
            bases: Arc::from(vec![base.trim_end_matches('/').to_string()]),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            agent,
        }
    }

    /// The same client, falling back on `others` (servers sharing the
    /// first one's database) when the server it talks to cannot be
    /// reached: a call that fails in transport (refused, reset, timed
    /// out) is made again on the next server, each tried once, and the
    /// one that answered is used from then on. A server's answer, even
    /// an error, is never retried elsewhere.
    ///
    /// ```
    /// let c = orch::client::Client::new("http://10.0.0.1:8080", None)
    ///     .with_fallbacks(&["http://10.0.0.2:8080/"]);
    /// assert_eq!(c.base(), "http://10.0.0.1:8080");
    /// assert_eq!(c.servers(), ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
    /// ```
    pub fn with_fallbacks(mut self, others: &[impl AsRef<str>]) -> Client {
        let mut bases = self.bases.to_vec();
        for o in others {
            let o = o.as_ref().trim_end_matches('/').to_string();
            if !bases.contains(&o) {
                bases.push(o);
            }
        }
        self.bases = Arc::from(bases);
        self
    }

    /// The address of the server it talks to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every server it may talk to, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.bases
    }

    /// `f` on the current server's address; on a transport error, on the
    /// next server's, each tried once (see [`Client::with_fallbacks`]).
    fn failing_over<T>(
        &self,
        mut f: impl FnMut(&str) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut i = 0;
        loop {
            let at = (start + i) % n;
            match f(&self.bases[at]) {
                Err(e @ ClientError::Transport { .. }) if i + 1 < n => {
                    tracing::warn!(server = %self.bases[at], error = %e,
                        "the server cannot be reached; trying {}", self.bases[(at + 1) % n]);
                    i += 1;
                }
                r => {
                    if at != start && r.is_ok() {
                        tracing::info!(server = %self.bases[at], "talking to this server from now on");
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return r;
                }
            }
        }
    }

    /// Calls `method path` with an optional JSON body; any status.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        self.failing_over(|base| self.call_at(base, method, path, body))
    }

    fn call_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{base}{path}");
        let transport = |e: ureq::Error| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(text).map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let mut resp = self.agent.run(req).map_err(transport)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .map_err(transport)?;
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// A `POST` of `body` whose 2xx answer is raw bytes, at most `limit`
    /// of them (more is an error); any other answer is the API's error.
    pub fn post_bytes(&self, path: &str, body: &Value, limit: u64) -> Result<Vec<u8>, ClientError> {
        self.failing_over(|base| self.post_bytes_at(base, path, body, limit))
    }

    fn post_bytes_at(
        &self,
        base: &str,
        path: &str,
        body: &Value,
        limit: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{base}{path}");
        let transport = |e: ureq::Error| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send(body.to_string()).map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            return Err(api_error(
                status,
                &serde_json::from_str(&text).unwrap_or(Value::Null),
            ));
        }
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(transport)
    }

    /// A `POST` of raw bytes (`application/octet-stream`); the JSON body
    /// of a 2xx answer, else the API's error.
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        self.failing_over(|base| self.post_raw_at(base, path, &body))
    }

    fn post_raw_at(&self, base: &str, path: &str, body: &[u8]) -> Result<Value, ClientError> {
        let url = format!("{base}{path}");
        let transport = |e: ureq::Error| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.send(body).map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(transport)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(api_error(status, &v));
        }
        Ok(v)
    }

    /// A `GET` whose body is read as it comes (a followed log); an error
    /// answer is the API's error.
    pub fn reader(&self, path: &str) -> Result<impl std::io::Read + Send + 'static, ClientError> {
        self.failing_over(|base| self.reader_at(base, path))
    }

    fn reader_at(
        &self,
        base: &str,
        path: &str,
    ) -> Result<impl std::io::Read + Send + 'static, ClientError> {
        let url = format!("{base}{path}");
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.into_body().read_to_string().unwrap_or_default();
            return Err(api_error(
                status,
                &serde_json::from_str(&body).unwrap_or(Value::Null),
            ));
        }
        Ok(resp.into_body().into_reader())
    }

    /// Calls and returns the JSON body of a 2xx answer, else the API's
    /// error.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let reply = self.call(method, path, body)?;
        if (200..300).contains(&reply.status) {
            return Ok(if reply.body.is_empty() {
                Value::Null
            } else {
                reply.json()
            });
        }
        let v = reply.json();
        Err(ClientError::Api {
            status: reply.status,
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
            message: v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| crate::protocol::quote(&reply.body)),
        })
    }

    /// `GET`.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json("GET", path, None)
    }

    /// `POST` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json("POST", path, Some(body))
    }
}

/// The API's error in a `status` answer whose body is `v` (`{"error":
/// {"code", "message"}}`; `unknown` and no message when it is not).
fn api_error(status: u16, v: &Value) -> ClientError {
    ClientError::Api {
        status,
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        message: v["error"]["message"].as_str().unwrap_or("").to_string(),
    }
}

/// Percent-encodes a path segment or query value.
///
/// ```
/// assert_eq!(orch::client::encode("a b/c"), "a%20b%2Fc");
/// ```
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
