-- Cursors are read by owner through COALESCE (as accounts and transactions are), which the
-- unique constraint's index cannot serve: at 10,000 owners each sync's cursor read scanned
-- every cursor (1.7 ms a read in `bench cycle`).
CREATE INDEX sync_cursors_owner_lookup ON sync_cursors (owner_kind, (COALESCE(external_user_id, '')));

-- A local operation's posting is adoptable only while not reversed: the check looks postings
-- up by what they reverse.
CREATE INDEX ledger_postings_reverses ON ledger_postings (reverses) WHERE reverses IS NOT NULL;
