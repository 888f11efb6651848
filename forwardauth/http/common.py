"""Reading requests: who the client is, the fields of a body, the token presented."""

from __future__ import annotations

from aiohttp import web

from forwardauth.config import Settings
from forwardauth.core.forwarding import client_address as forwarded_client
from forwardauth.core.forwarding import is_trusted


def client_address(request: web.Request, settings: Settings) -> str | None:
    """The real client's address, as access rules see it (the peer when it is no trusted proxy)."""
    remote = request.remote
    if not is_trusted(remote, settings.trusted_proxies):
        return remote
    headers = request.headers
    forwarded = headers.get("X-Forwarded-For") or headers.get("X-Real-IP")
    # An unreadable hop (only a trusted sender can produce one): the proxy is all we know.
    return forwarded_client(forwarded, remote, settings.trusted_proxies) or remote


