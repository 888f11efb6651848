"""Access rules: the pure matcher (table-driven and property-based), files, and reloads."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwardauth import users
from forwardauth.policy import (
    Effect,
    Object,
    PolicyError,
    Subject,
    decide,
    from_data,
    load,
    normalise_host,
    normalise_path,
)

from .conftest import PASSWORD, Service, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = load(ROOT / "deploy" / "policy.example.yml")

ALICE = Subject("alice", ("user",))
ADMIN = Subject("root", ("admin",))
BOB = Subject("bob", ("user",))


def verdict(policy_data: dict[str, Any], host: str, uri: str, subject: Subject | None,
            method: str = "GET", ip: str | None = None) -> str:
    policy = from_data(policy_data, "test")
    rule = policy.match(Object.of("https", host, uri, method), ip)
    outcome = decide(rule, subject)
    return "allow" if outcome is None else "403" if outcome is Effect.DENY else "401"


@pytest.mark.parametrize(
    "host,uri,subject,method,ip,expected",
    [
        ("www.example.com", "/public/page", None, "GET", None, "allow"),  # bypass, no token
        ("www.example.com", "/public", None, "GET", None, "allow"),
        ("www.example.com", "/publicity", None, "GET", None, "401"),  # segment boundary
        ("example.com", "/public/x", None, "GET", None, "401"),  # *.example.com is not the apex
        ("www.example.com", "/public/../admin", None, "GET", None, "401"),
        ("www.example.com", "/public/%2e%2e/admin", None, "GET", None, "401"),
        ("www.example.com", "/public/..%2fadmin", None, "GET", None, "401"),
        ("any.host", "/healthz", None, "HEAD", None, "allow"),
        ("any.host", "/healthz", None, "POST", None, "403"),  # method not listed: default deny
        ("admin.example.com", "/", None, "GET", None, "401"),
        ("admin.example.com", "/", BOB, "GET", None, "403"),
        ("admin.example.com", "/", ADMIN, "GET", None, "allow"),
        ("admin.example.com", "/", ALICE, "GET", None, "allow"),  # named user
        ("ADMIN.Example.COM:8443", "/", BOB, "GET", None, "403"),  # host case and port
        ("api.example.com", "/api/v2/admin/users", BOB, "GET", None, "403"),
        ("api.example.com", "/api/v2/%61dmin/users", BOB, "GET", None, "403"),
        ("api.example.com", "//api/v2/admin", BOB, "GET", None, "403"),
        ("api.example.com", "/api/v2/administrators", BOB, "GET", None, "allow"),
        ("intranet.example.com", "/", BOB, "GET", "10.1.2.3", "allow"),
        ("intranet.example.com", "/", BOB, "GET", "203.0.113.9", "403"),
        ("intranet.example.com", "/", BOB, "GET", None, "403"),
        ("www.example.com", "/anything", BOB, "GET", None, "allow"),
        ("other.test", "/anything", BOB, "GET", None, "403"),  # default deny
    ],
)
def test_example_policy(host: str, uri: str, subject: Subject | None, method: str, ip: str | None,
                        expected: str) -> None:
    rule = EXAMPLE.match(Object.of("https", host, uri, method), ip)
    outcome = decide(rule, subject)
    assert ("allow" if outcome is None else "403" if outcome is Effect.DENY else "401") == expected


def test_first_match_wins_and_default_applies() -> None:
    data = {"default": "bypass", "rules": [{"path": "/a", "policy": "deny"}, {"path": "/a", "policy": "bypass"}]}
    assert verdict(data, "h", "/a/b", BOB) == "403"
    assert verdict(data, "h", "/b", None) == "allow"
    assert verdict({"default": "authenticated"}, "h", "/", None) == "401"
    assert verdict({"default": "authenticated"}, "h", "/", BOB) == "allow"


def test_a_rule_combines_its_criteria() -> None:
    data = {"rules": [{"host": "a.test", "path": "/x", "methods": ["post"], "networks": ["10.0.0.0/8"],
                       "policy": "bypass"}]}
    assert verdict(data, "a.test", "/x", None, "POST", "10.0.0.1") == "allow"
    for host, uri, method, ip in (("b.test", "/x", "POST", "10.0.0.1"), ("a.test", "/y", "POST", "10.0.0.1"),
                                  ("a.test", "/x", "GET", "10.0.0.1"), ("a.test", "/x", "POST", "11.0.0.1")):
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


def test_files(tmp_path: Path) -> None:
    assert load(ROOT / "deploy" / "policy.example.toml").default is Effect.DENY
    broken = tmp_path / "p.yml"
    broken.write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load(broken)
    with pytest.raises(PolicyError, match="cannot read"):
        load(tmp_path / "missing.yml")


# --- properties of normalisation ---------------------------------------------------------------

SEGMENT = st.text(st.sampled_from("abc.%2f5e/\\"), max_size=6)


@given(st.lists(SEGMENT, max_size=8).map(lambda parts: "/" + "/".join(parts)))
def test_normalised_paths_are_plain(raw: str) -> None:
    path = normalise_path(raw)
    assert path.startswith("/")
    assert "//" not in path and "\\" not in path
    assert "/../" not in path + "/" and "/./" not in path + "/"
    assert normalise_path(path) == path  # idempotent: nothing left to decode or resolve


@given(st.text(st.sampled_from("abc/."), max_size=10))
def test_no_path_escapes_a_prefix_rule_by_dot_segments(tail: str) -> None:
    """Whatever follows /public/, a path that resolves outside /public is not bypassed."""
    policy = from_data({"rules": [{"path": "/public", "policy": "bypass"}]}, "t")
    obj = Object.of("https", "h", "/public/" + tail, "GET")
    bypassed = policy.match(obj, None).effect is Effect.BYPASS
    assert bypassed == (obj.path == "/public" or obj.path.startswith("/public/"))


@given(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,3}", fullmatch=True),
       st.sampled_from(["", ":8080", "."]), st.booleans())
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
    headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.test",
               "X-Forwarded-Uri": path}
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
        "access_token"]

    open_response = check(svc.base, "/open/x")
    assert open_response.status_code == 200 and "X-Auth-User" not in open_response.headers
    assert check(svc.base, "/closed", token).status_code == 403
    assert check(svc.base, "/admin/panel", token).status_code == 403
    assert check(svc.base, "/admin/panel").status_code == 401
    assert check(svc.base, "/elsewhere", token).status_code == 200

    # A changed file is picked up by every worker, without a restart.
    write_policy(policy_file, ["admin", "ops"])
    wait_until(lambda: all(check(svc.base, "/admin/panel", token).status_code == 200 for _ in range(8)),
               timeout=20, what="the new rules in every worker")

    # A broken file is refused; the rules in force stay.
    policy_file.write_text("rules: [ {path: /admin, roles: }\n")
    os.kill(svc.process.pid, signal.SIGHUP)
    wait_until(lambda: "policy not reloaded" in svc.log.read_text(), timeout=20, what="the refusal in the log")
    assert all(check(svc.base, "/admin/panel", token).status_code == 200 for _ in range(8))
    assert svc.process.poll() is None

    # SIGHUP reloads a good file at once.
    write_policy(policy_file, ["admin"])
    os.kill(svc.process.pid, signal.SIGHUP)
    wait_until(lambda: all(check(svc.base, "/admin/panel", token).status_code == 403 for _ in range(8)),
               timeout=20, what="the SIGHUP reload")


def test_a_broken_policy_stops_the_start(env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    policy_file = tmp_path / "policy.yml"
    policy_file.write_text("rules:\n  - path: /x\n    policy: sometimes\n")
    result = subprocess.run([sys.executable, "-m", "forwardauth", "serve"], capture_output=True, text=True,
                            env={**os.environ, **env, "FORWARDAUTH_POLICY_FILE": str(policy_file)}, timeout=60)
    assert result.returncode == 1
    assert f"{policy_file}: rule 1: policy must be one of" in result.stderr


@given(st.sampled_from(["admin.example.com", "www.example.com", "example.com", "intranet.example.com",
                        "other.test", "api.example.com"]),
       st.sampled_from(["/", "/public/x", "/healthz", "/api/v1/admin", "/x"]),
       st.sampled_from(["GET", "HEAD", "POST"]), st.sampled_from([None, "10.0.0.1", "203.0.113.1"]))
def test_host_index_agrees_with_a_plain_scan(host: str, path: str, method: str, ip: str | None) -> None:
    obj = Object.of("https", host, path, method)
    linear = next((r for r in EXAMPLE.rules if r.matches(obj, ip)), EXAMPLE.default_rule)
    assert EXAMPLE.match(obj, ip) is linear
