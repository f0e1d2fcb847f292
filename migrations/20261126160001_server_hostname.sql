-- A server's custom hostname (players type it instead of <label>.<domain>): lowercase,
-- no trailing dot, a DNS name; unique among live servers.
ALTER TABLE servers ADD COLUMN hostname TEXT;
CREATE UNIQUE INDEX servers_hostname_key ON servers (hostname) WHERE deleted_at_ms IS NULL;
