//! `orch`: run workflow files, and inspect and steer the runs stored in an
//! orch database.
//!
//! The database is found the way the library finds it: `--db`, else
//! `ORCH_DB`, else `.orch/orch.db` under the current directory. `<run>` is a
//! run id, a unique prefix of one, or `latest`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod admin;
mod remote;
use orch::store::{Signal, SqliteStore, Store};
use orch::RunExport;

#[derive(Parser)]
#[command(
    name = "orch",
    version,
    about = "Run workflow files, and inspect and steer orch runs"
)]
struct Cli {
    /// The database file (default: $ORCH_DB, else .orch/orch.db).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Talk to the server at this URL (token from $ORCH_TOKEN) instead of
    /// a database: runs, show, logs, export, pause, unpause, cancel,
    /// restart, input, run, publish, history and event push.
    #[arg(long, global = true, conflicts_with = "db")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum EventCommand {
    /// Push an event: a scheduler starts every workflow subscribed to KEY
    /// (the payload's fields as parameters), and every input node listening
    /// for KEY in a running run takes the payload as its value.
    Push {
        /// The event key.
        key: String,
        /// The payload, as JSON (default: {}).
        payload: Option<String>,
    },
}

#[derive(Subcommand)]
enum TimerCommand {
    /// Start a timer firing WORKFLOW (a pipeline of the scheduler that
    /// runs on this database) once at --at or after --after, or on --cron.
    Start {
        /// The workflow (pipeline) name.
        workflow: String,
        /// Once, at this moment (RFC 3339, or a date: its midnight UTC).
        #[arg(long, conflicts_with_all = ["after", "cron"])]
        at: Option<String>,
        /// Once, after this long (seconds, or 30s, 5m, 2h).
        #[arg(long, conflicts_with = "cron")]
        after: Option<String>,
        /// Recurring, on this cron pattern (6 fields with seconds, or 5).
        #[arg(long)]
        cron: Option<String>,
        /// The cron pattern's IANA time zone (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
    },
    /// Stop a timer.
    Stop {
        /// The timer's id.
        id: i64,
    },
    /// List the timers with their status and next fire time.
    List {
        /// One JSON object per timer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Publish a workflow file to a server (with --server): a commit in its
    /// workflow repository.
    Publish {
        /// The workflow file (.yaml, .yml, .json or .py).
        file: PathBuf,
        /// The workflow's name (default: the file's name without its
        /// extension).
        #[arg(long)]
        name: Option<String>,
        /// The commit message.
        #[arg(long, short)]
        message: Option<String>,
        /// Another file the workflow needs (a script), relative to the
        /// file's folder; repeat for more.
        #[arg(long)]
        with: Vec<String>,
    },
    /// The versions of a published workflow (with --server), newest first.
    History {
        /// The workflow.
        name: String,
        /// One JSON object per version.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API (and the scheduler, with --pipelines) on this
    /// database until SIGINT or SIGTERM.
    Serve(admin::ServeArgs),
    /// Run attempts for a server (`--server URL`, token in ORCH_TOKEN)
    /// until SIGTERM or Ctrl-C, which drain it.
    Runner(admin::RunnerArgs),
    /// Users of the server (works before it first starts).
    #[command(subcommand)]
    User(admin::UserCommand),
    /// API tokens of the server's users.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// List runs, newest first.
    Runs {
        /// Show at most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this status (running, paused, succeeded, failed,
        /// promise_broken, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// One JSON object per run, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, nodes, failures.
    Show {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// The run as JSON (its export), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the logs of a node's attempts.
    Logs {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// Node id.
        node: String,
        /// Only this attempt.
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing lines as the task writes them, until the node
        /// ends (or no engine drives the run any more).
        #[arg(long, short)]
        follow: bool,
    },
    /// Export a run (nodes, edges, attempts, promises, violations).
    Export {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// The run as it was right after registration.
        #[arg(long, conflicts_with = "at")]
        registered: bool,
        /// The run as it was after this event of its history.
        #[arg(long)]
        at: Option<u64>,
        /// Draw every copy of a map instead of one stacked node.
        #[arg(long)]
        expand: bool,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Pause a live run: no new task starts; running ones finish.
    Pause {
        /// Run id, unique prefix, or `latest`.
        run: String,
    },
    /// Let a paused run start tasks again.
    Unpause {
        /// Run id, unique prefix, or `latest`.
        run: String,
    },
    /// Cancel a live run: running tasks are killed with their process
    /// groups, nothing else starts, the run ends `cancelled`.
    Cancel {
        /// Run id, unique prefix, or `latest`.
        run: String,
    },
    /// Restart a node and everything downstream in a new generation of the
    /// graph, and run the run to the end.
    Restart {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// The node to restart.
        node: String,
        /// Restart even while another engine owns the run and its lease
        /// holds (that engine is fenced off: it writes nothing more).
        #[arg(long)]
        force: bool,
    },
    /// Deliver a value to a node waiting for input; it becomes its output.
    Input {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// The waiting node.
        node: String,
        /// The value, as JSON (e.g. '{"approved": true}' or '"yes"').
        value: String,
    },
    /// Resume a run whose orchestrator stopped, and run it to the end.
    Resume {
        /// Run id, unique prefix, or `latest`.
        run: String,
        /// Resume even if the workflow's scripts changed, or while another
        /// engine owns the run and its lease holds (that engine is fenced
        /// off: it writes nothing more).
        #[arg(long)]
        force: bool,
    },
    /// Print a run's event history as JSON lines.
    Events {
        /// Run id, unique prefix, or `latest`.
        run: String,
    },
    /// Run a workflow file (YAML or JSON) to the end; the exit code is the
    /// run's (0 when it succeeded).
    Run {
        /// The workflow file.
        file: PathBuf,
        /// A run parameter, `name=value` (the value is JSON when it parses
        /// as JSON, else text); repeat for more.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Check workflow files without running anything: each is read,
    /// compiled and validated like a registration.
    Validate {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Run parameters to validate with (`name=value`).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Print the JSON Schema of workflow files (for editors).
    Schema,
    /// Run the pipelines of a folder on their cron schedules until SIGINT
    /// or SIGTERM (files are read again when they change), or list them.
    Scheduler {
        /// The folder of pipeline files (.yaml, .yml, .json, and .py files
        /// that declare a Pipeline).
        dir: PathBuf,
        /// List each pipeline with its schedule and next fire time, and
        /// each file that does not load with its error; start nothing.
        #[arg(long)]
        list: bool,
        /// With --list: one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Events: start the workflows subscribed to a key, and deliver the
    /// payload to input nodes listening for it.
    #[command(subcommand)]
    Event(EventCommand),
    /// Timers: fire a workflow of a running scheduler once at a moment,
    /// after a delay, or on a cron schedule.
    #[command(subcommand)]
    Timer(TimerCommand),
    /// Run the fire times of a pipeline's schedule in a range, each to its
    /// end.
    Backfill {
        /// The pipeline file, or a folder of them (then name the pipeline).
        path: PathBuf,
        /// The pipeline (a folder's, or one of a Python file's several).
        #[arg(long)]
        pipeline: Option<String>,
        /// The first moment of the range (RFC 3339, or a date: its midnight
        /// UTC).
        #[arg(long)]
        from: String,
        /// The last moment of the range (inclusive).
        #[arg(long)]
        to: String,
        /// Which fire times run: missing (no run yet), failed (also those
        /// whose run failed or was cancelled), all.
        #[arg(long, default_value = "missing")]
        reprocess: String,
        /// At most this many runs at once.
        #[arg(long, default_value_t = 1)]
        max_active: usize,
        /// One JSON object per fire time.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The export (nodes, edges, attempts, promises, violations) as JSON.
    Json,
    /// The picture: the graph plus every future the promises allow.
    Svg,
    /// The picture as Graphviz DOT.
    Dot,
    /// The picture's model (the outlook) as JSON.
    Outlook,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.kind() == std::io::ErrorKind::BrokenPipe;
    }
    if let Some(j) = e.downcast_ref::<serde_json::Error>() {
        return j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe);
    }
    false
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cli = match cli.command {
        Command::Runner(args) => {
            let url = cli
                .server
                .ok_or("orch runner needs --server URL (and a runner token in ORCH_TOKEN)")?;
            return admin::runner(&url, args);
        }
        command => Cli { command, ..cli },
    };
    if let Some(url) = &cli.server {
        return remote::run(url, cli.command);
    }
    let path = cli.db.unwrap_or_else(orch::store::default_path);
    match cli.command {
        Command::Publish { .. } | Command::History { .. } => {
            return Err(
                "publish and history talk to a server: give --server URL (and ORCH_TOKEN)".into(),
            )
        }
        Command::Serve(args) => return admin::serve(&path, args),
        Command::User(c) => return admin::user(&path, c),
        Command::Token(c) => return admin::token(&path, c),
        // These take the run over and drive it here: the exit code is the
        // run's (0 when it succeeded), and an error is printed once.
        Command::Resume { run, force } => {
            orch::init_tracing();
            let outcome = orch::resume(&path, &run, force)?;
            return Ok(orch::workflow::report(Ok(outcome)));
        }
        Command::Restart { run, node, force } => {
            orch::init_tracing();
            let outcome = orch::restart(&path, &run, &node, force)?;
            return Ok(orch::workflow::report(Ok(outcome)));
        }
        Command::Run { file, params } => {
            let params = orch::file::parse_params(params.iter().map(String::as_str))?;
            orch::init_tracing();
            let outcome = orch::file::run(&file, &params, &path)?;
            return Ok(orch::workflow::report(Ok(outcome)));
        }
        Command::Validate { files, params } => {
            let params = orch::file::parse_params(params.iter().map(String::as_str))?;
            let mut failed = 0;
            let mut out = std::io::stdout().lock();
            for f in &files {
                // Without parameters, every workflow of the file, with
                // placeholders for the parameters that have no default.
                let loaded = if params.is_empty() {
                    orch::file::load_all(f)
                } else {
                    orch::file::load(f, &params).map(|c| vec![c])
                };
                match loaded {
                    Ok(all) => {
                        for c in all {
                            let needs = if c.needs.is_empty() {
                                String::new()
                            } else {
                                format!("; needs the parameters {}", c.needs.join(", "))
                            };
                            writeln!(
                                out,
                                "{}: ok (workflow `{}`, {} nodes{needs})",
                                f.display(),
                                c.definition.name,
                                c.places.len()
                            )?;
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{e}");
                    }
                }
            }
            return Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Schema => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &orch::file::schema())?;
            writeln!(out)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Scheduler { dir, list, json } => {
            if !dir.is_dir() {
                return Err(format!("{} is not a folder", dir.display()).into());
            }
            if list {
                return scheduler_list(&dir, &path, json);
            }
            orch::init_tracing();
            let engine = orch::Engine::open(&path)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut scheduler = orch::scheduler::Scheduler::new(dir, engine);
                scheduler.run().await
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Event(EventCommand::Push { key, payload }) => {
            if key.trim().is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
                return Err("an event key is 1 to 256 printable characters".into());
            }
            let payload: serde_json::Value = match payload {
                Some(text) => {
                    orch::limits::check_json(&text).map_err(|e| format!("the payload: {e}"))?;
                    serde_json::from_str(&text)
                        .map_err(|e| format!("the payload is not JSON: {e}"))?
                }
                None => serde_json::json!({}),
            };
            let store = SqliteStore::open(&path)?;
            let (id, delivered) = store.push_event(&key, &payload)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "pushed event {id} under `{key}`")?;
            for (run, node) in delivered {
                writeln!(out, "delivered to node `{node}` of run {run}")?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Timer(command) => return timer(&path, command),
        Command::Backfill {
            path: file,
            pipeline,
            from,
            to,
            reprocess,
            max_active,
            json,
        } => {
            let reprocess: orch::scheduler::Reprocess = reprocess.parse()?;
            let from = parse_moment("--from", &from)?;
            let to = parse_moment("--to", &to)?;
            let compiled = orch::scheduler::find(&file, pipeline.as_deref())?;
            orch::init_tracing();
            let engine = orch::Engine::open(&path)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(orch::scheduler::backfill(
                &engine, &compiled, from, to, reprocess, max_active,
            ))?;
            let mut out = std::io::stdout().lock();
            let mut failed = false;
            for b in &report {
                failed |= !(b.status == "succeeded" || b.status.starts_with("skipped"));
                if json {
                    serde_json::to_writer(&mut out, b)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{:<26} {:<28} {}", b.fire_time, b.run, b.status)?;
                }
            }
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        _ => {}
    }
    // Commands that only read never write to the file (nor create one).
    let store = match cli.command {
        Command::Pause { .. }
        | Command::Unpause { .. }
        | Command::Cancel { .. }
        | Command::Input { .. } => SqliteStore::open_existing(&path)?,
        _ => SqliteStore::open_read_only(&path)?,
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Runs {
            limit,
            workflow,
            status,
            json,
        } => {
            if let Some(s) = &status {
                s.parse::<orch::RunStatus>()?;
            }
            let runs: Vec<_> = store
                .runs()?
                .into_iter()
                .filter(|r| workflow.as_ref().is_none_or(|w| *w == r.workflow))
                .filter(|r| status.as_ref().is_none_or(|s| *s == r.status))
                .take(limit)
                .collect();
            print_runs(&mut out, &runs, json, &path.display().to_string())?;
        }
        Command::Show { run, json } => {
            let id = store.resolve_run(&run)?;
            let export = store.export(&id)?;
            if json {
                serde_json::to_writer(&mut out, &export)?;
                writeln!(out)?;
            } else {
                show(&mut out, &export)?;
                let now = orch::time::unix_millis() as i64;
                if let Ok(e) = orch::estimate::for_run(&store, &id, now) {
                    show_expected(&mut out, &serde_json::to_value(e)?)?;
                }
            }
        }
        Command::Logs {
            run,
            node,
            attempt,
            follow,
        } => {
            let id = store.resolve_run(&run)?;
            if follow {
                follow_logs(&mut out, &store, &id, &node, attempt)?;
                return Ok(ExitCode::SUCCESS);
            }
            let export = store.export(&id)?;
            let lines = store.logs(&id, &node, attempt)?;
            // Read apart from the logs: a batch may have added the node since.
            let n = export.node(&node).ok_or_else(|| orch::Error::UnknownNode {
                run: id.clone(),
                node: node.clone(),
            })?;
            for a in &n.attempts {
                if attempt.is_some_and(|x| x != a.attempt) {
                    continue;
                }
                writeln!(out, "{}", attempt_header(&node, a))?;
                for l in lines.iter().filter(|l| l.attempt == a.attempt) {
                    writeln!(out, "{}", log_text(l))?;
                }
            }
        }
        Command::Export {
            run,
            format,
            registered,
            at,
            expand,
            output,
        } => {
            let id = store.resolve_run(&run)?;
            let state = if registered {
                let events = store.events(&id, None)?;
                let upto = events
                    .iter()
                    .find(|e| matches!(e.kind, orch::EventKind::BatchCommitted { .. }))
                    .map(|e| e.seq)
                    .unwrap_or(1);
                Some(orch::RunState::replay(
                    &id,
                    events.iter().take_while(|e| e.seq <= upto),
                ))
            } else if let Some(at) = at {
                let last = store.events(&id, None)?.last().map_or(0, |e| e.seq);
                if at == 0 || at > last {
                    return Err(format!(
                        "--at {at}: run {id} has events 1 to {last}; pick one of them"
                    )
                    .into());
                }
                Some(store.replay(&id, Some(at))?)
            } else {
                None
            };
            let outlook = || {
                let st = match &state {
                    Some(s) => s.clone(),
                    None => store.replay(&id, None)?,
                };
                let opts = orch::picture::outlook::Options {
                    expand,
                    ..Default::default()
                };
                Ok::<_, orch::Error>(orch::picture::outlook::outlook(&st, opts))
            };
            let text = match format {
                Format::Json => {
                    let export = match &state {
                        Some(s) => s.export(),
                        None => store.export(&id)?,
                    };
                    serde_json::to_string_pretty(&export)?
                }
                Format::Outlook => serde_json::to_string_pretty(&outlook()?)?,
                Format::Svg => orch::picture::render::svg(&outlook()?),
                Format::Dot => orch::picture::render::dot(&outlook()?),
            };
            match output {
                Some(path) => std::fs::write(&path, text + "\n")
                    .map_err(|e| format!("writing {}: {e}", path.display()))?,
                None => writeln!(out, "{text}")?,
            }
        }
        // Taken over and driven above, before any store was opened.
        Command::Resume { .. }
        | Command::Restart { .. }
        | Command::Run { .. }
        | Command::Validate { .. }
        | Command::Schema
        | Command::Scheduler { .. }
        | Command::Backfill { .. }
        | Command::Event(_)
        | Command::Timer(_)
        | Command::Serve(_)
        | Command::Runner(_)
        | Command::User(_)
        | Command::Token(_)
        | Command::Publish { .. }
        | Command::History { .. } => {}
        Command::Input { run, node, value } => {
            let id = store.resolve_run(&run)?;
            // Bounded first: no integer silently rounded, nothing too
            // deep to store.
            orch::limits::check_json(&value).map_err(|e| {
                format!("the value for `{node}` is refused: {e}; nothing was delivered")
            })?;
            let value: serde_json::Value = serde_json::from_str(&value).map_err(|e| {
                format!(
                    "the value for `{node}` is not JSON ({e}): {}",
                    orch::protocol::quote(&value)
                )
            })?;
            store.request(
                &id,
                &Signal::Input {
                    node: node.clone(),
                    value,
                },
            )?;
            writeln!(out, "stored for `{node}` of run {id}; it becomes the node's output when the run takes it, if it fits the type the node declares (else the run refuses it in the node's log)")?;
            note_if_unowned(&store, &id, &mut out)?;
        }
        Command::Pause { run } => control(&store, &run, Signal::Pause, &mut out)?,
        Command::Unpause { run } => control(&store, &run, Signal::Unpause, &mut out)?,
        Command::Cancel { run } => control(&store, &run, Signal::Cancel, &mut out)?,
        Command::Events { run } => {
            let id = store.resolve_run(&run)?;
            for e in store.events(&id, None)? {
                serde_json::to_writer(&mut out, &e)?;
                writeln!(out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `orch scheduler DIR --list`: each pipeline with its schedule and next
/// fire time, each file that does not load with its error (exit 1 when
/// one does not).
fn scheduler_list(
    dir: &std::path::Path,
    db: &std::path::Path,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let home = db.parent().unwrap_or(std::path::Path::new("."));
    let mut folder = orch::scheduler::Folder::new(dir).skipping(home);
    folder.reload();
    // Fire times already recorded, when there is a database.
    let store = SqliteStore::open_read_only(db).ok();
    let lines = orch::scheduler::listing(
        &folder,
        store.as_ref().map(|s| s as &dyn Store),
        jiff::Timestamp::now(),
    );
    let mut out = std::io::stdout().lock();
    let mut errors = false;
    for l in &lines {
        errors |= l.error.is_some();
        if json {
            serde_json::to_writer(&mut out, l)?;
            writeln!(out)?;
            continue;
        }
        match (&l.pipeline, &l.error) {
            (_, Some(e)) => writeln!(out, "import error: {e}")?,
            (Some(name), None) => writeln!(
                out,
                "{}: pipeline `{name}`, schedule {}, next fire time {}{}",
                l.file.display(),
                l.schedule.as_ref().map_or("none".to_string(), |s| format!(
                    "`{s}` ({})",
                    l.timezone.as_deref().unwrap_or("UTC")
                )),
                l.next_fire.as_deref().unwrap_or("-"),
                if l.events.is_empty() {
                    String::new()
                } else {
                    format!(", started by events {}", l.events.join(", "))
                }
            )?,
            (None, None) => {}
        }
    }
    Ok(if errors {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `orch timer start|stop|list`.
fn timer(
    db: &std::path::Path,
    command: TimerCommand,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
    match command {
        TimerCommand::Start {
            workflow,
            at,
            after,
            cron,
            timezone,
        } => {
            use orch::scheduler::timers::When;
            let when = match (at, after, cron) {
                (Some(at), _, _) => When::At(at),
                (None, Some(after), _) => When::After(after),
                (None, None, Some(c)) => When::Cron(c, timezone),
                (None, None, None) => return Err("say when: --at, --after or --cron".into()),
            };
            let store = SqliteStore::open(db)?;
            let id =
                orch::scheduler::timers::start(&store, &workflow, &when, jiff::Timestamp::now())?;
            writeln!(out, "timer {id} fires `{workflow}`")?;
        }
        TimerCommand::Stop { id } => {
            let store = SqliteStore::open_existing(db)?;
            if !store.stop_timer(id)? {
                return Err(
                    format!("timer {id} does not run (no such timer, or stopped already)").into(),
                );
            }
            writeln!(out, "timer {id} stopped")?;
        }
        TimerCommand::List { json } => {
            let store = SqliteStore::open_read_only(db)?;
            for t in orch::scheduler::timers::list(&store, jiff::Timestamp::now())? {
                if json {
                    serde_json::to_writer(&mut out, &t)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{:<5} {:<20} {:<8} {:<40} next {}",
                        t.id,
                        t.workflow,
                        t.status,
                        t.when,
                        t.next_fire.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A moment of `--from`/`--to`: RFC 3339, or a date (its midnight UTC).
fn parse_moment(flag: &str, text: &str) -> Result<jiff::Timestamp, String> {
    orch::scheduler::timers::parse_moment(flag, text)
}

/// `--- NODE attempt N (pid P, how it ended)`.
fn attempt_header(node: &str, a: &orch::history::AttemptRecord) -> String {
    let how = match (&a.outcome, &a.error) {
        (Some(o), Some(e)) => format!("{o}: {e}"),
        (Some(o), None) => o.to_string(),
        (None, _) => "running".to_string(),
    };
    // Attempts a runner ran name it; the server's own show no runner.
    let on = match a.runner.as_deref() {
        Some(r) if r != orch::history::LOCAL => format!("runner {r}, "),
        _ => String::new(),
    };
    format!(
        "--- {node} attempt {} (pid {}, {on}{how})",
        a.attempt,
        a.pid.map_or("-".to_string(), |p| p.to_string())
    )
}

/// A log line as `orch logs` prints it: stderr and orch's own lines tagged.
fn log_text(l: &orch::history::LogLine) -> String {
    let tag = match l.stream.as_str() {
        "stdout" | "log" => "",
        "stderr" => "[stderr] ",
        _ => "[orch] ",
    };
    format!("{tag}{}", l.text)
}

/// How often `orch logs --follow` looks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// How many lines `orch logs --follow` reads at a time.
const FOLLOW_PAGE: usize = 1000;

/// Prints the node's log lines as they are stored (engines write them
/// while attempts run), until the node ends or no engine drives the run;
/// then how the node ended.
fn follow_logs(
    out: &mut impl Write,
    store: &SqliteStore,
    id: &str,
    node: &str,
    attempt: Option<u32>,
) -> Res {
    let mut at = match attempt {
        // After the last line of the attempt before.
        Some(a) => (a.saturating_sub(1), u32::MAX),
        None => (0, 0),
    };
    let mut shown = None;
    loop {
        // Looked at before the lines: the lines an ending attempt wrote
        // are stored by the time its node is seen ended.
        let (_, state) = store
            .node(id, node)?
            .ok_or_else(|| orch::Error::UnknownNode {
                run: id.to_string(),
                node: node.to_string(),
            })?;
        let owner = store.owner(id)?.owner;
        let driven = owner
            .as_ref()
            .is_some_and(|o| !o.proven_dead(orch::host::identity(), &orch::host::process_start));
        loop {
            let page = store.logs_after(id, node, at, FOLLOW_PAGE)?;
            for l in &page {
                at = (l.attempt, l.line);
                if attempt.is_some_and(|a| a != l.attempt) {
                    continue;
                }
                if shown != Some(l.attempt) {
                    shown = Some(l.attempt);
                    writeln!(out, "--- {node} attempt {}", l.attempt)?;
                }
                writeln!(out, "{}", log_text(l))?;
            }
            out.flush()?;
            if page.len() < FOLLOW_PAGE {
                break;
            }
        }
        if state.is_terminal() || !driven {
            let export = store.export(id)?;
            if let Some(a) = export.node(node).and_then(|n| {
                n.attempts
                    .iter()
                    .rev()
                    .find(|a| attempt.is_none_or(|x| x == a.attempt))
            }) {
                writeln!(out, "{}", attempt_header(node, a))?;
            }
            if state.is_terminal() {
                writeln!(out, "--- {node} {state}")?;
            } else if export.status.is_terminal() {
                writeln!(out, "--- {node} {state}: the run ended {}", export.status)?;
            } else {
                writeln!(
                    out,
                    "--- {node} {state}: no engine drives the run now{}; resume it to go on",
                    owner.map_or(String::new(), |o| format!(
                        " (its last owner, pid {}, is gone)",
                        o.pid
                    ))
                )?;
            }
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn control(store: &SqliteStore, run: &str, what: Signal, out: &mut impl Write) -> Res {
    let id = store.resolve_run(run)?;
    store.request(&id, &what)?;
    writeln!(out, "asked run {id} to {}", what.as_str())?;
    note_if_unowned(store, &id, out)
}

/// Says so when no engine drives the run: the signal waits for a resume.
fn note_if_unowned(store: &SqliteStore, id: &str, out: &mut impl Write) -> Res {
    let owner = store.owner(id)?.owner;
    // Gone: released, or its process on this host no longer runs (a pid
    // now held by a process started at another time is not it).
    let gone = owner
        .as_ref()
        .is_none_or(|o| o.proven_dead(orch::host::identity(), &orch::host::process_start));
    if gone {
        writeln!(
            out,
            "note: no engine drives it now{}; the request is taken when the run is resumed",
            owner.map_or(String::new(), |o| format!(
                " (its last owner, pid {}, is gone)",
                o.pid
            ))
        )?;
    }
    Ok(())
}

/// `orch runs`: a table, or one JSON object per run.
fn print_runs(
    out: &mut impl Write,
    runs: &[orch::store::RunSummary],
    json: bool,
    place: &str,
) -> Res {
    if json {
        for r in runs {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no runs in {place}")?;
    } else {
        writeln!(
            out,
            "{:<28} {:<20} {:<15} {:>6}  {:<24}  {:<24}",
            "RUN", "WORKFLOW", "STATUS", "NODES", "STARTED", "FIRE TIME"
        )?;
    }
    for r in runs {
        writeln!(
            out,
            "{:<28} {:<20} {:<15} {:>6}  {:<24}  {:<24}",
            r.id,
            r.workflow,
            r.status,
            r.nodes,
            r.created_at,
            r.fired_at.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// The expected end of a run that has not ended, from its estimate (as
/// JSON: the server's and the library's are the same).
fn show_expected(out: &mut impl Write, e: &serde_json::Value) -> Res {
    let (Some(end), Some(now)) = (e["expected_end_ms"].as_i64(), e["now_ms"].as_i64()) else {
        return Ok(());
    };
    if e["nodes"].as_array().is_none_or(|n| n.is_empty()) {
        return Ok(());
    }
    let at = |ms: i64| orch::time::format_millis(ms.max(0) as u64);
    write!(
        out,
        "\nexpected end  {} (in {:.1} s",
        at(end),
        (end - now).max(0) as f64 / 1000.0
    )?;
    if let Some(p80) = e["expected_end_p80_ms"].as_i64() {
        write!(out, "; p80 {}", at(p80))?;
    }
    writeln!(
        out,
        "){}",
        if e["partial"] == true {
            ", partly without history"
        } else {
            ""
        }
    )?;
    Ok(())
}

fn show(out: &mut impl Write, ex: &RunExport) -> Res {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_string());
    writeln!(out, "run       {}", ex.run)?;
    writeln!(out, "workflow  {}", ex.workflow)?;
    writeln!(out, "status    {}", ex.status)?;
    if let Some(r) = &ex.reason {
        writeln!(out, "reason    {r}")?;
    }
    if let Some(src) = &ex.source {
        writeln!(out, "commit    {}", src.commit)?;
    }
    writeln!(out, "started   {}", dash(&ex.created_at))?;
    writeln!(out, "finished  {}", dash(&ex.finished_at))?;
    writeln!(
        out,
        "pid       {}",
        ex.orchestrator_pid.map_or("-".into(), |p| p.to_string())
    )?;
    writeln!(
        out,
        "graph     {} nodes, {} edges, {} promises",
        ex.nodes.len(),
        ex.edges.len(),
        ex.promises.len()
    )?;
    writeln!(out)?;
    let w = ex
        .nodes
        .iter()
        .map(|n| n.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let tw = ex
        .nodes
        .iter()
        .map(|n| n.task.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<w$}  {:<tw$}  {:<10} {:>8}  {:<24}  {:<24}",
        "NODE", "TASK", "STATE", "ATTEMPTS", "STARTED", "FINISHED"
    )?;
    for n in &ex.nodes {
        writeln!(
            out,
            "{:<w$}  {:<tw$}  {:<10} {:>8}  {:<24}  {:<24}",
            n.id,
            n.task.name,
            n.state.as_str(),
            n.attempts.len(),
            dash(&n.started_at),
            dash(&n.finished_at)
        )?;
    }
    let failed: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .filter(|(_, a)| a.error.is_some())
        .collect();
    if !failed.is_empty() {
        writeln!(out, "\nfailed attempts:")?;
        for (n, a) in failed {
            writeln!(
                out,
                "  {} attempt {}: {}",
                n.id,
                a.attempt,
                a.error.as_deref().unwrap_or("")
            )?;
        }
    }
    let remote: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .filter_map(|(n, a)| {
            a.runner
                .as_deref()
                .filter(|r| *r != orch::history::LOCAL)
                .map(|r| (n, a, r))
        })
        .collect();
    if !remote.is_empty() {
        writeln!(out, "\nattempts run by runners:")?;
        for (n, a, r) in remote {
            writeln!(out, "  {} attempt {}: {r}", n.id, a.attempt)?;
        }
    }
    let files: Vec<_> = ex
        .nodes
        .iter()
        .flat_map(|n| n.attempts.iter().map(move |a| (n, a)))
        .flat_map(|(n, a)| a.files.iter().map(move |f| (n, f)))
        .collect();
    if !files.is_empty() {
        writeln!(out, "\nfiles produced:")?;
        for (n, f) in files {
            writeln!(out, "  {}: {} ({} bytes)", n.id, f.path, f.bytes)?;
        }
    }
    if !ex.violations.is_empty() {
        writeln!(out, "\nviolations:")?;
        for v in &ex.violations {
            let by = match (&v.node, v.attempt) {
                (Some(n), Some(a)) => format!(" (task of `{n}`, attempt {a})"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  promise #{} `{}`: {}{by}: {}",
                v.promise_index, v.promise_text, v.mutation, v.message,
            )?;
        }
    }
    Ok(())
}
