-- belt's PostgreSQL run store, version 1: the same records as the SQLite store's version 7
-- (see ../migrations), with PostgreSQL's types. Times of leases and cache entries are the
-- database's own clock (`now()`), so processes on hosts whose clocks disagree agree on them.

CREATE TABLE runs (
    -- Grows with every run recorded: the order runs were accepted (queued) in.
    run_key          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           TEXT NOT NULL UNIQUE,
    -- '' for a placeholder: a lease or a step taken before the run was recorded.
    pattern          TEXT NOT NULL DEFAULT '',
    task             TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL DEFAULT 'running',
    started_at       TIMESTAMPTZ NOT NULL,
    -- The run's definition (RunSpec) as JSON text, kept byte for byte (not JSONB).
    definition       TEXT NOT NULL DEFAULT 'null',
    -- The process driving the run, and when it last said so (the database's clock).
    owner            TEXT,
    heartbeat_at     TIMESTAMPTZ,
    -- Asked for by any process sharing the store; the driver sees it at its next heartbeat.
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- The RunResult as JSON, LZ4-compressed (a size-prefixed block), as the SQLite store keeps it.
    result_lz4       BYTEA,
    cost_usd         DOUBLE PRECISION,
    duration_ms      BIGINT,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX runs_started ON runs (started_at);
-- What workers look through for runs to take (`take_runs`): the live ones only.
CREATE INDEX runs_live ON runs (run_key) WHERE status IN ('queued', 'running');

CREATE TABLE steps (
    run_key            BIGINT NOT NULL,
    step               TEXT NOT NULL,
    tier               TEXT NOT NULL,
    input_hash         TEXT NOT NULL,
    model              TEXT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL,
    attempts           BIGINT NOT NULL,
    duration_ms        BIGINT NOT NULL,
    simulated          BOOLEAN NOT NULL,
    unpriced           BOOLEAN NOT NULL DEFAULT FALSE,
    finish_reason      TEXT,
    -- JSON: the tools the step's model called (NULL when none), and the provider's own usage
    -- report when it was more than the request allowed.
    tool_calls         TEXT,
    reported_usage     TEXT,
    -- The model's output as UTF-8 bytes: a TEXT column refuses a NUL character, which a model
    -- may well write, and a step must not fail to record what it already paid for.
    output             BYTEA NOT NULL,
    PRIMARY KEY (run_key, step)
);

-- One row per appended batch of events, one compact line per event (see src/event_row.rs).
CREATE TABLE events (
    run_key   BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    lines     TEXT NOT NULL,
    PRIMARY KEY (run_key, first_seq)
);

CREATE TABLE dead_letters (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    tier       TEXT NOT NULL,
    error      TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    request    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX dead_letters_run ON dead_letters (run_id);

CREATE TABLE cache (
    key        TEXT PRIMARY KEY,
    reply      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
