//! Where runs live: the append-only history of every run, its
//! materialised views, run leases and the signals sent to runs.
//!
//! [`Store`] is the seam every backend implements; [`SqliteStore`] is
//! the embedded default, `PgStore` (feature `postgres`) the shared one. The history is folded into state by one
//! function alone, [`RunState::apply`]: a backend writes its views from
//! the folded state it is handed, never by interpreting events itself.
//! A backend proves itself with the `conformance` suite (behind the
//! `testing` feature).

pub mod lease;
#[cfg(feature = "postgres")]
mod pg;
pub mod queue;
mod sql;
mod sqlite;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use serde_json::Value;

pub use crate::history::LogLine;
pub use lease::{Lease, Owner, OwnerRecord};
pub use sqlite::{default_path, SqliteStore, DB_ENV};

#[cfg(all(feature = "postgres", feature = "testing"))]
pub use pg::cluster::{ClusterError as PgClusterError, TestCluster as PgTestCluster};
#[cfg(feature = "postgres")]
pub use pg::PgStore;

/// True when `db` names a PostgreSQL database (`postgres://` or
/// `postgresql://`) rather than a SQLite file.
///
/// ```
/// assert!(orch::store::is_postgres_url("postgres://orch@db/orch"));
/// assert!(!orch::store::is_postgres_url(".orch/orch.db"));
/// ```
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

use crate::access::{Permission, Role};
use crate::error::{Error, Result};
use crate::exec::AttemptId;
use crate::history::{Event, RunExport, RunState};
use crate::model::{Mutation, NodeState, Task};
use queue::{Beat, QueueRow, QueuedAttempt, RunnerRecord, RunnerSpec};

/// What a person (or program) can ask of a live run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Signal {
    /// No new task starts; running ones finish.
    Pause,
    /// Tasks start again.
    Unpause,
    /// Running tasks are killed with their process groups; the run ends
    /// `cancelled`.
    Cancel,
    /// A value for a node whose task is [`crate::Task::input`]: it becomes
    /// the node's output (at once if the node waits, else when it starts
    /// waiting).
    Input {
        /// The input node.
        node: String,
        /// The value.
        value: Value,
    },
}

impl Signal {
    /// The word stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Signal::Pause => "pause",
            Signal::Unpause => "unpause",
            Signal::Cancel => "cancel",
            Signal::Input { .. } => "input",
        }
    }
}

/// The control signals by name (`pause`, `unpause`, `cancel`).
impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Signal, String> {
        match s {
            "pause" => Ok(Signal::Pause),
            "unpause" => Ok(Signal::Unpause),
            "cancel" => Ok(Signal::Cancel),
            other => Err(format!(
                "unknown control `{other}` (pause, unpause or cancel)"
            )),
        }
    }
}

/// Names a stored signal, so that the run that acts on it marks it taken
/// in the same transaction as what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalId(pub i64);

/// A stored signal no run has taken yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// Its id.
    pub id: SignalId,
    /// The run it is for.
    pub run: String,
    /// What it asks.
    pub signal: Signal,
}

/// A line of `orch runs`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The status.
    pub status: String,
    /// When it started.
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How many nodes it has.
    pub nodes: u64,
    /// The fire time of a scheduled or backfilled run.
    pub fired_at: Option<String>,
}

/// An event pushed under a key (`orch event push KEY JSON`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Pushed {
    /// Its number, increasing.
    pub id: i64,
    /// The key.
    pub key: String,
    /// The payload.
    pub payload: Value,
    /// When it was pushed (RFC 3339).
    pub pushed_at: String,
}

/// A timer: a workflow fired once at a moment, or on a cron schedule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Timer {
    /// Its number.
    pub id: i64,
    /// The workflow it fires.
    pub workflow: String,
    /// A one-shot timer's moment (milliseconds since the Unix epoch).
    pub at_ms: Option<i64>,
    /// A recurring timer's cron pattern.
    pub cron: Option<String>,
    /// The cron pattern's time zone.
    pub timezone: Option<String>,
    /// When it was started (milliseconds since the Unix epoch).
    pub created_ms: i64,
    /// When it was stopped.
    pub stopped_ms: Option<i64>,
}

impl Timer {
    /// The workflow key its fire times are claimed under (`timer:ID`).
    pub fn fire_key(&self) -> String {
        format!("timer:{}", self.id)
    }
}

/// A fire time of a scheduled workflow and the run that fires it, as the
/// store records it: each fire time is run at most once, whoever asks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fire {
    /// The workflow's name.
    pub workflow: String,
    /// The fire time, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The run started for it.
    pub run: String,
    /// `schedule`, `timer` or `backfill`.
    pub kind: String,
    /// When it was claimed (milliseconds since the Unix epoch, the
    /// store's clock).
    pub claimed_ms: i64,
    /// The run's status (`None`: the run was not registered yet).
    pub status: Option<crate::model::RunStatus>,
}

/// A successful attempt of a task, as the history of a workflow records
/// it: what expected durations are built from ([`crate::estimate`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TaskSample {
    /// The run it belongs to.
    pub run: String,
    /// The node it ran.
    pub node: String,
    /// The node's task name.
    pub task: String,
    /// The attempt number.
    pub attempt: u32,
    /// When it started (milliseconds since the Unix epoch).
    pub started_ms: i64,
    /// When it finished (milliseconds since the Unix epoch).
    pub finished_ms: i64,
    /// The workflow commit its run started from; `None` while runs do not
    /// record one.
    pub commit: Option<String>,
}

impl TaskSample {
    /// A sample of attempt `attempt` of `node` (task `task`) in `run`.
    ///
    /// ```
    /// let s = orch::store::TaskSample::new("r1", "a", "extract", 1, 1_000, 1_250);
    /// assert_eq!(s.duration_ms(), 250);
    /// assert_eq!(s.commit, None);
    /// ```
    pub fn new(
        run: &str,
        node: &str,
        task: &str,
        attempt: u32,
        started_ms: i64,
        finished_ms: i64,
    ) -> TaskSample {
        TaskSample {
            run: run.to_string(),
            node: node.to_string(),
            task: task.to_string(),
            attempt,
            started_ms,
            finished_ms,
            commit: None,
        }
    }

    /// The same sample, from a run of `commit`.
    pub fn with_commit(mut self, commit: Option<&str>) -> TaskSample {
        self.commit = commit.map(str::to_string);
        self
    }

    /// How long it ran, in milliseconds (never negative: a clock that
    /// stepped back counts as 0).
    pub fn duration_ms(&self) -> i64 {
        (self.finished_ms - self.started_ms).max(0)
    }
}

/// A succeeded run of a workflow, from its start to its end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RunSample {
    /// The run id.
    pub run: String,
    /// When it started (milliseconds since the Unix epoch).
    pub started_ms: i64,
    /// When it ended (milliseconds since the Unix epoch).
    pub finished_ms: i64,
    /// The workflow commit it started from; `None` while runs do not
    /// record one.
    pub commit: Option<String>,
}

impl RunSample {
    /// A sample of `run`, which took from `started_ms` to `finished_ms`.
    ///
    /// ```
    /// let r = orch::store::RunSample::new("r1", 1_000, 61_000);
    /// assert_eq!(r.duration_ms(), 60_000);
    /// ```
    pub fn new(run: &str, started_ms: i64, finished_ms: i64) -> RunSample {
        RunSample {
            run: run.to_string(),
            started_ms,
            finished_ms,
            commit: None,
        }
    }

    /// How long it took, in milliseconds (never negative).
    pub fn duration_ms(&self) -> i64 {
        (self.finished_ms - self.started_ms).max(0)
    }
}

/// A run's first two events: `run_started`, then the registration batch.
#[derive(Debug)]
pub struct Registration<'a> {
    /// The run id.
    pub run: &'a str,
    /// The `run_started` event (sequence 1).
    pub started: &'a Event,
    /// Sequence number and time of the registration's `batch_committed`.
    pub batch: (u64, &'a str),
    /// The workflow's mutations as validation accepts them (an empty task
    /// name is the node's id).
    pub mutations: &'a [Mutation],
}

/// The history of runs and everything beside it that must survive a
/// crash. Implementations are shared by every run of an engine and by
/// threads (`Send + Sync`); each call is one short transaction, and the
/// engine makes them only where a run must wait for durability anyway
/// (before a start that depends on a commit, before it waits for
/// reports), so a call never sits in a hot path twice.
///
/// Errors name the store and never expose a driver's types.
pub trait Store: Send + Sync {
    /// The database as messages name it (a path or a URL without
    /// credentials).
    fn location(&self) -> String;

    /// Creates a run owned by `owner` at epoch 1 and writes its first two
    /// events with their views. The transaction commits only if `go`
    /// (called once everything is written, typically waiting for the
    /// validation that runs meanwhile) says so; otherwise nothing is kept
    /// and the answer is `None`.
    fn register(
        &self,
        owner: &Owner,
        registration: Registration<'_>,
        go: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Lease>>;

    /// Takes a run over for `owner`, bumping its epoch, if
    /// [`lease::may_take_over`] allows it (with `force`, also from a live
    /// owner). Two takeovers racing: one wins, the other gets
    /// [`Error::Owned`] naming the winner.
    fn take_over(&self, run: &str, owner: &Owner, force: bool) -> Result<Lease>;

    /// Extends each of `leases` (`owner`'s, on runs that have not ended)
    /// by the owner's TTL; returns the runs of `leases` it no longer holds
    /// (taken over meanwhile, or ended), which it must stop driving.
    fn renew(&self, owner: &Owner, leases: &[Lease]) -> Result<Vec<String>>;

    /// Gives a run up: the next engine may take it over at once.
    fn release(&self, lease: &Lease) -> Result<()>;

    /// Who owns a run, as recorded.
    fn owner(&self, run: &str) -> Result<OwnerRecord>;

    /// Appends events (already applied to `state`, the fold that includes
    /// them) and log lines, marks `taken` signals as taken, and updates
    /// the views from `state`: one transaction, fenced by `lease`
    /// ([`Error::Fenced`] when the run has another owner or epoch now).
    fn commit(
        &self,
        lease: &Lease,
        state: &RunState,
        events: &[Event],
        logs: &[LogLine],
        taken: &[SignalId],
    ) -> Result<()>;

    /// Resolves `latest`, a full run id or a unique prefix of one.
    fn resolve_run(&self, what: &str) -> Result<String>;

    /// Every run, newest first.
    fn runs(&self) -> Result<Vec<RunSummary>>;

    /// The history of a run, in order; with `upto`, only the events up to
    /// and including that sequence number.
    fn events(&self, run: &str, upto: Option<u64>) -> Result<Vec<Event>>;

    /// The events of run `run` after sequence number `after` (at most
    /// `limit`, in order) with the run's status and last sequence number,
    /// read together: what a stream of a run's events reads each time it
    /// looks again, without the history before `after` nor the run's nodes
    /// ([`Store::export`]). [`Error::UnknownRun`] when there is no such run.
    fn run_tail(&self, run: &str, after: u64, limit: usize) -> Result<RunTail>;

    /// Rebuilds a run's state from its history alone.
    fn replay(&self, run: &str, upto: Option<u64>) -> Result<RunState> {
        let events = self.events(run, upto)?;
        if events.is_empty() {
            return Err(Error::UnknownRun(run.to_string()));
        }
        Ok(RunState::replay(run, &events))
    }

    /// The export of a run, read from the views.
    fn export(&self, run: &str) -> Result<RunExport>;

    /// A node's task and state, as the views hold them (`None`: no such
    /// node in the run).
    fn node(&self, run: &str, node: &str) -> Result<Option<(Task, NodeState)>>;

    /// The log lines of a node's attempts (all when `attempt` is `None`).
    fn logs(&self, run: &str, node: &str, attempt: Option<u32>) -> Result<Vec<LogLine>>;

    /// The log lines of a node that come after line `after.1` of attempt
    /// `after.0` (attempt by attempt, line by line), at most `limit` of
    /// them: what a follower has not seen yet. `(0, 0)` starts at the
    /// first line.
    fn logs_after(
        &self,
        run: &str,
        node: &str,
        after: (u32, u32),
        limit: usize,
    ) -> Result<Vec<LogLine>>;

    /// Stores a signal for a run that has not ended (an input only for an
    /// input node that has not finished); its owner takes it.
    fn request(&self, run: &str, signal: &Signal) -> Result<SignalId>;

    /// The stored signals no run took yet, oldest first, for runs that
    /// have not ended.
    fn pending(&self) -> Result<Vec<Pending>>;

    /// Records `run` as the run of `workflow`'s fire time `at_ms` (`kind`:
    /// `schedule` or `backfill`), unless a run is recorded for it already:
    /// true when this call recorded it. Two schedulers racing for a fire
    /// time: one wins.
    fn claim_fire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<bool>;

    /// Records `run` as the run of the fire time, replacing the one
    /// recorded (a backfill that runs it again).
    fn refire(&self, workflow: &str, at_ms: i64, run: &str, kind: &str) -> Result<()>;

    /// The fire times of `workflow` in `[from_ms, to_ms]`, in order, with
    /// their runs' statuses.
    fn fires(&self, workflow: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Fire>>;

    /// The latest fire time recorded for `workflow`.
    fn last_fire(&self, workflow: &str) -> Result<Option<i64>>;

    /// How many runs of `workflow` have not ended.
    fn active_runs(&self, workflow: &str) -> Result<u64>;

    /// Stores an event pushed under `key` and, in the same transaction,
    /// asks every input node listening for `key` that has not finished,
    /// in a run that has not ended, to take `payload` (a stored input
    /// signal, which its run takes like `orch input`'s). Returns the
    /// event's id and those (run, node) pairs.
    fn push_event(&self, key: &str, payload: &Value) -> Result<(i64, Vec<(String, String)>)>;

    /// The events pushed after event `after`, oldest first, at most
    /// `limit`, pushed no earlier than `since_ms`.
    fn events_after(&self, after: i64, since_ms: i64, limit: usize) -> Result<Vec<Pushed>>;

    /// Records `run` as the run event `event` starts for `workflow`,
    /// unless one is recorded: true when this call recorded it.
    fn claim_event_run(&self, event: i64, workflow: &str, run: &str) -> Result<bool>;

    /// The fire times (of every workflow and timer) claimed no earlier
    /// than `since_ms` and no later than `until_ms` whose run never
    /// registered (their scheduler died in between), oldest claim first.
    fn orphaned_fires(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Fire>>;

    /// The runs events claimed no earlier than `since_ms` and no later
    /// than `until_ms` that never registered (their scheduler died in
    /// between): each event with the workflow and the run id it claimed.
    fn orphaned_event_runs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Pushed, String, String)>>;

    /// Starts a timer firing `workflow` once at `at_ms`, or on `cron` (in
    /// `timezone`); returns its id.
    fn add_timer(
        &self,
        workflow: &str,
        at_ms: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<i64>;

    /// Stops a timer: false when it was stopped already or does not
    /// exist.
    fn stop_timer(&self, id: i64) -> Result<bool>;

    /// Every timer, oldest first.
    fn timers(&self) -> Result<Vec<Timer>>;

    /// The successful attempts of `workflow`'s tasks in its `runs` most
    /// recent runs (by start, whatever their status), at most `per_task`
    /// of each task name (the most recently finished), ordered by task
    /// name, then newest first. Attempts whose times do not parse are
    /// left out.
    fn task_durations(
        &self,
        workflow: &str,
        runs: usize,
        per_task: usize,
    ) -> Result<Vec<TaskSample>>;

    /// The `limit` most recent succeeded runs of `workflow`, newest first.
    fn run_durations(&self, workflow: &str, limit: usize) -> Result<Vec<RunSample>>;

    /// Checks the database's own consistency.
    fn integrity_check(&self) -> Result<()>;

    /// A page of runs, newest first, filtered (the server's run list).
    fn runs_page(&self, filter: &RunFilter) -> Result<Vec<RunSummary>>;

    /// How many runs have each status.
    fn run_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Adds a user; `false` when one of that name exists (nothing
    /// changes).
    fn add_user(&self, user: &UserRecord) -> Result<bool>;

    /// The user of that name.
    fn user(&self, name: &str) -> Result<Option<UserRecord>>;

    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRecord>>;

    /// Changes a user's role and/or password hash; `false` when there is
    /// no such user.
    fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<bool>;

    /// Removes a user and revokes their tokens, in one transaction;
    /// `false` when there is no such user.
    fn remove_user(&self, name: &str) -> Result<bool>;

    /// Stores a token (its hash, never its secret).
    fn add_token(&self, token: &TokenRecord) -> Result<()>;

    /// The token with this id.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Every token, or a user's.
    fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>>;

    /// Revokes a token; `false` when there is no such live token.
    fn revoke_token(&self, id: &str) -> Result<bool>;

    /// Registers a runner (replacing one of the same id) with a lease of
    /// `lease_ms` on the store's clock.
    fn register_runner(&self, spec: &RunnerSpec, lease_ms: i64) -> Result<RunnerRecord>;

    /// Renews runner `id`'s lease and the leases of the claims of
    /// `holding` (the attempts it runs) it still holds, by `lease_ms`;
    /// says whether it drains and which of `holding` are no longer its
    /// own. A claim it holds but does not list is not renewed. [`Error::UnknownRunner`]
    /// when no such runner is registered.
    fn heartbeat(&self, id: &str, holding: &[AttemptId], lease_ms: i64) -> Result<Beat>;

    /// Every registered runner, by name, and the store's clock
    /// (milliseconds since the Unix epoch).
    fn runners(&self) -> Result<(Vec<RunnerRecord>, i64)>;

    /// Asks runner `id` to drain (finish what it holds, claim nothing
    /// new); `false` when there is no such runner.
    fn drain_runner(&self, id: &str) -> Result<bool>;

    /// Queues an attempt, replacing whatever the queue held for its node
    /// (an earlier attempt, superseded).
    fn enqueue(&self, attempt: &QueuedAttempt) -> Result<()>;

    /// Queues an attempt as [`Store::enqueue`] does and, in the same
    /// transaction, claims it for `runner` under a lease of `lease_ms`
    /// (the row, lease and affinity a claim would write) when a claim of
    /// one attempt by that runner made now would take it: the runner is
    /// registered, its lease holds, it does not drain, it has a free
    /// slot, its capabilities satisfy the attempt, no other attempt waits
    /// in any queue, and no rival with a free slot is drawn to it more
    /// strongly (the rules of a claim's choice for one attempt). `true`
    /// when claimed for it; else the attempt waits as queued (an unknown
    /// runner is no error). The server hands such an attempt to a claim
    /// of `runner` waiting on it, which answers without reading.
    fn enqueue_for(&self, attempt: &QueuedAttempt, runner: &str, lease_ms: i64) -> Result<bool>;

    /// Puts `runner`'s claim of exactly `attempt` back in its queue,
    /// waiting in its old place (the claim it was handed to went away
    /// before answering). `false` when `runner` does not hold it (it was
    /// withdrawn, superseded, or its claim lapsed and was swept).
    fn release_claim(&self, attempt: &AttemptId, runner: &str) -> Result<bool>;

    /// Claims for runner `runner`, atomically, at most `max` waiting
    /// attempts (and no more than its free slots) of the queues its
    /// capabilities satisfy, oldest first, preferring runs it already
    /// serves; each claim holds a lease of `lease_ms`. Nothing while it
    /// drains or once its own lease ran out (only a heartbeat renews it).
    /// Two runners racing never get the same attempt.
    fn claim(&self, runner: &str, max: usize, lease_ms: i64) -> Result<Vec<QueuedAttempt>>;

    /// `Ok` when `runner` holds the claim of exactly `attempt`, else
    /// [`Error::AttemptFenced`] saying why not.
    fn claim_holds(&self, attempt: &AttemptId, runner: &str) -> Result<()>;

    /// Ends `runner`'s claim of `attempt` (its end was reported), fenced
    /// like [`Store::claim_holds`].
    fn finish_claim(&self, attempt: &AttemptId, runner: &str) -> Result<()>;

    /// Of `attempts` (those an engine waits for), the ones it will never
    /// hear of: no longer queued (cleared, superseded), or claimed by a
    /// runner whose lease expired (those claims are removed, so a late
    /// report is refused).
    fn lost_claims(&self, attempts: &[AttemptId]) -> Result<Vec<AttemptId>>;

    /// Withdraws an attempt from the queue (its engine killed it); true
    /// when it was there.
    fn dequeue(&self, attempt: &AttemptId) -> Result<bool>;

    /// Every queue with waiting or held attempts, by key, and the store's
    /// clock.
    fn queue_rows(&self) -> Result<(Vec<QueueRow>, i64)>;

    /// The attempts runners hold now, by runner, run and node: at most
    /// `limit` of them (what the web view's runners page lists).
    fn claims(&self, limit: usize) -> Result<Vec<queue::Claim>>;

    /// Removes the waiting (unclaimed) attempts of queue `key`; returns
    /// them.
    fn clear_queue(&self, key: &str) -> Result<Vec<AttemptId>>;
}

/// A run's newest events and where it stands ([`Store::run_tail`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunTail {
    /// The events after the sequence number asked for, in order.
    pub events: Vec<Event>,
    /// The run's status.
    pub status: crate::model::RunStatus,
    /// The run's last sequence number.
    pub last: u64,
}

/// The most runs one page returns ([`Store::runs_page`]).
pub const MAX_RUNS_PAGE: usize = 1000;

/// Which runs a page lists ([`Store::runs_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with this status.
    pub status: Option<crate::model::RunStatus>,
    /// Only runs older than this run (the previous page's last id).
    pub before: Option<String>,
    /// Only runs created at or after this moment (milliseconds since the
    /// Unix epoch); an index on the creation time serves it.
    pub created_after: Option<u64>,
    /// Only runs created before this moment (milliseconds since the Unix
    /// epoch).
    pub created_before: Option<u64>,
    /// At most this many (at least 1).
    pub limit: usize,
}

/// The last moment a run's creation time can be compared at: the end of
/// year 9999 (stored times are `YYYY-MM-DDTHH:MM:SS.mmmZ` text, ordered as
/// text only with four-digit years).
pub const MAX_MOMENT_MS: u64 = 253_402_300_799_999;

/// A moment as runs store their creation time, for comparing them
/// ([`RunFilter::created_after`]); clamped to [`MAX_MOMENT_MS`].
pub(crate) fn stored_moment(ms: u64) -> String {
    crate::time::format_millis(ms.min(MAX_MOMENT_MS))
}

impl RunFilter {
    /// The newest `limit` runs.
    pub fn newest(limit: usize) -> RunFilter {
        RunFilter {
            limit,
            ..RunFilter::default()
        }
    }
}

/// A user of the server, as stored.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The password's argon2id hash (PHC string).
    pub password_hash: String,
    /// When it was added (milliseconds since the Unix epoch).
    pub created_ms: i64,
}

impl UserRecord {
    /// A user to add.
    pub fn new(name: &str, role: Role, password_hash: &str, created_ms: i64) -> UserRecord {
        UserRecord {
            name: name.to_string(),
            role,
            password_hash: password_hash.to_string(),
            created_ms,
        }
    }
}

/// Never prints the hash.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// An API token as stored: its id and the SHA-256 of the whole token,
/// never the token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRecord {
    /// The public part of the token (`orch_<id>_…`).
    pub id: String,
    /// The user it acts for.
    pub user: String,
    /// A name to tell tokens apart.
    pub name: String,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// What it is narrowed to (empty: the user's role).
    pub scopes: Vec<Permission>,
    /// A runner's token: runner calls only.
    pub runner: bool,
    /// When it was made (milliseconds since the Unix epoch).
    pub created_ms: i64,
    /// When it stops working.
    pub expires_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
}

impl TokenRecord {
    /// A new token record.
    pub fn new(id: &str, user: &str, name: &str, hash: &str, created_ms: i64) -> TokenRecord {
        TokenRecord {
            id: id.to_string(),
            user: user.to_string(),
            name: name.to_string(),
            hash: hash.to_string(),
            scopes: Vec::new(),
            runner: false,
            created_ms,
            expires_ms: None,
            revoked_ms: None,
        }
    }
}

/// Never prints the hash.
impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("runner", &self.runner)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .field("revoked_ms", &self.revoked_ms)
            .finish_non_exhaustive()
    }
}
