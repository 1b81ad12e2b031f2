//! A throwaway PostgreSQL cluster for tests (feature `testing`): the
//! server binaries of the machine (`initdb`, `pg_ctl`), a new data
//! directory under the temporary folder, a free port on 127.0.0.1, trust
//! authentication, no fsync; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Where the server binaries are looked for when `ORCH_PG_BIN` is unset:
/// Debian's and Ubuntu's `postgresql-NN` packages, newest first.
const DEBIAN_BINS: &str = "/usr/lib/postgresql";

/// The variable naming the folder of `initdb` and `pg_ctl`.
pub const PG_BIN_ENV: &str = "ORCH_PG_BIN";

/// A running PostgreSQL cluster of its own, for tests.
///
/// ```no_run
/// let cluster = orch::store::PgTestCluster::start()?;
/// let url = cluster.new_database()?;
/// let store = orch::store::PgStore::connect(&url)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TestCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    databases: AtomicUsize,
    stopped: AtomicBool,
}

/// Why a cluster could not start.
#[derive(Debug)]
pub struct ClusterError(String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

fn fail(message: impl Into<String>) -> ClusterError {
    ClusterError(message.into())
}

/// The folder holding `initdb` and `pg_ctl`.
fn find_bin() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(fail(format!(
            "{PG_BIN_ENV}={} holds no initdb",
            dir.display()
        )));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BINS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    Err(fail(format!(
        "PostgreSQL's server binaries (initdb, pg_ctl) were not found under {DEBIAN_BINS}/NN/bin \
         and {PG_BIN_ENV} is unset: install them (Debian: apt-get install postgresql) or point \
         {PG_BIN_ENV} at their folder; the PostgreSQL tests cannot run without them"
    )))
}

/// A port nothing listens on now.
fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| fail(format!("no free port on 127.0.0.1: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| fail(format!("no free port on 127.0.0.1: {e}")))
}

impl TestCluster {
    /// Creates and starts a cluster; an error saying what is missing
    /// when the server binaries are not installed.
    pub fn start() -> Result<TestCluster, ClusterError> {
        let bin = find_bin()?;
        // initdb refuses to run as root: root runs it as `postgres`.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "orch-pg-{}-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| fail(format!("opening {} to postgres: {e}", dir.display())))?;
        }
        let mut cluster = TestCluster {
            bin,
            dir,
            port: 0,
            as_postgres,
            databases: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        };
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        // A port taken between our probe and the server's bind: another.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                cluster.port,
                cluster.dir.display()
            );
            let log = cluster.dir.join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    opts.as_ref(),
                    "-w".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| fail("the server did not start")))
    }

    /// Runs one of the server's binaries (as `postgres` when root).
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), ClusterError> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.dir);
        let out = cmd
            .output()
            .map_err(|e| fail(format!("running {}: {e}", exe.display())))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(fail(format!(
            "{} failed ({}): {}{}\n{log}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` (user `postgres`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn new_database(&self) -> Result<String, ClusterError> {
        let name = format!(
            "orch_test_{}",
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE {name}");
        super::conn::off_runtime(|| -> Result<(), ClusterError> {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .map_err(|e| fail(format!("connecting to {admin}: {e}")))?;
            c.batch_execute(&sql)
                .map_err(|e| fail(format!("{sql}: {e}")))
        })?;
        Ok(self.url(&name))
    }
}

impl TestCluster {
    /// Restarts the server the way an operator does (`pg_ctl restart -m
    /// fast`: every connection is ended, the server stops and starts
    /// again on the same port); returns once it accepts connections.
    pub fn restart(&self) -> Result<(), ClusterError> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "restart".as_ref(),
            ],
        )
    }

    /// Stops the server and removes its folder (once; dropping does it
    /// too).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
