"""``<prefix>/admin``: the console of FORWARDAUTH_ADMIN_ROLE. Who may use it, and the routes.

Every console handler takes the admin Viewer as an argument and is registered only through
``guarded``, so none can run without the check, which comes before anything of the request is
read (a form included): not signed in -> 303 to the login page; signed in without the role (read
fresh from PostgreSQL, see signedin.Viewer) -> 403 for every console URL, whether or not what it
names exists; then, when configured, a step-up (FORWARDAUTH_ADMIN_SECOND_FACTOR,
FORWARDAUTH_ADMIN_MAX_AUTH_AGE) through the login page's machinery, as /mfa does.

The pages are in admin_users (users; their tokens: admin_tokens) and admin_system (sessions,
clients, keys, audit trail), with what they share in admin_pages.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from forwardauth.accounts import secondfactor
from forwardauth.http import admin_system, admin_tokens, admin_users
from forwardauth.http.admin_pages import Handler, Route, console_page
from forwardauth.http.common import see_other
from forwardauth.http.i18n import _
from forwardauth.http.secondfactor import BrowserSession, begin, prefix_of, reauth_href
from forwardauth.http.services import SERVICES, Services
from forwardauth.http.signedin import Viewer, login_href, viewer


def forbidden(services: Services, who: Viewer, reason: str | None = None) -> web.Response:
    """403: not an administrator (or the step-up the console needs is impossible here)."""
    return console_page(services, who, "admin_forbidden.html", "", 403, reason=reason, notice=None)


async def admin_of(request: web.Request, services: Services, back: str) -> Viewer | web.Response:
    """The administrator asking, or the answer for anyone else (sign in, 403, step up).
    ``back``: where signing in or stepping up returns to."""
    settings = services.settings
    who = await viewer(request, services)
    if isinstance(who, web.Response):
        return see_other(login_href(request, services, back))
    if not who.is_admin:
        return forbidden(services, who)
    if not (settings.admin_second_factor or settings.admin_max_auth_age):
        return who
    auth, now = who.auth, time.time()
    if auth is None or (settings.admin_max_auth_age and auth.age(now) > settings.admin_max_auth_age):
        return see_other(reauth_href(request, settings, back))
    if not settings.admin_second_factor or auth.multi_factor:
        return who
    if settings.second_factor == "off":
        reason = _(
            "The console needs a second factor (FORWARDAUTH_ADMIN_SECOND_FACTOR), but second factors are off on "
            "this server (FORWARDAUTH_SECOND_FACTOR)."
        )
        return forbidden(services, who, reason)
    enrolled = await secondfactor.enrolled(services, who.user.id)
    if not enrolled.any and auth.age(now) > secondfactor.RECENT_AUTH:
        return see_other(reauth_href(request, settings, back))  # enrolling needs a fresh password
    held = BrowserSession(who.user.id, who.user.username, who.sid, auth)
    return await begin(request, services, held.stepping_up(back, must_enrol=not enrolled.any))


def guarded(handler: Handler, back: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``handler`` behind the access check. ``back`` ("" for a page: the page itself)."""

    async def checked(request: web.Request) -> web.Response:
        services = request.app[SERVICES]
        if back:
            here = back.format_map({name: quote(value, safe="") for name, value in request.match_info.items()})
        else:
            here = request.rel_url.raw_path_qs
        who = await admin_of(request, services, prefix_of(request, services.settings) + here)
        if isinstance(who, web.Response):
            return who
        return await handler(request, services, who)

    return checked


async def home(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``GET /admin``: the users page."""
    return see_other(f"{who.prefix}/admin/users")


def add_routes(app: web.Application) -> None:
    routes: list[Route] = [
        ("GET", "/admin", home, ""),
        *admin_users.ROUTES,
        *admin_tokens.ROUTES,
        *admin_system.ROUTES,
    ]
    for method, path, handler, back in routes:
        app.router.add_route(method, path, guarded(handler, back))
