"""Every way a backend may read a request path, and the paths backends cannot agree on. Pure.

Backends read the same path differently: most percent-decode it once, some twice (a proxy that
decodes before passing it on); servlet containers strip ``;params`` from each segment
(``/admin;x=1/panel`` is ``/admin/panel``); nginx and Tomcat fold ``//``; Windows file systems
drop trailing dots and spaces (``/admin./x``) and read an NTFS stream as its file
(``/admin::$INDEX_ALLOCATION/x`` is ``/admin/x``); case-insensitive ones fold case (``/ADMIN``).
forwardauth must never judge a more permissive request than the one the backend serves, so:

- a path that, at any decoding depth, holds a ``.`` or ``..`` segment (also with params, ``..;``,
  or spaces), a backslash, an encoded ``/`` or ``\\`` (``%2f``, ``%5c``), an encoded ``?`` or
  ``#``, a control or invisible format character, an invalid ``%`` escape, bytes that are not
  UTF-8, or more than ``MAX_DECODES`` levels of encoding is refused (``AmbiguousPath``, a 400):
  backends resolve those differently, and browsers never send them (they resolve dot segments);
- every other path is judged in each of its readings (``readings``), and the strictest verdict
  wins (see policy).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from forwardauth.core.refusals import Refused

MAX_DECODES = 3  # deeper than this is refused: no client encodes a path three times

# How a reading was made (bit flags; several are applied in this order).
PARAMS = 1  # ;params stripped from every segment (servlet containers)
TRIM = 2  # NTFS streams (admin::$DATA), trailing dots and spaces stripped from every segment (Windows)
SLASHES = 4  # duplicate slashes folded (nginx merge_slashes, Tomcat)
FOLDED = 8  # case-folded, matched against case-folded rules (case-insensitive backends)
COMPAT = 16  # Unicode compatibility form, NFKC (fullwidth letters read as ASCII)
_NAMES = (
    (PARAMS, ";params stripped"),
    (TRIM, "NTFS streams, trailing dots/spaces stripped"),
    (SLASHES, "// folded"),
    (FOLDED, "case-folded"),
    (COMPAT, "NFKC"),
)

# The common path: plain lower-case segments, no dot segment, no '//': its only reading is itself.
_SEGMENT = r"[a-z0-9_~!$&'()*+,=@-]+"
_PLAIN = re.compile(rf"(?:/{_SEGMENT}(?:\.{_SEGMENT})*)*/?")
_INVALID_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_SEPARATOR = re.compile(r"%(?:2[fF]|5[cC])")
_DOT_SEGMENT = re.compile(r"/[. ]+(?:;[^/]*)?(?=/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})  # controls, invisible format, separators
_PARAM = re.compile(r";[^/]*")
_SLASH_RUN = re.compile(r"//+")


class AmbiguousPath(Refused):
    """Backends read this path in ways no rule can follow: refused, not judged."""

    reason = "ambiguous path"


@dataclass(frozen=True, slots=True)
class Reading:
    """One way a backend may read the path: ``folded`` readings are matched against case-folded
    rules; ``decodes`` and ``how`` say how it was made (for ``forwardauth policy explain``)."""

    path: str
    folded: bool = False
    decodes: int = 0
    how: int = 0

    def describe(self) -> str:
        steps = ["as sent" if self.decodes == 0 else f"decoded {self.decodes}x"]
        steps += [name for flag, name in _NAMES if self.how & flag]
        return ", ".join(steps)


def fold(text: str) -> str:
    """Case-folded as the most lenient case-insensitive backend would: besides lower case, a
    letter whose simple upper or lower case is ASCII is that ASCII letter (U+017F long s is ``s``,
    U+0131 dotless i and U+0130 dotted I are ``i``, U+212A Kelvin is ``k``), as Java's
    ``equalsIgnoreCase`` has it."""
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(c) for c in text)


def _fold_char(char: str) -> str:
    if char.isascii():
        return char.lower()
    for mapped in (char.upper(), char.lower()):
        if len(mapped) == 1 and mapped.isascii():
            return mapped.lower()
    lower = char.lower()
    return lower[0] if lower[0].isascii() else lower


def readings(path: str, fold_always: bool = False) -> tuple[Reading, ...]:
    """The distinct readings of ``path`` (no query string), the path as sent first.

    ``fold_always``: add the case-folded reading even when folding leaves the path as it is (the
    rules have upper case in them). Raises ``AmbiguousPath`` for a refused path.
    """
    if path[:1] == "/" and _PLAIN.fullmatch(path):
        plain = Reading(path)
        return (plain, Reading(path, True, 0, FOLDED)) if fold_always else (plain,)
    if not path.startswith("/"):
        raise AmbiguousPath("the path does not start with /")
    found: dict[tuple[str, bool], Reading] = {}
    for decodes, level, flags in _levels(path):
        for variant, how in _variants(level):
            found.setdefault((variant, False), Reading(variant, False, decodes, flags | how))
            folded = fold(variant)
            if fold_always or folded != variant:
                found.setdefault((folded, True), Reading(folded, True, decodes, flags | how | FOLDED))
    return tuple(found.values())


def _levels(path: str) -> Iterator[tuple[int, str, int]]:
    """The path decoded 0, 1, ... times until nothing is left to decode, each checked (and its
    NFKC form, when that differs)."""
    text = path
    for decodes in range(MAX_DECODES + 1):
        _check(text, decodes)
        yield decodes, text, 0
        if not text.isascii():
            compat = unicodedata.normalize("NFKC", text)
            if compat != text:
                if compat.count("%") != text.count("%") or compat.count("/") != text.count("/"):
                    raise AmbiguousPath("the path holds characters whose compatibility form is / or %")
                _check(compat, max(decodes, 1))
                yield decodes, compat, COMPAT
        if "%" not in text:
            return
        if decodes == MAX_DECODES:
            raise AmbiguousPath(f"the path is still percent-encoded after {MAX_DECODES} decodings")
        try:
            text = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise AmbiguousPath("the path decodes to bytes that are not UTF-8") from None


def _check(text: str, decodes: int) -> None:
    """Refuse ``text`` (the path decoded ``decodes`` times) if backends cannot agree on it."""
    if "\\" in text:
        raise AmbiguousPath("the path holds a backslash" + _depth(decodes))
    if _ENCODED_SEPARATOR.search(text):
        raise AmbiguousPath("the path holds an encoded / or \\ (%2f, %5c)" + _depth(decodes))
    if _INVALID_ESCAPE.search(text):
        raise AmbiguousPath("the path holds a % that is not a valid escape" + _depth(decodes))
    if _DOT_SEGMENT.search(text):
        raise AmbiguousPath("the path holds a . or .. segment" + _depth(decodes))
    if "#" in text or (decodes and "?" in text):
        raise AmbiguousPath("the path holds an encoded ? or #" + _depth(decodes))
    if _CONTROL.search(text) or (
        not text.isascii() and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text if not c.isascii())
    ):
        raise AmbiguousPath("the path holds a control, invisible or space character" + _depth(decodes))


def _depth(decodes: int) -> str:
    return "" if decodes == 0 else f" once decoded {decodes}x"


def _windows(text: str) -> str:
    """Each segment as a Windows file system names it: without an NTFS stream (``admin::$DATA``,
    ``admin:$I30:$INDEX_ALLOCATION`` are ``admin``), trailing dots and spaces. In linear time: a
    regular expression for the trailing run took half a second on 8000 dots, per request."""
    if ":" not in text and "." not in text and " " not in text:
        return text
    return "/".join(segment.partition(":")[0].rstrip(". ") for segment in text.split("/"))


def _variants(text: str) -> list[tuple[str, int]]:
    """``text`` with each combination of the segment transforms that change it."""
    out = [(text, 0)]
    if ";" in text:
        out.append((_PARAM.sub("", text), PARAMS))
    for variant, how in list(out):
        trimmed = _windows(variant)
        if trimmed != variant:
            out.append((trimmed, how | TRIM))
    for variant, how in list(out):
        if "//" in variant:
            out.append((_SLASH_RUN.sub("/", variant), how | SLASHES))
    return out
