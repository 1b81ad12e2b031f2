//! `orch serve`: one process hosting an [`Engine`], the scheduler and the
//! HTTP API under `/api/v1` (SERVICE.md §5), on SQLite by default or on
//! PostgreSQL when the database is a `postgres://` URL (feature
//! `postgres`).
//!
//! ```no_run
//! # async fn demo() -> orch::Result<()> {
//! let mut opts = orch::server::ServeOptions::new(".orch/orch.db");
//! opts.listen = "127.0.0.1:0".parse().unwrap();
//! let server = orch::server::Server::start(opts).await?;
//! println!("listening on http://{}", server.addr());
//! server.stop(std::time::Duration::from_secs(5));
//! server.wait().await
//! # }
//! ```
//!
//! Every call but `status`, the OpenAPI document and login needs a token
//! (`Authorization: Bearer orch_…`); [`auth::ROUTES`] says which
//! permission each route needs, and one middleware enforces it. Errors
//! are one JSON shape ([`error::ApiError`]). Bodies are at most
//! [`MAX_BODY`] bytes ([`MAX_PUBLISH_BODY`] to publish a workflow).

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod forward;
pub mod hub;
pub mod openapi;
pub mod web;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::engine::{Engine, TakeoverKind};
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::store::{RunFilter, SqliteStore, Store};

/// The largest request body of every route but publishing, in bytes.
pub const MAX_BODY: usize = 1 << 20;
/// The largest body of a publish (a workflow's files), in bytes.
pub const MAX_PUBLISH_BODY: usize = 12 << 20;
/// How often the server looks for runs that lost their owner.
pub const ADOPT_EVERY: Duration = Duration::from_secs(2);
/// The environment variable that sets the lease of the runs a server
/// drives, in milliseconds (default 30 s, between [`MIN_RUN_LEASE_MS`]
/// and [`MAX_RUN_LEASE_MS`]): how long after a server dies on another
/// host the others adopt its runs. Short in tests.
pub const RUN_LEASE_ENV: &str = "ORCH_RUN_LEASE_MS";
/// The shortest lease [`RUN_LEASE_ENV`] may set.
pub const MIN_RUN_LEASE_MS: u64 = 300;
/// The longest lease [`RUN_LEASE_ENV`] may set.
pub const MAX_RUN_LEASE_MS: u64 = 600_000;

/// The lease of a server's runs: [`RUN_LEASE_ENV`] (clamped), else
/// [`crate::store::lease::DEFAULT_TTL`].
pub fn run_lease() -> Duration {
    std::env::var(RUN_LEASE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(crate::store::lease::DEFAULT_TTL, |ms| {
            Duration::from_millis(ms.clamp(MIN_RUN_LEASE_MS, MAX_RUN_LEASE_MS))
        })
}

/// How to serve.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The database.
    pub db: PathBuf,
    /// Where to listen (default `127.0.0.1:8080`; port 0: any free port).
    pub listen: SocketAddr,
    /// A folder of pipeline files the scheduler runs on their schedules.
    pub pipelines: Option<PathBuf>,
    /// Where the workflow repository and the published runs' files live
    /// (default: `server` beside the database).
    pub data: Option<PathBuf>,
    /// How many attempts of one run may run at once when its workflow
    /// does not say.
    pub slots: usize,
    /// The URL other servers on the same database reach this one at
    /// (`http://host:port`): they forward to it the runners' reports on
    /// the runs this server drives. Default: `http://` and the listening
    /// address (`127.0.0.1` for an unspecified one).
    pub advertise: Option<String>,
}

impl ServeOptions {
    /// Serve the database at `db` with the defaults.
    pub fn new(db: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            db: db.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pipelines: None,
            data: None,
            slots: 4,
            advertise: None,
        }
    }
}

/// What every handler sees.
pub struct AppState {
    /// The engine hosting the runs.
    pub engine: Engine,
    /// Its store.
    pub store: Arc<dyn Store>,
    /// The workflow repository.
    pub repo: Arc<Repo>,
    /// The data folder.
    pub data: PathBuf,
    /// Committed events, for waiters.
    pub hub: Arc<hub::Hub>,
    /// The default parallelism of a run.
    pub slots: usize,
    /// The pipelines folder, if any.
    pub pipelines: Option<PathBuf>,
    /// Bumped to stop the server (1: gracefully; 2: at once).
    pub stop: watch::Sender<u32>,
    /// When the server started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The runs by status, as last counted, and when: `status` needs no
    /// token, so it counts at most once a second whoever asks.
    pub counts: std::sync::Mutex<Option<(std::time::Instant, api::system::Counted)>>,
    /// Tokens checked lately ([`auth::TokenCache`]).
    pub tokens: auth::TokenCache,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    task: JoinHandle<Result<()>>,
}

/// The store `db` names (a SQLite file, or a `postgres://` URL with the
/// `postgres` feature) and the folder runs keep their files in: the
/// file's folder, or `.orch` under the current directory for PostgreSQL.
fn open_store(db: &std::path::Path) -> Result<(Arc<dyn Store>, PathBuf)> {
    let text = db.to_string_lossy();
    if crate::store::is_postgres_url(&text) {
        #[cfg(feature = "postgres")]
        return Ok((
            Arc::new(crate::store::PgStore::connect(&text)?),
            PathBuf::from(".orch"),
        ));
        #[cfg(not(feature = "postgres"))]
        return Err(Error::Refused {
            what: "--db postgres://…".into(),
            message: "this orch was built without the `postgres` feature".into(),
        });
    }
    let home = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((Arc::new(SqliteStore::open(db)?), home))
}

impl Server {
    /// Opens the database and the repository, binds the address and
    /// starts serving (the scheduler too, with a pipelines folder), and
    /// adopts runs whose owner is gone.
    pub async fn start(opts: ServeOptions) -> Result<Server> {
        let (store, home) = open_store(&opts.db)?;
        let data = opts.data.clone().unwrap_or_else(|| home.join("server"));
        std::fs::create_dir_all(&data).map_err(|e| Error::Io {
            context: format!("creating the data folder {}", data.display()),
            source: e,
        })?;
        let repo = Repo::open(data.join("workflows.git")).map_err(|e| Error::Refused {
            what: "the workflow repository".into(),
            message: e.to_string(),
        })?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| Error::Io {
                context: format!("listening on {}", opts.listen),
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            context: "reading the listening address".into(),
            source: e,
        })?;
        let url = advertised(&opts, addr)?;
        // Other servers on the database find this one by the runs it owns.
        let owner = crate::store::Owner::this_process()
            .with_ttl(run_lease())
            .with_url(&url);
        let engine = Engine::with_owner(store.clone(), &home, owner);
        // Attempts that runners serve go to the queue, the rest run here.
        // Native tasks of this binary go only to runners started from it.
        let mut remote =
            crate::exec::remote::Remote::new(store.clone(), crate::exec::remote::lease_ms());
        if let Ok(exe) = std::env::current_exe() {
            remote = remote.with_native_binary(exe);
        }
        let remote = Arc::new(remote);
        engine.send_to_runners(remote);
        let hub = Arc::new(hub::Hub::new(4096));
        engine.observe(hub.clone());
        let (stop, _) = watch::channel(0u32);
        let state = Arc::new(AppState {
            engine,
            store,
            repo: Arc::new(repo),
            data,
            hub,
            slots: opts.slots.max(1),
            pipelines: opts.pipelines.clone(),
            stop,
            started_ms: crate::time::unix_millis(),
            counts: std::sync::Mutex::new(None),
            tokens: auth::TokenCache::default(),
        });
        let app = router(state.clone());
        let task = tokio::spawn(run(state.clone(), listener, app));
        info!(%addr, %url, engine = %state.engine.owner().id, db = %state.store.location(), "orch server listening");
        Ok(Server { addr, state, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Asks the server to stop: runs are stopped gracefully within
    /// `grace` (left resumable: the next server adopts them), the
    /// scheduler starts nothing more, and the listener closes.
    pub fn stop(&self, grace: Duration) {
        self.state.engine.shutdown(grace);
        self.state.stop.send_modify(|n| *n += 1);
    }

    /// Waits until the server stopped.
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(|e| Error::Io {
            context: "the server task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

/// The URL this server advertises to the others on its database.
fn advertised(opts: &ServeOptions, addr: SocketAddr) -> Result<String> {
    if let Some(url) = &opts.advertise {
        let url = url.trim_end_matches('/');
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() <= 1024
            && !url.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(Error::Refused {
                what: format!("--advertise {url}"),
                message: "an http:// or https:// URL (at most 1024 characters, no spaces)".into(),
            });
        }
        return Ok(url.to_string());
    }
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        warn!(%addr, "listening on every address: other servers reach this one at 127.0.0.1 unless --advertise says where");
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{addr}"))
}

/// Serves until `SIGINT`/`SIGTERM` (gracefully; a second signal stops at
/// once): the blocking entry point of `orch serve`.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            context: "starting the runtime".into(),
            source: e,
        })?;
    runtime.block_on(async {
        let mut signals = crate::engine::StopSignals::install();
        let server = Server::start(opts).await?;
        // The address on stdout, alone on its line: scripts read it.
        println!("listening on http://{}", server.addr());
        let state = server.state.clone();
        let wait = server.wait();
        tokio::pin!(wait);
        let mut seen = 0;
        loop {
            tokio::select! {
                r = &mut wait => return r,
                signal = signals.next() => {
                    seen += 1;
                    let grace = if seen == 1 { crate::engine::stop_grace() } else { Duration::ZERO };
                    warn!(signal, grace_s = grace.as_secs_f64(), "stopping the server: runs stay resumable");
                    state.engine.shutdown(grace);
                    state.stop.send_modify(|n| *n += 1);
                }
            }
        }
    })
}

/// The API's routes, with the authorization middleware and the limits.
pub fn router(state: Arc<AppState>) -> Router {
    api::routes(state.clone())
        .fallback(|| async {
            error::ApiError::not_found(
                "no such route; the API is described at /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                error::Code::MethodNotAllowed,
                "this route does not take this method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state.clone())
        .merge(web::routes(state))
}

/// Serves until stopped, with the scheduler and the adoption loop beside.
async fn run(state: Arc<AppState>, listener: tokio::net::TcpListener, app: Router) -> Result<()> {
    let mut stopped = state.stop.subscribe();
    let scheduler = state.pipelines.clone().map(|dir| {
        let engine = state.engine.clone();
        let stop = state.stop.subscribe();
        tokio::spawn(async move {
            let mut s = crate::scheduler::Scheduler::new(dir, engine);
            if let Err(e) = s.run_until(stop).await {
                warn!(error = %e, "the scheduler stopped");
            }
        })
    });
    let adopter = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut refused = HashSet::new();
            loop {
                adopt(&state, &mut refused).await;
                tokio::time::sleep(ADOPT_EVERY).await;
            }
        })
    };
    // Attempts whose runner missed its heartbeats end as interrupted
    // (their nodes run again as the next attempt).
    let sweeper = state.engine.remote().cloned().map(|remote| {
        tokio::spawn(async move {
            let every = Duration::from_millis((remote.lease_ms() / 4).clamp(50, 1000) as u64);
            loop {
                tokio::time::sleep(every).await;
                let r = remote.clone();
                match tokio::task::spawn_blocking(move || r.sweep()).await {
                    Ok(Ok(lost)) => {
                        for id in lost {
                            warn!(attempt = %id, "an attempt lost its runner; its node runs again");
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "looking for lost claims failed"),
                    Err(e) => warn!(error = %e, "the sweep of lost claims failed"),
                }
            }
        })
    });
    let shutdown = async move {
        let _ = stopped.changed().await;
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    adopter.abort();
    if let Some(s) = sweeper {
        s.abort();
    }
    // The runs it drives stop within their grace (the engine was told).
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    wait_for_runs(&state.engine).await;
    served.map_err(|e| Error::Io {
        context: "serving".into(),
        source: e,
    })
}

/// Waits (bounded) until the engine drives no run.
async fn wait_for_runs(engine: &Engine) {
    let deadline =
        tokio::time::Instant::now() + crate::engine::stop_grace() + Duration::from_secs(10);
    while !engine.hosted().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes over every running or paused run whose owner is gone (its
/// process dead on this host, its lease expired, or released by a
/// graceful stop), and drives it to its end here.
/// A run whose takeover was refused (a script changed, say) is not tried
/// again by this server: `orch resume --force` is for a person to decide.
async fn adopt(state: &Arc<AppState>, refused: &mut HashSet<String>) {
    let mut candidates = Vec::new();
    for status in [
        crate::model::RunStatus::Running,
        crate::model::RunStatus::Paused,
    ] {
        let mut f = RunFilter::newest(1000);
        f.status = Some(status);
        match state.store.runs_page(&f) {
            Ok(runs) => candidates.extend(runs.into_iter().map(|r| r.id)),
            Err(e) => {
                warn!(error = %e, "listing runs to adopt failed");
                return;
            }
        }
    }
    // Read after the list: a run listed as running was registered
    // before, so one this engine is starting or driving is hosted now.
    let hosted: HashSet<String> = state.engine.hosted().into_iter().collect();
    let me = state.engine.owner().clone();
    let now = crate::time::unix_millis() as i64;
    candidates.retain(|r| !hosted.contains(r) && !refused.contains(r));
    for run in candidates {
        let Ok(record) = state.store.owner(&run) else {
            continue;
        };
        let verdict = crate::store::lease::may_take_over(
            &record,
            &me,
            now,
            false,
            &crate::host::process_start,
        );
        if !verdict.allows() {
            continue;
        }
        match state
            .engine
            .take_over(&run, TakeoverKind::Resume, false, None)
            .await
        {
            Ok(handle) => {
                info!(%run, ?verdict, "adopted a run whose owner is gone");
                tokio::spawn(async move {
                    if let Err(e) = handle.wait().await {
                        warn!(error = %e, "an adopted run failed");
                    }
                });
            }
            Err(crate::Error::Owned { .. }) => {}
            // The database failed (it is restarting, say): not a decision
            // about the run; the next round tries again.
            Err(e @ crate::Error::Store { .. }) => {
                warn!(%run, error = %e, "adopting a run failed; trying again soon");
            }
            Err(e) => {
                warn!(%run, error = %e, "adopting a run failed; this server leaves it alone");
                refused.insert(run);
            }
        }
    }
}
