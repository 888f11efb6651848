"""Where a request carries its access token: ``Authorization: Bearer``, else the cookie. Pure.

``/auth`` also takes a personal access token, as a Bearer token or as the password of
``Authorization: Basic`` (git, WebDAV, ``curl -u``): ``credential``. A request offering one and our
cookie too is refused: exactly one credential says who it is. A Basic header with anything but a
token as its password is no credential of ours and is never checked as a password (one Argon2 per
request would let anyone make us burn a core per request): it is left to the application (one
with a Basic login of its own behind forwardauth keeps it), and the cookie, if any, decides.

A request that offers more than one candidate in the same place (two ``Authorization`` headers,
the cookie twice) is refused rather than read: which one a proxy, a framework or we would pick
differs, and an attacker who can add a cookie (a sibling subdomain can) would choose.

A token is ASCII (base64url and dots; a refresh token base64url): a candidate with any other
character (bytes that were not UTF-8 reach us as surrogates) is no token of ours and is refused
here too, once, rather than failing wherever the text is encoded again later.
"""

from __future__ import annotations

from collections.abc import Sequence

from forwardauth.core.pats import PREFIX, looks_like, parse_basic


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


def credential(authorization: Sequence[str], cookies: Sequence[str], cookie_name: str) -> tuple[str, str | None] | None:
    """``/auth``'s credential: ``(token, None)`` for a Bearer token (a JWT or a personal access
    token) or our cookie, ``(token, user)`` for a personal access token given as the password of
    Basic credentials, ``None`` for none (a Basic password that is not a token is none of ours)."""
    if len(authorization) == 1 and authorization[0][:6].lower() == "basic ":
        given = parse_basic(authorization[0])
        if given is not None and looks_like(given[1]):
            if cookie_value(cookies, cookie_name) is not None:
                raise AmbiguousToken("Basic credentials and the cookie")
            return given[1], given[0]
    token = access_token(authorization, cookies, cookie_name)
    if token is None or not token.startswith(PREFIX):
        return None if token is None else (token, None)
    cookie = cookie_value(cookies, cookie_name)
    if cookie == token:  # a personal access token is sent in the Authorization header only
        return None
    if cookie is not None:
        raise AmbiguousToken("a personal access token and the cookie")
    return token, None
