-- Users, refresh tokens (login sessions) and the audit trail.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- stored normalised (NFKC, case-folded) by the application
    username      text NOT NULL CHECK (length(username) BETWEEN 1 AND 128),
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{}',
    email         text,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- lower() guards case-insensitive uniqueness even for rows written by hand
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- One row per refresh token; only a SHA-256 of the token is kept. A family is one login
-- session: every rotation adds a row to it, and reuse of a rotated token revokes it all.
CREATE TABLE refresh_tokens (
    id            bigserial PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text,
    replaced_by   bigint REFERENCES refresh_tokens (id)
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

CREATE TABLE audit_events (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    event      text NOT NULL,
    user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    username   text,
    client_ip  text,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at);
