-- Locked exchanges to finalize at P100, at most once (intake table: the partner's
-- application may insert LOCKED rows in its own transaction; `exchange submit` does the same).
CREATE TABLE exchanges (
    id               BIGSERIAL   PRIMARY KEY,
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    lock_id          TEXT        NOT NULL UNIQUE CHECK (btrim(lock_id) <> ''),
    currency_from    TEXT        NOT NULL CHECK (currency_from = lower(currency_from) AND currency_from <> ''),
    currency_to      TEXT        NOT NULL CHECK (currency_to = lower(currency_to) AND currency_to <> ''),
    amount           NUMERIC     NOT NULL CHECK (amount > 0),
    expires_at       TIMESTAMPTZ NOT NULL,
    -- LOCKED → SUBMITTING (committed before the call) → SUBMITTED → COMPLETED | FAILED;
    -- EXPIRED (lock ran out before submission); NEEDS_REVIEW (a person must look).
    state            TEXT        NOT NULL DEFAULT 'LOCKED' CHECK (state IN
                         ('LOCKED', 'SUBMITTING', 'SUBMITTED', 'COMPLETED', 'FAILED', 'EXPIRED', 'NEEDS_REVIEW')),
    exchange_id      TEXT,
    reason           TEXT,
    submitted_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL)),
    CHECK (currency_from <> currency_to)
);

-- Every state an exchange went through, with why.
CREATE TABLE exchange_events (
    id          BIGSERIAL   PRIMARY KEY,
    exchange    BIGINT      NOT NULL REFERENCES exchanges (id),
    state       TEXT        NOT NULL,
    note        TEXT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
