"""``forwardauth client add / list / modify / disable / enable / rotate-secret``: OAuth2 and
OpenID Connect clients.

A client's secret is shown once, at ``add`` (or ``rotate-secret``). An OIDC client registers its
redirect URIs (matched exactly), optionally where RP-initiated logout may send the browser back
and a back-channel logout URI; ``--trusted`` marks a first-party app, which gets no consent page.
"""

from __future__ import annotations

import argparse
from typing import Any

from forwardauth.accounts.changes import set_client_disabled
from forwardauth.clisupport import CommandError, run_accounts, with_db
from forwardauth.config import Settings
from forwardauth.safetext import escape, row
from forwardauth.stores import clients


def cmd_client_add(settings: Settings, args: argparse.Namespace) -> None:
    client, secret = with_db(
        settings,
        clients.create,
        args.client_id,
        args.grant,
        args.scope,
        args.role,
        args.public,
        args.resource_server,
        redirect_uris=args.redirect_uri,
        post_logout_redirect_uris=args.post_logout_redirect_uri,
        trusted=args.trusted,
        backchannel_logout_uri=args.backchannel_logout_uri,
    )
    print(f"created client {client.id} (grants: {', '.join(client.grant_types)})")
    for uri in client.redirect_uris:
        print(f"redirect URI: {escape(uri)}")
    if secret:
        print(f"client secret (shown once): {secret}")


def _flags(client: clients.Client) -> str | None:
    flags = [name for name, on in (("resource-server", client.resource_server), ("trusted", client.trusted)) if on]
    return ",".join(flags) or None


def cmd_client_list(settings: Settings, args: argparse.Namespace) -> None:
    """One line per client; an OIDC client's URIs follow on lines of their own, indented."""
    for client in with_db(settings, clients.list_all):
        kind = "public" if client.public else "confidential"
        state = "disabled" if client.disabled else "enabled"
        print(
            row(client.id, kind, state, ",".join(client.grant_types), " ".join(client.scopes) or None, _flags(client))
        )
        for label, uris in (
            ("redirect-uri", client.redirect_uris),
            ("post-logout-redirect-uri", client.post_logout_redirect_uris),
            ("backchannel-logout-uri", (client.backchannel_logout_uri,) if client.backchannel_logout_uri else ()),
        ):
            for uri in uris:
                print(row("", label, uri))


def cmd_client_modify(settings: Settings, args: argparse.Namespace) -> None:
    """Change an OIDC client's URIs, scopes or trust; what is not given stays."""
    changes: dict[str, Any] = {}
    if args.redirect_uri:
        changes["redirect_uris"] = args.redirect_uri
    if args.post_logout_redirect_uri or args.no_post_logout_redirect_uri:
        changes["post_logout_redirect_uris"] = args.post_logout_redirect_uri or []
    if args.backchannel_logout_uri or args.no_backchannel_logout_uri:
        changes["backchannel_logout_uri"] = args.backchannel_logout_uri or ""
    if args.scope:
        changes["scopes"] = args.scope
    if args.trusted is not None:
        changes["trusted"] = args.trusted
    if not changes:
        raise CommandError(
            "nothing to change: give --redirect-uri, --post-logout-redirect-uri, --backchannel-logout-uri, "
            "--scope, --trusted or --untrusted (or a --no-... option)"
        )
    client = with_db(settings, clients.modify, args.client_id, **changes)
    print(f"modified client {client.id}")


def cmd_client_disable(settings: Settings, args: argparse.Namespace) -> None:
    """Disable revokes every token of the client at once; enable brings none of them back."""
    client, count = run_accounts(settings, lambda s: set_client_disabled(s, args.client_id, not args.enable))
    print(f"enabled {client.id}" if args.enable else f"disabled {client.id}; revoked {count} access token(s)")


def cmd_client_rotate(settings: Settings, args: argparse.Namespace) -> None:
    secret = with_db(settings, clients.rotate_secret, args.client_id)
    print(f"new client secret for {args.client_id} (shown once): {secret}")


def _uri_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="where authorization responses may go (exact match; https, or http for localhost); repeat",
    )
    command.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="where RP-initiated logout may send the browser back; repeat",
    )
    command.add_argument(
        "--backchannel-logout-uri", metavar="URI", help="told (OIDC Back-Channel Logout) when a session ends"
    )


def add_commands(group: Any) -> None:
    """Register the ``client`` subcommands on ``group``."""
    add = group.add_parser("add", help="register a client (its secret is shown once)")
    add.add_argument("client_id")
    add.add_argument(
        "--grant",
        action="append",
        default=[],
        choices=clients.GRANT_TYPES,
        help="allowed grant type; repeat (default authorization_code with --redirect-uri, else client_credentials)",
    )
    add.add_argument("--scope", action="append", default=[], help="allowed scope; repeat (OIDC: openid, profile...)")
    add.add_argument("--role", action="append", default=[], help="roles of its client_credentials tokens")
    add.add_argument("--public", action="store_true", help="no secret (password, refresh_token, authorization_code)")
    add.add_argument(
        "--resource-server", action="store_true", help="may introspect access tokens issued to other clients"
    )
    add.add_argument("--trusted", action="store_true", help="a first-party app: no consent page")
    _uri_options(add)
    add.set_defaults(run=cmd_client_add)

    group.add_parser("list", help="list clients").set_defaults(run=cmd_client_list)

    modify = group.add_parser("modify", help="change a client's URIs, scopes or trust (each given list replaces)")
    modify.add_argument("client_id")
    modify.add_argument("--scope", action="append", default=[], help="allowed scopes from now on; repeat")
    trust = modify.add_mutually_exclusive_group()
    trust.add_argument("--trusted", action="store_true", default=None, help="no consent page")
    trust.add_argument("--untrusted", dest="trusted", action="store_false", help="the consent page again")
    _uri_options(modify)
    modify.add_argument("--no-post-logout-redirect-uri", action="store_true", help="remove them all")
    modify.add_argument("--no-backchannel-logout-uri", action="store_true", help="remove it")
    modify.set_defaults(run=cmd_client_modify, trusted=None)

    for name, enable, text in (("disable", False, "disable a client"), ("enable", True, "enable a client")):
        command = group.add_parser(name, help=text)
        command.add_argument("client_id")
        command.set_defaults(run=cmd_client_disable, enable=enable)
    rotate = group.add_parser("rotate-secret", help="replace a client's secret")
    rotate.add_argument("client_id")
    rotate.set_defaults(run=cmd_client_rotate)
