-- belt's run store, version 6: what a replayed step needs to report the usage it had when
-- it ran. `reasoning_tokens`: output tokens spent on hidden reasoning (part of
-- `output_tokens`); `reported_usage`: the provider's own report as JSON, kept only when it
-- was more than the request allowed (the step's token columns then hold what was booked).
ALTER TABLE steps ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN reported_usage TEXT;
