"""Request size limits on the real application (run as ``forwardauth serve`` runs it): 413, 414,
431, and malformed requests refused without their bytes reaching the log."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Callable
from typing import Any

import pytest

from forwardauth import users
from forwardauth.limits import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from forwardauth.web import MAX_BODY

from .test_web import login

Client = Any
MakeUser = Callable[..., users.User]


async def exchange(client: Client, request: bytes) -> bytes:
    """Send bytes no HTTP client would, on a connection of their own; all the server answered."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)  # the server closes after an error
    writer.close()
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


async def expect_refusal(client: Client, status: int, **kwargs: Any) -> None:
    response = await client.get("/auth", **kwargs)
    assert response.status == status
    assert (await response.json())["error"] == "invalid_request"


async def test_a_header_over_the_limit_is_431(client: Client, make_user: MakeUser) -> None:
    token = (await login(client, make_user()))["access_token"]
    jar = f"forwardauth={token}; other=" + "x" * (MAX_HEADER_FIELD - len(token) - 100)
    assert (await client.get("/auth", headers={"Cookie": jar})).status == 200  # a full jar, within the limit
    await expect_refusal(client, 431, headers={"Cookie": jar + "x" * 200})
    await expect_refusal(client, 431, headers={"Authorization": "Bearer " + "a" * MAX_HEADER_FIELD})
    await expect_refusal(client, 431, headers={"X-" + "a" * MAX_HEADER_FIELD: "1"})


async def test_too_many_headers_is_431(client: Client) -> None:
    await expect_refusal(client, 431, headers={f"X-Header-{i}": "1" for i in range(MAX_HEADERS + 1)})
    assert (await client.get("/healthz", headers={f"X-Header-{i}": "1" for i in range(MAX_HEADERS - 10)})).status == 200


async def test_a_request_line_over_the_limit_is_414(client: Client) -> None:
    await expect_refusal(client, 414, params={"x": "a" * MAX_REQUEST_LINE})


async def test_a_compressed_body_counts_decompressed(client: Client) -> None:
    """A small gzip body that inflates past the limit is refused, not inflated."""
    bomb = gzip.compress(b"0" * (100 * MAX_BODY))
    assert len(bomb) < MAX_BODY
    response = await client.post("/login", data=bomb, headers={"Content-Type": "application/json",
                                                               "Content-Encoding": "gzip"})
    assert response.status == 413
    assert (await response.json())["error_description"] == f"the request body is over {MAX_BODY} bytes"


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN\x00\r\n\r\n", 400),
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN" + b"a" * MAX_HEADER_FIELD
         + b"\r\n\r\n", 431),
        (b"GET /auth?SECRET-TOKEN" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nCookie SECRET-TOKEN\r\n\r\n", 400),
        (b"\x16\x03\x01SECRET-TOKEN\r\n\r\n", 400),
    ],
)
async def test_malformed_requests_are_refused_without_logging_them(
    client: Client, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await exchange(client, request_bytes)
    assert status_of(reply) == status and b'"error":"invalid_request"' in reply
    assert any(r.name == "forwardauth.limits" for r in caplog.records)  # it was logged, as one line
    assert "SECRET-TOKEN" not in caplog.text and "Traceback" not in caplog.text
