-- Many owners at once (issue 10).
--
-- 1. No hot rows. Every posting has a counter-account side (`external`, `p100_fees`, … one row
--    per currency) shared by every owner. Maintaining a balance on those rows made each of
--    them a lock that every writer queued behind, and with foreign-key KEY SHARE locks taken
--    before the trigger's FOR UPDATE, a deadlock. Now only the accounts that belong to one
--    owner (its mirror and hold accounts) carry a maintained balance; a counter-account's
--    balance is the sum of its entries, computed when read (`balances::counter`). KEY SHARE
--    locks never conflict with each other, so writers of different owners never wait.
--    Writers of one owner are serialised by a transaction-scoped advisory lock taken first
--    in every transaction that writes for that owner (`ledger::owner_lock`).
ALTER TABLE ledger_accounts ALTER COLUMN balance DROP NOT NULL;
UPDATE ledger_accounts SET balance = NULL
 WHERE owner_kind NOT IN ('partner', 'user', 'partner_hold', 'user_hold');
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_balance_maintained_per_owner
    CHECK ((balance IS NOT NULL) = (owner_kind IN ('partner', 'user', 'partner_hold', 'user_hold')));

-- The column's default (0) is right for owner accounts; a counter-account gets none.
CREATE OR REPLACE FUNCTION ledger_account_default_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_kind NOT IN ('partner', 'user', 'partner_hold', 'user_hold') THEN
        NEW.balance := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_account_default_balance BEFORE INSERT ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_account_default_balance();

-- One owner's accounts, in id order (the caller holds that owner's advisory lock, so nobody
-- else waits on these rows).
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ledger_accounts
      WHERE id IN (SELECT DISTINCT account_id FROM new_entries) AND balance IS NOT NULL
      ORDER BY id FOR UPDATE;
    UPDATE ledger_accounts a SET balance = a.balance + s.total
      FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) s
     WHERE a.id = s.account_id AND a.balance IS NOT NULL;
    RETURN NULL;
END $$;

-- 2. Exact reversals. What was posted for a history row is recorded with it: the key of the
--    posting that stands for it, and the amount, fee and currency that posting holds. A
--    reversal undoes exactly that posting; a correction is a reversal plus a new posting.
--    A posting stands for at most one row, ever.
ALTER TABLE provider_transactions
    ADD COLUMN posting_key     TEXT,
    ADD COLUMN posted_amount   NUMERIC,
    ADD COLUMN posted_fee      NUMERIC,
    ADD COLUMN posted_currency TEXT;
CREATE UNIQUE INDEX provider_transactions_posting_key ON provider_transactions (posting_key)
    WHERE posting_key IS NOT NULL;

-- Rows already posted (or posted and reversed) are linked to the posting written for them under
-- the rule of the time (exchange legs by lock and side, SEPA rows by transferId, everything
-- else by P100's id; `:repost` after a re-completion), with the figures that posting really
-- holds, read from its entries (not from the row, whose amount may have changed since).
-- A posted row is linked only to a posting not reversed; where two rows shared one key, the
-- row whose P100 id the posting carries wins, else the oldest row. Posted rows left without a
-- posting are set back to unposted and flagged `shared_posting`; rows whose posting holds other
-- figures than their current version are flagged `posted_figures_differ`. Reconciliation shows
-- both instead of hiding them.
WITH keyed AS (
    SELECT id, provider_tx_id, ledger_state, CASE
        WHEN kind = 'EXCHANGE' AND reference IS NOT NULL THEN
            'exchange:' || CASE WHEN owner_kind = 'partner' THEN 'partner' ELSE 'user:' || external_user_id END
            || ':' || reference || ':' || CASE WHEN amount < 0 THEN 'from' ELSE 'to' END
        WHEN kind = 'SEPA_TRANSFER' AND reference IS NOT NULL THEN
            'sepa:' || CASE WHEN owner_kind = 'partner' THEN 'partner' ELSE 'user:' || external_user_id END
            || ':' || reference
        ELSE
            'p100:' || CASE WHEN owner_kind = 'partner' THEN 'partner' ELSE 'user:' || external_user_id END
            || ':' || provider_tx_id
        END || CASE WHEN 'reposted' = ANY(flags) THEN ':repost' ELSE '' END AS key
      FROM provider_transactions WHERE ledger_state IN ('posted', 'reversed')
), candidates AS (
    SELECT k.id, k.key, p.id AS posting_id,
           (p.provider_tx_id IS NOT DISTINCT FROM k.provider_tx_id) AS own
      FROM keyed k
      JOIN ledger_postings p ON p.idempotency_key = k.key
     WHERE k.ledger_state = 'reversed'
        OR NOT EXISTS (SELECT 1 FROM ledger_postings r WHERE r.reverses = p.id)
), chosen AS (
    SELECT DISTINCT ON (c.key) c.id, c.key, c.posting_id
      FROM candidates c
     ORDER BY c.key, c.own DESC, c.id
), figures AS (
    SELECT c.id, c.key,
           COALESCE(sum(e.amount) FILTER (WHERE a.owner_kind IN ('partner', 'user', 'p100_fees')), 0) AS amount,
           COALESCE(sum(e.amount) FILTER (WHERE a.owner_kind = 'p100_fees'), 0) AS fee,
           min(a.currency) FILTER (WHERE a.owner_kind IN ('partner', 'user')) AS currency
      FROM chosen c
      JOIN ledger_entries e ON e.posting_id = c.posting_id
      JOIN ledger_accounts a ON a.id = e.account_id
     GROUP BY c.id, c.key
)
UPDATE provider_transactions t SET
    posting_key = f.key, posted_amount = f.amount, posted_fee = f.fee, posted_currency = f.currency,
    flags = CASE WHEN (t.amount, t.fee, t.currency) IS DISTINCT FROM (f.amount, f.fee, f.currency)
                      AND NOT 'posted_figures_differ' = ANY(t.flags)
                 THEN t.flags || '{posted_figures_differ}'::text[] ELSE t.flags END
  FROM figures f WHERE t.id = f.id AND f.currency IS NOT NULL;
UPDATE provider_transactions SET
    ledger_state = 'none',
    flags = CASE WHEN 'shared_posting' = ANY(flags) THEN flags ELSE flags || '{shared_posting}'::text[] END
 WHERE ledger_state = 'posted' AND posting_key IS NULL;

-- 3. A history row that could not be decoded is kept as P100 sent it and flagged; the rest of
--    its page and of the history go on.
CREATE TABLE provider_transactions_undecodable (
    id               BIGSERIAL   PRIMARY KEY,
    owner_kind       TEXT        NOT NULL CHECK (owner_kind IN ('partner', 'user')),
    external_user_id TEXT,
    -- P100's id when the row had a readable one.
    provider_tx_id   TEXT,
    payload          JSONB       NOT NULL,
    payload_hash     TEXT        NOT NULL,
    error            TEXT        NOT NULL,
    first_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((owner_kind = 'user') = (external_user_id IS NOT NULL)),
    UNIQUE NULLS NOT DISTINCT (owner_kind, external_user_id, payload_hash)
);
