//! The schema of an orch database and its migrations.

/// Version 6 added where each attempt ran (`attempts.runner`: a runner's
/// name, or `local`; attempts that ended before are `local`) and what each
/// runner claimed lately (`runners.affinity`).
/// Version 5 added the `runners` and the `queue` of attempts they
/// claim. Version 4 added the server's `users` and `tokens`, and indexes of runs
/// by workflow, status and start for the server's filtered pages and the
/// estimates' samples (replacing `runs_workflow`). Version 3 added the files an attempt produced (`attempts.files`) and
/// the tables of schedules, events and timers: `fires`
/// (each fire time and its run), `pushes` (events pushed under a key),
/// `push_runs` (the run each event started for each workflow) and
/// `timers`. Version 2 added run leases (`owner_id`, `owner`, `epoch`,
/// `lease_until`) and the `signals` table (replacing `controls` and
/// `inputs`: a migrated database moves their untaken rows into it and
/// keeps the tables, unused).
pub(super) const SCHEMA_VERSION: i64 = 6;

/// What a version 1 to 5 database needs to become version 6 (after the
/// earlier migrations, before `SCHEMA`).
pub(super) const MIGRATE_5_TO_6: &str = r#"
ALTER TABLE attempts ADD COLUMN runner TEXT;
UPDATE attempts SET runner = 'local' WHERE finished_at IS NOT NULL;
"#;

/// What a version-5 database's runners need to become version 6's (what
/// each claimed lately: `runners.affinity`).
pub(super) const MIGRATE_5_TO_6_RUNNERS: &str = r#"
ALTER TABLE runners ADD COLUMN affinity TEXT NOT NULL DEFAULT '{}';
"#;

/// What a read-only connection to a version 3 to 5 database adds so that
/// version 6's reads work: attempts that ended ran locally.
pub(super) const READ_ONLY_5_AS_6: &str = r#"
CREATE TEMP VIEW attempts AS SELECT *,
    CASE WHEN finished_at IS NULL THEN NULL ELSE 'local' END AS runner FROM main.attempts;
"#;

/// What a version-1 database needs to become version 2 (before `SCHEMA`,
/// whose `CREATE ... IF NOT EXISTS` adds the new tables).
pub(super) const MIGRATE_1_TO_2: &str = r#"
ALTER TABLE runs ADD COLUMN owner_id TEXT;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    value TEXT,
    requested_at TEXT NOT NULL,
    taken_at TEXT
);
INSERT INTO signals (run, kind, node, value, requested_at)
    SELECT run, kind, node, value, at FROM (
        SELECT run, command AS kind, NULL AS node, NULL AS value, requested_at AS at, 0 AS src, id
            FROM controls WHERE taken_at IS NULL
        UNION ALL
        SELECT run, 'input', node, value, delivered_at, 1, id
            FROM inputs WHERE taken_at IS NULL
    ) ORDER BY at, src, id;
"#;

/// What a version-3 database needs to become version 4 (before `SCHEMA`,
/// which adds the new tables and indexes).
pub(super) const MIGRATE_3_TO_4: &str = r#"
DROP INDEX IF EXISTS runs_workflow;
"#;

/// What a version-2 database needs to become version 3 (before `SCHEMA`,
/// which adds the new tables).
pub(super) const MIGRATE_2_TO_3: &str = r#"
ALTER TABLE attempts ADD COLUMN files TEXT;
"#;

/// What a read-only connection to a version-2 database (it cannot be
/// migrated) adds in its own temporary schema so that version 3's reads
/// work: the attempts with no produced files, and empty tables of fires,
/// events and timers (temporary names come before the file's own).
pub(super) const READ_ONLY_2_AS_3: &str = r#"
CREATE TEMP VIEW attempts AS SELECT *, NULL AS files,
    CASE WHEN finished_at IS NULL THEN NULL ELSE 'local' END AS runner FROM main.attempts;
CREATE TEMP TABLE fires (workflow TEXT, fire_at INTEGER, run TEXT, kind TEXT, claimed_at INTEGER);
CREATE TEMP TABLE pushes (id INTEGER PRIMARY KEY, key TEXT, payload TEXT, pushed_at TEXT);
CREATE TEMP TABLE push_runs (push INTEGER, workflow TEXT, run TEXT, claimed_at INTEGER);
CREATE TEMP TABLE timers (id INTEGER PRIMARY KEY, workflow TEXT, at_ms INTEGER, cron TEXT, timezone TEXT, created_at INTEGER, stopped_at INTEGER);
"#;

/// What a read-only connection to a version-2 or -3 database adds so that
/// version 4's reads work: no users, no tokens.
pub(super) const READ_ONLY_3_AS_4: &str = r#"
CREATE TEMP TABLE users (name TEXT PRIMARY KEY, role TEXT, password_hash TEXT, created_at INTEGER);
CREATE TEMP TABLE tokens (id TEXT PRIMARY KEY, user TEXT, name TEXT, hash TEXT, scopes TEXT, runner INTEGER, created_at INTEGER, expires_at INTEGER, revoked_at INTEGER);
"#;

/// What a read-only connection to a version 2 to 4 database adds so that
/// version 5's reads work: no runners, an empty queue.
pub(super) const READ_ONLY_4_AS_5: &str = r#"
CREATE TEMP TABLE runners (id TEXT PRIMARY KEY, name TEXT, capabilities TEXT, slots INTEGER, version TEXT, registered_at INTEGER, lease_until INTEGER, draining INTEGER, affinity TEXT);
CREATE TEMP TABLE queue (run TEXT, node TEXT, attempt INTEGER, queue TEXT, requires TEXT, payload TEXT, queued_at INTEGER, seq INTEGER, runner TEXT, claimed_at INTEGER, lease_until INTEGER, PRIMARY KEY (run, node));
"#;

/// The store's clock, in milliseconds since the Unix epoch: leases expire
/// by it, never by a host's idea of the time.
pub(super) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    orchestrator_pid INTEGER,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    config TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    owner_id TEXT,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_owner ON runs (owner_id) WHERE owner_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    task TEXT NOT NULL,
    inputs TEXT NOT NULL,
    attrs TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run, id)
);
CREATE TABLE IF NOT EXISTS edges (
    run TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    attrs TEXT NOT NULL,
    PRIMARY KEY (run, src, dst)
);
CREATE TABLE IF NOT EXISTS attempts (
    run TEXT NOT NULL,
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    exit_code INTEGER,
    error TEXT,
    files TEXT,
    runner TEXT,
    PRIMARY KEY (run, node, attempt)
);
CREATE TABLE IF NOT EXISTS outputs (
    run TEXT NOT NULL,
    node TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run, node)
);
CREATE TABLE IF NOT EXISTS promises (
    run TEXT NOT NULL,
    promise TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS promises_run ON promises (run);
CREATE TABLE IF NOT EXISTS violations (
    run TEXT NOT NULL,
    violation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS violations_run ON violations (run);
CREATE TABLE IF NOT EXISTS logs (
    run TEXT NOT NULL,
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    line INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_attempt ON logs (run, node, attempt, line);
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    value TEXT,
    requested_at TEXT NOT NULL,
    taken_at TEXT
);
CREATE INDEX IF NOT EXISTS signals_open ON signals (taken_at, id);
CREATE TABLE IF NOT EXISTS fires (
    workflow TEXT NOT NULL,
    fire_at INTEGER NOT NULL,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (workflow, fire_at)
);
CREATE INDEX IF NOT EXISTS runs_workflow_status ON runs (workflow, status, created_at);
CREATE INDEX IF NOT EXISTS runs_workflow_created ON runs (workflow, created_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    pushed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS push_runs (
    push INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    run TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (push, workflow)
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    runner INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
CREATE TABLE IF NOT EXISTS runners (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    slots INTEGER NOT NULL,
    version TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0,
    affinity TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS queue (
    run TEXT NOT NULL,
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    queue TEXT NOT NULL,
    requires TEXT NOT NULL,
    payload TEXT NOT NULL,
    queued_at INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    runner TEXT,
    claimed_at INTEGER,
    lease_until INTEGER,
    PRIMARY KEY (run, node)
);
CREATE INDEX IF NOT EXISTS queue_waiting ON queue (queue, seq) WHERE runner IS NULL;
CREATE INDEX IF NOT EXISTS queue_runner ON queue (runner) WHERE runner IS NOT NULL;
CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    at_ms INTEGER,
    cron TEXT,
    timezone TEXT,
    created_at INTEGER NOT NULL,
    stopped_at INTEGER
);
"#;
