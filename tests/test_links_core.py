"""core.links.link_base: links in e-mails come from the configuration, never from a Host header
that nobody vouched for."""

from __future__ import annotations

import pytest

from forwardauth.core.links import link_base

ISSUER = "https://auth.example.com"
ALLOWED = ("example.com",)


@pytest.mark.parametrize(
    ("login_url", "expected"),
    [
        ("https://auth.example.com/login", "https://auth.example.com"),
        ("https://app.example.com/forwardauth/login", "https://app.example.com/forwardauth"),
        ("https://app.example.com:8443/forwardauth/login/", "https://app.example.com:8443/forwardauth"),
        ("https://app.example.com/sso/signin?x=1", "https://app.example.com/sso"),
    ],
)
def test_an_absolute_login_url_gives_its_folder(login_url: str, expected: str) -> None:
    # whatever the request says about itself
    assert link_base(login_url, ISSUER, "https://attacker.test", "/evil", ALLOWED) == expected


def test_a_login_path_uses_the_request_origin_on_an_allowed_host() -> None:
    base = link_base("/forwardauth/login", ISSUER, "https://app.example.com", "/forwardauth", ALLOWED)
    assert base == "https://app.example.com/forwardauth"


def test_a_login_path_on_the_issuer_host() -> None:
    base = link_base("/login", "https://auth.other.test/", "https://auth.other.test", "", ALLOWED)
    assert base == "https://auth.other.test"


@pytest.mark.parametrize(
    "origin",
    [
        "https://attacker.test",
        "https://example.com.attacker.test",
        "https://notexample.com",
        "https://[bad",
        "",
        None,
    ],
)
def test_a_foreign_or_unknown_request_host_gives_the_issuer(origin: str | None) -> None:
    assert link_base("/forwardauth/login", ISSUER + "/", origin, "/forwardauth", ALLOWED) == ISSUER


def test_a_subdomain_of_an_allowed_domain_is_ours() -> None:
    base = link_base("/login", ISSUER, "http://Deep.App.Example.com:8080", "", ALLOWED)
    assert base == "http://Deep.App.Example.com:8080"
