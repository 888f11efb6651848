-- OpenID Connect provider (issue 15): what a client registers for the authorization code flow,
-- the sessions opened for OIDC clients from a browser session, and the consents users gave.

-- redirect_uris: where authorization responses may go (exact match); post_logout_redirect_uris:
-- where RP-initiated logout may send the browser back; trusted: first-party, no consent page;
-- backchannel_logout_uri: told (OpenID Connect Back-Channel Logout 1.0) when a session ends.
ALTER TABLE clients
    ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}',
    ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
    ADD COLUMN trusted boolean NOT NULL DEFAULT false,
    ADD COLUMN backchannel_logout_uri text;

-- An OIDC client's session (its own refresh-token family) opened from a browser session: ended
-- with it (logout, password change...). NULL for every other session.
ALTER TABLE refresh_tokens ADD COLUMN parent_sid text;
CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_sid) WHERE parent_sid IS NOT NULL;

-- The scopes a user let a client have, remembered so the consent page is shown once; revocable.
CREATE TABLE consents (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scopes     text[] NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);
