"""The ``forwardauth`` command: serve, migrate, users and keys.

Every command reads the same settings as the server; with no store URLs configured it starts
the embedded stores for its own duration. Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forwardauth import __version__, configcli, doctor
from forwardauth.accounts.changes import change_password, set_user_disabled
from forwardauth.clientcli import add_commands as add_client_commands  # client add, list, modify...
from forwardauth.clisupport import (
    CommandError,
    database,
    demo_user,
    end_all_sessions,
    read_password,
    run_accounts,
    with_db,
)
from forwardauth.config import ConfigError, Settings, load
from forwardauth.core.passwords import WeakPassword
from forwardauth.core.policy import PolicyError, Subject
from forwardauth.core.policyfile import load as load_policy
from forwardauth.core.usernames import normalise_username
from forwardauth.dev import embedded
from forwardauth.diagnose import database_problem
from forwardauth.keycmds import cmd_keys_list, cmd_keys_prune, cmd_keys_rotate, cmd_keys_rotate_sealing
from forwardauth.keys import KeyFileError
from forwardauth.patcli import add_commands as add_token_commands  # token add, list, revoke, sync
from forwardauth.ports import PortInUse
from forwardauth.runcli import DemoError, cmd_demo, cmd_serve
from forwardauth.safetext import escape
from forwardauth.stores import audit, clients, migrations, users
from forwardauth.stores.postgres import POSTGRES_DOWN
from forwardauth.usercli import add_commands  # user add, list, modify, delete, mfa

FOLLOW_SECONDS = 1.0  # how often `audit tail --follow` looks for new events


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """``serve`` options as variables, so derived defaults (issuer, login URL) follow them."""
    if args.command != "serve":
        return {}
    options = {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers}
    return {f"FORWARDAUTH_{k}": str(v) for k, v in options.items() if v is not None}


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    with embedded.stores(settings, need_redis=False) as ready:
        assert ready.database_url is not None
        applied = migrations.migrate(ready.database_url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> None:
    """Disable the account and end its sessions: its tokens stop working at once."""
    user, count = run_accounts(settings, lambda s: set_user_disabled(s, args.name, True))
    print(f"disabled {user.username}; revoked {count} session(s)")


def cmd_user_enable(settings: Settings, args: argparse.Namespace) -> None:
    user = with_db(settings, users.set_disabled, args.name, False)
    print(f"enabled {user.username}")


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> None:
    """Set the password and end every session of the user: old tokens stop working at once."""
    password = read_password(args)
    user, count = run_accounts(settings, lambda s: change_password(s, args.name, password))
    print(f"password changed for {user.username}; revoked {count} session(s)")


def cmd_user_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Log a user out everywhere: every refresh token and live access token stops working."""
    count = end_all_sessions(settings, args.name)
    print(f"revoked {count} session(s) of {normalise_username(args.name)}")


def cmd_user_demo(settings: Settings, args: argparse.Namespace) -> None:
    print(demo_user(settings))


def cmd_policy_check(settings: Settings, args: argparse.Namespace) -> None:
    policy = load_policy(Path(args.file))
    print(f"{policy.source}: {len(policy.rules)} rule(s), default {policy.default.value}: OK")


def cmd_policy_explain(settings: Settings, args: argparse.Namespace) -> None:
    """Which rule decides a request, and what the answer is."""
    source = Path(args.file) if args.file else settings.policy_file
    if source is None:
        raise CommandError("give --file or set FORWARDAUTH_POLICY_FILE")
    from forwardauth.core.explain import explain

    policy = load_policy(source)
    roles = tuple(r for r in (args.roles or "").split(",") if r)
    subject = None
    if args.client:  # a client's own token (client_credentials): matched by clients only
        if args.roles:
            raise CommandError("--roles is for a user: a client's roles are its own")
        subject = Subject("", (), args.ip, client=args.client)
    elif args.user:  # the user's real roles, unless --roles says otherwise
        name = normalise_username(args.user)
        user = with_db(settings, users.find, name)
        if user is None:
            print(
                f"subject: no user {name!r} in the database; "
                + (f"roles {','.join(roles)} (from --roles)" if roles else "no roles assumed")
            )
        else:
            print(
                f"subject: {user.username}, roles {','.join(roles or user.roles) or '(none)'} "
                f"({'from --roles' if roles else 'from the database'})"
                + ("; the account is disabled: its tokens are refused anyway" if user.disabled else "")
            )
            roles = roles or user.roles
        subject = Subject(name, roles, args.ip)
    elif roles:
        subject = Subject("", roles, args.ip)
    if args.amr:  # how the user signed in, for rules with second_factor / max_auth_age
        from dataclasses import replace

        from forwardauth.configparse import parse_duration
        from forwardauth.core.authn import Authentication

        if subject is None or subject.client is not None:
            raise CommandError("--amr is for a signed-in user (--user or --roles)")
        try:
            age = parse_duration(args.auth_age or "0")
            subject = replace(subject, auth=Authentication.of(args.amr.split(","), int(time.time()) - age))
        except ValueError as exc:
            raise CommandError(f"--amr / --auth-age: {exc}") from None
    subject = _with_token(subject, args.token_type, tuple(args.scope or ()))
    for line in explain(policy, args.scheme.lower(), args.host, args.path, args.method.upper(), args.ip, subject):
        print(line)


def _with_token(subject: Subject | None, token_type: str | None, scopes: tuple[str, ...]) -> Subject | None:
    """``policy explain``'s subject holding a token of ``token_type`` with ``scopes``: a user's is a
    session's unless said otherwise, a client's own always a client's; only PATs and client
    tokens carry scopes."""
    from dataclasses import replace

    from forwardauth.core.policy import CLIENT, SESSION

    if subject is None:
        if token_type or scopes:
            raise CommandError("--token-type and --scope describe a token: give --user, --roles or --client")
        return None
    kind = CLIENT if subject.client is not None else token_type or SESSION
    if token_type and token_type != kind:
        raise CommandError("--token-type: a client's own token is a client token")
    if scopes and kind == SESSION:
        raise CommandError("--scope: a session's token has no scopes (--token-type pat or client)")
    return replace(subject, token_type=kind, scopes=scopes)


def cmd_audit_tail(settings: Settings, args: argparse.Namespace) -> None:
    """Print the last N audit events, oldest first; with --follow, then each new one as it comes."""
    if args.lines < 0:
        raise CommandError("-n must not be negative")
    if args.follow:  # stopped by Ctrl-C or SIGTERM, the embedded database with it
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    with database(settings) as db:
        events = db.call(audit.recent, args.lines)
        for event in events:
            print(event.line(), flush=True)
        last = events[-1].id if events else db.call(audit.latest_id)
        while args.follow:
            time.sleep(FOLLOW_SECONDS)
            for event in db.call(audit.after, last):
                print(event.line(), flush=True)
                last = event.id


def _command(
    group: Any,
    name: str,
    help: str,
    run: Callable[[Settings, argparse.Namespace], None],
    *positional: str,
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
    top.add_argument("--version", action="version", version=f"forwardauth {__version__}")
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
    configcli.add_parser(sub)
    doctor.add_parser(sub)

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
    who.add_argument("--user", help="a signed-in user (their roles are read from the database)")
    explain.add_argument("--roles", help="a signed-in user's roles, comma-separated (with --user: instead of theirs)")
    who.add_argument("--client", help="a client with a client_credentials token")
    explain.add_argument("--amr", help="how the user signed in, comma-separated (pwd, otp, kba, hwk, swk, user)")
    explain.add_argument("--auth-age", help="with --amr: how long ago they signed in (900, 15m; default 0)")
    explain.add_argument(
        "--token-type",
        choices=("session", "pat", "client"),
        help="the kind of token (default: session; client for --client)",
    )
    explain.add_argument(
        "--scope", action="append", help="a scope the token carries (repeatable; pat or client tokens)"
    )
    explain.set_defaults(run=cmd_policy_explain)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)

    add_commands(user)
    _command(user, "disable", "disable a user and end its sessions", cmd_user_disable, "name")
    _command(user, "enable", "enable a user", cmd_user_enable, "name")
    passwd = _command(user, "passwd", "set a user's password", cmd_user_passwd, "name")
    passwd.add_argument("--password-stdin", action="store_true")
    _command(user, "demo", "create the demo user if missing", cmd_user_demo)
    _command(user, "revoke", "log a user out everywhere (all tokens stop working)", cmd_user_revoke, "name")

    client = sub.add_parser("client", help="manage OAuth2 and OpenID Connect clients")
    add_client_commands(client.add_subparsers(dest="action", required=True))

    token = sub.add_parser("token", help="manage personal access tokens (for scripts, git, WebDAV)")
    add_token_commands(token.add_subparsers(dest="action", required=True))

    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("list", help="list keys").set_defaults(run=cmd_keys_list)
    keys.add_parser("rotate", help="add a new signing key").set_defaults(run=cmd_keys_rotate)
    keys.add_parser("prune", help="remove keys no live token can need").set_defaults(run=cmd_keys_prune)
    keys.add_parser(
        "rotate-sealing", help="add a sealing key for the TOTP secrets and re-seal every secret with it"
    ).set_defaults(run=cmd_keys_rotate_sealing)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "config":
        return configcli.run(args, os.environ)
    if args.command == "doctor":  # asks a running stack: needs no settings of its own
        return doctor.run(args, os.environ)
    try:
        settings = load({**os.environ, **_overrides(args)})
        if args.command != "serve":  # serve logs them
            configcli.warn_unknown(os.environ)
        args.run(settings, args)
    except ConfigError as exc:
        print(f"forwardauth: configuration error: {exc}", file=sys.stderr)
        return 2
    except (PortInUse, DemoError) as exc:
        print(f"forwardauth: {exc}", file=sys.stderr)
        return 1
    except (CommandError, users.UserError, clients.ClientError, KeyFileError, PolicyError, WeakPassword) as exc:
        print(f"forwardauth: {escape(str(exc))}", file=sys.stderr)
        return 1
    except POSTGRES_DOWN as exc:
        if problem := database_problem(exc, os.environ.get("FORWARDAUTH_DATABASE_URL", "")):
            print(f"forwardauth: configuration error: {problem}", file=sys.stderr)
            return 2
        print(f"forwardauth: PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # how serve and demo are stopped from a terminal; aborts the others
        return 0 if args.command in ("serve", "demo") else 130
    return 0
