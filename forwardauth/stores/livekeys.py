"""Does a key exist in Redis? Asked by many requests at once, answered in one round trip.

Without the revocation feed (or with FORWARDAUTH_LOCAL_CACHE=false) every /auth asks Redis
whether its access token's key still exists. One command per request is one connection, one
send and one read each: with 32 requests in flight a worker spends more on redis-py than on the
rest of /auth. ``KeyBatch`` gathers the keys asked while a command is out (or, when none is,
during one event-loop turn) and asks them in one ``MGET``, so a key exists iff its value is not
nil (access-token keys are only ever strings: ``b"1"``).

A Redis Cluster gets ``mget_nonatomic`` (the keys carry ``{sid}`` hash tags, so they are spread
over the slots), once per node: a lost master fails only the lookups of the sessions in its
slots, as without batching, not every lookup that shared a batch with one of them.

A batch is closed before its command is sent, so a key asked later never gets an answer read
before it was asked: a revocation Redis finished before the request started is always seen. A key
asked twice in one batch is sent once; each caller has a future of its own, so a caller that is
cancelled (its client went away) cancels nobody else.

Fail closed: when a command raises, every caller of its keys gets that exception (one of
REDIS_DOWN for an outage, which /auth answers with 503). A flush that is cancelled or breaks fails
every caller it has not answered with a connection error: no caller waits for an answer that never
comes, and none is told "live" without Redis saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from forwardauth.stores.redis import RedisClient

MAX_KEYS = 512  # keys per command: a bigger batch is sent as several commands at once

Waiters = dict[str, list["asyncio.Future[bool]"]]


class KeyBatch:
    """``await exists(key)``, with one round trip for all the keys asked meanwhile.

    One batch is in flight at a time: the keys asked while it is out wait for it and go together
    next. Measured against letting every event-loop turn send its own batch at once (32 callers
    with 0-60 µs of work each, local Redis, 2 cores): 39,000 checks/s instead of 27,000, p99
    1.3 ms instead of 1.9 ms, 14 keys a command instead of 5 (with 0-200 µs of work: 19,500 vs
    16,000/s). Round trips, not waiting, are what costs: each is tens of µs of redis-py on the
    worker's one core, and waiting for the batch ahead is shorter than that.
    """

    def __init__(self, client: RedisClient, max_keys: int = MAX_KEYS) -> None:
        self._client = client
        self._max = max_keys
        self._open: Waiters | None = None  # the batch keys asked now join (not sent yet)
        self._sending: Waiters | None = None  # the batch in flight
        self._flush: asyncio.Task[None] | None = None
        self.commands = 0  # round trips made, for /metrics; never reset
        self.keys = 0  # keys sent in them (a key asked twice in a batch: once)

    async def exists(self, key: str) -> bool:
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = {}
            if self._flush is None:
                # A task's first step is itself scheduled with call_soon: it runs at the next
                # turn, after every caller of this one has joined.
                self._flush = loop.create_task(self._run())
                self._flush.add_done_callback(self._ended)
        waiter: asyncio.Future[bool] = loop.create_future()
        batch.setdefault(key, []).append(waiter)
        return await waiter

    async def _run(self) -> None:
        """Send the open batch, and again while keys were asked meanwhile."""
        while (batch := self._open) is not None:
            self._open = None  # closed: a key asked from now on goes into the next batch
            self._sending = batch
            keys = [key for key, waiters in batch.items() if not all(w.done() for w in waiters)]
            commands = list(self._commands(keys))
            if len(commands) == 1:
                await self._ask(batch, commands[0])
            else:
                await asyncio.gather(*(self._ask(batch, chunk) for chunk in commands))
        # Done, in the same step as the last check: a key asked after this starts a new flush.
        self._sending = None
        self._flush = None

    def _commands(self, keys: list[str]) -> Iterator[list[str]]:
        """``keys`` split into commands: by cluster node, then at most ``max_keys`` each."""
        groups: list[list[str]] = [keys]
        client = self._client
        if isinstance(client, RedisCluster) and keys:
            by_node: dict[str | None, list[str]] = {}
            for key in keys:
                try:
                    node: str | None = client.get_node_from_key(key).name  # type: ignore[union-attr]
                except Exception:  # no topology yet (or the slot's owner unknown): mget_nonatomic will tell
                    node = None
                by_node.setdefault(node, []).append(key)
            groups = list(by_node.values())
        for group in groups:
            for start in range(0, len(group), self._max):
                yield group[start : start + self._max]

    async def _ask(self, batch: Waiters, keys: list[str]) -> None:
        if not keys:
            return
        self.commands += 1
        self.keys += len(keys)
        client = self._client
        try:
            if isinstance(client, RedisCluster):
                values = await client.mget_nonatomic(keys)
            else:
                values = await client.mget(keys)
        except Exception as exc:  # fail closed: each caller of these keys raises it
            for key in keys:
                _answer(batch[key], exc)
            return
        for key, value in zip(keys, values, strict=True):
            _answer(batch[key], value is not None)

    def _ended(self, flush: asyncio.Task[None]) -> None:
        """The flush task is over. It clears ``_flush`` itself when it ends well; if it is still
        set, the task was cancelled or broke: every caller it had not answered fails now."""
        if self._flush is not flush:
            return
        self._flush = None
        error = None if flush.cancelled() else flush.exception()
        failure = error or RedisConnectionError("live-token lookup abandoned before Redis answered")
        for batch in (self._sending, self._open):
            for waiters in (batch or {}).values():
                _answer(waiters, failure)
        self._sending = self._open = None


def _answer(waiters: list[asyncio.Future[bool]], outcome: bool | BaseException) -> None:
    """Answer every caller that still waits (one cancelled meanwhile is done: left alone)."""
    for waiter in waiters:
        if waiter.done():
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
