"""The console's users: ``/admin/users`` (search, create) and ``/admin/users/{username}`` (details,
sessions, and the actions: disable, enable, roles, second factors reset, sessions ended, a new
set-password link).

The actions are accounts.admin's (each audited with the acting administrator); a store's refusal
(users.UserError: a bad name, role or address) is the page again with its message (400), an
AdminError (an administrator locking themself out, e-mail without SMTP) the same with 409.
A one-time set-password link is shown once, on a 200 page that is never cached, never in a URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from forwardauth.accounts import admin as accounts_admin
from forwardauth.accounts import pats, portal
from forwardauth.accounts.admin import Actor
from forwardauth.http import i18n, pat_pages
from forwardauth.http.admin_pages import (
    BadFilter,
    Handler,
    Route,
    actor,
    console_view,
    links_base,
    query_value,
    refusal_status,
    saved,
    secret_page,
    user_href,
)
from forwardauth.http.common import bounded, see_other
from forwardauth.http.i18n import _
from forwardauth.http.services import Services
from forwardauth.http.signedin import Viewer, field_list, posted
from forwardauth.stores import secondfactors, users
from forwardauth.stores.postgres import Connection

ACTIONS = (
    "disable",
    "enable",
    "roles",
    "mfa-reset",
    "end-sessions",
    "password-link",
    "tokens/new",
    "tokens/[^/]+/revoke",
)
# Any character a username may hold, ``/`` included (quoted as %2F in our links, matched as such);
# a user's page is not also the URL of an action on them, nor of the create form ("new": below).
USER = r"/admin/users/{username:[\s\S]+}"  # any character a username may hold, a line break too
USER_PAGE = r"/admin/users/{username:(?!new$)(?![\s\S]*/(?:" + "|".join(ACTIONS) + r")$)[\s\S]+}"
BACK = "/admin/users/{username}"  # the user's page, for a sign-in or step-up before an action
CREATE_FIELDS = ("username", "email", "roles", "delivery")


def set_password_href(base: str, token: str) -> str:
    """The link an admin-created account chooses its password with (the portal's reset page)."""
    return f"{base}/account/reset?token={token}"


async def users_page(
    request: web.Request,
    services: Services,
    who: Viewer,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> web.Response:
    """The search and the create form (``form``: the values posted, kept after an error)."""
    try:
        query = query_value(request.query, "q") if request.method == "GET" else ""
    except BadFilter as exc:
        query, status, error = "", 400, str(exc)
    found = await accounts_admin.search_users(services, query)

    def factors(conn: Connection) -> list[secondfactors.Enrolled]:
        return [secondfactors.enrolled(conn, user.id) for user in found]

    rows = list(zip(found, await services.db.run(factors), strict=True))
    return console_view(
        request,
        services,
        who,
        "admin_users.html",
        "users",
        status,
        notice=saved(request),
        error=error,
        q=query,
        rows=rows,
        form=form or {"username": "", "email": "", "roles": "", "delivery": "link"},
        smtp=services.settings.smtp_url is not None,
    )


async def user_list(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``GET /admin/users?q=``."""
    return await users_page(request, services, who)


async def create(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/users/new``: the account, and its set-password link shown once or e-mailed."""
    fields = await posted(request, services, who, CREATE_FIELDS)
    by_mail = fields["delivery"] == "email"
    form = {name: fields[name] for name in CREATE_FIELDS}
    if by_mail and services.settings.smtp_url is None:
        error = _("No mail server is configured (FORWARDAUTH_SMTP_URL): show the link instead.")
        return await users_page(request, services, who, 409, error, form)
    base = links_base(request, services, who)
    email = fields["email"].strip() or None
    try:
        user, token = await accounts_admin.create_user(
            services,
            actor(request, services, who),
            fields["username"],
            email,
            field_list(fields, "roles"),
            by_mail,
            base,
            translations=i18n.TRANSLATIONS[i18n.current()],  # the mail in the administrator's language
        )
    except users.UserError as exc:
        return await users_page(request, services, who, 400, str(exc), form)
    except accounts_admin.AdminError as exc:
        return await users_page(request, services, who, 409, str(exc), form)
    if by_mail:
        return see_other(user_href(who, user.username) + "?saved=created")
    return secret_page(
        services,
        who,
        "users",
        kind="link",
        secret=set_password_href(base, token),
        holder=user.username,
        back=user_href(who, user.username),
    )


async def user_page(
    request: web.Request,
    services: Services,
    who: Viewer,
    username: str,
    status: int = 200,
    error: str | None = None,
    token_form: dict[str, str] | None = None,
) -> web.Response:
    """One user's page; a name that is no user's: the users page with a 404. ``token_form``: the
    token form's values posted, kept after an error."""
    found = await accounts_admin.user_detail(services, username) if bounded(username) else None
    if found is None:
        error = _("There is no user named {name}.").format(name=username)
        return await users_page(request, services, who, 404, error)
    user, enrolled = found
    sessions = await portal.sessions_of(services, user.id, who.sid)
    tokens = await pats.list_for(services, user.username)
    return console_view(
        request,
        services,
        who,
        "admin_user.html",
        "users",
        status,
        error=error,
        user=user,
        enrolled=enrolled,
        sessions=sessions,
        href=user_href(who, user.username),
        roles=" ".join(user.roles),
        is_self=user.id == who.user.id,
        **pat_pages.table_values(tokens, token_form, services.settings),
    )


async def user_detail(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``GET /admin/users/{username}``."""
    return await user_page(request, services, who, request.match_info["username"])


async def user_named_new(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``GET /admin/users/new``: the page of a user named "new" (the create form posts there)."""
    return await user_page(request, services, who, "new")


Action = Callable[[Services, Actor, str, dict[str, str]], Awaitable[object]]


def user_action(act: Action, saved_key: str, names: tuple[str, ...] = ()) -> Handler:
    """A POST on a user's page: ``act(services, actor, username, fields)``, then back to the page
    saying ``saved_key``; a name that is no user's: 404, and nothing done."""

    async def handler(request: web.Request, services: Services, who: Viewer) -> web.Response:
        username = request.match_info["username"]
        fields = await posted(request, services, who, names)
        if not bounded(username):  # no user's name (and PostgreSQL refuses NUL)
            return await user_page(request, services, who, username)
        try:
            await act(services, actor(request, services, who), username, fields)
        except (users.UserError, accounts_admin.AdminError) as exc:
            return await refused(request, services, who, username, exc)
        return see_other(f"{user_href(who, username)}?saved={saved_key}")

    return handler


async def refused(request: web.Request, services: Services, who: Viewer, username: str, exc: Exception) -> web.Response:
    """The user's page saying why an action was refused: 409 for an AdminError, else 400 (404
    when the user is not there)."""
    return await user_page(request, services, who, username, refusal_status(exc), str(exc))


async def password_link(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/users/{username}/password-link``: a new set-password link, shown once (the
    user's earlier unused ones stop working)."""
    username = request.match_info["username"]
    await posted(request, services, who, ())
    if not bounded(username):
        return await user_page(request, services, who, username)
    try:
        token = await accounts_admin.password_link(services, actor(request, services, who), username)
    except (users.UserError, accounts_admin.AdminError) as exc:
        return await refused(request, services, who, username, exc)
    href = set_password_href(links_base(request, services, who), token)
    return secret_page(services, who, "users", kind="link", secret=href, holder=username, back=user_href(who, username))


async def _disable(services: Services, by: Actor, username: str, fields: dict[str, str]) -> object:
    return await accounts_admin.set_disabled(services, by, username, True)


async def _enable(services: Services, by: Actor, username: str, fields: dict[str, str]) -> object:
    return await accounts_admin.set_disabled(services, by, username, False)


async def _roles(services: Services, by: Actor, username: str, fields: dict[str, str]) -> object:
    return await accounts_admin.set_roles(services, by, username, field_list(fields, "roles"))


async def _mfa_reset(services: Services, by: Actor, username: str, fields: dict[str, str]) -> object:
    return await accounts_admin.reset_second_factors(services, by, username)


async def _end_sessions(services: Services, by: Actor, username: str, fields: dict[str, str]) -> object:
    return await accounts_admin.end_user_sessions(services, by, username)


ROUTES: list[Route] = [
    ("GET", "/admin/users", user_list, ""),
    ("POST", "/admin/users/new", create, "/admin/users"),
    ("GET", USER_PAGE, user_detail, ""),
    ("GET", "/admin/users/new", user_named_new, ""),
    ("POST", USER + "/disable", user_action(_disable, "disabled"), BACK),
    ("POST", USER + "/enable", user_action(_enable, "enabled"), BACK),
    ("POST", USER + "/roles", user_action(_roles, "roles", ("roles",)), BACK),
    ("POST", USER + "/mfa-reset", user_action(_mfa_reset, "mfa_reset"), BACK),
    ("POST", USER + "/end-sessions", user_action(_end_sessions, "sessions_ended"), BACK),
    ("POST", USER + "/password-link", password_link, BACK),
]
