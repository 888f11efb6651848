"""The pages' languages: gettext catalogs (``locale/<lang>/LC_MESSAGES/messages.po``), one chosen
per request from ``Accept-Language``.

The ``.po`` files are the only copy: they are compiled in memory at import (Babel), so there is
no build step and no ``.mo`` to keep in step. The request's choice lives in a context variable set
by the error middleware (every handler runs inside it), so Python code says ``_("...")`` and the
pages' templates ``{{ _("...") }}`` without passing a language around; each translation object is
read-only once built, so concurrent requests share them safely.
"""

from __future__ import annotations

import functools
import gettext
import io
from contextvars import ContextVar
from importlib.resources import files

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from forwardauth.core.problems import Problem

DEFAULT = "en"  # the source language: the msgids themselves
LANGUAGES = ("en", "de", "fr")
MAX_HEADER = 512  # longer Accept-Language headers are ignored (nobody needs more)


def _load(lang: str) -> gettext.NullTranslations:
    if lang == DEFAULT:
        return gettext.NullTranslations()
    po = files(__package__).joinpath("locale", lang, "LC_MESSAGES", "messages.po")
    with po.open("rb") as source:
        catalog = read_po(source, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


TRANSLATIONS: dict[str, gettext.NullTranslations] = {lang: _load(lang) for lang in LANGUAGES}

# The request's Accept-Language header (None outside a request: English).
ACCEPT_LANGUAGE: ContextVar[str | None] = ContextVar("accept_language", default=None)


@functools.lru_cache(maxsize=256)
def negotiate(header: str | None) -> str:
    """The best of LANGUAGES for an ``Accept-Language`` value (RFC 9110 q-values), else English.

    ``de-DE`` matches ``de``; ``q=0`` means "not this one"; ties keep the header's order.
    """
    if not header or len(header) > MAX_HEADER:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        tag, _sep, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and tag:
            ranked.append((-quality, position, tag.strip().lower().replace("_", "-")))
    for _quality, _position, tag in sorted(ranked):
        for candidate in (tag, tag.split("-")[0]):
            if candidate in TRANSLATIONS:
                return candidate
    return DEFAULT


def current() -> str:
    """The language of the request being handled."""
    return negotiate(ACCEPT_LANGUAGE.get())


def _(message: str) -> str:
    """``message`` in the request's language (the English msgid when it has no translation)."""
    return TRANSLATIONS[current()].gettext(message)


def translated(exc: Exception) -> str:
    """What a refusal says, in the request's language: a ``Problem``'s message looked up and its
    values filled in; any other exception's text as a msgid (the English when none matches)."""
    if isinstance(exc, Problem):
        return _(exc.message) % exc.values if exc.values else _(exc.message)
    return _(str(exc))


def N_(message: str) -> str:
    """Marks a message for the catalogs where it is defined; ``_`` translates it where it is used."""
    return message
