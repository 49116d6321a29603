-- Prompt-cache tokens of a step (part of input_tokens), so a resumed run's totals keep them.
ALTER TABLE steps ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
