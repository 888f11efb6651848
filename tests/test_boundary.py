"""The security boundary, end to end: the shipped nginx, Traefik and Caddy configurations in front
of real backends that read requests differently (the aiohttp echo, PHP's built-in server, an
embedded Tomcat 10), forwardauth behind each with ``BOUNDARY_POLICY`` (conftest).

The assertion is the boundary itself, never a status code: whenever a backend says it served an
admin resource (Tomcat's ``/admin/*`` servlet; for the others, a path under ``/admin`` in any
reading: as is, ``..`` resolved, ``;params`` stripped, ``\\`` as ``/``, any case), the caller was
an admin; whatever a backend served without a token lies under ``/public`` or ``/healthz`` in
every reading; and the identity a backend reads is the caller's, never one the client wrote.
Every request is written byte for byte (``tests/rawhttp.py``).
"""

from __future__ import annotations

import pwd
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from forwardauth.dev import demo

from . import backends, rawhttp
from .backends import Seen
from .support import Caller

PROXIES = ("nginx", "traefik", "caddy")
BACKENDS = backends.KINDS
MATRIX = [pytest.param((p, b), id=f"{p}-{b}") for p in PROXIES for b in BACKENDS]
Front = Callable[..., str]

# Paths that two servers may read as two resources: forwardauth must refuse them or judge them
# as strictly as the most permissive backend reads them.
ATTACKS = [
    "/admin/%252e%252e/healthz",
    "/admin/../public/x",
    "/admin/%2e%2e/public/x",
    "/admin/%2E%2E/public/x",
    "/public/..;/admin/x",
    "/healthz/..;/admin/x",
    "/admin;x=1/panel",
    "/Admin;x/panel",
    "/api/v1/admin;x",
    "/api/v1/ADMIN",
    "/ADMIN/x",
    "//admin/x",
    "/./admin/x",
    "/%61dmin/x",
    "/%2561dmin/x",
    "/public/%2e%2e/admin/x",
    "/public/.%2e/admin/x",
    "/public/%252e%252e/admin/x",
    "/public/../admin/x",
    "/public/x/../../admin/x",
    "/healthz/%2e%2e/admin/x",
    "/public%2f..%2fadmin/x",
    "/public/..%2fadmin/x",
    "/public/..%5cadmin",
    "/public/..%5cadmin/x",
    "/admin%3bx/panel",
    "/%2fadmin/x",
    "/public/..%252fadmin/x",
    "/public;/../admin/x",
    "/public/%2e%2e;/admin/x",
]
ADMIN_PATH = re.compile(r"^/(admin|api/v[0-9]+/admin)(/|$)")
BYPASS_PATH = re.compile(r"^/(public|healthz)(/|$)")


def readings(path: str) -> set[str]:
    """Every way an application could read ``path`` (already decoded once by its server): as
    is and with dot segments resolved; both with ``;params`` stripped, ``\\`` read as ``/``,
    empty segments dropped and case folded."""
    segments = [s.split(";", 1)[0] for s in path.split("?", 1)[0].lower().replace("\\", "/").split("/")]
    as_is = [s for s in segments if s]
    resolved: list[str] = []
    for segment in as_is:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    return {"/" + "/".join(as_is), "/" + "/".join(resolved)}


def served_admin(seen: Seen) -> bool:
    return seen.admin_servlet or any(ADMIN_PATH.match(r) for p in seen.paths for r in readings(p))


def served_only_public(seen: Seen) -> bool:
    return not seen.admin_servlet and all(BYPASS_PATH.match(r) for p in seen.paths for r in readings(p))


def test_the_readings_of_a_path() -> None:
    """The judge of these tests, checked on its own: strict in every direction."""
    assert readings("/public/../admin/x") == {"/public/../admin/x", "/admin/x"}
    assert readings("/admin/../public/x") == {"/admin/../public/x", "/public/x"}
    assert readings("/ADMIN;x=1//Panel") == {"/admin/panel"}
    assert readings("/public/..\\admin") == {"/public/../admin", "/admin"}
    php = backends.Seen("php", ["/public/a b"], {})
    assert served_only_public(php) and not served_admin(php)
    assert served_admin(backends.Seen("tomcat", ["/x"], {}, admin_servlet=True))
    assert not served_only_public(backends.Seen("echo", ["/public/..;/admin/x"], {}))


def violations(seen: Seen | None, caller: Caller) -> list[str]:
    """What is wrong with ``caller`` having been served ``seen`` (nothing when it was refused)."""
    if seen is None:
        return []
    wrong = []
    if served_admin(seen) and not caller.is_admin:
        wrong.append(f"{seen.server} served an admin resource ({seen.paths}) to {caller.name}")
    if caller.token is None and not served_only_public(seen):
        wrong.append(f"{seen.server} served a protected resource ({seen.paths}) without a token")
    user = seen.header("X-Auth-User")
    expected = caller.user.username if caller.user else None
    if user is not None and user != expected:
        wrong.append(f"{seen.server} read X-Auth-User {user!r}, the caller is {expected!r}")
    return wrong


@pytest.fixture(params=MATRIX)
def stack(
    request: pytest.FixtureRequest, front: Front, real_backends: Callable[[str], backends.Backend]
) -> tuple[str, str]:
    """``(proxy URL, backend kind)`` for each shipped proxy in front of each backend."""
    kind, backend = request.param
    return front(kind, real_backends(backend).addr), backend


# --- 1. paths ----------------------------------------------------------------------------------------


def test_no_path_reaches_more_than_the_caller_may_see(
    stack: tuple[str, str], boundary_callers: dict[str, Caller]
) -> None:
    url, _ = stack
    found = []
    for caller in boundary_callers.values():
        for path in ATTACKS:
            answer = rawhttp.send(url, path, caller.headers())
            assert answer.status != 0, f"{path}: the proxy answered nothing"
            assert answer.status < 500, f"{path} as {caller.name}: {answer.status} {answer.text[:200]!r}"
            found += [
                f"{path} ({caller.name}, {answer.status}): {w}" for w in violations(backends.seen(answer.body), caller)
            ]
    assert not found, "\n".join(found)


def expect_served(url: str, path: str, caller: Caller, status: int = 200) -> Seen:
    answer = rawhttp.send(url, path, caller.headers())
    seen = backends.seen(answer.body)
    assert answer.status == status and seen is not None, f"{path} as {caller.name}: {answer.status} {answer.text[:200]}"
    assert not violations(seen, caller), violations(seen, caller)
    return seen


def test_legitimate_requests_still_pass(stack: tuple[str, str], boundary_callers: dict[str, Caller]) -> None:
    url, backend = stack
    admin, user, none = boundary_callers["admin"], boundary_callers["user"], boundary_callers["none"]
    panel = expect_served(url, "/admin/panel", admin)
    assert served_admin(panel) and panel.header("X-Auth-User") == admin.user.username  # type: ignore[union-attr]
    if backend == "tomcat":
        assert panel.admin_servlet
    assert expect_served(url, "/api/v2/admin/users", admin).header("X-Auth-Roles") == "admin,user"
    assert expect_served(url, "/elsewhere/page?x=1", user).header("X-Auth-User") == user.user.username  # type: ignore[union-attr]
    public = expect_served(url, "/public/x", none)
    assert public.header("X-Auth-User") is None
    assert any(unquote(p).endswith("/public/a b") for p in expect_served(url, "/public/a%20b", none).paths)
    expect_served(url, "/healthz", none)
    for path in ("/admin/panel", "/api/v1/admin"):
        assert rawhttp.send(url, path, user.headers()).status == 403, path
    assert rawhttp.send(url, "/admin/panel", none.headers()).status == 401
    assert rawhttp.send(url, "/elsewhere", none.headers()).status == 401


# --- 2. identity headers in every spelling a backend may read as ours ------------------------------

# PHP (and CGI, WSGI, Rack) read these as HTTP_X_AUTH_USER etc.: Go and nginx keep the case of none.
SPOOFED = [
    ("X.Auth.User", "root"),
    ("X-Auth.User", "root"),
    ("X.Auth-User", "root"),
    ("X_Auth_User", "root"),
    ("X-Auth_User", "root"),
    ("x-AUTH-user", "root"),
    ("X.AUTH.USER", "root"),
    ("X.Auth.Roles", "admin"),
    ("X_Auth_Roles", "admin"),
    ("X-AUTH-ROLES", "admin"),
    ("X.Auth.Email", "spoof@evil.test"),
    ("X_Auth.Subject", "0"),
    ("X.Auth.AMR", "mfa"),
    ("X_Auth_Amr", "hwk,user,mfa"),
    ("x-auth-amr", "mfa"),
    ("X.Auth.Groups", "admins"),
    ("X_Auth_Groups", "admins"),
]
# Names forwardauth does not set: Traefik and Caddy remove them; nginx only replaces its four
# (deploy/README.md says to clear others an application trusts).
UNSET = [("X-Auth-Groups", "admins"), ("x-auth-groups", "admins")]


@pytest.mark.parametrize("kind", PROXIES)
def test_php_never_reads_a_spoofed_identity(
    kind: str, front: Front, real_backends: Callable[[str], backends.Backend], boundary_callers: dict[str, Caller]
) -> None:
    url = front(kind, real_backends("php").addr)
    user, none = boundary_callers["user"], boundary_callers["none"]
    spoofs = SPOOFED + (UNSET if kind != "nginx" else [])
    cases = [[header] for header in spoofs] + [spoofs, list(reversed(spoofs))]
    for headers in cases:
        # A bypass path without a token: forwardauth sets no identity, so PHP must see none.
        public = backends.seen(rawhttp.send(url, "/public/x", none.headers() + headers).body)
        assert public is not None and public.server == "php", headers
        identity = {k: v for k, v in public.headers.items() if k.startswith("x-auth-")}
        assert identity == {}, f"{kind}, {headers}: PHP read {identity}"
        # A protected path with a token: exactly forwardauth's identity.
        private = backends.seen(rawhttp.send(url, "/elsewhere", user.headers() + headers).body)
        assert private is not None, headers
        identity = {k: v for k, v in private.headers.items() if k.startswith("x-auth-")}
        assert identity == {
            "x-auth-user": user.user.username,
            "x-auth-roles": "user",  # type: ignore[union-attr]
            "x-auth-subject": str(user.user.id),
            "x-auth-amr": "pwd",
        }, f"{kind}, {headers}: PHP read {identity}"  # type: ignore[union-attr]


def test_nginx_keeps_invalid_header_names_out_and_the_test_would_see_them(
    front: Front, real_backends: Callable[[str], backends.Backend], boundary_callers: dict[str, Caller]
) -> None:
    """deploy/nginx relies on ``ignore_invalid_headers on`` (and no ``underscores_in_headers``):
    the same config with them turned the other way lets X_Auth_User through to PHP."""
    site = (demo.DEPLOY / "nginx" / "example-site.conf").read_text()
    assert re.search(r"^\s*ignore_invalid_headers on;", site, re.M)
    assert re.search(r"^\s*underscores_in_headers off;", site, re.M)

    def permissive(proxy: demo.Proxy) -> None:
        conf = proxy.workdir / "site.conf"
        text = conf.read_text().replace("ignore_invalid_headers on;", "ignore_invalid_headers off;")
        conf.write_text(text.replace("underscores_in_headers off;", "underscores_in_headers on;"))

    url = front("nginx", real_backends("php").addr, permissive, "permissive")
    seen = backends.seen(rawhttp.send(url, "/public/x", [("X_Auth_User", "root"), ("Accept", "application/json")]).body)
    assert seen is not None and seen.header("X-Auth-User") == "root", "the negative control did not get through"


# --- 3. the refresh cookie stays with forwardauth -------------------------------------------------------

# Browsers send the refresh cookie (Path=/forwardauth/) for these raw paths and keep `..%2F`.
COOKIE_PATHS = [
    "/forwardauth/..%2Fx",
    "/forwardauth/..%2fx",
    "/forwardauth/%2e%2e/x",
    "/forwardauth/%2E%2E/x",
    "/forwardauth/..%2f..%2fapp",
    "/forwardauth/.%2e/x",
    "/forwardauth/..%5cx",
    "/forwardauth//../x",
    "/forwardauth/..;/x",
    "/forwardauth/x/..%2F..%2Fpublic/x",
    "/x",
    "/public/x",
    "/forwardauth/..%2Fpublic%2Fx",
    "http://app.example.test/forwardauth/..%2Fx",
]


@pytest.mark.parametrize("kind", PROXIES)
@pytest.mark.parametrize("backend", ["echo", "php"])
def test_the_refresh_cookie_never_reaches_the_application(
    kind: str,
    backend: str,
    front: Front,
    real_backends: Callable[[str], backends.Backend],
    boundary_callers: dict[str, Caller],
) -> None:
    url = front(kind, real_backends(backend).addr)
    user = boundary_callers["user"]
    refresh = secrets.token_urlsafe(32)
    found = []
    for path in COOKIE_PATHS:
        for cookie in (f"forwardauth={user.token}; forwardauth_refresh={refresh}", f"forwardauth_refresh={refresh}"):
            answer = rawhttp.send(url, path, [("Accept", "application/json"), ("Cookie", cookie)])
            seen = backends.seen(answer.body)
            if seen is not None and "forwardauth_refresh" in str(seen.raw):
                found.append(f"{path} ({answer.status}): {seen.server} received the refresh cookie")
    assert not found, "\n".join(found)


# --- 4. what the public may reach under /forwardauth/ --------------------------------------------------

NOT_PUBLIC = [
    "/forwardauth/auth",
    "/forwardauth/auth/envoy/x",
    "/forwardauth/auth/envoy/admin/panel",
    "/forwardauth/readyz",
    "/forwardauth/metrics",
]
NOT_PUBLIC_SPELLINGS = [
    "/forwardauth//auth",
    "/forwardauth/./auth",
    "/forwardauth/%61uth",
    "/forwardauth/auth/",
    "/forwardauth/auth?x=1",
    "/forwardauth/readyz?x=1",
    "/forwardauth/READYZ",
    "/forwardauth/auth%2Fenvoy%2Fx",
    "/forwardauth/x/../auth",
    "/forwardauth//readyz",
    "/forwardauth/%72eadyz",
    "/forwardauth/auth;x",
    "/forwardauth/Auth/envoy/x",
    "/forwardauth/metrics/",
    "/forwardauth/auth/envoy",
    "/forwardauth/auth/envoy/",
    "/forwardauth/%2e/auth/envoy/x",
]


@pytest.mark.parametrize("kind", PROXIES)
def test_decision_and_operator_endpoints_are_not_public(
    kind: str, front: Front, real_backends: Callable[[str], backends.Backend], boundary_callers: dict[str, Caller]
) -> None:
    """What only the proxy (/auth, /auth/envoy/*) or the operator (/readyz, /metrics) needs is a
    404 from outside, in every spelling; a signed-in caller learns nothing from it either."""
    url = front(kind, real_backends("echo").addr)
    user = boundary_callers["user"]
    as_none, as_user = boundary_callers["none"].headers(), user.headers(Cookie=f"forwardauth={user.token}")
    for path in NOT_PUBLIC + NOT_PUBLIC_SPELLINGS:
        for who, headers in (("nobody", as_none), ("a user", as_user)):
            answer = rawhttp.send(url, path, headers)
            where = f"{kind} {path} as {who}: {answer.status} {answer.text[:120]!r}"
            if path in NOT_PUBLIC:
                assert answer.status == 404, where
            assert 400 <= answer.status < 500, where
            assert answer.headers.get("WWW-Authenticate") is None, where  # no decision of /auth
            assert not any(k.lower().startswith("x-auth-") for k in answer.headers), where
            assert "forwardauth_requests_total" not in answer.text and '"checks"' not in answer.text, where
    for path in ("/forwardauth/healthz", "/forwardauth/login", "/forwardauth/.well-known/jwks.json"):
        assert rawhttp.send(url, path).status == 200, path


# --- 5. the demo stack is for this machine, its workers are not root -----------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("kind", PROXIES)
def test_the_demo_proxies_listen_on_loopback_only(
    kind: str, front: Front, real_backends: Callable[[str], backends.Backend]
) -> None:
    """``make run`` and the tests run ``demo.Proxy`` as is: 127.0.0.1, never every interface."""
    url = front(kind, real_backends("echo").addr)
    port = int(url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}, listening_addresses(port)  # 127.0.0.1, little-endian


def test_nginx_workers_do_not_run_as_root(front: Front, real_backends: Callable[[str], backends.Backend]) -> None:
    url = front("nginx", real_backends("echo").addr)
    port = int(url.rsplit(":", 1)[1])
    master = next(
        p for p in Path("/proc").glob("[0-9]*") if _argv(p).startswith("nginx: master") and f"nginx-{port}" in _argv(p)
    )
    workers = [p for p in Path("/proc").glob("[0-9]*") if _status(p).get("PPid") == master.name]
    assert workers, "no nginx worker"
    for worker in workers:
        uid = int(_status(worker)["Uid"].split()[1])  # effective uid
        assert uid != 0, f"nginx worker {worker.name} runs as root"
        if _status(master)["Uid"].split()[1] == "0":
            assert uid == pwd.getpwnam("nobody").pw_uid, uid


def _argv(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _status(proc: Path) -> dict[str, str]:
    try:
        lines = (proc / "status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}
