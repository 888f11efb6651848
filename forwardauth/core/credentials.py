"""Where a request carries its access token: ``Authorization: Bearer``, else the cookie. Pure.

A request that offers more than one candidate in the same place (two ``Authorization`` headers,
the cookie twice) is refused rather than read: which one a proxy, a framework or we would pick
differs, and an attacker who can add a cookie (a sibling subdomain can) would choose.

A token is ASCII (base64url and dots; a refresh token base64url): a candidate with any other
character (bytes that were not UTF-8 reach us as surrogates) is no token of ours and is refused
here too, once, rather than failing wherever the text is encoded again later.
"""

from __future__ import annotations

from collections.abc import Sequence


class AmbiguousToken(ValueError):
    """More than one token where one is expected (or one that cannot be read: ``UnreadableToken``)."""


class UnreadableToken(AmbiguousToken):
    """A token candidate that is not ASCII text: refused as an ambiguous one is (401)."""


UNREADABLE = "the token is not ASCII text"


def access_token(authorization: Sequence[str], cookies: Sequence[str], cookie_name: str) -> str | None:
    """The token from the ``Authorization`` header values, else from the ``Cookie`` header values."""
    if len(authorization) > 1:
        raise AmbiguousToken("more than one Authorization header")
    if authorization:
        scheme, _, value = authorization[0].partition(" ")
        token = value.strip()
        if token and scheme.lower() == "bearer":
            if not token.isascii():  # inline, not a call: this is /auth's hot path
                raise UnreadableToken(UNREADABLE)
            return token
    return cookie_value(cookies, cookie_name)


def cookie_value(headers: Sequence[str], name: str) -> str | None:
    """The value of cookie ``name`` in ``Cookie`` headers (HTTP/2 may split the list over several)."""
    key = name + "="
    found: str | None = None
    for header in headers:
        if key not in header:  # the usual case for most requests, decided in C
            continue
        for pair in header.split(";"):
            pair = pair.strip()
            if pair.startswith(key):
                if found is not None:
                    raise AmbiguousToken(f"cookie {name} is given more than once")
                found = pair[len(key) :].strip()
    if found and not found.isascii():
        raise UnreadableToken(UNREADABLE)
    return found or None
