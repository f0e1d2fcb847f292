-- Fencing: one leadership row whose epoch a runtime bumps when it takes the journal
-- lock. Every journal, command, ledger and outbox write of the runtime checks, in its
-- own transaction, that the epoch is still the one it took (SELECT ... FOR SHARE): a
-- runtime that lost its lock to another cannot write any more.
CREATE TABLE leadership (
    singleton       BOOLEAN PRIMARY KEY DEFAULT TRUE,
    epoch           BIGINT  NOT NULL,
    -- who took it last and when (for operators)
    holder          TEXT    NOT NULL,
    taken_at_ms     BIGINT  NOT NULL,
    CONSTRAINT leadership_singleton_check CHECK (singleton)
);
INSERT INTO leadership (singleton, epoch, holder, taken_at_ms) VALUES (TRUE, 0, 'nobody', 0);

-- The epoch each journal row was written under (NULL for rows written before fencing).
ALTER TABLE journal ADD COLUMN epoch BIGINT;

-- Quarantine: inputs that made the core panic, with the panic's message. Replay skips
-- them (with an alarm) instead of panicking again on every start.
CREATE TABLE quarantine (
    seq             BIGINT PRIMARY KEY REFERENCES journal (seq),
    error           TEXT   NOT NULL,
    quarantined_at_ms BIGINT NOT NULL
);

-- The RAM a ledger command bills (the server's tier when the core settled it), so the
-- usage row written with the entry carries the RAM billed, not the server's RAM at the
-- time the entry happens to be posted.
ALTER TABLE commands ADD COLUMN ram_mib_billed INTEGER;
