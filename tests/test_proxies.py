"""End to end through real nginx, Traefik and Caddy, configured from the files in deploy/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from forwardauth import users

from .conftest import PASSWORD, Stack

PROXIES = ["nginx", "traefik", "caddy"]
BROWSER = {"Accept": "text/html,application/xhtml+xml"}
API = {"Accept": "application/json"}
MakeUser = Callable[..., users.User]


@pytest.fixture(params=PROXIES)
def stack(request: pytest.FixtureRequest, proxy_stack: Callable[[str], Stack]) -> Stack:
    return proxy_stack(request.param)


def form_login(stack: Stack, user: users.User, rd: str = "") -> httpx.Response:
    return httpx.post(stack.url + "/forwardauth/login", data={"username": user.username, "password": PASSWORD,
                                                               "rd": rd})


def bearer_token(stack: Stack, user: users.User) -> str:
    response = httpx.post(stack.url + "/forwardauth/login", json={"username": user.username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def upstream_saw(response: httpx.Response) -> dict[str, object]:
    """What the echo upstream received; fails if the request did not get there."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return dict(response.json())


def test_api_client_without_token_gets_401(stack: Stack) -> None:
    response = httpx.get(stack.url + "/private", headers=API)
    assert response.status_code == 401
    assert response.headers.get_list("WWW-Authenticate") == ["Bearer"]


def test_browser_goes_to_login_and_back(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    original = stack.url + "/private/page?x=1&y=two"
    first = httpx.get(original, headers=BROWSER)
    assert first.status_code == 302
    assert first.headers["Location"] == f"{stack.url}/forwardauth/login?rd={quote(original, safe='')}"

    page = httpx.get(stack.url + "/forwardauth/login", params={"rd": original}, headers=BROWSER)
    assert page.status_code == 200 and 'action="/forwardauth/login"' in page.text
    assert f'name="rd" value="{original.replace("&", "&amp;")}"' in page.text

    login = form_login(stack, user, rd=original)
    assert login.status_code == 303 and login.headers["Location"] == original
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith("forwardauth=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    token = cookie.split(";", 1)[0].removeprefix("forwardauth=")  # Domain=example.test: not stored for 127.0.0.1

    seen = upstream_saw(httpx.get(original, headers=API, cookies={"forwardauth": token}))
    headers = {k.lower(): v for k, v in dict(seen["headers"]).items()}  # type: ignore[call-overload]
    assert headers["x-auth-user"] == user.username
    assert headers["x-auth-roles"] == "user"
    assert headers["x-auth-subject"] == user.id
    assert headers["x-auth-email"] == user.email
    assert seen["path"] == "/private/page?x=1&y=two"


def test_bearer_token_and_instant_revocation(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    token = bearer_token(stack, user)
    bearer = {**API, "Authorization": f"Bearer {token}"}
    seen = upstream_saw(httpx.get(stack.url + "/api/thing", headers=bearer))
    assert {k.lower(): v for k, v in dict(seen["headers"]).items()}["x-auth-user"] == user.username  # type: ignore[call-overload]
    logout = httpx.post(stack.url + "/forwardauth/logout", headers=bearer)
    assert logout.json() == {"logged_out": True}
    assert httpx.get(stack.url + "/api/thing", headers=bearer).status_code == 401


def test_spoofed_identity_headers_never_reach_the_app(stack: Stack, make_user: MakeUser) -> None:
    user = make_user(email=None)
    spoof = {"X-Auth-User": "root", "X-Auth-Roles": "admin", "X-Auth-Email": "spoof@evil.test",
             "X-Auth-Subject": "x"}
    seen = upstream_saw(httpx.get(stack.url + "/p", headers={**API, **spoof,
                                                              "Authorization": f"Bearer {bearer_token(stack, user)}"}))
    headers = {k.lower(): v for k, v in dict(seen["headers"]).items()}  # type: ignore[call-overload]
    assert headers["x-auth-user"] == user.username and headers["x-auth-roles"] == "user"
    assert headers["x-auth-subject"] == user.id
    assert "x-auth-email" not in headers
    assert httpx.get(stack.url + "/p", headers={**API, **spoof}).status_code == 401


def test_bodies_and_methods_pass_through(stack: Stack, make_user: MakeUser) -> None:
    bearer = {**API, "Authorization": f"Bearer {bearer_token(stack, make_user())}"}
    body = b'{"hello": "world"}'
    seen = upstream_saw(httpx.post(stack.url + "/submit", headers={**bearer, "Content-Type": "application/json"},
                                   content=body))
    assert seen["method"] == "POST" and seen["body"] == body.decode()
    assert upstream_saw(httpx.delete(stack.url + "/items/7", headers=bearer))["method"] == "DELETE"
    if stack.kind == "nginx":  # the subrequest itself carries no body
        snippet = (Path(__file__).resolve().parent.parent / "deploy/nginx/forwardauth-locations.conf").read_text()
        assert "proxy_pass_request_body off;" in snippet and 'proxy_set_header Content-Length "";' in snippet


def test_open_redirects_land_on_the_default_page(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    for rd in ("https://evil.test/", "//evil.test/", "/\\evil.test", "javascript:alert(1)",
               "https://127.0.0.1@evil.test/", "http://127.0.0.1.evil.test/", "https://evil.test%2F@127.0.0.1/"):
        response = form_login(stack, user, rd=rd)
        assert response.status_code == 303 and response.headers["Location"] == "/", rd


def test_role_restricted_path_through_nginx(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("default: authenticated\nrules:\n  - path: /admin\n    roles: [admin]\n"
                      "  - path: /public\n    policy: bypass\n")
    stack = proxy_stack("nginx", {"FORWARDAUTH_POLICY_FILE": str(policy)})
    admin, ops = make_user(roles=("admin",)), make_user(roles=("ops",))
    as_ops = {**API, "Authorization": f"Bearer {bearer_token(stack, ops)}"}
    as_admin = {**API, "Authorization": f"Bearer {bearer_token(stack, admin)}"}
    assert httpx.get(stack.url + "/admin/panel", headers=as_ops).status_code == 403
    assert httpx.get(stack.url + "/public/../admin/panel", headers=as_ops).status_code == 403
    assert httpx.get(stack.url + "/%61dmin/panel", headers=as_ops).status_code == 403
    seen = upstream_saw(httpx.get(stack.url + "/admin/panel", headers=as_admin))
    assert {k.lower(): v for k, v in dict(seen["headers"]).items()}["x-auth-user"] == admin.username  # type: ignore[call-overload]
    assert upstream_saw(httpx.get(stack.url + "/elsewhere", headers=as_ops))["path"] == "/elsewhere"
    public = upstream_saw(httpx.get(stack.url + "/public/page", headers=API))
    assert not any(k.lower().startswith("x-auth-") for k in dict(public["headers"]))  # type: ignore[call-overload]
