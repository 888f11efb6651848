"""Processes: a supervisor and N workers sharing the port with SO_REUSEPORT.

The supervisor starts the embedded stores (if any), migrates, makes sure a signing key exists,
then starts the workers and restarts any that dies. SIGTERM or SIGINT stops the workers
gracefully: they stop accepting, finish in-flight requests (up to the shutdown timeout), close
their pools, and only then are the embedded stores stopped. Workers ignore SIGINT (Ctrl-C reaches
the whole process group): the supervisor alone decides, and stops them with SIGTERM. Before
anything starts, the supervisor claims the port (``ports``): a second server fails at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker as resource_tracker
import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import psycopg2
import uvloop
from aiohttp import web

from forwardauth import diagnose, logs, ports
from forwardauth.accounts import pats
from forwardauth.accounts.services import build_account_services
from forwardauth.config import Settings
from forwardauth.core.policyfile import load as load_policy
from forwardauth.dev import embedded
from forwardauth.http import browser, limits
from forwardauth.http.app import create_app
from forwardauth.http.reloading import reload_policy
from forwardauth.http.services import SERVICES
from forwardauth.keys import KeyFileError, KeyRing, load_ring
from forwardauth.stores import migrations

log = logging.getLogger("forwardauth.server")

MIGRATE_WAIT = 30.0
TOKEN_SYNC_WAIT = 30.0
RESTART_BACKOFF = 1.0


def migrate_when_ready(dsn: str, wait: float = MIGRATE_WAIT) -> list[str]:
    """Apply migrations, waiting up to ``wait`` seconds for PostgreSQL to accept connections."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return migrations.migrate(dsn)
        except psycopg2.OperationalError as exc:
            problem = diagnose.database_problem(exc, dsn)
            if problem is not None:  # no such database, user or password: waiting will not help
                raise problem from None
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for PostgreSQL: %s", str(exc).strip().splitlines()[0])
            time.sleep(1.0)


def sync_tokens(settings: Settings, ring: KeyRing) -> None:
    """Write every live personal access token to Redis again, once, before the workers start: a
    Redis that lost its data (restarted without persistence) would refuse them until then. Best
    effort: a failure is logged, and the start goes on (``forwardauth token sync`` does it later)."""

    async def run() -> int:
        services = build_account_services(settings, ring)
        try:
            return await asyncio.wait_for(pats.sync(services), TOKEN_SYNC_WAIT)
        finally:
            await services.close()

    try:
        count = asyncio.run(run())
    except Exception as exc:  # whatever it is, the start goes on
        log.warning(
            "personal access tokens not written to Redis at start (%s: %s): run `forwardauth token sync` "
            "if Redis lost its data",
            type(exc).__name__,
            (str(exc).strip().splitlines() or [""])[0],
        )
    else:
        log.info("personal access tokens: %d live, written to Redis", count)


async def _serve(settings: Settings, metrics_dir: Path) -> None:
    app = create_app(settings, metrics_dir=metrics_dir)
    runner = limits.Runner(app, shutdown_timeout=settings.shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # from the supervisor; SIGINT stays ignored
    services = app[SERVICES]
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, reload_policy, services))
    log.info("worker listening on %s:%d", settings.host, settings.port)
    await stop.wait()
    log.info("worker stopping: finishing in-flight requests")
    await runner.cleanup()


def run_worker(settings: Settings, metrics_dir: Path) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler is in place
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # blocked since _spawn; a pending Ctrl-C is dropped
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    logs.configure(settings.log_level, settings.log_format)
    try:
        uvloop.run(_serve(settings, metrics_dir))
    except KeyFileError as exc:  # the folder was refused since the start: no keys, no serving
        log.error("worker not started, its keys are refused: %s", exc)
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.error("%s", ports.in_use_message(settings.host, settings.port))
        sys.exit(ports.PORT_TAKEN_EXIT)


def _spawn(context: multiprocessing.context.SpawnContext, settings: Settings, metrics_dir: Path) -> BaseProcess:
    """Start a worker with SIGINT blocked: a Ctrl-C while it imports would print a traceback."""
    process = context.Process(target=run_worker, args=(settings, metrics_dir), name="forwardauth-worker")
    resource_tracker.ensure_running()  # first: starting it unblocks SIGINT in this thread
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # inherited through fork and exec
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C meanwhile reaches us now
    return process


def supervise(settings: Settings) -> None:
    """Run ``settings.workers`` workers until SIGTERM/SIGINT; restart those that die."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def reload_workers(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers: list[BaseProcess] = []
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload_workers)
    # The workers' metric snapshots: this server's alone, gone with it (see metrics).
    metrics_dir = Path(tempfile.mkdtemp(prefix="forwardauth-metrics-"))
    workers.extend(_spawn(context, settings, metrics_dir) for _ in range(settings.workers))
    try:
        while not stopping:
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.2)
            for index, worker in enumerate(workers):
                if not worker.is_alive() and not stopping:
                    if worker.exitcode == ports.PORT_TAKEN_EXIT:  # taken since the check: restarts cannot help
                        raise ports.PortInUse(ports.in_use_message(settings.host, settings.port))
                    log.error("worker %s exited with %s; restarting", worker.pid, worker.exitcode)
                    time.sleep(RESTART_BACKOFF)
                    workers[index] = _spawn(context, settings, metrics_dir)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: graceful
        for worker in workers:
            worker.join(timeout=settings.shutdown_timeout + 5)
            if worker.is_alive():
                worker.kill()
                worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
    for problem in diagnose.unknown_variables(os.environ):  # started anyway: see "Configuration" in README
        log.warning("%s", problem)
    browser.warn_at_start(settings)  # cookies browsers would drop (Secure over http, a domain not covering)
    # Until supervise() installs its graceful handler, SIGTERM unwinds like Ctrl-C, so the
    # embedded stores started below are stopped even when the stop comes during start-up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ports.claim(settings.host, settings.port), embedded.stores(settings) as ready:
        assert ready.database_url is not None
        if ready.auto_migrate:
            applied = migrate_when_ready(ready.database_url)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
        if ready.policy_file is not None:
            policy = load_policy(ready.policy_file)  # a broken file stops the start here
            log.info("policy %s: %d rule(s), default %s", policy.source, len(policy.rules), policy.default.value)
        try:
            ring = load_ring(ready)
        except (OSError, KeyFileError) as exc:
            raise diagnose.keys_problem(ready, exc) from None
        log.info("signing with %s key %s", ring.current.alg, ring.current.kid)
        sync_tokens(ready, ring)
        log.info("forwardauth on http://%s:%d with %d worker(s)", ready.host, ready.port, ready.workers)
        supervise(ready)
    log.info("forwardauth stopped")
