"""docker-compose.yml cannot run here (no Docker engine), so it is checked by reading it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwardauth import config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
KNOWN = {v.env for v in config.VARIABLES} | {v.env + "_FILE" for v in config.VARIABLES if v.secret}
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR} / ${VAR:?message} interpolation, with a stand-in for every variable."""
    return re.sub(r"\$\{([A-Z_]+)(:[?-][^}]*)?\}", "stand-in", value)


def test_services_and_health_ordering() -> None:
    assert {"postgres", "redis", "forwardauth", "nginx", "app"} <= set(SERVICES)
    for store in ("postgres", "redis", "forwardauth"):
        assert "healthcheck" in SERVICES[store], store
    depends = SERVICES["forwardauth"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert SERVICES["nginx"]["depends_on"]["forwardauth"]["condition"] == "service_healthy"


def test_forwardauth_environment_is_known_and_valid() -> None:
    environment = {k: interpolate(str(v)) for k, v in SERVICES["forwardauth"]["environment"].items()}
    unknown = set(environment) - KNOWN
    assert not unknown, f"variables forwardauth does not know: {unknown}"
    settings = config.load(environment)
    assert not settings.embedded and settings.host == "0.0.0.0"


def test_no_secret_is_committed() -> None:
    password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD")
    assert ".env" in (ROOT / ".gitignore").read_text().split()


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


def test_build_context_has_a_dockerfile() -> None:
    assert SERVICES["forwardauth"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER forwardauth" in dockerfile and "HEALTHCHECK" in dockerfile
