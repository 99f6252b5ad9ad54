-- The run a day's report describes is the one that writes it (the nightly chain), not a manual
-- run of the same scope later that day.
ALTER TABLE reconciliation_runs ADD COLUMN writes_report BOOLEAN NOT NULL DEFAULT false;
