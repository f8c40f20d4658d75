"""The production stack's files: docker-compose.yml and the Dockerfile.

Docker cannot run on our machines, so the compose file is checked two ways: its structure here,
and `docker compose config` (or the `docker-compose` v1 client) where a client is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"],
                                 capture_output=True).returncode == 0:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def test_compose_runs_the_production_roles() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "api", "worker", "minio"} <= set(services)
    assert services["minio"]["profiles"] == ["s3"]
    api_command = " ".join(services["api"]["command"])
    assert "alembic upgrade head &&" in api_command and "uvicorn" in api_command
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["build"]["args"]["EXTRAS"] == "engine"
    assert "unlearn,preview" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for role in ("api", "worker"):
        env = services[role]["environment"]
        assert env["LETHE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["LETHE_BROKER_URL"].startswith("redis://")
        assert env["LETHE_ENV"] == "production"


def test_dockerfile_builds_both_roles_from_one_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in text and "${EXTRAS:+[$EXTRAS]}" in text
    for folder in ("app", "workers", "lethe", "migrations"):
        assert f"COPY {folder} ./{folder}" in text


@pytest.mark.skipif(compose_client() is None, reason="no docker compose client on this machine")
def test_docker_compose_client_validates_the_file() -> None:
    client = compose_client() or []
    for profile in ([], ["--profile", "s3"]):
        run = subprocess.run([*client, "-f", str(REPO / "docker-compose.yml"), *profile,
                              "config", "-q"], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, run.stderr
