-- A user with no history yet is still "synced": record when, so sweeps move on to others.
ALTER TABLE sync_cursors ALTER COLUMN cursor_at DROP NOT NULL;

-- Lock the accounts a statement's entries touch in id order before moving their balances:
-- concurrent syncs share counter-accounts, and locking them in a fixed order cannot deadlock.
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ledger_accounts
      WHERE id IN (SELECT DISTINCT account_id FROM new_entries)
      ORDER BY id FOR UPDATE;
    UPDATE ledger_accounts a SET balance = a.balance + s.total
      FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) s
     WHERE a.id = s.account_id;
    RETURN NULL;
END $$;
