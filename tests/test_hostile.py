"""Hostile input through the real application: forged tokens, ambiguous credentials, hostile logins.

Every attack must be refused with a 4xx, never let through and never answered with a 500. The
static JWT attacks are in ``data/jwt_attacks.json`` (its ``about`` says how a case is built); the
ones that depend on sizes or on the live token's bytes are built here.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm, get_default_algorithms
from multidict import CIMultiDict

from forwardauth.constants import MAX_TOKEN_LENGTH
from forwardauth.http.services import Services
from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from . import http
from .support import PASSWORD, MakeClient
from .test_oauth import basic
from .test_redirects import refused_destinations
from .test_web import login, services_of

Client = Any
MakeUser = Callable[..., users.User]
CORPUS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "jwt_attacks.json").read_text())["cases"]
ALGORITHMS = get_default_algorithms()
REFUSED = (400, 401, 431)  # what an attack on /auth may get
COOKIE = "forwardauth"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def header_alg(header: Any, choices: tuple[str, ...]) -> str:
    """The header's ``alg`` when it is one of ``choices`` (the algorithms the key can sign with), else the first."""
    alg = header.get("alg") if isinstance(header, dict) else None
    return alg if isinstance(alg, str) and alg in choices else choices[0]


class Forger:
    """Builds the corpus's tokens from a live token, the service's key and an attacker's key."""

    def __init__(self, services: Services, live: str) -> None:
        self.key = services.tokens.ring.current
        self.live = live
        self.attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.attacker_kid = "attacker-" + secrets.token_hex(4)
        jwk = RSAAlgorithm.to_jwk(self.attacker.public_key(), as_dict=True)
        now = int(time.time())
        self.values: dict[str, Any] = {
            "{kid}": self.key.kid,
            "{attacker_kid}": self.attacker_kid,
            "{attacker_jwk}": {**jwk, "kid": self.attacker_kid},
            "{an_hour_ago}": now - 3600,
            "{in_an_hour}": now + 3600,
        }

    def fill(self, value: Any) -> Any:
        """``value`` with the placeholders replaced, at any depth."""
        if isinstance(value, str):
            return self.values.get(value, value)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def parts(self, case: dict[str, Any]) -> tuple[str, Any]:
        """The signing input and the header (a dict, or None when it is not JSON) of a built case."""
        header: Any = None
        if "header_text" in case:
            header_bytes = case["header_text"].replace("{kid}", self.key.kid).encode()
        elif "header_hex" in case:
            header_bytes = bytes.fromhex(case["header_hex"])
        else:
            header = self.fill(case.get("header", jwt.get_unverified_header(self.live)))
            header_bytes = json.dumps(header).encode()
        if case.get("payload") == "live-token":
            payload = self.live.encode()
        elif "payload_text" in case:
            payload = case["payload_text"].encode()
        else:
            claims = jwt.decode(self.live, options={"verify_signature": False})
            for name, value in self.fill(case.get("claims", {})).items():
                if value is None:
                    del claims[name]
                else:
                    claims[name] = value
            payload = json.dumps(claims).encode()
        return f"{b64(header_bytes)}.{b64(payload)}", header

    def signature(self, how: str, header: Any, message: bytes) -> str:
        """Signed with PyJWT's own algorithms (never our own crypto), keyed as the case says."""
        public = self.key.verifying
        if how == "none":
            return ""
        if how == "garbage":
            return b64(secrets.token_bytes(256))
        if how == "live-signature":
            return self.live.rsplit(".", 1)[1]
        if how == "ours":
            return b64(ALGORITHMS[header_alg(header, (self.key.alg, "RS512", "PS256"))].sign(message, self.key.signing))
        if how == "attacker":
            return b64(ALGORITHMS["RS256"].sign(message, self.attacker))
        secret = {
            "hmac-public-pem": public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "hmac-public-der": public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "hmac-empty": b"",
        }[how]
        return b64(ALGORITHMS[header_alg(header, ("HS256", "HS512"))].sign(message, secret))

    def token(self, case: dict[str, Any]) -> str:
        if "token" in case:
            return str(case["token"])
        suffix = str(case.get("suffix", ""))
        if case["sign"] == "live":
            return self.live + suffix
        signing_input, header = self.parts(case)
        return f"{signing_input}.{self.signature(case['sign'], header, signing_input.encode())}{suffix}"


async def live_forger(client: Client, make_user: MakeUser) -> Forger:
    return Forger(services_of(client), (await login(client, make_user()))["access_token"])


async def auth(client: Client, headers: Any) -> tuple[int, bool]:
    """/auth's status for these headers, and whether it let an identity through. A 401 must
    carry the challenge saying the token was refused."""
    response = await client.get("/auth", headers=headers)
    if response.status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    return response.status, "X-Auth-User" in response.headers


# --- the JWT attack corpus -------------------------------------------------------------------------


def test_the_corpus_is_well_formed() -> None:
    names = [case["name"] for case in CORPUS]
    assert len(names) == len(set(names)) and len(names) > 60
    for case in CORPUS:
        assert ("token" in case) != ("sign" in case), case["name"]


async def test_the_forger_can_make_a_passing_token(client: Client, make_user: MakeUser) -> None:
    """The control: re-signed by our key with nothing changed, the live token passes, so every
    refusal below is the attack's doing, not the builder's."""
    forger = await live_forger(client, make_user)
    resigned = forger.token({"name": "control", "sign": "ours"})
    assert resigned != forger.live
    assert await auth(client, {"Authorization": f"Bearer {resigned}"}) == (200, True)


async def test_attacker_signatures_are_valid_for_the_attackers_key(client: Client, make_user: MakeUser) -> None:
    """The attacker's tokens are properly signed: only the choice of key refuses them."""
    forger = await live_forger(client, make_user)
    public = forger.attacker.public_key()
    for case in (c for c in CORPUS if c.get("sign") == "attacker"):
        signing_input, _, signature = forger.token(case).rpartition(".")
        padded = signature + "=" * (-len(signature) % 4)
        assert ALGORITHMS["RS256"].verify(signing_input.encode(), public, base64.urlsafe_b64decode(padded))


async def test_every_attack_token_is_refused(client: Client, make_user: MakeUser) -> None:
    forger = await live_forger(client, make_user)
    long_kid = {"alg": "RS256", "typ": "at+jwt", "kid": "k" * 3000}
    built = {
        "a kid of 3000 characters": forger.token({"header": long_kid, "sign": "attacker"}),
        "a kid of 3000 characters, our key": forger.token({"header": long_kid, "sign": "ours"}),
        "just over the token limit": forger.live + "A" * (MAX_TOKEN_LENGTH + 1 - len(forger.live)),
        "the live token padded to 64 KiB": forger.live + "A" * (64 * 1024),
        "64 KiB of garbage": "A" * (64 * 1024),
        "64 KiB of dots": "." * (64 * 1024),
    }
    tokens = {case["name"]: forger.token(case) for case in CORPUS} | built
    failures = {}
    for name, token in tokens.items():
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"{COOKIE}={token}"}):
            status, identified = await auth(client, headers)
            if status not in REFUSED or identified:
                failures[f"{name} ({next(iter(headers))})"] = status
    assert not failures
    assert await auth(client, {"Authorization": f"Bearer {forger.live}"}) == (200, True)  # still live


async def test_ambiguous_credentials_are_refused(client: Client, make_user: MakeUser) -> None:
    """Two tokens where one is expected: never pick one (a sibling subdomain can add a cookie)."""
    live = (await login(client, make_user()))["access_token"]
    other = (await login(client, make_user()))["access_token"]
    cases = {
        "two Authorization headers": [("Authorization", f"Bearer {live}"), ("Authorization", f"Bearer {other}")],
        "the same token twice": [("Authorization", f"Bearer {live}"), ("Authorization", f"Bearer {live}")],
        "a garbage Authorization first": [("Authorization", "Bearer x"), ("Authorization", f"Bearer {live}")],
        "two Bearer tokens merged by a proxy": [("Authorization", f"Bearer {live}, Bearer {other}")],
        "a bad Bearer token over a good cookie": [("Authorization", "Bearer x"), ("Cookie", f"{COOKIE}={live}")],
        "the cookie twice": [("Cookie", f"{COOKIE}={live}; {COOKIE}={other}")],
        "the cookie twice, garbage first": [("Cookie", f"{COOKIE}=x; {COOKIE}={live}")],
        "the same cookie twice": [("Cookie", f"{COOKIE}={live}; {COOKIE}={live}")],
        "the cookie in two Cookie headers": [("Cookie", f"{COOKIE}={live}"), ("Cookie", f"{COOKIE}={other}")],
    }
    for name, headers in cases.items():
        status, identified = await auth(client, CIMultiDict(headers))
        assert status == 401 and not identified, name
    # a cookie with a similar name is not ours, and does not make ours ambiguous
    similar = {"Cookie": f"x{COOKIE}=x; {COOKIE}={live}; {COOKIE}x=y"}
    assert await auth(client, similar) == (200, True)


# --- login and token endpoints ---------------------------------------------------------------------

JSON_HEADERS = {"Content-Type": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
MALFORMED_BODIES: list[tuple[str, bytes, dict[str, str], int]] = [
    ("JSON cut short", b'{"username": "a", ', JSON_HEADERS, 400),
    ("JSON with trailing garbage", b'{"username": "a", "password": "b"}}', JSON_HEADERS, 400),
    ("form fields in a JSON body", b"username=a&password=b", JSON_HEADERS, 400),
    ("JSON null", b"null", JSON_HEADERS, 400),
    ("a JSON string", b'"username"', JSON_HEADERS, 400),
    ("a JSON list", b'["username", "password"]', JSON_HEADERS, 400),
    ("a JSON lone surrogate", b'{"username": "\\ud800", "password": "b"}', JSON_HEADERS, 400),
    ("JSON in UTF-16", '{"username": "a", "password": "b"}'.encode("utf-16"), JSON_HEADERS, 400),
    ("a 70 KiB JSON body", b'{"username": "' + b"a" * (70 * 1024) + b'"}', JSON_HEADERS, 413),
    ("a 70 KiB form", b"username=a&password=" + b"b" * (70 * 1024), FORM_HEADERS, 413),
    ("multipart without a boundary", b"x", {"Content-Type": "multipart/form-data"}, 400),
    (
        "multipart with a nameless part",
        b"--b\r\n\r\nx\r\n--b--\r\n",
        {"Content-Type": "multipart/form-data; boundary=b"},
        400,
    ),
    ("plain text", b"username=a&password=b", {"Content-Type": "text/plain"}, 415),
    ("XML", b"<login><username>a</username></login>", {"Content-Type": "application/xml"}, 415),
    ("no content type", b"username=a&password=b", {}, 415),
]


@pytest.mark.parametrize("path", ["/login", "/refresh", "/logout"])
@pytest.mark.parametrize("name,body,headers,status", MALFORMED_BODIES, ids=[b[0] for b in MALFORMED_BODIES])
async def test_malformed_bodies_are_clear_client_errors(
    client: Client, path: str, name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = await client.post(path, data=body, headers=headers)
    assert response.status == status
    assert (await response.json())["error"] == "invalid_request"


BAD_VALUES: list[Any] = [{"$ne": None}, ["b"], 5, True, None, "a\x00b", "a" * 5000]
FIELDS = {
    "/login": {"username": "a", "password": "b"},
    "/refresh": {"refresh_token": "r"},
    "/logout": {"refresh_token": "r"},
}


@pytest.mark.parametrize("path,field", [(p, f) for p, fields in FIELDS.items() for f in fields])
async def test_bad_field_values_are_400(client: Client, path: str, field: str) -> None:
    for value in BAD_VALUES:
        response = await client.post(path, json={**FIELDS[path], field: value})
        assert response.status == 400, value
        assert "access_token" not in await response.text()
        if isinstance(value, str):  # the same as a form
            form = await client.post(path, data={**FIELDS[path], field: value})
            assert form.status == 400, value


@pytest.mark.parametrize("body", [{"username": "a"}, {"password": "b"}, {"username": "", "password": "b"}, {}])
async def test_login_needs_both_fields(client: Client, body: dict[str, str]) -> None:
    assert (await client.post("/login", json=body)).status == 400
    assert (await client.post("/login", data=body or {"rd": ""})).status == 400


@pytest.mark.parametrize(
    "username",
    ["' OR '1'='1", "' OR 1=1 --", "admin'--", '"; DROP TABLE users; --', "%", "_", "*", "\\", "a' UNION SELECT 1--"],
)
async def test_sql_metacharacters_log_nobody_in(
    client: Client, make_user: MakeUser, database: Database, username: str
) -> None:
    victim = make_user()
    for form in (
        {"username": username, "password": PASSWORD},
        {"username": victim.username + username, "password": PASSWORD},
        {"username": victim.username, "password": username},
    ):
        response = await client.post("/login", json=form)
        assert response.status == 401, form
    assert database.call(users.find, victim.username) == victim  # the table is intact


async def test_hostile_token_requests(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    assert secret is not None
    user = make_user()
    good = {"grant_type": "password", "username": user.username, "password": PASSWORD}
    nul_basic = {"Authorization": "Basic " + base64.b64encode(f"{app.id}%00:{secret}".encode()).decode()}
    latin1_basic = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode()}
    long_basic = basic("a" * 10_000, secret)
    sql_basic = basic("' OR '1'='1", "' OR '1'='1")
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("JSON body", {"json": good, "headers": basic(app.id, secret)}, 400),
        (
            "text body",
            {"data": "grant_type=password", "headers": {**basic(app.id, secret), "Content-Type": "text/plain"}},
            400,
        ),
        ("NUL in a field", {"data": {**good, "username": "a\x00"}, "headers": basic(app.id, secret)}, 400),
        ("a 5000-character field", {"data": {**good, "scope": "s" * 5000}, "headers": basic(app.id, secret)}, 400),
        ("a 70 KiB body", {"data": {**good, "x": "y" * (70 * 1024)}, "headers": basic(app.id, secret)}, 413),
        ("NUL in the Basic client id", {"data": good, "headers": nul_basic}, 401),
        ("Basic credentials not UTF-8", {"data": good, "headers": latin1_basic}, 401),
        ("a 10000-character client id", {"data": good, "headers": long_basic}, 401),
        ("SQL in the client id", {"data": good, "headers": sql_basic}, 401),
        ("SQL in the client id, form", {"data": {**good, "client_id": "x' OR 1=1 --"}}, 401),
        ("SQL in the username", {"data": {**good, "username": "' OR '1'='1"}, "headers": basic(app.id, secret)}, 400),
        ("a grant type of NUL", {"data": {**good, "grant_type": "\x00"}, "headers": basic(app.id, secret)}, 400),
    ]
    for name, kwargs, status in cases:
        response = await client.post("/oauth/token", **kwargs)
        body = await response.json()
        assert response.status == status and "error" in body and "access_token" not in body, (name, body)
    # the same client and user still work: nothing above broke or locked anything
    assert (await client.post("/oauth/token", data=good, headers=basic(app.id, secret))).status == 200


# --- rd: never off the allowed domains, through the real login ---------------------------------------


async def test_login_never_redirects_off_site(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    off_site = [rd for rd in refused_destinations("example.test") if rd]
    for rd in off_site:
        response = await client.post(
            "/login", data={"username": user.username, "password": PASSWORD, "rd": rd}, allow_redirects=False
        )
        # signed in and sent to the default page; or, for a NUL, refused as input
        assert (response.status, response.headers.get("Location", "/")) in ((303, "/"), (400, "/")), rd
        page = await (await client.get("/login", params={"rd": rd})).text()
        assert http.forms(page)[0].inputs["rd"] == "", rd
        failed = await client.post("/login", data={"username": user.username, "password": "wrong", "rd": rd})
        if failed.status != 400:  # the form again, without the rd
            assert failed.status == 401 and http.forms(await failed.text())[0].inputs["rd"] == "", rd
