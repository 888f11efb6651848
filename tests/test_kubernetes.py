"""deploy/kubernetes/, read and built: valid against Kubernetes' own schemas, and consistent with
forwardauth and with the proxy files the end-to-end tests run (deploy/nginx, deploy/traefik).

The manifests are built by the real kustomize (``kubectl kustomize``) and checked offline with
the OpenAPI schemas the ``kubernetes-validate`` package ships. The key copy the init container
makes is run for real, and its result judged by forwardauth's own key-file checks.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from forwardauth import config, keys, safefiles
from forwardauth.configparse import HEADER_PRESETS, HeaderNames
from forwardauth.constants import IDENTITY_HEADERS
from forwardauth.dev import demo
from forwardauth.http.app import create_app

from .support import require_program

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = ("ingress-nginx", "traefik", "ingress-nginx-authelia", "traefik-authelia")
# The oldest Kubernetes still commonly run, and the newest the package knows.
VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CRD_KINDS = {"Middleware"}
AUTH_LOCATION = "location = /forwardauth/auth"
PAGES_LOCATION = "location /forwardauth/"
NGINX = "nginx.ingress.kubernetes.io/"
TRAEFIK_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"

# What ingress-nginx's auth subrequest location sets by itself (its nginx.tmpl, external auth;
# auth-method unset): proxy_set_header replaces the client's header of that name.
INGRESS_NGINX_AUTH_SETS = {
    "Content-Length": "",
    "X-Forwarded-Proto": "",
    "X-Request-ID": "$req_id",
    "Host": "(the auth-url's host)",
    "X-Original-URL": "$scheme://$http_host$request_uri",
    "X-Original-Method": "$request_method",
    "X-Sent-From": "nginx-ingress-controller",
    "X-Real-IP": "$remote_addr",
    "X-Forwarded-For": "$remote_addr",
    "X-Auth-Request-Redirect": "$request_uri",
}
# Where ingress-nginx's subrequest differs from the shipped snippet's, and why that is safe.
KNOWN_DIFFERENCES = {
    "Host": "forwardauth reads the host from X-Original-URL (checked against X-Original-Host)",
    "X-Forwarded-Proto": "blanked by ingress-nginx: the scheme is X-Original-URL's",
    "X-Forwarded-For": "ingress-nginx's own $remote_addr, never the client's list",
    "X-Real-IP": "ingress-nginx's own $remote_addr, never the client's",
    "X-Request-Id": "ingress-nginx sends its $req_id as X-Request-ID",
    "Connection": "keepalive to the upstream is ingress-nginx's business",
}
# What ingress-nginx sets on every proxied location (the /forwardauth/ pages) by itself.
INGRESS_NGINX_PROXY_SETS = {
    "Host",
    "X-Request-ID",
    "X-Real-IP",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Scheme",
    "X-Original-Forwarded-For",
}


# --- loading -----------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")


def build(overlay: str) -> list[dict[str, Any]]:
    """The overlay as kustomize builds it (what ``kubectl apply -k`` sends)."""
    kubectl = require_program("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBE / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def load_one(path: Path, kind: str, name: str) -> dict[str, Any]:
    return find([d for d in yaml.safe_load_all(path.read_text()) if d], kind, name)


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return build(request.param)


DEPLOYMENT = load_one(KUBE / "base" / "deployment.yaml", "Deployment", "forwardauth")
POD = DEPLOYMENT["spec"]["template"]["spec"]
[MAIN] = POD["containers"]
[INIT] = POD["initContainers"]
SECRETS = [d for d in yaml.safe_load_all((KUBE / "secrets.example.yaml").read_text()) if d]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {name: e["value"] for name, e in env_of(container).items() if "value" in e}


def nginx_headers(block: str) -> dict[str, str]:
    """``proxy_set_header NAME VALUE;`` lines of an nginx block, by name (an empty value: "")."""
    found = {}
    for name, value in re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(.*?);", block, re.M):
        found[name] = value.strip().strip('"')
    return found


def nginx_block(text: str, opening: str) -> str:
    start = text.index(opening + " {")
    return text[start : text.index("\n}", start)]


LOCATIONS = (DEPLOY / "nginx" / "forwardauth-locations.conf").read_text()


# --- every file parses, every object is valid ---------------------------------------------------


def test_every_manifest_parses_and_names_its_namespace() -> None:
    files = manifest_files()
    assert len(files) >= 10
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            if doc["kind"] != "Namespace":  # kustomize sets none: each object says where it goes
                assert doc["metadata"].get("namespace"), f"{path}: {doc['kind']} {doc['metadata']['name']}"


def test_every_kustomization_lists_every_file_of_its_folder() -> None:
    """A manifest left out of kustomization.yaml would never be applied."""
    for kustomization in KUBE.rglob("kustomization.yaml"):
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        here = {p.name for p in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert here <= listed, f"{kustomization}: {sorted(here - listed)} not applied"


def test_every_object_is_valid_against_the_kubernetes_schemas(built: list[dict[str, Any]]) -> None:
    kinds = set()
    for doc in [*built, *SECRETS]:
        if doc["kind"] in CRD_KINDS:
            continue
        kinds.add(doc["kind"])
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on the first problem
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Ingress"} <= kinds


def test_the_schemas_catch_a_mistake() -> None:
    """The validator is strict: a misspelt field or a wrong type fails (so the test above can fail)."""
    misspelt = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


# --- the pod: restricted, and everything it writes on an emptyDir ------------------------------


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] != 0
    assert POD["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert POD["automountServiceAccountToken"] is False
    for container in (INIT, MAIN):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context.get("privileged", False) is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "runAsUser" not in context and "runAsGroup" not in context, "the pod's user, as the keys need"
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    namespace = load_one(KUBE / "base" / "namespace.yaml", "Namespace", "forwardauth")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Volumes by mount path."""
    volumes = {v["name"]: v for v in POD["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def under_mount(path: str, container: dict[str, Any]) -> dict[str, Any]:
    for mount_path, volume in mounts(container).items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return volume
    raise AssertionError(f"{path} is on the read-only root filesystem of {container['name']}")


def test_what_forwardauth_writes_is_on_a_memory_emptydir() -> None:
    """The key folder (its lock and markers), the data folder and the metric snapshots (a mkdtemp
    folder in /tmp). In memory: a tmpfs's folder is sticky (1777), so forwardauth accepts folders
    made inside it; a disk emptyDir is 0777 and refused (see the key tests below)."""
    env = plain_env(MAIN)
    for path in (env["FORWARDAUTH_KEYS_DIR"], env["FORWARDAUTH_DATA_DIR"], "/tmp"):
        assert under_mount(path, MAIN)["emptyDir"]["medium"] == "Memory", path
    assert env["FORWARDAUTH_KEYS_DIR"] == plain_env(INIT)["FORWARDAUTH_KEYS_DIR"]
    assert under_mount(env["FORWARDAUTH_KEYS_DIR"], INIT) is under_mount(env["FORWARDAUTH_KEYS_DIR"], MAIN)
    assert plain_env(INIT)["FORWARDAUTH_SIGNING_ALG"] == env["FORWARDAUTH_SIGNING_ALG"]
    assert INIT["image"] == MAIN["image"]
    # The Secret itself is the init container's alone.
    assert all("secret" not in volume for volume in mounts(MAIN).values())


def test_the_deployment_environment_is_a_valid_configuration() -> None:
    """Every FORWARDAUTH_* variable exists, and forwardauth's own parser accepts the values."""
    known = {variable.env for variable in config.VARIABLES}
    for container in (INIT, MAIN):
        names = {name for name in env_of(container) if name.startswith(config.PREFIX)}
        assert names <= known, f"{container['name']}: unknown {sorted(names - known)}"
    environ = plain_env(MAIN)
    for name, entry in env_of(MAIN).items():
        if "valueFrom" in entry:
            environ[name] = {
                "FORWARDAUTH_DATABASE_URL": "postgresql://forwardauth:s3cret@postgres:5432/forwardauth",
                "FORWARDAUTH_REDIS_URL": "redis://redis:6379/0",
            }[name]
    settings = config.load(environ)
    assert settings.host == "0.0.0.0"
    assert settings.port == MAIN["ports"][0]["containerPort"]
    assert settings.workers >= 1 and settings.database_url and settings.redis_url
    assert not settings.embedded


# --- keys: from the Secret to files forwardauth accepts ------------------------------------------


def secret_volume() -> dict[str, Any]:
    [volume] = [v for v in POD["volumes"] if "secret" in v]
    return volume


def kubelet_secret_mode() -> int:
    """The mode the kubelet gives a Secret's files: defaultMode, plus group read with an fsGroup."""
    mode = int(secret_volume()["secret"]["defaultMode"])
    return mode | 0o440 if POD["securityContext"].get("fsGroup") is not None else mode


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    """The Secret as mounted: one key file (as `forwardauth keys rotate` writes it), the kubelet's mode."""
    made = tmp_path / "made"
    safefiles.private_dir(made)
    keys.write_new_key(made, plain_env(MAIN)["FORWARDAUTH_SIGNING_ALG"])
    mounted = tmp_path / "secret"
    mounted.mkdir()
    for path in made.glob("*.pem"):
        shutil.copy(path, mounted / path.name)
        os.chmod(mounted / path.name, kubelet_secret_mode())
    return mounted


def run_init(source: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """The init container's script, for real, with the pod's paths moved under ``run_dir``."""
    [script] = INIT["args"]
    assert INIT["command"] == ["sh", "-c"]
    env = plain_env(INIT)
    mount = next(path for path, volume in mounts(INIT).items() if "emptyDir" in volume)
    env["FORWARDAUTH_KEYS_DIR"] = str(run_dir / Path(env["FORWARDAUTH_KEYS_DIR"]).relative_to(mount))
    env["SOURCE"] = str(source)
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)


def tmpfs_like(path: Path, mode: int) -> Path:
    path.mkdir()
    os.chmod(path, mode)
    return path


def test_the_init_container_copies_the_keys_into_files_forwardauth_accepts(secret_dir: Path, tmp_path: Path) -> None:
    run_dir = tmpfs_like(tmp_path / "run", 0o1777 | stat.S_ISGID)  # a memory emptyDir with an fsGroup
    result = run_init(secret_dir, run_dir)
    assert result.returncode == 0, result.stderr
    assert "signing" in result.stdout  # `forwardauth keys list` found the signing key
    folder = run_dir / "keys"
    assert folder.stat().st_mode & 0o777 == 0o700  # and setgid, inherited from the fsGroup's folder
    assert [stat.S_IMODE(p.stat().st_mode) for p in folder.glob("*.pem")] == [0o600]
    found = keys.inspect(folder)  # the service's own loader and checks
    assert found.problems == [] and len(found.keys) == 1


def test_a_secret_volume_itself_is_refused_as_a_key_folder(secret_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the copy: the Secret's files are group-readable (fsGroup) and the kubelet's (root's)."""
    found = keys.inspect(secret_dir)
    assert found.keys == [] and "readable or writable by other users" in found.problems[0]
    [path] = secret_dir.glob("*.pem")
    os.chmod(path, 0o600)
    monkeypatch.setattr(os, "geteuid", lambda: POD["securityContext"]["runAsUser"])
    with pytest.raises(safefiles.UnsafePath, match="owned by"):
        safefiles.read_checked(path, keys.VARIABLE, secret=True, max_bytes=keys.MAX_KEY_BYTES)


def test_a_disk_emptydir_would_be_refused(secret_dir: Path, tmp_path: Path) -> None:
    """A disk emptyDir is 0777 without the sticky bit: another user could replace the key folder."""
    result = run_init(secret_dir, tmpfs_like(tmp_path / "run", 0o777))
    assert result.returncode != 0 and "writable by other users" in result.stderr


def test_the_init_container_stops_the_pod_without_a_key(tmp_path: Path) -> None:
    """Otherwise each replica would make a key of its own, and refuse the others' tokens."""
    empty = tmp_path / "secret"
    empty.mkdir()
    result = run_init(empty, tmpfs_like(tmp_path / "run", 0o1777))
    assert result.returncode != 0 and "no *.pem file" in result.stderr


def test_the_secrets_hold_what_the_deployment_reads() -> None:
    by_name = {s["metadata"]["name"]: s for s in SECRETS}
    for secret in SECRETS:
        assert secret["metadata"]["namespace"] == DEPLOYMENT["metadata"]["namespace"]
    read = set()
    for entry in env_of(MAIN).values():
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["key"] in by_name[ref["name"]]["stringData"], ref
            assert ref.get("optional") is not True
            read.add((ref["name"], ref["key"]))
    stores = {(name, key) for name in by_name for key in by_name[name]["stringData"] if name.endswith("-stores")}
    assert (
        stores
        == read
        == {("forwardauth-stores", "FORWARDAUTH_DATABASE_URL"), ("forwardauth-stores", "FORWARDAUTH_REDIS_URL")}
    )
    key_secret = by_name[secret_volume()["secret"]["secretName"]]
    assert key_secret["stringData"] and all(name.endswith(".pem") for name in key_secret["stringData"])
    # The example's placeholder password is one forwardauth refuses: it never runs as is.
    with pytest.raises(config.ConfigError, match="placeholder"):
        config.load(
            {"FORWARDAUTH_DATABASE_URL": by_name["forwardauth-stores"]["stringData"]["FORWARDAUTH_DATABASE_URL"]}
        )


# --- probes, Service, PDB, NetworkPolicy ---------------------------------------------------------


def app_routes() -> set[tuple[str, str]]:
    settings = config.load(
        {
            "FORWARDAUTH_SIGNING_ALG": "HS256",
            "FORWARDAUTH_HMAC_SECRET": "x" * 40,
            # nothing connects: the stores connect on first use
            "FORWARDAUTH_DATABASE_URL": "postgresql://forwardauth@127.0.0.1:1/forwardauth",
            "FORWARDAUTH_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    app = create_app(settings, ring=keys.load_ring(settings))
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}


def test_the_probes_are_forwardauths_health_routes() -> None:
    routes = app_routes()
    probes = {kind: MAIN[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    port_names = {p["name"] for p in MAIN["ports"]}
    for probe in probes.values():
        assert ("GET", probe["path"]) in routes, probe
        assert probe["port"] in port_names


def labels_select(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_service_pdb_and_networkpolicy_select_the_pods(built: list[dict[str, Any]]) -> None:
    deployment = find(built, "Deployment", "forwardauth")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    namespace = deployment["metadata"]["namespace"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(built, "Service", "forwardauth", namespace)
    assert labels_select(service["spec"]["selector"], labels)
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = find(built, "PodDisruptionBudget", "forwardauth", namespace)
    assert labels_select(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]  # a drain can still proceed
    policy = find(built, "NetworkPolicy", "forwardauth", namespace)
    assert labels_select(policy["spec"]["podSelector"]["matchLabels"], labels)


def test_the_networkpolicy_admits_only_the_controller_and_prometheus(built: list[dict[str, Any]]) -> None:
    policy = find(built, "NetworkPolicy", "forwardauth")
    controller = (
        "ingress-nginx" if any(d.get("spec", {}).get("ingressClassName") == "nginx" for d in built) else "traefik"
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    sources = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every pod"
        assert [p["port"] for p in rule["ports"]] == ["http"]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, peer
            sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert sources == {controller, "monitoring"}


# --- ingress-nginx: the same description of the request as the shipped snippet ---------------------


NGINX_DOCS = build("ingress-nginx") if shutil.which("kubectl") else []


def nginx_ingress(name: str) -> dict[str, Any]:
    docs = NGINX_DOCS or [
        d
        for p in (KUBE / "ingress-nginx").glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "Ingress"
    ]
    return find(docs, "Ingress", name)


def ingress_notes(ingress: dict[str, Any]) -> dict[str, str]:
    return {k.removeprefix(NGINX): v for k, v in ingress["metadata"]["annotations"].items()}


def protected_headers(names: HeaderNames | None = None) -> list[str]:
    """The headers deploy/nginx's protect snippet passes on, rendered with ``names`` (default: X-Auth-*)."""
    template = (DEPLOY / "nginx" / "forwardauth-protect.conf").read_text()
    protect = demo.render(template, demo.header_values(names or HeaderNames()))
    return [name for name, value in nginx_headers(protect).items() if value.startswith("$forwardauth_")]


def test_identity_headers_are_those_the_nginx_snippet_passes_on() -> None:
    given = ingress_notes(nginx_ingress("app"))["auth-response-headers"].split(",")
    assert given == protected_headers() == list(IDENTITY_HEADERS)


def test_auth_url_and_signin_reach_forwardauth() -> None:
    notes = ingress_notes(nginx_ingress("app"))
    url = urlsplit(notes["auth-url"])
    service = load_one(KUBE / "base" / "service.yaml", "Service", "forwardauth")
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert ("*", url.path) in app_routes()
    signin = urlsplit(notes["auth-signin"])
    assert signin.path == plain_env(MAIN)["FORWARDAUTH_LOGIN_URL"]
    assert ("GET", signin.path.removeprefix("/forwardauth")) in app_routes()
    assert "auth-method" not in notes  # ingress-nginx would add a second X-Original-URI


def test_the_auth_subrequest_describes_the_request_as_the_shipped_snippet_does() -> None:
    """ingress-nginx's own headers plus auth-snippet's: every header the shipped auth location sets,
    with the same value, except the listed differences; and nothing set twice."""
    shipped = nginx_headers(nginx_block(LOCATIONS, AUTH_LOCATION))
    snippet = nginx_headers(ingress_notes(nginx_ingress("app"))["auth-snippet"])
    assert not {h.lower() for h in snippet} & {h.lower() for h in INGRESS_NGINX_AUTH_SETS}, "set twice"
    sent = {name.lower(): value for name, value in (INGRESS_NGINX_AUTH_SETS | snippet).items()}
    for name, value in shipped.items():
        if name in KNOWN_DIFFERENCES:
            continue
        assert sent.get(name.lower()) == value, (
            f"{name}: the snippet sends {value!r}, ingress-nginx {sent.get(name.lower())!r}"
        )
    assert set(KNOWN_DIFFERENCES) <= set(shipped)  # no stale entry
    assert snippet["X-Original-Host"] == "$host"


def test_the_pages_location_is_guarded_as_the_shipped_one() -> None:
    pages = nginx_ingress("forwardauth-pages")
    notes = ingress_notes(pages)
    [path] = pages["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/forwardauth/(.*)" and notes["rewrite-target"] == "/$1"
    assert notes["use-regex"] == "true" and notes["x-forwarded-prefix"] == "/forwardauth"
    assert path["backend"]["service"]["name"] == "forwardauth"
    snippet = notes["configuration-snippet"]
    blanked = {name for name, value in nginx_headers(snippet).items() if value == ""}
    shipped_blanked = {n for n, v in nginx_headers(nginx_block(LOCATIONS, PAGES_LOCATION)).items() if v == ""}
    assert blanked == shipped_blanked - INGRESS_NGINX_PROXY_SETS - {"Connection"}
    # The shipped refusal of a raw path nginx would resolve elsewhere, on both Ingresses.
    [raw_rule] = re.findall(r'if \(\$request_uri ~\* "(.*?)"\)', LOCATIONS)
    for ingress in (pages, nginx_ingress("app")):
        assert f'if ($request_uri ~* "{raw_rule}")' in ingress_notes(ingress)["configuration-snippet"]


def not_public_nginx() -> re.Pattern[str]:
    [rule] = re.findall(
        r'if \(\$uri ~\* "(.*?)"\) \{\s*return 404;',
        ingress_notes(nginx_ingress("forwardauth-pages"))["configuration-snippet"],
    )
    return re.compile(rule, re.I)  # ~* ignores case, as ingress-nginx's regex locations do


def dynamic_yml(names: HeaderNames | None = None) -> dict[str, Any]:
    """dynamic.yml with ``names`` (default: X-Auth-*, what the manifests but the *-authelia overlays name)."""
    values = {
        **demo.header_values(names or HeaderNames()),
        "FORWARDAUTH_ADDR": "${FORWARDAUTH_ADDR}",
        "APP_ADDR": "${APP_ADDR}",
    }
    return yaml.safe_load(demo.render((DEPLOY / "traefik" / "dynamic.yml").read_text(), values))["http"]


@pytest.mark.parametrize(
    "path",
    [
        "/forwardauth/metrics",
        "/forwardauth/readyz",
        "/forwardauth/auth",
        "/forwardauth/auth/",
        "/forwardauth/auth/envoy/x",
        "/forwardauth/login",
        "/forwardauth/authorize",
        "/forwardauth/healthz",
        "/forwardauth/oauth/token",
    ],
)
def test_the_same_paths_are_not_public_through_either_controller(path: str) -> None:
    traefik = re.compile(dynamic_yml()["middlewares"]["forwardauth-not-public"]["replacePathRegex"]["regex"])
    hidden = bool(traefik.search(path))
    assert bool(not_public_nginx().search(path)) is hidden
    assert bool(not_public_nginx().search(path.upper().replace("/FORWARDAUTH", "/forwardauth"))) is hidden


# --- Traefik: the CRD mirrors dynamic.yml --------------------------------------------------------


TRAEFIK_DIR = KUBE / "traefik"


def traefik_docs() -> list[dict[str, Any]]:
    return [
        d
        for p in sorted(TRAEFIK_DIR.glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") in ("Middleware", "Ingress")
    ]


def test_the_traefik_middlewares_are_dynamic_ymls() -> None:
    """Field for field (the address aside): the two never drift apart, and every key is one the real
    Traefik takes (the end-to-end tests run dynamic.yml; the CRD's fields are the file provider's)."""
    shipped = dynamic_yml()["middlewares"]
    docs = traefik_docs()
    middlewares = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Middleware"}
    assert set(middlewares) == set(shipped)
    for name, doc in middlewares.items():
        assert doc["apiVersion"] == "traefik.io/v1alpha1"
        spec = dict(doc["spec"])
        if "forwardAuth" in spec:
            spec["forwardAuth"] = {k: v for k, v in spec["forwardAuth"].items() if k != "address"}
            expected = {k: v for k, v in shipped[name]["forwardAuth"].items() if k != "address"}
            assert spec == {"forwardAuth": expected}
            assert spec["forwardAuth"]["authResponseHeaders"] == list(IDENTITY_HEADERS)
            address = urlsplit(doc["spec"]["forwardAuth"]["address"])
            assert address.hostname == "forwardauth.forwardauth.svc.cluster.local"
            assert address.port == MAIN["ports"][0]["containerPort"] and address.path == "/auth"
        else:
            assert spec == shipped[name], name


def test_the_traefik_ingresses_use_the_middlewares_as_dynamic_yml_routes_do() -> None:
    docs = traefik_docs()
    middlewares = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Middleware"}
    routers = dynamic_yml()["routers"]
    for ingress_name, router in (("forwardauth-pages", "forwardauth"), ("app", "app")):
        ingress = find(docs, "Ingress", ingress_name)
        namespace = ingress["metadata"]["namespace"]
        refs = ingress["metadata"]["annotations"][TRAEFIK_MIDDLEWARES].split(",")
        names = []
        for ref in refs:
            qualified, provider = ref.split("@")
            assert provider == "kubernetescrd"
            # Traefik names a CRD middleware <namespace>-<name>; the Ingress's own namespace
            assert qualified.startswith(namespace + "-"), ref
            names.append(qualified.removeprefix(namespace + "-"))
            assert (namespace, names[-1]) in middlewares, ref
        assert names == routers[router]["middlewares"]  # the same ones, in the same order
    [path] = find(docs, "Ingress", "forwardauth-pages")["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/forwardauth/" and path["pathType"] == "Prefix"


def iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def test_no_placeholder_is_left_for_envsubst() -> None:
    """These files are applied as they are: no ${NAME} of the proxy files' kind."""
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert not any(re.search(r"\$\{[A-Z_]+\}", s) for s in iter_strings(doc)), path


# --- the *-authelia overlays: Authelia's header names, passed on and stripped --------------------


def names_in_effect(docs: list[dict[str, Any]]) -> HeaderNames:
    """The header names the built Deployment's forwardauth answers with (its own parser's reading)."""
    [main] = find(docs, "Deployment", "forwardauth")["spec"]["template"]["spec"]["containers"]
    stores = {"FORWARDAUTH_DATABASE_URL": "postgresql://u@db/fa", "FORWARDAUTH_REDIS_URL": "redis://redis:6379/0"}
    return config.load({**plain_env(main), **stores}).header_names


AUTHELIA = HeaderNames(**HEADER_PRESETS["authelia"])


def test_the_ingress_nginx_authelia_overlay_passes_on_the_names_forwardauth_answers_with() -> None:
    docs = build("ingress-nginx-authelia")
    names = names_in_effect(docs)
    assert names.all == AUTHELIA.all and "Remote-Name" in names.all
    given = ingress_notes(find(docs, "Ingress", "app"))["auth-response-headers"].split(",")
    # as the shipped nginx snippet rendered with those names: each replaced, so none comes from a client
    assert given == protected_headers(names)
    assert set(given) == set(names.all)


def test_the_traefik_authelia_overlay_is_dynamic_yml_rendered_with_those_names() -> None:
    docs = build("traefik-authelia")
    names = names_in_effect(docs)
    assert names.all == AUTHELIA.all
    built = find(docs, "Middleware", "forwardauth", "app")["spec"]["forwardAuth"]
    expected = dynamic_yml(names)["middlewares"]["forwardauth"]["forwardAuth"]
    assert {k: v for k, v in built.items() if k != "address"} == {k: v for k, v in expected.items() if k != "address"}
    strips = re.compile(built["authResponseHeadersRegex"])
    for name in names.all:  # every spelling a backend may read as the name, any case
        for spelling in (name, name.replace("-", "_"), name.replace("-", ".").upper(), name.lower()):
            assert strips.search(spelling), spelling
    assert not strips.search("Remote-Users") and not strips.search("Accept")
