"""axe-core in Chromium: the accessibility rules a page must pass (issue 16).

axe-core comes from the npm registry, installed once into a cache folder kept across runs
(``npm install --prefix <cache> axe-core@4``), and is added to the page as a script file. Our
pages' Content-Security-Policy forbids scripts they did not name, so the page must be in a
context made with ``bypass_csp=True`` (see ``CONTEXT``). Only violations of impact "serious" or
"critical" fail a test: the rest are advice that depends on the content shown.
"""

from __future__ import annotations

import fcntl
import functools
import os
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
from playwright.sync_api import Page

AXE = "axe-core@4"
FAILING = ("serious", "critical")
# What a browser context for axe needs: our CSP would refuse the injected script.
CONTEXT: dict[str, Any] = {"bypass_csp": True}


def cache_folder() -> Path:
    """Where axe-core is installed: $XDG_CACHE_HOME (else ~/.cache)/forwardauth-tests/axe."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forwardauth-tests" / "axe"


def _unavailable(message: str) -> NoReturn:
    """Without axe-core the rules cannot be checked: a failure in CI, a skip elsewhere (offline)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _install(folder: Path) -> Path | str:
    """axe.min.js under ``folder``, installed there unless it already is; else why not (a message)."""
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # parallel test processes install it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if script.is_file():
            return script
        command = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--no-save", AXE]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"cannot install {AXE} from the npm registry: {error}"
        if done.returncode != 0 or not script.is_file():
            return f"cannot install {AXE} from the npm registry: {done.stderr.strip()[:800]}"
    return script


def axe_script() -> Path:
    """The path of axe.min.js (installed on first use); skips or fails when it cannot be had."""
    found = _install(cache_folder())
    if isinstance(found, str):
        _unavailable(found)
    return found


def violations(page: Page) -> list[dict[str, Any]]:
    """The serious and critical violations axe-core finds on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=str(axe_script()))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [violation for violation in found if violation.get("impact") in FAILING]


def describe(found: list[dict[str, Any]]) -> str:
    """One line per violation and element, for the assertion message."""
    return "\n".join(
        f"{v['impact']} {v['id']}: {v['help']} -- {node.get('target')} {node.get('failureSummary', '')!r}"
        for v in found
        for node in v.get("nodes", [])
    )


def assert_accessible(page: Page, what: str) -> None:
    """Fail, naming every element, when axe-core finds a serious or critical violation, in the
    light and in the dark colour scheme (the pages follow the system's: contrast differs)."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        found = violations(page)
        assert not found, f"axe-core on {what} ({page.url}, {scheme}):\n{describe(found)}"
    page.emulate_media(color_scheme="null")  # back to the browser's own


def tab_order(page: Page, presses: int) -> list[str]:
    """What has the keyboard focus after each of ``presses`` Tab presses: its id, else its tag
    and text; "(hidden)" for an element with no size (focus a sighted user cannot follow)."""
    seen = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                """() => { const e = document.activeElement; const r = e.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return "(hidden)";
                return e.id || (e.tagName.toLowerCase() + ":" + e.textContent.trim()); }"""
            )
        )
    return seen
