"""Text for a terminal or a log file, with every character that could rewrite it made visible.

A username, address or header comes from outside. Printed raw, a CR or LF forges a second line
(a fake ``login_success root``), ESC starts a terminal sequence (hide fields, retitle the window,
on some terminals write to the clipboard), BEL rings, a tab shifts a tab-separated field, and the
Unicode bidi controls and line separators reorder or split what the operator reads. Everything
human-readable that forwardauth prints (``audit tail``, text logs, the CLI's listings and errors)
goes through :func:`escape`; JSON output escapes the same characters as ``\\uXXXX``.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (NEL U+0085 included), the Arabic letter mark, LRM/RLM, the line
# and paragraph separators, the bidi embeddings/overrides and isolates, and lone surrogates
# (unprintable, and an error when written to a UTF-8 stream).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape(text: str) -> str:
    """``text`` on one line with its control characters written out (``\\n``, ``\\x1b``, ``\\u202e``).

    Other characters, backslashes included, are left as they are: the result is for reading, and a
    name containing a literal ``\\x1b`` is no threat. Costs one regex scan when nothing matches.
    """
    return UNSAFE.sub(_visible, text) if UNSAFE.search(text) else text


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_json(document: str) -> str:
    """A serialised JSON document with the same characters as ``\\uXXXX`` escapes (still valid JSON).

    Serialisers escape C0 controls but leave DEL, C1, bidi controls and U+2028/2029 raw; these can
    only occur inside strings, where ``\\uXXXX`` means the same character. Lone surrogates are
    never produced by a serialiser and so are not expected here.
    """
    return UNSAFE.sub(_json_escape, document) if UNSAFE.search(document) else document


def row(*fields: object) -> str:
    """Tab-separated fields for a listing, each escaped (so a field can hold no tab nor newline)."""
    return "\t".join("-" if field is None else escape(str(field)) for field in fields)
