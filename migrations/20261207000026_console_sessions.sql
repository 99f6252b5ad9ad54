-- Operator console sessions (SPEC §11), shared by every replica so a load balancer may send a
-- signed-in operator to any of them. The cookie carries a random id; only its SHA-256 is kept
-- (hashed by the daemon, so the id never reaches Postgres or its logs), and a copy of this
-- table signs nobody in. `token` fingerprints the line of CONSOLE_TOKENS_FILE the session
-- signed in with: after a token is changed or a name removed, its sessions no longer count.
-- The role is read from the file on every request, never from here.
CREATE TABLE console_sessions (
    id_hash    BYTEA       PRIMARY KEY CHECK (length(id_hash) = 32),
    name       TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token      BYTEA       NOT NULL CHECK (length(token) = 32),
    csrf       TEXT        NOT NULL CHECK (length(csrf) >= 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
