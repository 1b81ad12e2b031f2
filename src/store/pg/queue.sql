-- Version 2: runners and the queue of attempts they claim.
CREATE TABLE runners (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    capabilities TEXT NOT NULL,
    slots BIGINT NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    registered_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    draining BOOLEAN NOT NULL DEFAULT false
);
-- The order attempts were queued in (a clock can tie).
CREATE SEQUENCE queue_seq;
CREATE TABLE queue (
    run TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    queue TEXT COLLATE "C" NOT NULL,
    requires TEXT NOT NULL,
    payload TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    runner TEXT COLLATE "C",
    claimed_at BIGINT,
    lease_until BIGINT,
    PRIMARY KEY (run, node)
);
CREATE INDEX queue_waiting ON queue (queue, seq) WHERE runner IS NULL;
CREATE INDEX queue_runner ON queue (runner) WHERE runner IS NOT NULL;
