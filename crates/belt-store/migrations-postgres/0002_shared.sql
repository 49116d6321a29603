-- What the processes sharing a PostgreSQL store share beyond runs (see src/shared.rs):
-- which processes are alive, the provider limits summed over all of them, and budget pools.

-- A process that holds slots or reservations, and when it last said it is alive. Holdings
-- of a process silent for longer than the lease TTL are reclaimed.
CREATE TABLE belt_processes (
    holder    TEXT PRIMARY KEY,
    heartbeat TIMESTAMPTZ NOT NULL
);

-- One row per call in flight under a provider's shared concurrency limit.
CREATE TABLE limit_slots (
    id       BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    holder   TEXT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX limit_slots_provider ON limit_slots (provider);

-- A token bucket per provider and kind (`requests`, `tokens`): its level at `at`.
CREATE TABLE limit_buckets (
    provider TEXT NOT NULL,
    kind     TEXT NOT NULL,
    level    DOUBLE PRECISION NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, kind)
);

-- No call to the provider starts before `until` (a 429's Retry-After, seen by any process).
CREATE TABLE limit_pauses (
    provider TEXT PRIMARY KEY,
    until    TIMESTAMPTZ NOT NULL
);

-- What each pool spent in each UTC day (`2026-12-02`) and month (`2026-12`).
CREATE TABLE pool_spent (
    pool       TEXT NOT NULL,
    period     TEXT NOT NULL,
    starts     TEXT NOT NULL,
    cost_usd   DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens     BIGINT NOT NULL DEFAULT 0,
    calls      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (pool, period, starts)
);

-- A call's worst case, reserved in a pool until the call is settled.
CREATE TABLE pool_reservations (
    id         BIGSERIAL PRIMARY KEY,
    pool       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    day        TEXT NOT NULL,
    month      TEXT NOT NULL,
    cost_usd   DOUBLE PRECISION NOT NULL,
    tokens     BIGINT NOT NULL,
    calls      BIGINT NOT NULL
);
CREATE INDEX pool_reservations_pool ON pool_reservations (pool);
