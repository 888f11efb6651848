"""``forwardauth client add / list / modify`` with the OpenID Connect fields, and ``user consents``,
run as real processes against the test database (and Redis, for revoking a consent)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from forwardauth.stores import clients, consents, sessions, users
from forwardauth.stores.postgres import Database

from .test_cli import assert_one_line_error, run

RP = "https://grafana.example.test/login/generic_oauth"


def listed(env: dict[str, str], client_id: str) -> list[str]:
    """The client's line of ``client list`` and the indented lines of its URIs."""
    result = run(env, "client", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(client_id + "\t"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("\t")), len(lines))
    return lines[start:end]


def test_client_add_registers_an_oidc_client(env: dict[str, str], database: Database) -> None:
    client_id = f"grafana-{secrets.token_hex(4)}"
    added = run(
        env,
        "client",
        "add",
        client_id,
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--redirect-uri",
        RP,
        "--redirect-uri",
        "http://localhost:3000/cb",
        "--post-logout-redirect-uri",
        "https://grafana.example.test/",
        "--backchannel-logout-uri",
        "https://grafana.example.test/bc",
        "--trusted",
        "--scope",
        "openid",
        "--scope",
        "profile",
    )
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert lines[0] == f"created client {client_id} (grants: authorization_code, refresh_token)"
    assert lines[1:3] == [f"redirect URI: {RP}", "redirect URI: http://localhost:3000/cb"]
    assert lines[3].startswith("client secret (shown once): ")
    assert listed(env, client_id) == [
        f"{client_id}\tconfidential\tenabled\tauthorization_code,refresh_token\topenid profile\ttrusted",
        f"\tredirect-uri\t{RP}",
        "\tredirect-uri\thttp://localhost:3000/cb",
        "\tpost-logout-redirect-uri\thttps://grafana.example.test/",
        "\tbackchannel-logout-uri\thttps://grafana.example.test/bc",
    ]
    stored = database.call(clients.find, client_id)
    assert stored is not None and stored.trusted and stored.redirect_uris == (RP, "http://localhost:3000/cb")


def test_public_client_with_a_redirect_uri_defaults_to_the_code_grant(env: dict[str, str]) -> None:
    client_id = f"spa-{secrets.token_hex(4)}"
    added = run(env, "client", "add", client_id, "--public", "--redirect-uri", RP, "--scope", "openid")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0] == f"created client {client_id} (grants: authorization_code)"
    assert "secret" not in added.stdout
    assert listed(env, client_id)[0] == f"{client_id}\tpublic\tenabled\tauthorization_code\topenid\t-"


def test_client_add_refuses_a_bad_redirect_uri_in_one_line(env: dict[str, str]) -> None:
    client_id = f"bad-{secrets.token_hex(4)}"
    for uri, why in (("http://grafana.example.test/cb", "must use https"), (RP + "#x", "fragment")):
        line = assert_one_line_error(run(env, "client", "add", client_id, "--redirect-uri", uri), 1)
        assert repr(uri) in line and why in line
    no_uri = run(env, "client", "add", client_id, "--grant", "authorization_code")
    assert "needs a redirect URI" in assert_one_line_error(no_uri, 1)
    assert client_id not in run(env, "client", "list").stdout


def test_client_modify_replaces_what_is_given(env: dict[str, str], database: Database) -> None:
    client_id = f"gitea-{secrets.token_hex(4)}"
    assert run(env, "client", "add", client_id, "--redirect-uri", RP, "--trusted").returncode == 0
    new = "https://gitea.example.test/user/oauth2/forwardauth/callback"
    changed = run(
        env, "client", "modify", client_id, "--redirect-uri", new, "--untrusted", "--backchannel-logout-uri", new
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == f"modified client {client_id}"
    stored = database.call(clients.find, client_id)
    assert stored is not None
    assert (stored.redirect_uris, stored.trusted, stored.backchannel_logout_uri) == ((new,), False, new)
    assert run(env, "client", "modify", client_id, "--no-backchannel-logout-uri").returncode == 0
    assert database.call(clients.find, client_id).backchannel_logout_uri is None  # type: ignore[union-attr]
    assert "nothing to change" in assert_one_line_error(run(env, "client", "modify", client_id), 1)
    bad = run(env, "client", "modify", client_id, "--redirect-uri", "/relative")
    assert "must be absolute" in assert_one_line_error(bad, 1)
    assert "no client" in assert_one_line_error(run(env, "client", "modify", "nobody-x", "--trusted"), 1)


def test_user_consents_lists_and_revokes(
    env: dict[str, str], database: Database, make_user: Callable[..., users.User]
) -> None:
    user = make_user()
    app, _ = database.call(
        clients.create, f"rp-{secrets.token_hex(4)}", [], ["openid", "email"], [], False, redirect_uris=[RP]
    )
    none = run(env, "user", "consents", user.username)
    assert none.returncode == 0 and none.stdout.strip() == f"{user.username} has given no consent"
    database.call(consents.grant, user.id, app.id, ["openid", "email"])
    browser = database.call(sessions.start, user, 3600)
    child = database.call(sessions.start, user, 3600, app.id, "openid email", parent_sid=browser.sid)

    shown = run(env, "user", "consents", user.username)
    assert shown.returncode == 0, shown.stderr
    fields = shown.stdout.strip().split("\t")
    assert fields[:2] == [app.id, "openid email"] and fields[2].startswith("granted 20")

    revoked = run(env, "user", "consents", user.username, "--revoke", app.id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked the consent of {user.username} to {app.id}; revoked 1 session(s) of it"
    assert database.call(consents.granted, user.id, app.id) == ()
    assert database.call(sessions.refresh_info, child.refresh_token) is None  # the client's session ended
    assert database.call(sessions.refresh_info, browser.refresh_token) is not None  # the browser's did not
    assert "no user" in assert_one_line_error(run(env, "user", "consents", "nobody-here-x"), 1)
