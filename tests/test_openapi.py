"""The OpenAPI document matches the routes, and schemathesis finds no 500 and no mismatch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from forwardauth import config
from forwardauth.http.app import create_app
from forwardauth.http.openapi import AUTH_METHODS, document

from .support import FAST_ARGON2, REDIS_URL, Service, free_port

BASE_SETTINGS = config.load({"FORWARDAUTH_ISSUER": "http://127.0.0.1"})
SCHEMA = schemathesis.openapi.from_dict(document(BASE_SETTINGS))


def app_routes(settings: config.Settings) -> set[tuple[str, str]]:
    routes = set()
    for route in create_app(settings).router.routes():
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.resource.canonical)  # type: ignore[union-attr]
        path = path.replace("envoy{original}", "envoy/{original}")
        methods = AUTH_METHODS if route.method == "*" else (route.method.lower(),)
        routes.update((m, path) for m in methods)
    return routes


def test_document_matches_the_routes(pure_settings: config.Settings) -> None:
    documented = {(method, path) for path, item in document(pure_settings)["paths"].items() for method in item}
    routes = {(m, p) for m, p in app_routes(pure_settings) if m != "head" or p.startswith("/auth")}
    assert documented == routes


@pytest.fixture(scope="module")
def live(database_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One live server for all generated cases."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    env = {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": redis_prefix,
        "FORWARDAUTH_DATA_DIR": str(tmp / "data"),
        "FORWARDAUTH_COOKIE_SECURE": "false",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
        **FAST_ARGON2,
    }
    svc = Service(env, free_port(), workers=1, cwd=tmp)
    svc.wait_ready()
    yield svc
    svc.stop()


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), derandomize=True
)
def test_api_conforms(case: schemathesis.Case, live: Service) -> None:
    """No 500, and every status, content type and body as documented.

    Not checked: that every schema-valid request succeeds. RFC 6749 answers a well-formed
    request with wrong credentials with 400 invalid_grant, as it should.
    """
    case.call_and_validate(base_url=live.base, excluded_checks=[positive_data_acceptance])
