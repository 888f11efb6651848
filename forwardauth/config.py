"""Settings: one frozen object, read once from ``FORWARDAUTH_*`` variables at start.

Every variable is described in ``VARIABLES`` (the README's table is that list), parsed by a
small typed parser (``configparse``), and a bad value raises ``ConfigError`` naming the variable, so an operator
sees one clear line instead of a traceback. Secret values never appear in messages or ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forwardauth.configparse import (
    HEADER_PRESETS,
    HeaderNames,
    RedactedError,
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
from forwardauth.constants import REFRESH_COOKIE_SUFFIX

PREFIX = "FORWARDAUTH_"
MIN_HMAC_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything forwardauth reads from its environment. Built by :func:`load`."""

    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "fa:"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    issuer: str = ""
    audience: str = "forwardauth"
    access_ttl: int = 15 * 60
    refresh_ttl: int = 14 * 86400
    leeway: int = 5
    cookie_name: str = "forwardauth"
    cookie_domain: str | None = None
    cookie_secure: bool = True
    remember_browser: bool = True
    login_url: str = ""
    allowed_domains: tuple[str, ...] = ()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: parse_networks("127.0.0.0/8,::1/128")
    )
    policy_file: Path | None = None
    data_dir: Path = Path(".forwardauth")
    signing_alg: str = "RS256"
    keys_dir: Path | None = None
    hmac_secret: str | None = field(default=None, repr=False)
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4
    password_min_length: int = 15
    login_max_failures: int = 5
    second_factor: str = "optional"
    webauthn_rp_id: str = ""
    login_window: int = 300
    local_cache: bool = True
    db_pool_size: int = 4
    auto_migrate: bool = True
    shutdown_timeout: int = 10
    header_timeout: int = 10
    log_level: str = "INFO"
    log_format: str = "json"
    # Identity header names: as set (None: the preset's), then resolved into header_names by load().
    headers_preset: str = "forwardauth"
    headers_user: str | None = None
    headers_roles: str | None = None
    headers_email: str | None = None
    headers_subject: str | None = None
    headers_amr: str | None = None
    headers_client: str | None = None
    headers_client_roles: str | None = None
    headers_name: str | None = None
    headers_claims: tuple[tuple[str, str], ...] = ()
    header_names: HeaderNames = field(default_factory=HeaderNames)
    site_name: str = "forwardauth"
    logo_url: str = ""
    accent_color: str = ""
    admin_role: str = "admin"
    admin_second_factor: bool = False
    admin_max_auth_age: int = 0
    smtp_url: str | None = field(default=None, repr=False)
    smtp_from: str = ""

    @property
    def embedded(self) -> bool:
        """True when forwardauth must start its own PostgreSQL and Redis."""
        return self.database_url is None or self.redis_url is None

    @property
    def refresh_cookie_name(self) -> str:
        """The browser's refresh cookie: the access cookie's name with a suffix."""
        return self.cookie_name + REFRESH_COOKIE_SUFFIX

    @property
    def key_directory(self) -> Path:
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    def with_stores(self, database_url: str, redis_url: str) -> Settings:
        """A copy pointing at concrete stores (used once the embedded servers run)."""
        return replace(self, database_url=database_url, redis_url=redis_url)


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
)
VARIABLES += PORTAL

_FILE_SUFFIX = "_FILE"


def _raw_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Raw strings per variable; ``X_FILE`` reads a secret from a file (Docker secrets)."""
    raw: dict[str, str] = {}
    for var in VARIABLES:
        file_env = var.env + _FILE_SUFFIX
        if var.secret and environ.get(file_env):
            try:
                raw[var.name] = Path(environ[file_env]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{file_env}: cannot read the file ({exc.strerror})") from None
        elif var.env in environ and environ[var.env] != "":
            raw[var.name] = environ[var.env]
    return raw


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ``ConfigError`` on the first bad variable."""
    raw = _raw_values(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for var in VARIABLES:
        text = raw.get(var.name)
        if text is None:
            continue
        values[var.name] = parse_variable(var, text)
    return _complete(Settings(**values))


def parse_variable(var: Variable, text: str) -> Any:
    """One variable's value, or ``ConfigError`` naming it (a secret's value never repeated)."""
    try:
        return var.parse(text)
    except (ValueError, TypeError) as exc:
        detail = "invalid value" if var.secret and not isinstance(exc, RedactedError) else str(exc)
        raise ConfigError(f"{var.env}: {detail}") from None


def _complete(settings: Settings) -> Settings:
    """Fill the derived defaults and check what concerns several variables."""
    issuer = settings.issuer or f"http://{settings.host}:{settings.port}"
    issuer = issuer.rstrip("/")
    login_url = settings.login_url or f"{issuer}/login"
    allowed = settings.allowed_domains
    if not allowed:
        fallback = settings.cookie_domain or urlsplit(issuer).hostname or "localhost"
        allowed = (fallback,)
    if settings.signing_alg == "HS256":
        if settings.hmac_secret is None:
            raise ConfigError(f"{PREFIX}HMAC_SECRET: required when {PREFIX}SIGNING_ALG is HS256")
        if len(settings.hmac_secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ConfigError(f"{PREFIX}HMAC_SECRET: must be at least {MIN_HMAC_SECRET_BYTES} bytes")
    if settings.access_ttl < 1:
        raise ConfigError(f"{PREFIX}ACCESS_TTL: must be at least 1 second")
    if settings.header_timeout < 1:
        raise ConfigError(f"{PREFIX}HEADER_TIMEOUT: must be at least 1 second")
    if settings.refresh_ttl < settings.access_ttl:
        raise ConfigError(f"{PREFIX}REFRESH_TTL: must not be shorter than {PREFIX}ACCESS_TTL")
    header_names = _header_names(settings)
    rp_id = settings.webauthn_rp_id or settings.cookie_domain or urlsplit(issuer).hostname or "localhost"
    smtp_from = settings.smtp_from or f"forwardauth@{urlsplit(issuer).hostname or 'localhost'}"
    return replace(
        settings,
        smtp_from=smtp_from,
        issuer=issuer,
        login_url=login_url,
        allowed_domains=allowed,
        webauthn_rp_id=rp_id,
        header_names=header_names,
    )


def _header_names(settings: Settings) -> HeaderNames:
    """The preset's names, overridden by each FORWARDAUTH_HEADERS_* set; two headers of one name refused."""
    chosen = dict(HEADER_PRESETS[settings.headers_preset])
    for name in HeaderNames.FIXED:
        value = getattr(settings, "headers_" + name)
        if value is not None:
            chosen[name] = value
    names = HeaderNames(**chosen, claims=settings.headers_claims)
    problem = names.check()
    if problem is not None:
        field_name, detail = problem
        raise ConfigError(f"{PREFIX}HEADERS_{field_name.upper()}: {detail}")
    return names


def variable_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows, for the README and ``forwardauth config``."""
    return [(v.env, v.default, v.help) for v in VARIABLES]
