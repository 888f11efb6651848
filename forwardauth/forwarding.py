"""The original request behind a proxy's auth subrequest. Pure: headers in, facts out.

Each proxy describes the request it is asking about in its own way:

- nginx ``auth_request``: ``X-Original-URL`` / ``X-Original-URI`` / ``X-Original-Method`` (set by
  our snippet), client in ``X-Forwarded-For`` / ``X-Real-IP``;
- Traefik ``forwardAuth`` and Caddy ``forward_auth``: ``X-Forwarded-Method/-Proto/-Host/-Uri/-For``;
- Envoy ``ext_authz`` (HTTP service): the request line itself, under our path prefix.

These headers are believed only from a trusted proxy address; from anyone else they are ignored,
because a spoofed ``X-Forwarded-Uri`` must never change what is being authorised.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]{1,253})(:\d{1,5})?$")
_URI_CHARS = re.compile(r"^/[\x21-\x7e]*$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
MAX_URI = 8192


class AmbiguousRequest(ValueError):
    """The subrequest describes the original request in two protocols' terms at once.

    A proxy sets one family (nginx: X-Original-*, Traefik/Caddy: X-Forwarded-Uri/-Method); the
    other came from the client, and guessing which is which would let it choose what is
    authorised. Refused, never guessed.
    """


class Source(Enum):
    """Which protocol the subrequest speaks; it decides how to send a browser to login."""

    NGINX = "nginx"  # cannot pass a 302 on: answer 401 with Location for error_page
    FORWARDED = "forwarded"  # Traefik, Caddy: our response goes back as is, 302 works
    ENVOY = "envoy"  # ext_authz: only 200 passes; 401 with Location
    DIRECT = "direct"  # no proxy headers (or an untrusted sender)


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    source: Source
    method: str
    scheme: str
    host: str  # as the client sent it, port included
    uri: str  # path and query
    client_ip: str | None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.uri}"


@functools.lru_cache(maxsize=4096)
def address_in(address: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in one of ``networks`` (cached: the same addresses come back all day)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


is_trusted = address_in  # of our proxies, when the networks are FORWARDAUTH_TRUSTED_PROXIES


def client_address(forwarded_for: str | None, remote: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client: the right-most ``X-Forwarded-For`` entry that is not one of our proxies.

    Right to left, because only the entries our own proxies appended can be believed; anything
    left of the first untrusted hop was written by the client.
    """
    if not forwarded_for:
        return remote
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None  # an unreadable hop: the client cannot be known
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else remote


def _method(value: str | None) -> str | None:
    return value.upper() if value and _METHOD.match(value.upper()) else None


def _scheme(value: str | None) -> str | None:
    return value.lower() if value and value.lower() in ("http", "https") else None


def _host(value: str | None) -> str | None:
    return value.lower() if value and _HOST.match(value) else None


def _uri(value: str | None) -> str | None:
    return value if value and len(value) <= MAX_URI and _URI_CHARS.match(value) else None


def original_request(
    method: str,
    path_qs: str,
    headers: Mapping[str, str],
    remote: str | None,
    trusted: tuple[Network, ...],
    envoy_prefix: str | None = None,
) -> OriginalRequest:
    """What the proxy is asking about; ``envoy_prefix`` is set on the ext_authz route."""
    host_header = _host(headers.get("Host")) or "localhost"
    if not is_trusted(remote, trusted):
        return OriginalRequest(Source.DIRECT, method.upper(), "http", host_header, path_qs, remote)
    client = client_address(headers.get("X-Forwarded-For") or headers.get("X-Real-IP"), remote, trusted)
    scheme = _scheme(headers.get("X-Forwarded-Proto")) or "http"
    if envoy_prefix is not None:
        tail = path_qs[len(envoy_prefix):] if path_qs.startswith(envoy_prefix) else path_qs
        return OriginalRequest(Source.ENVOY, method.upper(), scheme, host_header, _uri(tail) or "/", client)
    original_url = headers.get("X-Original-URL")
    nginx_style = bool(original_url or headers.get("X-Original-URI") or headers.get("X-Original-Method"))
    forwarded_style = bool(headers.get("X-Forwarded-Uri") or headers.get("X-Forwarded-Method"))
    if nginx_style and forwarded_style:
        raise AmbiguousRequest("both X-Original-* and X-Forwarded-Uri/-Method: the proxy must strip the client's")
    if nginx_style:
        parts = urlsplit(original_url) if original_url else None
        uri: str | None = headers.get("X-Original-URI")
        if uri is None and parts is not None:
            uri = parts.path + (f"?{parts.query}" if parts.query else "")
        return OriginalRequest(
            Source.NGINX,
            _method(headers.get("X-Original-Method")) or "GET",
            _scheme(parts.scheme if parts else None) or scheme,
            _host(parts.netloc if parts else None) or _host(headers.get("X-Forwarded-Host")) or host_header,
            _uri(uri) or "/",
            client,
        )
    if forwarded_style:
        return OriginalRequest(
            Source.FORWARDED,
            _method(headers.get("X-Forwarded-Method")) or "GET",
            scheme,
            _host(headers.get("X-Forwarded-Host")) or host_header,
            _uri(headers.get("X-Forwarded-Uri")) or "/",
            client,
        )
    return OriginalRequest(Source.DIRECT, method.upper(), scheme, host_header, path_qs, client)


def public_origin(scheme: str, headers: Mapping[str, str], remote: str | None,
                  trusted: tuple[Network, ...]) -> str | None:
    """``scheme://host[:port]`` as the client addressed us: through a trusted proxy its
    ``X-Forwarded-Proto`` / ``X-Forwarded-Host``, else our own scheme and ``Host``.
    """
    host = headers.get("Host")
    if is_trusted(remote, trusted):
        scheme = _scheme(headers.get("X-Forwarded-Proto")) or scheme
        host = headers.get("X-Forwarded-Host") or host
    host = _host(host)
    if host is None or _scheme(scheme) is None:
        return None
    default_port = ":443" if scheme.lower() == "https" else ":80"
    return f"{scheme.lower()}://{host.removesuffix(default_port)}"


def path_prefix(headers: Mapping[str, str], remote: str | None, trusted: tuple[Network, ...]) -> str:
    """``X-Forwarded-Prefix`` from a trusted proxy that serves us under a path, else ``""``.

    Our own pages use it so their links and form actions point back through the proxy.
    """
    prefix = headers.get("X-Forwarded-Prefix", "").rstrip("/")
    return prefix if prefix and _PREFIX.match(prefix) and is_trusted(remote, trusted) else ""
