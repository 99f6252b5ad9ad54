-- Operators pause a job kind (issue 15): its workers on every replica claim nothing until it
-- is resumed. Jobs keep their place; due ones run once it is resumed.
CREATE TABLE paused_kinds (
    kind       TEXT        PRIMARY KEY CHECK (length(kind) BETWEEN 1 AND 100),
    paused_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    paused_by  TEXT        NOT NULL CHECK (length(paused_by) BETWEEN 1 AND 200),
    note       TEXT        NOT NULL CHECK (btrim(note) <> '' AND length(note) <= 2000)
);
