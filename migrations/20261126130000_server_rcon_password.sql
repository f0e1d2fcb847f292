-- A server's RCON password, sealed with AES-256-GCM (payperplay_nodes::SecretBox:
-- "v1:KEY_ID:NONCE_HEX:CIPHERTEXT_HEX", the row id as associated data). Made at the
-- server's first start; never stored or logged in the clear.
ALTER TABLE servers ADD COLUMN rcon_password_sealed TEXT;
