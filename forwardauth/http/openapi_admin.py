"""OpenAPI paths of the admin pages (issue 16)."""

from __future__ import annotations

from forwardauth.http.openapi_parts import Schema


def admin_paths() -> dict[str, Schema]:
    return {}
