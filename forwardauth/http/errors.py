"""The error middleware: bad input is a clear 4xx and a store outage a 503; never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from forwardauth.config import Settings
from forwardauth.http.common import BadInput, error_response, html_page, is_browser, json_response, wants_json
from forwardauth.http.i18n import ACCEPT_LANGUAGE, _
from forwardauth.http.login import login_action
from forwardauth.http.pages import BRANDING, login_page
from forwardauth.http.services import SERVICES
from forwardauth.sealing import SealError
from forwardauth.stores.outages import OutageLog
from forwardauth.stores.postgres import POSTGRES_DOWN
from forwardauth.stores.redis import REDIS_DOWN

log = logging.getLogger("forwardauth.web")  # one name for the HTTP layer's lines, as before

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


OUTAGES = OutageLog()  # one per worker process
RETRY_AFTER_OUTAGE = "2"


def unavailable(request: web.Request, what: str) -> web.Response:
    """503 while a store is down: the login page with the reason for a browser, else JSON."""
    headers = {"Retry-After": RETRY_AFTER_OUTAGE, "Cache-Control": "no-store"}
    if request.path == "/login" and is_browser(request) and not wants_json(request):
        settings = request.app[SERVICES].settings
        response = html_page(
            login_page(
                action=login_action(request, settings),
                rd="",
                error=_("Sign-in is unavailable right now. Try again in a moment."),
            ),
            settings,
            503,
        )
        response.headers.update(headers)
        return response
    return json_response({"error": "temporarily_unavailable", "error_description": what}, 503, headers)


def page_context(request: web.Request, settings: Settings) -> None:
    """Where a request's pages learn its language and the site's branding (see http.i18n)."""
    ACCEPT_LANGUAGE.set(request.headers.get("Accept-Language"))
    BRANDING.set(settings)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map bad input and store outages to clear 4xx/503 answers; never leak a traceback."""
    page_context(request, request.app[SERVICES].settings)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        return answer_error(request, exc)


def answer_error(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer for what a handler raised (``errors``, and /auth's own chain in hotpath)."""
    if isinstance(exc, BadInput):
        return error_response(exc.status, "invalid_request", str(exc))
    if isinstance(exc, UnicodeError):  # bytes a request carried that do not decode (a source missed a check)
        log.info("refused %s %s: undecodable input (%s)", request.method, request.path, type(exc).__name__)
        return error_response(400, "invalid_request", "the request holds bytes that are not valid text")
    if isinstance(exc, REDIS_DOWN):
        OUTAGES.failed("redis", exc)
        request.app[SERVICES].metrics.store_errors["redis"] += 1
        return unavailable(request, "the session store is unavailable")
    if isinstance(exc, SealError):  # the sealing keys cannot be read: TOTP is out of order, not the request
        log.error("TOTP secrets cannot be sealed or opened: %s", exc)
        return unavailable(request, "second factors are unavailable")
    if isinstance(exc, POSTGRES_DOWN):
        OUTAGES.failed("postgres", exc)
        request.app[SERVICES].metrics.store_errors["postgres"] += 1
        return unavailable(request, "the user database is unavailable")
    if type(exc) is LookupError:  # codecs.lookup: a charset the request named does not exist
        log.info("refused %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_request", "the request names an unknown charset or encoding")
    log.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "server_error", "internal error")
