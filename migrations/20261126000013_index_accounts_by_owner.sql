-- Reconciliation looks accounts up by owner in batches, matching the partner's NULL user
-- through COALESCE (which the unique constraint's index cannot serve): without this index
-- every batch scanned every account (measured: 5.9 s per batch of 500 owners at 100k accounts).
CREATE INDEX ledger_accounts_owner_lookup ON ledger_accounts (owner_kind, (COALESCE(external_user_id, '')));
