-- orch's PostgreSQL schema, version 1. The views (runs, nodes, edges,
-- attempts, outputs, promises, violations) are copied from the one fold
-- of events into state (`RunState::apply`); `events` is the history they
-- are rebuilt from. JSON is kept as text, byte for byte as serde_json
-- wrote it (floats round-trip; jsonb would reorder keys). `pos` columns
-- keep insertion order where exports follow it.
CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    pos BIGSERIAL NOT NULL,
    workflow TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C",
    orchestrator_pid BIGINT,
    created_at TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C",
    config TEXT COLLATE "C" NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    owner_id TEXT COLLATE "C",
    owner TEXT COLLATE "C",
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs (created_at, pos);
CREATE INDEX runs_owner ON runs (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX runs_workflow ON runs (workflow, status);
CREATE TABLE events (
    run TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run, seq)
);
CREATE TABLE nodes (
    run TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    pos BIGSERIAL NOT NULL,
    task TEXT COLLATE "C" NOT NULL,
    inputs TEXT COLLATE "C" NOT NULL,
    attrs TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    started_at TEXT COLLATE "C",
    finished_at TEXT COLLATE "C",
    PRIMARY KEY (run, id)
);
CREATE TABLE edges (
    run TEXT COLLATE "C" NOT NULL,
    src TEXT COLLATE "C" NOT NULL,
    dst TEXT COLLATE "C" NOT NULL,
    pos BIGSERIAL NOT NULL,
    attrs TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run, src, dst)
);
CREATE TABLE attempts (
    run TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    pid BIGINT,
    started_at TEXT COLLATE "C" NOT NULL,
    finished_at TEXT COLLATE "C",
    outcome TEXT COLLATE "C",
    exit_code BIGINT,
    error TEXT COLLATE "C",
    files TEXT COLLATE "C",
    PRIMARY KEY (run, node, attempt)
);
CREATE TABLE outputs (
    run TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run, node)
);
CREATE TABLE promises (
    run TEXT COLLATE "C" NOT NULL,
    pos BIGSERIAL NOT NULL,
    promise TEXT COLLATE "C" NOT NULL
);
CREATE INDEX promises_run ON promises (run, pos);
CREATE TABLE violations (
    run TEXT COLLATE "C" NOT NULL,
    pos BIGSERIAL NOT NULL,
    violation TEXT COLLATE "C" NOT NULL
);
CREATE INDEX violations_run ON violations (run, pos);
CREATE TABLE logs (
    run TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    line BIGINT NOT NULL,
    stream TEXT COLLATE "C" NOT NULL,
    text TEXT COLLATE "C" NOT NULL
);
CREATE INDEX logs_attempt ON logs (run, node, attempt, line);
CREATE TABLE signals (
    id BIGSERIAL PRIMARY KEY,
    run TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C",
    value TEXT COLLATE "C",
    requested_at TEXT COLLATE "C" NOT NULL,
    taken_at TEXT COLLATE "C"
);
CREATE INDEX signals_open ON signals (id) WHERE taken_at IS NULL;
CREATE TABLE fires (
    workflow TEXT COLLATE "C" NOT NULL,
    fire_at BIGINT NOT NULL,
    run TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, fire_at)
);
CREATE INDEX fires_claimed ON fires (claimed_at);
CREATE TABLE pushes (
    id BIGSERIAL PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    payload TEXT COLLATE "C" NOT NULL,
    pushed_at TEXT COLLATE "C" NOT NULL
);
CREATE TABLE push_runs (
    push BIGINT NOT NULL,
    workflow TEXT COLLATE "C" NOT NULL,
    run TEXT COLLATE "C" NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (push, workflow)
);
CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY,
    role TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    "user" TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    scopes TEXT COLLATE "C" NOT NULL,
    runner BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX tokens_user ON tokens ("user");
CREATE TABLE timers (
    id BIGSERIAL PRIMARY KEY,
    workflow TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT,
    cron TEXT COLLATE "C",
    timezone TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    stopped_at BIGINT
);
