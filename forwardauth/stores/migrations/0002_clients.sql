-- OAuth2 clients, and which client (and scope) each refresh token was issued to.

CREATE TABLE clients (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    -- SHA-256 of a 256-bit random secret (a fast hash suffices for high-entropy secrets);
    -- NULL for a public client.
    secret_hash  bytea,
    grant_types  text[] NOT NULL,
    scopes       text[] NOT NULL DEFAULT '{}',
    roles        text[] NOT NULL DEFAULT '{}',
    disabled     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE refresh_tokens
    ADD COLUMN client_id text REFERENCES clients (id) ON DELETE CASCADE,
    ADD COLUMN scope text;

CREATE INDEX refresh_tokens_user_recent ON refresh_tokens (user_id, created_at);
