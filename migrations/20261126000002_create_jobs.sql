-- The job queue: one row per unit of work, from enqueue to done/dead/cancelled.
--
-- States: pending (waiting for run_at), running (claimed by locked_by until locked_until),
-- failed (the last attempt failed; a retry is scheduled at run_at), done, dead (gave up;
-- last_error and errors keep why), cancelled (by an operator before it ran).
CREATE TABLE jobs (
    id           BIGSERIAL   PRIMARY KEY,
    kind         TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    state        TEXT        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'failed', 'done', 'dead', 'cancelled')),
    attempts     INT         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INT         NOT NULL CHECK (max_attempts > 0),
    -- Deferrals (429 / Retry-After) move run_at without spending an attempt; capped separately.
    deferrals    INT         NOT NULL DEFAULT 0,
    run_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_by    TEXT,
    locked_until TIMESTAMPTZ,
    -- At most one live job per (kind, dedup_key): see jobs_dedup.
    dedup_key    TEXT,
    last_error   TEXT,
    -- One entry per failed attempt: {"attempt", "at", "error"}.
    errors       JSONB       NOT NULL DEFAULT '[]',
    result       JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    CHECK ((state = 'running') = (locked_by IS NOT NULL))
);

-- The claim query walks this index in run_at order; finished rows are not in it, so a table
-- full of history does not slow the queue down.
CREATE INDEX jobs_runnable ON jobs (kind, run_at, id) WHERE state IN ('pending', 'failed');
CREATE UNIQUE INDEX jobs_dedup ON jobs (kind, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('pending', 'failed', 'running');
CREATE INDEX jobs_leases ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('done', 'dead', 'cancelled');

-- One row per worker process start: its identity for locks, and its heartbeat.
CREATE TABLE job_workers (
    id          TEXT        PRIMARY KEY,
    host        TEXT        NOT NULL,
    pid         INT         NOT NULL,
    kinds       TEXT[]      NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at  TIMESTAMPTZ
);

-- Every schedule tick that was enqueued, once, whatever the number of replicas.
CREATE TABLE schedule_ticks (
    schedule    TEXT        NOT NULL,
    tick_at     TIMESTAMPTZ NOT NULL,
    job_id      BIGINT,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick_at)
);

-- Wakes idle workers of a kind when jobs become runnable now (inserted, retried by an
-- operator, brought forward). Statement-level, so a batch insert sends one notification per
-- kind instead of one per row.
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ready_kind TEXT;
BEGIN
    FOR ready_kind IN
        SELECT DISTINCT kind FROM new_rows WHERE state IN ('pending', 'failed') AND run_at <= now()
    LOOP
        PERFORM pg_notify('jobs_ready', ready_kind);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();

CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();
