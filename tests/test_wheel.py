"""The package as a user gets it: a wheel installed in a fresh venv, run from outside the checkout.

Nothing of the checkout may be needed at run time: the templates, the migrations and the demo's
proxy configurations (deploy/, shipped as forwardauth/dev/deploy) come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from forwardauth import __version__

from .support import require_program

CHECKOUT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.servers  # it builds and installs a wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel in it; its dependencies are the test venv's (no download)."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build would reuse what an earlier one left in build/.
    source = root / "source"
    shutil.copytree(
        CHECKOUT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".forwardauth", ".hypothesis"
        ),
    )
    # The release path: an sdist first, then the wheel built from the sdist alone, so a file the
    # sdist forgets (a template, a migration, the demo's deploy/) is missing from the wheel too.
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(root / "sdist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [sdist] = (root / "sdist").glob("forwardauth-*.tar.gz")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(root / "dist"), str(sdist)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (root / "dist").glob(f"forwardauth-{__version__}-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies, as a plain path entry: the test venv's own .pth files (the editable
    # forwardauth among them) are not read from it.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FORWARDAUTH_"))}
    return subprocess.run(
        args,
        cwd=cwd,
        env={**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_command_answers_help(installed: Path, tmp_path: Path) -> None:
    result = run(installed, str(installed / "bin" / "forwardauth"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "demo" in result.stdout


def test_the_installed_command_says_its_version_which_the_changelog_describes(installed: Path, tmp_path: Path) -> None:
    """One version, written once (forwardauth.__version__): the command, the package metadata and
    the CHANGELOG agree on it."""
    result = run(installed, str(installed / "bin" / "forwardauth"), "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"forwardauth {__version__}"
    code = "from importlib.metadata import version; print(version('forwardauth'))"
    metadata = run(installed, str(installed / "bin" / "python"), "-c", code, cwd=tmp_path)
    assert metadata.stdout.strip() == __version__
    changelog = (CHECKOUT / "CHANGELOG.md").read_text()
    assert f"## {__version__}" in changelog


def test_the_installed_package_is_the_wheel_and_has_its_files(installed: Path, tmp_path: Path) -> None:
    code = (
        "import forwardauth, forwardauth.dev.demo as demo\n"
        "from forwardauth.stores import migrations\n"
        "print(forwardauth.__file__); print(migrations.latest_version())\n"
        "from forwardauth.http.pages import login_page\n"
        "print('<form' in login_page(action='/login', rd=''))\n"
        "print(sorted(p.name for p in (demo.DEPLOY / 'nginx').iterdir()))\n"
    )
    result = run(installed, str(installed / "bin" / "python"), "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, version, form, nginx = result.stdout.splitlines()
    assert Path(location).is_relative_to(installed) and not Path(location).is_relative_to(CHECKOUT)
    assert int(version) >= 4 and form == "True"
    assert "forwardauth-locations.conf" in nginx and "example-site.conf" in nginx


def test_the_demo_writes_a_proxy_config_that_nginx_accepts(installed: Path, tmp_path: Path) -> None:
    """The demo's config check: its nginx files, rendered from the wheel's copy, pass ``nginx -t``."""
    nginx = require_program("nginx")
    work = tmp_path / "proxy"
    code = (
        "import sys; from pathlib import Path; from forwardauth.dev.demo import Proxy\n"
        "proxy = Proxy('nginx', Path(sys.argv[1]), 18080, '127.0.0.1:18081', '127.0.0.1:18082')\n"
        "proxy.configure(); print(proxy.args[-1])\n"
    )
    result = run(installed, str(installed / "bin" / "python"), "-c", code, str(work), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = result.stdout.strip()
    assert (work / "snippets" / "forwardauth-locations.conf").is_file()
    check = subprocess.run([nginx, "-t", "-p", str(work), "-c", config], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
