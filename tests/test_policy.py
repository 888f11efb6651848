"""Access rules: the pure matcher (table-driven and property-based), files, and reloads.

A path is refused when backends cannot agree on it, else judged in every reading a backend may
make of it, the strictest winning (see forwardauth/core/paths.py): the tables hold every example of
the hostile review (issue 12) and their class variants; the properties check the verdicts against
a small model of how backends read paths.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardauth.core.paths import AmbiguousPath, fold, readings
from forwardauth.core.policy import (
    STRICTNESS,
    Effect,
    Object,
    Policy,
    PolicyError,
    Subject,
    decide,
    normalise_host,
)
from forwardauth.core.policyfile import from_data, load
from forwardauth.stores import users

from .support import PASSWORD, Service, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = load(ROOT / "deploy" / "policy.example.yml")

ALICE = Subject("alice", ("user",))
ADMIN = Subject("root", ("admin",))
BOB = Subject("bob", ("user",))
OPS = Subject("olga", ("ops",))

# The review's own rules, on one host: public and health pages, admin paths, an API, a denied tree.
STRICT = from_data(
    {
        "default": "authenticated",
        "rules": [
            {"path": "/public", "policy": "bypass"},
            {"path": "/healthz", "policy": "bypass"},
            {"path": "/admin", "roles": ["admin"]},
            {"path_regex": "^/api/v[0-9]+/admin(/|$)", "roles": ["admin"]},
            {"path": "/ops", "roles": ["ops"]},
            {"path": "/secret", "policy": "deny"},
        ],
    },
    "strict",
)


def outcome(
    policy: Policy, host: str, uri: str, subject: Subject | None, method: str = "GET", ip: str | None = None
) -> str:
    """What /auth answers: 400 (refused), 401, 403 or allow."""
    try:
        verdict = policy.judge(Object.of("https", host, uri, method), ip)
    except AmbiguousPath:
        return "400"
    result = decide(verdict, subject)
    return "allow" if result is None else "403" if result is Effect.DENY else "401"


def verdict(
    policy_data: dict[str, Any],
    host: str,
    uri: str,
    subject: Subject | None,
    method: str = "GET",
    ip: str | None = None,
) -> str:
    return outcome(from_data(policy_data, "test"), host, uri, subject, method, ip)


@pytest.mark.parametrize(
    "host,uri,subject,method,ip,expected",
    [
        ("www.example.com", "/public/page", None, "GET", None, "allow"),  # bypass, no token
        ("www.example.com", "/public", None, "GET", None, "allow"),
        ("www.example.com", "/publicity", None, "GET", None, "401"),  # segment boundary
        ("example.com", "/public/x", None, "GET", None, "401"),  # *.example.com is not the apex
        ("www.example.com", "/public/../admin", None, "GET", None, "400"),
        ("www.example.com", "/public/%2e%2e/admin", None, "GET", None, "400"),
        ("www.example.com", "/public/..%2fadmin", None, "GET", None, "400"),
        ("www.example.com", "/admin/%252e%252e/healthz", None, "GET", None, "400"),  # issue 12, item 1
        ("any.host", "/healthz", None, "HEAD", None, "allow"),
        ("any.host", "/healthz", None, "POST", None, "403"),  # method not listed: default deny
        ("any.host", "/HEALTHZ", None, "GET", None, "403"),  # as sent it is not /healthz: the default
        ("admin.example.com", "/", None, "GET", None, "401"),
        ("admin.example.com", "/", BOB, "GET", None, "403"),
        ("admin.example.com", "/", ADMIN, "GET", None, "allow"),
        ("admin.example.com", "/", ALICE, "GET", None, "allow"),  # named user
        ("ADMIN.Example.COM:8443", "/", BOB, "GET", None, "403"),  # host case and port
        ("admin.example.com.", "/", BOB, "GET", None, "403"),  # trailing dot
        ("api.example.com", "/api/v2/admin/users", BOB, "GET", None, "403"),
        ("api.example.com", "/api/v2/%61dmin/users", BOB, "GET", None, "403"),
        ("api.example.com", "/api/v2/%2561dmin/users", BOB, "GET", None, "403"),  # decoded twice
        ("api.example.com", "//api/v2/admin", BOB, "GET", None, "403"),
        ("api.example.com", "/api/v1/admin;x", BOB, "GET", None, "403"),  # issue 12: Tomcat strips ;x
        ("api.example.com", "/API/V1/ADMIN", BOB, "GET", None, "403"),  # the regex, case-insensitively
        ("api.example.com", "/api/v2/administrators", BOB, "GET", None, "allow"),
        ("intranet.example.com", "/", BOB, "GET", "10.1.2.3", "allow"),
        ("intranet.example.com", "/", BOB, "GET", "203.0.113.9", "403"),
        ("intranet.example.com", "/", BOB, "GET", None, "403"),
        ("www.example.com", "/anything", BOB, "GET", None, "allow"),
        ("other.test", "/anything", BOB, "GET", None, "403"),  # default deny
    ],
)
def test_example_policy(
    host: str, uri: str, subject: Subject | None, method: str, ip: str | None, expected: str
) -> None:
    assert outcome(EXAMPLE, host, uri, subject, method, ip) == expected


REFUSED_PATHS = [
    # issue 12, item 1
    "/admin/%252e%252e/healthz",
    "/admin/../public/x",
    "/admin/%2e%2e/public/x",
    "/public/..;/admin/x",
    # dot segments in every spelling, at every depth, with params
    "/admin/./x",
    "/public/.",
    "/public/..",
    "/./admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%252e%252e/admin",
    "/public/%25252e%25252e/admin",
    "/public/..;x=1/admin",
    "/public/.;/admin",
    "/public/%2e%2e;/admin",
    "/public/..%3b/admin",
    "/public/%2e%2e%3bx/admin",
    "/public/.../admin",
    "/public/. /admin",
    "/public/%20/admin",
    # separators that are not separators
    "/public%2f..%2fadmin",
    "/public%2F..%2Fadmin",
    "/public%5c..%5cadmin",
    "/public\\..\\admin",
    "/public\\admin",
    "/public/%252fadmin",
    "/public/%255cadmin",
    # controls, invisible characters, encoded ? and #
    "/public/%00",
    "/public%00/admin",
    "/public/x%0a",
    "/public/x%0d%0a",
    "/public/%7f",
    "/public/%c2%85",
    "/public/%e2%80%8b",
    "/public/%ef%bb%bf",
    "/public/%e2%80%ae",
    "/public/%c2%a0",
    "/public%3f/x",
    "/public%23/x",
    "/public#/../admin",
    # not UTF-8, overlong forms, invalid escapes, encoded too deep
    "/public/%ff",
    "/public/%c0%ae%c0%ae/admin",
    "/public/%e0%80%ae",
    "/public/%zz",
    "/public/%",
    "/public/%2",
    "/public/%u002e%u002e/admin",
    "/%2525252561dmin",
    # compatibility forms that are separators (fullwidth solidus, percent)
    "/public%ef%bc%8fadmin",
    "/public/%ef%bc%85%32%66",
    # not a path
    "public/x",
    "",
]


@pytest.mark.parametrize("uri", REFUSED_PATHS)
def test_paths_backends_read_differently_are_refused(uri: str) -> None:
    for subject in (None, BOB, ADMIN):
        assert outcome(STRICT, "app.example.test", uri, subject) == "400", subject
    with pytest.raises(AmbiguousPath):
        readings(uri.split("?", 1)[0])


@pytest.mark.parametrize(
    "uri,anonymous,bob,admin",
    [
        ("/admin;x=1/panel", "401", "403", "allow"),  # issue 12: Tomcat reads /admin/panel
        ("/Admin;jsessionid=1/panel", "401", "403", "allow"),
        ("/ADMIN/x", "401", "403", "allow"),  # issue 12: case-insensitive backends
        ("/Admin", "401", "403", "allow"),
        ("/adm%C4%B1n", "401", "403", "allow"),  # dotless i: Java's equalsIgnoreCase says "admin"
        ("/%EF%BD%81dmin", "401", "403", "allow"),  # fullwidth a: NFKC says "admin"
        ("//admin", "401", "403", "allow"),  # nginx merge_slashes
        ("/;x/admin", "401", "403", "allow"),
        ("/%61dmin", "401", "403", "allow"),
        ("/%2561dmin", "401", "403", "allow"),  # a backend behind a decoding proxy
        ("/%252561dmin", "401", "403", "allow"),
        ("/admin%3b/x", "401", "403", "allow"),
        ("/admin./x", "401", "403", "allow"),  # Windows drops trailing dots
        ("/admin%20/x", "401", "403", "allow"),
        ("/api/v1/admin;x", "401", "403", "allow"),
        ("/api/v1/ADMIN", "401", "403", "allow"),
        ("/PUBLIC/x", "401", "allow", "allow"),  # bypass /public does not make /PUBLIC public
        ("/Public", "401", "allow", "allow"),
        ("/public;x/y", "401", "allow", "allow"),  # as sent, not under /public
        ("/public/X", "allow", "allow", "allow"),  # every reading under /public
        ("/public/x;y=1", "allow", "allow", "allow"),
        ("/public/%41", "allow", "allow", "allow"),
        ("/public/caf%C3%A9", "allow", "allow", "allow"),
        ("/SECRET", "403", "403", "403"),  # deny wins in any reading
        ("/secret;x", "403", "403", "403"),
        ("/%73ecret", "403", "403", "403"),
        ("/ops/x", "401", "403", "403"),
        ("/healthz", "allow", "allow", "allow"),
        ("/x/y", "401", "allow", "allow"),
    ],
)
def test_ambiguous_paths_are_judged_by_the_strictest_reading(uri: str, anonymous: str, bob: str, admin: str) -> None:
    got = tuple(outcome(STRICT, "app.example.test", uri, s) for s in (None, BOB, ADMIN))
    assert got == (anonymous, bob, admin)


def test_every_restricted_rule_a_reading_matches_must_be_satisfied() -> None:
    """``/Team`` and ``/team`` are two rules; a case-insensitive backend serves both paths as one."""
    policy = from_data({"rules": [{"path": "/team", "roles": ["lower"]}, {"path": "/Team", "roles": ["upper"]}]}, "t")
    got = policy.judge(Object.of("https", "h", "/Team/x", "GET"), None)
    assert got.effect is Effect.RESTRICTED and {r.number for r in got.rules} == {1, 2}
    assert decide(got, Subject("a", ("upper",))) is Effect.DENY
    assert decide(got, Subject("a", ("lower",))) is Effect.DENY
    assert decide(got, Subject("a", ("lower", "upper"))) is None
    # read case-insensitively, the rules are /team, /team: the first decides /team/x in both readings
    lower = policy.judge(Object.of("https", "h", "/team/x", "GET"), None)
    assert [r.number for r in lower.matched] == [1, 1] and lower.readings[1].folded


def test_regex_rules_see_every_reading() -> None:
    policy = from_data({"default": "bypass", "rules": [{"path_regex": "^/files/[^/]+\\.php$", "policy": "deny"}]}, "t")
    for uri in ("/files/x.php", "/files/x.PHP", "/files/x.php;x", "/files/x%2ephp", "/files/x.php.", "//files/x.php"):
        assert outcome(policy, "h", uri, None) == "403", uri
    assert outcome(policy, "h", "/files/x.phps", None) == "allow"


def test_a_plain_path_has_one_reading() -> None:
    """The common case costs one scan of the rules (and only on a memo miss)."""
    for uri in ("/", "/a", "/a/b.txt", "/dashboard/reports?page=2", "/x-y_z~1/", "/a.b.c/d"):
        verdict = STRICT.judge(Object.of("https", "h", uri, "GET"), None)
        assert len(verdict.readings) == 1 and verdict.readings[0].path == uri.split("?")[0]
    assert len(readings("/a/B")) == 2 and len(readings("/a/b", fold_always=True)) == 2


def test_first_match_wins_and_default_applies() -> None:
    data = {"default": "bypass", "rules": [{"path": "/a", "policy": "deny"}, {"path": "/a", "policy": "bypass"}]}
    assert verdict(data, "h", "/a/b", BOB) == "403"
    assert verdict(data, "h", "/b", None) == "allow"
    assert verdict({"default": "authenticated"}, "h", "/", None) == "401"
    assert verdict({"default": "authenticated"}, "h", "/", BOB) == "allow"


def test_a_rule_combines_its_criteria() -> None:
    data = {
        "rules": [{"host": "a.test", "path": "/x", "methods": ["post"], "networks": ["10.0.0.0/8"], "policy": "bypass"}]
    }
    assert verdict(data, "a.test", "/x", None, "POST", "10.0.0.1") == "allow"
    for host, uri, method, ip in (
        ("b.test", "/x", "POST", "10.0.0.1"),
        ("a.test", "/y", "POST", "10.0.0.1"),
        ("a.test", "/x", "GET", "10.0.0.1"),
        ("a.test", "/x", "POST", "11.0.0.1"),
    ):
        assert verdict(data, host, uri, None, method, ip) == "403"


@pytest.mark.parametrize(
    "data,message",
    [
        ({"default": "maybe"}, "default must be one of"),
        ({"rules": {"a": 1}}, "rules must be a list"),
        ({"rules": [{"path": "/x"}]}, "rule 1: a rule needs policy"),
        ({"rules": [{"policy": "bypass"}, {"policy": "allow"}]}, "rule 2: policy must be one of"),
        ({"rules": [{"policy": "deny", "roles": ["a"]}]}, "rule 1: give either policy or roles/users"),
        ({"rules": [{"path": "x", "policy": "deny"}]}, "rule 1: path 'x' must start with /"),
        ({"rules": [{"path": "/a/../b", "policy": "deny"}]}, "rule 1: path '/a/../b': the path holds a . or .."),
        ({"rules": [{"path": "/a%2fb", "policy": "deny"}]}, "rule 1: path '/a%2fb'"),
        ({"rules": [{"path": "/a\\b", "policy": "deny"}]}, "rule 1: path '/a\\\\b'"),
        ({"rules": [{"path_regex": "(", "policy": "deny"}]}, "rule 1: path_regex"),
        ({"rules": [{"networks": ["10.0.0.0/33"], "policy": "deny"}]}, "rule 1: networks"),
        ({"rules": [{"host": "a.*.com", "policy": "deny"}]}, "rule 1: host"),
        ({"rules": [{"hosts": "a.com", "policy": "deny"}]}, "rule 1: unknown key(s) hosts"),
        ({"rules": [{"roles": [], "policy": "deny"}]}, "rule 1: roles must be"),
        ({"extra": 1}, "unknown key(s) extra"),
    ],
)
def test_broken_policies_name_the_rule(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)) as caught:
        from_data(data, "policy.yml")
    assert str(caught.value).startswith("policy.yml: ")


def test_rule_paths_are_decoded_once_and_folded() -> None:
    policy = from_data({"rules": [{"path": "/caf%C3%A9//menu", "policy": "deny"}], "default": "bypass"}, "t")
    assert policy.rules[0].path_prefixes == ("/café/menu",)
    assert outcome(policy, "h", "/caf%C3%A9/menu/x", None) == "403"
    assert outcome(policy, "h", "/CAF%C3%89/menu", None) == "403"


def test_files(tmp_path: Path) -> None:
    assert load(ROOT / "deploy" / "policy.example.toml").default is Effect.DENY
    broken = tmp_path / "p.yml"
    broken.write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load(broken)
    with pytest.raises(PolicyError, match="cannot read"):
        load(tmp_path / "missing.yml")


# --- properties: verdicts against a model of backends ------------------------------------------------

TOKENS = [
    "/",
    "/",
    ".",
    "..",
    "%2e",
    "%252e",
    "%2f",
    "%5c",
    "%25",
    "\\",
    ";",
    ";x=1",
    "admin",
    "ADMIN",
    "Admin",
    "public",
    "%61",
    "%2561",
    "%41",
    "dmin",
    "%",
    "2",
    "5",
    "e",
    "f",
    "A",
    "a",
    "//",
    "%3b",
    "%00",
    " ",
    "%20",
]
PATHS = st.tuples(
    st.sampled_from(["/", "/admin", "/public/", "/admin/", "/ADMIN", "/public", "/%61dmin/"]),
    st.lists(st.sampled_from(TOKENS), max_size=8),
).map(lambda t: t[0] + "".join(t[1]))
MODEL = settings(max_examples=1500, deadline=None)
PROPERTY_POLICY = from_data(
    {
        "default": "authenticated",
        "rules": [{"path": "/public", "policy": "bypass"}, {"path": "/admin", "roles": ["admin"]}],
    },
    "property",
)


def _resolve(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/"):
        if segment == ".":
            continue
        if segment == "..":
            if out and out[-1] != "":
                out.pop()
            continue
        out.append(segment)
    return "/".join(out) or "/"


def backend_readings(path: str) -> set[str]:
    """How some backend may read ``path``: decoded 0-2 times; ;params stripped before or after
    decoding, or kept; backslashes as slashes or not; dot segments resolved or not; // folded or
    not; case folded or not. Written apart from forwardauth/core/paths.py, on purpose plainly."""
    found = set()
    for decodes, params, backslash, dots, merge, lower in itertools.product(
        (0, 1, 2), ("keep", "before", "after"), *[(False, True)] * 4
    ):
        p = re.sub(r";[^/]*", "", path) if params == "before" else path
        for _ in range(decodes):
            p = unquote(p, errors="replace")
        if params == "after":
            p = re.sub(r";[^/]*", "", p)
        if backslash:
            p = p.replace("\\", "/")
        if merge:
            p = re.sub("/+", "/", p)
        if dots:
            p = _resolve(p)
        found.add(p.lower() if lower else p)
    return found


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


@MODEL
@given(PATHS)
def test_a_non_admin_is_let_through_only_where_no_backend_reads_admin(path: str) -> None:
    try:
        judged = PROPERTY_POLICY.judge(Object.of("https", "h", path, "GET"), None)
    except AmbiguousPath:
        return
    if decide(judged, BOB) is None:
        reached = [r for r in backend_readings(path) if under(r, "/admin")]
        assert not reached, (path, reached, judged.readings)


@MODEL
@given(PATHS)
def test_no_token_passes_only_where_every_backend_reads_public(path: str) -> None:
    try:
        judged = PROPERTY_POLICY.judge(Object.of("https", "h", path, "GET"), None)
    except AmbiguousPath:
        return
    if decide(judged, None) is None:
        outside = [r for r in backend_readings(path) if not under(r, "/public")]
        assert not outside, (path, outside, judged.readings)


@MODEL
@given(PATHS)
def test_readings_only_make_a_verdict_stricter(path: str) -> None:
    """The verdict is at least as strict as the one on the path as sent (so case folding, or any
    other reading, never makes a path more public)."""
    obj = Object.of("https", "h", path, "GET")
    try:
        judged = STRICT.judge(obj, None)
    except AmbiguousPath:
        return
    as_sent = STRICT.match(obj, None)
    assert judged.readings[0].path == path and not judged.readings[0].folded
    assert STRICTNESS[judged.effect] >= STRICTNESS[as_sent.effect]
    assert all(r.path.startswith("/") for r in judged.readings)


@given(st.text(max_size=12))
def test_fold_is_idempotent_and_lowers_ascii(text: str) -> None:
    assert fold(fold(text)) == fold(text)
    assert fold(text.upper()) == fold(text) or not text.isascii()


@given(
    st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,3}", fullmatch=True), st.sampled_from(["", ":8080", "."]), st.booleans()
)
def test_host_matching(name: str, suffix: str, upper: bool) -> None:
    host = (name.upper() if upper else name) + suffix
    assert normalise_host(host) == name
    policy = from_data({"rules": [{"host": "*.example.com", "policy": "bypass"}]}, "t")
    obj = Object.of("https", host + ".example.com" if not suffix else name + ".example.com" + suffix, "/", "GET")
    assert policy.match(obj, None).effect is Effect.BYPASS
    lookalike = Object.of("https", name + "example.com", "/", "GET")  # no dot: not a subdomain
    assert policy.match(lookalike, None).effect is Effect.DENY


# --- on a live server: enforcement and reloads ------------------------------------------------------


def write_policy(path: Path, admin_roles: list[str]) -> None:
    path.write_text(
        "default: authenticated\n"
        "rules:\n"
        "  - path: /open\n    policy: bypass\n"
        "  - path: /closed\n    policy: deny\n"
        f"  - path: /admin\n    roles: {admin_roles}\n"
    )


def check(base: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.test",
        "X-Forwarded-Uri": path,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(base + "/auth", headers=headers)


def test_live_enforcement_and_reload(
    service: Callable[..., Service], make_user: Callable[..., users.User], tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yml"
    write_policy(policy_file, ["admin"])
    svc = service(workers=2, extra={"FORWARDAUTH_POLICY_FILE": str(policy_file)})
    ops = make_user(roles=("ops",))
    token = httpx.post(svc.base + "/login", json={"username": ops.username, "password": PASSWORD}).json()[
        "access_token"
    ]

    open_response = check(svc.base, "/open/x")
    assert open_response.status_code == 200 and "X-Auth-User" not in open_response.headers
    assert check(svc.base, "/closed", token).status_code == 403
    assert check(svc.base, "/admin/panel", token).status_code == 403
    assert check(svc.base, "/admin/panel").status_code == 401
    assert check(svc.base, "/elsewhere", token).status_code == 200

    # A changed file is picked up by every worker, without a restart.
    write_policy(policy_file, ["admin", "ops"])
    wait_until(
        lambda: all(check(svc.base, "/admin/panel", token).status_code == 200 for _ in range(8)),
        timeout=20,
        what="the new rules in every worker",
    )

    # A broken file is refused; the rules in force stay.
    policy_file.write_text("rules: [ {path: /admin, roles: }\n")
    os.kill(svc.process.pid, signal.SIGHUP)
    wait_until(lambda: "policy not reloaded" in svc.log.read_text(), timeout=20, what="the refusal in the log")
    assert all(check(svc.base, "/admin/panel", token).status_code == 200 for _ in range(8))
    assert svc.process.poll() is None

    # SIGHUP reloads a good file at once.
    write_policy(policy_file, ["admin"])
    os.kill(svc.process.pid, signal.SIGHUP)
    wait_until(
        lambda: all(check(svc.base, "/admin/panel", token).status_code == 403 for _ in range(8)),
        timeout=20,
        what="the SIGHUP reload",
    )


def test_a_broken_policy_stops_the_start(env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    policy_file = tmp_path / "policy.yml"
    policy_file.write_text("rules:\n  - path: /x\n    policy: sometimes\n")
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", "serve"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "FORWARDAUTH_POLICY_FILE": str(policy_file)},
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{policy_file}: rule 1: policy must be one of" in result.stderr


@given(
    st.sampled_from(
        ["admin.example.com", "www.example.com", "example.com", "intranet.example.com", "other.test", "api.example.com"]
    ),
    st.sampled_from(["/", "/public/x", "/healthz", "/api/v1/admin", "/x", "/API/v1/Admin;x", "//public/x"]),
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.sampled_from([None, "10.0.0.1", "203.0.113.1"]),
)
def test_host_index_agrees_with_a_plain_scan(host: str, path: str, method: str, ip: str | None) -> None:
    obj = Object.of("https", host, path, method)
    judged = EXAMPLE.judge(obj, ip)
    for reading, rule in zip(judged.readings, judged.matched, strict=True):
        linear = next((r for r in EXAMPLE.rules if r.matches(obj, ip, reading)), EXAMPLE.default_rule)
        assert rule is linear
