"""Real backends that read the same request differently, for the end-to-end boundary tests.

- ``echo``: the aiohttp echo app of ``make run`` (``forwardauth.dev.demo``): percent-decodes the path
  once, resolves nothing;
- ``php``: PHP's built-in server with ``router.php``: maps ``-`` and ``.`` in header names to
  ``_`` (``X.Auth.User`` is ``HTTP_X_AUTH_USER``);
- ``tomcat``: embedded Tomcat 10 with ``TomcatBackend.java`` (compiled here, cached by source
  hash): strips ``;params``, reads ``..;`` as ``..``, maps ``/admin/*`` to its own servlet.

Each runs in its own process group on a free loopback port, is polled until it answers (with a
deadline) and is stopped by pid. ``Seen`` is what a backend says it served, in one shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from forwardauth.dev import demo

HERE = Path(__file__).resolve().parent
ROUTER = HERE / "router.php"
TOMCAT_SOURCE = HERE / "TomcatBackend.java"
TOMCAT_JARS = ("tomcat10-embed-core.jar",)
JAVA_DIR = Path("/usr/share/java")
KINDS = ("echo", "php", "tomcat")


def missing(kind: str) -> str | None:
    """Why backend ``kind`` cannot run here (None when it can); .ci/run installs them all."""
    if kind == "php" and shutil.which("php") is None:
        return "php is not installed (Debian php-cli)"
    if kind == "tomcat":
        if shutil.which("javac") is None or shutil.which("java") is None:
            return "javac/java are not installed (Debian default-jdk-headless)"
        absent = [jar for jar in TOMCAT_JARS if not (JAVA_DIR / jar).exists()]
        if absent:
            return f"{', '.join(absent)} not in {JAVA_DIR} (Debian libtomcat10-embed-java)"
    return None


def _classpath(classes: Path) -> str:
    return os.pathsep.join([str(classes), *(str(JAVA_DIR / jar) for jar in TOMCAT_JARS)])


def tomcat_classes(cache: Path) -> Path:
    """``TomcatBackend.class`` compiled once per source version under ``cache``."""
    digest = hashlib.sha256(TOMCAT_SOURCE.read_bytes()).hexdigest()[:16]
    target = cache / f"tomcat-{digest}"
    if (target / "TomcatBackend.class").exists():
        return target
    building = cache / f"tomcat-{digest}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    subprocess.run(
        ["javac", "-nowarn", "-d", str(building), "-cp", _classpath(building), str(TOMCAT_SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        building.rename(target)  # atomic: a concurrent run either wins or finds it done
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return target


@dataclass
class Backend:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


def start(kind: str, port: int, workdir: Path, cache: Path) -> Backend:
    """Start backend ``kind`` on ``port`` and wait until it answers (the caller stops it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    if kind == "echo":
        process = demo.start_upstream(port, workdir)
        log = workdir / "upstream.log"
    else:
        if kind == "php":
            args = ["php", "-S", f"127.0.0.1:{port}", str(ROUTER)]
        elif kind == "tomcat":
            classes = tomcat_classes(cache)
            args = [
                "java",
                "-Xshare:auto",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                _classpath(classes),
                "TomcatBackend",
                str(port),
                str(workdir / "tomcat-base"),
            ]
        else:
            raise ValueError(f"unknown backend {kind!r}")
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
    backend = Backend(kind, port, process, log)
    try:
        demo.wait_for_http(f"http://{backend.addr}/", 60, process)
    except RuntimeError as exc:
        raise RuntimeError(f"{kind} backend did not start: {exc}\n{log.read_text(errors='replace')[-2000:]}") from exc
    return backend


# --- what a backend served -------------------------------------------------------------------


@dataclass
class Seen:
    """A backend's own account of a request it served."""

    server: str  # echo | php | tomcat
    paths: list[str]  # the path(s) as the backend read it: decoded once, as its routing sees it
    headers: dict[str, str]  # lower-case name -> value, as the application reads them
    admin_servlet: bool = False  # Tomcat mapped it to the /admin/* servlet
    raw: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def seen(body: bytes) -> Seen | None:
    """The backend's answer in ``body``, or None when no backend answered (a proxy or forwardauth did)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("server") == "php":
        # PHP's view of the headers: HTTP_X_AUTH_USER, whatever spelling the client used.
        cgi = {str(k)[5:].replace("_", "-").lower(): str(v) for k, v in data["http"].items()}
        return Seen("php", [data["path"]], cgi, raw=data)
    if data.get("server") == "tomcat":
        served = (data["servletPath"] or "") + (data["pathInfo"] or "")
        return Seen(
            "tomcat",
            [served, unquote(data["requestURI"])],
            {str(k).lower(): str(v) for k, v in data["headers"].items()},
            admin_servlet=data["servlet"] == "admin",
            raw=data,
        )
    if set(data) == {"method", "path", "headers", "body"}:  # the aiohttp echo (forwardauth.dev.demo)
        return Seen("echo", [data["path"]], {str(k).lower(): str(v) for k, v in data["headers"].items()}, raw=data)
    return None


if __name__ == "__main__":  # pragma: no cover - by hand: python -m tests.backends KIND PORT
    started = start(sys.argv[1], int(sys.argv[2]), Path.cwd() / "backend", Path.cwd() / "backend-cache")
    print(f"{started.kind} on {started.addr} (pid {started.process.pid})", flush=True)
    started.process.wait()
