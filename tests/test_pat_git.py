"""git over HTTP with a personal access token (issue 17): ``git clone`` and ``git push`` of a
repository served by ``git http-backend`` (fcgiwrap) behind the shipped nginx snippets and
forwardauth, the token as the password. Git sends credentials only after a Basic challenge, so
this also shows ``challenge: basic`` doing its work; the rules' scopes keep a read-only token from
pushing and a session's token out. And ``curl -u`` through each shipped proxy file, Envoy's too."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from forwardauth import config
from forwardauth.accounts import pats
from forwardauth.accounts.services import build_account_services
from forwardauth.dev import demo
from forwardauth.stores import users

from . import backends, http
from .conftest import service_environment
from .envoy import Envoy, send
from .support import PASSWORD, REDIS_URL, Service, Stack, free_port, require_program, stop_process, wait_until
from .test_envoy_e2e import require_envoy
from .test_pat_auth import basic

GIT_BACKEND = Path("/usr/lib/git-core/git-http-backend")
POLICY = """\
default: deny
rules:
  - path_regex: "^/git/.*/git-receive-pack$"
    policy: authenticated
    token_types: [pat]
    scopes: [repo:write]
    challenge: basic
  - path: /git
    policy: authenticated
    token_types: [pat]
    scopes: [repo:read]
    challenge: basic
"""


def site(port: int, socket: Path, root: Path) -> str:
    """nginx's site: the shipped forwardauth snippets, /git/ handed to git http-backend with the
    user forwardauth answered with as REMOTE_USER (which git http-backend needs to take a push)."""
    return f"""
include snippets/forwardauth-upstream.conf;
server {{
    listen 127.0.0.1:{port};
    server_name _;
    ignore_invalid_headers on;
    include snippets/forwardauth-locations.conf;
    location /git/ {{
        include snippets/forwardauth-protect.conf;
        client_max_body_size 0;
        include /etc/nginx/fastcgi_params;
        fastcgi_split_path_info ^(/git)(/.*)$;
        fastcgi_param SCRIPT_FILENAME {GIT_BACKEND};
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_param GIT_PROJECT_ROOT {root};
        fastcgi_param GIT_HTTP_EXPORT_ALL "";
        fastcgi_param REMOTE_USER $forwardauth_user;
        fastcgi_pass unix:{socket};
    }}
}}
"""


@pytest.fixture
def git_front(service: Callable[..., Service], tmp_path: Path) -> Iterator[str]:
    """nginx on a free port in front of fcgiwrap + git http-backend and forwardauth (with POLICY);
    the base URL. The socket lives where nginx's workers (nobody, under root) can reach it."""
    require_program("nginx")
    for program in ("fcgiwrap", "git"):
        if shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
            pytest.skip(f"{program} is not installed (Debian {program})")
    if not GIT_BACKEND.exists():
        pytest.skip("git http-backend is not installed (Debian git)")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    svc = service(extra={"FORWARDAUTH_POLICY_FILE": str(policy)})
    root = tmp_path / "repos"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(root / "project.git")], check=True)
    subprocess.run(["git", "-C", str(root / "project.git"), "config", "http.receivepack", "true"], check=True)
    sockets = Path(tempfile.mkdtemp(prefix="fa-git-"))
    sockets.chmod(0o711)
    socket = sockets / "fcgiwrap.sock"
    fcgiwrap = subprocess.Popen(
        [shutil.which("fcgiwrap", path="/usr/sbin:/usr/bin") or "fcgiwrap", "-c", "2", "-s", f"unix:{socket}"],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    processes = [fcgiwrap]
    try:
        wait_until(socket.exists, 10, "fcgiwrap's socket")
        socket.chmod(0o666)
        port = free_port()
        proxy = demo.Proxy("nginx", tmp_path / "nginx", port, f"127.0.0.1:{svc.port}", "127.0.0.1:9")
        proxy.configure()
        (proxy.workdir / "site.conf").write_text(site(port, socket, root))
        processes.append(proxy.launch())
        base = f"http://127.0.0.1:{port}"
        demo.wait_for_http(base + "/forwardauth/healthz", 30, processes[-1])
        yield base
    finally:
        for process in reversed(processes):
            stop_process(process)
        shutil.rmtree(sockets, ignore_errors=True)


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git with no configuration of the machine's or the user's, and never a prompt."""
    env = {
        **os.environ,
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
    }
    base = ["git", "-c", "credential.helper=", "-c", "user.name=t", "-c", "user.email=t@example.test"]
    return subprocess.run([*base, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def tokens_of(settings: config.Settings, user: users.User, *scopes: tuple[str, ...]) -> list[str]:
    """One new token of ``user`` for each set of ``scopes``."""

    async def make() -> list[str]:
        services = build_account_services(settings)
        try:
            return [
                (await pats.create(services, user.username, f"git-{i}", list(s), 3600, "test"))[1]
                for i, s in enumerate(scopes)
            ]
        finally:
            await services.close()

    return asyncio.run(make())


def test_clone_and_push_with_a_token_as_the_password(
    git_front: str, make_user: Callable[..., users.User], settings: config.Settings, tmp_path: Path
) -> None:
    user = make_user()
    reader, writer = tokens_of(settings, user, ("repo:read",), ("repo:read", "repo:write"))
    where = git_front.removeprefix("http://") + "/git/project.git"

    # No credentials: the Basic challenge git answers (and without a prompt, gives up on).
    anonymous = git(tmp_path, "clone", f"http://{where}", "anonymous")
    assert anonymous.returncode != 0 and "could not read Username" in anonymous.stderr, anonymous.stderr
    answer = http.get(f"http://{where}/info/refs?service=git-upload-pack")
    assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith('Basic realm="')

    # The writer pushes a first commit...
    work = tmp_path / "work"
    assert git(tmp_path, "clone", f"http://{user.username}:{writer}@{where}", "work").returncode == 0
    (work / "README").write_text("pushed through forwardauth\n")
    assert git(work, "add", "README").returncode == 0
    assert git(work, "commit", "-q", "-m", "first").returncode == 0
    pushed = git(work, "push", "origin", "HEAD:main")
    assert pushed.returncode == 0, pushed.stderr

    # ...which a reader clones, but may not push to (403 on git-receive-pack: no repo:write).
    copy = tmp_path / "copy"
    cloned = git(tmp_path, "clone", "-b", "main", f"http://{user.username}:{reader}@{where}", "copy")
    assert cloned.returncode == 0, cloned.stderr
    assert (copy / "README").read_text() == "pushed through forwardauth\n"
    (copy / "README").write_text("changed by a reader\n")
    git(copy, "commit", "-q", "-am", "second")
    refused = git(copy, "push", "origin", "HEAD:main")
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr

    # The owner's password is no token (401, never checked); another user's name with the token fails.
    for who, secret in ((user.username, PASSWORD), ("someone-else", reader)):
        failed = git(tmp_path, "ls-remote", f"http://{who}:{quote(secret, safe='')}@{where}")
        assert failed.returncode != 0 and "Authentication failed" in failed.stderr, failed.stderr
    # A session's token is refused where the rules take tokens only.
    session = http.login(git_front + "/forwardauth", user.username, PASSWORD).json()["access_token"]
    assert http.get(f"http://{where}/info/refs", {"Authorization": f"Bearer {session}"}).status == 403


@pytest.mark.parametrize("renamed", [False, True], ids=["x-auth-scopes", "renamed"])
@pytest.mark.parametrize("kind", ["nginx", "traefik", "caddy"])
def test_curl_u_through_the_shipped_proxy_files(
    proxy_stack: Callable[..., Stack],
    make_user: Callable[..., users.User],
    settings: config.Settings,
    kind: str,
    renamed: bool,
) -> None:
    """``curl -u user:token`` through a shipped proxy: the app gets the owner, ``amr`` pat and the
    token's scopes under the configured name, never what the client sent under those names."""
    scopes_header = "X-Token-Scopes" if renamed else "X-Auth-Scopes"
    stack = proxy_stack(kind, {"FORWARDAUTH_HEADERS_SCOPES": scopes_header} if renamed else None)
    user = make_user(roles=("user", "dev"))
    [token] = tokens_of(settings, user, ("repo:read", "deploy"))
    spoofed = {scopes_header: "admin", "X-Auth-AMR": "mfa", "Accept": "application/json"}
    response = http.get(stack.url + "/api/x", {**spoofed, **basic(user.username, token)})
    assert response.status == 200, (response.status, response.body[:200])
    seen = {k.lower(): v for k, v in response.json()["headers"].items()}
    assert seen["x-auth-user"] == user.username and seen["x-auth-amr"] == "pat"
    assert seen[scopes_header.lower()] == "repo:read deploy"
    plain = http.get(stack.url + "/api/x", {**spoofed, **basic(user.username, PASSWORD)})
    assert plain.status == 401  # a password is no token: refused, unchecked


@pytest.mark.parametrize("kind", ["nginx", "traefik", "caddy"])
def test_the_basic_challenge_reaches_the_client_through_each_proxy(
    proxy_stack: Callable[..., Stack], tmp_path: Path, kind: str
) -> None:
    """``challenge: basic`` through the shipped files: the 401 and its challenge reach the client
    as forwardauth wrote them, a browser's too (no login page: a prompt), elsewhere the usual."""
    policy = tmp_path / "challenge.yml"
    policy.write_text(
        "default: authenticated\nrules:\n"
        "  - path: /dav\n    policy: authenticated\n    token_types: [pat]\n    challenge: basic\n"
    )
    stack = proxy_stack(kind, {"FORWARDAUTH_POLICY_FILE": str(policy)})
    for headers in ({"Accept": "application/json"}, {"Accept": "text/html"}):
        response = http.get(stack.url + "/dav/file.txt", headers)
        assert response.status == 401, (kind, headers, response.status)
        assert response.headers.get_all("WWW-Authenticate") == ['Basic realm="forwardauth", charset="UTF-8"']
        assert response.headers.get("Location") is None
    assert http.get(stack.url + "/other", {"Accept": "application/json"}).headers["WWW-Authenticate"] == "Bearer"


@pytest.fixture
def envoy_echo(
    boundary_service: Service, real_backends: Callable[[str], backends.Backend], tmp_path: Path
) -> Iterator[str]:
    """The shipped Envoy file in front of the echo backend and the boundary tests' forwardauth."""
    require_envoy()
    address = f"127.0.0.1:{boundary_service.port}"
    proxy = Envoy(tmp_path / "envoy", free_port(), address, real_backends("echo").addr, None).start()
    yield proxy.url
    proxy.stop()


def test_curl_u_through_envoy(
    envoy_echo: str,
    make_user: Callable[..., users.User],
    database_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """The shipped Envoy file passes the token on to forwardauth and its answer, scopes included,
    to the app (in front of the boundary tests' forwardauth, whose stores the token is made in)."""
    echo = envoy_echo
    stores = {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": redis_prefix,  # boundary_service's
        **service_environment(tmp_path),
    }
    user = make_user(roles=("user",), email=None)
    [token] = tokens_of(config.load(stores), user, ("read",))
    spoofed = [("X-Auth-Scopes", "admin"), ("X.Auth.Scopes", "admin")]
    answer = send(
        echo, "/private/data", [("Accept", "application/json"), *spoofed, *basic(user.username, token).items()]
    )
    seen = backends.seen(answer.body)
    assert answer.status == 200 and seen is not None, (answer.status, answer.body[:200])
    assert {k.lower(): v for k, v in seen.headers.items() if k.lower().startswith(("x-auth-", "x.auth", "x_auth"))} == {
        "x-auth-user": user.username,
        "x-auth-roles": "user",
        "x-auth-subject": str(user.id),
        "x-auth-amr": "pat",
        "x-auth-scopes": "read",
    }
