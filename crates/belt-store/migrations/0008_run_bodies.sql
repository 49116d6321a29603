-- belt's run store, version 8: a run's definition and its result in tables of their own.
--
-- SQLite rewrites a whole row when any column of it changes. A run's row changes every two
-- seconds while it runs (the heartbeat) and when a worker takes or hands it back, and its
-- definition can be large: a given plan of 1,000,000 subtasks is ~100 MB of JSON. With the
-- definition in `runs`, each heartbeat read it back from its overflow pages, built the new
-- record in memory (two copies, ~230 MiB at once) and wrote it again to the WAL; and the end
-- of the run did the same while also writing the result. Here the small, changing columns
-- stay in `runs`, and the two large values that are written once each go to
-- `run_definitions` and `run_results`, keyed by `run_key`.

CREATE TABLE run_definitions (
    run_key    INTEGER PRIMARY KEY,
    definition TEXT NOT NULL
);
INSERT INTO run_definitions (run_key, definition)
    SELECT run_key, definition FROM runs WHERE definition != 'null';

-- `result_lz4` LZ4-compressed JSON (a size-prefixed block); `result` as text for runs
-- finished before version 4.
CREATE TABLE run_results (
    run_key    INTEGER PRIMARY KEY,
    result     TEXT,
    result_lz4 BLOB
);
INSERT INTO run_results (run_key, result, result_lz4)
    SELECT run_key, result, result_lz4 FROM runs WHERE result IS NOT NULL OR result_lz4 IS NOT NULL;

ALTER TABLE runs DROP COLUMN definition;
ALTER TABLE runs DROP COLUMN result;
ALTER TABLE runs DROP COLUMN result_lz4;
