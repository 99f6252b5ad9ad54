-- One P100 request budget for the whole deployment (SPEC §2.2): every process that calls P100
-- is a member while it beats; the live members split P100_MAX_RPS among themselves.
CREATE TABLE p100_budget_members (
    id          TEXT        PRIMARY KEY,
    host        TEXT        NOT NULL,
    pid         INT         NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at  TIMESTAMPTZ
);

-- A 429's Retry-After seen by any member pauses every member: one row, the latest end.
CREATE TABLE p100_budget_pause (
    singleton    BOOLEAN     PRIMARY KEY DEFAULT true CHECK (singleton),
    paused_until TIMESTAMPTZ NOT NULL,
    set_by       TEXT        NOT NULL
);
