-- Hostile input (issue 12): the bounds the code checks on every way in are also the tables'.
--
-- 1. Amounts: below 10^15 in absolute value (p100::amount::MAX_ABS_AMOUNT), at most 8 decimals
--    for what a person or the partner's application enters. Sums of such amounts cannot
--    overflow a Decimal, so no reconciliation can be broken for good by one row.
-- 2. externalUserId: 1 to 200 characters, no control characters, no surrounding whitespace,
--    not "." or ".." (ledger::owner::check_external_user_id); transferId and lockId without
--    control characters; an exchange's expiry a date between 2000 and 9999.
--
-- NOT VALID: rows stored before are not re-checked here (a deployment holding such a row
-- must not fail to start); every new or updated row is.

-- Exactly Rust's rules, spelled out rather than left to the locale: control characters are
-- Unicode's Cc (char::is_control), whitespace is Unicode's White_Space (char::is_whitespace).
CREATE FUNCTION p100_recon_has_control(t TEXT) RETURNS BOOLEAN
    LANGUAGE sql IMMUTABLE STRICT
    RETURN t ~ '[\u0001-\u001f\u007f-\u009f]';

CREATE FUNCTION p100_recon_valid_user_id(id TEXT) RETURNS BOOLEAN
    LANGUAGE sql IMMUTABLE STRICT
    RETURN length(id) BETWEEN 1 AND 200
       AND NOT p100_recon_has_control(id)
       AND id !~ '^[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]'
       AND id !~ '[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$'
       AND id NOT IN ('.', '..');

ALTER TABLE tracked_users
    ADD CONSTRAINT tracked_users_valid_user_id CHECK (p100_recon_valid_user_id(external_user_id)) NOT VALID;
ALTER TABLE sepa_transfers
    ADD CONSTRAINT sepa_transfers_valid_user_id
        CHECK (external_user_id IS NULL OR p100_recon_valid_user_id(external_user_id)) NOT VALID,
    ADD CONSTRAINT sepa_transfers_bounded_amount
        CHECK (amount < 1e15 AND scale(amount) <= 8) NOT VALID,
    ADD CONSTRAINT sepa_transfers_clean_transfer_id CHECK (NOT p100_recon_has_control(transfer_id)) NOT VALID;
ALTER TABLE exchanges
    ADD CONSTRAINT exchanges_valid_user_id
        CHECK (external_user_id IS NULL OR p100_recon_valid_user_id(external_user_id)) NOT VALID,
    ADD CONSTRAINT exchanges_bounded_amount
        CHECK (amount < 1e15 AND scale(amount) <= 8) NOT VALID,
    ADD CONSTRAINT exchanges_clean_lock_id CHECK (NOT p100_recon_has_control(lock_id) AND length(lock_id) <= 200) NOT VALID,
    -- A time the code can hold ('infinity' or year 300000 would fail to decode).
    ADD CONSTRAINT exchanges_sane_expiry CHECK (expires_at BETWEEN '2000-01-01' AND '9999-12-31') NOT VALID;
ALTER TABLE provider_transactions
    ADD CONSTRAINT provider_transactions_bounded_amount
        CHECK (abs(amount) < 1e15 AND abs(fee) < 1e15) NOT VALID;
ALTER TABLE ledger_entries
    -- An entry is an amount less its fee: two bounded parts.
    ADD CONSTRAINT ledger_entries_bounded_amount CHECK (abs(amount) < 2e15) NOT VALID;
