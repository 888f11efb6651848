"""Host rules end to end: two virtual hosts behind each shipped proxy, built from deploy/.

``www.example.test`` (the aiohttp echo) has a public area; ``secret.example.test`` (PHP) is for
role admin only (``BOUNDARY_POLICY`` in conftest). The proxies route on the host they read, so
forwardauth must judge that same host: a ``Host`` it cannot parse (``secret.example.test:``,
``:80x``), an absolute-form request line naming another host than ``Host``, a spoofed
``X-Forwarded-Host`` or ``X-Original-*``, another case, a trailing dot, two ``Host`` headers.
The assertion is the boundary: the secret host's answer never reaches anyone but an admin, and
no answer points at forwardauth's own address.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import yaml

from forwardauth.dev import demo

from . import backends, rawhttp
from .support import Caller, Service

WWW, SECRET = "www.example.test", "secret.example.test"
PROXIES = ("nginx", "traefik", "caddy")
BROWSER = ("Accept", "text/html")


def two_hosts(secret_addr: str) -> Callable[[demo.Proxy], None]:
    """Rewrite a configured proxy's site into two virtual hosts from the shipped one: www in
    front of the proxy's app, secret in front of ``secret_addr``, each with the shipped snippets."""

    def edit(proxy: demo.Proxy) -> None:
        if proxy.kind == "nginx":
            conf = proxy.workdir / "site.conf"
            head, marker, server = conf.read_text().partition("server {")
            assert marker and "server_name _;" in server and "proxy_pass http://app;" in server
            secret = server.replace("server_name _;", f"server_name {SECRET};").replace(
                "proxy_pass http://app;", "proxy_pass http://secret_app;"
            )
            conf.write_text(
                head
                + f"upstream secret_app {{\n    server {secret_addr};\n}}\n\n"
                + marker
                + server.replace("server_name _;", f"server_name {WWW};")
                + "\n"
                + marker
                + secret
            )
        elif proxy.kind == "traefik":
            path = proxy.workdir / "dynamic.yml"
            dynamic = yaml.safe_load(path.read_text())
            routers = dynamic["http"]["routers"]
            assert set(routers) == {"forwardauth", "app"}
            # Below /forwardauth/ (its rule is longer), above the shipped catch-all `app`.
            for name, host, service in (("www", WWW, "app"), ("secret", SECRET, "secret")):
                routers[name] = {**routers["app"], "rule": f"Host(`{host}`)", "service": service, "priority": 20}
            dynamic["http"]["services"]["secret"] = {"loadBalancer": {"servers": [{"url": f"http://{secret_addr}"}]}}
            path.write_text(yaml.safe_dump(dynamic))
        else:
            path = proxy.workdir / "Caddyfile"
            text = path.read_text()
            site = re.search(rf"^:{proxy.listen_port} \{{\n", text, re.M)
            assert site, "no site block in the Caddyfile"
            body = text[site.end() :]
            assert f"reverse_proxy {proxy.app_addr}\n" in body
            path.write_text(
                text[: site.start()]
                + f"http://{WWW}:{proxy.listen_port} {{\n"
                + body
                + f"\nhttp://{SECRET}:{proxy.listen_port} {{\n"
                + body.replace(f"reverse_proxy {proxy.app_addr}\n", f"reverse_proxy {secret_addr}\n")
            )

    return edit


@pytest.fixture(params=PROXIES)
def vhosts(
    request: pytest.FixtureRequest, front: Callable[..., str], real_backends: Callable[[str], backends.Backend]
) -> str:
    secret = real_backends("php").addr
    return front(request.param, real_backends("echo").addr, two_hosts(secret), "two-hosts")


def served_by(answer: rawhttp.Response) -> str | None:
    seen = backends.seen(answer.body)
    return seen.server if seen else None


def test_each_host_is_served_by_its_own_backend(vhosts: str, boundary_callers: dict[str, Caller]) -> None:
    """The setup itself: www's public page without a token, secret's pages to an admin only."""
    port = vhosts.rsplit(":", 1)[1]
    none, user, admin = boundary_callers["none"], boundary_callers["user"], boundary_callers["admin"]
    assert served_by(rawhttp.send(vhosts, "/public/x", none.headers(), host=f"{WWW}:{port}")) == "echo"
    assert served_by(rawhttp.send(vhosts, "/page", user.headers(), host=f"{WWW}:{port}")) == "echo"
    secret = rawhttp.send(vhosts, "/public/x", admin.headers(), host=f"{SECRET}:{port}")
    assert served_by(secret) == "php", secret.text[:300]
    assert backends.seen(secret.body).header("X-Auth-User") == admin.user.username  # type: ignore[union-attr]
    assert rawhttp.send(vhosts, "/public/x", user.headers(), host=f"{SECRET}:{port}").status == 403
    assert rawhttp.send(vhosts, "/public/x", none.headers(), host=f"{SECRET}:{port}").status == 401


def attacks(port: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(request target, headers) pairs that name the secret host somewhere and www elsewhere, on
    www's public area (bypassed there) and on a page that sends a browser to sign in."""
    return [case for public in ("/public/x", "/page") for case in _attacks(port, public)]


def _attacks(port: str, public: str) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (public, [("Host", f"{SECRET}:")]),
        (public, [("Host", f"{SECRET}:80x")]),
        (public, [("Host", f"{SECRET}:{port}x")]),
        (public, [("Host", f"{SECRET}:{port}:{port}")]),
        (public, [("Host", f"{SECRET}.")]),
        (public, [("Host", f"{SECRET}.:{port}")]),
        (public, [("Host", SECRET.upper())]),
        (public, [("Host", f"SeCrEt.Example.Test:{port}")]),
        (public, [("Host", f"{WWW}@{SECRET}")]),
        (f"http://{SECRET}{public}", [("Host", WWW)]),
        (f"http://{SECRET}:{port}{public}", [("Host", f"{WWW}:{port}")]),
        (f"http://{SECRET}:{port}{public}", [("Host", f"{SECRET}:")]),
        (f"http://{SECRET.upper()}{public}", [("Host", WWW)]),
        (public, [("Host", SECRET), ("X-Forwarded-Host", WWW)]),
        (public, [("Host", f"{SECRET}:"), ("X-Forwarded-Host", WWW)]),
        (public, [("Host", SECRET), ("X-Original-Host", WWW), ("X-Original-URL", f"http://{WWW}{public}")]),
        (
            public,
            [("Host", SECRET), ("X-Forwarded-Host", WWW), ("X-Real-IP", "10.0.0.1"), ("Forwarded", f"host={WWW}")],
        ),
        (public, [("Host", WWW), ("Host", SECRET)]),
        (public, [("Host", SECRET), ("Host", WWW)]),
        (f"//{SECRET}{public}", [("Host", SECRET)]),
    ]


def test_the_secret_host_never_answers_anyone_but_an_admin(
    vhosts: str, boundary_callers: dict[str, Caller], boundary_service: Service
) -> None:
    port = vhosts.rsplit(":", 1)[1]
    internal = re.compile(rf"127\.0\.0\.1:{boundary_service.port}|localhost:{boundary_service.port}")
    # A trailing dot names the same host.
    ours = re.compile(rf"^(/|http://(www|secret)\.example\.test\.?(:{port})?/)", re.I)
    found = []
    for target, headers in attacks(port):
        for caller in (boundary_callers["none"], boundary_callers["user"]):
            for accept in ([], [BROWSER]):
                answer = rawhttp.send(vhosts, target, accept + caller.headers() + headers, host=None)
                where = f"{target} {headers} as {caller.name}{' (browser)' if accept else ''}: {answer.status}"
                assert answer.status != 0, f"{where}: no answer"
                if served_by(answer) == "php":
                    found.append(f"{where}: the secret host answered")
                location = answer.headers.get("Location") or ""
                if internal.search(location) or internal.search(answer.text):
                    found.append(f"{where}: forwardauth's own address leaked ({location!r})")
                if location and not ours.match(location):
                    found.append(f"{where}: Location {location!r} points at no host of ours")
    assert not found, "\n".join(found)
