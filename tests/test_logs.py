"""Logs: one JSON object per line (or text), carrying the request id: a trusted proxy's
``X-Request-Id``, else one of ours."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from forwardauth.logs import JsonFormatter, TextFormatter
from forwardauth.safetext import UNSAFE

from . import http
from .support import Service, wait_until

OURS = re.compile(r"^[0-9a-f]{8}-\d+$")  # worker tag, then sequence
DEBUG_JSON = {"FORWARDAUTH_LOG_LEVEL": "DEBUG", "FORWARDAUTH_LOG_FORMAT": "json"}


def json_lines(svc: Service) -> list[dict[str, Any]]:
    """Every line the service wrote: each must be one JSON object."""
    return [json.loads(line) for line in svc.log.read_text().splitlines() if line.strip()]


def access_lines(svc: Service, count: int) -> list[dict[str, Any]]:
    """The DEBUG line of each /auth request, once ``count`` of them are written."""

    def written() -> list[dict[str, Any]]:
        lines = [e for e in json_lines(svc) if e["logger"] == "forwardauth.access" and e["path"] == "/auth"]
        return lines if len(lines) >= count else []

    found: list[dict[str, Any]] = wait_until(written, timeout=10, what=f"{count} access lines")
    return found


def test_a_trusted_proxy_names_the_request(service: Callable[..., Service]) -> None:
    svc = service(extra=DEBUG_JSON)  # the test runs on 127.0.0.1: trusted by default
    assert http.get(svc.base + "/auth", {"X-Request-Id": "nginx-7f3a9c"}).status == 401
    assert http.get(svc.base + "/auth").status == 401
    assert http.get(svc.base + "/auth", {"X-Request-Id": "x" * 200}).status == 401  # too long: ours instead
    given, plain, too_long = access_lines(svc, 3)
    assert given["request_id"] == "nginx-7f3a9c"
    assert (given["method"], given["status"], given["level"]) == ("GET", 401, "DEBUG")
    assert given["duration_ms"] >= 0 and isinstance(given["pid"], int)
    assert OURS.match(plain["request_id"]) and OURS.match(too_long["request_id"])
    assert plain["request_id"] != too_long["request_id"]
    startup = [e for e in json_lines(svc) if e["logger"] == "forwardauth.server"]
    assert startup and all("request_id" not in e for e in startup)  # outside any request


def test_an_untrusted_sender_cannot_name_the_request(service: Callable[..., Service]) -> None:
    svc = service(extra={**DEBUG_JSON, "FORWARDAUTH_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert http.get(svc.base + "/auth", {"X-Request-Id": "chosen-by-client"}).status == 401
    (line,) = access_lines(svc, 1)
    assert OURS.match(line["request_id"])


def test_text_format(service: Callable[..., Service]) -> None:
    svc = service(extra={"FORWARDAUTH_LOG_LEVEL": "DEBUG", "FORWARDAUTH_LOG_FORMAT": "text"})
    assert http.get(svc.base + "/auth", {"X-Request-Id": "abc-123"}).status == 401
    pattern = re.compile(r"DEBUG \[\d+\] forwardauth\.access: GET /auth 401 request_id=abc-123$", re.MULTILINE)
    wait_until(lambda: pattern.search(svc.log.read_text()), timeout=10, what="the access line")
    assert re.search(r"INFO \[\d+\] forwardauth\.server: ", svc.log.read_text())


def record(message: str, **extra: Any) -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.getLogger("forwardauth.test").makeRecord(
            "forwardauth.test", logging.ERROR, __file__, 1, message, ("x",), sys.exc_info(), extra=extra
        )
    return made


def test_json_formatter_keeps_extras_and_the_traceback() -> None:
    entry = json.loads(JsonFormatter().format(record("failed %s", store="redis", attempt=2)))
    assert (entry["message"], entry["level"], entry["logger"]) == ("failed x", "ERROR", "forwardauth.test")
    assert (entry["store"], entry["attempt"]) == ("redis", 2)
    assert "ValueError: boom" in entry["exception"] and "request_id" not in entry
    assert entry["time"].endswith("+00:00")


def test_text_formatter_is_one_classic_line() -> None:
    first = TextFormatter().format(record("failed %s")).splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR \[\d+\] forwardauth\.test: failed x$", first)


HOSTILE = (
    "bob\r\n2026-01-01 00:00:00,000 INFO [1] forwardauth.web: login ok for root"
    "\x1b]0;pwned\x07\x1b[8m\u202e\u2028\x85\x7f"
)


def through_logger(formatter: logging.Formatter, *args: Any, exc: bool = False) -> str:
    """What a real logger writes to a stream with ``formatter``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"forwardauth.test.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise ValueError(f"bad name {args[0]}")
            except ValueError:
                logger.exception("login failed for %s", *args)
        else:
            logger.warning("login failed for %s", *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_text_log_escapes_control_characters_in_messages_and_arguments() -> None:
    written = through_logger(TextFormatter(), HOSTILE)
    assert written.count("\n") == 1  # one record, one line
    assert not UNSAFE.search(written.rstrip("\n"))
    assert written.rstrip("\n").endswith(
        "login failed for bob\\r\\n2026-01-01 00:00:00,000 INFO [1] forwardauth.web: login ok for root"
        "\\x1b]0;pwned\\x07\\x1b[8m\\u202e\\u2028\\x85\\x7f"
    )


def test_text_log_traceback_lines_are_indented_and_escaped() -> None:
    first, *rest = through_logger(TextFormatter(), HOSTILE, exc=True).rstrip("\n").split("\n")
    assert " ERROR [" in first and first.endswith("\\x7f")
    assert rest and all(line.startswith("  ") for line in rest)  # nothing reads as a record of its own
    assert not UNSAFE.search("".join(rest)) and "  ValueError: bad name bob\\r" in rest
    assert rest[-1].endswith("root\\x1b]0;pwned\\x07\\x1b[8m\\u202e\\u2028\\x85\\x7f")


def test_json_log_escapes_what_json_leaves_raw_and_stays_json() -> None:
    written = through_logger(JsonFormatter(), HOSTILE)
    assert written.count("\n") == 1 and not UNSAFE.search(written.rstrip("\n"))
    assert json.loads(written)["message"] == f"login failed for {HOSTILE}"  # lossless
    lone = through_logger(JsonFormatter(), "x\ud800y")  # a lone surrogate (from a JSON body) is no crash
    assert json.loads(lone)["message"] == "login failed for x\ud800y"
