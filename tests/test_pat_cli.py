"""``forwardauth token add / list / revoke / sync`` (issue 17) through the real command, checked
against what /auth reads (the Redis record and the revocation store), and the tokens written to
Redis again by ``token sync`` and by ``serve`` at start."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
import redis

from forwardauth import config
from forwardauth.accounts import pats
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.core.pats import looks_like
from forwardauth.keys import load_ring
from forwardauth.server import sync_tokens

from . import http
from .support import REDIS_URL, Service
from .test_cli import add_user, assert_one_line_error, run

CREATED = re.compile(r"^created token (\S+) \((.+)\) for (\S+): scopes (.+), expires (\S+)$")


@pytest.fixture
def name() -> str:
    return f"Tok-{secrets.token_hex(4)}"


@pytest.fixture
async def services(settings: config.Settings) -> AsyncIterator[AccountServices]:
    """The services of the commands' own stores and Redis keys (the test's prefix)."""
    built = build_account_services(settings)
    yield built
    await built.close()


async def live(services: AccountServices, token: str) -> bool:
    claims = await pats.resolve(services, token)
    return claims is not None and await services.revocations.is_live(claims.sid, claims.jti, claims.expires_at)


def add_token(env: dict[str, str], user: str, *options: str) -> tuple[str, str]:
    """(token id, token) of a token made by ``token add``."""
    made = run(env, "token", "add", user, *options)
    assert made.returncode == 0, made.stderr
    first, second = made.stdout.strip().splitlines()
    match = CREATED.match(first)
    assert match, first
    token = second.removeprefix("token (shown once): ")
    assert looks_like(token), second
    return match.group(1), token


def listed(env: dict[str, str], user: str) -> list[list[str]]:
    result = run(env, "token", "list", user)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.strip().splitlines()]


def forget_redis(env: dict[str, str]) -> None:
    """Redis lost its data: every key of the test's prefix goes."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        found = list(client.scan_iter(match=env["FORWARDAUTH_REDIS_PREFIX"] + "*"))
        if found:
            client.delete(*found)
    finally:
        client.close()


async def test_add_list_revoke(env: dict[str, str], name: str, services: AccountServices) -> None:
    add_user(env, name, "--role", "dev")
    made = run(
        env, "token", "add", name, "--name", "CI deploy", "--expires", "90d", "--scope", "read", "--scope", "git"
    )
    assert made.returncode == 0, made.stderr
    first = made.stdout.splitlines()[0]
    match = CREATED.match(first)
    assert match and match.group(2) == "CI deploy" and match.group(3) == name and match.group(4) == "read git"
    token_id, token = add_token(env, name, "--name", "backup", "--expires", "12h")
    assert await live(services, token)
    claims = await pats.resolve(services, token)
    assert claims is not None and claims.identity.username == name.lower() and claims.identity.roles == ("dev",)

    rows = listed(env, name)
    assert [r[1:4] for r in rows] == [["CI deploy", "live", "read git"], ["backup", "live", "-"]]
    assert rows[1][0] == token_id and rows[1][5] == "last used never"
    assert token not in str(rows)

    revoked = run(env, "token", "revoke", name, token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked token {token_id} of {name}"
    assert not await live(services, token)
    assert [r[2] for r in listed(env, name)] == ["live", "revoked"]


def test_refusals_are_one_line(env: dict[str, str], name: str) -> None:
    add_user(env, name)
    add_token(env, name, "--name", "ci", "--expires", "1d")
    for args, why in [
        (("--name", "x", "--expires", "soon"), "--expires: 'soon' is not a duration"),
        (("--name", "x", "--expires", "400d"), "at most 365d"),
        (("--name", "x", "--expires", "1d", "--scope", "a b"), "scope 'a b'"),
        (("--name", "a\nb", "--expires", "1d"), "printable"),
        (("--name", "ci", "--expires", "1d"), "already has a token named 'ci'"),
    ]:
        assert why in assert_one_line_error(run(env, "token", "add", name, *args), 1), args
    assert "no user 'nobody-here'" in assert_one_line_error(
        run(env, "token", "add", "nobody-here", "--name", "x", "--expires", "1d"), 1
    )
    assert "has no token nope" in assert_one_line_error(run(env, "token", "revoke", name, "nope"), 1)
    assert run(env, "token", "add", name, "--name", "x").returncode == 2  # --expires is required
    assert len(listed(env, name)) == 1


def test_a_shorter_maximum_is_enforced(env: dict[str, str], name: str) -> None:
    add_user(env, name)
    short = {**env, "FORWARDAUTH_PAT_MAX_TTL": "7d"}
    assert "at most 7d" in assert_one_line_error(run(short, "token", "add", name, "--name", "x", "--expires", "8d"), 1)
    add_token(short, name, "--name", "x", "--expires", "7d")


async def test_sync_after_redis_lost_its_data(env: dict[str, str], name: str, services: AccountServices) -> None:
    add_user(env, name)
    _, token = add_token(env, name, "--name", "ci", "--expires", "1d")
    revoked_id, revoked = add_token(env, name, "--name", "old", "--expires", "1d")
    assert run(env, "token", "revoke", name, revoked_id).returncode == 0
    forget_redis(env)
    assert not await live(services, token)

    synced = run(env, "token", "sync")

    assert synced.returncode == 0, synced.stderr
    assert re.fullmatch(r"wrote \d+ live token\(s\) to Redis", synced.stdout.strip()), synced.stdout
    assert await live(services, token) and not await live(services, revoked)


async def test_removing_a_role_or_deleting_the_user_revokes_the_tokens(
    env: dict[str, str], name: str, services: AccountServices
) -> None:
    add_user(env, name, "--role", "admin")
    _, token = add_token(env, name, "--name", "ci", "--expires", "1d")
    assert run(env, "user", "modify", name, "--add-role", "dev").returncode == 0
    assert await live(services, token)  # adding a role ends nothing
    assert run(env, "user", "modify", name, "--remove-role", "admin").returncode == 0
    assert not await live(services, token)  # its record carried the role

    _, second = add_token(env, name, "--name", "ci", "--expires", "1d")
    assert await live(services, second)
    assert run(env, "user", "delete", name).returncode == 0
    assert not await live(services, second)


async def test_serve_writes_the_tokens_to_redis_at_start(
    env: dict[str, str], name: str, services: AccountServices, service: Callable[..., Service]
) -> None:
    add_user(env, name)
    _, token = add_token(env, name, "--name", "ci", "--expires", "1d")
    forget_redis(env)
    assert not await live(services, token)
    service()  # ready once its workers listen: the sync ran before they started
    assert await live(services, token)


def test_a_token_from_the_command_passes_auth_until_revoked(
    env: dict[str, str], name: str, service: Callable[..., Service]
) -> None:
    """The command's token on a running service: accepted, with the user's headers, then refused
    as soon as ``token revoke`` returns."""
    add_user(env, name, "--role", "dev")
    token_id, token = add_token(env, name, "--name", "ci", "--expires", "1d", "--scope", "read")
    svc = service()
    accepted = http.get(svc.base + "/auth", http.bearer(token))
    assert accepted.status == 200
    assert accepted.headers["X-Auth-User"] == name.lower() and accepted.headers["X-Auth-Roles"] == "dev"
    assert run(env, "token", "revoke", name, token_id).returncode == 0
    assert http.get(svc.base + "/auth", http.bearer(token)).status == 401


def test_the_start_goes_on_when_the_sync_fails(settings: config.Settings, caplog: pytest.LogCaptureFixture) -> None:
    broken = replace(settings, database_url="postgresql://nobody@127.0.0.1:9/none")
    sync_tokens(broken, load_ring(settings))  # returns: logged, not raised
    assert "personal access tokens not written to Redis at start (OperationalError" in caplog.text
    assert "run `forwardauth token sync`" in caplog.text
