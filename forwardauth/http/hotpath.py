"""``/auth`` answered ahead of the application's router: the hot path's own dispatch.

On every request aiohttp's application walks its router (a path's parts against the index of
~100 routes), builds and freezes match info, looks up the cached middleware chain and enters a
wrapper of its own; for ``/auth`` that is about a tenth of a check's CPU (perf/README.md). The
server (``limits.Runner``) hands each request to :func:`front` first. A request whose path the
router would give to the check (exactly ``/auth``, or under the Envoy prefix, matched by the
route's own resource) gets the match info the router would have made and runs the same handler
inside one coroutine that does what the application's middlewares do (``observe``, ``errors``:
counted, logged and guarded as before; :func:`checked`). Anything else, and a request with
``Expect`` (aiohttp answers its ``100-continue`` in the router's path), goes to the application.

The routes stay registered in the router too, so the same answer comes either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import cast

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from forwardauth.http.errors import answer_error, errors, page_context
from forwardauth.http.metrics import access_debug, answered
from forwardauth.http.services import SERVICES
from forwardauth.logs import enter_request, leave_request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RequestHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Ahead:
    """The handler served ahead of the router, for the exact path and under the prefix."""

    handler: Handler
    path: str
    prefix: str


AHEAD = web.AppKey("ahead", Ahead)


def serve_ahead(app: web.Application, handler: Handler, path: str, prefix: str) -> None:
    """Serve ``handler`` ahead of the router for ``path`` and under ``prefix``: both must also be
    routes of ``app`` to ``handler`` (the router's answer, and the match info, come from them)."""
    app[AHEAD] = Ahead(handler, path, prefix)


def checked(app: web.Application, handler: Handler) -> Handler:
    """``handler`` with what the application's two middlewares do around it (``metrics.observe``:
    count, time, the log context; ``errors``: the pages' context, errors mapped to their answers),
    in one coroutine: as two layers they were a tenth of the check's instructions (perf/README.md).
    The application must have exactly those two, so that none is skipped here unseen."""
    names = [getattr(m, "__name__", "?") for m in app.middlewares]
    if names != ["observe", "errors"] or app.middlewares[1] is not errors:
        raise RuntimeError(f"/auth's own chain does what observe and errors do; the application has {names}")
    services = app[SERVICES]
    settings, stats, debug = services.settings, services.metrics.named(handler.__name__), access_debug()

    async def check(request: web.Request) -> web.StreamResponse:
        status = 0  # stays 0 when nothing was answered (cancelled): not counted, as observe does
        start = perf_counter()
        current = enter_request(request)
        page_context(request, settings)
        try:
            try:
                response = await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:
                response = answer_error(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if status:
                answered(stats, request, status, perf_counter() - start, debug)
            leave_request(current)

    return check


def front(app: web.Application, app_handler: RequestHandler) -> RequestHandler:
    """The server's request handler: the check ahead of the router, else ``app_handler``
    (the application's own). ``app`` is frozen (started) by now."""
    ahead = app.get(AHEAD)
    if ahead is None:
        return app_handler
    exact, under = routes_of(app, ahead)
    exact_match = web.UrlMappingMatchInfo({}, exact)
    exact_match.add_app(app)
    exact_match.freeze()
    chain = checked(app, ahead.handler)
    path, prefix, subtree = ahead.path, ahead.prefix, ahead.prefix + "/"
    assert under.resource is not None  # routes_of keeps only routes with a resource
    resolve_under = under.resource.resolve

    async def dispatch(base: BaseRequest) -> web.StreamResponse:
        request = cast(web.Request, base)  # made by the application's request factory
        where = request.raw_path  # as sent: "/auth" reads the same decoded, the usual case
        if where != path:
            where = request.rel_url.path_safe  # what the router matches on
        if where == path:
            match = exact_match
        elif where == prefix or where.startswith(subtree):
            found, _ = await resolve_under(request)
            if found is None:
                return await app_handler(request)
            found.add_app(app)
            found.freeze()
            match = found
        else:
            return await app_handler(request)
        if hdrs.EXPECT in request.headers:
            return await app_handler(request)
        request._match_info = match  # as the application sets it after resolving
        return await chain(request)

    return dispatch


def routes_of(app: web.Application, ahead: Ahead) -> tuple[web.AbstractRoute, web.AbstractRoute]:
    """The application's routes to the handler: the one for the exact path, the one under the prefix."""
    exact = under = None
    for route in app.router.routes():
        resource = route.resource
        if route.handler is not ahead.handler or resource is None:
            continue
        if resource.canonical == ahead.path:
            exact = route
        elif resource.canonical.startswith(ahead.prefix + "{"):
            under = route
    if exact is None or under is None:
        raise RuntimeError(f"{ahead.path} and {ahead.prefix}... must be routes to {ahead.handler.__name__}")
    return exact, under
