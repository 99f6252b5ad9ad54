-- Operator console sessions (SPEC §11), shared by every replica so a load balancer may send a
-- signed-in operator to any of them. The cookie carries a random id; only its SHA-256 is kept,
-- so a copy of this table signs nobody in. The role is checked against CONSOLE_TOKENS_FILE on
-- every request as well: removing a name from the file ends its sessions.
CREATE TABLE console_sessions (
    id_hash    BYTEA       PRIMARY KEY CHECK (length(id_hash) = 32),
    name       TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role       TEXT        NOT NULL CHECK (role IN ('viewer', 'operator')),
    csrf       TEXT        NOT NULL CHECK (length(csrf) >= 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
