"""The console beyond users: every live session (``/admin/sessions``), the OAuth clients
(``/admin/clients``), the signing keys (``/admin/keys``) and the audit trail (``/admin/audit``).

A client's secret is shown once, on a 200 page that is never cached; a store's refusal
(clients.ClientError) is the page again with its message (400), an AdminError with 409. The
audit trail's filters are read strictly: a value that is not a date, an event or a number is a
400 page naming the field, never a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from urllib.parse import urlencode

from aiohttp import web

from forwardauth.accounts import admin as accounts_admin
from forwardauth.accounts import portal
from forwardauth.http.admin_pages import (
    BadFilter,
    Handler,
    Route,
    actor,
    console_view,
    query_value,
    refusal_status,
    secret_page,
    user_href,
)
from forwardauth.http.common import BadInput, bounded, posted_form, see_other
from forwardauth.http.i18n import _
from forwardauth.http.services import Services
from forwardauth.http.signedin import Viewer, field_list, posted
from forwardauth.stores import audit, clients

PER_PAGE = 50
MAX_PAGE = 10_000  # deeper than anyone pages; beyond it a 400, not a huge OFFSET
CLIENT = r"/admin/clients/{client_id:[\s\S]+}"  # any text: an unknown id is the page's 400, not a 404 route
CLIENT_FIELDS = ("client_id", "redirect_uris", "scopes", "grant_types", "public", "trusted")


def page_number(text: str) -> int:
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > MAX_PAGE:
        raise BadFilter(_("page: give a number from 0 to {most}.").format(most=MAX_PAGE))
    return int(text)


# --- sessions ------------------------------------------------------------------------------------


async def sessions_page(
    request: web.Request, services: Services, who: Viewer, status: int = 200, error: str | None = None
) -> web.Response:
    """``GET /admin/sessions?q=&page=``: every live session, PER_PAGE at a time."""
    values = request.query if request.method == "GET" else {}
    try:
        query, number = query_value(values, "q"), page_number(values.get("page", ""))
    except BadFilter as exc:
        query, number, status, error = "", 0, 400, str(exc)
    rows = await portal.all_sessions(services, query, PER_PAGE, number * PER_PAGE)
    more = len(rows) == PER_PAGE
    return console_view(
        request,
        services,
        who,
        "admin_sessions.html",
        "sessions",
        status,
        error=error,
        q=query,
        sessions=rows,
        newer=_query_href(who, "/admin/sessions", q=query, page=str(number - 1)) if number > 0 else None,
        older=_query_href(who, "/admin/sessions", q=query, page=str(number + 1)) if more else None,
    )


def _query_href(who: Viewer, path: str, **values: str) -> str:
    """``path`` with the non-empty ``values`` as its query."""
    query = urlencode({name: value for name, value in values.items() if value})
    return f"{who.prefix}{path}" + (f"?{query}" if query else "")


async def sessions_list(request: web.Request, services: Services, who: Viewer) -> web.Response:
    return await sessions_page(request, services, who)


async def end_session(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/sessions/end`` (``sid``): signed out on every worker and instance at once.
    ``user``: posted from that user's page, which the browser goes back to."""
    fields = await posted(request, services, who, ("sid", "user"))
    if not await accounts_admin.end_session(services, actor(request, services, who), fields["sid"].strip()):
        error = _("That session has already ended.")
        return await sessions_page(request, services, who, 404, error)
    page = user_href(who, fields["user"]) if fields["user"] else f"{who.prefix}/admin/sessions"
    return see_other(f"{page}?saved=session_ended")


# --- clients -------------------------------------------------------------------------------------


async def clients_page(
    request: web.Request,
    services: Services,
    who: Viewer,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
    grants: tuple[str, ...] = (),
) -> web.Response:
    """The clients and the form adding one (``form``, ``grants``: what was posted, after an error)."""
    return console_view(
        request,
        services,
        who,
        "admin_clients.html",
        "clients",
        status,
        error=error,
        clients=await accounts_admin.list_clients(services),
        grant_types=clients.GRANT_TYPES,
        form=form or dict.fromkeys(CLIENT_FIELDS, ""),
        grants=grants,
    )


async def clients_list(request: web.Request, services: Services, who: Viewer) -> web.Response:
    return await clients_page(request, services, who)


async def create_client(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/clients/new``: the client; a confidential one's secret shown once."""
    fields = await posted(request, services, who, CLIENT_FIELDS)
    # Checkboxes: several grant_types fields arrive as one value each; read them all.
    grants = await _checked(request, "grant_types") or tuple(field_list(fields, "grant_types"))
    public, trusted = bool(fields["public"]), bool(fields["trusted"])
    uris = [line.strip() for line in fields["redirect_uris"].splitlines() if line.strip()]
    try:
        client, secret = await accounts_admin.create_client(
            services,
            actor(request, services, who),
            fields["client_id"].strip(),
            uris,
            field_list(fields, "scopes"),
            list(grants),
            public,
            trusted,
        )
    except (clients.ClientError, accounts_admin.AdminError) as exc:
        return await clients_page(request, services, who, refusal_status(exc), str(exc), dict(fields), grants)
    if secret is None:
        return see_other(f"{who.prefix}/admin/clients?saved=client_created")
    return _secret(services, who, client.id, secret)


async def _checked(request: web.Request, name: str) -> tuple[str, ...]:
    """Every value of the form field ``name`` (checkboxes of one name: ``posted`` reads only the
    first), bounded like every field; a JSON body gives them as one field instead."""
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return ()
    values = (await posted_form(request)).getall(name, ())
    if not all(isinstance(value, str) and bounded(value) for value in values):
        raise BadInput(f"{name} must be strings of at most 4096 characters without NUL")
    return tuple(str(value) for value in values if value)


def _secret(services: Services, who: Viewer, client_id: str, secret: str) -> web.Response:
    back = f"{who.prefix}/admin/clients"
    return secret_page(services, who, "clients", kind="client_secret", secret=secret, holder=client_id, back=back)


def client_switch(disabled: bool) -> Handler:
    """``POST /admin/clients/{client_id}/disable`` and ``/enable``."""

    async def handler(request: web.Request, services: Services, who: Viewer) -> web.Response:
        await posted(request, services, who, ())
        by = actor(request, services, who)
        try:
            await accounts_admin.set_client_disabled(services, by, client_of(request), disabled)
        except (clients.ClientError, accounts_admin.AdminError) as exc:
            return await clients_page(request, services, who, refusal_status(exc), str(exc))
        key = "client_disabled" if disabled else "client_enabled"
        return see_other(f"{who.prefix}/admin/clients?saved={key}")

    return handler


def client_of(request: web.Request) -> str:
    """The client id of the path; one that cannot be an id (NUL, too long) is the store's refusal."""
    client_id = request.match_info["client_id"]
    if not bounded(client_id):
        raise clients.ClientError(_("There is no such client."))
    return client_id


async def rotate_secret(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/clients/{client_id}/rotate``: a new secret, shown once; the old one stops working."""
    await posted(request, services, who, ())
    try:
        client_id = client_of(request)
        secret = await accounts_admin.rotate_client_secret(services, actor(request, services, who), client_id)
    except (clients.ClientError, accounts_admin.AdminError) as exc:
        return await clients_page(request, services, who, refusal_status(exc), str(exc))
    return _secret(services, who, client_id, secret)


# --- signing keys ----------------------------------------------------------------------------------


async def keys_page(
    request: web.Request, services: Services, who: Viewer, status: int = 200, error: str | None = None
) -> web.Response:
    """``GET /admin/keys``: the signing keys (none with HS256: a shared secret, no key files)."""
    return console_view(
        request,
        services,
        who,
        "admin_keys.html",
        "keys",
        status,
        error=error,
        keys=await accounts_admin.list_keys(services),
        alg=services.settings.signing_alg,
    )


async def keys_list(request: web.Request, services: Services, who: Viewer) -> web.Response:
    return await keys_page(request, services, who)


async def rotate_key(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/keys/rotate``: a new current key (every worker loads it; see http.reloading)."""
    await posted(request, services, who, ())
    try:
        await accounts_admin.rotate_signing_key(services, actor(request, services, who))
    except accounts_admin.AdminError as exc:
        return await keys_page(request, services, who, 409, str(exc))
    return see_other(f"{who.prefix}/admin/keys?saved=key_rotated")


# --- audit trail ---------------------------------------------------------------------------------

DATE_FORMATS = (("%Y-%m-%d", True), ("%Y-%m-%dT%H:%M", False))  # (format, a whole day)


def moment(field: str, text: str, end: bool) -> datetime:
    """A filter's time (UTC): ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM``, its start (``since``) or
    its end (``until``: that day, or minute, included)."""
    for pattern, whole_day in DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if end:  # the whole day, or minute, named
            parsed = (
                datetime.combine(parsed.date(), time.max)
                if whole_day
                else parsed.replace(second=59, microsecond=999999)
            )
        return parsed.replace(tzinfo=UTC)
    raise BadFilter(_("{field}: give a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM.").format(field=field))


def event_id(text: str) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**63:
        raise BadFilter(_("{field}: give a positive whole number.").format(field="before"))
    return int(text)


async def audit_page(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``GET /admin/audit?user=&event=&since=&until=&before=``: newest first, PER_PAGE a page."""
    filters = {name: request.query.get(name, "") for name in ("user", "event", "since", "until", "before")}
    status, error, events = 200, None, []
    try:
        username = query_value(filters, "user").strip()
        event = query_value(filters, "event")
        if event and event not in audit.EVENTS:
            raise BadFilter(_("{field}: not an event the audit trail records.").format(field="event"))
        since = moment("since", filters["since"], end=False) if filters["since"] else None
        until = moment("until", filters["until"], end=True) if filters["until"] else None
        before = event_id(filters["before"])
    except BadFilter as exc:
        status, error = 400, str(exc)
    else:
        events = await accounts_admin.audit_page(
            services,
            username=username or None,
            event=event or None,
            since=since,
            until=until,
            before_id=before,
            limit=PER_PAGE,
        )
    older = None
    if len(events) == PER_PAGE:
        older = _query_href(who, "/admin/audit", **{**filters, "before": str(min(e.id for e in events))})
    return console_view(
        request,
        services,
        who,
        "admin_audit.html",
        "audit",
        status,
        notice=None,
        error=error,
        filters=filters,
        event_names=sorted(audit.EVENTS),
        events=events,
        older=older,
    )


ROUTES: list[Route] = [
    ("GET", "/admin/sessions", sessions_list, ""),
    ("POST", "/admin/sessions/end", end_session, "/admin/sessions"),
    ("GET", "/admin/clients", clients_list, ""),
    ("POST", "/admin/clients/new", create_client, "/admin/clients"),
    ("POST", CLIENT + "/disable", client_switch(True), "/admin/clients"),
    ("POST", CLIENT + "/enable", client_switch(False), "/admin/clients"),
    ("POST", CLIENT + "/rotate", rotate_secret, "/admin/clients"),
    ("GET", "/admin/keys", keys_list, ""),
    ("POST", "/admin/keys/rotate", rotate_key, "/admin/keys"),
    ("GET", "/admin/audit", audit_page, ""),
]
