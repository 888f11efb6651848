"""docker-compose.yml cannot run here (no Docker engine), so it is checked by reading it, and
against the Compose Specification's JSON schema (tests/data/compose-spec.json, from
compose-spec/compose-spec, schema/compose-spec.json at 170098ba, Apache-2.0)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from forwardauth import config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
VARIABLES = {v.env for v in config.VARIABLES}
KNOWN = VARIABLES | {v.env + "_FILE" for v in config.VARIABLES if v.secret}
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR} / ${VAR:?message} interpolation, with a stand-in for every variable."""
    return re.sub(r"\$\{([A-Z_]+)(:[?-][^}]*)?\}", "stand-in", value)


def forwardauth_environment(interpolated: bool = True) -> dict[str, str]:
    environment = SERVICES["forwardauth"]["environment"]
    return {k: interpolate(str(v)) if interpolated else str(v) for k, v in environment.items()}


def test_the_three_services_exist() -> None:
    assert {"postgres", "redis", "forwardauth"} <= set(SERVICES)
    assert SERVICES["forwardauth"]["build"] == "."


def test_stores_have_health_checks() -> None:
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert SERVICES["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "healthcheck" in SERVICES["forwardauth"]


def test_forwardauth_waits_for_healthy_stores() -> None:
    depends = SERVICES["forwardauth"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def test_a_proxy_waits_for_a_healthy_forwardauth() -> None:
    for name, service in SERVICES.items():
        if "forwardauth" in service.get("depends_on", {}):
            assert service["depends_on"]["forwardauth"]["condition"] == "service_healthy", name


def test_every_forwardauth_variable_is_real() -> None:
    prefixed = {k for k in SERVICES["forwardauth"]["environment"] if k.startswith(config.PREFIX)}
    unknown = prefixed - KNOWN
    assert not unknown, f"variables forwardauth does not know: {unknown}"


@pytest.mark.parametrize("interpolated", [False, True], ids=["as-given", "interpolated"])
def test_the_environment_loads(interpolated: bool) -> None:
    settings = config.load(forwardauth_environment(interpolated))
    assert not settings.embedded, "both stores must be configured: no embedded servers in a container"
    assert settings.host == "0.0.0.0"
    assert settings.database_url is not None and "@postgres:" in settings.database_url
    assert settings.redis_url is not None and "//redis:" in settings.redis_url


def test_keys_persist_in_a_volume() -> None:
    data_dir = forwardauth_environment()["FORWARDAUTH_DATA_DIR"]
    targets = {volume.split(":")[1] for volume in SERVICES["forwardauth"]["volumes"]}
    assert data_dir in targets


def test_no_secret_is_committed() -> None:
    password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD")
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_mounted_files_exist_and_their_placeholders_are_set(service: str) -> None:
    environment = SERVICES[service].get("environment", {})
    for volume in SERVICES[service].get("volumes", []):
        source = volume.split(":")[0]
        if not source.startswith("."):
            assert source in COMPOSE["volumes"], f"{service}: undeclared volume {source}"
            continue
        path = ROOT / source
        assert path.is_file(), f"{service} mounts {source}, which does not exist"
        missing = set(PLACEHOLDER.findall(path.read_text())) - set(environment)
        assert not missing, f"{service}: {source} needs {missing}"


def test_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile and "pip install -e" not in dockerfile
    assert "USER forwardauth" in dockerfile
    assert "FORWARDAUTH_HOST=0.0.0.0" in dockerfile and "EXPOSE 8080" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'CMD ["forwardauth", "serve"]' in dockerfile
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in copied.split():
            assert (ROOT / source).exists(), source


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = [f"{list(e.instance_path)}: {e.message}" for e in jsonschema_rs.validator_for(schema).iter_errors(COMPOSE)]
    assert errors == []


def test_published_ports_are_on_loopback_only() -> None:
    """ "localhost only" must be true: a port without an address is published on every interface."""
    published = [(name, str(port)) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert published, "nginx must be reachable on this machine"
    for name, port in published:
        assert port.startswith(("127.0.0.1:", "[::1]:")), f"{name} publishes {port} on every interface"


def test_the_database_password_must_be_chosen() -> None:
    """Compose refuses an unset or empty password; .env.example ships none; forwardauth refuses the old placeholder."""
    for where in (
        SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"],
        SERVICES["forwardauth"]["environment"]["FORWARDAUTH_DATABASE_URL"],
    ):
        assert "${POSTGRES_PASSWORD:?" in where and "${POSTGRES_PASSWORD}" not in where
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example == {"POSTGRES_PASSWORD": ""}
    url = SERVICES["forwardauth"]["environment"]["FORWARDAUTH_DATABASE_URL"]
    placeholder = re.sub(r"\$\{POSTGRES_PASSWORD[^}]*\}", "change-me", url)
    with pytest.raises(config.ConfigError, match=r"^FORWARDAUTH_DATABASE_URL: .*placeholder"):
        config.load({**forwardauth_environment(), "FORWARDAUTH_DATABASE_URL": placeholder})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://forwardauth:change-me@postgres:5432/forwardauth",
        "postgres://u:CHANGEME@db/x",
        "postgresql://u:change%2Dme@db/x",
        "postgresql://u@db/x?password=change-me",
    ],
)
def test_forwardauth_refuses_the_placeholder_password(url: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load({"FORWARDAUTH_DATABASE_URL": url})
    assert str(refused.value).startswith("FORWARDAUTH_DATABASE_URL: ") and "set a password of your own" in str(
        refused.value
    )
    assert config.load({"FORWARDAUTH_DATABASE_URL": re.sub("(?i)change", "k3pt-s3cret", url)}).database_url


def test_only_the_proxy_is_trusted() -> None:
    """Not every private range: only nginx's fixed address, from which the other containers are kept."""
    trusted = config.load(forwardauth_environment()).trusted_proxies
    nginx = SERVICES["nginx"]["networks"]["default"]["ipv4_address"]
    assert [str(n) for n in trusted] == [f"{nginx}/32"]
    (pool,) = COMPOSE["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    assert ipaddress.ip_address(nginx) in subnet and ipaddress.ip_address(nginx) not in dynamic
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]
    for name, service in SERVICES.items():  # nobody else gets a fixed address, nor another network
        assert name == "nginx" or "networks" not in service, name
