"""``/auth`` answered ahead of the application's router: the hot path's own dispatch.

On every request aiohttp's application walks its router (a path's parts against the index of
~100 routes), builds and freezes match info, looks up the cached middleware chain and enters a
wrapper of its own; for ``/auth`` that is about a tenth of a check's CPU (perf/README.md). The
server (``limits.Runner``) hands each request to :func:`front` first. A request whose path the
router would give to the check (exactly ``/auth``, or under the Envoy prefix, matched by the
route's own resource) gets the match info the router would have made and runs the application's
own middlewares (``observe``, ``errors``: counted, logged and guarded as before), composed once
at start around the same handler. Anything else, and a request with ``Expect`` (aiohttp answers
its ``100-continue`` in the router's path), goes to the application as before.

The routes stay registered in the router too, so the same answer comes either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial, update_wrapper

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

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


def middleware_chain(app: web.Application, handler: Handler) -> Handler:
    """``handler`` inside the application's middlewares, outermost first, as aiohttp composes them
    for a route (each layer named after the handler, which ``observe`` counts by)."""
    for middleware in reversed(app.middlewares):
        handler = update_wrapper(partial(middleware, handler=handler), handler)
    return handler


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
    chain = middleware_chain(app, ahead.handler)
    path, prefix, subtree = ahead.path, ahead.prefix, ahead.prefix + "/"
    resolve_under = under.resource.resolve if under.resource is not None else None

    async def dispatch(request: BaseRequest) -> web.StreamResponse:
        assert isinstance(request, web.Request)  # made by the application's request factory
        where = request.raw_path  # as sent: "/auth" reads the same decoded, the usual case
        if where != path:
            where = request.rel_url.path_safe  # what the router matches on
        if where == path:
            match = exact_match
        elif (where == prefix or where.startswith(subtree)) and resolve_under is not None:
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
