-- Replay under the recorded rules: each runtime start records, with the configuration
-- in force from its first journal sequence number on, the core's rules version and
-- the crate version. Starts recorded before this migration ran version 1 (the first).
ALTER TABLE runtime_starts
    ADD COLUMN core_version  INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN crate_version TEXT    NOT NULL DEFAULT '';

-- Snapshots of the core's whole state (`payperplay_core::snapshot`): `seq` is the first
-- journal sequence number NOT in it, where a replay from it resumes. `state` is the
-- JSON envelope (format and core versions, the state); the versions are copied into
-- columns so recovery can choose without parsing it.
CREATE TABLE core_snapshots (
    seq             BIGINT  PRIMARY KEY,
    taken_at_ms     BIGINT  NOT NULL,
    format_version  INTEGER NOT NULL,
    core_version    INTEGER NOT NULL,
    crate_version   TEXT    NOT NULL,
    state           BYTEA   NOT NULL,
    -- the leadership epoch it was written under
    epoch           BIGINT,
    CONSTRAINT core_snapshots_seq_check CHECK (seq > 0)
);
