"""``GET /metrics``: counts summed over the workers, never going back when one is replaced, and
what /auth decided, the caches answered and the stores failed, exactly."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forwardauth import config
from forwardauth.core.tokens import Identity
from forwardauth.http.app import create_app
from forwardauth.http.metrics import BadSnapshot, Totals
from forwardauth.http.services import SERVICES
from forwardauth.stores import users

from . import http
from .localuser import NOBODY
from .support import PASSWORD, AppServer, Service, free_port, wait_until
from .test_serve import workers

MakeUser = Callable[..., users.User]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DECISIONS = "forwardauth_auth_decisions_total"
REQUESTS = "forwardauth_requests_total"


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(svc: Service) -> Samples:
    """One scrape, over a connection of its own (so any worker may answer it)."""
    response = http.get(svc.base + "/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def decided(samples: Samples, reason: str) -> float:
    return value(samples, DECISIONS, decision="allow" if reason in ("allowed", "bypass") else "deny", reason=reason)


def snapshots(tmp_path: Path) -> list[Path]:
    """The workers' snapshot files of the one service started with TMPDIR=tmp_path."""
    return sorted(tmp_path.glob("forwardauth-metrics-*/worker-*.json"))


def auth_statuses(svc: Service, headers: Mapping[str, str], times: int) -> set[int]:
    return {http.get(svc.base + "/auth", headers).status for _ in range(times)}


def file_totals(tmp_path: Path) -> list[Totals]:
    return [Totals.loads(f.read_bytes()) for f in snapshots(tmp_path)]


def two_workers(service: Callable[..., Service], tmp_path: Path) -> Service:
    """A service whose two workers both answer (so both are fully up), snapshots under tmp_path."""
    svc = service(workers=2, extra={"TMPDIR": str(tmp_path)})

    def both_answer() -> bool:
        assert http.get(svc.base + "/healthz").status == 200
        answered = [t.counters.get(("requests", "healthz", "200"), 0) for t in file_totals(tmp_path)]
        return len(answered) == 2 and all(answered)

    wait_until(both_answer, what="both workers to answer")
    return svc


def test_every_scrape_sums_every_worker(service: Callable[..., Service], make_user: MakeUser, tmp_path: Path) -> None:
    svc = two_workers(service, tmp_path)
    user = make_user()
    token = http.login(svc.base, user.username, PASSWORD).json()["access_token"]
    assert auth_statuses(svc, http.bearer(token), 20) == {200}
    assert auth_statuses(svc, {}, 15) == {401}
    assert auth_statuses(svc, http.bearer("not.a.token"), 10) == {401}
    assert http.get(svc.base + "/no/such/thing").status == 404
    expected = {"allowed": 20, "no_token": 15, "invalid_token": 10, "revoked": 0, "bypass": 0}

    def exact(samples: Samples) -> bool:
        return (
            all(decided(samples, reason) == n for reason, n in expected.items())
            and value(samples, REQUESTS, handler="auth", status="200") == 20
            and value(samples, REQUESTS, handler="auth", status="401") == 25
            and value(samples, REQUESTS, handler="unmatched", status="404") == 1
        )

    # Each scrape is a new connection, answered by either worker: all of them must be exact.
    wait_until(lambda: all(exact(scrape(svc)) for _ in range(10)), timeout=10, what="exact sums in every scrape")
    shares = [sum(n for key, n in t.counters.items() if key[:2] == ("requests", "auth")) for t in file_totals(tmp_path)]
    assert len(shares) == 2 and all(shares) and sum(shares) == 45  # both workers' shares, summed
    svc.stop()
    assert not list(tmp_path.glob("forwardauth-metrics-*"))  # removed with the server


def test_a_replaced_worker_takes_nothing_back(service: Callable[..., Service], tmp_path: Path) -> None:
    svc = two_workers(service, tmp_path)
    before = workers(svc.process.pid)
    assert auth_statuses(svc, {}, 30) == {401}
    os.kill(min(before), signal.SIGTERM)  # at once: its last counts are in no periodic snapshot yet
    # The replacement writes a file of its own as it starts; the stopped worker's stays.
    wait_until(lambda: len(snapshots(tmp_path)) == 3, what="the replacement worker's snapshot")
    assert len(workers(svc.process.pid) - before) == 1
    assert auth_statuses(svc, {}, 30) == {401}
    seen: list[float] = []

    def all_counted() -> bool:
        seen.append(decided(scrape(svc), "no_token"))
        return seen[-1] == 60

    wait_until(all_counted, timeout=10, what="the stopped worker's counts and the new one's")
    assert seen == sorted(seen), seen  # never backwards


def test_caches_are_counted(service: Callable[..., Service], make_user: MakeUser) -> None:
    svc = service(workers=1)
    user = make_user()
    token = http.login(svc.base, user.username, PASSWORD).json()["access_token"]
    assert auth_statuses(svc, http.bearer(token), 5) == {200}
    samples = scrape(svc)
    assert value(samples, "forwardauth_claims_cache_lookups_total", result="miss") == 1  # verified once
    assert value(samples, "forwardauth_claims_cache_lookups_total", result="hit") == 4
    memory = value(samples, "forwardauth_live_token_checks_total", source="memory")
    redis_lookups = value(samples, "forwardauth_live_token_checks_total", source="redis")
    assert redis_lookups >= 1 and memory + redis_lookups == 5
    # The checks came one at a time, so nothing shared a round trip: one MGET per lookup (that
    # concurrent ones share them is tests/test_livekeys.py's).
    assert value(samples, "forwardauth_live_token_redis_commands_total") == redis_lookups

    def from_memory() -> bool:
        assert http.get(svc.base + "/auth", http.bearer(token)).status == 200
        return value(scrape(svc), "forwardauth_live_token_checks_total", source="memory") > memory

    wait_until(from_memory, what="a live check answered from memory")


POLICY = """
default: authenticated
rules:
  - path: /public
    policy: bypass
  - path: /closed
    policy: deny
  - path: /admin
    roles: [admin]
"""


def forwarded(path: str, token: str | None = None) -> dict[str, str]:
    """Traefik's description of a request for ``path``, from a trusted address (the test client)."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.test",
        "X-Forwarded-Uri": path,
        "X-Forwarded-Method": "GET",
    }
    return {**headers, **http.bearer(token)} if token else headers


async def test_every_decision_has_its_reason(
    aiohttp_client: Any, env: dict[str, str], make_user: MakeUser, tmp_path: Path
) -> None:
    (tmp_path / "policy.yml").write_text(POLICY)
    app = create_app(config.load({**env, "FORWARDAUTH_POLICY_FILE": str(tmp_path / "policy.yml")}))
    client = await aiohttp_client(AppServer(app))
    user = make_user()
    login = await client.post("/login", json={"username": user.username, "password": PASSWORD})
    token = (await login.json())["access_token"]
    answers = [
        (await client.get("/auth", headers=headers)).status
        for headers in (
            forwarded("/public"),
            forwarded("/closed", token),
            forwarded("/admin", token),
            forwarded("/app"),
            forwarded("/app", "x.y.z"),
            forwarded("/app", token),
        )
    ]
    assert answers == [200, 403, 403, 401, 401, 200]
    assert (await client.post("/logout", headers=http.bearer(token))).status == 200
    assert (await client.get("/auth", headers=forwarded("/app", token))).status == 401
    samples = parse(await (await client.get("/metrics")).text())
    assert {
        reason: decided(samples, reason)
        for reason in ("bypass", "forbidden_rule", "forbidden_role", "no_token", "invalid_token", "allowed", "revoked")
    } == {
        "bypass": 1,
        "forbidden_rule": 1,
        "forbidden_role": 1,
        "no_token": 1,
        "invalid_token": 1,
        "allowed": 1,
        "revoked": 1,
    }
    assert value(samples, REQUESTS, handler="auth", status="403") == 2
    assert value(samples, REQUESTS, handler="login", status="200") == 1
    assert value(samples, "forwardauth_request_duration_seconds_count", handler="auth") == 7
    assert value(samples, "forwardauth_request_duration_seconds_bucket", handler="auth", le="+Inf") == 7


async def test_store_outages_are_counted(aiohttp_client: Any, env: dict[str, str], make_user: MakeUser) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    no_redis = await aiohttp_client(
        AppServer(create_app(config.load({**env, "FORWARDAUTH_REDIS_URL": f"redis://{nowhere}/0"})))
    )
    minted = no_redis.server.app[SERVICES].tokens.mint(Identity("id-1", "someone", ("user",)), "sid-1")
    assert (await no_redis.get("/auth", headers=http.bearer(minted.token))).status == 503
    samples = parse(await (await no_redis.get("/metrics")).text())
    assert value(samples, "forwardauth_store_errors_total", store="redis") == 1
    assert value(samples, REQUESTS, handler="auth", status="503") == 1

    no_postgres = await aiohttp_client(
        AppServer(create_app(config.load({**env, "FORWARDAUTH_DATABASE_URL": f"postgresql://postgres@{nowhere}/none"})))
    )
    user = make_user()
    login = await no_postgres.post("/login", json={"username": user.username, "password": PASSWORD})
    assert login.status == 503
    samples = parse(await (await no_postgres.get("/metrics")).text())
    assert value(samples, "forwardauth_store_errors_total", store="postgres") == 1
    assert value(samples, "forwardauth_store_errors_total", store="redis") == 0


def test_snapshots_add_up() -> None:
    """What a worker writes, another reads back and adds: counters and histograms alike."""
    zeros = [0] * 14  # 16 buckets (the last is +Inf), then the sum of seconds
    one = Totals({("requests", "auth", "200"): 2}, {("auth",): [1, 0, *zeros, 0.5]})
    two = Totals.loads(
        Totals(
            {("requests", "auth", "200"): 3, ("requests", "auth", "401"): 1}, {("auth",): [0, 1, *zeros, 0.25]}
        ).dumps()
    )
    one.add(two)
    assert one.counters == {("requests", "auth", "200"): 5, ("requests", "auth", "401"): 1}
    assert one.histograms == {("auth",): [1, 1, *zeros, 0.75]}


async def test_observe_finds_each_routes_stats_without_making_them_again(
    aiohttp_client: Any, pure_settings: config.Settings
) -> None:
    """``observe`` is an ordinary middleware: aiohttp hands it the same chain on every request of
    a route, so a route's stats are found, not made again; what no route takes stays unmatched."""
    app = create_app(dataclasses.replace(pure_settings, local_cache=False))  # nothing follows Redis
    client = await aiohttp_client(AppServer(app))
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/no-such-page")).status == 404
    metrics = app[SERVICES].metrics
    assert [stats.name for stats in metrics.handlers.values()] == ["healthz"]
    counters = metrics.totals().counters
    assert counters[("requests", "healthz", "200")] == 3 and counters[("requests", "unmatched", "404")] == 3


BAD_SNAPSHOTS = {
    "not json": b"{not json",
    "not an object": b"[1, 2]",
    "negative counter": b'{"counters": [[["requests", "auth", "200"], -5]], "histograms": []}',
    "text counter": b'{"counters": [[["requests", "auth", "200"], "5"]], "histograms": []}',
    "boolean counter": b'{"counters": [[["requests", "auth", "200"], true]], "histograms": []}',
    "unknown series": b'{"counters": [[["bogus", "x"], 1]], "histograms": []}',
    "missing label": b'{"counters": [[["requests", "auth"], 1]], "histograms": []}',
    "short histogram": b'{"counters": [], "histograms": [[["auth"], [1, 2]]]}',
    "negative histogram": b'{"counters": [], "histograms": [[["auth"], [-1' + b", 0" * 16 + b"]]]}",
}


@pytest.mark.parametrize("content", BAD_SNAPSHOTS.values(), ids=BAD_SNAPSHOTS.keys())
def test_a_malformed_snapshot_is_refused_whole(content: bytes) -> None:
    with pytest.raises(BadSnapshot):
        Totals.loads(content)


def test_bad_or_foreign_snapshot_files_never_break_a_scrape(service: Callable[..., Service], tmp_path: Path) -> None:
    """One malformed file once made every scrape a 500, and negative counts were subtracted. Files
    another user owns or can write are not this server's workers' either: all are ignored, and said."""
    previous = os.umask(0)  # the service inherits it: what it writes is private all the same
    try:
        svc = two_workers(service, tmp_path)
    finally:
        os.umask(previous)
    [folder] = tmp_path.glob("forwardauth-metrics-*")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in snapshots(tmp_path)} == {0o600}
    huge = Totals({("auth_decisions", "deny", "no_token"): 1000}, {}).dumps()
    for name, content in BAD_SNAPSHOTS.items():
        (folder / f"worker-{name.replace(' ', '_')}.json").write_bytes(content)
    open_file = folder / "worker-open.json"
    open_file.write_bytes(huge)
    open_file.chmod(0o666)
    if os.geteuid() == 0:
        foreign = folder / "worker-nobody.json"
        foreign.write_bytes(huge)
        os.chown(foreign, NOBODY.pw_uid, NOBODY.pw_gid)
    assert auth_statuses(svc, {}, 7) == {401}
    wait_until(
        lambda: all(decided(scrape(svc), "no_token") == 7 for _ in range(6)),
        timeout=10,
        what="every scrape to count exactly the requests made",
    )
    logged = svc.log.read_text()
    assert "worker-negative_counter.json ignored" in logged and "worker-open.json ignored" in logged
    assert "Traceback" not in logged
