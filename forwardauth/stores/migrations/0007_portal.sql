-- The account portal and admin console: where and on what each session was opened or renewed,
-- one-time links sent by e-mail (or handed out by an administrator), and audit searches.

-- Each row: the User-Agent (at most 512 characters) of the browser or program that opened the
-- session, kept by every rotation, and the client address of that sign-in or renewal.
ALTER TABLE refresh_tokens
    ADD COLUMN user_agent text CHECK (length(user_agent) <= 512),
    ADD COLUMN client_ip text;

-- One-time links: a password reset (forgotten password), a first password (an account an
-- administrator created), an e-mail address to confirm (``email`` is the new address). Only a
-- SHA-256 of the link's secret is kept; a link is used at most once (``used_at``).
CREATE TABLE account_links (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('reset_password', 'set_password', 'verify_email')),
    email      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CHECK ((purpose = 'verify_email') = (email IS NOT NULL))
);
CREATE INDEX account_links_user ON account_links (user_id, purpose) WHERE used_at IS NULL;

-- The console's audit filters, newest first.
CREATE INDEX audit_events_username ON audit_events (lower(username), id);
CREATE INDEX audit_events_event ON audit_events (event, id);
