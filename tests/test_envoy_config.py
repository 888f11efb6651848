"""deploy/envoy/envoy.yaml is not run by the tests (no Envoy binary is installed), so it is
checked by reading it: what forwardauth relies on must be in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from forwardauth.constants import ENVOY_PREFIX, IDENTITY_HEADERS

CONFIG = yaml.safe_load((Path(__file__).resolve().parent.parent / "deploy" / "envoy" / "envoy.yaml").read_text())
MANAGER = CONFIG["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
ROUTES: list[dict[str, Any]] = MANAGER["route_config"]["virtual_hosts"][0]["routes"]
FILTERS = {f["name"]: f["typed_config"] for f in MANAGER["http_filters"]}
EXT_AUTHZ_OFF = {"envoy.filters.http.ext_authz": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": True}}


def test_routes_in_order_not_public_hidden_then_forwardauth_then_the_app() -> None:
    hidden, pages, app = ROUTES
    assert hidden["direct_response"] == {"status": 404}
    # Envoy's safe_regex matches the whole path (RE2; the same syntax as Python's here).
    regex = re.compile(hidden["match"]["safe_regex"]["regex"])
    for path in ("/forwardauth/metrics", "/forwardauth/readyz", "/forwardauth/auth", "/forwardauth/auth/",
                 "/forwardauth/auth/envoy/admin/x"):
        assert regex.fullmatch(path), path
    for path in ("/forwardauth/login", "/forwardauth/healthz", "/forwardauth/authorize", "/forwardauth/oauth/token",
                 "/forwardauth/.well-known/jwks.json", "/auth", "/app/forwardauth/auth"):
        assert not regex.fullmatch(path), path
    assert pages["match"] == {"prefix": "/forwardauth/"}
    assert pages["route"] == {"cluster": "forwardauth", "prefix_rewrite": "/"}
    assert hidden["typed_per_filter_config"] == pages["typed_per_filter_config"] == EXT_AUTHZ_OFF
    assert app["match"] == {"prefix": "/"} and "typed_per_filter_config" not in app


def test_one_reading_of_the_path_and_no_underscored_header_names() -> None:
    """Routes, ext_authz and the app see the same normalised path (``..``, ``//`` and encoded
    letters resolved by Envoy first, an encoded ``/`` or ``\\`` refused); ``X_Auth_User`` is refused."""
    assert MANAGER["normalize_path"] is True and MANAGER["merge_slashes"] is True
    assert MANAGER["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert MANAGER["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"


def test_ext_authz_fails_closed_on_forwardauths_envoy_route() -> None:
    authz = FILTERS["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["http_service"]["path_prefix"] == ENVOY_PREFIX
    upstream = [p["exact"] for p in authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
                ["patterns"]]
    assert sorted(upstream) == sorted(h.lower() for h in IDENTITY_HEADERS)


def test_client_identity_headers_are_removed_first_in_every_spelling() -> None:
    names = list(FILTERS)
    assert names.index("envoy.filters.http.header_mutation") < names.index("envoy.filters.http.ext_authz")
    mutations = FILTERS["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    patterns = [re.compile(m["remove_on_match"]["key_matcher"]["safe_regex"]["regex"])
                for m in mutations if "remove_on_match" in m]
    exact = {m["remove"] for m in mutations if "remove" in m}

    def removed(name: str) -> bool:  # Envoy keeps header names in lower case
        return name.lower() in exact or any(p.fullmatch(name.lower()) for p in patterns)

    for header in IDENTITY_HEADERS:
        for spelling in (header, header.replace("-", "."), header.replace("-", "_"), "X.Auth-" + header[7:],
                         header.upper()):
            assert removed(spelling), spelling
    assert removed("X-Auth-Groups")  # names forwardauth does not set, too
    for kept in ("Authorization", "X-Authorization", "Cookie", "X-Forwarded-For"):
        assert not removed(kept), kept
