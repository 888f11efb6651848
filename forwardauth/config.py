"""Settings: one frozen object, read once from ``FORWARDAUTH_*`` variables at start.

Every variable is described in ``VARIABLES`` (the README's table is that list), parsed by a
small typed parser (``configparse``), and a bad value raises ``ConfigError`` naming the variable, so an operator
sees one clear line instead of a traceback. Secret values never appear in messages or ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forwardauth.configparse import (
    HEADER_PRESETS,
    HeaderNames,
    RedactedError,
    parse_networks,
)
from forwardauth.configvars import PREFIX, VARIABLES, Variable

__all__ = ["PREFIX", "VARIABLES", "ConfigError", "Settings", "Variable", "load"]
from forwardauth.constants import REFRESH_COOKIE_SUFFIX

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
    headers_scopes: str | None = None
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
    pat_max_ttl: int = 365 * 86400

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
    if settings.pat_max_ttl < 60:
        raise ConfigError(f"{PREFIX}PAT_MAX_TTL: must be at least a minute")
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
