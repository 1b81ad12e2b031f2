//! `orch serve`, `orch user` and `orch token`: the server and the users
//! and tokens of its database (these work before the server first
//! starts, to bootstrap the first admin).

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use orch::access::{Permission, Role};
use orch::server::auth;
use orch::store::{PgStore, SqliteStore, Store};

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

/// `orch serve`'s flags.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A folder of pipeline files the scheduler runs on their schedules.
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Where the workflow repository and the runs' files live (default:
    /// `server` beside the database).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How many attempts of a run may run at once when its workflow does
    /// not say.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// The URL other servers on the same database reach this one at, to
    /// forward runners' reports on the runs it drives (default:
    /// `http://` and the listening address).
    #[arg(long)]
    pub advertise: Option<String>,
}

/// `orch runner`'s flags.
#[derive(clap::Args)]
pub struct RunnerArgs {
    /// Its name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// What it offers: `cpus=8,mem=16G,gpus=1` and labels (`exec=slurm`,
    /// `ssd`); unset numbers are this machine's, `ORCH_LABELS` adds labels.
    #[arg(long, default_value = "")]
    pub capabilities: String,
    /// How many attempts it runs at once.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Where tasks run (default: `.orch-runner` in the current folder).
    #[arg(long, default_value = ".orch-runner")]
    pub dir: PathBuf,
    /// Another server of the same database to fall back on when the one
    /// it talks to cannot be reached (repeatable; tried in order).
    #[arg(long = "fallback", value_name = "URL")]
    pub fallbacks: Vec<String>,
}

/// `orch runner`: runs attempts for a server until drained.
/// The server is the global `--server URL`; the token is `ORCH_TOKEN`, a
/// runner token (`orch token create --user U --runner`).
pub fn runner(server: &str, args: RunnerArgs) -> Res {
    let token = std::env::var("ORCH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or(
            "orch runner needs a runner token in ORCH_TOKEN (orch token create --user U --runner)",
        )?;
    if args.slots == 0 || args.slots > orch::store::queue::MAX_SLOTS {
        return Err(format!("--slots must be 1 to {}", orch::store::queue::MAX_SLOTS).into());
    }
    let mut opts = orch::runner::RunnerOptions::new(server, &token, args.dir);
    opts.capabilities = orch::runner::parse_capabilities(&args.capabilities)
        .map_err(|e| format!("--capabilities {e}"))?;
    opts.slots = args.slots;
    opts.fallbacks = args.fallbacks;
    if let Some(name) = args.name {
        opts.name = name;
    }
    orch::init_tracing();
    orch::runner::run(opts)?;
    Ok(ExitCode::SUCCESS)
}

/// `orch user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input (one line).
    Add {
        /// The name.
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
    },
    /// List the users.
    List,
    /// Remove a user and revoke their tokens.
    Remove {
        /// The name.
        name: String,
    },
}

/// `orch token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for a user; it is printed once, alone on the last line.
    Create {
        /// The user it acts for.
        #[arg(long)]
        user: String,
        /// A name to tell it apart.
        #[arg(long, default_value = "")]
        name: String,
        /// It stops working after this long (`90`, `12h`, `30d`).
        #[arg(long)]
        expires: Option<String>,
        /// Narrow it to these permissions (read, operate, admin); repeat or
        /// separate with commas.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// A runner's token: register, heartbeat, claim and report only.
        #[arg(long)]
        runner: bool,
    },
    /// List tokens (never the tokens themselves).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The id (the part after `orch_`, before the second `_`).
        id: String,
    },
}

/// How a command opens the database.
#[derive(Clone, Copy)]
enum Open {
    /// Creating it when missing.
    Create,
    /// Only one that exists.
    Existing,
    /// Only one that exists, never written.
    ReadOnly,
}

/// The store `db` names: a PostgreSQL database for a `postgres://` URL
/// (created or upgraded to this orch's schema whatever `how` says: the
/// database itself must exist), else the SQLite file.
fn open(db: &Path, how: Open) -> Result<Box<dyn Store>, orch::Error> {
    let text = db.to_string_lossy();
    if orch::store::is_postgres_url(&text) {
        return Ok(Box::new(PgStore::connect(&text)?));
    }
    Ok(match how {
        Open::Create => Box::new(SqliteStore::open(db)?),
        Open::Existing => Box::new(SqliteStore::open_existing(db)?),
        Open::ReadOnly => Box::new(SqliteStore::open_read_only(db)?),
    })
}

/// `orch serve`.
pub fn serve(db: &Path, args: ServeArgs) -> Res {
    if let Some(dir) = &args.pipelines {
        if !dir.is_dir() {
            return Err(format!("--pipelines {} is not a folder", dir.display()).into());
        }
    }
    if args.slots == 0 {
        return Err("--slots must be at least 1".into());
    }
    orch::init_tracing();
    let mut opts = orch::server::ServeOptions::new(db);
    opts.listen = args.listen;
    opts.pipelines = args.pipelines;
    opts.data = args.data;
    opts.slots = args.slots;
    opts.advertise = args.advertise;
    orch::server::serve(opts)?;
    Ok(ExitCode::SUCCESS)
}

/// `orch user …`.
pub fn user(db: &Path, command: UserCommand) -> Res {
    let mut out = std::io::stdout().lock();
    match command {
        UserCommand::Add { name, role } => {
            let role: Role = role.parse()?;
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .take(orch::access::MAX_PASSWORD as u64 + 2)
                .read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            let store = open(db, Open::Create)?;
            auth::add_user(store.as_ref(), &name, role, password)?;
            writeln!(out, "user `{name}` added ({role})")?;
        }
        UserCommand::List => {
            let store = open(db, Open::ReadOnly)?;
            for u in store.users()? {
                writeln!(out, "{:<24} {}", u.name, u.role)?;
            }
        }
        UserCommand::Remove { name } => {
            let store = open(db, Open::Existing)?;
            if !store.remove_user(&name)? {
                return Err(format!("no user `{name}`").into());
            }
            writeln!(out, "user `{name}` removed; their tokens are revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orch token …`.
pub fn token(db: &Path, command: TokenCommand) -> Res {
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::Create {
            user,
            name,
            expires,
            scope,
            runner,
        } => {
            let scopes = scope
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<Permission>())
                .collect::<Result<Vec<_>, _>>()?;
            let expires_in_ms = expires
                .map(|e| orch::time::parse_duration(&e).map(|d| d.as_millis() as i64))
                .transpose()
                .map_err(|e| format!("--expires: {e}"))?;
            let store = open(db, Open::Create)?;
            let req = auth::TokenRequest {
                name,
                scopes,
                runner,
                expires_in_ms,
            };
            let (token, record) = auth::mint(store.as_ref(), &user, &req)?;
            writeln!(
                out,
                "token `{}` for `{user}`{}; it is shown once:",
                record.id,
                if runner { " (runner)" } else { "" }
            )?;
            writeln!(out, "{token}")?;
        }
        TokenCommand::List { user } => {
            let store = open(db, Open::ReadOnly)?;
            for t in store.tokens(user.as_deref())? {
                let state = if t.revoked_ms.is_some() {
                    "revoked"
                } else if t
                    .expires_ms
                    .is_some_and(|e| e <= orch::time::unix_millis() as i64)
                {
                    "expired"
                } else {
                    "live"
                };
                let scopes: Vec<&str> = t.scopes.iter().map(|p| p.as_str()).collect();
                writeln!(
                    out,
                    "{:<14} {:<16} {:<8} {:<7} {:<20} {}",
                    t.id,
                    t.user,
                    if t.runner { "runner" } else { "user" },
                    state,
                    if scopes.is_empty() {
                        "-".to_string()
                    } else {
                        scopes.join(",")
                    },
                    t.name
                )?;
            }
        }
        TokenCommand::Revoke { id } => {
            let store = open(db, Open::Existing)?;
            if !store.revoke_token(&id)? {
                return Err(format!("no live token `{id}`").into());
            }
            writeln!(out, "token `{id}` revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
