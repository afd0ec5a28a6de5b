"""pytest-docker fixtures: a real Qdrant server from ``adapters/qdrant/docker/docker-compose.yml``.

Use from a test module (it is loaded by path, so no package or conftest is needed)::

    qdrant_server = load_fixture_module().qdrant_server   # see test_qdrant_server.py

``qdrant_server`` is session-scoped and yields ``{"host", "port", "grpc_port", "api_key"}``. Where
no Docker engine answers (``docker info`` fails, or there is no ``docker`` CLI) every test that
uses it is skipped with the reason "no Docker engine ..."; without pytest-docker installed, with
the reason to install ``hashplug-qdrant[test]``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

COMPOSE_FILE = Path(__file__).with_name("docker-compose.yml")
API_KEY = os.environ.get("QDRANT_API_KEY", "hashplug-test-key")

__all__ = [
    "COMPOSE_FILE",
    "API_KEY",
    "docker_engine_status",
    "docker_compose_file",
    "docker_compose_project_name",
    "qdrant_server",
]


@functools.lru_cache(maxsize=1)
def docker_engine_status() -> str | None:
    """None when a Docker engine answers, else why not (starts with "no Docker engine")."""
    exe = shutil.which("docker")
    if exe is None:
        return "no Docker engine: the docker CLI is not installed"
    try:
        r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no Docker engine: `docker info` failed ({e})"
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        return f"no Docker engine: `docker info` failed ({last[0][:200]})"
    return None


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"hashplug-qdrant-{os.getpid()}"


def _ready(host: str, port: int) -> bool:
    req = urllib.request.Request(f"http://{host}:{port}/readyz", headers={"api-key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def qdrant_server(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    from hashplug.testing.compose import compose_unavailable

    why = docker_engine_status() or compose_unavailable(COMPOSE_FILE)
    if why is not None:
        pytest.skip(why)
    # Empty host ports ("127.0.0.1::6333"): Docker picks free ones, unless the user fixed them.
    os.environ.setdefault("QDRANT_HTTP_PORT", "")
    os.environ.setdefault("QDRANT_GRPC_PORT", "")
    os.environ.setdefault("QDRANT_API_KEY", API_KEY)
    try:
        services = request.getfixturevalue("docker_services")
    except pytest.FixtureLookupError:
        pytest.skip("pytest-docker is not installed: pip install 'hashplug-qdrant[test]'")
    host = request.getfixturevalue("docker_ip")
    port = services.port_for("qdrant", 6333)
    grpc_port = services.port_for("qdrant", 6334)
    services.wait_until_responsive(check=lambda: _ready(host, port), timeout=90.0, pause=0.5)
    yield {"host": host, "port": port, "grpc_port": grpc_port, "api_key": API_KEY}
