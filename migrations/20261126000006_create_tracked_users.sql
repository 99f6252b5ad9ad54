-- Users p100-recon follows (history, balances, and later KYC). An intake table: the partner's
-- application may insert rows here in its own transaction; `users track` does the same.
CREATE TABLE tracked_users (
    external_user_id TEXT        PRIMARY KEY CHECK (btrim(external_user_id) <> '' AND length(external_user_id) <= 200),
    source           TEXT        NOT NULL DEFAULT 'intake',
    tracked_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
