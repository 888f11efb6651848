"""The token side of OpenID Connect: an authorization code exchanged for tokens (RFC 6749 4.1.3,
OpenID Connect Core 3.1.3), and a code presented twice taking back what it issued (RFC 6749 4.1.2).

The exchange opens a session of the client's own (its refresh-token family) whose parent is the
browser session the user authorized from: ending that one ends this one (stores.cascade). It
carries how the user signed in then (``amr``, ``auth_time``: a code proves nothing new). Its
refresh token is handed out only when ``offline_access`` was granted; without it the client
comes back through /oauth/authorize, where the browser session decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from forwardauth.accounts.changes import end_sessions
from forwardauth.accounts.issue import issue_access
from forwardauth.accounts.services import AccountServices
from forwardauth.accounts.signin import take_back
from forwardauth.core import oidc
from forwardauth.core.authn import Authentication
from forwardauth.core.idtokens import IdTokenService
from forwardauth.core.tokens import MintedToken
from forwardauth.stores import audit, clients, sessions, users
from forwardauth.stores.codes import AuthorizationCode
from forwardauth.stores.postgres import Connection

log = logging.getLogger("forwardauth.oidc")

REUSE_REASON = "code_reuse"


class CodeRefused(Exception):
    """The code cannot be exchanged (``invalid_grant``); the message says why, and holds no secret."""


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What a code was exchanged for: the client's session and its tokens."""

    session: sessions.Session
    access: MintedToken
    id_token: str | None  # when ``openid`` was granted
    refresh_token: str | None  # when ``offline_access`` was granted


def check_code(code: AuthorizationCode, client: clients.Client, redirect_uri: str | None, verifier: str | None) -> None:
    """The request matches what the code was issued for, else ``CodeRefused``.

    ``redirect_uri`` must be the authorization request's (RFC 6749 4.1.3). Left out, it is taken
    only when the client registered that one URI alone: then no other could have been used.
    PKCE: a code issued with a challenge needs its verifier; one issued without takes none (a
    verifier then means the client thinks it used PKCE: someone else's code, OAuth 2.1 4.1.3);
    a public client's code always had a challenge (the authorization endpoint demands it).
    """
    if code.client_id != client.id:
        raise CodeRefused("the code was issued to another client")
    if redirect_uri is None:
        if client.redirect_uris != (code.redirect_uri,):
            raise CodeRefused("redirect_uri is required")
    elif not oidc.redirect_uri_registered(redirect_uri, (code.redirect_uri,)):
        raise CodeRefused("redirect_uri differs from the authorization request's")
    if code.code_challenge is None:
        if client.public:
            raise CodeRefused("a public client's code needs PKCE")
        if verifier is not None:
            raise CodeRefused("code_verifier given for a code issued without code_challenge")
    elif verifier is None:
        raise CodeRefused("code_verifier is required (PKCE)")
    elif not oidc.check_pkce(verifier, code.code_challenge):
        raise CodeRefused("code_verifier does not match the code_challenge")


def open_session(conn: Connection, code: AuthorizationCode, ttl: int, client_ip: str | None) -> sessions.Session:
    """The client's session, child of the browser session ``code.sid`` (which must be live: a
    user who signed out since gets nothing), whose User-Agent it shows on the portal (the client's
    own is a server's). Lock order as ``sessions`` says: client, user, token."""
    if not clients.lock_enabled(conn, code.client_id):
        raise sessions.ClientDisabled(code.client_id)
    user = users.get(conn, code.user_id, lock=True)
    if user is None or user.disabled:
        raise CodeRefused("the user is unknown or disabled")
    auth = Authentication.of(code.amr, code.auth_time)
    try:
        session = sessions.start(
            conn, user, ttl, code.client_id, code.scope or None, auth, parent_sid=code.sid, client_ip=client_ip
        )
    except sessions.ParentEnded:
        raise CodeRefused("the session the code was issued from has ended") from None
    detail = {"client_id": code.client_id, "sid": session.sid, "parent_sid": code.sid, "exchanged": True}
    audit.record(conn, "authorize", user.id, user.username, client_ip, detail)
    return session


async def exchange_code(
    services: AccountServices,
    value: str,
    client: clients.Client,
    redirect_uri: str | None,
    verifier: str | None,
    client_ip: str | None,
) -> Exchanged:
    """Redeem code ``value`` for ``client`` (authenticated by the caller): its tokens, else
    ``CodeRefused`` (or ``sessions.ClientDisabled``). The code is spent whatever follows: one that
    fails a check is not left for another try.

    A code already redeemed revokes the session its first redemption opened, with that session's
    access tokens (RFC 6749 4.1.2); should the replay come while the first exchange is still under
    way, that exchange learns of it when it records its session, and hands nothing out.
    """
    await services.revocations.writable()  # the access token must be registered once the code is spent
    code = await services.codes.redeem(value)
    if code is None:
        first = await services.codes.spent(value)
        if first:
            log.warning("authorization code presented again: revoking session %s it was exchanged for", first)
            await end_sessions(services, [first], REUSE_REASON, client_ip=client_ip, client_id=client.id)
        raise CodeRefused("the code is invalid, expired or already used")
    check_code(code, client, redirect_uri, verifier)
    scopes = oidc.parse_scope(code.scope)
    id_tokens = IdTokenService(services.tokens)
    if oidc.OPENID in scopes and not id_tokens.available:
        raise CodeRefused("no ID token can be issued with an HS256 signing key (FORWARDAUTH_SIGNING_ALG)")
    session = await services.db.run(open_session, code, services.settings.refresh_ttl, client_ip)
    try:
        access = await issue_access(services, session)
        first_use = await services.codes.mark_issued(value, session.sid)
    except Exception:  # Redis refused a write: the client gets a 503 and nothing is left behind
        await take_back(services, session, client_ip)
        raise
    if not first_use:
        await end_sessions(services, [session.sid], REUSE_REASON, client_ip=client_ip, client_id=client.id)
        raise CodeRefused("the code is invalid, expired or already used")
    id_token = None
    if oidc.OPENID in scopes:
        id_token = id_tokens.mint_id_token(
            subject=session.user.id,
            audience=client.id,
            auth=session.auth,
            sid=code.sid,
            nonce=code.nonce,
            access_token=access.token,
            claims=oidc.userinfo_claims(session.user.identity, scopes),
        )
    refresh = session.refresh_token if oidc.OFFLINE_ACCESS in scopes else None
    return Exchanged(session, access, id_token, refresh)
