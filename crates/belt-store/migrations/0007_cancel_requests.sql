-- belt's run store, version 7: a cancel asked for by any process that shares the store
-- (`belt serve --no-execute`, `belt runs cancel`), which the run's driver sees at its next
-- heartbeat. Cleared when the run ends.
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
