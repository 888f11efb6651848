"""Login throughput with the production Argon2id parameters (the settings' defaults), per core.

Two runs of wrk with login.lua (one user, the right password, JSON ``POST /login``): forwardauth
with 1 worker pinned to core 0 and wrk pinned to core 1, so that the worker has one core to itself
(PostgreSQL and Redis are not pinned: a login's few queries are small beside its hash); then
``WORKERS`` workers unpinned beside wrk, as deployed on this machine. Besides logins/s, the workers'
CPU time from /proc gives what one login costs, which is what sizing needs: logins/s per core
= logins per CPU-second of the workers.
"""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path

from harness import WORKERS, cpu_seconds, forwardauth, free_port, worker_pids, worker_rss_mb, wrk

from forwardauth import config
from forwardauth.core.passwords import Passwords
from forwardauth.stores import users
from forwardauth.stores.postgres import Database

PASSWORD = "perf bench passphrase"  # noqa: S105 (a throwaway user in a throwaway database)
CONNECTIONS = 8  # more than one worker's hashing threads (db_pool_size): the queue never runs dry


def login_once(base: str, name: str) -> None:
    """One login before the measurement: the first pays for loading what a login uses."""
    body = f'{{"username": "{name}", "password": "{PASSWORD}"}}'.encode()
    request = urllib.request.Request(base + "/login", body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200


def measure(env: dict[str, str], database_url: str, work: Path, seconds: int) -> list[str]:
    """The two runs' lines, ready to paste."""
    settings = config.load(env)
    name = f"perf-login-{secrets.token_hex(3)}"
    db = Database(database_url, 1)
    try:  # hashed with the production parameters, so that no login rehashes
        db.call(users.create, Passwords.from_settings(settings), name, PASSWORD, ("user",), None)
    finally:
        db.close()
    params = (
        f"Argon2id t={settings.argon2_time_cost}, m={settings.argon2_memory_cost // 1024} MiB, "
        f"p={settings.argon2_parallelism}"
    )
    lines = []
    for label, workers, server_cpus, client_cpus in (
        ("1 worker pinned to core 0 (taskset -c 0), wrk on core 1", 1, "0", "1"),
        (f"{WORKERS} workers unpinned, wrk beside them", WORKERS, None, None),
    ):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with forwardauth(work, env, workers, server_cpus)(port):
            login_once(base, name)
            pids = worker_pids(port)
            before = cpu_seconds(pids)
            login = {"LOGIN_USER": name, "LOGIN_PASSWORD": PASSWORD}
            result = wrk(base + "/login", None, seconds, CONNECTIONS, "login.lua", login, client_cpus)
            cpu = cpu_seconds(pids) - before
            rss = worker_rss_mb(port)
        per_login = cpu / result["requests"] if result["requests"] else float("nan")
        lines.append(
            f"Logins, {params}, {label}, {settings.db_pool_size} threads per worker, {CONNECTIONS} connections, "
            f"{seconds} s: {result['rps']:.1f} logins/s, p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
            f"non-2xx {int(result['non2xx'])}; workers' CPU {per_login * 1000:.0f} ms per login = "
            f"{1 / per_login:.1f} logins per CPU-second; RSS per worker after: {', '.join(f'{r:.0f} MB' for r in rss)}"
        )
    return lines
