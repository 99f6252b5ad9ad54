-- The double-entry ledger. Append-only: corrections are reversals, never updates.

-- One account per (owner, currency): the partner's and each user's balances mirror P100's;
-- the counter-accounts (external world, P100 fees, internal-transfer and exchange clearing)
-- take the other side of every posting.
CREATE TABLE ledger_accounts (
    id               BIGSERIAL   PRIMARY KEY,
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN
                         ('partner', 'user', 'external', 'p100_fees', 'internal_clearing', 'exchange_clearing')),
    external_user_id TEXT,
    currency         TEXT        NOT NULL CHECK (currency = lower(currency) AND currency <> ''),
    -- Maintained by a trigger; `ledger verify` proves it equals the sum of the entries.
    balance          NUMERIC     NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL)),
    UNIQUE NULLS NOT DISTINCT (owner_kind, external_user_id, currency)
);

CREATE TABLE ledger_postings (
    id               BIGSERIAL   PRIMARY KEY,
    -- The same fact is never posted twice, whatever retries or overlapping syncs do.
    idempotency_key  TEXT        NOT NULL UNIQUE,
    source           TEXT        NOT NULL CHECK (source IN ('p100_transaction', 'local_operation')),
    provider_tx_id   TEXT,
    provider_status  TEXT,
    description      TEXT        NOT NULL,
    reverses         BIGINT      REFERENCES ledger_postings (id),
    effective_at     TIMESTAMPTZ NOT NULL,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    id           BIGSERIAL   PRIMARY KEY,
    posting_id   BIGINT      NOT NULL REFERENCES ledger_postings (id),
    account_id   BIGINT      NOT NULL REFERENCES ledger_accounts (id),
    currency     TEXT        NOT NULL,
    amount       NUMERIC     NOT NULL CHECK (amount <> 0),
    -- Copied from the posting so "balance at instant T" reads one table.
    effective_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ledger_entries_posting ON ledger_entries (posting_id);
CREATE INDEX ledger_entries_account_time ON ledger_entries (account_id, effective_at);

-- Entries must be in their account's currency.
CREATE FUNCTION ledger_entry_currency() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = NEW.account_id AND a.currency = NEW.currency) THEN
        RAISE EXCEPTION 'entry in % does not match the currency of account %', NEW.currency, NEW.account_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entry_currency BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_currency();

-- Every posting's entries sum to zero per currency, checked at commit so a posting's entries
-- can be inserted one by one inside its transaction.
CREATE FUNCTION ledger_posting_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    off RECORD;
BEGIN
    SELECT currency, sum(amount) AS total INTO off
      FROM ledger_entries WHERE posting_id = NEW.posting_id
     GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting % does not balance in %: entries sum to %', NEW.posting_id, off.currency, off.total;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_balanced();

-- The maintained balance moves with every statement's entries, one update per account.
CREATE FUNCTION ledger_apply_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_accounts a SET balance = a.balance + s.total
      FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) s
     WHERE a.id = s.account_id;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_apply_entries AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_entries();

-- Append-only.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused (post a reversal instead)', TG_TABLE_NAME, TG_OP;
END $$;
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- P100's transactions as observed, keyed by P100's id within the history they came from.
CREATE TABLE provider_transactions (
    id               BIGSERIAL   PRIMARY KEY,
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    provider_tx_id   TEXT        NOT NULL,
    kind             TEXT        NOT NULL,
    status           TEXT        NOT NULL,
    currency         TEXT        NOT NULL,
    amount           NUMERIC     NOT NULL,
    fee              NUMERIC     NOT NULL DEFAULT 0,
    reference        TEXT,
    exchange_id      TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    payload          JSONB       NOT NULL,
    payload_hash     TEXT        NOT NULL,
    -- What the ledger holds for this transaction: nothing, its posting, or its reversal.
    ledger_state     TEXT        NOT NULL DEFAULT 'none' CHECK (ledger_state IN ('none', 'posted', 'reversed')),
    -- unknown_type, unknown_status, payload_changed: kept and flagged, never dropped.
    flags            TEXT[]      NOT NULL DEFAULT '{}',
    first_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL)),
    UNIQUE NULLS NOT DISTINCT (owner_kind, external_user_id, provider_tx_id)
);
CREATE INDEX provider_transactions_reference ON provider_transactions (reference);

-- Every distinct version of a transaction we observed, once.
CREATE TABLE provider_transaction_events (
    id                      BIGSERIAL   PRIMARY KEY,
    provider_transaction_id BIGINT      NOT NULL REFERENCES provider_transactions (id),
    change                  TEXT        NOT NULL CHECK (change IN ('new', 'status_change', 'payload_change')),
    status                  TEXT        NOT NULL,
    payload_hash            TEXT        NOT NULL,
    payload                 JSONB       NOT NULL,
    provider_updated_at     TIMESTAMPTZ NOT NULL,
    observed_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider_transaction_id, payload_hash)
);

-- How far each history has been read: the latest `updatedAt` committed.
CREATE TABLE sync_cursors (
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    cursor_at        TIMESTAMPTZ NOT NULL,
    synced_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner_kind, external_user_id)
);
