"""Finding the access token in a request's headers (pure): one place, one token, or a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardauth.core.credentials import AmbiguousToken, UnreadableToken, access_token, cookie_value

NAME = "forwardauth"
PROPERTY = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    "authorization,cookies,token",
    [
        (["Bearer abc"], [], "abc"),
        (["bearer  abc "], [], "abc"),
        (["BEARER abc"], [f"{NAME}=cookie"], "abc"),  # the header first
        (["Basic dXNlcjpwYXNz"], [f"{NAME}=cookie"], "cookie"),  # not ours: the cookie
        (["Bearer "], [], None),
        ([], [f"a=1; {NAME}=cookie; b=2"], "cookie"),
        ([], [f"x{NAME}=1; {NAME}x=2; {NAME}=cookie"], "cookie"),  # similar names are other cookies
        ([], ["a=1", f"{NAME}=cookie"], "cookie"),  # HTTP/2 may split the list over several headers
        ([], [f"{NAME}="], None),
        ([], ["nothing=here"], None),
        ([], [], None),
    ],
)
def test_where_the_token_is_found(authorization: list[str], cookies: list[str], token: str | None) -> None:
    assert access_token(authorization, cookies, NAME) == token


@pytest.mark.parametrize(
    "authorization,cookies",
    [
        (["Bearer a", "Bearer b"], []),
        (["Bearer a", "Bearer a"], []),
        (["Basic x", "Bearer a"], []),
        ([], [f"{NAME}=a; {NAME}=b"]),
        ([], [f"{NAME}=a", f"{NAME}=a"]),
        ([], [f"{NAME}=; {NAME}=b"]),
    ],
)
def test_two_candidates_are_refused(authorization: list[str], cookies: list[str]) -> None:
    with pytest.raises(AmbiguousToken):
        access_token(authorization, cookies, NAME)


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
COOKIE_NAMES = st.sampled_from([NAME, "x" + NAME, NAME + "x", "a", "session", f" {NAME}"]) | st.from_regex(
    r"[A-Za-z0-9_-]{1,12}", fullmatch=True
)
VALUES = st.from_regex(r"[A-Za-z0-9._~+/=-]{0,30}", fullmatch=True)


@PROPERTY
@given(st.lists(TEXT, max_size=3), st.lists(TEXT, max_size=3))
def test_any_headers_give_a_token_none_or_a_refusal(authorization: list[str], cookies: list[str]) -> None:
    try:
        token = access_token(authorization, cookies, NAME)
    except UnreadableToken:
        assert not "".join(authorization + cookies).isascii()
        return
    except AmbiguousToken:
        assert len(authorization) > 1 or sum(c.count(f"{NAME}=") for c in cookies) > 1
        return
    if token is None:
        return
    assert token and token == token.strip()
    scheme, _, value = authorization[0].partition(" ") if authorization else ("", "", "")
    if scheme.lower() == "bearer" and value.strip():
        assert token == value.strip()
    else:  # from the cookie: one value of the list
        assert ";" not in token and any(token in c for c in cookies)


@PROPERTY
@given(st.lists(st.tuples(COOKIE_NAMES, VALUES), max_size=6), st.integers(1, 3))
def test_the_cookie_is_read_as_written(pairs: list[tuple[str, str]], headers: int) -> None:
    """A cookie list split over any number of headers reads back as it was written: our cookie's
    value when it is there once, a refusal when it is there twice."""
    texts = ["; ".join(f"{n}={v}" for n, v in pairs[i::headers]) for i in range(headers)]
    ours = [v for n, v in pairs if n.strip() == NAME]
    if len(ours) > 1:
        with pytest.raises(AmbiguousToken):
            cookie_value(texts, NAME)
    else:
        assert cookie_value(texts, NAME) == (ours[0] if ours and ours[0] else None)


@pytest.mark.parametrize(
    "authorization,cookies",
    [
        (["Bearer abc\udcff"], []),  # a byte that was not UTF-8, as aiohttp hands it on
        (["Bearer \u00e9t\u00e9"], []),
        ([], [f"a=\udcff; {NAME}=x\udce9y"]),
        ([], [f"{NAME}=\u2603"]),
    ],
)
def test_a_token_that_is_not_ascii_is_refused(authorization: list[str], cookies: list[str]) -> None:
    """No token of ours has such a character: refused here, not left to fail when encoded later."""
    with pytest.raises(UnreadableToken):
        access_token(authorization, cookies, NAME)


def test_other_cookies_may_hold_anything() -> None:
    assert access_token([], [f"a=\udcff\u00e9; {NAME}=abc"], NAME) == "abc"
