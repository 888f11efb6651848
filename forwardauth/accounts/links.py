"""One-time links by e-mail: a forgotten password, a first password, a new address to confirm.

A reset request answers the same, and as fast, whether or not the account exists: after the
throttle (per client address and per login, counted before anything is looked up) the lookup,
the link and the mail all happen in a background task, so neither the answer nor its timing tells
anything. A failed mail is logged, without the link (whoever reads the logs must not be able to
use it) and without the SMTP password (stores.mail never puts it in an error).

Setting a password through a link is one transaction: the link spent, the password set, every
session of the user ended, the user's other password links made useless, audited
``password_reset``; then the sessions' access tokens are revoked in Redis (``finish_ending``).

Links in mails are built by the caller from configuration (``link_base``), never from the
request's Host header. Mails are rendered from ``email_*.txt`` templates (plain text, no
autoescape) in the language of ``translations`` (English when none is given); a template's first
line is the subject, the rest after a blank line the body.
"""

from __future__ import annotations

import asyncio
import functools
import gettext
import logging
import uuid
from collections.abc import Coroutine
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from forwardauth.accounts.changes import finish_ending, recent_seconds, revoke_user_in_db
from forwardauth.accounts.services import AccountServices
from forwardauth.accounts.signin import Throttled
from forwardauth.core.passwords import Passwords
from forwardauth.core.usernames import normalise_username
from forwardauth.stores import links, users
from forwardauth.stores.audit import record
from forwardauth.stores.cascade import Ended
from forwardauth.stores.mail import MailError
from forwardauth.stores.postgres import Connection

log = logging.getLogger("forwardauth.links")

RESET_TTL = 15 * 60
SET_PASSWORD_TTL = 3 * 86400
VERIFY_TTL = 24 * 3600
PASSWORD_PURPOSES = ("reset_password", "set_password")
MAX_MATCHES = 5  # accounts sharing one e-mail address that one request mails


class LinkInvalid(Exception):
    """The link is unknown, used or expired (or its account is disabled)."""


# --- mails ------------------------------------------------------------------------------------

_TEMPLATES = files("forwardauth").joinpath("http", "templates")  # the pages' folder (package data)


@functools.lru_cache(maxsize=8)
def _environment(translations: gettext.NullTranslations) -> Environment:
    """A plain-text environment per language: no autoescape (mail is not HTML), translations
    installed once (never swapped under a render in progress)."""
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=False,  # noqa: S701 (plain-text mail; never shown as HTML)
        undefined=StrictUndefined,
        keep_trailing_newline=True,  # no trim_blocks: a line ending in {% endtrans %} keeps its newline
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


_ENGLISH = gettext.NullTranslations()


def render_mail(name: str, translations: gettext.NullTranslations | None = None, **values: Any) -> tuple[str, str]:
    """(subject, body) of template ``name``: its first line, and what follows the blank line."""
    text = _environment(translations or _ENGLISH).get_template(name).render(**values)
    subject, _blank, body = text.lstrip("\n").partition("\n\n")
    return " ".join(subject.split()), body.strip("\n") + "\n"


def link_to(link_base: str, page: str, token: str) -> str:
    return f"{link_base.rstrip('/')}/account/{page}?token={quote(token, safe='')}"


_BACKGROUND: set[asyncio.Task[None]] = set()  # referenced until done: the loop keeps only weak ones


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def settle() -> None:
    """Wait for the mails this event loop is sending (a worker stopping, a test)."""
    loop = asyncio.get_running_loop()
    while mine := [task for task in _BACKGROUND if task.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)


async def _mail(services: AccountServices, to: str, subject: str, body: str, what: str) -> None:
    """Send, and log a failure (what was being sent, to whom; never the link in the body)."""
    try:
        await services.mailer.send(to, subject, body)
    except MailError as exc:
        log.warning("%s was not sent to %s: %s", what, to, exc)
    except Exception as exc:  # a task's error would otherwise surface only at garbage collection
        log.error("%s was not sent to %s: %s: %s", what, to, type(exc).__name__, exc)


def _values(services: AccountServices, user: users.User, link: str, ttl: int) -> dict[str, Any]:
    return {
        "site_name": services.settings.site_name,
        "username": user.username,
        "link": link,
        "minutes": ttl // 60,
        "hours": ttl // 3600,
        "days": ttl // 86400,
    }


# --- forgotten password -----------------------------------------------------------------------


def _accounts_of(conn: Connection, login: str) -> list[users.User]:
    """The enabled accounts with an address a reset may go to, by username or by e-mail."""
    user = users.find(conn, login)
    found = [user] if user is not None else []
    if not found and "@" in login:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT username FROM users WHERE lower(email) = lower(%s) ORDER BY username LIMIT %s",
                (login, MAX_MATCHES),
            )
            found = [u for (name,) in cur.fetchall() if (u := users.find(conn, name)) is not None]
    return [u for u in found if not u.disabled and u.email]


def _reset_links(conn: Connection, login: str, address: str | None) -> list[tuple[users.User, str]]:
    made = []
    for user in _accounts_of(conn, login):
        made.append((user, links.create(conn, user.id, "reset_password", RESET_TTL)))
        record(conn, "link_sent", user.id, user.username, address, {"purpose": "reset_password"})
    return made


async def request_reset(
    services: AccountServices,
    login: str,
    address: str | None,
    link_base: str,
    *,
    translations: gettext.NullTranslations | None = None,
) -> None:
    """A reset link to the account's address, if ``login`` (username or e-mail) names an enabled
    account with one; the same (prompt) return either way. ``Throttled`` when this client or this
    login asked too often."""
    login = login.strip()[: users.MAX_EMAIL]
    retry = await services.link_requests.take(normalise_username(login), address)
    if retry:
        raise Throttled(retry)
    if services.mailer.enabled and login and "\x00" not in login:
        _in_background(_send_resets(services, login, address, link_base, translations))


async def _send_resets(
    services: AccountServices,
    login: str,
    address: str | None,
    link_base: str,
    translations: gettext.NullTranslations | None,
) -> None:
    try:
        made = await services.db.run(_reset_links, login, address)
        for user, token in made:
            values = _values(services, user, link_to(link_base, "reset", token), RESET_TTL)
            subject, body = render_mail("email_reset.txt", translations, **values)
            assert user.email is not None  # _accounts_of
            await _mail(services, user.email, subject, body, f"the password reset link of {user.username}")
    except Exception:  # logged here: nobody awaits this task
        log.exception("a password reset link could not be made or sent")


async def link_user(services: AccountServices, token: str, purpose: str) -> users.User | None:
    """The enabled user a valid link of ``purpose`` is for (nothing spent: for the page on GET)."""
    found = await services.db.run(_peek_user, token, purpose)
    return found[0] if found else None


def _peek_user(conn: Connection, token: str, purpose: str) -> tuple[users.User, links.Link] | None:
    link = links.peek(conn, token, purpose)
    user = users.get(conn, link.user_id) if link else None
    return (user, link) if user is not None and link is not None and not user.disabled else None


async def _password_link_user(services: AccountServices, token: str) -> users.User | None:
    for purpose in PASSWORD_PURPOSES:
        user = await link_user(services, token, purpose)
        if user is not None:
            return user
    return None


def _reset_in_db(
    conn: Connection, passwords: Passwords, token: str, password: str, recent: int, address: str | None
) -> tuple[users.User, Ended]:
    link = next(filter(None, (links.use(conn, token, purpose) for purpose in PASSWORD_PURPOSES)), None)
    user = users.get(conn, link.user_id) if link else None
    if link is None or user is None or user.disabled:
        raise LinkInvalid  # rolls back: the link stays as it was
    user = users.set_password(conn, passwords, user.username, password)  # locks the user's row
    ended = revoke_user_in_db(conn, user.id, recent, address, "password_reset")  # and its tokens
    links.discard_unused(conn, user.id, PASSWORD_PURPOSES)
    record(
        conn,
        "password_reset",
        user.id,
        user.username,
        address,
        {"purpose": link.purpose, "sessions_revoked": len(ended.sids)},
    )
    return user, ended


async def reset_password(services: AccountServices, token: str, new_password: str, address: str | None) -> users.User:
    """Set the password of a reset (or first-password) link's user and end all their sessions.

    ``LinkInvalid`` for a bad link, ``ValueError`` (the policy's message) for a weak password:
    the policy is checked before the link is spent, so a refused password leaves it usable."""
    owner = await _password_link_user(services, token)
    if owner is None:
        raise LinkInvalid
    users.check_password(new_password)
    await services.db.run_blocking(services.passwords.check, new_password, owner.username, owner.email)
    user, ended = await services.db.run(
        _reset_in_db, services.passwords, token, new_password, recent_seconds(services.settings), address
    )
    await finish_ending(services, ended)
    return user


# --- a new e-mail address ---------------------------------------------------------------------


def _verify_link(conn: Connection, user: users.User, email: str, address: str | None) -> str:
    token = links.create(conn, user.id, "verify_email", VERIFY_TTL, email)
    record(conn, "link_sent", user.id, user.username, address, {"purpose": "verify_email"})
    return token


async def request_email_change(
    services: AccountServices,
    user: users.User,
    new_email: str,
    address: str | None,
    link_base: str,
    *,
    translations: gettext.NullTranslations | None = None,
) -> None:
    """Mail a confirmation link to ``new_email``; the address changes when it is opened.
    ``ValueError`` for an address that cannot be one; ``Throttled`` when asked too often."""
    email = users.check_email(new_email.strip())
    if email is None:
        raise users.UserError("enter an e-mail address")
    if user.email is not None and email.lower() == user.email.lower():
        raise users.UserError("that is already your e-mail address")
    if not services.mailer.enabled:
        raise MailError("no mail server: FORWARDAUTH_SMTP_URL is not set")
    retry = await services.link_requests.take(f"email-change:{user.id}", address)
    if retry:
        raise Throttled(retry)
    token = await services.db.run(_verify_link, user, email, address)
    values = _values(services, user, link_to(link_base, "email/verify", token), VERIFY_TTL) | {"email": email}
    subject, body = render_mail("email_verify.txt", translations, **values)
    _in_background(_mail(services, email, subject, body, f"the address confirmation link of {user.username}"))


def _confirm_in_db(conn: Connection, token: str, address: str | None) -> users.User:
    link = links.use(conn, token, "verify_email")
    user = users.get(conn, link.user_id) if link else None
    if link is None or user is None or user.disabled:
        raise LinkInvalid  # rolls back: the link stays as it was
    before, after = users.modify(conn, user.username, None, link.email, True)
    record(conn, "email_change", after.id, after.username, address, {"old": before.email, "new": after.email})
    return after


async def confirm_email(services: AccountServices, token: str, address: str | None) -> users.User:
    """Set the address a confirmation link was mailed to (the link is the proof); ``LinkInvalid``."""
    return await services.db.run(_confirm_in_db, token, address)


# --- a first password (an account an administrator made) -----------------------------------------


def set_password_link_in_db(conn: Connection, user: users.User, address: str | None) -> str:
    """A new first-password link for ``user`` (earlier ones stop working), audited ``link_sent``."""
    token = links.create(conn, user.id, "set_password", SET_PASSWORD_TTL)
    record(conn, "link_sent", user.id, user.username, address, {"purpose": "set_password"})
    return token


def _set_password_link(conn: Connection, user_id: str) -> str:
    try:
        user = users.get(conn, str(uuid.UUID(user_id)))
    except ValueError:  # not an id at all
        user = None
    if user is None:
        raise users.UserError("no such user")
    return set_password_link_in_db(conn, user, None)


async def set_password_link(services: AccountServices, user_id: str) -> str:
    """The token of a new first-password link for an account an administrator made."""
    return await services.db.run(_set_password_link, user_id)


def send_welcome(
    services: AccountServices,
    user: users.User,
    token: str,
    link_base: str,
    translations: gettext.NullTranslations | None = None,
) -> None:
    """Mail a new account its first-password link, in the background."""
    if user.email is None:
        raise users.UserError(f"{user.username} has no e-mail address to send the link to")
    values = _values(services, user, link_to(link_base, "reset", token), SET_PASSWORD_TTL)
    subject, body = render_mail("email_welcome.txt", translations, **values)
    _in_background(_mail(services, user.email, subject, body, f"the first-password link of {user.username}"))
