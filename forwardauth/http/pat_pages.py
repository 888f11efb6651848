"""What the portal's token page (http.portal_tokens) and the console's (http.admin_tokens) share:
the create form's fields and how they are read, the lifetimes offered, and the values the token
templates (pat_table.html, pat_form.html, pat_secret.html) need.

A token is shown once, on the 200 page answering the form (never cached: html_page's headers),
never in a URL; the lists show what stores.pats.PatInfo holds, never the token.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from forwardauth.accounts.pats import PatError, PatInfo
from forwardauth.config import Settings
from forwardauth.configparse import parse_duration
from forwardauth.http.i18n import _
from forwardauth.http.signedin import field_list

FIELDS = ("name", "expires", "scopes")  # the create form's fields
LIFETIMES = ("7d", "30d", "90d", "365d")  # offered, as far as FORWARDAUTH_PAT_MAX_TTL allows
DEFAULT_LIFETIME = "90d"
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # core.tokens.new_id's shape, with room


def lifetimes(settings: Settings) -> list[str]:
    """The lifetimes the form offers: those within the maximum (else the maximum itself)."""
    return [text for text in LIFETIMES if parse_duration(text) <= settings.pat_max_ttl] or [f"{settings.pat_max_ttl}s"]


def blank_form(settings: Settings) -> dict[str, str]:
    offered = lifetimes(settings)
    return {"name": "", "scopes": "", "expires": DEFAULT_LIFETIME if DEFAULT_LIFETIME in offered else offered[-1]}


def asked(fields: Mapping[str, str]) -> tuple[str, list[str], int]:
    """(name, scopes, lifetime in seconds) of a posted create form; ``PatError`` for a lifetime that
    is no duration (accounts.pats.create checks the rest, and the maximum)."""
    try:
        ttl = parse_duration(fields.get("expires", "").strip())
    except ValueError:
        raise PatError(_("Choose how long the token lives, e.g. 30d.")) from None
    return fields.get("name", ""), field_list(fields, "scopes"), ttl


def plausible_id(token_id: str) -> bool:
    """Whether ``token_id`` could be a token's id (anything else is no one's: not looked up)."""
    return bool(_TOKEN_ID.fullmatch(token_id))


def table_values(tokens: list[PatInfo], form: Mapping[str, str] | None, settings: Settings) -> dict[str, Any]:
    """The templates' values: the tokens (newest first) with their state, the form (kept after
    an error) and the lifetimes offered."""
    now = dt.datetime.now(dt.UTC)
    return {
        "tokens": [(info, info.state(now)) for info in reversed(tokens)],
        "token_form": dict(form) if form is not None else blank_form(settings),
        "lifetimes": lifetimes(settings),
    }
