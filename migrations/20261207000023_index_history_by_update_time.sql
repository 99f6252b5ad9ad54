-- The daily check of a history counts an owner's rows per hour of `updated_at` (tx_sync's
-- check_day); without this index each count scans every row of the owner.
CREATE INDEX provider_transactions_owner_updated
    ON provider_transactions (owner_kind, (COALESCE(external_user_id, '')), updated_at);
