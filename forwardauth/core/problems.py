"""Refusals a page shows in the reader's language: a fixed message with named values. Pure.

A domain error built from an f-string cannot be translated: its text differs for every value. A
``Problem`` keeps the message (``"a token may live at most %(most)s"``) and the values apart; its
``str()`` is the English text (for the command line and the logs), and the HTTP layer looks the
message up in the catalogs and fills the values in (``http.i18n.translated``). The catalogs'
test extracts every ``Problem(...)`` (and subclass) message below ``forwardauth``, so a new one
without a translation fails there.
"""

from __future__ import annotations


class Problem(ValueError):
    """A refusal: ``message`` (a msgid, with ``%(name)s`` placeholders) and its ``values``."""

    def __init__(self, message: str, **values: object) -> None:
        self.message = message
        self.values = values
        super().__init__(message % values if values else message)
