//! The command line: the subcommands of `orch` and their arguments, as
//! clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admin;

#[derive(Parser)]
#[command(
    name = "orch",
    version,
    about = "Run workflow files, and inspect and steer orch runs"
)]
pub(super) struct Cli {
    /// The database file (default: $ORCH_DB, else .orch/orch.db).
    #[arg(long, global = true)]
    pub(super) db: Option<PathBuf>,
    /// Talk to the server at this URL (token from $ORCH_TOKEN) instead of
    /// a database: runs, show, logs, export, pause, unpause, cancel,
    /// restart, input, run, publish, history and event push.
    #[arg(long, global = true, conflicts_with = "db")]
    pub(super) server: Option<String>,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum EventCommand {
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
pub(super) enum TimerCommand {
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
pub(super) enum Command {
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
pub(super) enum Format {
    /// The export (nodes, edges, attempts, promises, violations) as JSON.
    Json,
    /// The picture: the graph plus every future the promises allow.
    Svg,
    /// The picture as Graphviz DOT.
    Dot,
    /// The picture's model (the outlook) as JSON.
    Outlook,
}
