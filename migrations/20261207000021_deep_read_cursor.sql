-- Where the last deep re-read of a history stood, in P100's time: the cursor (latest
-- `updatedAt` committed) when a run that re-read at least a day behind the cursor, or the whole
-- history, finished its pages. A sync re-reads a day again once the cursor has moved a day past
-- it; NULL (every cursor written before this migration) makes the next run a deep one.
ALTER TABLE sync_cursors ADD COLUMN deep_read_cursor_at TIMESTAMPTZ;
