"""A user's own passkeys on their /mfa page: listed, renamed, removed (a removal audited).

Registering one is a WebAuthn ceremony: see accounts.passkeys.
"""

from __future__ import annotations

from dataclasses import dataclass

from webauthn.helpers import bytes_to_base64url

from forwardauth.accounts.passkeys import clean_name
from forwardauth.accounts.services import AccountServices
from forwardauth.stores import audit, passkeys
from forwardauth.stores.postgres import Connection


@dataclass(frozen=True, slots=True)
class Listed:
    """One passkey as its page shows it: ``id`` is the credential id in base64url (the forms'
    value), dates are days (UTC)."""

    id: str
    name: str
    created: str
    last_used: str | None
    synced: bool  # may be copied between the user's devices (backup eligible)


async def listed(services: AccountServices, user_id: str) -> list[Listed]:
    found = await services.db.run(passkeys.of_user, user_id)
    return [
        Listed(
            bytes_to_base64url(p.credential_id),
            p.name,
            f"{p.created_at:%Y-%m-%d}",
            f"{p.last_used_at:%Y-%m-%d}" if p.last_used_at else None,
            p.backup_eligible,
        )
        for p in found
    ]


async def rename(services: AccountServices, user_id: str, credential_id: bytes, name: str) -> bool:
    """Give one of the user's passkeys another name; False when it is not theirs (or gone)."""
    return await services.db.run(passkeys.rename, user_id, credential_id, clean_name(name))


def _remove_in_db(conn: Connection, user_id: str, username: str, credential_id: bytes, address: str | None) -> bool:
    if not passkeys.remove(conn, user_id, credential_id):
        return False
    audit.record(conn, "mfa_remove", user_id, username, address, {"method": "passkey"})
    return True


async def remove(
    services: AccountServices, user_id: str, username: str, credential_id: bytes, address: str | None
) -> bool:
    """Remove one of the user's passkeys; False when it is not theirs (or gone)."""
    return await services.db.run(_remove_in_db, user_id, username, credential_id, address)
