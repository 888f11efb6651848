"""Request size limits on the real application (run as ``forwardauth serve`` runs it): 413, 414,
431, and malformed requests refused without their bytes reaching the log."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Callable
from typing import Any

import pytest

from forwardauth.http.common import MAX_BODY
from forwardauth.http.limits import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from forwardauth.stores import users

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
    response = await client.post(
        "/login", data=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status == 413
    assert (await response.json())["error_description"] == f"the request body is over {MAX_BODY} bytes"


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN\x00\r\n\r\n", 400),
        (
            b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN"
            + b"a" * MAX_HEADER_FIELD
            + b"\r\n\r\n",
            431,
        ),
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


# --- the time a request head may take ------------------------------------------------------------

HEAD_TIMEOUT = 1


@pytest.fixture
async def impatient(aiohttp_client: Any, settings: Any) -> Client:
    """The application with FORWARDAUTH_HEADER_TIMEOUT=1."""
    import dataclasses

    from forwardauth.http.app import create_app

    from .support import AppServer

    return await aiohttp_client(AppServer(create_app(dataclasses.replace(settings, header_timeout=HEAD_TIMEOUT))))


async def closed_after(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lines: list[bytes], every: float, deadline: float
) -> tuple[float, bytes]:
    """Send ``lines`` one by one, ``every`` seconds apart, until the server closes; (seconds, reply)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = b""
    for line in lines:
        try:
            writer.write(line)
            await writer.drain()
        except ConnectionError:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(), every)
        except TimeoutError:
            continue
        reply += chunk
        break  # read() returned: the server closed
    else:
        reply = await asyncio.wait_for(reader.read(), deadline)
    writer.close()
    return loop.time() - started, reply


async def test_a_head_trickled_line_by_line_is_cut_off(impatient: Client, caplog: pytest.LogCaptureFixture) -> None:
    """A header line every 0.4 s would hold the connection for ever: the head is due within
    FORWARDAUTH_HEADER_TIMEOUT of its first byte, then 408 and closed."""
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection(impatient.server.host, impatient.server.port)
    lines = [b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(20)]
    took, reply = await closed_after(reader, writer, lines, 0.4, 5)
    assert reply.startswith(b"HTTP/1.1 408 ") and took < HEAD_TIMEOUT + 1.5
    assert "no complete request head within 1 s (FORWARDAUTH_HEADER_TIMEOUT)" in caplog.text


async def test_a_connection_that_never_sends_is_closed(impatient: Client) -> None:
    reader, writer = await asyncio.open_connection(impatient.server.host, impatient.server.port)
    reply = await asyncio.wait_for(reader.read(), HEAD_TIMEOUT + 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_keep_alive_and_a_slow_body_are_not_cut_off(impatient: Client) -> None:
    """The clock runs for a head only: an idle keep-alive connection (no byte of a next request)
    and a body that takes longer than the head timeout are aiohttp's business, as before."""
    reader, writer = await asyncio.open_connection(impatient.server.host, impatient.server.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request)
    first = await asyncio.wait_for(reader.readuntil(b'"ok"}'), 5)
    assert first.startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(HEAD_TIMEOUT * 1.5)  # idle for longer than a head may take
    body = b'{"username": "nobody", "password": "wrong"}'
    writer.write(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body) + body[:10]
    )
    await writer.drain()
    await asyncio.sleep(HEAD_TIMEOUT * 1.5)  # the body's rest, late
    writer.write(body[10:])
    second = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert second.startswith(b"HTTP/1.1 401 ")


async def test_pipelined_requests_still_work(impatient: Client) -> None:
    reply = await exchange(
        impatient,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert reply.count(b"HTTP/1.1 200 ") == 2


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_header_timeout_names_the_variable(value: str) -> None:
    from forwardauth import config

    with pytest.raises(config.ConfigError, match=r"^FORWARDAUTH_HEADER_TIMEOUT: "):
        config.load(
            {
                "FORWARDAUTH_HEADER_TIMEOUT": value,
                "FORWARDAUTH_DATABASE_URL": "postgresql://db/x",
                "FORWARDAUTH_REDIS_URL": "redis://r",
            }
        )
    assert config.load({"FORWARDAUTH_HEADER_TIMEOUT": "30s"}).header_timeout == 30
