"""The ``forwardauth`` command: serve, migrate, users and keys.

Every command reads the same settings as the server; with no store URLs configured it starts
the embedded stores for its own duration. Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import audit, clients, embedded, migrations, users
from .config import ConfigError, Settings, describe, load
from .connections import POSTGRES_DOWN, Database
from .keys import RELOAD_SECONDS, KeyFileError, key_files, load_ring, prune, rotate
from .passwords import Passwords
from .policy import Effect, Object, PolicyError, Subject, decide
from .policy import load as load_policy

DEMO_USER = "demo"
FOLLOW_SECONDS = 1.0  # how often `audit tail --follow` looks for new events


class CommandError(Exception):
    """Reported as ``forwardauth: <message>`` with exit status 1."""


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise CommandError("passwords do not match")
    return first


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    """The database (the embedded one started if need be), on up-to-date tables."""
    with embedded.stores(settings, need_redis=False) as ready:
        assert ready.database_url is not None
        migrations.migrate(ready.database_url)
        db = Database(ready.database_url, 1)
        try:
            yield db
        finally:
            db.close()


def _with_db(settings: Settings, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(conn, *args)`` in one transaction, on up-to-date tables."""
    with _database(settings) as db:
        return db.call(fn, *args)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from .server import serve  # imported here: the other commands need no event loop

    serve(settings)


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """``serve`` options as variables, so derived defaults (issuer, login URL) follow them."""
    if args.command != "serve":
        return {}
    options = {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers}
    return {f"FORWARDAUTH_{k}": str(v) for k, v in options.items() if v is not None}


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from .demo import PROXIES, default_proxy, run_stack

    proxy = args.proxy or default_proxy()
    if proxy not in PROXIES:
        raise CommandError(f"--proxy must be one of {', '.join(PROXIES)}")
    run_stack(args.port or 8080, proxy, settings.data_dir.resolve() / "demo")


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    with embedded.stores(settings, need_redis=False) as ready:
        assert ready.database_url is not None
        applied = migrations.migrate(ready.database_url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> None:
    password = _read_password(args)
    user = _with_db(settings, users.create, Passwords.from_settings(settings), args.name, password,
                    args.role, args.email)
    print(f"created user {user.username} ({user.id})")


def cmd_user_list(settings: Settings, args: argparse.Namespace) -> None:
    for user in _with_db(settings, users.list_all):
        state = "disabled" if user.disabled else "enabled"
        print(f"{user.username}\t{state}\t{','.join(user.roles) or '-'}\t{user.email or '-'}")


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> None:
    """Disable the account and end its sessions: its tokens stop working at once."""
    user = _with_db(settings, users.set_disabled, args.name, True)
    count = _end_all_sessions(settings, user.username)
    print(f"disabled {user.username}; revoked {count} session(s)")


def cmd_user_enable(settings: Settings, args: argparse.Namespace) -> None:
    user = _with_db(settings, users.set_disabled, args.name, False)
    print(f"enabled {user.username}")


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> None:
    password = _read_password(args)
    user = _with_db(settings, users.set_password, Passwords.from_settings(settings), args.name, password)
    print(f"password changed for {user.username}")


def _end_all_sessions(settings: Settings, name: str) -> int:
    """Revoke every session of user ``name`` in PostgreSQL and Redis; how many there were."""
    import asyncio

    from .oauth import end_all_sessions
    from .web import build_services

    async def run(ready: Settings) -> int:
        services = build_services(ready)
        try:
            user = await services.db.run(users.find, name)
            if user is None:
                raise users.UserError(f"no user {users.normalise_username(name)!r}")
            return await end_all_sessions(services, user.id, None)
        finally:
            await services.revocations.close()
            services.db.close()

    with embedded.stores(settings) as ready:
        assert ready.database_url is not None
        migrations.migrate(ready.database_url)
        return asyncio.run(run(ready))


def cmd_user_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Log a user out everywhere: every refresh token and live access token stops working."""
    count = _end_all_sessions(settings, args.name)
    print(f"revoked {count} session(s) of {users.normalise_username(args.name)}")


def cmd_client_add(settings: Settings, args: argparse.Namespace) -> None:
    client, secret = _with_db(settings, clients.create, args.client_id, args.grant, args.scope, args.role,
                              args.public)
    print(f"created client {client.id} (grants: {', '.join(client.grant_types)})")
    if secret:
        print(f"client secret (shown once): {secret}")


def cmd_client_list(settings: Settings, args: argparse.Namespace) -> None:
    for client in _with_db(settings, clients.list_all):
        kind = "public" if client.public else "confidential"
        state = "disabled" if client.disabled else "enabled"
        print(f"{client.id}\t{kind}\t{state}\t{','.join(client.grant_types)}\t{' '.join(client.scopes) or '-'}")


def cmd_client_disable(settings: Settings, args: argparse.Namespace) -> None:
    _with_db(settings, clients.set_disabled, args.client_id, not args.enable)
    print(f"{'enabled' if args.enable else 'disabled'} {args.client_id}")


def cmd_client_rotate(settings: Settings, args: argparse.Namespace) -> None:
    secret = _with_db(settings, clients.rotate_secret, args.client_id)
    print(f"new client secret for {args.client_id} (shown once): {secret}")


def _ensure_demo(conn: users.Connection, passwords: Passwords, password: str) -> bool:
    if users.find(conn, DEMO_USER) is not None:
        return False
    users.create(conn, passwords, DEMO_USER, password, ["user"], "demo@example.com")
    return True


def cmd_user_demo(settings: Settings, args: argparse.Namespace) -> None:
    """Create the demo user once; its password comes from the environment or is printed once."""
    given = os.environ.get("FORWARDAUTH_DEMO_PASSWORD")
    password = given or secrets.token_urlsafe(12)
    if _with_db(settings, _ensure_demo, Passwords.from_settings(settings), password):
        shown = "(from FORWARDAUTH_DEMO_PASSWORD)" if given else password
        print(f"demo user created: username {DEMO_USER}, password {shown}")
    else:
        print(f"demo user {DEMO_USER!r} exists (its password was shown when it was created)")


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    ring = load_ring(settings, create=False)
    for key in ring.by_kid.values():
        mark = "signing" if key is ring.current else "verify-only"
        print(f"{key.kid}\t{key.alg}\t{mark}")
    if settings.signing_alg != "HS256":
        print(f"({len(key_files(settings.key_directory))} key file(s) in {settings.key_directory})")


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    if settings.signing_alg == "HS256":
        raise CommandError("HS256 keys are rotated by changing FORWARDAUTH_HMAC_SECRET")
    key = rotate(settings.key_directory, settings.signing_alg)
    print(f"new signing key {key.kid}; running workers sign with it within {RELOAD_SECONDS:.0f} s")


def retire_after(settings: Settings) -> float:
    """How long a replaced key must stay: until every token it signed has expired."""
    return settings.access_ttl + settings.leeway + 2 * RELOAD_SECONDS


def cmd_keys_prune(settings: Settings, args: argparse.Namespace) -> None:
    if settings.signing_alg == "HS256":
        raise CommandError("there are no key files with HS256")
    removed = prune(settings.key_directory, settings.signing_alg, retire_after(settings))
    for path in removed:
        print(f"removed {path.name}")
    print(f"{len(removed)} key(s) removed; keys replaced less than {retire_after(settings):.0f} s ago are kept")


def cmd_policy_check(settings: Settings, args: argparse.Namespace) -> None:
    policy = load_policy(Path(args.file))
    print(f"{policy.source}: {len(policy.rules)} rule(s), default {policy.default.value}: OK")


def cmd_policy_explain(settings: Settings, args: argparse.Namespace) -> None:
    """Which rule decides a request, and what the answer is."""
    source = Path(args.file) if args.file else settings.policy_file
    if source is None:
        raise CommandError("give --file or set FORWARDAUTH_POLICY_FILE")
    policy = load_policy(source)
    obj = Object.of(args.scheme, args.host, args.path, args.method)
    rule = policy.match(obj, args.ip)
    subject = None
    if args.user or args.roles:
        roles = tuple(r for r in (args.roles or "").split(",") if r)
        subject = Subject(users.normalise_username(args.user or ""), roles, args.ip)
    outcome = decide(rule, subject)
    where = f"rule {rule.number}" if rule.number else "the default"
    print(f"{obj.method} {obj.scheme}://{obj.host}{obj.path}: {where} ({rule.effect.value})")
    if outcome is None:
        print("decision: allow (200)")
    elif outcome is Effect.DENY:
        print("decision: deny (403)")
    else:
        print("decision: a valid token is needed (401 / login)")


def cmd_audit_tail(settings: Settings, args: argparse.Namespace) -> None:
    """Print the last N audit events, oldest first; with --follow, then each new one as it comes."""
    if args.lines < 0:
        raise CommandError("-n must not be negative")
    if args.follow:  # stopped by Ctrl-C or SIGTERM, the embedded database with it
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    with _database(settings) as db:
        events = db.call(audit.recent, args.lines)
        for event in events:
            print(event.line(), flush=True)
        last = events[-1].id if events else db.call(audit.latest_id)
        while args.follow:
            time.sleep(FOLLOW_SECONDS)
            for event in db.call(audit.after, last):
                print(event.line(), flush=True)
                last = event.id


def cmd_config(settings: Settings, args: argparse.Namespace) -> None:
    for env, default, meaning in describe():
        print(f"{env}\t{default}\t{meaning}")


def _command(
    group: Any, name: str, help: str, run: Callable[[Settings, argparse.Namespace], None], *positional: str,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """A subcommand taking ``positional`` arguments, run by ``run``."""
    command: argparse.ArgumentParser = group.add_parser(name, help=help)
    for argument in positional:
        command.add_argument(argument)
    command.set_defaults(run=run, **defaults)
    return command


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="forwardauth", description="Forward-auth service for reverse proxies.")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(run=cmd_serve)

    demo = sub.add_parser("demo", help="run a proxy, a demo app and forwardauth together (make run)")
    demo.add_argument("--port", type=int, help="where the proxy listens (8080)")
    demo.add_argument("--proxy", help="nginx, traefik or caddy (default: nginx when installed)")
    demo.set_defaults(run=cmd_demo)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=cmd_migrate)
    sub.add_parser("config", help="list the configuration variables").set_defaults(run=cmd_config)

    audit_commands = sub.add_parser("audit", help="read the audit trail").add_subparsers(dest="action", required=True)
    tail = audit_commands.add_parser("tail", help="print recent audit events (oldest first)")
    tail.add_argument("-n", dest="lines", type=int, default=10, help="how many (default 10)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    tail.set_defaults(run=cmd_audit_tail)

    policy = sub.add_parser("policy", help="check access rules").add_subparsers(dest="action", required=True)
    check = policy.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(run=cmd_policy_check)
    explain = policy.add_parser("explain", help="show which rule decides a request")
    explain.add_argument("--file", help="policy file (default FORWARDAUTH_POLICY_FILE)")
    explain.add_argument("--host", required=True)
    explain.add_argument("--path", required=True)
    explain.add_argument("--method", default="GET")
    explain.add_argument("--scheme", default="https")
    explain.add_argument("--ip", help="client address, for network rules")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--user", help="a signed-in user")
    who.add_argument("--roles", help="a signed-in user's roles, comma-separated")
    explain.set_defaults(run=cmd_policy_explain)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", action="append", default=[], help="repeat for several roles")
    add.add_argument("--email")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(run=cmd_user_add)
    _command(user, "list", "list users", cmd_user_list)
    _command(user, "disable", "disable a user and end its sessions", cmd_user_disable, "name")
    _command(user, "enable", "enable a user", cmd_user_enable, "name")
    passwd = _command(user, "passwd", "set a user's password", cmd_user_passwd, "name")
    passwd.add_argument("--password-stdin", action="store_true")
    _command(user, "demo", "create the demo user if missing", cmd_user_demo)
    _command(user, "revoke", "log a user out everywhere (all tokens stop working)", cmd_user_revoke, "name")

    client = sub.add_parser("client", help="manage OAuth2 clients").add_subparsers(dest="action", required=True)
    client_add = client.add_parser("add", help="register a client (its secret is shown once)")
    client_add.add_argument("client_id")
    client_add.add_argument("--grant", action="append", default=[], choices=clients.GRANT_TYPES,
                            help="allowed grant type; repeat (default client_credentials)")
    client_add.add_argument("--scope", action="append", default=[], help="allowed scope; repeat")
    client_add.add_argument("--role", action="append", default=[], help="roles of its client_credentials tokens")
    client_add.add_argument("--public", action="store_true", help="no secret (password/refresh_token only)")
    client_add.set_defaults(run=cmd_client_add)
    _command(client, "list", "list clients", cmd_client_list)
    _command(client, "disable", "disable a client", cmd_client_disable, "client_id", enable=False)
    _command(client, "enable", "enable a client", cmd_client_disable, "client_id", enable=True)
    _command(client, "rotate-secret", "replace a client's secret", cmd_client_rotate, "client_id")

    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("list", help="list keys").set_defaults(run=cmd_keys_list)
    keys.add_parser("rotate", help="add a new signing key").set_defaults(run=cmd_keys_rotate)
    keys.add_parser("prune", help="remove keys no live token can need").set_defaults(run=cmd_keys_prune)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load({**os.environ, **_overrides(args)})
        args.run(settings, args)
    except ConfigError as exc:
        print(f"forwardauth: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, users.UserError, clients.ClientError, KeyFileError, PolicyError) as exc:
        print(f"forwardauth: {exc}", file=sys.stderr)
        return 1
    except POSTGRES_DOWN as exc:
        print(f"forwardauth: PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
