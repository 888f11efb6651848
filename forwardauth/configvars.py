"""Every ``FORWARDAUTH_*`` variable: its parser, its default as the README shows it, and what it
means (the README's table and ``forwardauth config`` are this list). Read by ``config.load``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwardauth.configparse import (
    parse_accent_color,
    parse_algorithm,
    parse_bool,
    parse_claim_headers,
    parse_database_url,
    parse_domains,
    parse_duration,
    parse_email_address,
    parse_header_name,
    parse_header_preset,
    parse_log_format,
    parse_log_level,
    parse_login_url,
    parse_logo_url,
    parse_networks,
    parse_optional_header_name,
    parse_password_min_length,
    parse_port,
    parse_positive_int,
    parse_redis_url,
    parse_role,
    parse_rp_id,
    parse_second_factor,
    parse_site_name,
    parse_smtp_url,
    parse_url,
)

PREFIX = "FORWARDAUTH_"


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    parse: Callable[[str], Any]
    default: str
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return PREFIX + self.name.upper()


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "database_url",
        parse_database_url,
        "(embedded)",
        "PostgreSQL URL. Unset: start an embedded PostgreSQL under the data folder.",
        secret=True,
    ),
    Variable(
        "redis_url",
        parse_redis_url,
        "(embedded)",
        "Redis URL: redis://, rediss://, unix://, redis+sentinel://H:P,H:P/MASTER/DB or "
        "redis+cluster://H:P,H:P/ (see Running several instances). Unset: start an embedded Redis "
        "under the data folder.",
        secret=True,
    ),
    Variable("redis_prefix", str, "fa:", "Prefix of every Redis key forwardauth writes."),
    Variable("host", str, "127.0.0.1", "Address to listen on."),
    Variable("port", parse_port, "8080", "Port to listen on."),
    Variable("workers", parse_positive_int, "(CPU count)", "Worker processes sharing the port."),
    Variable(
        "issuer",
        parse_url(("http", "https")),
        "http://HOST:PORT",
        "`iss` of minted tokens; the public base URL of forwardauth.",
    ),
    Variable("audience", str, "forwardauth", "`aud` of minted tokens, required on /auth."),
    Variable("access_ttl", parse_duration, "15m", "Lifetime of access tokens (900, 15m, 1h ...)."),
    Variable("refresh_ttl", parse_duration, "14d", "Lifetime of refresh tokens."),
    Variable("leeway", parse_duration, "5s", "Clock skew allowed when checking exp/nbf/iat."),
    Variable("cookie_name", str, "forwardauth", "Name of the access-token cookie."),
    Variable(
        "cookie_domain",
        lambda s: parse_domains(s)[0] if s else None,
        "(host only)",
        "Cookie Domain; must cover the login host and every protected host.",
    ),
    Variable("cookie_secure", parse_bool, "true", "Send the cookie over HTTPS only."),
    Variable(
        "remember_browser",
        parse_bool,
        "true",
        "Keep browsers signed in for FORWARDAUTH_REFRESH_TTL: a refresh cookie, sent to forwardauth's "
        "own paths only, renews the access cookie. false: sign in again when the access token expires.",
    ),
    Variable(
        "login_url",
        parse_login_url,
        "ISSUER/login",
        "Login page as the browser reaches it: a URL, or a path on the protected host.",
    ),
    Variable(
        "allowed_domains",
        parse_domains,
        "(cookie domain, else issuer host)",
        "Domains (and their subdomains) that `rd` may redirect to after login.",
    ),
    Variable(
        "trusted_proxies",
        parse_networks,
        "127.0.0.0/8,::1/128",
        "Addresses whose X-Forwarded-*/X-Original-* headers are believed.",
    ),
    Variable(
        "policy_file",
        Path,
        "(none: any valid token passes)",
        "Access rules (YAML or TOML); reloaded on SIGHUP and when the file changes.",
    ),
    Variable("data_dir", Path, ".forwardauth", "Folder for keys and the embedded servers' data."),
    Variable("signing_alg", parse_algorithm, "RS256", "RS256, ES256, EdDSA or HS256."),
    Variable("keys_dir", Path, "DATA_DIR/keys", "Folder of private signing keys (PEM, mode 0600)."),
    Variable("hmac_secret", str, "(none)", "HS256 secret, at least 32 bytes (or HMAC_SECRET_FILE).", secret=True),
    Variable("argon2_time_cost", parse_positive_int, "3", "Argon2id iterations."),
    Variable("argon2_memory_cost", parse_positive_int, "65536", "Argon2id memory in KiB."),
    Variable("argon2_parallelism", parse_positive_int, "4", "Argon2id lanes."),
    Variable(
        "password_min_length",
        parse_password_min_length,
        "15",
        "Shortest password `user add` / `user passwd` accept (NIST SP 800-63B: 15 for a single factor, "
        "never below 8); common or guessable ones are refused at any length.",
    ),
    Variable(
        "login_max_failures",
        parse_positive_int,
        "5",
        "Failed logins per address and username within the window before 429 (x4 per address, x10 per username).",
    ),
    Variable("login_window", parse_duration, "5m", "Sliding window for counting failed logins."),
    Variable(
        "second_factor",
        parse_second_factor,
        "optional",
        "off: no second factor anywhere; optional: asked of users who enrolled one (and by rules with "
        "second_factor: required); required: every user, who enrols one at the next sign-in.",
    ),
    Variable(
        "webauthn_rp_id",
        parse_rp_id,
        "(cookie domain, else issuer host)",
        "WebAuthn relying party id: passkeys work on this domain and its subdomains only.",
    ),
    Variable(
        "local_cache",
        parse_bool,
        "true",
        "Remember live tokens per worker while subscribed to revocations (false: ask Redis every time).",
    ),
    Variable("db_pool_size", parse_positive_int, "4", "Threads (and PostgreSQL connections) per worker for logins."),
    Variable("auto_migrate", parse_bool, "true", "Apply migrations when `serve` starts."),
    Variable("shutdown_timeout", parse_duration, "10s", "Time in-flight requests get on SIGTERM."),
    Variable(
        "header_timeout",
        parse_duration,
        "10s",
        "Time a client has to send a request's line and headers, from its first byte (or from connecting); "
        "a slower one is closed with 408.",
    ),
    Variable(
        "headers_preset",
        parse_header_preset,
        "forwardauth",
        "Identity header names to start from: forwardauth (X-Auth-*) or authelia (Remote-User, "
        "Remote-Groups, Remote-Email, Remote-Name); the FORWARDAUTH_HEADERS_* below override it.",
    ),
    Variable("headers_user", parse_header_name, "X-Auth-User", "Header carrying a user's username."),
    Variable("headers_roles", parse_header_name, "X-Auth-Roles", "Header carrying a user's roles (comma-separated)."),
    Variable("headers_email", parse_header_name, "X-Auth-Email", "Header carrying a user's email address."),
    Variable("headers_subject", parse_header_name, "X-Auth-Subject", "Header carrying the token's `sub`."),
    Variable("headers_amr", parse_header_name, "X-Auth-AMR", "Header saying how the user signed in (`amr`)."),
    Variable(
        "headers_scopes",
        parse_header_name,
        "X-Auth-Scopes",
        "Header carrying a personal access token's scopes (space-separated).",
    ),
    Variable("headers_client", parse_header_name, "X-Auth-Client", "Header carrying a client's id (its own token)."),
    Variable("headers_client_roles", parse_header_name, "X-Auth-Client-Roles", "Header carrying a client's roles."),
    Variable(
        "headers_name",
        parse_optional_header_name,
        "(none)",
        "Header carrying the user's display name (their username: users have no other name); none: not sent.",
    ),
    Variable(
        "headers_claims",
        parse_claim_headers,
        "(none)",
        "Further token claims as headers: claim=Header,claim2=Header2 (string or list-of-strings claims; "
        "a list is comma-separated).",
    ),
    Variable("log_level", parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Variable(
        "log_format",
        parse_log_format,
        "json",
        "json (one object per line, with the request id) or text (lines for a terminal).",
    ),
)

BRANDING: tuple[Variable, ...] = (
    Variable("site_name", parse_site_name, "forwardauth", "Name shown on the login page and the other pages."),
    Variable(
        "logo_url",
        parse_logo_url,
        "(none)",
        "Logo on the pages: an https URL or a path on the login page's host (the pages' CSP img-src allows "
        "exactly its origin).",
    ),
    Variable("accent_color", parse_accent_color, "(none)", "Accent colour of the pages: #rgb or #rrggbb."),
)
VARIABLES += BRANDING

PORTAL: tuple[Variable, ...] = (
    Variable("admin_role", parse_role, "admin", "Users with this role may use the admin console (/admin)."),
    Variable(
        "admin_second_factor",
        parse_bool,
        "false",
        "true: the admin console asks an administrator signed in with a password only for a second factor first.",
    ),
    Variable(
        "admin_max_auth_age",
        parse_duration,
        "0 (off)",
        "The admin console asks for the password again when the sign-in is older than this (e.g. 15m).",
    ),
    Variable(
        "smtp_url",
        parse_smtp_url,
        "(none: no e-mail)",
        "Mail server for password-reset and address-verification links: smtp://HOST:PORT (plain), "
        "smtp+starttls://USER:PASSWORD@HOST:587 or smtps://USER:PASSWORD@HOST:465. Unset: no forgotten-password "
        "link, and e-mail addresses are changed by an administrator.",
        secret=True,
    ),
    Variable("smtp_from", parse_email_address, "forwardauth@ISSUER-HOST", "Sender address of those e-mails."),
    Variable(
        "pat_max_ttl",
        parse_duration,
        "365d",
        "Longest lifetime of a personal access token (each has an expiry, at most this far off).",
    ),
)
VARIABLES += PORTAL
