"""OpenAPI paths of the portal pages (issue 16)."""

from __future__ import annotations

from forwardauth.http.openapi_parts import Schema


def portal_paths() -> dict[str, Schema]:
    return {}
