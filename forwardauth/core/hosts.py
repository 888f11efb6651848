"""Host names as a proxy routes on them. Pure.

A host is parsed strictly (``name[:port]`` or ``[IPv6][:port]``), and anything else is no host:
``secret.example.test:`` (empty port), ``:80x``, ``a b``, ``%`` and ``user@host`` are refused by
the caller, never replaced by another value, because a proxy may still route such a request to
a real virtual host while a fallback would judge another one.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = re.compile(rf"({_LABEL}(?:\.{_LABEL})*\.?)(?::([0-9]{{1,5}}))?")
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\](?::([0-9]{1,5}))?")
MAX_NAME = 253


def parse(value: str | None) -> str | None:
    """``value`` as ``host[:port]`` in lower case when it is one, else ``None``."""
    if not value:
        return None
    match = _NAME.fullmatch(value)
    if match is not None:
        if len(match[1].rstrip(".")) > MAX_NAME:
            return None
    else:
        match = _IPV6.fullmatch(value)
        if match is None:
            return None
        try:
            ipaddress.IPv6Address(match[1])
        except ValueError:
            return None
    port = match[2]
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return value.lower()


def name_of(host: str) -> str:
    """The name a rule matches: lower case, without port or trailing dot; IPv6 in its short form
    (``[::1]``). For a value that ``parse`` refuses, a best effort that never matches more."""
    host = host.strip().lower()
    if host.startswith("["):
        inner = host[1:].split("]", 1)[0]
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            return f"[{inner}]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")
