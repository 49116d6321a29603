-- belt's run store, version 5: how each step's call ended, so a resumed run replays it whole.
-- `finish_reason`: why the model stopped (stop, length, tool_calls, ...), NULL when unknown;
-- `unpriced`: 1 when the model had no known price (the step's cost is unknown, not 0).
ALTER TABLE steps ADD COLUMN finish_reason TEXT;
ALTER TABLE steps ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
