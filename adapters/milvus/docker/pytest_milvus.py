"""pytest-docker fixtures for Milvus standalone from ``docker-compose.yml`` beside this file.

``milvus_docker_uri`` (session scope) brings the compose project up on free loopback ports, waits
until Milvus answers, yields ``milvus://127.0.0.1:PORT``, and tears the project (volumes included)
down at the end. Without a Docker engine (``docker info`` fails) it skips and says why.

adapters/milvus/tests/conftest.py loads these fixtures from this file, so that the Milvus adapter's
test suite runs against Docker too where a Docker engine exists. The fixture drives pytest-docker's
``get_docker_services`` itself instead of overriding the global ``docker_compose_file`` fixture,
so it cannot clash with another plugin's compose project in the same session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["milvus_docker_uri", "docker_unavailable_reason", "COMPOSE_FILE"]

COMPOSE_FILE = Path(__file__).resolve().parent / "docker-compose.yml"


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers ``docker info``, else why not."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker command is not installed"
    try:
        res = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no Docker engine: `docker info` failed ({e})"
    if res.returncode != 0:
        detail = " ".join((res.stderr or res.stdout).split())[:200]
        return f"no Docker engine: `docker info` failed ({detail})"
    return None


def _answers(port: int) -> bool:
    try:
        from pymilvus import MilvusClient

        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        client = MilvusClient(f"http://127.0.0.1:{port}", timeout=5, alias=f"probe-{port}")
        try:
            client.list_collections()
        finally:
            client.close()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture(scope="session")
def milvus_docker_uri() -> Iterator[str]:
    from hashplug.testing.compose import compose_unavailable

    reason = docker_unavailable_reason() or compose_unavailable(COMPOSE_FILE)
    if reason:
        pytest.skip(reason)
    from pytest_docker.plugin import get_docker_services

    os.environ.setdefault("MILVUS_PORT", "")  # empty: Docker picks free host ports
    os.environ.setdefault("MILVUS_HEALTH_PORT", "")
    project = f"hashplug-milvus-{uuid.uuid4().hex[:8]}"
    with get_docker_services(
        "docker compose",
        str(COMPOSE_FILE),
        project,
        ["up --build -d --wait"],
        ["down -v"],
    ) as services:
        port = services.port_for("standalone", 19530)
        services.wait_until_responsive(check=lambda: _answers(port), timeout=300, pause=2)
        yield f"milvus://127.0.0.1:{port}"
