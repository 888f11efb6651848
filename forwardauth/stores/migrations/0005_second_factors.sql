-- Second factors (issue 14): how each login session was authenticated, TOTP secrets (sealed),
-- passkeys and recovery codes.

-- What a session's tokens claim (amr, auth_time), copied to each rotation's successor. A session
-- opened before this migration was opened with a password when its family began.
ALTER TABLE refresh_tokens
    ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}' CHECK (cardinality(amr) > 0),
    ADD COLUMN auth_time timestamptz NOT NULL DEFAULT now();
UPDATE refresh_tokens AS r SET auth_time = f.first_created
    FROM (SELECT family_id, min(created_at) AS first_created FROM refresh_tokens GROUP BY family_id) AS f
    WHERE r.family_id = f.family_id;

-- One TOTP secret per user, AES-GCM sealed (forwardauth.sealing: key id, nonce, ciphertext; the
-- user's id is the associated data) with a key kept in files beside the signing keys, so a copy
-- of the database alone holds no usable secret. ``secret`` is the confirmed one (in use);
-- ``pending`` one being enrolled, until a code from it is confirmed.
CREATE TABLE totp_secrets (
    user_id      uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       bytea,
    pending      bytea,
    confirmed_at timestamptz,
    pending_at   timestamptz,
    CHECK (secret IS NOT NULL OR pending IS NOT NULL)
);

-- WebAuthn credentials (passkeys): several per user. The sign counter and the backup flags are
-- those of the last successful use.
CREATE TABLE passkeys (
    credential_id   bytea PRIMARY KEY CHECK (length(credential_id) BETWEEN 1 AND 1023),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    public_key      bytea NOT NULL,
    sign_count      bigint NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    transports      text[] NOT NULL DEFAULT '{}',
    backup_eligible boolean NOT NULL DEFAULT false,
    backed_up       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- Single-use recovery codes: only a SHA-256 of each (80 random bits: a fast hash suffices).
CREATE TABLE recovery_codes (
    id         bigserial PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    UNIQUE (user_id, code_hash)
);
