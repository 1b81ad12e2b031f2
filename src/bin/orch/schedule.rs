//! `orch scheduler --list`, `orch timer` and the moments of
//! `orch backfill`.

use std::io::Write;
use std::process::ExitCode;

use orch::store::{SqliteStore, Store};

use crate::cli::TimerCommand;

/// `orch scheduler DIR --list`: each pipeline with its schedule and next
/// fire time, each file that does not load with its error (exit 1 when
/// one does not).
pub(super) fn scheduler_list(
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
pub(super) fn timer(
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
pub(super) fn parse_moment(flag: &str, text: &str) -> Result<jiff::Timestamp, String> {
    orch::scheduler::timers::parse_moment(flag, text)
}
