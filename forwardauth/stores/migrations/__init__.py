"""Versioned SQL migrations: ``NNNN_name.sql`` files applied in order, each once.

Each file runs in its own transaction and is recorded in ``schema_migrations``. A session-level
advisory lock makes concurrent starts (several workers or hosts) wait for each other instead of
applying the same file twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg2

# Any constant unique to forwardauth; pg_advisory_lock takes a bigint.
ADVISORY_LOCK_ID = 0x466F_7277_6172_6441  # "ForwardA"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return max(m.version for m in available())


def schema_version(conn: psycopg2.extensions.connection) -> int:
    """Highest applied version, 0 when none (or no table yet); on a connection of the caller's
    (``/readyz`` asks on one from the pool, not on a new connection per probe)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return 0
        cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        result = cur.fetchone()
        return int(result[0]) if result else 0


def migrate(dsn: str) -> list[str]:
    """Apply what is missing; returns the names applied (empty when up to date)."""
    done: list[str] = []
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur.execute("SELECT version FROM schema_migrations")
                applied = {row[0] for row in cur.fetchall()}
                for migration in available():
                    if migration.version in applied:
                        continue
                    cur.execute("BEGIN")
                    try:
                        cur.execute(migration.sql)
                        cur.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                        cur.execute("COMMIT")
                    except BaseException:
                        cur.execute("ROLLBACK")
                        raise
                    done.append(migration.name)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    finally:
        conn.close()
    return done
