"""Small HTTP helpers on the standard library for end-to-end tests.

Nothing here follows redirects or raises on a 4xx/5xx: every call returns what the server
answered (status, headers, body), so a test can assert on a 302 or a 401 as on a 200.
Proxies from the environment are ignored: the tests talk to their own loopback servers.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from html.parser import HTMLParser
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

TIMEOUT = 10.0


class Response(NamedTuple):
    """What came back; unpacks as ``status, headers, body``."""

    status: int
    headers: Message  # case-insensitive; ``get_all`` for repeated fields
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back to the caller instead of following it."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Message, newurl: str
    ) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def request(
    method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes | None = None, timeout: float = TIMEOUT
) -> Response:
    """One request, redirects not followed, HTTP errors returned as responses."""
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


def exchange(url: str, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``data`` as is to the host and port of ``url`` (bytes no HTTP client would send) and
    return all the server answers until it closes; send ``Connection: close`` in a valid request."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(url: str, headers: Mapping[str, str] | None = None) -> Response:
    return request("GET", url, headers)


def post_form(url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None) -> Response:
    """POST ``application/x-www-form-urlencoded``, as a browser submits a form."""
    return request(
        "POST",
        url,
        {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        urlencode(fields).encode(),
    )


def post_json(url: str, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    return request(
        "POST",
        url,
        {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        json.dumps(data).encode(),
    )


def set_cookies(response: Response) -> dict[str, dict[str, str]]:
    """Every ``Set-Cookie`` of the response: name -> {"value": ..., attribute (lower case): value}.

    Flags such as HttpOnly appear with the value ``"flag"``; attributes not sent are absent.
    """
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name_value, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = name_value.partition("=")
        cookie = {"value": value}
        for attribute in attributes:
            key, has_value, attr_value = attribute.partition("=")
            cookie[key.strip().lower()] = attr_value.strip() if has_value else "flag"
        cookies[name.strip()] = cookie
    return cookies


def cookie_header(**cookies: str) -> dict[str, str]:
    """A ``Cookie`` request header, for cookies a client would not store itself (e.g. another Domain)."""
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


class Form(NamedTuple):
    method: str
    action: str
    inputs: dict[str, str]  # name -> value, hidden fields included


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("method", "get").lower(), values.get("action", ""), {}))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1].inputs[values["name"]] = values.get("value", "")


def forms(page: str) -> list[Form]:
    """The forms of an HTML page, attribute values unescaped."""
    parser = _Forms()
    parser.feed(page)
    parser.close()
    return parser.forms


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header presenting an access token."""
    return {"Authorization": f"Bearer {token}"}


def login(base: str, username: str, password: str) -> Response:
    """A JSON login at ``base``/login, as an API client does; 200 carries the tokens."""
    return post_json(base + "/login", {"username": username, "password": password})
