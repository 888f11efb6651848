"""``forwardauth user add / list / modify / delete / mfa / consents``: the account commands an operator needs.

A new password meets the policy in :mod:`forwardauth.passwords` (checked before any store is
started, and again where it is stored). Removing a role or deleting a user ends the user's
sessions the way ``user revoke`` does, so a token minted with the old roles stops passing at
once instead of at its expiry. ``user mfa reset`` ends them too: whoever holds a lost factor may
have opened any of them. ``user consents NAME --revoke CLIENT`` ends the user's sessions with
that client too: the consent is what let it hold them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from forwardauth.accounts.changes import reset_second_factors, revoke_consent
from forwardauth.clisupport import CommandError, end_all_sessions, read_password, run_accounts, when, with_db
from forwardauth.config import Settings
from forwardauth.core.passwords import Passwords, check_policy
from forwardauth.core.usernames import normalise_username
from forwardauth.safetext import escape, row
from forwardauth.stores import consents, passkeys, secondfactors, totp, users
from forwardauth.stores.postgres import Connection


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> None:
    password = users.check_password(read_password(args))
    check_policy(password, settings.password_min_length, (args.name, args.email))  # before starting stores
    user = with_db(
        settings, users.create, Passwords.from_settings(settings), args.name, password, args.role, args.email
    )
    print(f"created user {escape(user.username)} ({user.id})")


def cmd_user_list(settings: Settings, args: argparse.Namespace) -> None:
    for user in with_db(settings, users.list_all):
        state = "disabled" if user.disabled else "enabled"
        print(row(user.username, state, ",".join(user.roles) or None, user.email))


def _role_edit(args: argparse.Namespace) -> Callable[[tuple[str, ...]], Sequence[str]] | None:
    """``current roles -> new roles`` from --role/--no-roles, --add-role and --remove-role; None: unchanged."""
    if args.role is None and not args.no_roles and not args.add_role and not args.remove_role:
        return None

    def edit(current: tuple[str, ...]) -> list[str]:
        base = [] if args.no_roles else list(args.role) if args.role is not None else list(current)
        return [r for r in [*base, *args.add_role] if r not in args.remove_role]

    return edit


def cmd_user_modify(settings: Settings, args: argparse.Namespace) -> None:
    """Change roles and/or e-mail; a removed role ends the user's sessions (tokens carry roles)."""
    edit = _role_edit(args)
    set_email = args.email is not None or args.no_email
    if edit is None and not set_email:
        raise CommandError(
            "nothing to change: give --role, --no-roles, --add-role, --remove-role, --email or --no-email"
        )
    before, after = with_db(settings, users.modify, args.name, edit, args.email, set_email)
    name = escape(after.username)
    print(f"modified {name}: roles {escape(','.join(after.roles)) or '-'}, e-mail {escape(after.email or '-')}")
    removed = set(before.roles) - set(after.roles)
    if removed:
        count = end_all_sessions(settings, after.username)
        print(f"revoked {count} session(s) of {name}: role(s) {escape(','.join(sorted(removed)))} removed")


def cmd_user_delete(settings: Settings, args: argparse.Namespace) -> None:
    """Disable (no new sign-in), end every session (as ``user revoke``), then delete the account."""
    user = with_db(settings, users.set_disabled, args.name, True)
    count = end_all_sessions(settings, user.username)
    with_db(settings, users.delete, user.username)
    print(f"deleted {escape(user.username)}; revoked {count} session(s)")


def _second_factors_of(
    conn: Connection, name: str
) -> tuple[users.User, secondfactors.Enrolled, list[passkeys.Passkey], bool]:
    """The user, what they enrolled, their passkeys, and whether an authenticator app is being set up."""
    user = users.find(conn, name)
    if user is None:
        raise users.UserError(f"no user {normalise_username(name)!r}")
    pending = totp.pending_secret(conn, user.id) is not None
    return user, secondfactors.enrolled(conn, user.id), passkeys.of_user(conn, user.id), pending


def _mfa_summary(settings: Settings, enrolled: secondfactors.Enrolled) -> str:
    if enrolled.any:
        return "second factor enrolled"
    if settings.second_factor == "off":
        return "no second factor (FORWARDAUTH_SECOND_FACTOR=off: none is asked)"
    if settings.second_factor == "required":
        return "no second factor: FORWARDAUTH_SECOND_FACTOR=required, one is enrolled at the next sign-in"
    return "no second factor: the password alone signs in (unless a rule asks for a second factor)"


def cmd_user_mfa(settings: Settings, args: argparse.Namespace) -> None:
    """``user mfa NAME`` shows what the user enrolled; ``user mfa reset NAME`` takes it all away."""
    if len(args.words) == 2 and args.words[0] == "reset":
        user, done = run_accounts(settings, lambda s: reset_second_factors(s, args.words[1]))
        print(
            f"reset the second factors of {escape(user.username)}: {done.removed} removed "
            f"(TOTP, passkeys, recovery codes); revoked {len(done.sids)} session(s)"
        )
        return
    if len(args.words) != 1:
        raise CommandError("usage: forwardauth user mfa NAME, or forwardauth user mfa reset NAME")
    user, enrolled, keys, pending = with_db(settings, _second_factors_of, args.words[0])
    print(f"{escape(user.username)}: {_mfa_summary(settings, enrolled)}")
    print(row("totp", "on" if enrolled.totp else "off" + (" (being set up)" if pending else "")))
    print(row("passkeys", len(keys)))
    for key in keys:
        kind = "synced" if key.backup_eligible else "device-bound"
        print(row("passkey", key.name, f"created {when(key.created_at)}", f"last used {when(key.last_used_at)}", kind))
    print(row("recovery codes", f"{enrolled.recovery_codes} left"))


def _consents_of(conn: Connection, name: str) -> tuple[users.User, list[consents.Consent]]:
    user = users.find(conn, name)
    if user is None:
        raise users.UserError(f"no user {normalise_username(name)!r}")
    return user, consents.of_user(conn, user.id)


def cmd_user_consents(settings: Settings, args: argparse.Namespace) -> None:
    """The OIDC clients the user let have scopes; with --revoke, forget one (and end its sessions)."""
    if args.revoke:
        user, had, count = run_accounts(settings, lambda s: revoke_consent(s, args.name, args.revoke))
        name, client = escape(user.username), escape(args.revoke)
        if not had:
            print(f"{name} had given no consent to {client}; revoked {count} session(s) of it")
            return
        print(f"revoked the consent of {name} to {client}; revoked {count} session(s) of it")
        return
    user, given = with_db(settings, _consents_of, args.name)
    if not given:
        print(f"{escape(user.username)} has given no consent")
    for consent in given:
        print(row(consent.client_id, " ".join(consent.scopes), f"granted {when(consent.granted_at)}"))


def add_commands(group: Any) -> None:
    """Register ``user add``, ``list``, ``modify``, ``delete`` and ``mfa`` on the ``user`` subcommand group."""
    add = group.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", action="append", default=[], help="repeat for several roles")
    add.add_argument("--email")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(run=cmd_user_add)
    group.add_parser("list", help="list users").set_defaults(run=cmd_user_list)

    modify = group.add_parser("modify", help="change a user's roles or e-mail (removing a role ends its sessions)")
    modify.add_argument("name")
    roles = modify.add_mutually_exclusive_group()
    roles.add_argument("--role", action="append", help="the user's roles from now on; repeat for several")
    roles.add_argument("--no-roles", action="store_true", help="remove every role")
    modify.add_argument("--add-role", action="append", default=[], help="add a role; repeat")
    modify.add_argument("--remove-role", action="append", default=[], help="remove a role; repeat")
    email = modify.add_mutually_exclusive_group()
    email.add_argument("--email", help="new e-mail address")
    email.add_argument("--no-email", action="store_true", help="remove the e-mail address")
    modify.set_defaults(run=cmd_user_modify)

    delete = group.add_parser("delete", help="end a user's sessions and delete the account")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_user_delete)

    mfa = group.add_parser(
        "mfa",
        usage="forwardauth user mfa [reset] NAME",
        help="show a user's second factors; with reset, remove them all and end the user's sessions",
        description="NAME: show the user's TOTP, passkeys and recovery codes. reset NAME: remove them all "
        "(for a user who lost them, or an account taken over), end every session of the user, audited mfa_reset.",
    )
    mfa.add_argument("words", nargs="+", metavar="[reset] NAME")
    mfa.set_defaults(run=cmd_user_mfa)

    given = group.add_parser(
        "consents", help="list the OIDC clients a user consented to; --revoke CLIENT forgets one and ends its sessions"
    )
    given.add_argument("name")
    given.add_argument(
        "--revoke", metavar="CLIENT", help="forget the consent to CLIENT and end the user's sessions with it"
    )
    given.set_defaults(run=cmd_user_consents)
