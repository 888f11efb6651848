-- The client address that rotated a refresh token: the same client may present it once more,
-- within a few seconds, when the answer to the rotation was lost (sessions.rotate).
ALTER TABLE refresh_tokens ADD COLUMN rotated_by text;
