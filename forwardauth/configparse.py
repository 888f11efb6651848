"""The value parsers of the ``FORWARDAUTH_*`` variables: text in, a typed value or ``ValueError`` out.

Kept apart from ``config`` (which names the variables, their defaults and how they combine) so each
parser is a small pure function; ``config.parse_variable`` turns their errors into a
``ConfigError`` naming the variable. A parser raises ``RedactedError`` when its message may be
shown even for a secret: it describes the value without repeating it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")


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


# --- identity header names (FORWARDAUTH_HEADERS_*) -------------------------------------------

# An RFC 9110 token, further restricted to letters and digits joined by single dashes: PHP, CGI,
# WSGI and Rack read `_` and `.` as `-`, and nginx and Traefik drop names that have them.
_HEADER_TOKEN = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")
# A claim's name in the token (a JSON key): plain names only, so the mapping stays readable.
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
# Headers a proxy or the app gives a meaning of their own: never an identity header.
_RESERVED = frozenset(
    h.lower()
    for h in (
        "Authorization",
        "Cookie",
        "Set-Cookie",
        "Host",
        "Content-Length",
        "Content-Type",
        "Transfer-Encoding",
        "Connection",
        "Location",
        "WWW-Authenticate",
        "Cache-Control",
        "Forwarded",
    )
)


def parse_header_name(text: str) -> str:
    """An HTTP field name (a token) that is not one proxies or applications already give a meaning."""
    name = text.strip()
    if not _HEADER_TOKEN.fullmatch(name):
        raise ValueError(f"{text!r} is not a header name of letters and digits joined by single dashes")
    if name.lower() in _RESERVED or name.lower().startswith(("x-forwarded-", "x-original-")):
        raise ValueError(f"{name!r} already means something to proxies or applications")
    return name


def parse_optional_header_name(text: str) -> str:
    """A header name, or ``none`` / ``off`` for no header at all (e.g. no display name)."""
    return "" if text.strip().lower() in {"none", "off"} else parse_header_name(text)


def parse_claim_headers(text: str) -> tuple[tuple[str, str], ...]:
    """``claim=Header,claim2=Header2``: the token's claims handed to the application under these names."""
    pairs: list[tuple[str, str]] = []
    for item in parse_list(text):
        claim, sep, header = (part.strip() for part in item.partition("="))
        if not sep or not claim or not header:
            raise ValueError(f"{item!r} is not claim=Header")
        if not _CLAIM_NAME.fullmatch(claim):
            raise ValueError(f"{claim!r} is not a claim name")
        pairs.append((claim, parse_header_name(header)))
    claims = [c for c, _ in pairs]
    if len(set(claims)) != len(claims):
        raise ValueError("a claim is named twice")
    return tuple(pairs)


HEADER_PRESETS: dict[str, dict[str, str]] = {
    "forwardauth": {},
    # Authelia's names, which many applications' "proxy authentication" settings expect.
    "authelia": {"user": "Remote-User", "roles": "Remote-Groups", "email": "Remote-Email", "name": "Remote-Name"},
}


def parse_header_preset(text: str) -> str:
    preset = text.strip().lower()
    if preset not in HEADER_PRESETS:
        raise ValueError(f"{text!r} is not a preset ({', '.join(HEADER_PRESETS)})")
    return preset


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """The names of the identity headers ``/auth`` answers with (and the proxies pass on).

    ``name`` (the display name) is off ("") unless configured; ``claims`` maps further token
    claims to headers of their own. Built once at start (``config``), read per request.
    """

    user: str = "X-Auth-User"
    roles: str = "X-Auth-Roles"
    email: str = "X-Auth-Email"
    subject: str = "X-Auth-Subject"
    client: str = "X-Auth-Client"
    client_roles: str = "X-Auth-Client-Roles"
    amr: str = "X-Auth-AMR"
    scopes: str = "X-Auth-Scopes"  # a personal access token's scopes, space-separated
    name: str = ""
    claims: tuple[tuple[str, str], ...] = ()

    FIXED = ("user", "roles", "email", "subject", "client", "client_roles", "amr", "scopes", "name")

    @property
    def all(self) -> tuple[str, ...]:
        """Every name ``/auth`` may answer with: the ones a client must never be able to send."""
        fixed = tuple(getattr(self, f) for f in self.FIXED)
        return tuple(n for n in fixed if n) + tuple(h for _, h in self.claims)

    def check(self) -> tuple[str, str] | None:
        """(the field at fault, what is wrong) when two headers share a name (in any case), else None."""
        seen: dict[str, str] = {}
        for field_name in self.FIXED:
            header = getattr(self, field_name)
            if header and header.lower() in seen:
                return field_name, f"{header} is already the header of {seen[header.lower()]}"
            if header:
                seen[header.lower()] = field_name
        for claim, header in self.claims:
            if header.lower() in seen:
                return "claims", f"{header} (for the claim {claim}) is already the header of {seen[header.lower()]}"
            seen[header.lower()] = f"the claim {claim}"
        return None


_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")


def parse_site_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise ValueError("a printable name of at most 100 characters")
    return name


def parse_logo_url(text: str) -> str:
    """An https URL, or a path the operator serves beside the pages (never ``//host``: a URL)."""
    if text.startswith("/") and not text.startswith("//") and text.isprintable() and " " not in text:
        return text
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or not text.isprintable():
        raise ValueError("must be an https:// URL or a path starting with /")
    return text


def parse_accent_color(text: str) -> str:
    """A CSS hex colour only: it is written into the pages' style sheet."""
    if not _HEX_COLOR.fullmatch(text):
        raise ValueError("must be a hex colour: #rgb or #rrggbb")
    return text


_ROLE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def parse_role(text: str) -> str:
    """A role name as users carry them (letters, digits, ``_ . : -``, at most 64)."""
    if not _ROLE_NAME.fullmatch(text.strip()):
        raise ValueError("a role name: 1 to 64 letters, digits, '_', '.', ':' or '-'")
    return text.strip()


SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def parse_smtp_url(text: str) -> str:
    """``smtp://`` (plain, for a relay on this host), ``smtp+starttls://`` or ``smtps://`` (TLS from
    the start), with an optional ``user:password@`` (percent-encoded) and port."""
    parts = urlsplit(text)
    if parts.scheme not in SMTP_SCHEMES:
        raise RedactedError(f"scheme must be one of {', '.join(SMTP_SCHEMES)}")
    try:
        parts.port  # noqa: B018 (a port that does not parse raises)
    except ValueError:
        raise RedactedError("the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise RedactedError("no host (e.g. smtp+starttls://user:password@mail.example.com:587)")
    return text


def parse_email_address(text: str) -> str:
    """A sender address: ``name@domain``, printable, no spaces."""
    value = text.strip()
    if len(value) > 254 or not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", value):
        raise ValueError(f"{value!r} is not an e-mail address (name@example.com)")
    return value
