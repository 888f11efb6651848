"""No secret ever reaches the log: a real ``forwardauth serve`` at DEBUG, every kind of request,
then the whole log searched for every password, token, client secret and private key line."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from . import http
from .support import PASSWORD, MakeClient, Service, backdate_sessions
from .test_oauth import basic

MakeUser = Callable[..., users.User]


def key_material(data_dir: Path) -> list[str]:
    """The base64 lines of every private key PEM (its header and footer are not secret)."""
    lines = [
        line
        for pem in (data_dir / "keys").glob("*.pem")
        for line in pem.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    assert lines, "no private key found"
    return lines


def test_secrets_never_reach_the_log(
    service: Callable[..., Service],
    make_user: MakeUser,
    make_client: MakeClient,
    env: dict[str, str],
    database: Database,
) -> None:
    svc = service(extra={"FORWARDAUTH_LOG_LEVEL": "DEBUG"})
    base = svc.base
    user = make_user()
    app, client_secret = make_client()
    assert client_secret is not None
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    wrong_secret = "wrong-secret-" + secrets.token_urlsafe(12)
    bogus_refresh = "bogus-refresh-" + secrets.token_urlsafe(12)
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJmb3JnZWQtc2VjcmV0In0.forged-" + secrets.token_urlsafe(8)
    secret_values = [PASSWORD, wrong_password, client_secret, wrong_secret, bogus_refresh, forged]

    def keep(response: http.Response, status: int) -> http.Response:
        assert response.status == status, (response.status, response.text[:200])
        body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
        secret_values.extend(str(body[k]) for k in ("access_token", "refresh_token") if k in body)
        return response

    # logins: JSON and form, right and wrong
    tokens = keep(http.login(base, user.username, PASSWORD), 200).json()
    keep(http.login(base, user.username, wrong_password), 401)
    form = keep(http.post_form(base + "/login", {"username": user.username, "password": PASSWORD}), 303)
    browser_refresh = http.set_cookies(form)["forwardauth_refresh"]["value"]
    secret_values += [http.set_cookies(form)["forwardauth"]["value"], browser_refresh]
    # a browser renewed with its refresh cookie, once its access cookie expired
    backdate_sessions(database, user)
    renewed = keep(
        http.get(
            base + "/login?rd=http%3A%2F%2Fapp.example.test%2F", http.cookie_header(forwardauth_refresh=browser_refresh)
        ),
        303,
    )
    secret_values += [c["value"] for c in http.set_cookies(renewed).values()]
    keep(http.post_form(base + "/login", {"username": user.username, "password": wrong_password}), 401)
    # refresh, right and wrong
    refreshed = keep(http.post_json(base + "/refresh", {"refresh_token": tokens["refresh_token"]}), 200).json()
    keep(http.post_json(base + "/refresh", {"refresh_token": bogus_refresh}), 401)
    # the token endpoint with the client secret (Basic and form), right and wrong
    grant = {"grant_type": "password", "username": user.username, "password": PASSWORD}
    oauth = keep(http.post_form(base + "/oauth/token", grant, basic(app.id, client_secret)), 200).json()
    keep(http.post_form(base + "/oauth/token", {**grant, "client_id": app.id, "client_secret": client_secret}), 200)
    keep(http.post_form(base + "/oauth/token", grant, basic(app.id, wrong_secret)), 401)
    keep(
        http.post_form(base + "/oauth/token", {**grant, "password": wrong_password}, basic(app.id, client_secret)), 400
    )
    keep(
        http.post_form(
            base + "/oauth/token",
            {"grant_type": "refresh_token", "refresh_token": oauth["refresh_token"]},
            basic(app.id, client_secret),
        ),
        200,
    )
    # /auth with good and bad tokens, and malformed requests carrying a live token
    live = refreshed["access_token"]
    keep(http.get(base + "/auth", http.bearer(live)), 200)
    for bad in (forged, live[:-6] + "AAAAAA", bogus_refresh):
        keep(http.get(base + "/auth", http.bearer(bad)), 401)
    keep(http.get(base + "/auth", {"Authorization": f"Bearer {live}" + "A" * 20_000}), 431)
    nul = http.exchange(base, f"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live}\x00\r\n\r\n".encode())
    assert nul.split(b" ", 2)[1] == b"400"
    garbled = base64.b64encode(f"{app.id}:{client_secret}".encode()).decode()
    keep(http.post_form(base + "/oauth/token", grant, {"Authorization": f"Basic {garbled}!"}), 401)
    # logout: by token and by refresh token
    keep(http.request("POST", base + "/logout", http.bearer(tokens["access_token"])), 200)
    keep(http.post_json(base + "/logout", {"refresh_token": oauth["refresh_token"]}), 200)
    keep(http.post_form(base + "/oauth/revoke", {"token": live}, basic(app.id, client_secret)), 200)
    assert svc.stop() == 0

    log = svc.log.read_text(errors="replace")
    assert "token refused" in log and "refused a request" in log  # DEBUG took, and refusals were logged
    secret_values.extend(key_material(Path(env["FORWARDAUTH_DATA_DIR"])))
    for value in secret_values:
        assert value not in log, f"a secret is in the log: {value[:12]}..."
    for token in (t for t in secret_values if t.count(".") == 2):  # nor the signature of a token alone
        assert token.rsplit(".", 1)[1] not in log
