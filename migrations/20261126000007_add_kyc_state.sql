-- KYC as P100 reports it, per tracked user, and every change of it with its time.
ALTER TABLE tracked_users
    ADD COLUMN kyc_status           TEXT,
    ADD COLUMN kyc_attempt_status   TEXT,
    ADD COLUMN kyc_rejection_reason TEXT,
    ADD COLUMN kyc_checked_at       TIMESTAMPTZ,
    -- Polls in a row that found the verification still in progress (drives the growing delay).
    ADD COLUMN kyc_pending_polls    INT     NOT NULL DEFAULT 0,
    -- P100 answered P412 for this user.
    ADD COLUMN unknown_at_p100      BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE kyc_checks (
    id                 BIGSERIAL   PRIMARY KEY,
    external_user_id   TEXT        NOT NULL REFERENCES tracked_users (external_user_id),
    -- NO_VERIFICATION (P445) and UNKNOWN_USER (P412) stand for P100's error answers.
    status             TEXT        NOT NULL,
    attempt_status     TEXT,
    rejection_reason   TEXT,
    p100_request_id    TEXT,
    checked_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX kyc_checks_user ON kyc_checks (external_user_id, checked_at);
