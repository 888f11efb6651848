"""Access rules: who may reach what. Pure: a policy file's data in, a decision out.

As in Authelia's authorizer, a ``Subject`` (user, roles, client address) and an ``Object``
(scheme, host, path, method) go in; the first rule that matches the object decides, and the
default applies when none does. Rules are compiled once (patterns pre-built, hosts split into
exact names and suffixes), so evaluating them on every ``/auth`` costs little.

A path is never judged in one reading when backends read it in several (see paths): paths they
cannot agree on (``..`` segments, encoded slashes, ...) are refused with ``AmbiguousPath``; every
other path is matched in each of its readings (decoded once and until stable, ``;params``
stripped, ``//`` folded, case-folded against case-folded rules) and the strictest answer wins:
deny over restricted over authenticated over bypass, and a subject must satisfy every restricted
rule that some reading matched. ``Policy.judge`` is that one decision (``/auth`` memoises it per
raw request; ``forwardauth policy explain`` prints it), ``decide`` applies it to a subject.

A rule may also ask how the user signed in (``second_factor: required``, ``max_auth_age: 15m``):
strictest again over every rule some reading matched. A token short of it gets ``StepUp`` (an
RFC 9470 challenge, or the login page for a browser), never a 403: the user can meet it.

And what kind of credential it must be (``token_types``: a session's token, a personal access
token, a token issued to a client), with which scopes (``scopes``: all of them; only PATs and
client tokens carry any), and how to ask for one (``challenge: basic``, for git and WebDAV
clients, which prompt on a Basic challenge only): the same strictest reading, so a path read two
ways answers to both rules' kinds and scopes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from forwardauth.core import hosts, paths
from forwardauth.core.authn import ACR_MULTI_FACTOR, Authentication
from forwardauth.core.forwarding import Network, address_in
from forwardauth.core.methods import REGISTERED_METHODS
from forwardauth.core.paths import Reading

# What a rule may ask of how the user signed in, and of the credential (authenticated and
# restricted rules only: the others never look at a token).
REQUIREMENT_KEYS = {"second_factor", "max_auth_age", "token_types", "scopes", "challenge"}
RULE_KEYS = {
    *("host", "path", "path_regex", "methods", "networks", "policy", "roles", "users", "clients", "client_roles"),
    *REQUIREMENT_KEYS,
}


# The kinds of credential: a signed-in user's token (cookie or Bearer), a personal access token,
# a token issued to a client (OAuth: for a user with a client_id, or its own client_credentials).
SESSION, PAT, CLIENT = "session", "pat", "client"
TOKEN_TYPES = frozenset((SESSION, PAT, CLIENT))


class Effect(Enum):
    BYPASS = "bypass"  # public: passes without a token, no identity headers
    AUTHENTICATED = "authenticated"  # any valid token
    RESTRICTED = "restricted"  # a valid token of one of the listed users, roles, clients or client roles
    DENY = "deny"


class PolicyError(ValueError):
    """The policy file is invalid; the message names the file, the rule and the problem."""


@dataclass(frozen=True, slots=True)
class Subject:
    user: str  # "" for a client acting for itself
    roles: tuple[str, ...] = ()
    client_ip: str | None = None
    client: str | None = None  # set for a client's own token (client_credentials): no user
    client_roles: tuple[str, ...] = ()
    auth: Authentication | None = None  # how the user signed in (None: not known, or a client)
    token_type: str = SESSION  # one of TOKEN_TYPES
    scopes: tuple[str, ...] = ()  # the token's (a session's token has none)


@dataclass(frozen=True, slots=True)
class Object:
    scheme: str
    host: str
    path: str
    method: str
    # Other methods a backend may serve the request as: GET for HEAD (GET handlers serve it) and for
    # an unregistered method; a method override (header or ``_method``), which many frameworks
    # honour. Judged too; the strictest wins.
    also: tuple[str, ...] = ()

    @classmethod
    def of(cls, scheme: str, host: str, uri: str, method: str, overrides: Sequence[str] = ()) -> Object:
        """``uri``'s path as sent (its readings are worked out by ``Policy.judge``), the host's name."""
        method = method.upper()
        methods = [m.upper() for m in overrides]
        if any(m == "HEAD" or m not in REGISTERED_METHODS for m in (method, *methods)):
            methods.append("GET")
        also = tuple(m for m in dict.fromkeys(methods) if m != method)
        return cls(scheme, normalise_host(host), uri.split("?", 1)[0], method, also)


def normalise_host(host: str) -> str:
    """Lower case, without port or trailing dot (``[::1]:8080`` is ``[::1]``)."""
    return hosts.name_of(host)


# For a client whose address is not known (a proxy's hop that does not parse): in every network,
# judged beside "in none", so a networks rule that denies or restricts is never skipped for it.
ANY_ADDRESS = "any address"


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
    clients: frozenset[str] = frozenset()
    client_roles: frozenset[str] = frozenset()
    # What the sign-in must have been (authenticated and restricted rules only).
    second_factor: bool = False
    max_auth_age: int | None = None  # seconds since the user last proved who they are
    # What the credential must be (authenticated and restricted rules only).
    token_types: frozenset[str] = TOKEN_TYPES
    scopes: frozenset[str] = frozenset()  # all of them required
    basic_challenge: bool = False  # no credential: 401 with a Basic challenge (git, WebDAV prompt)
    # For case-folded readings: the prefixes case-folded, the patterns ignoring case.
    folded_prefixes: tuple[str, ...] = ()
    folded_patterns: tuple[re.Pattern[str], ...] = ()

    def matches(self, obj: Object, client_ip: str | None, reading: Reading | None = None) -> bool:
        """Whether the rule matches ``obj`` with its path read as ``reading`` (default: as sent)."""
        if (self.exact_hosts or self.host_suffixes) and not (
            obj.host in self.exact_hosts or obj.host.endswith(self.host_suffixes)
        ):
            return False
        if self.methods and obj.method not in self.methods:
            return False
        if self.path_prefixes or self.path_patterns:
            path = obj.path if reading is None else reading.path
            prefixes, patterns = (
                (self.folded_prefixes, self.folded_patterns)
                if reading is not None and reading.folded
                else (self.path_prefixes, self.path_patterns)
            )
            if not (any(_under(path, p) for p in prefixes) or any(p.search(path) for p in patterns)):
                return False
        return not self.networks or client_ip is ANY_ADDRESS or address_in(client_ip, self.networks)

    def allows(self, subject: Subject) -> bool:
        """For a restricted rule: is this subject one of the named users, or in a named role?

        Users and clients are matched apart: ``users``/``roles`` never admit a client, and
        ``clients``/``client_roles`` never admit a user, whatever their names.
        """
        if subject.client is not None:
            return subject.client in self.clients or not self.client_roles.isdisjoint(subject.client_roles)
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
    # Rules with upper case in a path or pattern: a lower-case path needs its folded reading too.
    _cased: bool = field(init=False, repr=False)
    # Rules limited to methods: only then do a request's other methods (Object.also) need judging.
    _by_method: bool = field(init=False, repr=False)
    # Rules limited to networks: only then does an unknown client address need judging both ways.
    _by_network: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_rule", Rule(number=0, effect=self.default))
        anywhere = tuple(r for r in self.rules if not r.exact_hosts or r.host_suffixes)
        names = {h for r in self.rules for h in r.exact_hosts}
        by_host = {h: tuple(r for r in self.rules if r in anywhere or h in r.exact_hosts) for h in names}
        object.__setattr__(self, "_anywhere", anywhere)
        object.__setattr__(self, "_by_host", by_host)
        object.__setattr__(
            self,
            "_cased",
            any(
                paths.fold(text) != text
                for r in self.rules
                for text in (*r.path_prefixes, *(p.pattern for p in r.path_patterns))
            ),
        )
        object.__setattr__(self, "_by_method", any(r.methods for r in self.rules))
        object.__setattr__(self, "_by_network", any(r.networks for r in self.rules))

    def match(self, obj: Object, client_ip: str | None, reading: Reading | None = None) -> Rule:
        """The first rule matching ``obj`` in one reading of its path (rule 0 stands for the default)."""
        for rule in self._by_host.get(obj.host, self._anywhere):
            if rule.matches(obj, client_ip, reading):
                return rule
        return self.default_rule

    def judge(self, obj: Object, client_ip: str | None) -> Verdict:
        """The decision for ``obj`` before any token is looked at: the strictest over every
        reading of its path, every method the backend may take it as (``Object.also``) and, for a
        client of unknown address, in every network and in none. Raises ``paths.AmbiguousPath``
        for a path that is refused."""
        found = paths.readings(obj.path, self._cased)
        others = obj.also if self._by_method else ()
        unknown = client_ip is None and self._by_network
        if len(found) == 1 and not others and not unknown:  # the common case: one reading, one scan
            rule = self.match(obj, client_ip, found[0])
            asks = (rule.second_factor, rule.max_auth_age, rule.token_types, rule.scopes, rule.basic_challenge)
            return Verdict(rule.effect, (rule,), found, (rule,), *asks)
        matched = tuple(self.match(obj, client_ip, reading) for reading in found)
        # The same readings as the other methods the backend may take the request as (HEAD,
        # overrides), and for a client of unknown address as one in every network too.
        objects = (obj, *(Object(obj.scheme, obj.host, obj.path, method) for method in others))
        addresses = (client_ip, ANY_ADDRESS) if unknown else (client_ip,)
        candidates = matched + tuple(
            self.match(o, address, reading)
            for o in objects
            for address in addresses
            for reading in found
            if o is not obj or address is not client_ip
        )
        effect = max((rule.effect for rule in candidates), key=STRICTNESS.__getitem__)
        deciding = tuple({id(rule): rule for rule in candidates if rule.effect is effect}.values())
        return Verdict(effect, deciding, found, matched, *strictest_requirements(candidates))


# Which answer wins when readings disagree: the strictest.
STRICTNESS = {Effect.BYPASS: 0, Effect.AUTHENTICATED: 1, Effect.RESTRICTED: 2, Effect.DENY: 3}
NEEDS_TOKEN = (Effect.AUTHENTICATED, Effect.RESTRICTED)


def strictest_requirements(
    rules: Iterable[Rule],
) -> tuple[bool, int | None, frozenset[str], frozenset[str], bool]:
    """What every one of ``rules`` asks of the token: a second factor if any asks, the shortest
    age, the token types all of them take, the scopes any of them needs, a Basic challenge if
    any asks for one."""
    demanding = [rule for rule in rules if rule.effect in NEEDS_TOKEN]
    ages = [rule.max_auth_age for rule in demanding if rule.max_auth_age is not None]
    return (
        any(rule.second_factor for rule in demanding),
        min(ages, default=None),
        TOKEN_TYPES.intersection(*(rule.token_types for rule in demanding)),
        frozenset[str]().union(*(rule.scopes for rule in demanding)),
        any(rule.basic_challenge for rule in demanding),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say about a request, before the token: ``effect`` is the strictest over the
    readings; ``rules`` decided it (for RESTRICTED, the subject must satisfy each); ``matched`` is
    the first matching rule of each of ``readings``. ``second_factor`` and ``max_auth_age`` are the
    strictest sign-in any rule some reading matched asks for (not only the deciding ones: a
    requirement is never escaped by a reading that matched another rule); so are ``token_types``
    (those every such rule takes), ``scopes`` (every scope any of them needs) and
    ``basic_challenge``. ``checks_subject``: the answer depends on who or what the token is, so
    ``/auth`` builds a ``Subject`` only then."""

    effect: Effect
    rules: tuple[Rule, ...]
    readings: tuple[Reading, ...]
    matched: tuple[Rule, ...]
    second_factor: bool = False
    max_auth_age: int | None = None
    token_types: frozenset[str] = TOKEN_TYPES
    scopes: frozenset[str] = frozenset()
    basic_challenge: bool = False
    checks_subject: bool = field(init=False)

    def __post_init__(self) -> None:
        checks = (
            self.effect is Effect.RESTRICTED
            or self.second_factor
            or self.max_auth_age is not None
            or self.token_types != TOKEN_TYPES
            or bool(self.scopes)
        )
        object.__setattr__(self, "checks_subject", checks)

    def allows(self, subject: Subject) -> bool:
        return all(rule.allows(subject) for rule in self.rules)


class Decides(Protocol):
    """A Verdict, or one Rule on its own."""

    @property
    def effect(self) -> Effect: ...

    @property
    def second_factor(self) -> bool: ...

    @property
    def max_auth_age(self) -> int | None: ...

    @property
    def token_types(self) -> frozenset[str]: ...

    @property
    def scopes(self) -> frozenset[str]: ...

    def allows(self, subject: Subject) -> bool: ...


@dataclass(frozen=True, slots=True)
class StepUp:
    """A valid token whose sign-in is not enough for the rule: the user must sign in again
    (``max_age``) or add a second factor; ``/auth`` answers 401 with ``challenge()``."""

    second_factor: bool
    max_age: int | None

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of RFC 9470 section 3: what the rule asks for, whole (a
        client re-authenticating must meet all of it). ``acr_values`` is quoted: ``:`` is not a
        token character."""
        if self.second_factor and self.max_age is not None:
            why = "A recent sign-in with a second factor is required"
        elif self.second_factor:
            why = "A second factor is required"
        else:
            why = "A more recent sign-in is required"
        challenge = f'Bearer error="insufficient_user_authentication", error_description="{why}"'
        if self.second_factor:
            challenge += f', acr_values="{ACR_MULTI_FACTOR}"'
        if self.max_age is not None:
            challenge += f", max_age={self.max_age}"
        return challenge


def decide(verdict: Decides, subject: Subject | None, now: float | None = None) -> Effect | StepUp | None:
    """What to answer: ``None`` allows; otherwise the effect that refuses, or the step-up needed.

    ``AUTHENTICATED`` as a result means "a valid token is needed" (401); ``DENY`` means 403;
    ``StepUp`` a 401 the user can meet by signing in again or with a second factor. A token of a
    kind the rule does not take, or short of a scope it needs, is denied. A client's own token,
    and a personal access token, under a sign-in requirement are denied: no one signed in for
    the request, so it can never step up.
    """
    effect = verdict.effect
    if effect is Effect.BYPASS:
        return None
    if effect is Effect.DENY:
        return Effect.DENY
    if subject is None:
        return Effect.AUTHENTICATED
    if subject.token_type not in verdict.token_types or (
        verdict.scopes and not verdict.scopes.issubset(subject.scopes)
    ):
        return Effect.DENY
    if effect is Effect.RESTRICTED and not verdict.allows(subject):
        return Effect.DENY
    second_factor, max_age = verdict.second_factor, verdict.max_auth_age
    if not second_factor and max_age is None:
        return None
    if subject.client is not None or subject.token_type == PAT:
        return Effect.DENY
    auth = subject.auth
    if (
        auth is None
        or (second_factor and not auth.multi_factor)
        or (max_age is not None and auth.age(time.time() if now is None else now) > max_age)
    ):
        return StepUp(second_factor, max_age)
    return None


def requirements_of(
    policy: Policy, scheme: str, host: str, uri: str, client_ip: str | None = None
) -> tuple[bool, int | None]:
    """What a sign-in needs for a GET of ``scheme://host`` + ``uri`` (``rd`` on the login page):
    ``(second factor, max auth age)``, judged as ``/auth`` judges it, strictest over every reading
    and, the address not given, every network. A request ``/auth`` refuses, or one needing no
    token or denied whatever the token, needs nothing of the sign-in: ``(False, None)``."""
    try:
        verdict = policy.judge(Object.of(scheme, host, uri, "GET"), client_ip)
    except paths.AmbiguousPath:
        return False, None
    if verdict.effect not in NEEDS_TOKEN:
        return False, None
    return verdict.second_factor, verdict.max_auth_age


ALLOW_ALL_AUTHENTICATED = Policy(default=Effect.AUTHENTICATED)
