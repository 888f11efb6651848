"""Names several modules share: the Redis key layout, token types, headers.

Redis keys of one login session share the hash tag ``{sid}``, so the session's key set and its
access tokens live in one Redis Cluster slot and can be revoked together in one Lua script.
"""

from __future__ import annotations

from dataclasses import dataclass

# JWT header `typ` of access tokens (RFC 9068), checked on /auth so no other token kind passes.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)

# Response headers /auth sets on 2xx for the proxy to hand upstream. A user's token gets the
# user's name and roles; a client's own token (client_credentials) gets the client's id and roles
# under names of their own, never X-Auth-User / X-Auth-Roles: a client is never taken for a user.
HEADER_USER = "X-Auth-User"
HEADER_ROLES = "X-Auth-Roles"
HEADER_EMAIL = "X-Auth-Email"
HEADER_SUBJECT = "X-Auth-Subject"
HEADER_CLIENT = "X-Auth-Client"
HEADER_CLIENT_ROLES = "X-Auth-Client-Roles"
# How the user signed in: the token's amr, comma-separated (pwd; otp,pwd,mfa; ...). A user's token only.
HEADER_AMR = "X-Auth-AMR"
# A personal access token's scopes, space-separated (and amr "pat"). A token's only.
HEADER_SCOPES = "X-Auth-Scopes"
IDENTITY_HEADERS = (
    HEADER_USER,
    HEADER_ROLES,
    HEADER_EMAIL,
    HEADER_SUBJECT,
    HEADER_CLIENT,
    HEADER_CLIENT_ROLES,
    HEADER_AMR,
    HEADER_SCOPES,
)

# Envoy ext_authz (HTTP service) calls this prefix followed by the original path.
ENVOY_PREFIX = "/auth/envoy"

# Opaque refresh tokens: 32 random bytes, URL-safe base64 (43 characters).
REFRESH_TOKEN_BYTES = 32
# Longest token /auth will look at; anything longer is refused before parsing.
MAX_TOKEN_LENGTH = 4096
# The browser's refresh cookie is named after the access cookie with this suffix.
REFRESH_COOKIE_SUFFIX = "_refresh"
# A browser refresh token replaced this recently is a race between two tabs, not a copy: it is
# refused without ending the session (the other tab holds the successor).
BROWSER_REFRESH_GRACE = 30
# A refresh token rotated this recently, presented again once by the same client (address, and
# OAuth2 client) while its successor is unused, gets a fresh pair of the same session: the answer
# to the first was lost (a dropped connection, a store refusing the write after the rotation).
REFRESH_RETRY_GRACE = 30
# A browser back on the login page with a refresh cookie younger than this (and than half the
# access-token lifetime) did not send the access cookie we just set: a redirect loop, not an
# expired session. It is told so instead of being renewed again and again.
RENEWAL_LOOP_SECONDS = 5


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The Redis key layout, under a configurable prefix."""

    prefix: str

    def access_token(self, sid: str, jti: str) -> str:
        """Present while the access token ``jti`` of session ``sid`` is live."""
        return f"{self.prefix}at:{{{sid}}}:{jti}"

    def session_tokens(self, sid: str) -> str:
        """Set of the live access-token ids of session ``sid``, for revoking them together."""
        return f"{self.prefix}sess:{{{sid}}}"

    def failures(self, subject: str) -> str:
        """Sorted set of recent failed logins of a subject (pair, address or username)."""
        return f"{self.prefix}fail:{subject}"

    def known_clients(self, username: str) -> str:
        """Sorted set of the addresses and browsers that signed in as ``username`` lately (by time)."""
        return f"{self.prefix}known:{username}"

    def otp_used(self, user_id: str, step: int) -> str:
        """Present once the TOTP code of ``user_id`` for time step ``step`` was accepted (no replay)."""
        return f"{self.prefix}otp:{user_id}:{step}"

    def pending_signin(self, pending_id: str) -> str:
        """A sign-in whose password was right, waiting for its second factor (stores.pending)."""
        return f"{self.prefix}pending:{pending_id}"

    def webauthn_challenge(self, challenge_id: str) -> str:
        """Present once the WebAuthn challenge of this digest was answered, until it expires (no replay)."""
        return f"{self.prefix}webauthn:{challenge_id}"

    def authorize_request(self, request_id: str) -> str:
        """An OIDC authorization request waiting for the browser to sign in or consent (stores.interactions)."""
        return f"{self.prefix}authz:{request_id}"

    def authorization_code(self, digest: str) -> str:
        """An OIDC authorization code (by its digest) until redeemed or expired (stores.codes)."""
        return f"{self.prefix}code:{{{digest}}}"

    def spent_code(self, digest: str) -> str:
        """A redeemed authorization code: the session it opened, for revoking it if the code comes back."""
        return f"{self.prefix}spent:{{{digest}}}"

    def backchannel_queue(self) -> str:
        """Sorted set of the back-channel logouts to send, by when each is due (stores.backchannel)."""
        return f"{self.prefix}backchannel"

    def pat_record(self, digest: str) -> str:
        """A live personal access token's record (by the token's SHA-256, hex), until it expires."""
        return f"{self.prefix}pat:{digest}"

    def write_probe(self) -> str:
        """A key written (and expiring at once) to learn whether Redis accepts writes right now."""
        return f"{self.prefix}probe"

    def revocations_channel(self) -> str:
        """Pub/sub channel announcing every revocation ("sid" or "sid jti") to every worker."""
        return f"{self.prefix}revocations"
