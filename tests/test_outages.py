"""Store outages for real: Redis and PostgreSQL of the test's own, killed and restarted under a
running ``forwardauth serve``. Nothing may pass that should not, nothing answers 500, and the
service heals by itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from forwardauth import config
from forwardauth.core.passwords import Passwords
from forwardauth.stores import clients, users
from forwardauth.stores.postgres import Database

from .http import bearer, get, login, post_form, post_json
from .stores import OwnPostgres, OwnRedis
from .support import PASSWORD, Service, Stack, wait_until

OUTAGE_REQUESTS = 200


def auth_status(svc: Service, token: str) -> int:
    return get(svc.base + "/auth", bearer(token)).status


def log_lines(svc: Service, text: str) -> int:
    return sum(text in line for line in svc.log.read_text().splitlines())


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.start()
    yield server
    server.remove()


def test_redis_down_fails_closed_and_a_restarted_empty_redis_costs_no_login(
    service: Callable[..., Service], own_redis: OwnRedis, make_user: Callable[..., users.User]
) -> None:
    svc = service(extra={"FORWARDAUTH_REDIS_URL": own_redis.url})
    user = make_user()
    kept = login(svc.base, user.username, PASSWORD).json()
    ended = login(svc.base, user.username, PASSWORD).json()
    assert post_json(svc.base + "/logout", {}, bearer(ended["access_token"])).status == 200
    assert auth_status(svc, kept["access_token"]) == 200
    assert auth_status(svc, ended["access_token"]) == 401

    own_redis.kill()
    # Fail closed: once the worker sees Redis gone, every check is a 503, the revoked token's too.
    wait_until(lambda: auth_status(svc, kept["access_token"]) == 503, 10, "/auth to fail closed")
    answers = {
        auth_status(svc, token)
        for token in (kept["access_token"], ended["access_token"])
        for _ in range(OUTAGE_REQUESTS // 2)
    }
    assert answers == {503}
    assert get(svc.base + "/readyz").status == 503
    refused = login(svc.base, user.username, PASSWORD)  # throttling state lives in Redis
    assert refused.status == 503 and refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["Retry-After"]
    # A refresh during the outage is refused before it spends the refresh token (used below).
    assert post_json(svc.base + "/refresh", {"refresh_token": kept["refresh_token"]}).status == 503
    # Reported once per interval, not once per request.
    assert log_lines(svc, "redis unavailable") in (1, 2)

    own_redis.start()  # it kept nothing: every access token is gone with it
    wait_until(lambda: auth_status(svc, kept["access_token"]) == 401, 10, "/auth to answer again")
    assert get(svc.base + "/readyz").status == 200
    # The refresh token lives in PostgreSQL: the client recovers without its user logging in.
    renewed = post_json(svc.base + "/refresh", {"refresh_token": kept["refresh_token"]})
    assert renewed.status == 200
    assert auth_status(svc, renewed.json()["access_token"]) == 200
    # ...but a session that was logged out stays ended.
    assert post_json(svc.base + "/refresh", {"refresh_token": ended["refresh_token"]}).status == 401
    assert auth_status(svc, ended["access_token"]) == 401
    assert "Traceback" not in svc.log.read_text()


PUBLIC_CLIENT = "outage-app"


def add_user(server: OwnPostgres, settings: config.Settings) -> users.User:
    """A user, and a public OAuth client (``PUBLIC_CLIENT``) for the token endpoint."""
    db = Database(server.url, 1)
    try:
        db.call(clients.create, PUBLIC_CLIENT, ["password", "refresh_token"], [], [], True)
        return db.call(users.create, Passwords.from_settings(settings), "outage-user", PASSWORD, ("user",), None)
    finally:
        db.close()


def test_postgres_down_refuses_logins_clearly_while_auth_goes_on(
    service: Callable[..., Service], own_postgres: OwnPostgres, settings: config.Settings
) -> None:
    svc = service(extra={"FORWARDAUTH_DATABASE_URL": own_postgres.url})  # migrated by the server
    user = add_user(own_postgres, settings)
    tokens = login(svc.base, user.username, PASSWORD).json()

    own_postgres.stop()
    api = login(svc.base, user.username, PASSWORD)
    assert api.status == 503 and api.json()["error"] == "temporarily_unavailable"
    page = post_form(svc.base + "/login", {"username": user.username, "password": PASSWORD}, {"Accept": "text/html"})
    assert page.status == 503 and page.headers["Content-Type"].startswith("text/html")
    assert "unavailable" in page.text and page.headers["Retry-After"]
    grant = post_form(
        svc.base + "/oauth/token",
        {"grant_type": "password", "client_id": PUBLIC_CLIENT, "username": user.username, "password": PASSWORD},
    )
    assert grant.status == 503 and grant.json()["error"] == "temporarily_unavailable"
    assert get(svc.base + "/readyz").status == 503
    # The hot path never touches PostgreSQL.
    assert {auth_status(svc, tokens["access_token"]) for _ in range(20)} == {200}
    assert "Traceback" not in svc.log.read_text()

    own_postgres.start()
    wait_until(lambda: get(svc.base + "/readyz").status == 200, 20, "readiness after the restart")
    assert login(svc.base, user.username, PASSWORD).status == 200


def test_a_postgres_restart_between_requests_costs_no_request(
    service: Callable[..., Service], own_postgres: OwnPostgres, settings: config.Settings
) -> None:
    """Pooled connections die with the server; they are found dead and replaced, not used."""
    svc = service(extra={"FORWARDAUTH_DATABASE_URL": own_postgres.url, "FORWARDAUTH_DB_POOL_SIZE": "2"})
    user = add_user(own_postgres, settings)
    assert login(svc.base, user.username, PASSWORD).status == 200  # a pooled connection now exists
    own_postgres.stop()
    own_postgres.start()
    assert [login(svc.base, user.username, PASSWORD).status for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize("kind", ["nginx", "traefik", "caddy"])
def test_through_a_proxy_a_redis_outage_is_a_503_never_a_pass(
    kind: str, proxy_stack: Callable[..., Stack], own_redis: OwnRedis, make_user: Callable[..., users.User]
) -> None:
    """nginx's auth_request turns our 503 into a 500: the shipped snippet makes it a 503 again."""
    stack = proxy_stack(kind, {"FORWARDAUTH_REDIS_URL": own_redis.url})
    user = make_user()
    token = login(stack.url + "/forwardauth", user.username, PASSWORD).json()["access_token"]
    assert get(stack.url + "/app", bearer(token)).status == 200
    own_redis.kill()
    refused = wait_until(
        lambda: (r := get(stack.url + "/app", bearer(token))).status != 200 and r, 10, "the proxy to refuse"
    )
    assert refused.status == 503
    assert refused.headers["Retry-After"]
