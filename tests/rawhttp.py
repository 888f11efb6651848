"""Requests written byte for byte, for paths and headers no HTTP client would send as given.

``urllib`` and ``http.client`` normalise or refuse what the boundary tests must send as is
(``/admin/../x``, ``X.Auth.User``, an absolute-form request line, two ``Host`` headers). Each
request goes on a new connection with ``Connection: close``; the answer is parsed by
``http.client`` (chunked bodies included) into a ``tests.http.Response``.
"""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from .http import TIMEOUT, Response

Headers = Sequence[tuple[str, str]]
DEFAULT_HOST = "app.example.test"


class _Replay:
    """Enough of a socket for ``http.client.HTTPResponse`` to read recorded bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BytesIO:
        return io.BytesIO(self._data)


def parse(data: bytes) -> Response:
    """An HTTP/1.x response from its bytes; a server that said nothing is status 0."""
    if not data:
        return Response(0, http.client.HTTPMessage(), b"")
    response = http.client.HTTPResponse(_Replay(data))  # type: ignore[arg-type]
    response.begin()
    try:
        body = response.read()
    except http.client.IncompleteRead as partial:
        body = partial.partial
    return Response(response.status, response.headers, body)


def request_bytes(
    target: str, headers: Headers = (), method: str = "GET", host: str | None = DEFAULT_HOST, body: bytes = b""
) -> bytes:
    """The request ``send`` writes, with ``Connection: close``."""
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def send(
    base: str,
    target: str,
    headers: Headers = (),
    method: str = "GET",
    host: str | None = DEFAULT_HOST,
    body: bytes = b"",
    timeout: float = TIMEOUT,
) -> Response:
    """``METHOD target HTTP/1.1`` to the server at ``base`` (``http://host:port``), headers in order.

    ``host`` is the ``Host`` header (None: none; pass it in ``headers`` for odd forms or two of them).
    """
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(request_bytes(target, headers, method, host, body))
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # some servers reset after answering a request they refuse
    return parse(b"".join(chunks))
