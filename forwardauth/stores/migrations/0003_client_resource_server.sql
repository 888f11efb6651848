-- A resource server may introspect access tokens issued to any client (RFC 7662 2.1 lets the
-- server decide who may introspect what); every other client only its own tokens.
ALTER TABLE clients ADD COLUMN resource_server boolean NOT NULL DEFAULT false;

-- Disabling a client revokes its refresh tokens: find them without a scan.
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_id) WHERE revoked_at IS NULL;
