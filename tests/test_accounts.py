"""Account changes end sessions at once (issue 12 items 6 and 7): a password change, disabling a
user or a client. Through the real CLI against a real server, and, for the races between such a
change and a login or refresh in flight, straight on PostgreSQL with two real transactions."""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg2
import pytest

from forwardauth import config
from forwardauth.accounts import changes
from forwardauth.accounts.signin import login_in_db
from forwardauth.core.passwords import Passwords
from forwardauth.stores import clients, sessions, users
from forwardauth.stores.postgres import Connection, Database

from . import http
from .support import PASSWORD, MakeClient, Service, free_port, wait_until
from .test_cli import assert_one_line_error, run
from .test_oauth import password_grant_login, token
from .test_web import auth_status, services_of

Client = Any
TTL = 3600


def strong_password() -> str:
    return secrets.token_urlsafe(18)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def oauth_token(svc: Service, client_id: str, secret: str, **form: str) -> http.Response:
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    return http.request(
        "POST",
        svc.base + "/oauth/token",
        {**basic(client_id, secret), "Content-Type": "application/x-www-form-urlencoded"},
        body,
    )


def audit_detail(database: Database, user_id: str, event: str) -> list[dict[str, Any]]:
    def query(conn: Connection) -> list[dict[str, Any]]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT detail FROM audit_events WHERE user_id = %s AND event = %s ORDER BY id", (user_id, event)
            )
            return [row[0] for row in cur.fetchall()]

    return database.call(query)


# --- item 6: a password change ends every session ------------------------------------------------------


def test_passwd_ends_every_session_at_once(
    env: dict[str, str], service: Callable[..., Service], make_user: Callable[..., users.User], database: Database
) -> None:
    user = make_user()
    svc = service()
    logins = [http.login(svc.base, user.username, PASSWORD).json() for _ in range(2)]
    assert all(http.get(svc.base + "/auth", http.bearer(s["access_token"])).status == 200 for s in logins)

    new_password = strong_password()
    changed = run(env, "user", "passwd", user.username, "--password-stdin", stdin=new_password + "\n")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == f"password changed for {user.username}; revoked 2 session(s)"

    for s in logins:  # the old access tokens stop at once; the refresh tokens do not rotate on
        assert http.get(svc.base + "/auth", http.bearer(s["access_token"])).status == 401
        assert http.post_json(svc.base + "/refresh", {"refresh_token": s["refresh_token"]}).status == 401
    assert http.login(svc.base, user.username, PASSWORD).status == 401
    assert http.login(svc.base, user.username, new_password).status == 200
    [detail] = audit_detail(database, user.id, "user_change")
    assert detail == {"action": "passwd", "sessions_revoked": 2, "kept_session": False}


async def test_a_password_change_may_keep_the_session_it_is_made_from(
    client: Client, make_user: Callable[..., users.User]
) -> None:
    """``except_sid``, for a future self-service page: that session stays, every other one ends."""
    user = make_user()
    kept, other = [await password_grant_login(client, user) for _ in range(2)]
    sid = jwt.decode(kept["access_token"], options={"verify_signature": False})["sid"]
    _, count = await changes.change_password(services_of(client), user.username, strong_password(), except_sid=sid)
    assert count == 1
    assert await auth_status(client, kept["access_token"]) == 200
    assert await auth_status(client, other["access_token"]) == 401
    renewed = await client.post("/refresh", json={"refresh_token": kept["refresh_token"]})
    assert renewed.status == 200
    assert (await client.post("/refresh", json={"refresh_token": other["refresh_token"]})).status == 401


# --- item 7: disabling a client revokes its tokens; enabling brings none back ---------------------------


def client_secret(output: str) -> str:
    return output.split("client secret (shown once): ", 1)[1].split()[0]


def test_client_disable_revokes_every_token_and_enable_restores_none(
    env: dict[str, str], service: Callable[..., Service], make_user: Callable[..., users.User]
) -> None:
    client_id = f"app-{secrets.token_hex(4)}"
    added = run(
        env,
        "client",
        "add",
        client_id,
        "--grant",
        "password",
        "--grant",
        "refresh_token",
        "--grant",
        "client_credentials",
    )
    assert added.returncode == 0, added.stderr
    secret = client_secret(added.stdout)
    user = make_user()
    svc = service()
    for_user = oauth_token(
        svc, client_id, secret, grant_type="password", username=user.username, password=PASSWORD.replace(" ", "+")
    ).json()
    own = oauth_token(svc, client_id, secret, grant_type="client_credentials").json()
    tokens = (for_user["access_token"], own["access_token"])
    assert all(http.get(svc.base + "/auth", http.bearer(t)).status == 200 for t in tokens)

    disabled = run(env, "client", "disable", client_id)
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == f"disabled {client_id}; revoked 2 access token(s)"
    assert all(http.get(svc.base + "/auth", http.bearer(t)).status == 401 for t in tokens)

    enabled = run(env, "client", "enable", client_id)
    assert enabled.returncode == 0 and enabled.stdout.strip() == f"enabled {client_id}"
    assert all(http.get(svc.base + "/auth", http.bearer(t)).status == 401 for t in tokens)
    refreshed = oauth_token(svc, client_id, secret, grant_type="refresh_token", refresh_token=for_user["refresh_token"])
    assert refreshed.status == 400 and refreshed.json()["error"] == "invalid_grant"  # revoked is revoked
    fresh = oauth_token(svc, client_id, secret, grant_type="client_credentials").json()
    assert http.get(svc.base + "/auth", http.bearer(fresh["access_token"])).status == 200


def test_user_disable_then_enable_brings_no_session_back(
    env: dict[str, str], service: Callable[..., Service], make_user: Callable[..., users.User]
) -> None:
    user = make_user()
    svc = service()
    session = http.login(svc.base, user.username, PASSWORD).json()
    assert run(env, "user", "disable", user.username).returncode == 0
    assert http.get(svc.base + "/auth", http.bearer(session["access_token"])).status == 401
    assert run(env, "user", "enable", user.username).returncode == 0
    assert http.post_json(svc.base + "/refresh", {"refresh_token": session["refresh_token"]}).status == 401
    assert http.get(svc.base + "/auth", http.bearer(session["access_token"])).status == 401


@pytest.mark.parametrize("command", ["user disable", "user passwd", "user revoke", "client disable"])
def test_with_redis_down_nothing_is_changed(
    env: dict[str, str],
    make_user: Callable[..., users.User],
    make_client: MakeClient,
    database: Database,
    command: str,
) -> None:
    """A change committed without its revocations would leave access tokens passing: refused first."""
    user = make_user()
    app, _ = make_client()
    session = database.call(sessions.start, user, TTL, app.id)
    target = app.id if command.startswith("client") else user.username
    dead = {**env, "FORWARDAUTH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    options = ["--password-stdin"] if command == "user passwd" else []
    result = run(dead, *command.split(), target, *options, stdin=strong_password() + "\n")
    assert "Redis is unreachable" in assert_one_line_error(result, 1)
    assert "nothing was changed" in result.stderr
    assert database.call(users.get, user.id) == user  # same password hash, still enabled
    assert not database.call(clients.find, app.id).disabled
    assert still_valid(database, session.refresh_token, app.id)


# --- races: a login or refresh in flight while the change commits --------------------------------------


@pytest.fixture
def passwords(settings: config.Settings) -> Passwords:
    return Passwords.from_settings(settings)


@pytest.fixture
def connect(database_url: str) -> Iterator[Callable[[], Any]]:
    opened: list[Any] = []

    def make() -> Any:
        conn = psycopg2.connect(database_url)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


class InThread:
    """``fn(conn)`` in a transaction of its own, in a thread: it may block on a lock."""

    def __init__(self, conn: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, self.result, self.error = conn, None, None
        self.pid = conn.get_backend_pid()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[Any], Any]) -> None:
        try:
            self.result = fn(self.conn)
            self.conn.commit()
        except Exception as exc:  # reported by join()
            self.conn.rollback()
            self.error = exc

    def wait_blocked(self, watcher: Any) -> None:
        def blocked() -> bool:
            with watcher.cursor() as cur:
                cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (self.pid,))
                row = cur.fetchone()
            watcher.commit()
            return bool(row and row[0] == "Lock")

        wait_until(blocked, timeout=10, what="the change to wait for the transaction in flight")

    def join(self) -> Any:
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def still_valid(database: Database, token_value: str, client_id: str | None = None) -> bool:
    try:
        database.call(sessions.rotate, token_value, TTL, None, client_id)
    except sessions.RefreshError:
        return False
    return True


def password_change(passwords: Passwords, user: users.User) -> Callable[[Any], Any]:
    return lambda conn: changes.change_password_in_db(
        conn, passwords, user.username, strong_password(), 900, None, None
    )


def test_a_refresh_in_flight_during_a_password_change_is_revoked_too(
    database: Database, make_user: Callable[..., users.User], passwords: Passwords, connect: Callable[[], Any]
) -> None:
    user = make_user()
    first = database.call(sessions.start, user, TTL)
    in_flight = connect()
    rotated = sessions.rotate(in_flight, first.refresh_token, TTL, None)  # not committed yet
    change = InThread(connect(), password_change(passwords, user))
    change.wait_blocked(connect())
    in_flight.commit()
    change.join()
    assert not still_valid(database, rotated.refresh_token)


def test_a_login_in_flight_during_a_password_change_is_revoked_too(
    database: Database, make_user: Callable[..., users.User], passwords: Passwords, connect: Callable[[], Any]
) -> None:
    user = make_user()
    in_flight = connect()
    session = login_in_db(in_flight, passwords, user.username, PASSWORD, None, TTL)  # not committed yet
    assert session is not None
    change = InThread(connect(), password_change(passwords, user))
    change.wait_blocked(connect())
    in_flight.commit()
    change.join()
    assert not still_valid(database, session.refresh_token)


def test_a_login_with_the_old_password_is_refused_once_the_change_commits(
    database: Database, make_user: Callable[..., users.User], passwords: Passwords, connect: Callable[[], Any]
) -> None:
    user = make_user()
    changing = connect()
    password_change(passwords, user)(changing)  # not committed yet
    login = InThread(connect(), lambda conn: login_in_db(conn, passwords, user.username, PASSWORD, None, TTL))
    login.wait_blocked(connect())
    changing.commit()
    assert login.join() is None


def test_a_refresh_in_flight_while_its_client_is_disabled_is_revoked_too(
    database: Database, make_user: Callable[..., users.User], make_client: MakeClient, connect: Callable[[], Any]
) -> None:
    app, _ = make_client()
    first = database.call(sessions.start, make_user(), TTL, app.id)
    in_flight = connect()
    rotated = sessions.rotate(in_flight, first.refresh_token, TTL, None, app.id)  # not committed yet
    disable = InThread(connect(), lambda conn: clients.set_disabled(conn, app.id, True, 900))
    disable.wait_blocked(connect())
    in_flight.commit()
    disable.join()
    database.call(clients.set_disabled, app.id, False)
    assert not still_valid(database, rotated.refresh_token, app.id)


async def test_a_client_disabled_during_its_token_request_gets_no_token(
    client: Client, make_client: MakeClient, database: Database, make_user: Callable[..., users.User]
) -> None:
    """The password grant's session is opened with the client's row locked and checked again."""
    app, secret = make_client()
    database.call(clients.set_disabled, app.id, True)
    with pytest.raises(sessions.ClientDisabled):
        database.call(sessions.start, make_user(), TTL, app.id)
    assert secret is not None
    status, body = await token(
        client,
        {"grant_type": "password", "username": make_user().username, "password": PASSWORD},
        basic(app.id, secret),
    )
    assert status == 401 and body["error"] == "invalid_client"


# --- issue 21 item 8: introspection, resource servers ----------------------------------------------------


def test_client_add_resource_server_may_introspect_other_clients_access_tokens(
    env: dict[str, str], service: Callable[..., Service], make_user: Callable[..., users.User]
) -> None:
    tag = secrets.token_hex(4)
    ids = {"app": f"app-{tag}", "api": f"api-{tag}", "other": f"other-{tag}"}
    secrets_of = {}
    for kind, client_id in ids.items():
        options = ["--grant", "password"] if kind == "app" else ["--resource-server"] if kind == "api" else []
        added = run(env, "client", "add", client_id, *options)
        assert added.returncode == 0, added.stderr
        secrets_of[kind] = client_secret(added.stdout)
    listed = run(env, "client", "list").stdout.splitlines()
    assert any(line.startswith(ids["api"] + "\t") and line.endswith("\tresource-server") for line in listed), listed
    assert not any(line.startswith(ids["other"] + "\t") and "resource-server" in line for line in listed), listed

    svc = service()
    user = make_user()
    access = oauth_token(
        svc,
        ids["app"],
        secrets_of["app"],
        grant_type="password",
        username=user.username,
        password=PASSWORD.replace(" ", "+"),
    ).json()["access_token"]

    def introspect(kind: str) -> Any:
        return http.request(
            "POST",
            svc.base + "/oauth/introspect",
            {**basic(ids[kind], secrets_of[kind]), "Content-Type": "application/x-www-form-urlencoded"},
            f"token={access}".encode(),
        ).json()

    assert introspect("api")["active"] is True and introspect("api")["username"] == user.username
    assert introspect("other") == {"active": False}
    assert introspect("app")["active"] is True


def test_policy_explain_tells_a_client_from_a_user_of_the_same_name(env: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "policy.yml"
    rules.write_text(
        "default: deny\nrules:\n  - path: /robots\n    clients: [bob]\n  - path: /people\n    users: [bob]\n"
    )

    def decision(path: str, *who: str) -> str:
        result = run(env, "policy", "explain", "--file", str(rules), "--host", "x.test", "--path", path, *who)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    assert decision("/robots", "--client", "bob") == "decision: allow (200)"
    assert decision("/robots", "--user", "bob") == "decision: deny (403)"
    assert decision("/people", "--user", "bob") == "decision: allow (200)"
    assert decision("/people", "--client", "bob") == "decision: deny (403)"
