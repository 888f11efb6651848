"""The audit trail read back: ``audit.recent`` / ``audit.after`` and ``forwardauth audit tail``."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from forwardauth.stores import audit
from forwardauth.stores.postgres import Database

from .support import stop_process, wait_until
from .test_cli import assert_one_line_error, run


def failures(database: Database, name: str, count: int) -> None:
    for n in range(count):
        database.call(audit.record, "login_failure", None, name, "192.0.2.7", {"attempt": n})


def test_recent_and_after_read_in_order(database: Database) -> None:
    name = f"audit-{secrets.token_hex(4)}"
    failures(database, name, 3)
    last_three = database.call(audit.recent, 3)
    assert [(e.username, e.detail) for e in last_three] == [(name, {"attempt": n}) for n in range(3)]
    assert database.call(audit.latest_id) == last_three[-1].id
    assert database.call(audit.after, last_three[0].id) == last_three[1:]
    assert database.call(audit.recent, 0) == []


def test_tail_prints_the_last_events_oldest_first(env: dict[str, str], database: Database) -> None:
    name = f"audit-{secrets.token_hex(4)}"
    failures(database, name, 4)
    result = run(env, "audit", "tail", "-n", "3")
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[1:] for line in lines] == [
        ["login_failure", name, "192.0.2.7", f'{{"attempt":{n}}}'] for n in (1, 2, 3)
    ]
    assert all(line[0].startswith("20") and line[0].endswith("+00:00") for line in lines)  # ISO 8601, UTC


def test_tail_follow_prints_new_events_as_they_come(env: dict[str, str], database: Database, tmp_path: Path) -> None:
    first, second = f"audit-{secrets.token_hex(4)}", f"audit-{secrets.token_hex(4)}"
    failures(database, first, 1)
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = subprocess.Popen(
            [sys.executable, "-m", "forwardauth", "audit", "tail", "-n", "1", "--follow"],
            env={**os.environ, **env},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            wait_until(lambda: first in out.read_text(), what="the last event")  # now following
            failures(database, second, 1)
            wait_until(lambda: second in out.read_text(), what="the new event")
            tail.send_signal(signal.SIGINT)
            assert tail.wait(timeout=10) == 130  # Ctrl-C: the usual status, no traceback
        finally:
            stop_process(tail)
    assert [line.split("\t")[2] for line in out.read_text().splitlines()] == [first, second]
    assert err.read_text() == ""


def test_a_negative_count_is_refused(env: dict[str, str]) -> None:
    assert "-n must not be negative" in assert_one_line_error(run(env, "audit", "tail", "-n", "-1"), 1)


# CR LF to forge a line, ESC sequences (retitle the window, conceal text), BEL, a tab to shift a
# field, DEL, C1 (NEL, CSI), the bidi override and isolate, the Unicode line separator.
HOSTILE = (
    "\r\n2026-01-01T00:00:00+00:00\tlogin_success\troot\t10.0.0.1\t-\x1b]0;pwned\x07\x1b[8mhidden\x1b[0m"
    "\x7f\x85\x9b2J\u202eelor\u2066x\u2069\u2028y\u2029z\x0b\x0c\x08end"
)
RAW = sorted({c for c in HOSTILE if not c.isprintable()} | {"\u202e", "\u2066", "\u2069"})


async def test_tail_escapes_control_characters_sent_to_login(
    client: Any, env: dict[str, str], database: Database
) -> None:
    """An unauthenticated POST /login cannot forge audit lines nor drive the operator's terminal."""
    tag = f"inject-{secrets.token_hex(4)}"
    for n in range(2):
        response = await client.post("/login", json={"username": f"{tag}-{n}{HOSTILE}", "password": "wrong"})
        assert response.status == 401
    stored = [e.username for e in database.call(audit.recent, 2)]
    assert all(name and name.startswith(tag) and "\x1b" in name for name in stored)  # kept as sent, for the record

    result = await asyncio.to_thread(run, env, "audit", "tail", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 2 and result.stdout.endswith("\n")  # one line per event
    assert [c for c in RAW if c in result.stdout.replace("\n", "").replace("\t", "")] == []
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [len(fields) for fields in lines] == [5, 5]  # the separators only: no field shifted
    for n, fields in enumerate(lines):
        assert fields[1] == "login_failure"
        assert fields[2].startswith(f"{tag}-{n}\\r\\n2026-01-01t00:00:00+00:00\\tlogin_success\\troot")  # case-folded
        assert "\\x1b]0;pwned\\x07\\x1b[8mhidden" in fields[2] and "\\u202eelor" in fields[2]
    assert "login_success" not in [fields[1] for fields in lines]
