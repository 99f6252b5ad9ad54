-- An enqueue for a unit whose job is running was folded into that run and lost (a manual
-- reconcile without sync swallowed the nightly tick). It now asks for exactly one rerun after
-- the running job ends, with the newest arguments asked for.
ALTER TABLE jobs
    ADD COLUMN rerun_payload JSONB,
    ADD COLUMN rerun_at      TIMESTAMPTZ;
