"""``forwardauth config``: the values in effect, and ``config check`` that validates without starting.

``config check`` reports every problem it finds (not just the first), each naming the variable,
and exits 1 when there is any: a bad value, an unknown ``FORWARDAUTH_*`` variable (a typo that
``serve`` would only warn about), an unreadable policy file or keys folder, a database or Redis
that cannot be reached or does not exist (skipped with ``--no-connect``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forwardauth import config, diagnose
from forwardauth.config import PREFIX, ConfigError, Settings, load, variable_rows

CONNECT_TIMEOUT = 3  # seconds, for each store


def add_parser(sub: Any) -> None:
    """``config`` [``check`` [--no-connect] | ``variables``] under the top-level parser."""
    command: argparse.ArgumentParser = sub.add_parser(
        "config", help="show the configuration in effect (secrets masked); check it; list the variables"
    )
    actions = command.add_subparsers(dest="action")
    check = actions.add_parser("check", help="validate the configuration without starting (exit status 1 if not)")
    check.add_argument(
        "--no-connect", dest="connect", action="store_false", help="do not try to reach PostgreSQL and Redis"
    )
    actions.add_parser("variables", help="list every variable with its default and meaning")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run a ``config`` command; its exit status."""
    if args.action == "variables":
        for env, default, meaning in variable_rows():
            print(f"{env}\t{default}\t{meaning}")
        return 0
    if args.action == "check":
        return check(environ, args.connect)
    try:
        settings = load(environ)
    except ConfigError as exc:
        print(f"forwardauth: configuration error: {exc}", file=sys.stderr)
        return 2
    rows = [(f"{name}={value}", origin) for name, value, origin in diagnose.values_in_effect(settings, environ)]
    width = min(max(len(left) for left, _ in rows), 64)
    for left, origin in rows:
        print(f"{left.ljust(width)}  # {origin}")
    warn_unknown(environ)
    return 0


def warn_unknown(environ: Mapping[str, str]) -> None:
    """Unknown FORWARDAUTH_* variables, as warnings on stderr (``serve`` logs them instead)."""
    for problem in diagnose.unknown_variables(environ):
        print(f"forwardauth: warning: {problem}", file=sys.stderr)


def _each_variable(environ: Mapping[str, str]) -> list[str]:
    """Every variable parsed on its own, so that all bad values are reported at once."""
    problems = []
    for var in config.VARIABLES:
        own = {k: v for k, v in environ.items() if k in (var.env, var.env + diagnose.FILE_SUFFIX)}
        try:
            text = config._raw_values(own).get(var.name)
            if text is not None:
                config.parse_variable(var, text)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def check(environ: Mapping[str, str], connect: bool) -> int:
    problems = _each_variable(environ)
    settings: Settings | None = None
    if not problems:
        try:
            settings = load(environ)
        except ConfigError as exc:
            problems.append(str(exc))
    problems += diagnose.unknown_variables(environ)
    notes: list[str] = []
    if settings is not None:
        problems += _check_files(settings, notes)
        if connect:
            problems += _check_stores(settings, notes)
    for problem in problems:
        print(f"forwardauth: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    for note in notes:
        print(note)
    print("configuration OK")
    return 0


def _writable(path: Path) -> bool:
    """Whether ``path`` can be written, or created (its nearest existing parent written)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK | os.X_OK)


def _check_files(settings: Settings, notes: list[str]) -> list[str]:
    from forwardauth.core.policy import PolicyError
    from forwardauth.core.policyfile import load as load_policy
    from forwardauth.keys import KeyFileError, inspect, refusal

    problems = []
    if settings.policy_file is not None:
        try:
            policy = load_policy(settings.policy_file)
            notes.append(f"{PREFIX}POLICY_FILE: {len(policy.rules)} rule(s), default {policy.default.value}")
        except PolicyError as exc:
            problems.append(f"{PREFIX}POLICY_FILE: {exc}")
    if settings.signing_alg != "HS256":
        directory = settings.key_directory
        try:
            if directory.exists():
                os.listdir(directory)  # an unreadable folder looks empty to glob
            found = inspect(directory)  # reads only: no folder, lock or key is created here
            if found.problems:
                raise KeyFileError(refusal(found.problems))
            usable = [key for _, key in found.keys if key.alg == settings.signing_alg]
            if usable:
                notes.append(f"{PREFIX}KEYS_DIR: signing with {usable[-1].alg} key {usable[-1].kid}")
            elif _writable(directory):
                notes.append(f"{PREFIX}KEYS_DIR: no {settings.signing_alg} key yet; `serve` creates one in {directory}")
            else:
                raise PermissionError(13, "cannot be written to create the first key", str(directory))
        except (OSError, KeyFileError) as exc:
            problems.append(str(diagnose.keys_problem(settings, exc)))
    if settings.embedded and not _writable(settings.data_dir):
        problems.append(f"{PREFIX}DATA_DIR: {settings.data_dir} cannot be written (the embedded stores live there)")
    return problems


def _check_stores(settings: Settings, notes: list[str]) -> list[str]:
    problems = []
    if settings.database_url is None:
        notes.append(f"{PREFIX}DATABASE_URL: unset, `serve` starts an embedded PostgreSQL in {settings.data_dir}")
    else:
        problem = _check_database(settings.database_url)
        if problem:
            problems.append(problem)
        else:
            notes.append(f"{PREFIX}DATABASE_URL: PostgreSQL answers")
    if settings.redis_url is None:
        notes.append(f"{PREFIX}REDIS_URL: unset, `serve` starts an embedded Redis in {settings.data_dir}")
    else:
        problem = asyncio.run(_check_redis(settings.redis_url))
        if problem:
            problems.append(problem)
        else:
            notes.append(f"{PREFIX}REDIS_URL: Redis answers")
    return problems


def _first_line(exc: BaseException, secrets: tuple[str | None, ...]) -> str:
    """The error's first line, with anything secret blanked (drivers seldom, but may, repeat it)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, diagnose.MASK)
    return text


def _check_database(dsn: str) -> str | None:
    import psycopg2
    from psycopg2.extensions import parse_dsn

    try:
        psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg2.Error as exc:
        problem = diagnose.database_problem(exc, dsn)
        if problem is not None:
            return str(problem)
        try:
            password = parse_dsn(dsn).get("password")
        except psycopg2.Error:
            password = None
        return f"{PREFIX}DATABASE_URL: cannot connect: {_first_line(exc, (dsn, password))}"
    return None


async def _check_redis(url: str) -> str | None:
    from redis.exceptions import RedisError

    from forwardauth.redisurl import RedisSettings
    from forwardauth.stores.redis import close, connect

    redis = RedisSettings.from_url(url)
    secrets = (url, redis.password, urlsplit(url).password)
    client = connect(redis)
    try:
        await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT * 2)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"{PREFIX}REDIS_URL: cannot reach Redis: {_first_line(exc, secrets)}"
    finally:
        await close(client)
    return None
