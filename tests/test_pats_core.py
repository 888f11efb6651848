"""Personal access tokens, the pure part (issue 17): their shape, digest, record, the Basic header,
and the checks of names, scopes and lifetimes."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from forwardauth.core import pats
from forwardauth.core.pats import PatClaims
from forwardauth.core.tokens import Identity


def claims(expires_at: int = 2_000_000_000, ident: str = "abc") -> PatClaims:
    identity = Identity("0b6f-uuid", "alice", ("dev", "ops"), "alice@example.test")
    return PatClaims(pats.sid_of(ident), ident, identity, ("read", "git:push"), expires_at)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


# --- the token's text -----------------------------------------------------------------------------


def test_a_new_token_has_the_prefix_and_256_random_bits() -> None:
    made = {pats.new_token() for _ in range(100)}
    assert len(made) == 100
    for token in made:
        assert token.startswith("fa_pat_") and len(token) == len("fa_pat_") + 43
        assert pats.looks_like(token)
        assert len(base64.urlsafe_b64decode(token[7:] + "=")) == 32


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fa_pat_",
        "fa_pat_" + "a" * 42,
        "fa_pat_" + "a" * 44,
        "fa_pat_" + "a" * 42 + "=",
        "fa_pat_" + "a" * 42 + "\n",
        "FA_PAT_" + "a" * 43,
        "xx_pat_" + "a" * 43,
        "eyJhbGciOiJSUzI1NiJ9.e30.sig",  # a JWT
        "fa_pat_" + "é" * 43,
    ],
)
def test_anything_else_does_not_look_like_a_token(text: str) -> None:
    assert not pats.looks_like(text)


def test_the_digest_is_the_sha256_hex() -> None:
    token = pats.new_token()
    assert pats.digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert pats.digest(token) != pats.digest(pats.new_token())


def test_a_tokens_session_id_is_told_apart_from_a_sign_ins() -> None:
    assert pats.sid_of("x1") == "pat-x1" and pats.is_pat_sid("pat-x1")
    assert not pats.is_pat_sid("Zm9vYmFy-session-id")


# --- the record in Redis --------------------------------------------------------------------------


def test_a_record_round_trips() -> None:
    original = claims()
    assert pats.from_record(pats.to_record(original)) == original
    assert original.token_id == "abc"


def test_no_email_round_trips_as_none() -> None:
    original = PatClaims("pat-t", "t", Identity("id", "bob"), (), 5)
    assert pats.from_record(pats.to_record(original)) == original


@pytest.mark.parametrize(
    "change",
    [
        {"sid": "someone-else"},  # a record must be its token's own session
        {"jti": ""},
        {"sub": 3},
        {"username": None},
        {"roles": "admin"},
        {"roles": [1]},
        {"scopes": None},
        {"email": 5},
        {"exp": "soon"},
        {"exp": True},
    ],
)
def test_a_record_of_the_wrong_shape_is_none(change: dict[str, object]) -> None:
    fields = json.loads(pats.to_record(claims()))
    assert pats.from_record(json.dumps({**fields, **change}).encode()) is None


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"\xff\xfe", b"null", b'{"sid": "pat-a"}'])
def test_garbage_is_no_record(data: bytes) -> None:
    assert pats.from_record(data) is None


# --- HTTP Basic -----------------------------------------------------------------------------------


def test_basic_gives_the_user_and_password() -> None:
    token = pats.new_token()
    assert pats.parse_basic(basic(f"alice:{token}")) == ("alice", token)
    assert pats.parse_basic("basic " + base64.b64encode(b"bob:a:b").decode()) == ("bob", "a:b")  # first colon
    assert pats.parse_basic(basic("Ælice:pässword")) == ("Ælice", "pässword")
    assert pats.parse_basic(basic(":x")) == ("", "x")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(b"a:b").decode(),
        "Basic " + base64.b64encode(b"no colon").decode(),
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"a:b").decode()[:-1],  # bad padding
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"a:b\nX-Injected: 1").decode(),  # a control character
        "Basic " + "QUFB" * 2000,  # too long
    ],
)
def test_a_malformed_basic_header_is_none(value: str) -> None:
    assert pats.parse_basic(value) is None


# --- names, scopes, lifetimes ---------------------------------------------------------------------


def test_a_name_is_stripped_and_printable() -> None:
    assert pats.check_name("  CI deploy (prod) ") == "CI deploy (prod)"
    assert pats.check_name("x" * 100) == "x" * 100
    for bad in ("", "   ", "x" * 101, "a\nb", "a\tb", "a\x00b", "a\u200bb"):
        with pytest.raises(ValueError, match="name"):
            pats.check_name(bad)


def test_scopes_are_checked_and_deduplicated() -> None:
    assert pats.check_scopes(["read", "git:push", "read", "dav/files"]) == ("read", "git:push", "dav/files")
    assert pats.check_scopes([]) == ()
    for bad in (["two words"], [""], ["a" * 65], ['quo"te'], ["é"]):
        with pytest.raises(ValueError, match="scope"):
            pats.check_scopes(bad)
    with pytest.raises(ValueError, match="at most"):
        pats.check_scopes([f"s{i}" for i in range(pats.MAX_SCOPES + 1)])


def test_a_lifetime_is_at_least_a_minute_and_at_most_the_maximum() -> None:
    year = 365 * 86400
    assert pats.check_ttl(90 * 86400, year) == 90 * 86400
    assert pats.check_ttl(year, year) == year
    with pytest.raises(ValueError, match="at most 365d"):
        pats.check_ttl(year + 1, year)
    with pytest.raises(ValueError, match="at least a minute"):
        pats.check_ttl(59, year)
    with pytest.raises(ValueError, match="at most 2h"):
        pats.check_ttl(3 * 3600, 2 * 3600)
