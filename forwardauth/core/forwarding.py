"""The original request behind a proxy's auth subrequest. Pure: headers in, facts out.

Each proxy describes the request it is asking about in its own way:

- nginx ``auth_request``: ``X-Original-URL`` (``$scheme://$http_host$request_uri``, what the
  browser asked for), ``X-Original-Host`` (``$host``, the virtual host nginx routed on),
  ``X-Original-URI`` / ``X-Original-Method``; client in ``X-Forwarded-For``;
- Traefik ``forwardAuth`` and Caddy ``forward_auth``: ``X-Forwarded-Method/-Proto/-Host/-Uri/-For``;
- Envoy ``ext_authz`` (HTTP service): the request line itself, under our path prefix, and ``Host``.

Nothing is guessed: a value that does not parse, a header the protocol needs that is missing, or
two values that disagree (``X-Original-Host`` and ``X-Original-URL``'s host, after an absolute-form
request line) are refused with a 400, never replaced by another header, ``localhost`` or our own
address. The headers are believed only from a trusted proxy; from anyone else they are refused
too (``UntrustedSender``), loudly, because a wrong ``FORWARDAUTH_TRUSTED_PROXIES`` would otherwise
silently judge ``/auth`` itself instead of the request, and every path rule would be off.

Each value is read and checked in ``proxyheaders`` (a describing header sent twice is refused
there, method overrides collected); here they are assembled, and the sender trusted or not.
``X-Forwarded-For`` alone is a list by nature (HAProxy adds a line per hop): its lines are read as
one list, in order.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from forwardauth.core import hosts
from forwardauth.core.proxyheaders import (
    DESCRIBING,
    AmbiguousRequest,
    BadDescription,
    header_values,
    host_value,
    method_overrides,
    method_value,
    refuse_duplicates,
    scheme_value,
    uri_value,
)
from forwardauth.core.refusals import Refused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_ABSOLUTE_URL = re.compile(r"(?i)(https?)://([^/?#]*)(/.*)")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
TRUSTED_VARIABLE = "FORWARDAUTH_TRUSTED_PROXIES"
FORWARDED_FOR = "X-Forwarded-For"


class UntrustedSender(Refused):
    """Describing headers (or the Envoy route) from an address not in FORWARDAUTH_TRUSTED_PROXIES:
    a proxy left out of it would have every path rule silently ignored, so it is an error."""

    reason = "describing headers from an untrusted address"
    level = logging.ERROR


class Source(Enum):
    """Which protocol the subrequest speaks; it decides how to send a browser to login."""

    NGINX = "nginx"  # cannot pass a 302 on: answer 401 with Location for error_page
    FORWARDED = "forwarded"  # Traefik, Caddy: our response goes back as is, 302 works
    ENVOY = "envoy"  # ext_authz: only 200 passes; 401 with Location
    DIRECT = "direct"  # no describing headers: the /auth request itself is judged


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    source: Source
    method: str
    scheme: str
    host: str  # as the client sent it (lower case), port included
    uri: str  # path and query, as sent
    client_ip: str | None
    overrides: tuple[str, ...] = ()  # methods the request asks the backend to take it as (see METHOD_OVERRIDES)

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
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.1.2.3 is 10.1.2.3 (a dual-stack socket)
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


is_trusted = address_in  # of our proxies, when the networks are FORWARDAUTH_TRUSTED_PROXIES


def client_address(forwarded_for: str | None, remote: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client: the right-most ``X-Forwarded-For`` entry that is not one of our proxies.

    Right to left, because only the entries our own proxies appended can be believed; anything
    left of the first untrusted hop was written by the client.
    """
    if not forwarded_for:
        return remote
    hops = [_without_port(h.strip()) for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return None  # an unreadable hop: the client cannot be known (rules judge it both ways)
        if not is_trusted(hop, trusted):
            # one spelling per client (::ffff:a.b.c.d is a.b.c.d), for networks rules and throttling alike
            return str(ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped is not None else hop
    return hops[0] if hops else remote


def _without_port(hop: str) -> str:
    """A hop as an address: some proxies write the client's port too (``203.0.113.9:51234``,
    ``[2001:db8::1]:443``: Azure's gateways, IIS ARR)."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def forwarded_for(headers: Mapping[str, str]) -> str | None:
    """``X-Forwarded-For``, all its lines as one list in order (the last hop's is the last), else
    ``X-Real-IP``."""
    lines = header_values(headers, FORWARDED_FOR)
    return ", ".join(lines) if len(lines) > 1 else (lines[0] if lines else None) or headers.get("X-Real-IP")


def refuse_untrusted(
    headers: Mapping[str, str], remote: str | None, trusted: tuple[Network, ...], envoy: bool = False
) -> None:
    """Raise ``UntrustedSender`` when a sender outside ``trusted`` describes a request (or calls
    the Envoy route, which is a description by itself)."""
    if is_trusted(remote, trusted):
        return
    sender = remote or "an unknown address"
    if envoy:
        raise UntrustedSender(
            f"the Envoy route is for a trusted proxy, and {sender} is not in {TRUSTED_VARIABLE}: "
            "add the proxy's address to it"
        )
    sent = [name for name in DESCRIBING if headers.get(name)]
    if sent:
        raise UntrustedSender(
            f"{', '.join(sent)} sent by {sender}, which is not in {TRUSTED_VARIABLE}: add the "
            "proxy's address to it (describing headers from anyone else are refused, not ignored)"
        )


def original_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    remote: str | None,
    trusted: tuple[Network, ...],
    envoy_prefix: str | None = None,
) -> OriginalRequest:
    """What the proxy is asking about. ``target`` is our own request's target as sent (path and
    query); ``envoy_prefix`` is set on the ext_authz route. Raises a ``Refused`` for anything it
    cannot describe exactly (see the module's docstring)."""
    refuse_untrusted(headers, remote, trusted, envoy_prefix is not None)
    refuse_duplicates(headers)
    found = _described(method, target, headers, remote, trusted, envoy_prefix)
    overrides = method_overrides(headers, found.uri)
    if not overrides:
        return found
    return OriginalRequest(found.source, found.method, found.scheme, found.host, found.uri, found.client_ip, overrides)


def _described(
    method: str,
    target: str,
    headers: Mapping[str, str],
    remote: str | None,
    trusted: tuple[Network, ...],
    envoy_prefix: str | None,
) -> OriginalRequest:
    if not is_trusted(remote, trusted):
        return OriginalRequest(
            Source.DIRECT,
            method_value(method, "the method"),
            "http",
            host_value(headers.get("Host"), "Host"),
            uri_value(target, "the request target"),
            remote,
        )
    client = client_address(forwarded_for(headers), remote, trusted)
    if envoy_prefix is not None:
        if not target.startswith(envoy_prefix):
            raise BadDescription(f"the Envoy request does not start with {envoy_prefix} as sent")
        return OriginalRequest(
            Source.ENVOY,
            method_value(method, "the method"),
            scheme_value(headers.get("X-Forwarded-Proto")),
            host_value(headers.get("Host"), "Host"),
            uri_value(target[len(envoy_prefix) :], f"the path after {envoy_prefix}"),
            client,
        )
    url, uri = headers.get("X-Original-URL"), headers.get("X-Original-URI")
    routed, original_method = headers.get("X-Original-Host"), headers.get("X-Original-Method")
    nginx_style = bool(url or uri or original_method or routed)
    forwarded_style = bool(headers.get("X-Forwarded-Uri") or headers.get("X-Forwarded-Method"))
    if nginx_style and forwarded_style:
        raise AmbiguousRequest("both X-Original-* and X-Forwarded-Uri/-Method: the proxy must strip the client's")
    if nginx_style:
        return _nginx(url, uri, routed, original_method, headers, client)
    if forwarded_style:
        return OriginalRequest(
            Source.FORWARDED,
            method_value(headers.get("X-Forwarded-Method"), "X-Forwarded-Method"),
            scheme_value(headers.get("X-Forwarded-Proto")),
            host_value(headers.get("X-Forwarded-Host"), "X-Forwarded-Host"),
            uri_value(headers.get("X-Forwarded-Uri"), "X-Forwarded-Uri"),
            client,
        )
    return OriginalRequest(
        Source.DIRECT,
        method_value(method, "the method"),
        scheme_value(headers.get("X-Forwarded-Proto")),
        host_value(headers.get("Host"), "Host"),
        uri_value(target, "the request target"),
        client,
    )


def _nginx(
    url: str | None,
    uri: str | None,
    routed: str | None,
    method: str | None,
    headers: Mapping[str, str],
    client: str | None,
) -> OriginalRequest:
    """nginx's description: the host from X-Original-URL, which must name the host nginx routed
    on (X-Original-Host) when both are given; the path from X-Original-URI, which must be the URL's."""
    scheme = host = None
    if url:
        parts = _ABSOLUTE_URL.fullmatch(url)
        if parts is None:
            raise BadDescription("X-Original-URL is not an absolute http(s) URL with a path")
        scheme, host, tail = parts[1].lower(), host_value(parts[2], "the host of X-Original-URL"), parts[3]
        if uri and uri != tail:
            raise AmbiguousRequest("X-Original-URI is not the path of X-Original-URL")
        uri = tail
    if routed:
        routed = host_value(routed, "X-Original-Host")
        if host is not None and hosts.name_of(routed) != hosts.name_of(host):
            raise AmbiguousRequest(
                f"X-Original-Host {routed!r} (the virtual host nginx routed on) is not the host of "
                f"X-Original-URL {host!r}: an absolute-form request line names another host"
            )
        host = host or routed
    if host is None:
        raise BadDescription("X-Original-URL (or X-Original-Host) is missing: the host cannot be known")
    return OriginalRequest(
        Source.NGINX,
        method_value(method, "X-Original-Method"),
        scheme or scheme_value(headers.get("X-Forwarded-Proto")),
        host,
        uri_value(uri, "X-Original-URI"),
        client,
    )


def public_origin(
    scheme: str, headers: Mapping[str, str], remote: str | None, trusted: tuple[Network, ...]
) -> str | None:
    """``scheme://host[:port]`` as the client addressed us: through a trusted proxy its
    ``X-Forwarded-Proto`` / ``X-Forwarded-Host``, else our own scheme and ``Host``. ``None`` when
    a value given does not parse: never another value in its place.
    """
    host = headers.get("Host")
    if any(len(header_values(headers, name)) > 1 for name in ("Host", "X-Forwarded-Host", "X-Forwarded-Proto")):
        return None  # which one the browser used is not known (see refuse_duplicates)
    if is_trusted(remote, trusted):
        proto = headers.get("X-Forwarded-Proto")
        if proto:
            scheme = proto
        host = headers.get("X-Forwarded-Host") or host
    host = hosts.parse(host)
    if host is None or scheme.lower() not in ("http", "https"):
        return None
    default_port = ":443" if scheme.lower() == "https" else ":80"
    return f"{scheme.lower()}://{host.removesuffix(default_port)}"


def path_prefix(headers: Mapping[str, str], remote: str | None, trusted: tuple[Network, ...]) -> str:
    """``X-Forwarded-Prefix`` from a trusted proxy that serves us under a path, else ``""``.

    Our own pages use it so their links and form actions point back through the proxy.
    """
    prefix = headers.get("X-Forwarded-Prefix", "").rstrip("/")
    return prefix if prefix and _PREFIX.match(prefix) and is_trusted(remote, trusted) else ""
