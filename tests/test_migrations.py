"""Migrations on a fresh database: applied once, idempotent, safe when started concurrently."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from forwardauth import migrations

from .conftest import throwaway_database


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with throwaway_database("forwardauth_mig") as url:
        yield url


def tables(url: str) -> set[str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def recorded(url: str) -> list[int]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in cur.fetchall()]


def test_fresh_database(fresh_database: str) -> None:
    assert migrations.applied_version(fresh_database) == 0
    applied = migrations.migrate(fresh_database)
    assert applied == [m.name for m in migrations.available()]
    assert {"users", "refresh_tokens", "audit_events", "clients", "schema_migrations"} <= tables(fresh_database)
    assert recorded(fresh_database) == [m.version for m in migrations.available()]
    assert migrations.applied_version(fresh_database) == migrations.latest_version()


def test_second_run_applies_nothing(fresh_database: str) -> None:
    migrations.migrate(fresh_database)
    assert migrations.migrate(fresh_database) == []
    assert recorded(fresh_database) == [m.version for m in migrations.available()]


def test_concurrent_runs_apply_each_migration_once(fresh_database: str) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(migrations.migrate, [fresh_database] * 6))
    non_empty = [r for r in results if r]
    assert len(non_empty) == 1 and non_empty[0] == [m.name for m in migrations.available()]
    assert recorded(fresh_database) == [m.version for m in migrations.available()]


def test_a_failing_migration_leaves_nothing_behind(fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    good = migrations.available()
    broken = migrations.Migration(9999, "9999_broken.sql", "CREATE TABLE half_done (x int); SELECT 1/0;")
    monkeypatch.setattr(migrations, "available", lambda: [*good, broken])
    with pytest.raises(psycopg2.errors.DivisionByZero):
        migrations.migrate(fresh_database)
    assert "half_done" not in tables(fresh_database)
    assert recorded(fresh_database) == [m.version for m in good]
