"""Messages built in code reach the user in the request's language: the login page's cookie
problems (formatted values in a translated sentence; the operator's log stays English) and the
texts passkeys.js shows, which the pages hand it in data-* attributes of the error line."""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

import pytest

from forwardauth import config
from forwardauth.http import browser, i18n

from .test_passkeys import COOKIE, PENDING, enrolled_user, pending_after_password, signed_in
from .test_renewal import send
from .test_sso import post_login
from .test_web import MakeUser

Client = Any
GERMAN = {"Accept-Language": "de-DE,de;q=0.9"}
# data-* attribute of the passkey error line -> its msgid (templates/passkey_error.html)
PASSKEY_MESSAGES = {
    "cancelled": "The passkey request was cancelled or timed out.",
    "registered": "This passkey is registered already.",
    "insecure": "Passkeys cannot be used on this page's address.",
    "failed": "The passkey could not be used.",
    "status": "The server answered {status}.",
}


async def test_a_cookie_problem_is_explained_in_german(
    client: Client, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    other = {"Origin": "https://login.other.test", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "login.other.test"}
    response = await post_login(client, make_user().username, rd="", **other, **GERMAN)
    assert response.status == 400
    page = await response.text()
    assert '<html lang="de">' in page
    assert (
        "Ihr Browser würde das Anmelde-Cookie ablehnen: FORWARDAUTH_COOKIE_DOMAIN=example.test deckt "
        "login.other.test, wo Sie sich anmelden, nicht ab."
    ) in page
    assert "sign-in refused: FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover login.other.test" in caplog.text


def problem_in(lang: str, settings: config.Settings, page: str, rd: str) -> browser.Problem:
    token = i18n.ACCEPT_LANGUAGE.set(lang)
    try:
        problem = browser.delivery_problem(settings, page, rd)
    finally:
        i18n.ACCEPT_LANGUAGE.reset(token)
    assert problem is not None
    return problem


@pytest.mark.parametrize(
    ("page", "rd", "domain", "german"),
    [
        (
            "http://auth.example.test",
            "",
            "example.test",
            "Diese Seite wurde über unverschlüsseltes HTTP geöffnet (http://auth.example.test), aber das "
            "Anmelde-Cookie gilt nur für HTTPS, daher würde Ihr Browser es nicht speichern. Öffnen Sie die Website "
            "über HTTPS oder setzen Sie (für einen Test über reines HTTP) FORWARDAUTH_COOKIE_SECURE=false.",
        ),
        (
            "https://auth.example.test",
            "https://app.other.test/",
            "example.test",
            "Sie wären angemeldet, aber Ihr Browser würde das Anmelde-Cookie nicht an app.other.test senden: "
            "FORWARDAUTH_COOKIE_DOMAIN=example.test deckt app.other.test nicht ab.",
        ),
        (
            "https://auth.example.test",
            "https://app.example.test/",
            None,
            "Sie wären angemeldet, aber Ihr Browser würde das Anmelde-Cookie nicht an app.example.test senden: "
            "FORWARDAUTH_COOKIE_DOMAIN ist nicht gesetzt, daher bleibt das Cookie auf auth.example.test und "
            "erreicht app.example.test nie.",
        ),
        (
            "https://auth.example.test",
            "http://app.example.test/",
            "example.test",
            "Sie wären angemeldet, aber Ihr Browser würde das Anmelde-Cookie nicht an app.example.test senden: "
            "FORWARDAUTH_COOKIE_SECURE=true und app.example.test wird über unverschlüsseltes HTTP ausgeliefert.",
        ),
    ],
)
def test_every_cookie_problem_is_translated_and_logged_in_english(
    pure_settings: config.Settings, page: str, rd: str, domain: str | None, german: str
) -> None:
    """The reason inside a sentence is translated too; the log line is the same in any language."""
    settings = dataclasses.replace(pure_settings, cookie_domain=domain, cookie_secure=True)
    english, problem = problem_in("en", settings, page, rd), problem_in("de", settings, page, rd)
    assert problem.page == german and problem.log == english.log and english.page != german
    assert "navigateur" in problem_in("fr", settings, page, rd).page


def passkey_texts(page: str) -> dict[str, str]:
    """The data-* attributes of the page's passkey error line (unescaped)."""
    [line] = re.findall(r"<p [^>]*data-passkey-error[^>]*>", page)
    return {name: html.unescape(value) for name, value in re.findall(r'data-([a-z]+)="([^"]*)"', line)}


def german(msgid: str) -> str:
    translated = i18n.TRANSLATIONS["de"].gettext(msgid)
    assert translated != msgid, f"no German for {msgid!r}"
    return translated


async def test_passkey_messages_reach_every_page_in_german(client: Client, make_user: MakeUser) -> None:
    """The login page, the second factor and /mfa: each hands passkeys.js all its texts, translated."""
    login = await send(client, "GET", "/login", headers=GERMAN)
    enrolled, _key = await enrolled_user(client, make_user)
    pending = await pending_after_password(client, enrolled)
    second = await send(client, "GET", "/login/second-factor", {PENDING: pending}, headers=GERMAN)
    mfa = await send(client, "GET", "/mfa", {COOKIE: await signed_in(client, make_user())}, headers=GERMAN)
    wanted = {name: german(msgid) for name, msgid in PASSKEY_MESSAGES.items()}
    assert wanted["cancelled"] == "Die Passkey-Anfrage wurde abgebrochen oder ist abgelaufen."
    assert "{status}" in wanted["status"]  # passkeys.js puts the number in
    for response in (login, second, mfa):
        assert response.status == 200
        page = await response.text()
        assert '<html lang="de">' in page and "data-passkey=" in page
        assert passkey_texts(page) == wanted, response.url
    english = passkey_texts(await (await send(client, "GET", "/login")).text())
    assert english == PASSKEY_MESSAGES
