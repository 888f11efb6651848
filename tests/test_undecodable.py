"""Bytes that are not text where text is expected, and tokens where no session is: a clear 4xx,
one log line, never a 500 with a traceback, nothing half done.

aiohttp hands non-UTF-8 header bytes on as surrogates, and its client will not send them, so the
requests here are written byte by byte on a socket of their own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any
from urllib.parse import quote

import pytest

from .support import MakeClient
from .test_oauth import basic, token
from .test_web import MakeUser, auth_status, login

Client = Any
NOT_UTF8 = b"\xff\xfe\xc3("  # invalid UTF-8: a lone continuation, an unfinished sequence
RD = quote("https://app.example.test/x", safe="")


async def raw(client: Client, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request as bytes (``Host`` and ``Content-Length`` added); (status, whole reply)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        head + b"\r\nHost: auth.example.test\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return int(reply.split(b" ", 2)[1]), reply


def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback, no "unexpected error": the refusal was handled where it arose."""
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text


REQUESTS = [
    b"GET /auth HTTP/1.1",
    b"POST /logout HTTP/1.1\r\nContent-Type: application/json",
    b"POST /logout/all HTTP/1.1\r\nContent-Type: application/json",
    b"GET /login?rd=" + RD.encode() + b" HTTP/1.1\r\nAccept: text/html",
    b"POST /oauth/token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
    b"POST /oauth/revoke HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
    b"POST /refresh HTTP/1.1\r\nContent-Type: application/json",
]
HEADERS = [
    b"Authorization: Bearer " + NOT_UTF8,
    b"Authorization: Basic " + NOT_UTF8,
    b"Authorization: Basic " + base64.b64encode(b"app-" + NOT_UTF8 + b":secret"),
    b"Cookie: forwardauth=" + NOT_UTF8,
    b"Cookie: forwardauth_refresh=" + NOT_UTF8,
    b"Cookie: a=" + NOT_UTF8 + b"; forwardauth=x" + NOT_UTF8,
    b"X-Forwarded-For: " + NOT_UTF8,  # the client address throttling and audit use
    b"Origin: http://" + NOT_UTF8,
]


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.split(b":")[0].decode() + "-" + str(HEADERS.index(h)))
@pytest.mark.parametrize("request_line", REQUESTS, ids=lambda r: r.split(b" ")[1].split(b"?")[0].decode())
async def test_bytes_that_are_not_utf8_in_credentials_are_a_4xx(
    client: Client, caplog: pytest.LogCaptureFixture, request_line: bytes, header: bytes
) -> None:
    body = b"grant_type=client_credentials&token=x" if b"/oauth/" in request_line else b"{}"
    if request_line.startswith(b"GET"):
        body = b""
    status, _ = await raw(client, request_line + b"\r\n" + header, body)
    if request_line.startswith(b"GET /login"):
        assert status == 200  # the form: an unreadable refresh cookie is no cookie
    elif request_line.startswith(b"POST /logout HTTP") and header.startswith(
        (b"Authorization: Basic", b"Cookie: forwardauth_refresh")
    ):
        assert status == 200  # no access token (Basic is not one, a refresh cookie unreadable): nothing to end
    elif header.startswith((b"X-Forwarded-For", b"Origin")):
        assert status < 500  # no address or origin can be read from it: the peer's is used, a JSON call passes
    else:
        assert 400 <= status < 500
    quiet(caplog)


async def test_a_live_session_survives_a_garbled_cookie_beside_it(client: Client, make_user: MakeUser) -> None:
    """A bearer token is read first; an unreadable cookie of another name does not spoil it."""
    tokens = await login(client, make_user())
    header = b"Authorization: Bearer " + tokens["access_token"].encode() + b"\r\nCookie: other=" + NOT_UTF8
    assert (await raw(client, b"GET /auth HTTP/1.1\r\n" + header))[0] == 200


FORMS = [
    # an unknown charset for the whole body
    (b"application/x-www-form-urlencoded; charset=rot13", b"username=a&password=b"),
    (b"application/x-www-form-urlencoded; charset=utf-8", b"username=" + NOT_UTF8 + b"&password=b"),
    # a part with an unknown charset, an unknown transfer encoding, an unknown content encoding
    (
        b"multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="username"\r\nContent-Type: text/plain; charset=rot13\r\n\r\n'
        b"a\r\n--XX--\r\n",
    ),
    (
        b"multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="username"\r\nContent-Transfer-Encoding: x-rot13\r\n\r\n'
        b"a\r\n--XX--\r\n",
    ),
    (
        b"multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="username"\r\n\r\n' + NOT_UTF8 + b"\r\n--XX--\r\n",
    ),
    (
        b"multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\nrot13\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="username"\r\n\r\na\r\n--XX--\r\n',
    ),
]


@pytest.mark.parametrize("path", [b"/login", b"/refresh", b"/logout", b"/oauth/token", b"/oauth/revoke"])
@pytest.mark.parametrize("content_type,body", FORMS, ids=[str(i) for i in range(len(FORMS))])
async def test_a_form_body_that_cannot_be_decoded_is_a_400(
    client: Client, caplog: pytest.LogCaptureFixture, path: bytes, content_type: bytes, body: bytes
) -> None:
    status, reply = await raw(client, b"POST " + path + b" HTTP/1.1\r\nContent-Type: " + content_type, body)
    if path.startswith(b"/oauth/") and b"multipart" in content_type:
        assert status == 400  # the OAuth endpoints take urlencoded forms only (RFC 6749)
    else:
        assert status == 400 and b'"error":"invalid_request"' in reply
    quiet(caplog)


async def test_a_clients_own_token_on_logout_revokes_that_token_only(
    client: Client, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client_credentials token has no user and no session in PostgreSQL: /logout revokes that
    token (not the client's other ones), /logout/all says there is no user to log out."""
    caplog.set_level(logging.INFO)
    app, secret = make_client(grants=("client_credentials",), scopes=(), roles=("service",))
    grant = {"grant_type": "client_credentials"}
    kept = (await token(client, grant, basic(app.id, secret or "")))[1]["access_token"]
    ended = (await token(client, grant, basic(app.id, secret or "")))[1]["access_token"]
    everywhere = await client.post("/logout/all", headers={"Authorization": f"Bearer {kept}"})
    assert everywhere.status == 400
    response = await client.post("/logout", json={}, headers={"Authorization": f"Bearer {ended}"})
    assert response.status == 200 and (await response.json()) == {"logged_out": True}
    assert await auth_status(client, ended) == 401
    assert await auth_status(client, kept) == 200
    quiet(caplog)
