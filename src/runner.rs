//! `orch runner`: a process on any machine that runs attempts for a
//! server. It registers (name, capabilities, slots, version), heartbeats
//! within its lease, long-polls for attempts of the queues it serves,
//! runs each with the local process executor, relays every mutation the
//! task sends to the server (the engine that owns the run answers it) and
//! reports the end. It talks HTTP to the server only, never to the
//! database.
//!
//! The first `SIGTERM` or Ctrl-C drains: nothing new is claimed, running
//! attempts finish and are reported, then it exits. A second one kills
//! its attempts and exits at once (the server re-queues them after the
//! lease). A drain asked by the server (`POST runners/{id}/shutdown`)
//! works the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::client::{Client, ClientError};
use crate::exec::remote::{WireEnd, WireFile, WireSpec};
use crate::exec::resources::Offer;
use crate::exec::{
    configured_python, install_helper, AttemptEnd, AttemptId, AttemptLink, AttemptSpec, Executor,
    Exit, Interrupt, ProcessEnv, ProcessExecutor, Report, Stop,
};

/// How long one claim waits on the server for work, in milliseconds.
pub const CLAIM_WAIT_MS: u64 = 10_000;

/// How a runner runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// The server (`http://host:port`).
    pub server: String,
    /// Other servers of the same database, tried in order when the one
    /// it talks to cannot be reached ([`Client::with_fallbacks`]).
    pub fallbacks: Vec<String>,
    /// A runner token (`orch token create --user U --runner`).
    pub token: String,
    /// Its name.
    pub name: String,
    /// What it offers tasks.
    pub capabilities: Offer,
    /// How many attempts it runs at once.
    pub slots: u32,
    /// Where tasks run (their working directory) and the Python helper is
    /// installed.
    pub dir: PathBuf,
    /// The workflow binary whose native tasks it runs (started again in
    /// task mode), if any: see [`serve_native`].
    pub native_binary: Option<PathBuf>,
}

impl RunnerOptions {
    /// A runner of `server` with `token`, offering this machine
    /// ([`Offer::here`]) in 4 slots, named after the host, working in
    /// `dir`.
    pub fn new(server: &str, token: &str, dir: impl Into<PathBuf>) -> RunnerOptions {
        RunnerOptions {
            server: server.to_string(),
            fallbacks: Vec::new(),
            token: token.to_string(),
            name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "runner".to_string()),
            capabilities: Offer::here(),
            slots: 4,
            dir: dir.into(),
            native_binary: None,
        }
    }
}

/// Runs this very program as a runner that also serves its own native
/// tasks (`#[orch::task]`), the way Temporal workers host their
/// activities: call it from a workflow binary's `main` (in runner mode,
/// however the binary chooses to be told). It advertises the label
/// `binary=<SHA-256 of this executable>`
/// ([`crate::exec::remote::binary_label`]); a server started from the same
/// binary requires that label of the attempts of its native tasks, so
/// only runners of the very same build claim them. Blocks like [`run`].
pub fn serve_native(mut opts: RunnerOptions) -> Result<(), RunnerError> {
    let exe = std::env::current_exe()
        .map_err(|e| RunnerError::Setup(format!("finding this program's executable: {e}")))?;
    let label = crate::exec::remote::binary_label(&exe)
        .map_err(|e| RunnerError::Setup(format!("hashing {}: {e}", exe.display())))?;
    if !opts.capabilities.labels.contains(&label) {
        opts.capabilities.labels.push(label);
    }
    opts.native_binary = Some(exe);
    run(opts)
}

/// Why a runner stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The server refused or could not be reached.
    #[error("server {server}: {source}")]
    Server {
        /// The server.
        server: String,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
    /// The runner could not set itself up (its folder, the runtime, the
    /// Python helper).
    #[error("{0}")]
    Setup(String),
}

/// Parses `--capabilities cpus=8,mem=16G,gpus=1,exec=slurm,ssd`: numbers
/// for `cpus`, `mem` (with K, M, G or T) and `gpus`, every other item a
/// label. Unset numbers are this machine's.
///
/// ```
/// let o = orch::runner::parse_capabilities("cpus=8,mem=16G,exec=slurm,ssd").unwrap();
/// assert_eq!(o.cpu, 8.0);
/// assert_eq!(o.memory, Some(16 << 30));
/// assert_eq!(o.labels, ["exec=slurm", "ssd"]);
/// assert!(orch::runner::parse_capabilities("cpus=lots").is_err());
/// ```
pub fn parse_capabilities(text: &str) -> Result<Offer, String> {
    let mut o = Offer::here();
    let env_labels = std::mem::take(&mut o.labels);
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some(("cpus", v)) => {
                o.cpu = v
                    .parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c >= 0.0)
                    .ok_or_else(|| format!("`{item}`: cpus is a number of cores"))?;
            }
            Some(("gpus", v)) => {
                o.gpu = v
                    .parse()
                    .map_err(|_| format!("`{item}`: gpus is a whole number"))?;
            }
            Some(("mem", v)) => {
                let (num, unit) =
                    v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
                let shift = match unit.to_ascii_uppercase().as_str() {
                    "" | "B" => 0,
                    "K" => 10,
                    "M" => 20,
                    "G" => 30,
                    "T" => 40,
                    _ => return Err(format!("`{item}`: mem takes K, M, G or T")),
                };
                let n: u64 = num
                    .parse()
                    .map_err(|_| format!("`{item}`: mem is a whole number with K, M, G or T"))?;
                o.memory = Some(
                    n.checked_shl(shift)
                        .filter(|m| m >> shift == n)
                        .ok_or_else(|| format!("`{item}`: too large"))?,
                );
            }
            _ => o.labels.push(item.to_string()),
        }
    }
    for l in env_labels {
        if !o.labels.contains(&l) {
            o.labels.push(l);
        }
    }
    Ok(o)
}

/// The most log lines one report carries.
const LOG_BATCH: usize = 1000;
/// How often waiting log lines are sent.
const LOG_EVERY: Duration = Duration::from_millis(250);

/// Sends the waiting log lines of attempt `id` (the end carries every
/// line again, so a batch that fails to go is not lost for good).
async fn flush_logs(shared: &Shared, id: &AttemptId, path: &str, pending: &mut Vec<Value>) {
    if pending.is_empty() {
        return;
    }
    let lines = std::mem::take(pending);
    let body = json!({"runner": shared.id, "logs": lines});
    if let Err(e) = call(&shared.client, path.to_string(), body).await {
        warn!(attempt = %id, error = %e, "streaming log lines failed");
    }
}

/// What the runner holds: each attempt and the line that stops it.
type Holding = Arc<Mutex<HashMap<AttemptId, mpsc::UnboundedSender<Stop>>>>;

/// The most executors of published files a runner keeps (each may hold
/// a warm Python fork server); the least recently used idle one goes.
const MAX_TREES: usize = 16;

/// The executors of published workflows' files, by the files' key.
#[derive(Default)]
struct Trees {
    execs: HashMap<String, TreeExec>,
    tick: u64,
}

struct TreeExec {
    exec: Arc<dyn Executor>,
    /// When it was last used (the `tick`).
    last: u64,
    /// Attempts it runs now.
    users: usize,
}

struct Shared {
    client: Client,
    id: String,
    holding: Holding,
    draining: AtomicBool,
    freed: Notify,
    /// The runner's folder.
    dir: PathBuf,
    /// How its executors run processes (the one for attempts without
    /// files, and the template of the others).
    env: ProcessEnv,
    /// Attempts go to SLURM (the runner has the `exec=slurm` label).
    slurm: bool,
    trees: Mutex<Trees>,
}

impl Shared {
    fn err(&self, source: ClientError) -> RunnerError {
        RunnerError::Server {
            server: self.client.base().to_string(),
            source,
        }
    }

    fn held(&self) -> Vec<AttemptId> {
        self.holding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The executor whose scripts are in `tree` (key `key`), taken for
    /// one attempt ([`Shared::release`] gives it back). Tasks still run in
    /// the runner's folder; their scripts and `ORCH_WORKFLOW_DIR` are the
    /// tree.
    fn tree_executor(&self, key: &str, tree: PathBuf) -> Arc<dyn Executor> {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        trees.tick += 1;
        let tick = trees.tick;
        if !trees.execs.contains_key(key) && trees.execs.len() >= MAX_TREES {
            let idle = trees
                .execs
                .iter()
                .filter(|(_, t)| t.users == 0)
                .min_by_key(|(_, t)| t.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = idle {
                trees.execs.remove(&k);
            }
        }
        let t = trees
            .execs
            .entry(key.to_string())
            .or_insert_with(|| TreeExec {
                exec: executor(&self.env, self.slurm, Some(tree)),
                last: tick,
                users: 0,
            });
        t.last = tick;
        t.users += 1;
        t.exec.clone()
    }

    fn release(&self, key: &str) {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trees.execs.get_mut(key) {
            t.users = t.users.saturating_sub(1);
        }
    }

    fn stop(&self, id: &AttemptId, how: Stop) {
        if let Some(tx) = self
            .holding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            let _ = tx.send(how);
        }
    }
}

async fn call(client: &Client, path: String, body: Value) -> Result<Value, ClientError> {
    let client = client.clone();
    tokio::task::spawn_blocking(move || client.post(&path, &body))
        .await
        .map_err(|e| ClientError::Transport {
            url: "(worker)".into(),
            message: e.to_string(),
        })?
}

/// The executor of a runner: SLURM's (`slurm`) or this machine's, with
/// scripts in `tree` when the attempts come with files (tasks still run
/// in the runner's folder).
fn executor(env: &ProcessEnv, slurm: bool, tree: Option<PathBuf>) -> Arc<dyn Executor> {
    if slurm {
        return Arc::new(crate::exec::slurm::SlurmExecutor::new(
            crate::exec::slurm::SlurmEnv {
                dir: env.base_dir.clone(),
                base_dir: tree.unwrap_or_else(|| env.base_dir.clone()),
                python: env.python.clone(),
                helper_dir: env.helper_dir.clone(),
            },
        ));
    }
    match tree {
        None => Arc::new(ProcessExecutor::new(env.clone())),
        Some(tree) => Arc::new(ProcessExecutor::new(ProcessEnv {
            base_dir: tree,
            run_dir: Some((env.base_dir.clone(), true)),
            ..env.clone()
        })),
    }
}

/// The capability label that hands a runner's attempts to SLURM.
pub const SLURM_LABEL: &str = "exec=slurm";

/// How long a report is retried while the server answers `503` (the
/// run's owner is gone and no server adopted it yet).
pub const MAX_UNAVAILABLE: Duration = Duration::from_secs(300);

/// `call`, retried while the server answers `503`: the run's owner is
/// gone and another server adopts the run soon (it then re-attaches to
/// the attempt). Anything else, and the `503` after [`MAX_UNAVAILABLE`],
/// is returned.
async fn call_until_owned(
    client: &Client,
    id: &AttemptId,
    path: &str,
    body: &Value,
) -> Result<Value, ClientError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call(client, path.to_string(), body.clone()).await {
            Err(ClientError::Api {
                status: 503,
                message,
                ..
            }) if started.elapsed() < MAX_UNAVAILABLE => {
                info!(attempt = %id, %message, "the run has no live owner yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Runs a runner until it is drained (a signal or the server's
/// shutdown), then returns.
pub fn run(opts: RunnerOptions) -> Result<(), RunnerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunnerError::Setup(format!("starting the runtime: {e}")))?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: RunnerOptions) -> Result<(), RunnerError> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| RunnerError::Setup(format!("creating {}: {e}", opts.dir.display())))?;
    let helper_dir = install_helper(&opts.dir.join(".orch-helper"))
        .map_err(|e| RunnerError::Setup(e.to_string()))?;
    let env = ProcessEnv {
        base_dir: opts.dir.clone(),
        python: configured_python(None),
        helper_dir,
        db: PathBuf::from("(remote: this runner has no database)"),
        default_timeout: None,
        native_binary: opts.native_binary.clone(),
        python_fork: true,
        python_preload: Vec::new(),
        run_dir: None,
        container_engine: None,
    };
    let slurm = opts.capabilities.labels.iter().any(|l| l == SLURM_LABEL);
    let exec = executor(&env, slurm, None);
    let client =
        Client::new(&opts.server, Some(opts.token.clone())).with_fallbacks(&opts.fallbacks);
    let c = &opts.capabilities;
    let reg = call(
        &client,
        "/api/v1/runners/register".into(),
        json!({
            "name": opts.name,
            "capabilities": {"cpu": c.cpu, "memory": c.memory, "gpu": c.gpu, "labels": c.labels},
            "slots": opts.slots,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
    .await
    .map_err(|source| RunnerError::Server {
        server: client.base().to_string(),
        source,
    })?;
    let id = reg["runner"]["id"].as_str().unwrap_or_default().to_string();
    let lease_ms = reg["lease_ms"].as_i64().unwrap_or(15_000).max(300) as u64;
    // Scripts read this line.
    println!("runner {id} registered");
    info!(runner = %id, name = %opts.name, lease_ms, "registered");
    let shared = Arc::new(Shared {
        client,
        id,
        holding: Arc::new(Mutex::new(HashMap::new())),
        draining: AtomicBool::new(false),
        freed: Notify::new(),
        dir: opts.dir.clone(),
        env,
        slurm,
        trees: Mutex::new(Trees::default()),
    });
    let beat = tokio::spawn(heartbeats(
        shared.clone(),
        Duration::from_millis(lease_ms / 3),
    ));
    let mut signals = crate::engine::StopSignals::install();
    let mut seen = 0;
    while !shared.draining.load(Ordering::SeqCst) {
        let free = opts.slots as usize - shared.held().len().min(opts.slots as usize);
        if free == 0 {
            tokio::select! {
                _ = shared.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = signals.next() => { seen += 1; shared.draining.store(true, Ordering::SeqCst); }
            }
            continue;
        }
        let claim = call(
            &shared.client,
            format!("/api/v1/runners/{}/claim", shared.id),
            json!({"max": free.min(crate::store::queue::MAX_CLAIM), "wait_ms": CLAIM_WAIT_MS}),
        );
        tokio::pin!(claim);
        let got = loop {
            tokio::select! {
                got = &mut claim => break got,
                _ = signals.next() => {
                    seen += 1;
                    info!("draining: finishing what this runner holds");
                    shared.draining.store(true, Ordering::SeqCst);
                }
            }
        };
        match got {
            Ok(v) => {
                for a in v["attempts"].as_array().cloned().unwrap_or_default() {
                    start(&shared, &exec, a["spec"].clone());
                }
            }
            Err(e) => {
                warn!(error = %shared.err(e), "claiming failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Drain: wait for what it holds; a second signal kills it.
    while !shared.held().is_empty() {
        tokio::select! {
            _ = shared.freed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = signals.next(), if seen < 2 => {
                seen += 1;
                if seen >= 2 {
                    warn!("stopping at once: killing the attempts this runner holds");
                    for a in shared.held() {
                        shared.stop(&a, Stop::Kill);
                    }
                }
            }
        }
    }
    beat.abort();
    info!("drained");
    Ok(())
}

/// Renews the lease every `every`; stops attempts the server says are no
/// longer this runner's; drains when the server asks.
async fn heartbeats(shared: Arc<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let holding: Vec<Value> = shared
            .held()
            .into_iter()
            .map(|a| json!({"run": a.run, "node": a.node, "attempt": a.attempt}))
            .collect();
        match call(
            &shared.client,
            format!("/api/v1/runners/{}/heartbeat", shared.id),
            json!({ "holding": holding }),
        )
        .await
        {
            Ok(beat) => {
                if beat["draining"].as_bool() == Some(true)
                    && !shared.draining.swap(true, Ordering::SeqCst)
                {
                    info!("the server asked this runner to drain");
                }
                for lost in beat["lost"].as_array().cloned().unwrap_or_default() {
                    if let Ok(id) = serde_json::from_value::<AttemptId>(lost) {
                        warn!(attempt = %id, "no longer this runner's: killing it");
                        shared.stop(&id, Stop::Kill);
                    }
                }
            }
            Err(e) => warn!(error = %shared.err(e), "a heartbeat failed"),
        }
    }
}

/// The folder of the files attempt `id` needs (fetched from the server
/// as needed) and its key.
async fn fetch_files(
    shared: &Arc<Shared>,
    id: &AttemptId,
    files: Vec<WireFile>,
) -> Result<(String, PathBuf), String> {
    let client = shared.client.clone();
    let dir = shared.dir.clone();
    let path = format!(
        "/api/v1/attempts/{}/{}/{}/file",
        crate::client::encode(&id.run),
        crate::client::encode(&id.node),
        id.attempt
    );
    let runner = shared.id.clone();
    tokio::task::spawn_blocking(move || {
        crate::runner_files::prepare(&dir, &files, |f| {
            client
                .post_bytes(
                    &path,
                    &json!({"runner": runner, "sha256": f.sha256}),
                    f.bytes,
                )
                .map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| format!("a worker failed: {e}"))?
}

/// Starts a claimed attempt (once the files it needs are in place) and
/// relays its reports.
fn start(shared: &Arc<Shared>, exec: &Arc<dyn Executor>, spec: Value) {
    let spec: WireSpec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "a claimed attempt does not parse; it is left to expire");
            return;
        }
    };
    let mut spec = spec;
    let files = std::mem::take(&mut spec.files);
    let mut spec: AttemptSpec = spec.into();
    // The claim matched the requirements against the capabilities this
    // runner declared: those, not what the local executor would detect,
    // are the promise. SLURM is told them instead (`sbatch` options).
    if !shared.slurm {
        spec.task.requires = None;
    }
    let id = spec.id.clone();
    let produces = spec.task.produces.clone();
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (kill_tx, kill_rx) = mpsc::unbounded_channel();
    shared
        .holding
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), kill_tx);
    let exec = exec.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        // A published workflow's files first: the attempt's scripts run
        // from their folder.
        let mut ready = true;
        let (exec, tree) = if files.is_empty() {
            (exec, None)
        } else {
            match fetch_files(&shared, &id, files).await {
                Ok((key, dir)) => (shared.tree_executor(&key, dir), Some(key)),
                Err(why) => {
                    ready = false;
                    warn!(attempt = %id, error = %why, "the attempt's files are not here");
                    let _ = reports_tx.send(Report::Finished {
                        attempt: id.clone(),
                        end: AttemptEnd::broken(format!(
                            "the workflow's files did not reach runner `{}`: {why}",
                            shared.id
                        )),
                    });
                    (exec, None)
                }
            }
        };
        info!(attempt = %id, "running");
        let link = AttemptLink::new(id.clone(), reports_tx.clone(), kill_rx).following_logs(true);
        if ready {
            if let Err(e) = exec.launch(spec, link) {
                let _ = reports_tx.send(Report::Finished {
                    attempt: id.clone(),
                    end: AttemptEnd::broken(e.to_string()),
                });
            }
        }
        drop(reports_tx);
        relay(&shared, &id, &produces, &mut reports).await;
        if let Some(key) = tree {
            shared.release(&key);
        }
    });
}

/// Uploads the files a successful attempt declared it `produces` from
/// the runner's folder (a missing one is left for the server to name).
async fn upload_artefacts(
    shared: &Arc<Shared>,
    id: &AttemptId,
    produces: &[String],
) -> Result<(), String> {
    use crate::exec::remote::{check_relative, MAX_ARTEFACT, MAX_ARTEFACTS};
    let mut total = 0u64;
    for p in produces {
        let file = shared.dir.join(check_relative(p)?);
        // Not followed: a link could point anywhere.
        let meta = match std::fs::symlink_metadata(&file) {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        total += meta.len();
        if meta.len() > MAX_ARTEFACT || total > MAX_ARTEFACTS {
            return Err(format!(
                "`{p}`: {} bytes; an artefact is at most {MAX_ARTEFACT} bytes, an attempt's at most {MAX_ARTEFACTS} in all",
                meta.len()
            ));
        }
        let content = std::fs::read(&file).map_err(|e| format!("reading `{p}`: {e}"))?;
        let client = shared.client.clone();
        let url = format!(
            "/api/v1/attempts/{}/{}/{}/artefact?runner={}&path={}",
            crate::client::encode(&id.run),
            crate::client::encode(&id.node),
            id.attempt,
            crate::client::encode(&shared.id),
            crate::client::encode(p)
        );
        tokio::task::spawn_blocking(move || client.post_raw(&url, content))
            .await
            .map_err(|e| format!("a worker failed: {e}"))?
            .map_err(|e| format!("`{p}`: {e}"))?;
    }
    Ok(())
}

/// Relays attempt `id`'s reports to the server until its end.
async fn relay(
    shared: &Arc<Shared>,
    id: &AttemptId,
    produces: &[String],
    reports: &mut mpsc::UnboundedReceiver<Report>,
) {
    let id = id.clone();
    let shared = shared.clone();
    {
        let path = format!(
            "/api/v1/attempts/{}/{}/{}/report",
            crate::client::encode(&id.run),
            crate::client::encode(&id.node),
            id.attempt
        );
        // Log lines go in batches, at least every LOG_EVERY while any
        // wait, and before each mutation and the end.
        let mut pending: Vec<Value> = Vec::new();
        let mut tick = tokio::time::interval(LOG_EVERY);
        // Mutations the engine acknowledged: the end says how many, so an
        // engine that took the run over meanwhile can tell whether it saw
        // them all.
        let mut acked: u32 = 0;
        loop {
            let r = tokio::select! {
                r = reports.recv() => r,
                _ = tick.tick() => {
                    flush_logs(&shared, &id, &path, &mut pending).await;
                    continue;
                }
            };
            let Some(r) = r else { break };
            match r {
                Report::Log { line, .. } => {
                    pending.push(json!([line.line, line.stream, line.text]));
                    if pending.len() >= LOG_BATCH {
                        flush_logs(&shared, &id, &path, &mut pending).await;
                    }
                }
                Report::Mutation {
                    mutation, reply, ..
                } => {
                    flush_logs(&shared, &id, &path, &mut pending).await;
                    let body = json!({"runner": shared.id, "mutation": mutation});
                    let answer = match call_until_owned(&shared.client, &id, &path, &body).await {
                        Ok(v) if v["ok"].as_bool() == Some(true) => {
                            acked += 1;
                            Ok(())
                        }
                        Ok(v) => Err(v["error"].as_str().unwrap_or("refused").to_string()),
                        Err(e) => {
                            // Fenced or unreachable: this attempt is over here.
                            shared.stop(&id, Stop::Kill);
                            Err(e.to_string())
                        }
                    };
                    let _ = reply.send(answer);
                }
                Report::Finished { mut end, .. } => {
                    flush_logs(&shared, &id, &path, &mut pending).await;
                    // A successful attempt's artefacts go to the server
                    // first: its end is judged with them there.
                    if end.exit == Exit::Code(0) && end.interrupt.is_none() && !produces.is_empty()
                    {
                        if let Err(why) = upload_artefacts(&shared, &id, produces).await {
                            warn!(attempt = %id, error = %why, "uploading the artefacts failed");
                            end.interrupt(Interrupt::Broken(format!(
                                "runner `{}` could not upload the attempt's artefacts: {why}",
                                shared.id
                            )));
                        }
                    }
                    let mut wire = WireEnd::from(&end);
                    wire.mutations = Some(acked);
                    let body = json!({"runner": shared.id, "end": wire});
                    for round in 0..5 {
                        match call_until_owned(&shared.client, &id, &path, &body).await {
                            Ok(_) => break,
                            Err(ClientError::Api {
                                status, message, ..
                            }) => {
                                warn!(attempt = %id, status, %message, "the server refused the end");
                                break;
                            }
                            Err(e) => {
                                warn!(attempt = %id, error = %e, round, "reporting the end failed");
                                tokio::time::sleep(Duration::from_millis(500 << round)).await;
                            }
                        }
                    }
                    break;
                }
            }
        }
        shared
            .holding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        shared.freed.notify_waiters();
        info!(attempt = %id, "reported");
    }
}
