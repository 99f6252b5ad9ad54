-- One P100 request budget for the whole deployment (SPEC §2.2): every process that calls P100
-- is a member while it beats. `cap` is the rate a member may be sending; the caps of the
-- members (a silent one counted at its reserve) never sum past P100_MAX_RPS, because a member
-- raises its cap only in a beat that checks the others' (beats are serialised) and lowers its
-- own rate before it lowers its cap.
CREATE TABLE p100_budget_members (
    id          TEXT        PRIMARY KEY,
    host        TEXT        NOT NULL,
    pid         INT         NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at  TIMESTAMPTZ,
    cap         INT         NOT NULL DEFAULT 0 CHECK (cap >= 0),
    -- Requests waited for a slot since the member's previous beat: it wants more.
    busy        BOOLEAN     NOT NULL DEFAULT true,
    -- Requests per second it sent since its previous beat.
    used        REAL        NOT NULL DEFAULT 0
);

-- A 429's Retry-After seen by any member pauses every member: one row, the latest end.
CREATE TABLE p100_budget_pause (
    singleton    BOOLEAN     PRIMARY KEY DEFAULT true CHECK (singleton),
    paused_until TIMESTAMPTZ NOT NULL,
    set_by       TEXT        NOT NULL
);
