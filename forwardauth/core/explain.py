"""``forwardauth policy explain``: the decision ``/auth`` would make, and why. Pure.

It calls what ``/auth`` calls (``Policy.judge``, then ``decide``) and prints the readings of the
path that were judged, the rule each of them matched, and the rules that decided: an operator
sees why ``/Admin;x=1/panel`` is judged as ``/admin/panel``, or why a path is refused, and what
sign-in (second factor, recent authentication) the rules ask for, which kinds of token they take
(``token_types``), the scopes they need and whether they challenge for Basic credentials.
"""

from __future__ import annotations

import time

from forwardauth.core.policy import (
    NEEDS_TOKEN,
    PAT,
    TOKEN_TYPES,
    Effect,
    Object,
    Policy,
    Rule,
    StepUp,
    Subject,
    Verdict,
    decide,
)
from forwardauth.core.proxyheaders import BadDescription, host_value, uri_value
from forwardauth.core.refusals import Refused


def _rule(rule: Rule) -> str:
    where = f"rule {rule.number}" if rule.number else "the default"
    return f"{where} ({rule.effect.value})"


def duration(seconds: int) -> str:
    """``900`` as ``15m``: as operators write it in the policy file."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def requirement(second_factor: bool, max_age: int | None) -> str:
    """The sign-in a rule asks for, in words."""
    needs = ["a second factor"] if second_factor else []
    if max_age is not None:
        needs.append(f"a sign-in at most {duration(max_age)} old")
    return " and ".join(needs)


def _shortfall(step_up: StepUp, subject: Subject | None, now: float) -> str:
    auth = subject.auth if subject else None
    if auth is None:
        return "the token does not say how the user signed in"
    short = []
    if step_up.second_factor and not auth.multi_factor:
        short.append(f"no second factor (amr {','.join(auth.amr)})")
    if step_up.max_age is not None:
        age = int(auth.age(now))
        if age > step_up.max_age:
            short.append(f"signed in {duration(age)} ago (over {duration(step_up.max_age)})")
    return "; ".join(short) or "the sign-in is not enough"


def credential_lines(verdict: Verdict) -> list[str]:
    """What the rules ask of the credential, when they ask anything."""
    if verdict.effect not in NEEDS_TOKEN:
        return []
    lines = []
    if verdict.token_types != TOKEN_TYPES:
        lines.append(f"token types: {', '.join(sorted(verdict.token_types)) or 'none (no token can pass)'}")
    if verdict.scopes:
        lines.append(f"scopes required: {' '.join(sorted(verdict.scopes))}")
    if verdict.basic_challenge:
        lines.append("challenge: basic (without credentials: 401 WWW-Authenticate: Basic, so git and WebDAV prompt)")
    return lines


def _denial(verdict: Verdict, subject: Subject) -> str:
    """Why ``decide`` denied a subject, in words (the decision itself is decide's alone)."""
    if subject.token_type not in verdict.token_types:
        return f": a {subject.token_type} token is not among the token types taken"
    missing = sorted(verdict.scopes.difference(subject.scopes))
    if missing:
        return f": the token lacks the scope(s) {' '.join(missing)}"
    if subject.token_type == PAT and (verdict.second_factor or verdict.max_auth_age is not None):
        return ": no one signed in with a personal access token, so it can never step up"
    return ""


def explain(
    policy: Policy,
    scheme: str,
    host: str,
    path: str,
    method: str,
    client_ip: str | None,
    subject: Subject | None,
    now: float | None = None,
) -> list[str]:
    """The lines to print for this request and subject (``None``: no token; its ``auth``, how the
    user signed in: ``None`` for not known, which any sign-in requirement steps up)."""
    head = f"{method} {scheme}://{host}{path}"
    try:
        if scheme not in ("http", "https"):
            raise BadDescription("the scheme is neither http nor https")
        obj = Object.of(scheme, host_value(host, "the host"), uri_value(path, "the path"), method)
        verdict = policy.judge(obj, client_ip)
    except Refused as exc:
        return [head, f"decision: refused (400): {exc}"]
    lines = [head]
    for reading, rule in zip(verdict.readings, verdict.matched, strict=True):
        lines.append(f"reading {reading.path} ({reading.describe()}): {_rule(rule)}")
    many = f"; the strictest of {len(verdict.readings)} readings" if len(verdict.readings) > 1 else ""
    lines.append(f"decided by: {', '.join(_rule(r) for r in verdict.rules)}{many}")
    if verdict.effect in (Effect.AUTHENTICATED, Effect.RESTRICTED) and (
        verdict.second_factor or verdict.max_auth_age is not None
    ):
        lines.append(f"sign-in required: {requirement(verdict.second_factor, verdict.max_auth_age)}")
    lines.extend(credential_lines(verdict))
    if subject is not None:
        scopes = f", scopes {' '.join(subject.scopes)}" if subject.scopes else ""
        lines.append(f"token: {subject.token_type}{scopes}")
    now = time.time() if now is None else now
    outcome = decide(verdict, subject, now)
    if outcome is None:
        lines.append("decision: allow (200)")
    elif outcome is Effect.DENY:
        lines.append(
            f"decision: deny (403){_denial(verdict, subject) if subject and verdict.effect in NEEDS_TOKEN else ''}"
        )
    elif isinstance(outcome, StepUp):
        lines.append(
            f"decision: step up: {_shortfall(outcome, subject, now)} "
            "(401 insufficient_user_authentication; a browser goes to the login page)"
        )
    elif verdict.basic_challenge:
        lines.append("decision: a valid token is needed (401 with a Basic challenge)")
    else:
        lines.append("decision: a valid token is needed (401 / login)")
    return lines
