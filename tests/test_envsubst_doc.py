"""deploy/README.md's envsubst commands, run as written: they fill the placeholders exactly as the
tested stacks do (demo.render) and leave nginx's own $variables alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from forwardauth.dev import demo


def documented_commands() -> str:
    """The sh block that follows the envsubst paragraph."""
    text = (demo.DEPLOY / "README.md").read_text()
    after = text[text.index("given the names to") :]
    found = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert found, "no sh block after the envsubst paragraph"
    return found.group(1)


def test_the_envsubst_commands_fill_placeholders_and_keep_nginx_variables(tmp_path: Path) -> None:
    if shutil.which("envsubst") is None:
        if os.environ.get("CI"):
            pytest.fail("envsubst is not installed (Debian package gettext-base)")
        pytest.skip("envsubst is not installed")
    commands = documented_commands()
    exported = re.search(r"^export ((?:\w+=\S+ ?)+)$", commands, re.MULTILINE)
    assert exported, "the block sets the values itself"
    values = dict(pair.split("=", 1) for pair in exported.group(1).split())
    values.setdefault("HEADER_EXTRA_NGINX", "")  # unset: envsubst empties it, the default (no extra headers)
    work = tmp_path / "deploy"
    shutil.copytree(demo.DEPLOY, work)
    clean = {k: v for k, v in os.environ.items() if k not in values}
    subprocess.run(["bash", "-euc", commands], cwd=work, env=clean, check=True, timeout=30)

    rendered = sorted((work / "out" / "nginx").iterdir())
    expected = ["example-site.conf", *sorted(p.name for p in (demo.DEPLOY / "nginx").glob("forwardauth-*.conf"))]
    assert sorted(p.name for p in rendered) == sorted(expected)
    for path in rendered:
        source = (demo.DEPLOY / "nginx" / path.name).read_text()
        assert path.read_text() == demo.render(source, values), path.name
    locations = (work / "out" / "nginx" / "forwardauth-locations.conf").read_text()
    assert "$scheme://$http_host$request_uri" in locations  # nginx's own variables survived
