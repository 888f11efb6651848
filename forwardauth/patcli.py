"""``forwardauth token add / list / revoke / sync``: personal access tokens from the command line.

For scripts, git and WebDAV, and for an administrator making tokens for service users. A token is
shown once, at ``add``; only its SHA-256 is kept. ``sync`` writes every live token to Redis again
from PostgreSQL: after Redis lost its data (a restart without persistence), tokens fail on /auth
until it runs (``serve`` runs it once at start too).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from forwardauth.accounts import pats
from forwardauth.accounts.services import AccountServices
from forwardauth.clisupport import CommandError, run_accounts, when
from forwardauth.config import Settings
from forwardauth.configparse import parse_duration
from forwardauth.safetext import escape, row

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[AccountServices], Awaitable[T]]) -> T:
    """``run_accounts``, a refusal of the token's own (``PatError``) reported as one line too."""
    try:
        return run_accounts(settings, action)
    except pats.PatError as exc:
        raise CommandError(str(exc)) from None


def cmd_token_add(settings: Settings, args: argparse.Namespace) -> None:
    try:
        ttl = parse_duration(args.expires)
    except ValueError as exc:
        raise CommandError(f"--expires: {exc}") from None
    info, token = _run(settings, lambda s: pats.create(s, args.user, args.name, args.scope, ttl, "cli"))
    scopes, expires = " ".join(info.scopes) or "(none)", when(info.expires_at)
    print(f"created token {info.id} ({escape(info.name)}) for {escape(args.user)}: scopes {scopes}, expires {expires}")
    print(f"token (shown once): {token}")


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> None:
    """One line per token: id, name, state, scopes, expiry, last use (and from where)."""
    tokens = _run(settings, lambda s: pats.list_for(s, args.user))
    if not tokens:
        print(f"{escape(args.user)} has no token")
    now = dt.datetime.now(dt.UTC)
    for info in tokens:
        used = when(info.last_used_at) + (f" from {info.last_used_ip}" if info.last_used_ip else "")
        print(
            row(
                info.id,
                info.name,
                info.state(now),
                " ".join(info.scopes) or None,
                f"expires {when(info.expires_at)}",
                f"last used {used}",
            )
        )


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Revoked at once on every worker (the revocation channel)."""
    if not _run(settings, lambda s: pats.revoke(s, args.user, args.token_id, "cli")):
        raise CommandError(f"{args.user} has no token {args.token_id}")
    print(f"revoked token {escape(args.token_id)} of {escape(args.user)}")


def cmd_token_sync(settings: Settings, args: argparse.Namespace) -> None:
    count = _run(settings, pats.sync)
    print(f"wrote {count} live token(s) to Redis")


def add_commands(group: Any) -> None:
    """Register the ``token`` subcommands on ``group``."""
    add = group.add_parser("add", help="make a personal access token for a user (shown once)")
    add.add_argument("user")
    add.add_argument("--name", required=True, help="what it is for (unique among the user's live tokens)")
    add.add_argument(
        "--expires", required=True, metavar="DURATION", help="lifetime: 90d, 12h... (at most FORWARDAUTH_PAT_MAX_TTL)"
    )
    add.add_argument("--scope", action="append", default=[], help="a scope the rules may require; repeat")
    add.set_defaults(run=cmd_token_add)

    listing = group.add_parser("list", help="list a user's tokens (never the tokens themselves)")
    listing.add_argument("user")
    listing.set_defaults(run=cmd_token_list)

    revoke = group.add_parser("revoke", help="revoke a user's token (every worker refuses it at once)")
    revoke.add_argument("user")
    revoke.add_argument("token_id")
    revoke.set_defaults(run=cmd_token_revoke)

    group.add_parser("sync", help="write every live token to Redis again (after Redis lost data)").set_defaults(
        run=cmd_token_sync
    )
