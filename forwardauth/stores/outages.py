"""Store outages in the log: once per interval, not once per request."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("forwardauth.connections")

OUTAGE_LOG_SECONDS = 10.0


class OutageLog:
    """Reports a store outage once per interval, not once per request: a dead Redis under
    thousands of checks a second would otherwise flood the log. Each report says how many
    failures it stands for."""

    def __init__(self, interval: float = OUTAGE_LOG_SECONDS) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def failed(self, store: str, exc: BaseException) -> None:
        now = time.monotonic()
        count = self._unreported.get(store, 0) + 1
        if now - self._last.get(store, -self._interval) < self._interval:
            self._unreported[store] = count
            return
        self._last[store], self._unreported[store] = now, 0
        log.warning(
            "%s unavailable (%s): answering 503; %d failure(s) since the last report", store, type(exc).__name__, count
        )
