"""``forwardauth policy explain``: the decision ``/auth`` would make, and why. Pure.

It calls what ``/auth`` calls (``Policy.judge``, then ``decide``) and prints the readings of the
path that were judged, the rule each of them matched, and the rules that decided: an operator
sees why ``/Admin;x=1/panel`` is judged as ``/admin/panel``, or why a path is refused.
"""

from __future__ import annotations

from forwardauth.core.forwarding import BadDescription, host_value, uri_value
from forwardauth.core.policy import Effect, Object, Policy, Rule, Subject, decide
from forwardauth.core.refusals import Refused


def _rule(rule: Rule) -> str:
    where = f"rule {rule.number}" if rule.number else "the default"
    return f"{where} ({rule.effect.value})"


def explain(
    policy: Policy, scheme: str, host: str, path: str, method: str, client_ip: str | None, subject: Subject | None
) -> list[str]:
    """The lines to print for this request and subject (``None``: no token)."""
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
    outcome = decide(verdict, subject)
    if outcome is None:
        lines.append("decision: allow (200)")
    elif outcome is Effect.DENY:
        lines.append("decision: deny (403)")
    else:
        lines.append("decision: a valid token is needed (401 / login)")
    return lines
