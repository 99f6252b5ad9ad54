-- Holds: the amount an outgoing operation has reserved, per owner and currency. They live in
-- their own accounts so the accounts mirroring P100's balances count settled movements only.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_owner_kind_check;
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_owner_kind_check CHECK (owner_kind IN
    ('partner', 'user', 'external', 'p100_fees', 'internal_clearing', 'exchange_clearing',
     'partner_hold', 'user_hold', 'holds_clearing'));
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_user_check
    CHECK ((owner_kind IN ('user', 'user_hold')) = (external_user_id IS NOT NULL));

-- Outgoing SEPA transfers to follow (intake table: the partner's application may insert rows
-- in its own transaction; `sepa track` does the same and places the hold at once).
CREATE TABLE sepa_transfers (
    id               BIGSERIAL   PRIMARY KEY,
    transfer_id      TEXT        NOT NULL UNIQUE CHECK (btrim(transfer_id) <> '' AND length(transfer_id) <= 200),
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    amount           NUMERIC     NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL CHECK (currency = lower(currency) AND currency <> ''),
    -- TRACKING (not read from P100 yet) → P100's status as last read (e.g. PROCESSING) →
    -- SUCCESSFUL | FAILED; MISSING_AT_PROVIDER when P100 still answers P428 after the grace.
    status           TEXT        NOT NULL DEFAULT 'TRACKING' CHECK (btrim(status) <> ''),
    -- none → held → settled (SUCCESSFUL) | released (FAILED).
    hold_state       TEXT        NOT NULL DEFAULT 'none' CHECK (hold_state IN ('none', 'held', 'settled', 'released')),
    p100_amount      NUMERIC,
    p100_currency    TEXT,
    fee              NUMERIC,
    -- P100's `error` object of a FAILED transfer, kept whole (its fields are not documented).
    error            JSONB,
    reason           TEXT,
    polls            INT         NOT NULL DEFAULT 0,
    checked_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL))
);
CREATE INDEX sepa_transfers_open ON sepa_transfers (id)
    WHERE status NOT IN ('SUCCESSFUL', 'FAILED', 'MISSING_AT_PROVIDER');

CREATE TABLE sepa_events (
    id       BIGSERIAL   PRIMARY KEY,
    transfer BIGINT      NOT NULL REFERENCES sepa_transfers (id),
    status   TEXT        NOT NULL,
    note     TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sepa_events_transfer ON sepa_events (transfer, id);

-- Differences between P100 and the ledger, one row per (owner, currency or transaction,
-- class), updated by later runs: open → acknowledged → resolved (by a person, or
-- automatically when a run matches again). Resolved rows are reopened, not duplicated.
CREATE TABLE discrepancies (
    id               BIGSERIAL   PRIMARY KEY,
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    currency         TEXT,
    -- The transaction or operation it is about (P100 transaction id, transferId, lockId);
    -- NULL for account-level classes.
    subject          TEXT,
    class            TEXT        NOT NULL CHECK (class IN
                         ('balance_mismatch', 'missing_locally', 'missing_at_provider', 'amount_mismatch',
                          'currency_mismatch', 'status_mismatch', 'duplicate', 'unknown_account',
                          'unknown_user', 'stale_pending')),
    provider_balance NUMERIC,
    ledger_balance   NUMERIC,
    delta            NUMERIC,
    amount           NUMERIC,
    explanations     JSONB       NOT NULL DEFAULT '[]',
    detail           TEXT,
    state            TEXT        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    severity         TEXT        NOT NULL DEFAULT 'low' CHECK (severity IN ('low', 'medium', 'high')),
    first_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at      TIMESTAMPTZ,
    last_run         BIGINT,
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL))
);
CREATE UNIQUE INDEX discrepancies_identity ON discrepancies
    (owner_kind, COALESCE(external_user_id, ''), COALESCE(currency, ''), COALESCE(subject, ''), class);
CREATE INDEX discrepancies_unresolved ON discrepancies (id) WHERE state <> 'resolved';

-- Who did what to a discrepancy, when, and why. Append-only.
CREATE TABLE discrepancy_events (
    id          BIGSERIAL   PRIMARY KEY,
    discrepancy BIGINT      NOT NULL REFERENCES discrepancies (id),
    -- opened, updated, acknowledged, resolved, auto_resolved, reopened
    event       TEXT        NOT NULL,
    actor       TEXT        NOT NULL,
    note        TEXT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX discrepancy_events_discrepancy ON discrepancy_events (discrepancy, id);
CREATE TRIGGER discrepancy_events_append_only BEFORE UPDATE OR DELETE ON discrepancy_events
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Intake rows inserted directly by the partner's application get their first job from the
-- `intake_sweep`; NULL here means "no job queued for it yet".
ALTER TABLE tracked_users ADD COLUMN queued_at TIMESTAMPTZ;
ALTER TABLE exchanges ADD COLUMN queued_at TIMESTAMPTZ;
ALTER TABLE sepa_transfers ADD COLUMN queued_at TIMESTAMPTZ;
UPDATE tracked_users SET queued_at = tracked_at;
UPDATE exchanges SET queued_at = created_at;
CREATE INDEX tracked_users_unqueued ON tracked_users (tracked_at) WHERE queued_at IS NULL;
CREATE INDEX exchanges_unqueued ON exchanges (id) WHERE queued_at IS NULL;
CREATE INDEX sepa_transfers_unqueued ON sepa_transfers (id) WHERE queued_at IS NULL;
