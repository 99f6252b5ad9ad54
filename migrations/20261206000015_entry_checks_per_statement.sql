-- The checks on ledger entries ran once per row: a BEFORE trigger looked up each entry's
-- account for its currency, and a deferred constraint trigger summed each entry's whole
-- posting at commit (a posting of three entries was summed three times). The write path
-- inserts all entries of a batch of postings in one statement, so one statement-level check
-- does the same work once: every account's currency, and every touched posting balanced per
-- currency (with any entries it had before). A posting whose entries are split over several
-- statements is refused at its first unbalanced statement instead of at commit.
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    off RECORD;
    postings BIGINT[];
BEGIN
    SELECT e.currency, e.account_id INTO off
      FROM new_entries e JOIN ledger_accounts a ON a.id = e.account_id
     WHERE a.currency <> e.currency
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry in % does not match the currency of account %', off.currency, off.account_id;
    END IF;
    -- As an array, so the lookup uses the posting index whatever the table's size (a
    -- semi-join over the transition table was planned as a scan of every entry).
    postings := ARRAY(SELECT DISTINCT posting_id FROM new_entries);
    SELECT e.posting_id, e.currency, sum(e.amount) AS total INTO off
      FROM ledger_entries e
     WHERE e.posting_id = ANY(postings)
     GROUP BY e.posting_id, e.currency
    HAVING sum(e.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting % does not balance in %: entries sum to %', off.posting_id, off.currency, off.total;
    END IF;
    -- One owner's accounts, in id order (the caller holds that owner's advisory lock).
    PERFORM 1 FROM ledger_accounts
      WHERE id IN (SELECT DISTINCT account_id FROM new_entries) AND balance IS NOT NULL
      ORDER BY id FOR UPDATE;
    UPDATE ledger_accounts a SET balance = a.balance + s.total
      FROM (SELECT account_id, sum(amount) AS total FROM new_entries GROUP BY account_id) s
     WHERE a.id = s.account_id AND a.balance IS NOT NULL;
    RETURN NULL;
END $$;

DROP TRIGGER ledger_entry_currency ON ledger_entries;
DROP TRIGGER ledger_posting_balanced ON ledger_entries;
DROP FUNCTION ledger_entry_currency();
DROP FUNCTION ledger_posting_balanced();
