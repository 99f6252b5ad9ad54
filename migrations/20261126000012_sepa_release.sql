-- A transfer P100 never showed stays followed (re-read every six hours) until a person
-- releases its hold: status RELEASED is the only one besides SUCCESSFUL and FAILED that ends
-- it. The partial index on "open" transfers matched no query; it goes.
DROP INDEX sepa_transfers_open;
COMMENT ON COLUMN sepa_transfers.status IS
    'TRACKING → P100''s status as last read → SUCCESSFUL | FAILED; MISSING_AT_PROVIDER (P428 after the grace, still re-read) → RELEASED (hold released by a person)';
