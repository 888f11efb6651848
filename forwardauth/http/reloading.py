"""Keys and rules picked up from their files while running, without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from forwardauth.core.policy import PolicyError
from forwardauth.core.policyfile import load as load_policy
from forwardauth.http.services import Services
from forwardauth.keys import RELOAD_SECONDS, reload_ring

log = logging.getLogger("forwardauth.web")  # one name for the HTTP layer's lines, as before


async def watch(state: Callable[[], object], reload: Callable[[], bool], seen: object) -> None:
    """Every RELOAD_SECONDS, call ``reload`` when ``state`` differs from ``seen`` (until it succeeds).

    ``seen``: the state read *before* what it describes was loaded (the app does so as it is
    built). Read here instead, as this task starts, a key copied in while the worker was starting
    would already be in it, and the worker would go on signing with the old key until the next
    change (a CI run on a loaded machine saw exactly that)."""
    while True:
        await asyncio.sleep(RELOAD_SECONDS)
        current = await asyncio.to_thread(state)
        if current != seen and await asyncio.to_thread(reload):
            seen = current


def reload_keys(services: Services) -> bool:
    """Pick up rotated or pruned keys in this worker, without a restart."""
    ring = reload_ring(services.settings)  # a refused folder is logged there, rate-limited
    if ring is None:
        return False
    services.tokens.ring = ring
    services.claims.clear()  # a pruned key must stop verifying at once
    log.info("keys reloaded: signing with %s, %d key(s) verify", ring.current.kid, len(ring.by_kid))
    return True


def reload_policy(services: Services) -> bool:
    """Load the policy file again; a broken file is refused and the rules in force stay."""
    path = services.settings.policy_file
    if path is None:
        return True
    try:
        services.use_policy(load_policy(path))
    except PolicyError as exc:
        log.error("policy not reloaded, keeping the rules in force: %s", exc)
        return False
    log.info("policy reloaded: %d rule(s), default %s", len(services.policy.rules), services.policy.default.value)
    return True


def file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
