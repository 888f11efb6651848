"""The application for one worker: its routes, and the background work of its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from forwardauth.accounts import links
from forwardauth.config import Settings
from forwardauth.constants import ENVOY_PREFIX
from forwardauth.http import (
    admin,
    authorize,
    backchannel,
    browser_pages,
    enrol,
    hotpath,
    limits,
    oauth,
    oidc,
    oidc_logout,
    passkeys,
    portal,
)
from forwardauth.http.authz import auth
from forwardauth.http.common import MAX_BODY
from forwardauth.http.errors import errors
from forwardauth.http.login import login, login_form, logout, refresh
from forwardauth.http.metrics import observe
from forwardauth.http.ops import healthz, jwks, openapi_json, prometheus, readyz
from forwardauth.http.reloading import file_state, reload_keys, reload_policy, watch
from forwardauth.http.secondfactor import SECOND_FACTOR_PATH, second_factor, second_factor_form
from forwardauth.http.services import SERVICES, build_services
from forwardauth.keys import KeyRing, key_files, record_signing
from forwardauth.logs import TRUSTED_PROXIES
from forwardauth.stores import mail


def create_app(settings: Settings, ring: KeyRing | None = None, metrics_dir: Path | None = None) -> web.Application:
    """The application for one worker; stores are connected lazily and closed on cleanup.

    ``metrics_dir``: the folder where this server's workers share their counters (see metrics).
    """
    # What the file watchers compare with, read before the keys and the rules are loaded: a change
    # made while the worker starts is then a change (see reloading.watch).
    key_state = key_files(settings.key_directory) if settings.signing_alg != "HS256" else None
    policy_state = file_state(settings.policy_file) if settings.policy_file is not None else None
    services = build_services(settings, ring, metrics_dir)
    app = web.Application(
        middlewares=[observe(services.metrics), errors], client_max_size=MAX_BODY, handler_args=limits.PARSER
    )
    app[SERVICES] = services
    app[TRUSTED_PROXIES] = settings.trusted_proxies  # whose X-Request-Id the logs take
    app[limits.HEADER_TIMEOUT] = settings.header_timeout

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        watchers = []
        if settings.signing_alg != "HS256":
            directory = settings.key_directory
            watchers.append(
                asyncio.create_task(watch(lambda: key_files(directory), lambda: reload_keys(services), key_state))
            )
            watchers.append(asyncio.create_task(record_signing(directory, lambda: services.tokens.ring.current)))
        if settings.policy_file is not None:
            policy_file = settings.policy_file
            watchers.append(
                asyncio.create_task(
                    watch(lambda: file_state(policy_file), lambda: reload_policy(services), policy_state)
                )
            )
        if services.revocations.local is not None:
            watchers.append(asyncio.create_task(services.revocations.follow(stop)))
        if metrics_dir is not None:
            watchers.append(asyncio.create_task(services.metrics.publish()))
        watchers.append(asyncio.create_task(backchannel.run(services, stop)))  # OIDC back-channel logouts
        last_used = asyncio.create_task(services.last_used.run(stop))  # personal access tokens' last use
        yield
        stop.set()
        await asyncio.wait([last_used], timeout=5)  # its last flush, before the stores close
        with contextlib.suppress(TimeoutError):  # e-mails being sent (password-reset links...)
            await asyncio.wait_for(links.settle(), mail.TIMEOUT + 5)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.wait(watchers, timeout=5)
        services.metrics.final_snapshot()
        await services.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/auth", auth)
    # Any path under the prefix, control characters included (forwarding refuses those).
    app.router.add_route("*", ENVOY_PREFIX + r"{original:(/[\s\S]*)?}", auth)
    hotpath.serve_ahead(app, auth, "/auth", ENVOY_PREFIX)  # both, ahead of the router (limits.Runner)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_get(SECOND_FACTOR_PATH, second_factor_form)
    app.router.add_post(SECOND_FACTOR_PATH, second_factor)
    enrol.add_routes(app)
    passkeys.add_routes(app)
    app.router.add_post("/refresh", refresh)
    app.router.add_post("/logout", logout)
    app.router.add_get("/.well-known/jwks.json", jwks)
    oauth.add_routes(app)
    oidc.add_routes(app)  # discovery, userinfo
    authorize.add_routes(app)
    oidc_logout.add_routes(app)
    browser_pages.add_routes(app)
    portal.add_routes(app)  # /account: the signed-in user's own page, forgotten passwords
    admin.add_routes(app)  # /admin: the console of FORWARDAUTH_ADMIN_ROLE
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app
