//! `orch`: run workflow files, and inspect and steer the runs stored in an
//! orch database.
//!
//! The database is found the way the library finds it: `--db`, else
//! `ORCH_DB`, else `.orch/orch.db` under the current directory. `<run>` is a
//! run id, a unique prefix of one, or `latest`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

mod admin;
mod cli;
mod print;
mod remote;
mod schedule;
use orch::store::{Signal, SqliteStore, Store};

use cli::{Cli, Command, EventCommand, Format};
use print::{attempt_header, follow_logs, log_text, print_runs, show, show_expected};
use schedule::{parse_moment, scheduler_list, timer};

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
        Command::Validate { files, params } => return validate(&files, &params),
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
            return push_event(&path, &key, payload)
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
    on_store(&path, cli.command)
}

/// `orch validate FILE…`: loads every workflow of each file, says which
/// load and prints why the others do not (exit 1 when one does not).
fn validate(files: &[PathBuf], params: &[String]) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let params = orch::file::parse_params(params.iter().map(String::as_str))?;
    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    for f in files {
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
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `orch event push KEY [PAYLOAD]`: stores the event, and says to which
/// waiting input nodes it was delivered.
fn push_event(
    path: &Path,
    key: &str,
    payload: Option<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if key.trim().is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err("an event key is 1 to 256 printable characters".into());
    }
    let payload: serde_json::Value = match payload {
        Some(text) => {
            orch::limits::check_json(&text).map_err(|e| format!("the payload: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("the payload is not JSON: {e}"))?
        }
        None => serde_json::json!({}),
    };
    let store = SqliteStore::open(path)?;
    let (id, delivered) = store.push_event(key, &payload)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "pushed event {id} under `{key}`")?;
    for (run, node) in delivered {
        writeln!(out, "delivered to node `{node}` of run {run}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands on the runs of the database: `runs`, `show`, `logs`,
/// `export` and `events` read it; `pause`, `unpause`, `cancel` and
/// `input` ask its runs for something.
fn on_store(path: &Path, command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Commands that only read never write to the file (nor create one).
    let store = match command {
        Command::Pause { .. }
        | Command::Unpause { .. }
        | Command::Cancel { .. }
        | Command::Input { .. } => SqliteStore::open_existing(path)?,
        _ => SqliteStore::open_read_only(path)?,
    };
    let mut out = std::io::stdout().lock();
    match command {
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
            let text = export_text(&store, &run, format, registered, at, expand)?;
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

/// What `orch export` writes: the run as it is, as it was registered or
/// after event `at`, in `format`.
fn export_text(
    store: &SqliteStore,
    run: &str,
    format: Format,
    registered: bool,
    at: Option<u64>,
    expand: bool,
) -> Result<String, Box<dyn std::error::Error>> {
    let id = store.resolve_run(run)?;
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
            return Err(
                format!("--at {at}: run {id} has events 1 to {last}; pick one of them").into(),
            );
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
    Ok(match format {
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
    })
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
