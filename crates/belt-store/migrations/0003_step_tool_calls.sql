-- The tools a step's model called (JSON array; NULL when none), so a resumed tool loop
-- replays the model's turn instead of calling it again.
ALTER TABLE steps ADD COLUMN tool_calls TEXT;
