"""Request size limits, enforced by aiohttp's parser before any handler runs.

aiohttp answers 400 to every request it cannot parse, and logs the first 100 bytes of the
offending line with a traceback. Headers over the limits get **431** here (RFC 6585), a request
line over its limit **414**, other malformed requests a plain 400, each logged as one line
without the bytes: an over-long ``Authorization`` or ``Cookie`` line starts with a token.
The limits cost nothing per request: the parser counts as it reads.

A request's head (line and headers) must also arrive within ``FORWARDAUTH_HEADER_TIMEOUT`` of its
first byte (for a new connection, of connecting), or the connection is closed with a 408: a client
trickling a header line every few seconds cannot pin a connection. An idle keep-alive connection
(no byte of a next request yet) is left to aiohttp's keep-alive handling. Per request this costs
one comparison when the head arrives whole; the clock starts only when a head arrives in pieces,
and one timer per connection checks it lazily.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

from forwardauth.http.hotpath import front

log = logging.getLogger("forwardauth.limits")

MAX_REQUEST_LINE = 8 * 1024  # method, path with query, version
MAX_HEADER_FIELD = 16 * 1024  # one header line, name and value: room for a full cookie jar
MAX_HEADERS = 100
PARSER = {"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_HEADER_FIELD, "max_headers": MAX_HEADERS}
TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message; no exception class of its own
HEADER_TIMEOUT = web.AppKey("header_timeout", float)  # seconds (FORWARDAUTH_HEADER_TIMEOUT)
DEFAULT_HEADER_TIMEOUT = 10.0
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class Connection(web.RequestHandler):
    """aiohttp's handler of one connection, answering parse errors with their own status and
    closing it when a request head takes longer than ``header_timeout`` to arrive."""

    __slots__ = ("_head_deadline", "_head_timer", "header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = header_timeout
        self._head_deadline: float | None = None  # set while a request head is being received
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_clock()  # a client connects to send a request: its head is due from now

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        _FEED(self, data)  # not super(): it is built per call, and this runs per request
        if self._request_count != count:  # a head is complete: what may follow is its body
            self._head_deadline = None
        elif self._head_deadline is None and self._waiter is not None and not self._waiter.done():
            self._head_clock()  # idle until now, and this is part of a head, not all of it

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_clock(self) -> None:
        self._head_deadline = self._loop.time() + self.header_timeout
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(self._head_deadline, self._head_due)

    def _head_due(self) -> None:
        """The timer: close the connection if the head it waits for is late, else look again when
        the current head is due (the timer is not moved per request: that would cost per request)."""
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self._force_close or self.transport is None:
            return
        if self._loop.time() < deadline:
            self._head_timer = self._loop.call_at(deadline, self._head_due)
            return
        if self._waiter is not None and not self._waiter.done():  # still no complete head
            peer = self.transport.get_extra_info("peername")
            log.info(
                "closed a connection from %s: no complete request head within %g s (FORWARDAUTH_HEADER_TIMEOUT)",
                peer[0] if isinstance(peer, tuple) else "-",
                self.header_timeout,
            )
            self.transport.write(REQUEST_TIMEOUT)
            self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):  # not a parse error: aiohttp's answer
            return super().handle_error(request, status, exc, message)
        status, description = self.refusal(exc)
        log.info("refused a request from %s: %d %s", request.remote, status, description)
        body = {"error": "invalid_request", "error_description": description}
        response = web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
        response.force_close()  # the rest of the stream cannot be trusted to be in step
        return response

    def refusal(self, exc: BadHttpMessage) -> tuple[int, str]:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1]  # (line, limit, actual size)
            if limit == self.max_field_size:
                return 431, f"a request header is over {limit} bytes"
            return 414, f"the request line is over {limit} bytes"
        if exc.message == TOO_MANY_HEADERS:
            return 431, f"more than {self.max_headers} request headers"
        return 400, "malformed HTTP request"


_FEED = web.RequestHandler.data_received


class Server(web.Server):
    """aiohttp's server, with a :class:`Connection` for each connection."""

    header_timeout = DEFAULT_HEADER_TIMEOUT

    def __call__(self) -> web.RequestHandler:
        return Connection(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`Server`; the app's limits (``PARSER``, and
    ``HEADER_TIMEOUT`` when the app sets it) apply, and a handler it serves ahead of its router
    (``hotpath``) is."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application
        server = Server(
            front(self.app, made.request_handler),
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )
        server.header_timeout = self.app.get(HEADER_TIMEOUT, DEFAULT_HEADER_TIMEOUT)
        return server
