-- Accounts people can trust (issue 18).

-- Every admin grant and revocation: who did it (the operator running
-- `payperplay admin`), when, to which account. Rows are never updated or deleted.
CREATE TABLE admin_audit (
    id              BIGSERIAL PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    actor           TEXT   NOT NULL,
    action          TEXT   NOT NULL,
    user_id         BIGINT REFERENCES users (id) ON DELETE SET NULL,
    email           TEXT   NOT NULL,
    CONSTRAINT admin_audit_action_check CHECK (action IN ('grant_admin', 'revoke_admin'))
);

-- Single-use password reset tokens mailed to the address; only the SHA-256 of the
-- token is stored.
CREATE TABLE password_resets (
    token_hash      BYTEA  PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id);

-- API tokens end and say what they may do. Tokens made before this migration keep
-- every scope and expire 90 days after they were made.
ALTER TABLE api_tokens ADD COLUMN expires_at_ms BIGINT;
ALTER TABLE api_tokens ADD COLUMN scopes TEXT[] NOT NULL DEFAULT '{read,servers,billing}';
UPDATE api_tokens SET expires_at_ms = created_at_ms + 7776000000;
ALTER TABLE api_tokens ALTER COLUMN expires_at_ms SET NOT NULL;
ALTER TABLE api_tokens ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scopes_check
    CHECK (scopes <@ ARRAY['read', 'servers', 'billing']::TEXT[] AND cardinality(scopes) > 0);

-- OAuth sign-in in progress: the state sent to the provider (its SHA-256), the PKCE
-- verifier, and the account to link to, if any. Single use (deleted when the
-- provider's answer comes back) and short-lived.
CREATE TABLE oauth_states (
    state_hash      BYTEA  PRIMARY KEY,
    provider        TEXT   NOT NULL,
    pkce_verifier   TEXT   NOT NULL,
    link_user_id    BIGINT REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at_ms);

-- An account's identity at an OAuth provider. The provider's tokens are sealed with
-- AES-256-GCM (payperplay_nodes::SecretBox: "v1:KEY_ID:NONCE_HEX:CIPHERTEXT_HEX", the
-- row id as associated data); key_id names the sealing key so `payperplay keys rotate`
-- finds the rows to re-seal.
CREATE TABLE oauth_identities (
    id                    BIGSERIAL PRIMARY KEY,
    user_id               BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider              TEXT    NOT NULL,
    subject               TEXT    NOT NULL,
    email                 TEXT    NOT NULL,
    key_id                BIGINT  NOT NULL,
    access_token_sealed   TEXT    NOT NULL,
    refresh_token_sealed  TEXT,
    created_at_ms         BIGINT  NOT NULL,
    updated_at_ms         BIGINT  NOT NULL,
    CONSTRAINT oauth_identities_provider_subject_key UNIQUE (provider, subject)
);
CREATE INDEX oauth_identities_user_idx ON oauth_identities (user_id);
