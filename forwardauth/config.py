"""Settings: one frozen object, read once from ``FORWARDAUTH_*`` variables at start.

Every variable is described in ``VARIABLES`` (the README's table is that list), parsed by a
small typed parser, and a bad value raises ``ConfigError`` naming the variable, so an operator
sees one clear line instead of a traceback. Secret values never appear in messages or ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from forwardauth.constants import REFRESH_COOKIE_SUFFIX

PREFIX = "FORWARDAUTH_"
ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")
MIN_HMAC_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


class RedactedError(ValueError):
    """What is wrong with a value, in words that never repeat it: shown even for secrets."""


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from ``900``, ``900s``, ``15m``, ``12h`` or ``14d``."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration (use e.g. 900, 15m, 12h, 14d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None


def parse_positive_int(text: str) -> int:
    value = _int(text, "a whole number")
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


def parse_port(text: str) -> int:
    value = _int(text, "a TCP port")
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a TCP port")
    return value


def parse_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes:
            if "://" not in text:  # a bare host or path: say how to write it
                raise ValueError(
                    f"{text!r} is not a URL: write it with its scheme, e.g. {schemes[-1]}://{text.lstrip('/')}"
                )
            raise ValueError(f"scheme must be one of {', '.join(schemes)}")
        if not parts.netloc:
            raise ValueError(f"{text!r} has no host (e.g. {schemes[-1]}://auth.example.com)")
        return text

    return parse


def parse_redis_url(text: str) -> str:
    """A plain, Sentinel or Cluster Redis URL, as ``redisurl.RedisSettings`` reads them."""
    from forwardauth.redisurl import RedisSettings  # the one owner of the URL forms

    try:
        RedisSettings.from_url(text)
    except ValueError as exc:
        raise RedactedError(str(exc)) from None
    return text


PLACEHOLDER_PASSWORDS = frozenset({"change-me", "changeme", "change_me"})  # what examples ship


_OTHER_DATABASES = {
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "sqlite": "SQLite",
    "mssql": "SQL Server",
    "sqlserver": "SQL Server",
    "oracle": "Oracle",
    "mongodb": "MongoDB",
}


def parse_database_url(text: str) -> str:
    """A PostgreSQL URL whose password is not an example's placeholder (a known, working password)."""
    scheme = urlsplit(text).scheme.lower().split("+")[0]
    if scheme not in ("postgres", "postgresql"):  # explained without repeating the URL: it holds the password
        other = _OTHER_DATABASES.get(scheme)
        raise RedactedError(
            f"{f'{other} is not supported' if other else 'not a PostgreSQL URL'}: forwardauth "
            "stores its data in PostgreSQL only; write postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    parts = urlsplit(text)
    given = [unquote(parts.password or "")] + [unquote(v) for k, v in parse_qsl(parts.query) if k == "password"]
    if any(p.lower() in PLACEHOLDER_PASSWORDS for p in given):
        raise RedactedError("its password is the example placeholder (change-me): set a password of your own")
    return text


def parse_login_url(text: str) -> str:
    """An absolute http(s) URL, or a path on whichever host the browser asked for."""
    if text.startswith("/") and not text.startswith("//"):
        return text
    if "://" not in text:
        raise ValueError(
            f"{text!r} is neither a URL nor a path: a path needs a leading / "
            f"(/{text.lstrip('/')}), a URL its scheme (https://...)"
        )
    return parse_url(("http", "https"))(text)


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_domains(text: str) -> tuple[str, ...]:
    domains = tuple(d.lower().lstrip(".") for d in parse_list(text))
    for domain in domains:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", domain):
            raise ValueError(f"{domain!r} is not a domain name")
    return domains


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in parse_list(text))


def parse_password_min_length(text: str) -> int:
    value = _int(text, "a whole number")
    if not 8 <= value <= 1024:
        raise ValueError(f"{text!r} must be between 8 (NIST's floor) and 1024")
    return value


def parse_algorithm(text: str) -> str:
    for name in ALGORITHMS:
        if text.strip().lower() == name.lower():
            return name
    raise ValueError(f"{text!r} is not supported (use {', '.join(ALGORITHMS)})")


SECOND_FACTOR_MODES = ("off", "optional", "required")


def parse_second_factor(text: str) -> str:
    mode = text.strip().lower()
    if mode not in SECOND_FACTOR_MODES:
        raise ValueError(f"{text!r} is not one of {', '.join(SECOND_FACTOR_MODES)}")
    return mode


def parse_rp_id(text: str) -> str:
    """A WebAuthn relying party id: a bare domain name (no scheme, port or path)."""
    return parse_domains(text)[0] if parse_domains(text) else ""


def parse_log_format(text: str) -> str:
    fmt = text.strip().lower()
    if fmt not in {"json", "text"}:
        raise ValueError(f"{text!r} is not a log format (json or text)")
    return fmt


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{text!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


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
    Variable("log_level", parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Variable(
        "log_format",
        parse_log_format,
        "json",
        "json (one object per line, with the request id) or text (lines for a terminal).",
    ),
)

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
    rp_id = settings.webauthn_rp_id or settings.cookie_domain or urlsplit(issuer).hostname or "localhost"
    return replace(settings, issuer=issuer, login_url=login_url, allowed_domains=allowed, webauthn_rp_id=rp_id)


def variable_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows, for the README and ``forwardauth config``."""
    return [(v.env, v.default, v.help) for v in VARIABLES]
