-- What P100 said a balance was, and when we read it. Reconciliation compares the ledger as of
-- `read_at` (the cut-off) with `amount`. Rows are facts and are never changed.
CREATE TABLE provider_balance_snapshots (
    id                  BIGSERIAL PRIMARY KEY,
    owner_kind          TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id    TEXT,
    currency            TEXT        NOT NULL CHECK (currency = lower(currency) AND currency <> ''),
    amount              NUMERIC     NOT NULL,
    provider_balance_id TEXT,
    read_at             TIMESTAMPTZ NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'partner') = (external_user_id IS NULL))
);

CREATE INDEX provider_balance_snapshots_latest
    ON provider_balance_snapshots (owner_kind, external_user_id, currency, read_at DESC);
