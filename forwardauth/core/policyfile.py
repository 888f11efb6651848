"""Policy files: YAML or TOML read and compiled into a ``policy.Policy``. Pure.

Every problem is a ``PolicyError`` naming the file, the rule (counted from 1, as operators read
the file) and what is wrong; a file that compiles matches requests exactly as it reads.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import yaml

from forwardauth.configparse import parse_duration
from forwardauth.core import hosts, paths
from forwardauth.core.policy import (
    NEEDS_TOKEN,
    PAT,
    REQUIREMENT_KEYS,
    RULE_KEYS,
    SESSION,
    TOKEN_TYPES,
    Effect,
    Policy,
    PolicyError,
    Rule,
    normalise_host,
)
from forwardauth.core.usernames import normalise_username


def rule_prefix(prefix: str) -> str:
    """A rule's ``path`` as it is matched: percent-decoded once, ``//`` folded. A prefix no
    accepted request can have (``..``, a backslash, ...) is an error, not a rule that never matches."""
    if not prefix.startswith("/"):
        raise ValueError(f"path {prefix!r} must start with /")
    try:
        paths.readings(prefix)  # refused as a request path would be: then no request could match it
        decoded = unquote_to_bytes(prefix).decode("utf-8")
    except (UnicodeDecodeError, paths.AmbiguousPath) as exc:
        raise ValueError(f"path {prefix!r}: {exc}") from None
    return re.sub("//+", "/", decoded)


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


def _second_factor(value: Any) -> bool:
    if not isinstance(value, str) or value.lower() not in ("required", "optional"):
        raise ValueError("second_factor must be required or optional")
    return value.lower() == "required"


def _max_auth_age(value: Any) -> int:
    """Seconds, from a whole number (900) or a duration as the settings take it (15m, 1h)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = -1
    else:
        seconds = -1
    if seconds <= 0:
        raise ValueError(f"max_auth_age {value!r} must be a positive duration (900, 15m, 1h, ...)")
    return seconds


def _token_types(value: Any) -> frozenset[str]:
    types = _strings(value, "token_types")
    unknown = sorted(set(types) - TOKEN_TYPES)
    if unknown:
        raise ValueError(f"token_types: unknown {', '.join(unknown)} (allowed: session, pat, client)")
    return frozenset(types)


_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 3.3: printable ASCII but space, " and \


def _scopes(value: Any) -> frozenset[str]:
    scopes = _strings(value, "scopes")
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise ValueError(f"scopes: {scope!r} is not a scope (printable ASCII, no space, quote or backslash)")
    return frozenset(scopes)


def _challenge(value: Any) -> bool:
    if not isinstance(value, str) or value.lower() not in ("basic", "bearer"):
        raise ValueError("challenge must be basic or bearer (the default)")
    return value.lower() == "basic"


def compile_rule(number: int, data: Any) -> Rule:
    if not isinstance(data, dict):
        raise ValueError("a rule must be a mapping")
    unknown = set(data) - RULE_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(RULE_KEYS))})")
    users = frozenset(_strings(data["users"], "users")) if "users" in data else frozenset()
    roles = frozenset(_strings(data["roles"], "roles")) if "roles" in data else frozenset()
    clients = frozenset(_strings(data["clients"], "clients")) if "clients" in data else frozenset()
    client_roles = frozenset(_strings(data["client_roles"], "client_roles")) if "client_roles" in data else frozenset()
    if "policy" in data:
        if users or roles or clients or client_roles:
            raise ValueError("give either policy or roles/users/clients/client_roles, not both")
        effect = _effect(data["policy"], "policy", (Effect.BYPASS, Effect.AUTHENTICATED, Effect.DENY))
    elif users or roles or clients or client_roles:
        effect = Effect.RESTRICTED
    else:
        raise ValueError("a rule needs policy (bypass, authenticated, deny) or roles/users/clients/client_roles")
    if effect not in NEEDS_TOKEN and REQUIREMENT_KEYS & set(data):
        raise ValueError(
            f"{' and '.join(sorted(REQUIREMENT_KEYS & set(data)))}: only for authenticated or restricted rules "
            f"(a {effect.value} rule never looks at a token)"
        )
    second_factor = _second_factor(data["second_factor"]) if "second_factor" in data else False
    max_auth_age = _max_auth_age(data["max_auth_age"]) if "max_auth_age" in data else None
    token_types = _token_types(data["token_types"]) if "token_types" in data else TOKEN_TYPES
    scopes = _scopes(data["scopes"]) if "scopes" in data else frozenset()
    if token_types == {PAT} and (second_factor or max_auth_age is not None):
        raise ValueError(
            "second_factor and max_auth_age: no one signs in with a personal access token, and "
            "token_types takes those only (no token could pass)"
        )
    if scopes and token_types == {SESSION}:
        raise ValueError(
            "scopes: a session's token has none, and token_types takes sessions only (no token could pass)"
        )
    given_hosts = _strings(data["host"], "host") if "host" in data else []
    for host in given_hosts:  # a rule that could never match a request's host would silently be no rule
        if ":" in (host[host.rindex("]") :] if host.startswith("[") and "]" in host else host):
            raise ValueError(
                f"host {host!r}: a rule matches a host name on every port, so it cannot name a port "
                "(it would apply to the other ports too); an IPv6 address goes in brackets"
            )
        if not host.isascii():
            raise ValueError(
                f"host {host!r}: write an internationalised name in the ASCII form browsers send (punycode, xn--...)"
            )
        if host != "*" and hosts.parse(host.removeprefix("*.")) is None:
            raise ValueError(f"host {host!r} is not a host name")
    host_names = [normalise_host(h) for h in given_hosts]
    for host in host_names:
        if "*" in host.removeprefix("*.") or not host.removeprefix("*."):
            raise ValueError(f"host {host!r}: use an exact name or *.domain")
    prefixes = [rule_prefix(p) for p in _strings(data["path"], "path")] if "path" in data else []
    try:
        patterns = (
            tuple(re.compile(p) for p in _strings(data["path_regex"], "path_regex")) if "path_regex" in data else ()
        )
    except re.error as exc:
        raise ValueError(f"path_regex: {exc}") from None
    try:
        networks = (
            tuple(ipaddress.ip_network(n, strict=False) for n in _strings(data["networks"], "networks"))
            if "networks" in data
            else ()
        )
    except ValueError as exc:
        raise ValueError(f"networks: {exc}") from None
    methods = frozenset(m.upper() for m in _strings(data["methods"], "methods")) if "methods" in data else frozenset()
    return Rule(
        number=number,
        effect=effect,
        exact_hosts=frozenset(h for h in host_names if not h.startswith("*.")),
        host_suffixes=tuple(h[1:] for h in host_names if h.startswith("*.")),
        path_prefixes=tuple(prefixes),
        path_patterns=patterns,
        folded_prefixes=tuple(paths.fold(p) for p in prefixes),
        folded_patterns=tuple(re.compile(p.pattern, re.IGNORECASE) for p in patterns),
        methods=methods,
        networks=networks,
        users=frozenset(normalise_username(u) for u in users),
        roles=roles,
        clients=clients,
        client_roles=client_roles,
        second_factor=second_factor,
        max_auth_age=max_auth_age,
        token_types=token_types,
        scopes=scopes,
        basic_challenge=_challenge(data["challenge"]) if "challenge" in data else False,
    )


def from_data(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the file must hold a mapping with 'default' and 'rules'")
    unknown = set(data) - {"default", "rules"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        default = _effect(data.get("default", "deny"), "default", (Effect.DENY, Effect.AUTHENTICATED, Effect.BYPASS))
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
