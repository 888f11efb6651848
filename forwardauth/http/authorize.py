"""The authorization endpoint (``GET``/``POST /oauth/authorize``) and its consent page.

A request is checked in RFC 6749 4.1.2.1's order (core.oidc): until its client and redirect URI
are known good, a refusal is a page here and never a redirect. Then the browser's session (the
one the header-protected apps use: single sign-on) answers it, once it is enough:

- none: ``prompt=none`` gets ``login_required``; else the login page, then back here;
- ``prompt=login``, or a sign-in older than ``max_age``: the password again, then back here;
- ``acr_values`` asking for a second factor a session lacks: step-up (http.secondfactor's
  pending sign-in, replacing the session), then back here;
- a client not marked trusted, without the user's consent to every scope asked (or with
  ``prompt=consent``): the consent page; ``prompt=none`` gets ``consent_required``.

"Back here" is ``/oauth/authorize?resume=<id>``: the request waits in Redis (stores.interactions)
with the time the browser was sent to sign in again, so neither a reload nor an edited URL makes
``prompt=login`` pass without a new sign-in, and the fresh sign-in does not loop back to the form.
A request resumed after one of our forms goes on to the client through a page that moves on at
once (``onward``): browsers check a form's redirects against its page's CSP ``form-action``,
which names our origins, not every client's.

Success: ``redirect_uri?code=&state=&iss=`` (RFC 9207).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import quote, urlsplit

from aiohttp import web

from forwardauth.accounts import authorize as accounts
from forwardauth.accounts import secondfactor
from forwardauth.core.oidc import (
    EMAIL,
    GROUPS,
    OFFLINE_ACCESS,
    OPENID,
    PROFILE,
    PROMPT_CONSENT,
    PROMPT_LOGIN,
    PROMPT_NONE,
    AuthorizationError,
    AuthorizationRequest,
)
from forwardauth.http.common import (
    BadInput,
    bounded,
    client_address,
    html_page,
    posted_form,
    read_fields,
    refuse_cross_site,
    see_other,
)
from forwardauth.http.i18n import N_, _
from forwardauth.http.pages import consent_page, continue_page, oidc_error_page
from forwardauth.http.secondfactor import BrowserSession, begin, browser_session, prefix_of
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores.clients import Client
from forwardauth.stores.interactions import Interaction, Interactions

AUTHORIZE_PATH = "/oauth/authorize"
CONSENT_PATH = AUTHORIZE_PATH + "/consent"
INTERACTIONS = web.AppKey("interactions", Interactions)
_RESUME = re.compile(re.escape(AUTHORIZE_PATH) + r"\?resume=[A-Za-z0-9_-]{1,64}")
EXPIRED = N_("This sign-in request has expired or was already answered.")
SCOPE_WORDS = {
    OPENID: N_("know who you are (your account's identifier)"),
    PROFILE: N_("see your username"),
    EMAIL: N_("see your email address"),
    GROUPS: N_("see your roles"),
    OFFLINE_ACCESS: N_("keep access while you are away (until you sign out)"),
}


def resume_path(prefix: str, request_id: str) -> str:
    return f"{prefix}{AUTHORIZE_PATH}?resume={request_id}"


def is_resume_path(rd: str, prefix: str) -> bool:
    """Whether ``rd`` is one of our own waiting requests (a path of ours, as ``resume_path``
    makes it): the login page may go on to it. Nothing else of the kind is accepted, so it can
    lead nowhere but here."""
    return rd.startswith(prefix) and _RESUME.fullmatch(rd[len(prefix) :]) is not None


def scope_words(scopes: Iterable[str]) -> list[str]:
    return [
        _(SCOPE_WORDS[scope]) if scope in SCOPE_WORDS else _("use “{scope}” on your behalf").format(scope=scope)
        for scope in scopes
    ]


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


# --- answers -----------------------------------------------------------------------------------


def error_page(services: Services, error: str, description: str, status: int = 400) -> web.Response:
    """A refusal the client must not receive (its client or redirect URI is not known good)."""
    return html_page(oidc_error_page(error, _(description)), services.settings, status)


def onward(services: Services, url: str, heading: str = N_("Signing you in")) -> web.Response:
    """On to ``url`` on another site from a page our form led to: a page that moves on at once
    (``Refresh``), not a redirect, which the form's page's ``form-action`` would have to allow."""
    response = html_page(continue_page(_(heading), _host(url), url), services.settings)
    response.headers["Refresh"] = f"0; url={url}"
    return response


def to_client(services: Services, url: str, via_form: bool) -> web.Response:
    return onward(services, url) if via_form else see_other(url)


def refusal(services: Services, refused: AuthorizationError, via_form: bool) -> web.Response:
    if not refused.redirectable:
        return error_page(services, refused.error, refused.description)
    return to_client(services, refused.url(services.settings.issuer), via_form)


# --- the request -------------------------------------------------------------------------------


async def _params(request: web.Request) -> list[tuple[str, str]]:
    """The request's parameters (the query, or a posted form), each a bounded string."""
    if request.method == "POST":
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadInput("post the authorization request as application/x-www-form-urlencoded", 415)
        items = list((await posted_form(request)).items())
    else:
        items = list(request.query.items())
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        if not isinstance(value, str) or not bounded(value):
            raise BadInput(f"{name} is too long or not text")
        pairs.append((name, value))
    return pairs


async def authorize(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    interaction: Interaction | None = None
    if request.method == "GET" and "resume" in request.query:
        interaction = await request.app[INTERACTIONS].get(request.query["resume"])
        if interaction is None:
            return error_page(services, "invalid_request", EXPIRED)
        pairs = list(interaction.params.items())
    else:
        pairs = await _params(request)
    client_id = next((value for name, value in pairs if name == "client_id"), None)
    client = await accounts.find_client(services, client_id)
    parsed = AuthorizationRequest.parse(pairs, client)
    if isinstance(parsed, AuthorizationError):
        return refusal(services, parsed, via_form=interaction is not None)
    assert client is not None
    return await decide(request, services, parsed, client, interaction)


async def decide(
    request: web.Request,
    services: Services,
    authz: AuthorizationRequest,
    client: Client,
    interaction: Interaction | None,
    consented: bool = False,
) -> web.Response:
    """Answer a well-formed request from the browser's session, or send the browser to what it lacks."""
    settings = services.settings
    via_form = interaction is not None
    silent = PROMPT_NONE in authz.prompt
    held = await browser_session(request, services)
    if held is None:
        if silent:
            return refusal(services, authz.error("login_required", "the user is not signed in"), via_form)
        return await _sign_in(request, services, authz, None)
    auth = held.auth
    # What answering the request proved so far (a sign-in again), kept if the browser is sent on.
    proved = Interaction(authz.as_params())
    if interaction is not None:
        proved = Interaction(authz.as_params(), interaction.reauth_after, interaction.stale_sid)
    if auth is None or (
        not signed_in_again(proved, held)
        and (PROMPT_LOGIN in authz.prompt or not authz.fresh_enough(auth, time.time()))
    ):
        if silent:
            return refusal(services, authz.error("login_required", "the user must sign in again"), via_form)
        return await _sign_in(request, services, authz, held)
    if authz.wants_mfa and not auth.multi_factor and settings.second_factor != "off":
        if silent:
            return refusal(services, authz.error("interaction_required", "a second factor is needed"), via_form)
        return await _step_up(request, services, authz, held, proved)
    ask = PROMPT_CONSENT in authz.prompt and not consented
    if not consented and await accounts.consent_needed(services, held.user_id, client, authz.scope, ask):
        if silent:
            return refusal(services, authz.error("consent_required", "the user has not allowed this client"), via_form)
        return await _consent(request, services, authz, held, proved)
    address = client_address(request, settings)
    code = await accounts.issue_code(services, authz, held.user_id, held.username, held.sid, auth, address)
    return to_client(services, authz.success_url(code, settings.issuer), via_form)


def signed_in_again(proved: Interaction, held: BrowserSession) -> bool:
    """Whether the browser signed in since it was sent to (``prompt=login``, ``max_age``): a
    session other than the one it held then, signed in since (within another host's clock slack:
    the new sign-in must not loop back to the form). A step-up's session keeps its sign-in time."""
    after = proved.reauth_after
    return after is not None and held.auth is not None and held.auth.auth_time >= after and held.sid != proved.stale_sid


async def _park(request: web.Request, interaction: Interaction) -> str:
    """Keep the request until the browser comes back; the path it comes back to."""
    request_id = await request.app[INTERACTIONS].put(interaction)
    return resume_path(prefix_of(request, request.app[SERVICES].settings), request_id)


async def _sign_in(
    request: web.Request, services: Services, authz: AuthorizationRequest, held: BrowserSession | None
) -> web.Response:
    """To the login page (the password again for a session ``held``), then back here, where a
    sign-in from now on answers ``prompt=login`` and ``max_age``."""
    after = int(time.time()) - services.settings.leeway
    stale = held.sid if held is not None else None
    back = await _park(request, Interaction(authz.as_params(), reauth_after=after, stale_sid=stale))
    login = f"{prefix_of(request, services.settings)}/login?rd={quote(back, safe='')}"
    return see_other(login + ("&reauth=1" if held is not None else ""))


async def _step_up(
    request: web.Request,
    services: Services,
    authz: AuthorizationRequest,
    held: BrowserSession,
    proved: Interaction,
) -> web.Response:
    """A second factor for the session (or its enrolment), as a rule's step-up does: the new
    session replaces the old one, then back here."""
    assert held.auth is not None
    enrolled = await secondfactor.enrolled(services, held.user_id)
    if not enrolled.any and held.auth.age(time.time()) > secondfactor.RECENT_AUTH:
        # Enrolling on an old session would let whoever holds its cookie add their own factor.
        return await _sign_in(request, services, authz, held)
    back = await _park(request, proved)
    return await begin(request, services, held.stepping_up(back, must_enrol=not enrolled.any))


# --- consent -----------------------------------------------------------------------------------


async def _consent(
    request: web.Request,
    services: Services,
    authz: AuthorizationRequest,
    held: BrowserSession,
    proved: Interaction,
) -> web.Response:
    """The consent page; its form posts the id of this request, bound to this session."""
    request_id = await request.app[INTERACTIONS].put(replace(proved, sid=held.sid, scopes=authz.scope))
    page = consent_page(
        client=authz.client_id,
        username=held.username,
        scopes=scope_words(authz.scope),
        host=_host(authz.redirect_uri),
        action=prefix_of(request, services.settings) + CONSENT_PATH,
        request_id=request_id,
    )
    return html_page(page, services.settings)


async def consent(request: web.Request) -> web.Response:
    """``POST /oauth/authorize/consent`` (``request``, ``decision`` allow or deny), from our page only."""
    services = request.app[SERVICES]
    refuse_cross_site(request, services.settings)
    fields = await read_fields(request, ("request", "decision"))
    if fields["decision"] not in ("allow", "deny"):
        raise BadInput("decision must be allow or deny")
    interaction = await request.app[INTERACTIONS].take(fields["request"])
    if interaction is None or interaction.sid is None:
        return error_page(services, "invalid_request", EXPIRED)
    held = await browser_session(request, services)
    if held is None or held.sid != interaction.sid:
        return error_page(services, "invalid_request", N_("You signed out or in as someone else meanwhile."))
    client = await accounts.find_client(services, interaction.params.get("client_id"))
    parsed = AuthorizationRequest.parse(interaction.params, client)
    if isinstance(parsed, AuthorizationError):
        return refusal(services, parsed, via_form=True)
    assert client is not None
    address = client_address(request, services.settings)
    if fields["decision"] == "deny":
        await accounts.refused(services, parsed, held.user_id, held.username, address)
        denied = parsed.error("access_denied", "the user denied the request")
        return onward(services, denied.url(services.settings.issuer))
    await accounts.give_consent(services, held.user_id, held.username, client.id, interaction.scopes, address)
    return await decide(request, services, parsed, client, interaction, consented=True)


def add_routes(app: web.Application) -> None:
    services = app[SERVICES]
    app[INTERACTIONS] = Interactions(services.onetime.client, services.onetime.keys)
    app.router.add_get(AUTHORIZE_PATH, authorize, allow_head=False)  # a HEAD would issue a code
    app.router.add_post(AUTHORIZE_PATH, authorize)
    app.router.add_post(CONSENT_PATH, consent)
