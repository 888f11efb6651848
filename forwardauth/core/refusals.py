"""Requests ``/auth`` refuses (400) rather than guesses, and the rate-limited log of them.

A request that can be read two ways (by forwardauth, the proxy and the backend) is refused, not
judged by one reading: see paths (paths), forwarding (hosts, descriptions, untrusted senders) and
``refresh_cookie_leak`` here (forwardauth's refresh cookie on a request for an app). Refusals are
logged once per interval per reason, with a count, so a flood of hostile requests cannot flood the
log; never with a traceback, never with a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from multidict import CIMultiDictProxy, istr

log = logging.getLogger("forwardauth.refusals")

REPORT_SECONDS = 60.0


class Refused(ValueError):
    """A request ``/auth`` will not judge: answered 400 with this message.

    ``reason`` groups refusals in the log (one line per reason per interval); ``level`` is how
    loud: a hostile request is a warning, a misconfiguration that removes protection an error.
    """

    reason = "malformed request"
    level = logging.WARNING


class RefreshCookieSent(Refused):
    """The request being authorised carries forwardauth's refresh cookie: it would reach the app."""

    reason = "refresh cookie sent to an app"


class RefusalLog:
    """Logs a refusal once per ``interval`` per reason, saying how many it stands for."""

    def __init__(self, interval: float = REPORT_SECONDS) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def report(self, refusal: Refused, remote: str | None) -> bool:
        """Count ``refusal``; log it when its reason was not logged within the interval (True)."""
        reason = refusal.reason
        now = time.monotonic()
        count = self._unreported.get(reason, 0) + 1
        if now - self._last.get(reason, -self._interval) < self._interval:
            self._unreported[reason] = count
            return False
        self._last[reason], self._unreported[reason] = now, 0
        log.log(
            refusal.level,
            "refused (400), %s: %s (from %s; %d such refusal(s) since the last report)",
            reason,
            refusal,
            remote or "an unknown address",
            count,
        )
        return True


# The headers by which a proxy says the request is for an app (not /auth called directly).
COOKIE = istr("Cookie")
_FOR_AN_APP = tuple(
    istr(h)
    for h in (
        "X-Original-URL",
        "X-Original-URI",
        "X-Original-Method",
        "X-Original-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
    )
)


def refresh_cookie_leak(headers: CIMultiDictProxy[str], name: str, envoy: bool) -> RefreshCookieSent | None:
    """The refusal of a request for an app (described by a proxy, or on the Envoy route) that
    carries the refresh cookie ``name``. Browsers send that cookie only to forwardauth's own paths
    (``/forwardauth/``), so an app request with it has a path that only looks like ours
    (``/forwardauth/..%2Fx``, which nginx normalises to the app) or forwardauth's pages are served
    on the app's paths: the app would get the long-lived token. ``/auth`` asked directly is ours."""
    if not refresh_cookie_sent(headers.getall(COOKIE, ()), name):
        return None
    if not envoy and not any(map(headers.get, _FOR_AN_APP)):
        return None
    return RefreshCookieSent(
        f"the request carries forwardauth's refresh cookie {name}, which must never reach an app: "
        "its path only looks like forwardauth's own, or forwardauth's pages are served on the "
        "app's paths without X-Forwarded-Prefix"
    )


def refresh_cookie_sent(cookie_headers: Sequence[str], name: str) -> bool:
    """Whether cookie ``name`` is among the ``Cookie`` header values (exact name, any value).

    A substring test first, decided in C: the usual request does not carry it.
    """
    for header in cookie_headers:
        if name not in header:
            continue
        for pair in header.split(";"):
            if pair.split("=", 1)[0].strip() == name:
                return True
    return False
