-- Idempotency keys: the first answer to a POST sent with an `Idempotency-Key` header.
-- The same key with the same request (method, path, body) gets that answer again; with
-- another request it is a 422. `scope` is the SHA-256 of the Authorization header (or
-- 'anonymous'), so one client's keys never answer another's requests. status and
-- response are NULL while the first request is handled.
CREATE TABLE idempotency_keys (
    scope           TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    request_sha256  BYTEA   NOT NULL,
    status          INTEGER,
    response        BYTEA,
    claimed_at_ms   BIGINT  NOT NULL,
    answered_at_ms  BIGINT,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_claimed_idx ON idempotency_keys (claimed_at_ms);
