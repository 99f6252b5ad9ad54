-- Completed runs of a job (a polling job runs many times under one row), so `enqueue --wait`
-- can tell when "its" run finished.
ALTER TABLE jobs ADD COLUMN runs INT NOT NULL DEFAULT 0;
