"""deploy/envoy/envoy.yaml cannot run here (no Envoy binary), so it is checked by reading it:
what forwardauth relies on must be in it."""

from __future__ import annotations

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


def test_routes_in_order_metrics_hidden_then_forwardauth_then_the_app() -> None:
    metrics, pages, app = ROUTES
    assert metrics["match"] == {"path": "/forwardauth/metrics"} and metrics["direct_response"] == {"status": 404}
    assert pages["match"] == {"prefix": "/forwardauth/"}
    assert pages["route"] == {"cluster": "forwardauth", "prefix_rewrite": "/"}
    assert metrics["typed_per_filter_config"] == pages["typed_per_filter_config"] == EXT_AUTHZ_OFF
    assert app["match"] == {"prefix": "/"} and "typed_per_filter_config" not in app


def test_ext_authz_fails_closed_on_forwardauths_envoy_route() -> None:
    authz = FILTERS["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["http_service"]["path_prefix"] == ENVOY_PREFIX
    upstream = [p["exact"] for p in authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
                ["patterns"]]
    assert sorted(upstream) == sorted(h.lower() for h in IDENTITY_HEADERS)


def test_client_identity_headers_are_removed_first() -> None:
    names = list(FILTERS)
    assert names.index("envoy.filters.http.header_mutation") < names.index("envoy.filters.http.ext_authz")
    removed = {m["remove"] for m in FILTERS["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]}
    assert removed == {h.lower() for h in IDENTITY_HEADERS}
