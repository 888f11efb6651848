"""The headers by which a proxy describes the original request, and the checks of each value. Pure.

``forwarding`` assembles the original request from these values; here each one is read exactly
or refused (``BadDescription``, a 400): a method that is not an upper-case name, a host that does
not parse, a path that is not printable ASCII from ``/``. A describing header sent twice is refused
too (``AmbiguousRequest``): a proxy that *adds* its value (rather than replacing the client's)
puts the client's first, and reading the first value would judge what the client claims. Method
overrides (``X-HTTP-Method-Override`` and its kin, ``_method`` in the query), which many
frameworks honour, are collected so the rules judge the request under every method the backend
may take it as (see policy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from forwardauth.core import hosts
from forwardauth.core.refusals import Refused

_METHOD = re.compile(r"[A-Z][A-Z_-]{0,31}")  # as sent: "get" is not GET to every backend
_URI_CHARS = re.compile(r"/[\x21-\x7e]*")
MAX_URI = 8192

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


class BadDescription(Refused):
    """The proxy's description of the request is missing a value it needs, or one does not parse."""

    reason = "malformed description"


class AmbiguousRequest(BadDescription):
    """The subrequest describes the original request two ways: in two protocols' terms at once
    (nginx: X-Original-*, Traefik/Caddy: X-Forwarded-Uri/-Method; the other came from the
    client), or with two values that disagree. Refused, never guessed."""

    reason = "ambiguous description"


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (a multidict's lines; a plain mapping's one value)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]


def refuse_duplicates(headers: Mapping[str, str]) -> None:
    """``AmbiguousRequest`` when a header of ``ONCE`` comes more than once: which line a proxy,
    a backend or we would read differs, and the first may be the client's."""
    for name in ONCE:
        if len(header_values(headers, name)) > 1:
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


def method_value(value: str | None, what: str) -> str:
    if not value:
        raise BadDescription(f"{what} is missing")
    if not _METHOD.fullmatch(value):
        raise BadDescription(f"{what} is not an upper-case method name")
    return value


_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}  # Traefik says ws(s) for WebSockets


def scheme_value(value: str | None, what: str = "X-Forwarded-Proto") -> str:
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
