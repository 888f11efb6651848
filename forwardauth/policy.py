"""Access rules: who may reach what. Pure: a policy file's data in, a decision out.

As in Authelia's authorizer, a ``Subject`` (user, roles, client address) and an ``Object``
(scheme, host, path, method) go in; the first rule that matches the object decides, and the
default applies when none does. Rules are compiled once (patterns pre-built, hosts split into
exact names and suffixes), so evaluating them on every ``/auth`` costs little.

Paths are matched after normalisation (percent-decoding until stable, backslashes as slashes,
duplicate slashes folded, ``.``/``..`` resolved), so ``/admin`` cannot be reached as
``/public/../admin``, ``/%61dmin`` or ``//admin``: what a rule sees is at least as plain as what
any backend will see.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from .forwarding import Network, address_in
from .users import normalise_username

RULE_KEYS = {"host", "path", "path_regex", "methods", "networks", "policy", "roles", "users"}
MAX_DECODE_ROUNDS = 8


class Effect(Enum):
    BYPASS = "bypass"  # public: passes without a token, no identity headers
    AUTHENTICATED = "authenticated"  # any valid token
    RESTRICTED = "restricted"  # a valid token of one of the listed users or roles
    DENY = "deny"


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file, the rule and the problem."""


@dataclass(frozen=True, slots=True)
class Subject:
    user: str
    roles: tuple[str, ...] = ()
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Object:
    scheme: str
    host: str
    path: str
    method: str

    @classmethod
    def of(cls, scheme: str, host: str, uri: str, method: str) -> Object:
        return cls(scheme, normalise_host(host), normalise_path(uri), method.upper())


def normalise_host(host: str) -> str:
    """Lower case, without port or trailing dot (``[::1]:8080`` keeps its brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def normalise_path(uri: str) -> str:
    """The path of ``uri`` as plainly as any backend could read it."""
    path = uri.split("?", 1)[0].split("#", 1)[0]
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    trailing = path.endswith("/") and len(path) > 1
    resolved: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    normal = "/" + "/".join(resolved)
    return normal + "/" if trailing and normal != "/" else normal


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule; an empty criterion matches everything."""

    number: int  # 1-based, as operators count them in the file
    effect: Effect
    exact_hosts: frozenset[str] = frozenset()
    host_suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    path_prefixes: tuple[str, ...] = ()
    path_patterns: tuple[re.Pattern[str], ...] = ()
    methods: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    users: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    def matches(self, obj: Object, client_ip: str | None) -> bool:
        if (self.exact_hosts or self.host_suffixes) and not (
            obj.host in self.exact_hosts or obj.host.endswith(self.host_suffixes)
        ):
            return False
        if self.methods and obj.method not in self.methods:
            return False
        if (self.path_prefixes or self.path_patterns) and not (
            any(_under(obj.path, p) for p in self.path_prefixes)
            or any(p.search(obj.path) for p in self.path_patterns)
        ):
            return False
        return not self.networks or address_in(client_ip, self.networks)

    def allows(self, subject: Subject) -> bool:
        """For a restricted rule: is this subject one of the named users, or in a named role?"""
        return subject.user in self.users or not self.roles.isdisjoint(subject.roles)


def _under(path: str, prefix: str) -> bool:
    """Prefix match on a segment boundary: ``/admin`` covers ``/admin/x``, not ``/administrator``."""
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class Policy:
    default: Effect
    rules: tuple[Rule, ...] = ()
    source: str = "(built in)"
    default_rule: Rule = field(init=False)
    # Per exact host, the rules that can match it, in file order; other hosts use ``_anywhere``
    # (rules not limited to exact hosts: no host, or a *.domain). A request scans its few
    # candidates, not every rule.
    _by_host: dict[str, tuple[Rule, ...]] = field(init=False, repr=False)
    _anywhere: tuple[Rule, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_rule", Rule(number=0, effect=self.default))
        anywhere = tuple(r for r in self.rules if not r.exact_hosts or r.host_suffixes)
        hosts = {h for r in self.rules for h in r.exact_hosts}
        by_host = {h: tuple(r for r in self.rules if r in anywhere or h in r.exact_hosts) for h in hosts}
        object.__setattr__(self, "_anywhere", anywhere)
        object.__setattr__(self, "_by_host", by_host)

    def match(self, obj: Object, client_ip: str | None) -> Rule:
        """The first rule matching ``obj`` (rule 0 stands for the default)."""
        for rule in self._by_host.get(obj.host, self._anywhere):
            if rule.matches(obj, client_ip):
                return rule
        return self.default_rule


def decide(rule: Rule, subject: Subject | None) -> Effect | None:
    """What to answer: ``None`` allows; otherwise the effect that refuses.

    ``AUTHENTICATED`` as a result means "a valid token is needed" (401); ``DENY`` means 403.
    """
    if rule.effect is Effect.BYPASS:
        return None
    if rule.effect is Effect.DENY:
        return Effect.DENY
    if subject is None:
        return Effect.AUTHENTICATED
    if rule.effect is Effect.RESTRICTED and not rule.allows(subject):
        return Effect.DENY
    return None


ALLOW_ALL_AUTHENTICATED = Policy(default=Effect.AUTHENTICATED)


# --- reading policy files ------------------------------------------------------------------


def _strings(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"{what} must be a non-empty string or list of strings")
    return items


def _effect(value: Any, what: str, allowed: Sequence[Effect]) -> Effect:
    names = [e.value for e in allowed]
    if not isinstance(value, str) or value.lower() not in names:
        raise ValueError(f"{what} must be one of {', '.join(names)}")
    return Effect(value.lower())


def compile_rule(number: int, data: Any) -> Rule:
    if not isinstance(data, dict):
        raise ValueError("a rule must be a mapping")
    unknown = set(data) - RULE_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(RULE_KEYS))})")
    users = frozenset(_strings(data["users"], "users")) if "users" in data else frozenset()
    roles = frozenset(_strings(data["roles"], "roles")) if "roles" in data else frozenset()
    if "policy" in data:
        if users or roles:
            raise ValueError("give either policy or roles/users, not both")
        effect = _effect(data["policy"], "policy", (Effect.BYPASS, Effect.AUTHENTICATED, Effect.DENY))
    elif users or roles:
        effect = Effect.RESTRICTED
    else:
        raise ValueError("a rule needs policy (bypass, authenticated, deny) or roles/users")
    hosts = [normalise_host(h) for h in _strings(data["host"], "host")] if "host" in data else []
    for host in hosts:
        if "*" in host.removeprefix("*.") or not host.removeprefix("*."):
            raise ValueError(f"host {host!r}: use an exact name or *.domain")
    prefixes = _strings(data["path"], "path") if "path" in data else []
    for prefix in prefixes:
        if not prefix.startswith("/"):
            raise ValueError(f"path {prefix!r} must start with /")
    try:
        patterns = tuple(re.compile(p) for p in _strings(data["path_regex"], "path_regex")) \
            if "path_regex" in data else ()
    except re.error as exc:
        raise ValueError(f"path_regex: {exc}") from None
    try:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in _strings(data["networks"], "networks")) \
            if "networks" in data else ()
    except ValueError as exc:
        raise ValueError(f"networks: {exc}") from None
    methods = frozenset(m.upper() for m in _strings(data["methods"], "methods")) if "methods" in data else frozenset()
    return Rule(
        number=number,
        effect=effect,
        exact_hosts=frozenset(h for h in hosts if not h.startswith("*.")),
        host_suffixes=tuple(h[1:] for h in hosts if h.startswith("*.")),
        path_prefixes=tuple(normalise_path(p) for p in prefixes),
        path_patterns=patterns,
        methods=methods,
        networks=networks,
        users=frozenset(normalise_username(u) for u in users),
        roles=roles,
    )


def from_data(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the file must hold a mapping with 'default' and 'rules'")
    unknown = set(data) - {"default", "rules"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        default = _effect(data.get("default", "deny"), "default",
                          (Effect.DENY, Effect.AUTHENTICATED, Effect.BYPASS))
    except ValueError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{source}: rules must be a list")
    rules = []
    for number, raw in enumerate(raw_rules, start=1):
        try:
            rules.append(compile_rule(number, raw))
        except ValueError as exc:
            raise PolicyError(f"{source}: rule {number}: {exc}") from None
    return Policy(default=default, rules=tuple(rules), source=source)


def load(path: Path) -> Policy:
    """Read and compile a YAML (``.yml``/``.yaml``) or TOML (``.toml``) policy file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read ({exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    return from_data(data, str(path))
