"""Instructions per /auth request, counted by callgrind (``perf/run --instructions``): wrk's
throughput moves by +-15% between runs on this shared machine, the instruction count by about 1%
(hash seeds, addresses, timings), so a change of a few percent shows, before against after
(``--old DIR``: the forwardauth rows again, that source tree first on PYTHONPATH).

Each configuration is one server process under ``valgrind --tool=callgrind``, instrumentation off
until warmed up (start-up runs faster so, and the counts are the steady state's: instrumented from
the start, the first 1,000 requests after the warm-up counted ~3% more, the next ones did not).
The driver sends every request after the previous answer, on one keep-alive connection: each
event-loop turn then handles exactly one request in every row (wrk's 64 connections would batch
several per turn, differently per row), and no connection is accepted while counting. 300
requests warm up (claims cache, Redis and PostgreSQL connections), then 1,000 are counted.
Requests rotate through 100 users' tokens (the claims cache hits) with the X-Forwarded-* headers
perf/auth.lua sends; every answer must be 200. The Redis server's own work is not counted.

Work on timers (metrics snapshots and back-channel queue polls every second, file watchers) goes
on while requests are counted: ~1.7 million instructions a second, which valgrind's slowness would
spread over only a few hundred requests, ~2% of the figure and varying with the machine's load. So
the server is first counted idle for IDLE_SECONDS, and that rate times the counted window's
duration is subtracted from the window's total.

forwardauth runs as ONE worker started directly: ``server.run_worker``, the function each worker
of ``forwardauth serve`` runs (create_app, limits.Runner, TCPSite on uvloop). ``serve`` spawns its
workers (fork, then exec of a new interpreter), which callgrind follows only with
``--trace-children=yes``, and then the worker's pid would have to be found among the supervisor's
children; its migration and token sync at start would run under valgrind too. The bare row is
perf/bare.py's ``serve`` in the same single process.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import PERF, free_port, process, wait_http

WARM_UP, COUNTED, USERS = 300, 1000, 100
IDLE_SECONDS = 3.0
ROOT = PERF.parent
# (label, server kind, extra environment, tokens: "rs" session tokens or "pat" Basic credentials)
Row = tuple[str, str, dict[str, str], str]


def rows(policy: Path, old: Path | None) -> list[Row]:
    trees: list[tuple[str, dict[str, str]]] = [("", {})]
    if old is not None:
        trees.append((f", {old}", {"PYTHONPATH": str(old.resolve())}))
    forwardauth = [
        ("forwardauth RS256, 1 worker", {}, "rs"),
        ("forwardauth RS256, 1 worker, 100 rules", {"FORWARDAUTH_POLICY_FILE": str(policy)}, "rs"),
        ("forwardauth RS256, 1 worker, Redis lookup each request", {"FORWARDAUTH_LOCAL_CACHE": "false"}, "rs"),
        ("forwardauth personal access token, Basic, 1 worker", {}, "pat"),
    ]
    result: list[Row] = [("bare aiohttp+uvloop, 1 process", "bare", {}, "rs")]
    for label, env, tokens in forwardauth:  # each row beside its counterpart in the other tree
        result += [(label + suffix, "forwardauth", {**env, **tree}, tokens) for suffix, tree in trees]
    return result


def table(base_env: dict[str, str], tokens: dict[str, Path], policy: Path, work: Path, old: Path | None) -> str:
    """The Markdown table of every row's instructions per request (``tokens``: "rs" and "pat")."""
    counts: list[tuple[str, float]] = []
    for n, (label, kind, env, which) in enumerate(rows(policy, old)):
        counts.append((label, count(n, kind, {**base_env, **env}, tokens[which], work)))
        print(f"{label}: {counts[-1][1]:,.0f} instructions per request", file=sys.stderr, flush=True)
    bare = counts[0][1]
    lines = [
        f"callgrind, {COUNTED:,} sequential requests on one keep-alive connection after {WARM_UP} to warm up, "
        f"{USERS} users' tokens rotating, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        "| configuration | instructions per request | vs bare aiohttp |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {ir:,.0f} | {ir / bare:.2f} |" for label, ir in counts]
    return "\n".join(lines)


def count(n: int, kind: str, env: dict[str, str], tokens: Path, work: Path) -> float:
    """Instructions per request of one server of ``kind`` ("bare" or "forwardauth")."""
    port = free_port()
    out, log = work / f"cg-{n}", work / f"cg-{n}.log"
    metrics = work / f"metrics-{n}"
    metrics.mkdir()
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]
    args = [*valgrind, sys.executable, str(Path(__file__).resolve()), kind, str(port), str(metrics)]
    with process(args, {**env, "FORWARDAUTH_PORT": str(port)}, log):
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=180, status=200)
        # callgrind creates its output file, named with the pid, at start: the pid to control
        (started,) = [p for p in work.glob(f"cg-{n}.*") if re.fullmatch(rf"cg-{n}\.\d+", p.name)]
        pid = started.name.rsplit(".", 1)[1]
        tree = Path(env.get("PYTHONPATH", ROOT)) / "forwardauth"
        if kind == "forwardauth" and f"forwardauth from {tree.resolve()}\n" not in log.read_text():
            raise RuntimeError(f"the server did not import {tree}: {log.read_text()}")
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            ask = requests(tokens, port)
            drive(sock, ask, WARM_UP)
            callgrind(pid, "--instr=on")
            idle, idle_seconds = window(pid, started, 1, lambda: time.sleep(IDLE_SECONDS))
            busy, seconds = window(pid, started, 2, lambda: drive(sock, ask, COUNTED))
        rate = idle / idle_seconds
        print(f"  {busy / COUNTED:,.0f} counted, less {rate:,.0f}/s idle over {seconds:.1f} s", file=sys.stderr)
        return (busy - rate * seconds) / COUNTED


def window(pid: str, out: Path, number: int, action: Callable[[], object]) -> tuple[int, float]:
    """Instructions counted while ``action`` runs, and for how long: from the middle of the call
    that zeroes the counters to the middle of the one that dumps them."""
    start = time.monotonic()
    callgrind(pid, "--zero")
    zeroed = (start + time.monotonic()) / 2
    action()
    start = time.monotonic()
    callgrind(pid, "--dump")
    dumped = (start + time.monotonic()) / 2
    return total(Path(f"{out}.{number}")), dumped - zeroed


def callgrind(pid: str, option: str) -> None:
    subprocess.run(["callgrind_control", option, pid], check=True, capture_output=True, timeout=120)


def total(dump: Path, timeout: float = 60) -> int:
    """The instruction count of a dump, once written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dump.exists():
            match = re.search(r"^totals: (\d+)", dump.read_text(), re.M)
            if match:
                return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"no totals in {dump}")


def requests(tokens: Path, port: int) -> list[bytes]:
    """One request per user, as perf/auth.lua sends it (a line: a token, or a whole "Basic ..." value)."""
    return [
        (
            f"GET /auth HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {line if line.startswith('Basic ') else 'Bearer ' + line}\r\n"
            "X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n"
            "X-Forwarded-Uri: /dashboard/reports?page=2\r\n\r\n"
        ).encode()
        for line in tokens.read_text().splitlines()[:USERS]
    ]


def drive(sock: socket.socket, ask: list[bytes], number: int) -> None:
    """Send ``number`` requests one after the other; each answer must be a 200 with a Content-Length."""
    reader = sock.makefile("rb")
    for i in range(number):
        sock.sendall(ask[i % len(ask)])
        status = reader.readline()
        if not status.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"request {i} answered {status!r}")
        length = None
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"request {i}: no Content-Length in the answer")
        reader.read(length)


def serve(kind: str, port: int, metrics: Path) -> None:
    """The server process (under valgrind): a forwardauth worker or the bare floor."""
    if kind == "bare":
        import bare

        bare.serve(port)
        return
    import forwardauth
    from forwardauth import config, server

    print(f"forwardauth from {Path(forwardauth.__file__).parent.resolve()}", flush=True)
    server.run_worker(config.load(), metrics)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
