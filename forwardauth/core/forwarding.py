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

A describing header sent twice is refused too: a proxy that *adds* its value (rather than
replacing the client's) puts the client's first, and reading the first value would judge what the
client claims. ``X-Forwarded-For`` alone is a list by nature (HAProxy adds a line per hop): its
lines are read as one list, in order. Method overrides (``X-HTTP-Method-Override`` and its kin,
``_method`` in the query), which many frameworks honour, are collected so the rules judge the
request under every method the backend may take it as (see policy).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

from forwardauth.core import hosts
from forwardauth.core.refusals import Refused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_METHOD = re.compile(r"[A-Z][A-Z_-]{0,31}")  # as sent: "get" is not GET to every backend
_URI_CHARS = re.compile(r"/[\x21-\x7e]*")
_ABSOLUTE_URL = re.compile(r"(?i)(https?)://([^/?#]*)(/.*)")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
MAX_URI = 8192
TRUSTED_VARIABLE = "FORWARDAUTH_TRUSTED_PROXIES"

# Headers that describe the request being authorised (or how we are reached): believed from a
# trusted proxy only, refused from anyone else.
DESCRIBING = (
    "X-Original-URL",
    "X-Original-URI",
    "X-Original-Method",
    "X-Original-Host",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Prefix",
)
# Headers by which a client asks frameworks (Symfony, Laravel, Rails, Express's method-override,
# Google's APIs...) to take the request as another method; and the query parameter of the same use.
METHOD_OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
METHOD_PARAMETER = "_method"
# Headers a request may carry once only (X-Forwarded-For is a list: its lines are joined).
ONCE = ("Host", "X-Real-IP", *DESCRIBING, *METHOD_OVERRIDES)
FORWARDED_FOR = "X-Forwarded-For"


class BadDescription(Refused):
    """The proxy's description of the request is missing a value it needs, or one does not parse."""

    reason = "malformed description"


class AmbiguousRequest(BadDescription):
    """The subrequest describes the original request two ways: in two protocols' terms at once
    (nginx: X-Original-*, Traefik/Caddy: X-Forwarded-Uri/-Method; the other came from the
    client), or with two values that disagree. Refused, never guessed."""

    reason = "ambiguous description"


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


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (a multidict's lines; a plain mapping's one value)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]


def forwarded_for(headers: Mapping[str, str]) -> str | None:
    """``X-Forwarded-For``, all its lines as one list in order (the last hop's is the last), else
    ``X-Real-IP``."""
    lines = _values(headers, FORWARDED_FOR)
    return ", ".join(lines) if len(lines) > 1 else (lines[0] if lines else None) or headers.get("X-Real-IP")


def refuse_duplicates(headers: Mapping[str, str]) -> None:
    """``AmbiguousRequest`` when a header of ``ONCE`` comes more than once: which line a proxy,
    a backend or we would read differs, and the first may be the client's."""
    for name in ONCE:
        if len(_values(headers, name)) > 1:
            raise AmbiguousRequest(
                f"{name} is given more than once: the proxy must replace the client's value, not add to it"
            )


def method_overrides(headers: Mapping[str, str], uri: str) -> tuple[str, ...]:
    """The methods the request asks a backend to take it as: override headers, and ``_method`` in
    the query; upper case, as frameworks read them. A value that is no method name is refused."""
    found = [value for name in METHOD_OVERRIDES if (value := headers.get(name))]
    query = uri.partition("?")[2]
    if query:  # decoded as the backend does: %5Fmethod is _method
        found += [value for key, value in parse_qsl(query, keep_blank_values=True) if key == METHOD_PARAMETER]
    methods = []
    for value in found:
        method = value.strip().upper()
        if not _METHOD.fullmatch(method):
            raise BadDescription(
                f"a method override ({', '.join(METHOD_OVERRIDES)} or {METHOD_PARAMETER}) is not a method name"
            )
        methods.append(method)
    return tuple(dict.fromkeys(methods))


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


def _method(value: str | None, what: str) -> str:
    if not value:
        raise BadDescription(f"{what} is missing")
    if not _METHOD.fullmatch(value):
        raise BadDescription(f"{what} is not an upper-case method name")
    return value


_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}  # Traefik says ws(s) for WebSockets


def _scheme(value: str | None, what: str = "X-Forwarded-Proto") -> str:
    """The scheme, ``http`` when the proxy does not say; a value that is not http(s) (or ws(s),
    the same origin) is refused."""
    if not value:
        return "http"
    scheme = _SCHEMES.get(value.lower())
    if scheme is None:
        raise BadDescription(f"{what} is neither http nor https")
    return scheme


def host_value(value: str | None, what: str) -> str:
    if not value:
        raise BadDescription(f"{what} is missing: the host cannot be known")
    host = hosts.parse(value)
    if host is None:
        raise BadDescription(f"{what} is not a valid host[:port] ({value[:100]!r})")
    return host


def uri_value(value: str | None, what: str) -> str:
    if not value:
        raise BadDescription(f"{what} is missing")
    if len(value) > MAX_URI or not _URI_CHARS.fullmatch(value):
        raise BadDescription(f"{what} is not a path (from /, printable ASCII, at most {MAX_URI} characters)")
    return value


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
            _method(method, "the method"),
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
            _method(method, "the method"),
            _scheme(headers.get("X-Forwarded-Proto")),
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
            _method(headers.get("X-Forwarded-Method"), "X-Forwarded-Method"),
            _scheme(headers.get("X-Forwarded-Proto")),
            host_value(headers.get("X-Forwarded-Host"), "X-Forwarded-Host"),
            uri_value(headers.get("X-Forwarded-Uri"), "X-Forwarded-Uri"),
            client,
        )
    return OriginalRequest(
        Source.DIRECT,
        _method(method, "the method"),
        _scheme(headers.get("X-Forwarded-Proto")),
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
        _method(method, "X-Original-Method"),
        scheme or _scheme(headers.get("X-Forwarded-Proto")),
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
    if any(len(_values(headers, name)) > 1 for name in ("Host", "X-Forwarded-Host", "X-Forwarded-Proto")):
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
