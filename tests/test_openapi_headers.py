"""The OpenAPI document names the identity headers in effect (FORWARDAUTH_HEADERS_*), not the
defaults: an operator who renamed them reads in /openapi.json what /auth really answers with."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from forwardauth import config
from forwardauth.constants import IDENTITY_HEADERS
from forwardauth.http.openapi import AUTH_METHODS, document

from .support import MakeApp

AUTH_PATHS = ("/auth", "/auth/envoy/{original}")
AUTHELIA = {"FORWARDAUTH_HEADERS_PRESET": "authelia"}
CLAIMS = {"FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session,groups=X-Claim-Groups"}


def documented(**env: str) -> tuple[config.Settings, dict[str, Any]]:
    """Settings from ``env`` and their document, checked against the OpenAPI 3.1 schema."""
    settings = config.load({"FORWARDAUTH_ISSUER": "http://127.0.0.1", **env})
    doc = document(settings)
    schemathesis.openapi.from_dict(doc).validate()  # raises on a document that is not OpenAPI 3.1
    return settings, doc


def allowed_headers(doc: dict[str, Any]) -> list[str]:
    """The 200 headers of /auth, the same for every method of both /auth paths."""
    answers = [
        list(doc["paths"][path][method]["responses"]["200"]["headers"])
        for path in AUTH_PATHS
        for method in AUTH_METHODS
    ]
    assert all(answer == answers[0] for answer in answers)
    return answers[0]


def test_default_names_are_the_x_auth_headers() -> None:
    _, doc = documented()
    assert allowed_headers(doc) == list(IDENTITY_HEADERS)


def test_authelia_preset_is_documented() -> None:
    _, doc = documented(**AUTHELIA)
    headers = allowed_headers(doc)
    assert {"Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name"} <= set(headers)
    assert not {"X-Auth-User", "X-Auth-Roles", "X-Auth-Email"} & set(headers)
    assert "username" in doc["paths"]["/auth"]["get"]["responses"]["200"]["headers"]["Remote-Name"]["description"]


def test_a_renamed_header_is_documented() -> None:
    _, doc = documented(FORWARDAUTH_HEADERS_USER="X-Who")
    headers = allowed_headers(doc)
    assert "X-Who" in headers
    assert "X-Auth-User" not in headers
    assert "Username" in doc["paths"]["/auth"]["get"]["responses"]["200"]["headers"]["X-Who"]["description"]


def test_claim_headers_are_documented() -> None:
    _, doc = documented(**CLAIMS)
    headers = doc["paths"]["/auth/envoy/{original}"]["post"]["responses"]["200"]["headers"]
    assert "sid claim" in headers["X-Session"]["description"]
    assert "groups claim" in headers["X-Claim-Groups"]["description"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        AUTHELIA,
        CLAIMS,
        {**AUTHELIA, **CLAIMS, "FORWARDAUTH_HEADERS_NAME": "none", "FORWARDAUTH_HEADERS_SCOPES": "X-Token-Scopes"},
        {
            "FORWARDAUTH_HEADERS_SUBJECT": "X-Sub",
            "FORWARDAUTH_HEADERS_CLIENT": "X-Service",
            "FORWARDAUTH_HEADERS_CLIENT_ROLES": "X-Service-Roles",
            "FORWARDAUTH_HEADERS_AMR": "X-Signed-In-By",
            "FORWARDAUTH_HEADERS_NAME": "X-Display-Name",
        },
    ],
)
def test_document_lists_exactly_the_headers_auth_may_send(env: dict[str, str]) -> None:
    """Every name /auth may answer with (HeaderNames.all), and no other: a field added to
    HeaderNames without a description here fails this."""
    settings, doc = documented(**env)
    headers = allowed_headers(doc)
    assert len(headers) == len(set(headers))
    assert set(headers) == set(settings.header_names.all)


def test_the_rest_of_the_document_does_not_depend_on_the_names() -> None:
    _, default = documented()
    _, renamed = documented(**AUTHELIA, **CLAIMS)
    for doc in (default, renamed):
        for path in AUTH_PATHS:
            for method in AUTH_METHODS:
                del doc["paths"][path][method]["responses"]["200"]["headers"]
    assert renamed == default


async def test_served_document_follows_the_settings(make_app: MakeApp) -> None:
    client = await make_app(**AUTHELIA, FORWARDAUTH_HEADERS_USER="X-Who")
    response = await client.get("/openapi.json")
    assert response.status == 200
    headers = (await response.json())["paths"]["/auth"]["get"]["responses"]["200"]["headers"]
    assert "X-Who" in headers and "Remote-Groups" in headers
    assert "X-Auth-User" not in headers and "Remote-User" not in headers
