"""Operations endpoints: health, readiness, metrics, the JWKS and the OpenAPI document."""

from __future__ import annotations

from aiohttp import hdrs, web

from forwardauth.http.common import json_response
from forwardauth.http.metrics import CONTENT_TYPE
from forwardauth.http.openapi import document
from forwardauth.http.services import SERVICES
from forwardauth.stores import migrations
from forwardauth.stores.postgres import POSTGRES_DOWN
from forwardauth.stores.redis import REDIS_DOWN


async def jwks(request: web.Request) -> web.Response:
    ring = request.app[SERVICES].tokens.ring
    return json_response(ring.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document(request.app[SERVICES].settings))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def prometheus(request: web.Request) -> web.Response:
    """Every worker's counters in the Prometheus text format (other workers' up to ~1 s old)."""
    body = request.app[SERVICES].metrics.exposition()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE, hdrs.CACHE_CONTROL: "no-store"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        await services.revocations.ping()
        checks["redis"] = "ok"
    except REDIS_DOWN:
        checks["redis"] = "unreachable"
    try:
        version = await services.db.run(migrations.schema_version)
        checks["postgres"] = "ok" if version >= migrations.latest_version() else "migrations pending"
    except POSTGRES_DOWN:
        checks["postgres"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
