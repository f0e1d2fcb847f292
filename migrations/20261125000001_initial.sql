-- PayPerPlay initial schema.
--
-- Conventions: ids are BIGINT (the core's ids are u64 and fit i64); business
-- timestamps are milliseconds UTC in BIGINT columns ending in `_at_ms` and are always
-- written by the shell from its one clock (no DEFAULT now()); money is BIGINT micros
-- (1 EUR = 1_000_000); RAM is MiB.

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    -- stored lower-cased and trimmed
    email           TEXT    NOT NULL,
    email_verified  BOOLEAN NOT NULL,
    -- argon2id PHC string
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    -- mirror of the sum of the user's ledger entries, updated in the same
    -- transaction as each entry
    balance_micros  BIGINT  NOT NULL,
    created_at_ms   BIGINT  NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_role_check CHECK (role IN ('user', 'admin'))
);

-- One-time email verification tokens; only the SHA-256 of the token is stored.
CREATE TABLE email_verifications (
    token_hash      BYTEA  PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT
);
CREATE INDEX email_verifications_user_idx ON email_verifications (user_id);

-- Login sessions; only the SHA-256 of the 256-bit token is stored.
CREATE TABLE sessions (
    token_hash      BYTEA  PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- Long-lived API tokens; only the SHA-256 of the 256-bit token is stored.
CREATE TABLE api_tokens (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT   NOT NULL,
    token_hash      BYTEA  NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT,
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- Minecraft servers. Every server has an owner; there is no default owner.
-- A deleted server keeps its row (ledger entries refer to it) with deleted_at_ms set
-- and never appears in a user's listing.
CREATE TABLE servers (
    id              BIGSERIAL PRIMARY KEY,
    owner_id        BIGINT  NOT NULL REFERENCES users (id),
    name            TEXT    NOT NULL,
    ram_mib         INTEGER NOT NULL,
    created_at_ms   BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL,
    deleted_at_ms   BIGINT,
    CONSTRAINT servers_ram_mib_check CHECK (ram_mib > 0)
);
CREATE UNIQUE INDEX servers_owner_name_key ON servers (owner_id, name) WHERE deleted_at_ms IS NULL;
CREATE INDEX servers_owner_idx ON servers (owner_id) WHERE deleted_at_ms IS NULL;

-- Machines of the fleet as the shell last saw them (the core is authoritative; this
-- table is for operators and for reconciling with providers by label).
CREATE TABLE nodes (
    id              BIGINT  PRIMARY KEY,      -- the core's NodeId
    kind            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    -- set explicitly for machines that also run the platform; never inferred
    is_system       BOOLEAN NOT NULL,
    provider_ref    TEXT,
    state           TEXT    NOT NULL,
    created_at_ms   BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL,
    CONSTRAINT nodes_kind_check CHECK (kind IN ('dedicated', 'cloud'))
);

-- The input journal: every core input with the time it was handled at and its
-- sequence number, appended before the core handles it. Replaying it rebuilds the
-- core's state; the simulator replays it as a recorded workload.
CREATE TABLE journal (
    seq             BIGINT PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    input           JSONB  NOT NULL,
    CONSTRAINT journal_seq_check CHECK (seq > 0)
);

-- The core configuration each runtime start used, with the first journal sequence
-- number handled under it, so a replay (here or in the simulator) uses the same one.
CREATE TABLE runtime_starts (
    id              BIGSERIAL PRIMARY KEY,
    started_at_ms   BIGINT NOT NULL,
    first_seq       BIGINT NOT NULL,
    core_config     JSONB  NOT NULL
);

-- Every command the core issued, with its status: the id is the idempotency key.
CREATE TABLE commands (
    id              BIGINT PRIMARY KEY,       -- the core's CommandId
    kind            TEXT   NOT NULL,
    command         JSONB  NOT NULL,
    status          TEXT   NOT NULL,
    attempts        INTEGER NOT NULL,
    issued_at_ms    BIGINT NOT NULL,
    finished_at_ms  BIGINT,
    error           TEXT,
    CONSTRAINT commands_status_check CHECK (status IN ('pending', 'succeeded', 'failed'))
);
CREATE INDEX commands_pending_idx ON commands (id) WHERE status = 'pending';

-- Ledger: every change of a balance. users.balance_micros equals the sum of a user's
-- entries. command_id makes posting a core command idempotent.
CREATE TABLE ledger_entries (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    server_id       BIGINT REFERENCES servers (id),
    command_id      BIGINT,
    kind            TEXT   NOT NULL,
    amount_micros   BIGINT NOT NULL,
    from_at_ms      BIGINT NOT NULL,
    to_at_ms        BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    CONSTRAINT ledger_entries_command_id_key UNIQUE (command_id),
    CONSTRAINT ledger_entries_kind_check CHECK (kind IN ('top_up', 'ram_time', 'storage', 'archive_storage')),
    CONSTRAINT ledger_entries_period_check CHECK (to_at_ms >= from_at_ms)
);
CREATE INDEX ledger_entries_user_idx ON ledger_entries (user_id, id);

-- Usage per server: one row per settled accrual period (RAM time, storage), written
-- with its ledger entry.
CREATE TABLE usage (
    ledger_entry_id BIGINT  PRIMARY KEY REFERENCES ledger_entries (id),
    server_id       BIGINT  NOT NULL REFERENCES servers (id),
    user_id         BIGINT  NOT NULL REFERENCES users (id),
    kind            TEXT    NOT NULL,
    ram_mib         INTEGER NOT NULL,
    duration_ms     BIGINT  NOT NULL,
    amount_micros   BIGINT  NOT NULL,
    from_at_ms      BIGINT  NOT NULL,
    to_at_ms        BIGINT  NOT NULL
);
CREATE INDEX usage_server_idx ON usage (server_id);
CREATE INDEX usage_user_idx ON usage (user_id);

-- Outgoing mail. The mailer sends pending rows with retries and backoff.
-- command_id makes a core SendEmail command idempotent.
CREATE TABLE email_outbox (
    id                  BIGSERIAL PRIMARY KEY,
    user_id             BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    command_id          BIGINT,
    kind                TEXT    NOT NULL,
    recipient           TEXT    NOT NULL,
    subject             TEXT    NOT NULL,
    body                TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    attempts            INTEGER NOT NULL,
    next_attempt_at_ms  BIGINT  NOT NULL,
    created_at_ms       BIGINT  NOT NULL,
    sent_at_ms          BIGINT,
    last_error          TEXT,
    CONSTRAINT email_outbox_command_id_key UNIQUE (command_id),
    CONSTRAINT email_outbox_status_check CHECK (status IN ('pending', 'sent', 'failed'))
);
CREATE INDEX email_outbox_pending_idx ON email_outbox (next_attempt_at_ms) WHERE status = 'pending';
