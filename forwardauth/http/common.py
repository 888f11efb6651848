"""Reading requests (who the client is, the bounded fields of a body, the token presented) and
the answers every handler gives (JSON, pages, token responses, errors)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from forwardauth.accounts.signin import Throttled
from forwardauth.config import Settings
from forwardauth.core.credentials import AmbiguousToken, access_token
from forwardauth.core.csrf import form_post_allowed, origin_of
from forwardauth.core.forwarding import client_address as forwarded_client
from forwardauth.core.forwarding import forwarded_for, is_trusted, public_origin
from forwardauth.core.tokens import MintedToken
from forwardauth.http.pages import page_headers

MAX_BODY = 64 * 1024
MAX_FIELD = 4096
JSON = "application/json"


def client_address(request: web.Request, settings: Settings) -> str | None:
    """The real client's address, as access rules see it (the peer when it is no trusted proxy)."""
    remote = request.remote
    if not is_trusted(remote, settings.trusted_proxies):
        return remote
    # Every X-Forwarded-For line (a proxy may add its own); an unreadable hop (only a trusted
    # sender can produce one): the proxy is all we know.
    return forwarded_client(forwarded_for(request.headers), remote, settings.trusted_proxies) or remote


class BadInput(Exception):
    """The client sent something we cannot read; answered 400 (or the given status)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def error_response(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status=status)


def token_of(request: web.Request, cookie_name: str) -> str | None:
    """The access token: ``Authorization: Bearer`` first, then the cookie (``AmbiguousToken``: two)."""
    return access_token(
        request.headers.getall(hdrs.AUTHORIZATION, ()), request.headers.getall(hdrs.COOKIE, ()), cookie_name
    )


def bearer_or_cookie(request: web.Request, cookie_name: str) -> str | None:
    """The access token, for endpoints other than /auth: two of them are a 401."""
    try:
        return token_of(request, cookie_name)
    except AmbiguousToken as exc:
        raise BadInput(str(exc), status=401) from None


def refuse_cross_site(request: web.Request, settings: Settings) -> None:
    """403 for a browser form post from a page not ours (see csrf); JSON and Bearer calls pass."""
    if request.content_type == JSON or hdrs.AUTHORIZATION in request.headers:
        return
    own = (
        public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies),
        origin_of(settings.issuer),
        origin_of(settings.login_url),
    )
    if not form_post_allowed(
        request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.REFERER), own, settings.allowed_domains
    ):
        raise BadInput("cross-site form post refused: the Origin is not this service's", status=403)


def is_browser(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def wants_json(request: web.Request) -> bool:
    return request.content_type == JSON or (
        JSON in request.headers.get("Accept", "") and "text/html" not in request.headers.get("Accept", "")
    )


class BodyTooLarge(BadInput):
    """Over ``client_max_size``: aiohttp's own 413 is plain text, ours JSON like every other error."""

    def __init__(self) -> None:
        super().__init__(f"the request body is over {MAX_BODY} bytes", status=413)


async def posted_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The parsed form body; a malformed one (multipart without boundary, bytes not in the declared
    charset) is a 400, and so is one aiohttp cannot decode: an unknown charset (LookupError), an
    unknown Content-Transfer-Encoding of a part (RuntimeError), a part's headers it cannot parse
    (HttpProcessingError; aiohttp also loses its place after a ``_charset_`` part). A large one is a 413."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge() from None
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:
        raise BadInput(f"malformed form body: {exc}") from None


def bounded(value: str) -> bool:
    """A field value we take: at most MAX_FIELD characters, no NUL (every form and JSON field)."""
    return len(value) <= MAX_FIELD and "\x00" not in value


async def json_object(request: web.Request) -> dict[str, Any]:
    """The JSON object posted (within the body limit); anything else is a 400."""
    try:
        data = orjson.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge() from None
    except orjson.JSONDecodeError:
        raise BadInput("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput("body must be a JSON object")
    return data


async def read_fields(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    """String fields from a JSON object or a form body; missing fields come back empty."""
    if request.content_type == JSON:
        data = await json_object(request)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = dict(await posted_form(request))
    elif not request.body_exists:
        data = {}
    else:
        raise BadInput("use application/json or a form", status=415)
    fields: dict[str, str] = {}
    for name in names:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise BadInput(f"{name} must be a string")
        if not bounded(value):
            raise BadInput(f"{name} is too long or contains NUL")
        fields[name] = value
    return fields


def html_page(body: str, settings: Settings, status: int = 200) -> web.Response:
    """One of our pages, with its headers (see pages.page_headers: CSP, no caching, no framing)."""
    return web.Response(text=body, status=status, content_type="text/html", headers=page_headers(settings))


def token_response(
    settings: Settings,
    minted: MintedToken,
    refresh_token: str | None,
    headers: dict[str, str],
    id_token: str | None = None,
) -> web.Response:
    """The token answer of /login, /refresh and the OAuth2 token endpoint (RFC 6749 5.1; with an
    ``id_token`` for an OpenID Connect code exchange, OIDC Core 3.1.3.3)."""
    body: dict[str, Any] = {
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": settings.access_ttl,
    }
    if refresh_token:
        body["refresh_token"] = refresh_token
    if minted.claims.scope:
        body["scope"] = minted.claims.scope
    if id_token:
        body["id_token"] = id_token
    return json_response(body, headers=headers)


def too_many_attempts(exc: Throttled, headers: dict[str, str]) -> web.Response:
    """The 429 of a throttled sign-in, for a JSON client (a browser gets the form, saying so)."""
    return json_response(
        {"error": "too_many_attempts", "error_description": str(exc)},
        status=429,
        headers={**headers, "Retry-After": str(exc.retry_after)},
    )
