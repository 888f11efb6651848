"""The pages' languages: every message in every catalog, and the choice from Accept-Language."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

import forwardauth.http
from forwardauth.core.problems import Problem
from forwardauth.http import i18n, pages

HTTP = Path(forwardauth.http.__file__).parent
METHODS = [
    ("templates/**.html", "jinja2.ext:babel_extract"),
    ("templates/**.txt", "jinja2.ext:babel_extract"),  # the e-mails
    ("**.py", "python"),
]
TEMPLATE = {"extensions": "jinja2.ext.i18n", "trimmed": "true"}
OPTIONS = {"templates/**.html": TEMPLATE, "templates/**.txt": TEMPLATE}
TRANSLATED = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT]


# Below the HTTP layer, refusals a page shows are core.problems.Problem and its subclasses, each
# message given as the first argument (http.i18n.translated looks it up).
DOMAIN = [HTTP.parent / layer for layer in ("core", "stores", "accounts")]
REFUSALS: dict[str, Any] = {"Problem": None, "PatError": None}


def extracted() -> dict[str, str]:
    """Every message the templates and the HTTP layer's Python mark, and every refusal message
    below it, with where it is."""
    found: dict[str, str] = {}
    sources = [extract_from_dir(str(HTTP), METHODS, OPTIONS)]
    sources += [extract_from_dir(str(layer), [("**.py", "python")], keywords=REFUSALS) for layer in DOMAIN]
    for source in sources:
        for filename, lineno, message, _comments, _context in source:
            assert isinstance(message, str), f"{filename}:{lineno}: plural messages are not used"
            found.setdefault(message, f"{filename}:{lineno}")
    return found


def test_every_kind_of_refusal_is_extracted() -> None:
    """A new subclass of Problem must be a keyword above, or its messages go untranslated unseen."""
    import forwardauth.accounts.pats  # noqa: F401  (the subclasses are defined on import)

    def kinds(cls: type) -> set[str]:
        return {cls.__name__}.union(*(kinds(sub) for sub in cls.__subclasses__()))

    assert kinds(Problem) <= set(REFUSALS)
    assert "a token must live at least a minute" in extracted()


def catalog(lang: str) -> Any:
    path = files("forwardauth.http").joinpath("locale", lang, "LC_MESSAGES", "messages.po")
    with path.open("rb") as source:
        return read_po(source, locale=lang)


def test_extraction_finds_the_pages_messages() -> None:
    messages = extracted()
    # a template's, a trans block's (with its variable) and Python's: a broken extractor finds none
    assert "Sign in" in messages
    assert "Sign in to continue to <strong>%(target)s</strong>" in messages
    assert "Wrong username or password." in messages
    assert len(messages) > 80


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalog_is_complete(lang: str) -> None:
    messages = extracted()
    entries = {m.id: m for m in catalog(lang) if m.id}
    missing = [
        f"{where}: {msgid!r}" for msgid, where in messages.items() if not (msgid in entries and entries[msgid].string)
    ]
    assert not missing, f"{lang}: messages without a translation:\n" + "\n".join(missing)
    gone = sorted(set(entries) - set(messages))
    assert not gone, f"{lang}: messages no page uses any more: {gone}"
    fuzzy = [msgid for msgid, entry in entries.items() if entry.fuzzy]
    assert not fuzzy, f"{lang}: fuzzy (unchecked) translations: {fuzzy}"
    for msgid, entry in entries.items():  # placeholders kept, or the page would fail or lose a value
        for mark in ("%(", "{"):
            wanted = sorted(part.split(")")[0].split("}")[0] for part in msgid.split(mark)[1:])
            got = sorted(part.split(")")[0].split("}")[0] for part in entry.string.split(mark)[1:])
            assert wanted == got, f"{lang}: {msgid!r} -> {entry.string!r}"


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("de-DE,de;q=0.9", "de"),
        ("fr-CA", "fr"),
        ("ja, zh;q=0.8", "en"),  # nothing we have: English
        ("", "en"),
        (None, "en"),
        ("fr;q=0.5, de;q=0.8", "de"),  # q-values, not order
        ("de;q=0, fr;q=0.1", "fr"),  # q=0: not this one
        ("en;q=0.4, fr", "fr"),
        ("de;q=oops, fr;q=0.2", "fr"),  # a broken q-value counts as 0
        ("*", "en"),
        ("de," * 1000, "en"),  # absurdly long: ignored
    ],
)
def test_negotiation(header: str | None, lang: str) -> None:
    assert i18n.negotiate(header) == lang


def render_in(header: str | None, render: Any) -> str:
    token = i18n.ACCEPT_LANGUAGE.set(header)
    try:
        return str(render())
    finally:
        i18n.ACCEPT_LANGUAGE.reset(token)


def test_pages_follow_the_language() -> None:
    german = render_in("de-DE,de;q=0.9", lambda: pages.login_page("/login", rd="https://app.example.com/"))
    assert '<html lang="de">' in german
    assert "<h1>Anmelden</h1>" in german and "Benutzername" in german
    french = render_in("fr", lambda: pages.logout_page(True, "ann", "/logout", "", "/login"))
    assert '<html lang="fr">' in french and "Se déconnecter" in french
    assert "Vous êtes connecté en tant que <strong>ann</strong>." in french
    english = render_in(None, lambda: pages.login_page("/login"))
    assert '<html lang="en">' in english and "<h1>Sign in</h1>" in english


def test_python_messages_follow_the_language() -> None:
    assert (
        render_in("de", lambda: i18n._("Wrong username or password."))
        == "Falscher Benutzername oder falsches Passwort."
    )
    assert render_in("xx", lambda: i18n._("Wrong username or password.")) == "Wrong username or password."


def test_translated_values_stay_escaped() -> None:
    page = render_in("fr", lambda: pages.logout_page(True, "<b>x</b>", "/logout", "", "/login"))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


async def test_login_page_in_german(client: Any) -> None:
    response = await client.get(
        "/login", params={"rd": "https://app.example.test/"}, headers={"Accept-Language": "de-DE,de;q=0.9"}
    )
    assert response.status == 200
    page = await response.text()
    assert '<html lang="de">' in page
    assert "Melden Sie sich an, um zu <strong>app.example.test</strong> zu gelangen" in page
    english = await (await client.get("/login", headers={"Accept-Language": "tlh"})).text()
    assert '<html lang="en">' in english and "<h1>Sign in</h1>" in english
    french = await (await client.get("/login", headers={"Accept-Language": "de;q=0.5, fr;q=0.9"})).text()
    assert '<html lang="fr">' in french and "Mot de passe" in french


async def test_wrong_password_in_french(client: Any, make_user: Any) -> None:
    user = make_user()
    response = await client.post(
        "/login",
        data={"username": user.username, "password": "not the password", "rd": ""},
        headers={"Accept-Language": "fr", "Origin": "http://auth.example.test", "Accept": "text/html"},
    )
    assert response.status == 401
    assert "Nom d\u2019utilisateur ou mot de passe incorrect." in await response.text()
