"""What makes two spellings of a username the same user: the one rule for the user table,
sign-in regulation and the access rules' ``users`` lists alike."""

from __future__ import annotations

import unicodedata

MAX_USERNAME = 128


def normalise_username(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()
