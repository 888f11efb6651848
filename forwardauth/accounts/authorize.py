"""The authorization endpoint's account work: clients, consents, codes, and RP-initiated logout.

A code stands for what the user authorized from their browser session: the client, the redirect
URI, the scopes, the PKCE challenge, the ``nonce`` as sent, and how the user signed in. Ending a
browser session ends the sessions opened from it for OIDC clients too (stores.cascade), and queues
their back-channel logouts (accounts.changes.end_sessions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from forwardauth.accounts.changes import end_sessions
from forwardauth.accounts.services import AccountServices
from forwardauth.core.authn import Authentication
from forwardauth.core.oidc import AuthorizationRequest
from forwardauth.stores import audit, clients, consents
from forwardauth.stores.codes import AuthorizationCode
from forwardauth.stores.postgres import Connection


async def find_client(services: AccountServices, client_id: str | None) -> clients.Client | None:
    if not client_id:
        return None
    return await services.db.run(clients.find, client_id)


async def consent_needed(
    services: AccountServices, user_id: str, client: clients.Client, scopes: Sequence[str], ask_again: bool
) -> bool:
    """Whether the user must be asked: never for a trusted (first-party) client; else when asked to
    (``prompt=consent``) or for scopes not granted yet."""
    if client.trusted:
        return False
    if ask_again:
        return True
    granted = await services.db.run(consents.granted, user_id, client.id)
    return not set(scopes) <= set(granted)


async def give_consent(
    services: AccountServices,
    user_id: str,
    username: str,
    client_id: str,
    scopes: Sequence[str],
    address: str | None,
) -> None:
    """Remember the user's consent (audited ``consent_granted``)."""
    await services.db.run(consents.grant, user_id, client_id, list(scopes), address, username)


def _record(conn: Connection, user_id: str, username: str, address: str | None, detail: dict[str, object]) -> None:
    audit.record(conn, "authorize", user_id, username, address, detail)


async def issue_code(
    services: AccountServices,
    request: AuthorizationRequest,
    user_id: str,
    username: str,
    sid: str,
    auth: Authentication,
    address: str | None,
) -> str:
    """A code for what the user authorized from browser session ``sid`` (audited ``authorize``)."""
    code = AuthorizationCode(
        client_id=request.client_id,
        redirect_uri=request.redirect_uri,
        user_id=user_id,
        username=username,
        scope=request.scope_text,
        nonce=request.nonce,
        code_challenge=request.code_challenge,
        sid=sid,
        amr=auth.amr,
        auth_time=auth.auth_time,
        issued_at=int(time.time()),
    )
    value = await services.codes.issue(code)
    detail: dict[str, object] = {
        "client_id": request.client_id,
        "scope": request.scope_text,
        "sid": sid,
        "acr": auth.acr,
    }
    await services.db.run(_record, user_id, username, address, detail)
    return value


async def refused(
    services: AccountServices, request: AuthorizationRequest, user_id: str, username: str, address: str | None
) -> None:
    """The user denied the client on the consent page (audited ``authorize``, denied)."""
    detail: dict[str, object] = {"client_id": request.client_id, "scope": request.scope_text, "denied": True}
    await services.db.run(_record, user_id, username, address, detail)


async def log_out(
    services: AccountServices,
    sids: Sequence[str],
    user_id: str | None,
    username: str | None,
    address: str | None,
    client_id: str | None,
) -> bool:
    """RP-initiated logout: end the browser sessions ``sids`` and their children (audited
    ``logout``), queue the back-channel logouts; whether Redis revoked the access tokens now
    (else it will, once it takes writes again)."""
    return await end_sessions(
        services, list(sids), "logout", user_id=user_id, username=username, client_ip=address, client_id=client_id
    )
