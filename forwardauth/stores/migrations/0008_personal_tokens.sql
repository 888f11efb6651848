-- Personal access tokens (issue 17): a user's named, scoped tokens for scripts, git and WebDAV.
-- Only a SHA-256 of the token is kept. This table is the truth; Redis holds a record of each live
-- token for /auth, written again from here by `forwardauth token sync` after Redis lost data.
CREATE TABLE personal_tokens (
    id           text PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    scopes       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    last_used_at timestamptz,
    last_used_ip text,
    -- The addresses it was used from (the latest few), so a use from a new one is audited once.
    known_ips    text[] NOT NULL DEFAULT '{}',
    revoked_at   timestamptz,
    revoke_reason text,
    CHECK (expires_at > created_at)
);
-- A name is unique among a user's unrevoked tokens (a revoked one's name may be used again).
CREATE UNIQUE INDEX personal_tokens_name ON personal_tokens (user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX personal_tokens_user ON personal_tokens (user_id);
CREATE INDEX personal_tokens_live ON personal_tokens (expires_at) WHERE revoked_at IS NULL;
