"""The back-channel logout sender (OpenID Connect Back-Channel Logout 1.0): a task of each
worker's lifetime that tells clients a browser session they hold a session of has ended.

Notices wait in Redis (stores.backchannel), queued after the session ended; ``due`` claims each
for one worker at a time, so every item is sent by one sender. Each attempt mints a fresh logout
token (its ``iat``/``exp`` are of the attempt) and POSTs it as a form to the client's registered
URI, with a short timeout and no redirects. A 2xx is done (the spec's 200, or the 204 some
frameworks answer); anything else is retried with a growing delay, until the queue gives up.
The token is never logged: lines name the client, the URI and what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from forwardauth.core.idtokens import IdTokenError, IdTokenService
from forwardauth.http.services import Services
from forwardauth.stores.backchannel import Item, backoff
from forwardauth.stores.redis import REDIS_DOWN

log = logging.getLogger("forwardauth.backchannel")

POLL_SECONDS = 1.0  # how often the queue is looked at when it had nothing due
SEND_TIMEOUT = 5.0  # seconds a client has to answer one logout token
BATCH = 50


async def _send(services: Services, session: aiohttp.ClientSession, ids: IdTokenService, item: Item) -> None:
    notice = item.notice
    try:
        token = ids.logout_token(notice.client_id, notice.subject, notice.sid)
    except IdTokenError as exc:  # HS256: no token a client could check; nothing to send, ever
        log.warning("back-channel logout to client %s not sent: %s", notice.client_id, exc)
        await services.backchannel.done(item)
        return
    try:
        async with session.post(notice.uri, data={"logout_token": token}, allow_redirects=False) as response:
            problem = None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        problem = type(exc).__name__
    if problem is None:
        await services.backchannel.done(item)
        log.info("back-channel logout sent to client %s (%s)", notice.client_id, notice.uri)
        return
    again = await services.backchannel.retry_later(item)
    if again:
        log.warning(
            "back-channel logout to client %s (%s) failed (%s): retrying in %d s",
            notice.client_id,
            notice.uri,
            problem,
            backoff(item.attempts + 1),
        )
    else:
        log.warning(
            "back-channel logout to client %s (%s) failed (%s) %d times: given up",
            notice.client_id,
            notice.uri,
            problem,
            item.attempts + 1,
        )


async def send_due(services: Services, session: aiohttp.ClientSession) -> int:
    """Send every item due now (claimed for this worker), side by side; how many were claimed."""
    items = await services.backchannel.due(limit=BATCH)
    ids = IdTokenService(services.tokens)
    await asyncio.gather(*(_send(services, session, ids, item) for item in items))
    return len(items)


async def run(services: Services, stop: asyncio.Event) -> None:
    """Send until ``stop``: at once again after a full batch, else after POLL_SECONDS."""
    timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "forwardauth"}) as session:
        while not stop.is_set():
            claimed = 0
            try:
                claimed = await send_due(services, session)
            except REDIS_DOWN as exc:  # the queue is in Redis: nothing to send until it is back
                log.debug("back-channel queue unavailable: %s", type(exc).__name__)
            except Exception:
                log.exception("back-channel logout sender failed; going on")
            if claimed < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)
