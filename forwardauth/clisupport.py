"""What the command-line commands share: their error, the password prompt, and running work
against the stores (the embedded ones started if need be, the tables migrated first)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from forwardauth.accounts.changes import AccountError, revoke_user
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.config import Settings
from forwardauth.core.passwords import Passwords, WeakPassword, generate_password
from forwardauth.dev import embedded
from forwardauth.stores import migrations, users
from forwardauth.stores.postgres import Connection, Database

T = TypeVar("T")
P = ParamSpec("P")

DEMO_USER = "demo"


class CommandError(Exception):
    """Reported as ``forwardauth: <message>`` with exit status 1."""


def when(moment: dt.datetime | None) -> str:
    """A time as the commands print it: UTC, to the second; "never" for none."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds") if moment is not None else "never"


def read_password(args: argparse.Namespace) -> str:
    """From stdin with --password-stdin, else asked twice on a terminal (never read from a pipe)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password: pipe it in with --password-stdin")
    try:
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise CommandError("passwords do not match")
    except EOFError:
        raise CommandError("no password given") from None
    return first


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """The database (the embedded one started if need be), on up-to-date tables."""
    with embedded.stores(settings, need_redis=False) as ready:
        assert ready.database_url is not None
        migrations.migrate(ready.database_url)
        db = Database(ready.database_url, 1)
        try:
            yield db
        finally:
            db.close()


def with_db(settings: Settings, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(conn, *args)`` in one transaction, on up-to-date tables."""
    with database(settings) as db:
        return db.call(fn, *args, **kwargs)


def end_all_sessions(settings: Settings, name: str) -> int:
    """Revoke every session of user ``name`` in PostgreSQL and Redis; how many there were."""
    return int(run_accounts(settings, lambda s: revoke_user(s, name))[1])


def run_accounts(settings: Settings, action: Callable[[AccountServices], Awaitable[T]]) -> T:
    """Run an account operation with the stores (embedded ones started if need be), its errors
    reported as one line like every command's."""

    async def main(ready: Settings) -> T:
        services = build_account_services(ready)
        try:
            return await action(services)
        finally:
            await services.close()

    with embedded.stores(settings) as ready:
        assert ready.database_url is not None
        migrations.migrate(ready.database_url)
        try:
            return asyncio.run(main(ready))
        except AccountError as exc:
            raise CommandError(str(exc)) from None


def _ensure_demo(conn: Connection, passwords: Passwords, password: str) -> bool:
    if users.find(conn, DEMO_USER) is not None:
        return False
    users.create(conn, passwords, DEMO_USER, password, ["user"], "demo@example.com")
    return True


def demo_user(settings: Settings) -> str:
    """Create the demo user once; what to tell of its password (from the environment, or shown only now)."""
    given = os.environ.get("FORWARDAUTH_DEMO_PASSWORD")
    password = given or generate_password()  # a generated one always meets the policy
    try:
        created = with_db(settings, _ensure_demo, Passwords.from_settings(settings), password)
    except WeakPassword as exc:
        raise CommandError(f"FORWARDAUTH_DEMO_PASSWORD: {exc}") from None
    if created:
        shown = "(from FORWARDAUTH_DEMO_PASSWORD)" if given else password
        return f"demo user created: username {DEMO_USER}, password {shown}"
    return (
        f"demo user {DEMO_USER!r} exists (its password was shown when it was created; "
        f"to set a new one: forwardauth user passwd {DEMO_USER})"
    )
