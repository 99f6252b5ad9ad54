-- P100's webhooks (issue 14, SPEC §10): the durable inbox. A delivery is stored before it is
-- answered 200; a webhook is only a hint (P100 signs nothing and sends no event id), so what
-- it leads to is recorded here too: the polling job it brought forward and when that job's
-- run confirmed it.
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL   PRIMARY KEY,
    route            TEXT        NOT NULL CHECK (length(route) BETWEEN 1 AND 40),
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A repeated delivery (same route, same JSON, within the repeat window) counts here
    -- instead of adding a row.
    last_received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deliveries       INT         NOT NULL DEFAULT 1 CHECK (deliveries >= 1),
    state            TEXT        NOT NULL CHECK (state IN ('accepted', 'rejected', 'ignored')),
    reason           TEXT        CHECK (length(reason) <= 1000),
    entity_id        TEXT        CHECK (length(entity_id) <= 200),
    external_user_id TEXT        CHECK (length(external_user_id) <= 200),
    status           TEXT        CHECK (length(status) <= 401),
    -- The body as received (at most 64 KiB; of a longer one, its first 4 KiB).
    body             TEXT        NOT NULL CHECK (length(body) <= 65536),
    body_bytes       INT         NOT NULL,
    -- sha256 of the route and the body's canonical JSON: what a repeat is recognised by.
    fingerprint      BYTEA       NOT NULL,
    acted_at         TIMESTAMPTZ,
    effect           TEXT,
    job_id           BIGINT,
    -- The job's `runs` count once the run that answers this delivery has ended.
    job_runs         INT,
    confirmed_at     TIMESTAMPTZ,
    -- A rejected delivery says why; any other names its entity.
    CHECK (state <> 'rejected' OR reason IS NOT NULL),
    CHECK (state = 'rejected' OR entity_id IS NOT NULL)
);

CREATE INDEX webhook_deliveries_by_fingerprint ON webhook_deliveries (fingerprint, received_at);
CREATE INDEX webhook_deliveries_by_entity ON webhook_deliveries (entity_id, route, id);
CREATE INDEX webhook_deliveries_to_act ON webhook_deliveries (id)
    WHERE state = 'accepted' AND acted_at IS NULL;
CREATE INDEX webhook_deliveries_to_confirm ON webhook_deliveries (id)
    WHERE job_id IS NOT NULL AND confirmed_at IS NULL;

-- Stores one delivery, or counts it on the row of the same delivery received within
-- `repeat_window` (P100 retries for about two minutes), unless a newer delivery on the route
-- has named the same entity since (then the same body again is a new event: PENDING,
-- REJECTED, PENDING again). One round trip and one commit per delivery; the advisory lock
-- (class 0x5748) serialises only identical deliveries.
CREATE FUNCTION p100_recon_receive_webhook(
    p_route TEXT, p_state TEXT, p_reason TEXT, p_entity_id TEXT, p_external_user_id TEXT,
    p_status TEXT, p_body TEXT, p_body_bytes INT, p_canonical BYTEA, p_repeat_window INTERVAL
) RETURNS TABLE (delivery_id BIGINT, repeated BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    v_fingerprint BYTEA := sha256(convert_to(p_route, 'UTF8') || '\x0a'::bytea || p_canonical);
    v_id BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(22344, hashtext(encode(v_fingerprint, 'hex')));
    UPDATE webhook_deliveries d
       SET deliveries = d.deliveries + 1, last_received_at = clock_timestamp()
     WHERE d.id = (SELECT max(w.id) FROM webhook_deliveries w
                    WHERE w.fingerprint = v_fingerprint
                      AND w.received_at > clock_timestamp() - p_repeat_window)
       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries n
                        WHERE n.entity_id = p_entity_id AND n.route = p_route AND n.id > d.id)
    RETURNING d.id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN QUERY SELECT v_id, TRUE;
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries
           (route, state, reason, entity_id, external_user_id, status, body, body_bytes, fingerprint,
            received_at, last_received_at)
    VALUES (p_route, p_state, p_reason, p_entity_id, p_external_user_id, p_status, p_body,
            p_body_bytes, v_fingerprint, clock_timestamp(), clock_timestamp())
    RETURNING id INTO v_id;
    RETURN QUERY SELECT v_id, FALSE;
END
$$;
