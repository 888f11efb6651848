"""Issuing tokens (an access token for a session, the rotation of a refresh token) and checking
that one is valid and live."""

from __future__ import annotations

from collections.abc import Callable

from forwardauth.accounts.changes import finish_ending
from forwardauth.accounts.services import AccountServices
from forwardauth.constants import REFRESH_RETRY_GRACE
from forwardauth.core.tokens import AccessClaims, MintedToken, TokenError
from forwardauth.stores import sessions


async def issue_access(services: AccountServices, session: sessions.Session) -> MintedToken:
    """Mint an access token for ``session`` (saying how and when its user signed in) and mark it
    live in Redis."""
    minted = services.tokens.mint(
        session.user.identity, session.sid, scope=session.scope, client_id=session.client_id, auth=session.auth
    )
    await services.revocations.register(session.sid, minted.claims.jti, services.settings.access_ttl)
    return minted


async def rotate_refresh(
    services: AccountServices,
    token: str,
    client_ip: str | None,
    client_id: str | None = None,
    narrow_scope: Callable[[str | None], str | None] | None = None,
    grace: int = 0,
    min_age: int = 0,
) -> tuple[sessions.Session, MintedToken]:
    """Spend a refresh token: its successor and a new access token. Raises sessions.RefreshError
    when it is refused, after revoking a replayed token's session in Redis too (see sessions.rotate;
    queued if Redis refuses: PostgreSQL has revoked it already).

    Redis must take a write first: the rotation commits in PostgreSQL, and if the new access token
    then could not be registered, the old refresh token would be spent and the new one never handed
    out. Should Redis fail in between anyway, the client's retry with the same token, within
    REFRESH_RETRY_GRACE, gets a fresh pair instead of being taken for a replay (sessions.rotate).
    """
    await services.revocations.writable()
    try:
        session = await services.db.run(
            sessions.rotate,
            token,
            services.settings.refresh_ttl,
            client_ip,
            client_id,
            narrow_scope,
            grace,
            min_age,
            REFRESH_RETRY_GRACE,
        )
    except sessions.RefreshError as exc:
        if exc.reused_family:  # the session and its children (OIDC clients'), and their back-channel logouts
            await finish_ending(services, exc.ended)
        raise
    return session, await issue_access(services, session)


async def live_claims(services: AccountServices, token: str) -> AccessClaims | None:
    """The claims of an access token that verifies and is not revoked, else None. (/auth does the
    same inline, with its claims cache and counters: it is the hot path.)"""
    try:
        claims = services.tokens.verify(token)
    except TokenError:
        return None
    return claims if await services.revocations.is_live(claims.sid, claims.jti, claims.expires_at) else None
