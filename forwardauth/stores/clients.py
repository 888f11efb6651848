"""OAuth2 clients in PostgreSQL. Functions take a psycopg2 connection and run in a worker thread.

A confidential client has a 256-bit random secret, shown once and stored as SHA-256 (a slow
hash buys nothing for a secret that cannot be guessed); a public client has none and may only
use the password, refresh_token and authorization_code grants (the last with PKCE).

An OpenID Connect client registers where its authorization responses may go (``redirect_uris``,
matched exactly), where RP-initiated logout may send the browser back, and the URI told when a
session of its users ends (back-channel logout). Each is an absolute https URI without a
fragment; http only for loopback hosts (a native app or a developer's machine, RFC 8252 7.3).
A trusted (first-party) client gets no consent page.

Disabling a client revokes every token it holds, at once and for good: re-enabling it brings none
back. Its client_credentials tokens have no row here; they are grouped in Redis under session ids
derived from the client id and the hour they were issued (``own_session``), so disabling finds
them without a registry that would grow with every token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg2.errors
import psycopg2.extensions

from forwardauth.stores.audit import record
from forwardauth.stores.postgres import Connection
from forwardauth.stores.users import check_roles

GRANT_TYPES = ("password", "refresh_token", "client_credentials", "authorization_code")
PUBLIC_GRANTS = frozenset({"password", "refresh_token", "authorization_code"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")  # RFC 6749 3.3 scope-token
_COLUMNS = (
    "id, secret_hash, grant_types, scopes, roles, disabled, resource_server,"
    " redirect_uris, post_logout_redirect_uris, trusted, backchannel_logout_uri"
)
MAX_URI = 2000  # longer is no redirect URI of ours to compare (and would not fit in a browser's URL)
_LOOPBACK_NAMES = frozenset({"localhost"})
# client_credentials tokens are grouped in Redis by client and by hour of issue (see own_session).
OWN_SESSION_SECONDS = 3600
OWN_SESSION_PREFIX = "client."  # never in a login session id (URL-safe base64 has no ".")


class ClientError(ValueError):
    """A client cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    secret_hash: bytes | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    disabled: bool
    resource_server: bool = False  # may introspect access tokens issued to other clients
    redirect_uris: tuple[str, ...] = ()  # where authorization responses may go (exact match)
    post_logout_redirect_uris: tuple[str, ...] = ()  # where RP-initiated logout may return
    trusted: bool = False  # first-party: no consent page
    backchannel_logout_uri: str | None = None  # told when a session of its users ends

    @property
    def public(self) -> bool:
        return self.secret_hash is None

    def check_secret(self, secret: str | None) -> bool:
        """Constant-time check; a public client must present no secret."""
        if self.secret_hash is None or secret is None:
            return self.secret_hash is None and secret is None
        return hmac.compare_digest(self.secret_hash, _digest(secret))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise ClientError(f"scope {scope!r} is not a valid scope token")
    return tuple(dict.fromkeys(scopes))


def check_uri(uri: str, what: str = "redirect URI") -> str:
    """An absolute https URI without a fragment (http for loopback hosts), else ClientError."""
    if not uri or len(uri) > MAX_URI or any(c <= " " or c == "\x7f" for c in uri):
        raise ClientError(f"{what} {uri[:100]!r}: 1 to {MAX_URI} characters, no spaces or control characters")
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ClientError(f"{what} {uri[:100]!r} is not a valid URI") from None
    if "#" in uri:
        raise ClientError(f"{what} {uri[:100]!r} must not have a fragment (#...)")
    if parts.username is not None or parts.password is not None:
        raise ClientError(f"{what} {uri[:100]!r} must not hold a user name or password")
    if not host:
        raise ClientError(f"{what} {uri[:100]!r} must be absolute (https://host/...)")
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(host)):
        return uri
    raise ClientError(f"{what} {uri[:100]!r} must use https (http only for localhost and loopback addresses)")


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_uris(uris: Sequence[str], what: str = "redirect URI") -> tuple[str, ...]:
    return tuple(dict.fromkeys(check_uri(uri, what) for uri in uris))


def _row(row: tuple[Any, ...] | None) -> Client | None:
    if row is None:
        return None
    return Client(
        id=row[0],
        secret_hash=bytes(row[1]) if row[1] is not None else None,
        grant_types=tuple(row[2]),
        scopes=tuple(row[3]),
        roles=tuple(row[4]),
        disabled=row[5],
        resource_server=row[6],
        redirect_uris=tuple(row[7]),
        post_logout_redirect_uris=tuple(row[8]),
        trusted=row[9],
        backchannel_logout_uri=row[10],
    )


def find(conn: Connection, client_id: str) -> Client | None:
    if not _CLIENT_ID.fullmatch(client_id):
        return None
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients WHERE id = %s", (client_id,))  # noqa: S608
        return _row(cur.fetchone())


def create(
    conn: Connection,
    client_id: str,
    grant_types: list[str],
    scopes: list[str],
    roles: list[str],
    public: bool,
    resource_server: bool = False,
    *,
    redirect_uris: Sequence[str] = (),
    post_logout_redirect_uris: Sequence[str] = (),
    trusted: bool = False,
    backchannel_logout_uri: str | None = None,
) -> tuple[Client, str | None]:
    """The new client and its secret (``None`` for a public client), shown only now. Without
    grant types: authorization_code when redirect URIs are given, else client_credentials."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise ClientError("client id: 1 to 64 letters, digits, '.', '_' or '-'")
    default = "authorization_code" if redirect_uris else "client_credentials"
    grants = tuple(dict.fromkeys(grant_types or [default]))
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientError(f"unknown grant type(s): {', '.join(unknown)} (use {', '.join(GRANT_TYPES)})")
    if public and not PUBLIC_GRANTS.issuperset(grants):
        raise ClientError("a public client may only use the password, refresh_token and authorization_code grants")
    redirects, returns, backchannel = _check_oidc(
        grants, redirect_uris, post_logout_redirect_uris, backchannel_logout_uri
    )
    secret = None if public else secrets.token_urlsafe(32)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO clients (id, secret_hash, grant_types, scopes, roles, resource_server,"  # noqa: S608
                " redirect_uris, post_logout_redirect_uris, trusted, backchannel_logout_uri)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    client_id,
                    _digest(secret) if secret else None,
                    list(grants),
                    list(check_scopes(scopes)),
                    list(check_roles(roles)),
                    resource_server,
                    list(redirects),
                    list(returns),
                    trusted,
                    backchannel,
                ),
            )
            client = _row(cur.fetchone())
    except psycopg2.errors.UniqueViolation:
        raise ClientError(f"client {client_id!r} already exists") from None
    assert client is not None
    return client, secret


def _check_oidc(
    grants: Sequence[str], redirect_uris: Sequence[str], returns: Sequence[str], backchannel: str | None
) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """The URIs of a client with ``grants``, checked and deduplicated, else ClientError."""
    redirects = check_uris(redirect_uris)
    if ("authorization_code" in grants) != bool(redirects):
        raise ClientError(
            "the authorization_code grant needs a redirect URI (--redirect-uri)"
            if not redirects
            else "redirect URIs are for the authorization_code grant (--grant authorization_code)"
        )
    checked = check_uris(returns, "post-logout redirect URI")
    bc = check_uri(backchannel, "back-channel logout URI") if backchannel else None
    if (checked or bc) and not redirects:
        raise ClientError("post-logout redirect and back-channel logout URIs are for OpenID Connect clients")
    return redirects, checked, bc


def modify(
    conn: Connection,
    client_id: str,
    *,
    redirect_uris: Sequence[str] | None = None,
    post_logout_redirect_uris: Sequence[str] | None = None,
    backchannel_logout_uri: str | None = None,
    scopes: Sequence[str] | None = None,
    trusted: bool | None = None,
) -> Client:
    """Change what is given (``None``: unchanged; ``backchannel_logout_uri=""`` removes it)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients WHERE id = %s FOR UPDATE", (client_id,))  # noqa: S608
        client = _row(cur.fetchone())
    if client is None:
        raise ClientError(f"no client {client_id!r}")
    redirects, returns, backchannel = _check_oidc(
        client.grant_types,
        client.redirect_uris if redirect_uris is None else redirect_uris,
        client.post_logout_redirect_uris if post_logout_redirect_uris is None else post_logout_redirect_uris,
        client.backchannel_logout_uri if backchannel_logout_uri is None else backchannel_logout_uri,
    )
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET redirect_uris = %s, post_logout_redirect_uris = %s, backchannel_logout_uri = %s,"  # noqa: S608
            f" scopes = %s, trusted = %s, updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (
                list(redirects),
                list(returns),
                backchannel,
                list(client.scopes if scopes is None else check_scopes(tuple(scopes))),
                client.trusted if trusted is None else trusted,
                client_id,
            ),
        )
        changed = _row(cur.fetchone())
    assert changed is not None
    return changed


def list_all(conn: Connection) -> list[Client]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients ORDER BY id")  # noqa: S608
        return [c for c in map(_row, cur.fetchall()) if c is not None]


def set_disabled(
    conn: Connection, client_id: str, disabled: bool, recent_seconds: int = 0, client_ip: str | None = None
) -> tuple[Client, list[str]]:
    """Turn a client off or on. Off revokes all its refresh tokens in this transaction, and returns
    the sessions that may still hold a live access token (issued within ``recent_seconds``) for the
    caller to revoke in Redis; on revokes nothing and restores nothing.

    The client's row is locked first, as ``lock_enabled`` does in a login or a refresh, so no
    session of it can be opened or rotated past this transaction.
    """
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE clients SET disabled = %s, updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
            (disabled, client_id),
        )
        client = _row(cur.fetchone())
        if client is None:
            raise ClientError(f"no client {client_id!r}")
        if not disabled:
            return client, []
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = 'client_disabled'"
            " WHERE client_id = %s AND revoked_at IS NULL",
            (client_id,),
        )
        revoked = cur.rowcount
        cur.execute(
            "SELECT DISTINCT family_id FROM refresh_tokens"
            " WHERE client_id = %s AND created_at > now() - make_interval(secs => %s)",
            (client_id, recent_seconds),
        )
        sids = [str(row[0]) for row in cur.fetchall()]
    record(
        conn,
        "revoke",
        None,
        None,
        client_ip,
        {"client_id": client_id, "reason": "client_disabled", "refresh_tokens": revoked, "sessions": len(sids)},
    )
    return client, sids


def lock_enabled(conn: Connection, client_id: str) -> bool:
    """Whether the client exists and is enabled, its row locked until the transaction ends.

    Taken before a session of the client is opened or rotated: a concurrent ``set_disabled``
    then either waits for that transaction (and revokes what it wrote) or has committed first.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT disabled FROM clients WHERE id = %s FOR SHARE", (client_id,))
        row = cur.fetchone()
    return row is not None and not row[0]


def own_session(client_id: str, now: float | None = None) -> str:
    """The session id of a client_credentials token issued ``now``: one per client and hour."""
    hour = int(time.time() if now is None else now) // OWN_SESSION_SECONDS
    return f"{OWN_SESSION_PREFIX}{client_id}.{hour}"


def own_sessions(client_id: str, lifetime: int, now: float | None = None) -> list[str]:
    """Every session id that may hold a live client_credentials token of the client: the hours of
    the last ``lifetime`` seconds, and the next (for another host's clock running ahead)."""
    at = time.time() if now is None else now
    first = int(at - lifetime) // OWN_SESSION_SECONDS
    last = int(at) // OWN_SESSION_SECONDS + 1
    return [f"{OWN_SESSION_PREFIX}{client_id}.{hour}" for hour in range(first, last + 1)]


def rotate_secret(conn: Connection, client_id: str) -> str:
    """A new secret for a confidential client; the old one stops working at once."""
    client = find(conn, client_id)
    if client is None:
        raise ClientError(f"no client {client_id!r}")
    if client.public:
        raise ClientError(f"client {client_id!r} is public: it has no secret")
    secret = secrets.token_urlsafe(32)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET secret_hash = %s, updated_at = now() WHERE id = %s", (_digest(secret), client_id)
        )
    return secret
