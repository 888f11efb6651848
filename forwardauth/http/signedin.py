"""Who is looking at a portal or console page, and the pieces every such page shares: the layout's
values (portal_base.html), the CSRF token of its forms, and reading a posted form.

The viewer is the browser's live access cookie (a user's session, never a client's token), and the
user's row as PostgreSQL has it now: roles and "disabled" are read fresh, so an administrator
whose role was taken away a moment ago is no longer one here, whatever their token still says.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from forwardauth.accounts.issue import live_claims
from forwardauth.core.authn import Authentication
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.http import formtokens
from forwardauth.http.common import html_page, read_fields, refuse_cross_site, see_other, token_of
from forwardauth.http.pages import render
from forwardauth.http.secondfactor import prefix_of
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import users


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in user on one of our pages."""

    user: users.User
    sid: str  # the session the access cookie belongs to
    auth: Authentication | None  # how and when that session signed in (None: a token from before)
    prefix: str  # where forwardauth's pages are, as the browser sees them
    is_admin: bool  # has FORWARDAUTH_ADMIN_ROLE now
    csrf_token: str  # for every form on the page (formtokens, bound to ``sid``)


def login_href(request: web.Request, services: Services, rd: str | None = None) -> str:
    """The login page, then back to ``rd`` (default: the page asked for, path and query)."""
    prefix = prefix_of(request, services.settings)
    back = rd if rd is not None else prefix + request.rel_url.path_qs
    return f"{prefix}/login?rd={quote(back, safe='')}"


async def viewer(request: web.Request, services: Services) -> Viewer | web.Response:
    """The viewer, or the answer that sends the browser to sign in (and back here)."""
    try:
        token = token_of(request, services.settings.cookie_name)
    except AmbiguousToken:
        token = None
    claims = await live_claims(services, token) if token else None
    if claims is None or claims.identity.client is not None:
        return see_other(login_href(request, services))
    user = await services.db.run(users.get, claims.identity.subject)
    if user is None or user.disabled:  # gone since the token was minted: its revocation is under way
        return see_other(login_href(request, services))
    return Viewer(
        user=user,
        sid=claims.sid,
        auth=claims.auth,
        prefix=prefix_of(request, services.settings),
        is_admin=services.settings.admin_role in user.roles,
        csrf_token=formtokens.make(services, formtokens.session_binding(claims.sid)),
    )


def signed_in_page(
    show: Callable[[web.Request, Services, Viewer], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A GET handler of one of the viewer's pages: ``show(request, services, who)``, once we know
    who is looking (not signed in: off to the login page and back)."""

    @functools.wraps(show)
    async def handler(request: web.Request) -> web.Response:
        services = request.app[SERVICES]
        who = await viewer(request, services)
        if isinstance(who, web.Response):
            return who
        return await show(request, services, who)

    return handler


def when(moment: datetime | int) -> str:
    """A time as the portal's and console's pages show it: UTC, to the minute, the same for every
    reader (a number: seconds since the epoch)."""
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def page(
    services: Services,
    who: Viewer,
    template: str,
    section: str,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    **values: Any,
) -> web.Response:
    """``template`` (extending portal_base.html) for ``who``, with the layout's values."""
    body = render(
        template,
        prefix=who.prefix,
        username=who.user.username,
        is_admin=who.is_admin,
        csrf_token=who.csrf_token,
        section=section,
        notice=notice,
        error=error,
        when=when,
        **values,
    )
    return html_page(body, services.settings, status)


async def posted(request: web.Request, services: Services, who: Viewer, names: tuple[str, ...]) -> dict[str, str]:
    """A form of one of ``who``'s pages: from our own origin (else 403), with a CSRF token made for
    this session (else 403), its fields ``names`` (missing ones empty)."""
    refuse_cross_site(request, services.settings)
    fields = await read_fields(request, (*names, formtokens.FIELD))
    formtokens.check(services, formtokens.session_binding(who.sid), fields)
    return fields


async def signed_in_form(
    request: web.Request, services: Services, names: tuple[str, ...]
) -> tuple[Viewer, dict[str, str]] | web.Response:
    """Who posted which fields. The body is read first, so a malformed one is a 400 whoever sends
    it (as documented); then not signed in is a 303 to the login page, and a form not from this
    session's page a 403 (``posted``, reading the same body again from aiohttp's cache)."""
    await read_fields(request, (*names, formtokens.FIELD))
    who = await viewer(request, services)
    if isinstance(who, web.Response):
        return who
    return who, await posted(request, services, who, names)


def field_list(fields: Mapping[str, str], name: str) -> list[str]:
    """A field holding several values separated by commas, spaces or lines, each stripped."""
    return [part for part in fields.get(name, "").replace(",", " ").split() if part]
