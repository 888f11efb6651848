"""One-time links by e-mail (issue 16): forgotten password, first password, a new address; on
real PostgreSQL and Redis, and a real SMTP server (aiosmtpd, tests.mailbox), not a mock."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from forwardauth import config
from forwardauth.accounts import links
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.accounts.signin import Throttled
from forwardauth.stores import links as link_store
from forwardauth.stores import mail, sessions, users
from forwardauth.stores.postgres import Database

from .mailbox import Mailbox, body, link_in, self_signed, token_in
from .support import PASSWORD, free_port, rows

MakeUser = Callable[..., users.User]
BASE = "https://auth.example.test/forwardauth"
NEW_PASSWORD = "a different passphrase 8274 orbit"


def fresh(database: Database, user_id: str) -> users.User:
    """The user as PostgreSQL has it now."""
    user = database.call(users.get, user_id)
    assert user is not None
    return user


def services_for(env: dict[str, str], **extra: str) -> AccountServices:
    """Account services on a Redis prefix of their own (their own request counters)."""
    prefix = f"{env['FORWARDAUTH_REDIS_PREFIX']}{secrets.token_hex(4)}:"
    return build_account_services(config.load({**env, "FORWARDAUTH_REDIS_PREFIX": prefix, **extra}))


@pytest.fixture
async def services(env: dict[str, str], mailbox: Mailbox) -> AsyncIterator[AccountServices]:
    built = services_for(env, FORWARDAUTH_SMTP_URL=mailbox.url(), FORWARDAUTH_SITE_NAME="Example Auth")
    yield built
    await links.settle()
    await built.close()


def new_email() -> str:
    return f"person-{secrets.token_hex(4)}@mail.example.test"


def address_of(user: users.User) -> str:
    assert user.email is not None
    return user.email


def events(database: Database, user: users.User, event: str) -> list[dict[str, Any]]:
    found = rows(
        database, "SELECT detail FROM audit_events WHERE user_id = %s AND event = %s ORDER BY id", user.id, event
    )
    return [row[0] for row in found]


async def live_session(services: AccountServices, database: Database, user: users.User) -> tuple[str, str]:
    """A session of ``user`` with a live access token: (sid, jti)."""
    session = database.call(sessions.start, user, 3600)
    jti = secrets.token_hex(8)
    await services.revocations.register(session.sid, jti, 60)
    return session.sid, jti


async def token_live(services: AccountServices, sid: str, jti: str) -> bool:
    return await services.revocations.is_live(sid, jti, int(time.time()) + 60)


# --- the links table ---------------------------------------------------------------------------------


def test_a_link_is_stored_as_a_digest_and_works_once(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    token = database.call(link_store.create, user.id, "reset_password", 900)
    assert len(token) >= 43  # 256 bits, URL-safe base64
    stored = rows(database, "SELECT token_hash FROM account_links WHERE user_id = %s", user.id)
    assert [bytes(row[0]) for row in stored] == [hashlib.sha256(token.encode()).digest()]

    assert database.call(link_store.peek, token, "reset_password") is not None
    assert database.call(link_store.peek, token, "reset_password") is not None  # peeking spends nothing
    assert database.call(link_store.peek, token, "set_password") is None  # another purpose
    used = database.call(link_store.use, token, "reset_password")
    assert used is not None and used.user_id == user.id and used.purpose == "reset_password"
    assert database.call(link_store.use, token, "reset_password") is None
    assert database.call(link_store.peek, token, "reset_password") is None


def test_expired_unknown_and_malformed_links_are_refused(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    expired = database.call(link_store.create, user.id, "reset_password", 0)
    assert database.call(link_store.peek, expired, "reset_password") is None
    assert database.call(link_store.use, expired, "reset_password") is None
    for bad in ("", "x" * 500, secrets.token_urlsafe(32), "a\x00b"):
        assert database.call(link_store.use, bad, "reset_password") is None
    assert database.call(link_store.peek, secrets.token_urlsafe(32), "no_such_purpose") is None


def test_a_new_link_makes_the_earlier_one_of_its_purpose_useless(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    first = database.call(link_store.create, user.id, "reset_password", 900)
    other = database.call(link_store.create, user.id, "set_password", 900)
    second = database.call(link_store.create, user.id, "reset_password", 900)
    assert database.call(link_store.peek, first, "reset_password") is None
    assert database.call(link_store.peek, second, "reset_password") is not None
    assert database.call(link_store.peek, other, "set_password") is not None  # another purpose stays


async def test_two_requests_racing_with_one_link_cannot_both_use_it(
    services: AccountServices, make_user: MakeUser
) -> None:
    user = make_user()
    token = await services.db.run(link_store.create, user.id, "reset_password", 900)
    results = await asyncio.gather(*(services.db.run(link_store.use, token, "reset_password") for _ in range(8)))
    assert sum(result is not None for result in results) == 1


# --- sending mail ------------------------------------------------------------------------------------


async def test_the_mailer_sends_through_plain_smtp(
    env: dict[str, str], mailbox: Mailbox, pure_settings: config.Settings
) -> None:
    settings = config.load({**env, "FORWARDAUTH_SMTP_URL": mailbox.url(), "FORWARDAUTH_SMTP_FROM": "auth@x.test"})
    mailer = mail.Mailer(settings)
    assert mailer.enabled and not mail.Mailer(pure_settings).enabled
    await mailer.send("bob@example.test", "Hello", "line one\nline two\n")
    message = await mailbox.arrival("bob@example.test")
    assert message["Subject"] == "Hello" and message["From"] == "auth@x.test"
    assert body(message) == "line one\nline two\n"
    with pytest.raises(mail.MailError, match="not set"):
        await mail.Mailer(pure_settings).send("bob@example.test", "Hello", "text")
    with pytest.raises(mail.MailError, match="cannot be written"):
        await mailer.send("bob@example.test", "Hello\r\nBcc: eve@example.test", "text")
    assert len(mailbox.received) == 1


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Any, Any]:
    return self_signed(tmp_path / "tls")


@pytest.mark.parametrize("starttls", [True, False], ids=["starttls", "smtps"])
async def test_the_mailer_logs_in_over_tls_with_percent_encoded_credentials(
    env: dict[str, str], tls: tuple[Any, Any], starttls: bool
) -> None:
    user, password = "mailer@example.test", "p@ss:w/rd%"
    box = Mailbox(tls[0], starttls=starttls, credentials=(user, password)).start()
    try:
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        settings = config.load({**env, "FORWARDAUTH_SMTP_URL": box.url(userinfo)})
        await mail.Mailer(settings, tls=tls[1]).send("carol@example.test", "Over TLS", "hello\n")
        assert body(await box.arrival("carol@example.test")) == "hello\n"
        assert box.logins == [user]

        wrong = config.load({**env, "FORWARDAUTH_SMTP_URL": box.url(f"{quote(user, safe='')}:not-it@")})
        with pytest.raises(mail.MailError) as refused:
            await mail.Mailer(wrong, tls=tls[1]).send("carol@example.test", "Over TLS", "hello\n")
        assert "refused the user name or password" in str(refused.value) and "not-it" not in str(refused.value)
        with pytest.raises(mail.MailError):  # the server's certificate is checked
            await mail.Mailer(settings).send("carol@example.test", "Over TLS", "hello\n")
    finally:
        box.stop()


async def test_an_unreachable_mail_server_is_a_mail_error(env: dict[str, str]) -> None:
    settings = config.load({**env, "FORWARDAUTH_SMTP_URL": f"smtp://u:secret-pw@127.0.0.1:{free_port()}"})
    mailer = mail.Mailer(settings)
    with pytest.raises(mail.MailError) as failed:
        await mailer.send("dave@example.test", "Hi", "text")
    assert "secret-pw" not in str(failed.value) and "secret-pw" not in repr(mailer.__dict__)


# --- forgotten password ------------------------------------------------------------------------------


async def test_a_reset_link_by_mail_sets_a_new_password_and_ends_every_session(
    services: AccountServices, mailbox: Mailbox, database: Database, make_user: MakeUser
) -> None:
    user = make_user(email=new_email())
    sid, jti = await live_session(services, database, user)
    await links.request_reset(services, user.username.upper(), "192.0.2.1", BASE)
    message = await mailbox.arrival(address_of(user))
    assert message["Subject"] == "Reset your password for Example Auth"
    assert link_in(message).startswith(BASE + "/account/reset?token=")
    assert user.username in body(message) and "15 minutes" in body(message)
    token = token_in(message)

    assert await links.link_user(services, token, "reset_password") == user  # GET: nothing spent
    assert await links.link_user(services, token, "reset_password") == user
    changed = await links.reset_password(services, token, NEW_PASSWORD, "192.0.2.2")
    assert changed.id == user.id
    assert not await token_live(services, sid, jti)  # the access token stops at once
    assert (
        rows(database, "SELECT count(*) FROM refresh_tokens WHERE family_id = %s AND revoked_at IS NULL", sid)[0][0]
        == 0
    )
    assert database.call(users.authenticate, services.passwords, user.username, PASSWORD, None) is None
    assert database.call(users.authenticate, services.passwords, user.username, NEW_PASSWORD, None) is not None

    with pytest.raises(links.LinkInvalid):  # single use
        await links.reset_password(services, token, "yet another passphrase 5531 comet", None)
    assert await links.link_user(services, token, "reset_password") is None
    assert events(database, user, "link_sent") == [{"purpose": "reset_password"}]
    assert events(database, user, "password_reset") == [{"purpose": "reset_password", "sessions_revoked": 1}]


async def test_a_reset_by_e_mail_address_in_any_case(
    services: AccountServices, mailbox: Mailbox, make_user: MakeUser
) -> None:
    address = new_email()
    user = make_user(email=address)
    await links.request_reset(services, "  " + address.upper() + " ", None, BASE)
    message = await mailbox.arrival(address)
    assert await links.link_user(services, token_in(message), "reset_password") == user


async def test_no_mail_for_an_unknown_disabled_or_address_less_account(
    services: AccountServices, mailbox: Mailbox, database: Database, make_user: MakeUser
) -> None:
    disabled = make_user(email=new_email())
    database.call(users.set_disabled, disabled.username, True)
    no_address = make_user(email=None)
    for login in ("nobody-" + secrets.token_hex(4), new_email(), disabled.username, no_address.username, "a\x00b"):
        await links.request_reset(services, login, "192.0.2.3", BASE)  # no error, no answer
    await links.settle()
    assert mailbox.received == []
    assert events(database, disabled, "link_sent") == []


@pytest.fixture
def silent_smtp() -> Iterator[int]:
    """A port whose server takes connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_the_answer_never_waits_for_the_mail_server_and_a_failure_is_logged_without_the_link(
    env: dict[str, str],
    database: Database,
    make_user: MakeUser,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    silent_smtp: int,
) -> None:
    monkeypatch.setattr(mail, "TIMEOUT", 1.0)
    built = services_for(env, FORWARDAUTH_SMTP_URL=f"smtp://relay:hunter2@127.0.0.1:{silent_smtp}")
    user = make_user(email=new_email())
    caplog.set_level(logging.WARNING, "forwardauth.links")
    try:
        started = time.monotonic()
        await links.request_reset(built, user.username, None, BASE)
        assert time.monotonic() - started < 0.5  # the mail server has not even greeted yet
        await links.settle()
    finally:
        await built.close()
    assert f"the password reset link of {user.username} was not sent to {user.email}" in caplog.text
    assert "token=" not in caplog.text and "hunter2" not in caplog.text
    assert rows(database, "SELECT count(*) FROM account_links WHERE user_id = %s", user.id) == [(1,)]


async def test_reset_requests_are_throttled_per_login_and_per_address_before_any_lookup(
    services: AccountServices, mailbox: Mailbox, make_user: MakeUser
) -> None:
    user = make_user(email=new_email())
    for number in range(3):
        await links.request_reset(services, user.username, f"198.51.100.{number}", BASE)
    with pytest.raises(Throttled) as held:
        await links.request_reset(services, user.username.upper(), "198.51.100.9", BASE)
    assert 0 < held.value.retry_after <= services.link_requests.window + 1
    await links.settle()
    assert len(mailbox.to(address_of(user))) == 3

    unknown = [f"nobody-{secrets.token_hex(4)}" for _ in range(10)]  # unknown accounts count the same
    for login in unknown:
        await links.request_reset(services, login, "203.0.113.7", BASE)
    with pytest.raises(Throttled):
        await links.request_reset(services, address_of(user), "203.0.113.7", BASE)
    with pytest.raises(Throttled):  # an IPv6 client counts by its /64
        for number in range(11):
            await links.request_reset(services, f"other-{number}", f"2001:db8::{number}", BASE)


async def test_a_weak_password_leaves_the_link_usable(services: AccountServices, make_user: MakeUser) -> None:
    user = make_user()
    token = await links.set_password_link(services, user.id)
    for weak in ("short", "password1234567890", "a" * 30, ""):
        with pytest.raises(ValueError):
            await links.reset_password(services, token, weak, None)
    assert await links.link_user(services, token, "set_password") == user
    await links.reset_password(services, token, NEW_PASSWORD, None)
    assert await links.link_user(services, token, "set_password") is None


async def test_a_password_reset_makes_every_other_password_link_useless(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    first_password = await links.set_password_link(services, user.id)
    reset = await services.db.run(link_store.create, user.id, "reset_password", links.RESET_TTL)
    await links.reset_password(services, reset, NEW_PASSWORD, None)
    with pytest.raises(links.LinkInvalid):
        await links.reset_password(services, first_password, "yet another passphrase 5531 comet", None)
    assert events(database, user, "password_reset") == [{"purpose": "reset_password", "sessions_revoked": 0}]


async def test_a_link_of_a_disabled_account_is_invalid(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    token = await links.set_password_link(services, user.id)
    database.call(users.set_disabled, user.username, True)
    assert await links.link_user(services, token, "set_password") is None
    with pytest.raises(links.LinkInvalid):
        await links.reset_password(services, token, NEW_PASSWORD, None)
    with pytest.raises(users.UserError):
        await links.set_password_link(services, "not-a-user-id")
    for bad in ("", "not-a-token", "x" * 1000):
        with pytest.raises(links.LinkInvalid):
            await links.reset_password(services, bad, NEW_PASSWORD, None)


# --- a new e-mail address ----------------------------------------------------------------------------


async def test_a_new_address_is_set_once_its_link_is_opened(
    services: AccountServices, mailbox: Mailbox, database: Database, make_user: MakeUser
) -> None:
    old, new = new_email(), new_email()
    user = make_user(email=old)
    await links.request_email_change(services, user, new, "192.0.2.5", BASE)
    message = await mailbox.arrival(new)
    assert mailbox.to(old) == []
    assert link_in(message).startswith(BASE + "/account/email/verify?token=") and new in body(message)
    token = token_in(message)
    assert fresh(database, user.id).email == old  # not before the link is opened
    assert await links.link_user(services, token, "verify_email") == user
    changed = await links.confirm_email(services, token, "192.0.2.6")
    assert changed.email == new and fresh(database, user.id).email == new
    with pytest.raises(links.LinkInvalid):
        await links.confirm_email(services, token, None)
    assert events(database, user, "email_change") == [{"old": old, "new": new}]
    assert events(database, user, "link_sent") == [{"purpose": "verify_email"}]


async def test_a_bad_or_unchanged_address_is_refused_and_changes_are_throttled(
    services: AccountServices, mailbox: Mailbox, make_user: MakeUser
) -> None:
    address = new_email()
    user = make_user(email=address)
    for bad in ("", "no-at-sign", "two words@example.test", "a@b\r\nBcc: x@y", address.upper()):
        with pytest.raises(ValueError):
            await links.request_email_change(services, user, bad, None, BASE)
    for _ in range(3):
        await links.request_email_change(services, user, new_email(), None, BASE)
    with pytest.raises(Throttled):
        await links.request_email_change(services, user, new_email(), None, BASE)
    with pytest.raises(links.LinkInvalid):
        await links.confirm_email(services, secrets.token_urlsafe(32), None)


async def test_mails_are_rendered_in_the_language_given(
    services: AccountServices, mailbox: Mailbox, make_user: MakeUser
) -> None:
    from forwardauth.http import i18n

    user = make_user(email=new_email())
    await links.request_reset(services, user.username, None, BASE, translations=i18n.TRANSLATIONS["de"])
    message = await mailbox.arrival(address_of(user))
    assert link_in(message).startswith(BASE)  # whatever the catalog holds yet, the mail is whole
    assert message["Subject"]


async def test_without_a_mail_server_nothing_is_made_or_sent(
    env: dict[str, str], database: Database, make_user: MakeUser
) -> None:
    built = services_for(env)
    user = make_user(email=new_email())
    try:
        await links.request_reset(built, user.username, None, BASE)
        await links.settle()
        with pytest.raises(mail.MailError):
            await links.request_email_change(built, user, new_email(), None, BASE)
    finally:
        await built.close()
    assert rows(database, "SELECT count(*) FROM account_links WHERE user_id = %s", user.id) == [(0,)]
