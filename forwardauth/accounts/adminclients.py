"""The admin console's actions on OAuth clients, signing keys and the audit trail, and what every
console action shares: the acting administrator (``Actor``), a refusal (``AdminError``) and its
audit record (event ``admin``, written in the transaction of the change it records).

Keys are files, not rows: a rotation is done as ``forwardauth keys rotate`` does it (refused
while the folder holds a file the workers would refuse; checked loadable afterwards), then
audited. HS256 deployments have no key files: nothing to list, and no rotation here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from forwardauth.accounts.changes import recent_seconds
from forwardauth.accounts.services import AccountServices
from forwardauth.keys import KeyFileError, created_at, inspect, load_ring, refusal, rotate
from forwardauth.stores import audit, clients, users
from forwardauth.stores.postgres import Connection

MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Actor:
    """The administrator acting, and from where (for the audit trail)."""

    user_id: str
    username: str
    address: str | None


class AdminError(Exception):
    """A refusal with a message for the page (409)."""


def audit_admin(conn: Connection, actor: Actor, action: str, user: users.User | None, **detail: object) -> None:
    """Record an administrator's action (on ``user``, if any) in the caller's transaction."""
    audit.record(
        conn,
        "admin",
        user.id if user else None,
        user.username if user else None,
        actor.address,
        {"by": actor.username, "action": action, **detail},
    )


# --- OAuth clients ----------------------------------------------------------------------------


async def create_client(
    services: AccountServices,
    actor: Actor,
    client_id: str,
    redirect_uris: list[str],
    scopes: list[str],
    grant_types: list[str],
    public: bool,
    trusted: bool,
) -> tuple[clients.Client, str | None]:
    """A new client and its secret (shown once; ``None`` for a public client); ``ClientError``."""

    def create(conn: Connection) -> tuple[clients.Client, str | None]:
        client, secret = clients.create(
            conn, client_id, grant_types, scopes, [], public, redirect_uris=redirect_uris, trusted=trusted
        )
        audit_admin(
            conn,
            actor,
            "create_client",
            None,
            client_id=client.id,
            grant_types=list(client.grant_types),
            public=client.public,
            trusted=client.trusted,
        )
        return client, secret

    return await services.db.run(create)


def _set_client_disabled(
    conn: Connection, actor: Actor, client_id: str, disabled: bool, recent: int
) -> tuple[clients.Client, list[str]]:
    if clients.find(conn, client_id) is None:  # checks the id's form too (no NUL reaches PostgreSQL)
        raise clients.ClientError(f"no client {client_id!r}")
    client, sids = clients.set_disabled(conn, client_id, disabled, recent, actor.address)
    audit_admin(conn, actor, "disable_client" if disabled else "enable_client", None, client_id=client.id)
    return client, sids


async def set_client_disabled(services: AccountServices, actor: Actor, client_id: str, disabled: bool) -> None:
    """Disable a client (every token it holds is revoked at once) or enable it (none comes back)."""
    recent = recent_seconds(services.settings)
    client, sids = await services.db.run(_set_client_disabled, actor, client_id, disabled, recent)
    if disabled:  # Redis after the commit; a worker queues what Redis refuses
        await services.revocations.revoke_or_queue([*sids, *clients.own_sessions(client.id, recent)])


def _rotate_client_secret(conn: Connection, actor: Actor, client_id: str) -> str:
    secret = clients.rotate_secret(conn, client_id)
    audit_admin(conn, actor, "rotate_client_secret", None, client_id=client_id)
    return secret


async def rotate_client_secret(services: AccountServices, actor: Actor, client_id: str) -> str:
    """A new secret for a confidential client (the old one stops working); ``ClientError``."""
    return await services.db.run(_rotate_client_secret, actor, client_id)


async def list_clients(services: AccountServices) -> list[clients.Client]:
    return await services.db.run(clients.list_all)


# --- signing keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: str
    created: datetime
    current: bool  # the key that signs


def _keys(services: AccountServices) -> list[KeyInfo]:
    settings = services.settings
    found = inspect(settings.key_directory)
    signing = [key.kid for _, key in found.keys if key.alg == settings.signing_alg]
    listed: dict[str, KeyInfo] = {}
    for path, key in found.keys:
        when = datetime.fromtimestamp(created_at(path), UTC)
        listed.setdefault(key.kid, KeyInfo(key.kid, key.alg, when, bool(signing) and key.kid == signing[-1]))
    return list(listed.values())


async def list_keys(services: AccountServices) -> list[KeyInfo]:
    """The signing keys the service can load, oldest first ([] with HS256: no key files)."""
    if services.settings.signing_alg == "HS256":
        return []
    try:
        return await asyncio.to_thread(_keys, services)
    except KeyFileError as exc:
        raise AdminError(str(exc)) from None


def _rotate(services: AccountServices) -> str:
    settings = services.settings
    before = inspect(settings.key_directory)
    if before.problems:
        raise AdminError("not rotated: the service cannot load the key folder: " + refusal(before.problems))
    key = rotate(settings.key_directory, settings.signing_alg)
    ring = load_ring(settings, create=False)  # what a worker's reload will do
    if ring.current.kid != key.kid:
        raise AdminError(f"new key {key.kid} written, but {ring.current.kid} still signs (its file name sorts later)")
    return key.kid


async def rotate_signing_key(services: AccountServices, actor: Actor) -> str:
    """Add a signing key (older keys keep verifying; workers sign with it after their next reload)."""
    if services.settings.signing_alg == "HS256":
        raise AdminError("HS256 keys are rotated by changing FORWARDAUTH_HMAC_SECRET")
    try:
        kid = await asyncio.to_thread(_rotate, services)
    except KeyFileError as exc:
        raise AdminError(str(exc)) from None
    alg = services.settings.signing_alg
    await services.db.run(lambda conn: audit_admin(conn, actor, "rotate_key", None, kid=kid, alg=alg))
    return kid


# --- the audit trail --------------------------------------------------------------------------


async def audit_page(
    services: AccountServices,
    *,
    username: str | None,
    event: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int = 50,
) -> list[audit.Event]:
    """Events matching the filters, newest first (``before_id``: the next page)."""
    if event is not None and event not in audit.EVENTS:
        return []
    if before_id is not None:
        before_id = max(0, min(before_id, MAX_ID))  # a bigint: a larger number from a URL means "all"
    return await services.db.run(
        lambda conn: audit.search(
            conn, username=username, event=event, since=since, until=until, before_id=before_id, limit=limit
        )
    )
