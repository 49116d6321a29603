-- belt's run store, version 1.
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    pattern      TEXT NOT NULL DEFAULT '',
    task         TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT 'running',
    started_at   TEXT NOT NULL,
    definition   TEXT NOT NULL DEFAULT 'null',
    -- The process driving the run, and when it last said so (unix ms).
    owner        TEXT,
    heartbeat_ms INTEGER,
    result       TEXT,
    cost_usd     REAL,
    duration_ms  INTEGER,
    finished_at  TEXT
);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    step          TEXT NOT NULL,
    tier          TEXT NOT NULL,
    input_hash    TEXT NOT NULL,
    output        TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL NOT NULL,
    attempts      INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    simulated     INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    json   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    tier       TEXT NOT NULL,
    error      TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    request    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE cache (
    key        TEXT PRIMARY KEY,
    reply      TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
