-- Requests whose input the runtime took up (issue 17): a client told `outcome_unknown`
-- asks later with GET /v1/requests/{id}. A row is written in the same transaction as
-- the journal append of the request's input (so `seq` set means journaled), or by the
-- API when it answers `outcome_unknown` before that (no `seq`: not journaled, and it
-- never will be: an append that comes later fails on the primary key). `outcome` is
-- written once the core has handled the input; NULL while unknown.
CREATE TABLE requests (
    id              BIGINT  PRIMARY KEY,
    user_id         BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq             BIGINT,
    outcome         TEXT    CHECK (outcome IN ('carried_out', 'rejected', 'quarantined')),
    error_code      TEXT,
    error_message   TEXT,
    created_at_ms   BIGINT  NOT NULL,
    decided_at_ms   BIGINT
);
CREATE INDEX requests_user_idx ON requests (user_id);
CREATE INDEX requests_created_idx ON requests (created_at_ms);
