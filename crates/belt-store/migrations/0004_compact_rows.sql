-- belt's run store, version 4: smaller rows where every step writes.
--
-- Every step writes a step record and two events, so their rows decide how many pages each
-- commit writes. Versions 1-3 repeated the 36-character run id in every row and again in each
-- table's primary-key index. Here:
-- - a run has an integer key (`runs.run_key`), and steps and events refer to it;
-- - steps are a WITHOUT ROWID table clustered on (run, step), which is how they are read
--   (all of a run): one b-tree instead of a table plus an index;
-- - events are kept one row per appended batch, one compact line per event, instead of
--   one row (and index entry) per event;
-- - a finished run's result is kept compressed (`result_lz4`).

CREATE TABLE runs_v2 (
    run_key      INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL UNIQUE,
    pattern      TEXT NOT NULL DEFAULT '',
    task         TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT 'running',
    started_at   TEXT NOT NULL,
    definition   TEXT NOT NULL DEFAULT 'null',
    -- The process driving the run, and when it last said so (unix ms).
    owner        TEXT,
    heartbeat_ms INTEGER,
    -- The RunResult as JSON: `result_lz4` LZ4-compressed (a size-prefixed block) since
    -- version 4, `result` as text for runs finished before.
    result       TEXT,
    result_lz4   BLOB,
    cost_usd     REAL,
    duration_ms  INTEGER,
    finished_at  TEXT
);
INSERT INTO runs_v2 (run_id, pattern, task, status, started_at, definition, owner, heartbeat_ms, result,
                     cost_usd, duration_ms, finished_at)
    SELECT run_id, pattern, task, status, started_at, definition, owner, heartbeat_ms, result, cost_usd,
           duration_ms, finished_at
    FROM runs ORDER BY rowid;
-- Steps or events of a run that has no row (earlier versions did not require one) keep it, as a
-- placeholder like the one a lease creates.
INSERT OR IGNORE INTO runs_v2 (run_id, started_at)
    SELECT run_id, '1970-01-01T00:00:00+00:00' FROM steps
    UNION SELECT run_id, '1970-01-01T00:00:00+00:00' FROM events;

CREATE TABLE steps_v2 (
    run_key       INTEGER NOT NULL,
    step          TEXT NOT NULL,
    tier          TEXT NOT NULL,
    input_hash    TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL,
    attempts      INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    simulated     INTEGER NOT NULL,
    tool_calls    TEXT,
    -- Last: a long output then spills to overflow pages after the small columns.
    output        TEXT NOT NULL,
    PRIMARY KEY (run_key, step)
) WITHOUT ROWID;
INSERT INTO steps_v2 (run_key, step, tier, input_hash, model, input_tokens, output_tokens,
                      cache_read_tokens, cache_write_tokens, cost_usd, attempts, duration_ms, simulated,
                      tool_calls, output)
    SELECT r.run_key, s.step, s.tier, s.input_hash, s.model, s.input_tokens, s.output_tokens,
           s.cache_read_tokens, s.cache_write_tokens, s.cost_usd, s.attempts, s.duration_ms, s.simulated,
           s.tool_calls, s.output
    FROM steps s JOIN runs_v2 r ON r.run_id = s.run_id;

-- One row per appended batch of events, one event per line (see src/event_row.rs); an
-- event of an earlier version becomes a row of its own with its JSON as the line.
CREATE TABLE events_v2 (
    run_key   INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    lines     TEXT NOT NULL,
    PRIMARY KEY (run_key, first_seq)
);
INSERT INTO events_v2 (run_key, first_seq, last_seq, lines)
    SELECT r.run_key, e.seq, e.seq, e.json FROM events e JOIN runs_v2 r ON r.run_id = e.run_id;

DROP TABLE steps;
DROP TABLE events;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
ALTER TABLE steps_v2 RENAME TO steps;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX runs_started ON runs (started_at);
