-- The last failed start of each server, for the server view: what kind of failure,
-- on which node, the message naming node and cause, and when. A start that succeeds
-- removes its server's row.
CREATE TABLE server_start_failures (
    server_id BIGINT PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CONSTRAINT server_start_failures_kind_check CHECK (
        kind IN ('unknown_image', 'engine_refused', 'disk_full', 'no_free_port', 'node_unreachable', 'engine_error', 'other')
    ),
    node TEXT NOT NULL,
    message TEXT NOT NULL,
    failed_at_ms BIGINT NOT NULL
);
