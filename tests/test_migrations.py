"""Migrations on a fresh database: the schema appears, a second run does nothing, concurrent runs apply once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest

from forwardauth.stores import migrations

from .support import throwaway_database

CONCURRENT_RUNS = 4

pytestmark = pytest.mark.servers  # each test makes a database of its own


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty database with a random name on ADMIN_URL, dropped WITH (FORCE) afterwards."""
    with throwaway_database("forwardauth_mig") as url:
        yield url


def applied_version(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        return migrations.schema_version(conn)
    finally:
        conn.close()


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def tables(url: str) -> set[str]:
    return {row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def recorded(url: str) -> list[int]:
    return [row[0] for row in query(url, "SELECT version FROM schema_migrations ORDER BY version")]


def all_names() -> list[str]:
    return [m.name for m in migrations.available()]


def all_versions() -> list[int]:
    return [m.version for m in migrations.available()]


def test_migrate_creates_the_schema_on_a_fresh_database(fresh_database: str) -> None:
    assert applied_version(fresh_database) == 0
    assert tables(fresh_database) == set()

    applied = migrations.migrate(fresh_database)

    assert applied == all_names() and applied[0] == "0001_initial.sql"
    assert {"users", "refresh_tokens", "audit_events", "schema_migrations"} <= tables(fresh_database)
    assert recorded(fresh_database) == all_versions() and recorded(fresh_database)[0] == 1
    assert applied_version(fresh_database) == migrations.latest_version()


def test_second_run_applies_nothing(fresh_database: str) -> None:
    assert migrations.migrate(fresh_database) == all_names()
    assert migrations.migrate(fresh_database) == []
    assert recorded(fresh_database) == all_versions()


def test_concurrent_runs_apply_each_migration_once(fresh_database: str) -> None:
    start = threading.Barrier(CONCURRENT_RUNS)

    def run(_: int) -> list[str]:
        start.wait(timeout=30)  # all connect and race for the lock together
        return migrations.migrate(fresh_database)

    with ThreadPoolExecutor(max_workers=CONCURRENT_RUNS) as pool:
        results = list(pool.map(run, range(CONCURRENT_RUNS)))  # re-raises any run's exception

    assert sorted(results, key=len) == [[]] * (CONCURRENT_RUNS - 1) + [all_names()]
    counts = query(fresh_database, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1")
    assert counts == [(version, 1) for version in all_versions()]
    assert applied_version(fresh_database) == migrations.latest_version()


def test_a_failing_migration_leaves_nothing_behind(fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    good = migrations.available()
    broken = migrations.Migration(9999, "9999_broken.sql", "CREATE TABLE half_done (x int); SELECT 1/0;")
    monkeypatch.setattr(migrations, "available", lambda: [*good, broken])
    with pytest.raises(psycopg2.errors.DivisionByZero):
        migrations.migrate(fresh_database)
    assert "half_done" not in tables(fresh_database)
    assert recorded(fresh_database) == [m.version for m in good]
