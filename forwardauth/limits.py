"""Request size limits, enforced by aiohttp's parser before any handler runs.

aiohttp answers 400 to every request it cannot parse, and logs the first 100 bytes of the
offending line with a traceback. Headers over the limits get **431** here (RFC 6585), a request
line over its limit **414**, other malformed requests a plain 400, each logged as one line
without the bytes: an over-long ``Authorization`` or ``Cookie`` line starts with a token.
The limits cost nothing per request: the parser counts as it reads.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

log = logging.getLogger("forwardauth.limits")

MAX_REQUEST_LINE = 8 * 1024  # method, path with query, version
MAX_HEADER_FIELD = 16 * 1024  # one header line, name and value: room for a full cookie jar
MAX_HEADERS = 100
PARSER = {"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_HEADER_FIELD, "max_headers": MAX_HEADERS}
TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message; no exception class of its own


class Connection(web.RequestHandler):
    """aiohttp's handler of one connection, answering parse errors with their own status."""

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


class Server(web.Server):
    """aiohttp's server, with a :class:`Connection` for each connection."""

    def __call__(self) -> web.RequestHandler:
        return Connection(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`Server`; the app's limits (``PARSER``) apply."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application
        return Server(made.request_handler, request_factory=made.request_factory,
                      handler_cancellation=made.handler_cancellation, loop=asyncio.get_running_loop(),
                      **made._kwargs)
