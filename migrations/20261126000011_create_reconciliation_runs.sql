-- One row per reconciliation run: what it covered, what it found, what it spent.
CREATE TABLE reconciliation_runs (
    id                 BIGSERIAL   PRIMARY KEY,
    -- all, partner, user:<externalUserId>
    scope              TEXT        NOT NULL,
    state              TEXT        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'finished', 'failed')),
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at        TIMESTAMPTZ,
    -- The latest P100 balance read of the run (each account is compared at its own read).
    cutoff             TIMESTAMPTZ,
    accounts_checked   BIGINT      NOT NULL DEFAULT 0,
    matched            BIGINT      NOT NULL DEFAULT 0,
    matched_in_flight  BIGINT      NOT NULL DEFAULT 0,
    discrepancies      BIGINT      NOT NULL DEFAULT 0,
    by_currency        JSONB       NOT NULL DEFAULT '[]',
    unmatched          JSONB       NOT NULL DEFAULT '[]',
    discrepancy_ids    BIGINT[]    NOT NULL DEFAULT '{}',
    p100_calls         BIGINT      NOT NULL DEFAULT 0,
    p100_budget        BIGINT      NOT NULL DEFAULT 0,
    complete           BOOLEAN     NOT NULL DEFAULT true,
    incomplete_reasons JSONB       NOT NULL DEFAULT '[]',
    error              TEXT
);
CREATE INDEX reconciliation_runs_started ON reconciliation_runs (started_at);

-- When each owner was last reconciled (incremental runs pick the active and the overdue).
CREATE TABLE reconciled_owners (
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    reconciled_at    TIMESTAMPTZ NOT NULL,
    UNIQUE NULLS NOT DISTINCT (owner_kind, external_user_id)
);

-- Activity since an owner's last reconciliation.
CREATE INDEX provider_transactions_user_seen ON provider_transactions (external_user_id, last_seen_at)
    WHERE owner_kind = 'user';

-- The report of each day as written (rewriting a day replaces it).
CREATE TABLE reports (
    day        DATE        PRIMARY KEY,
    run        BIGINT      NOT NULL REFERENCES reconciliation_runs (id),
    report     JSONB       NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
