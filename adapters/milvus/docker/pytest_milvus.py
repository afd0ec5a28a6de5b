"""pytest-docker fixtures: Milvus standalone in Docker, from the compose files beside this file.

``milvus_docker`` (session scope): where no Docker daemon answers but one can be started (root,
``dockerd`` installed), starts it (host network only) and stops it at the end; builds or reuses
the local image ``hashplug/milvus:<hash>`` (docker/hashplug_docker.py, no registry needed), brings
``docker-compose.local.yml`` up on a free loopback port, waits until Milvus answers, and yields a
:class:`MilvusContainer`; the project (volumes included) goes down in a finalizer. Where Docker
cannot run, the image cannot be built, or MILVUS_PORT is taken, it skips and says why.
``hashplug_image``: the hashplug image (docker/docker-compose.hashplug.yml runs it), built or reused.
With a registry, ``HASHPLUG_MILVUS_COMPOSE=docker-compose.yml`` runs the official images instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hashplug.bench.datasets import default_embeddings_path

__all__ = [
    "milvus_docker",
    "milvus_docker_uri",
    "docker_daemon",
    "hashplug_image",
    "hashplug_suites",
    "docker_unavailable_reason",
    "COMPOSE_FILE",
]

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / os.environ.get("HASHPLUG_MILVUS_COMPOSE", "docker-compose.local.yml")
_HELPER = HERE.parents[2] / "docker" / "hashplug_docker.py"


def _helper() -> Any:
    spec = importlib.util.spec_from_file_location("hashplug_docker", _HELPER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers ``docker info``, else why not."""
    reason: str | None = _helper().daemon_reason()
    return reason


def compose_cmd() -> str:
    """``docker-compose`` (v1) where installed, else ``docker compose``."""
    if shutil.which("docker-compose"):
        return "docker-compose"
    return "docker compose"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class MilvusContainer:
    """The running compose service: its port, and kill / restart for the fault tests."""

    port: int
    project: str
    compose: list[str]

    @property
    def uri(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def _compose(self, *args: str) -> None:
        subprocess.run([*self.compose, *args], check=True, capture_output=True, timeout=300)

    def kill(self) -> None:
        """SIGKILL the container (no shutdown), through the docker CLI (faster than compose's)."""
        label = f"label=com.docker.compose.project={self.project}"
        ids = subprocess.run(["docker", "ps", "-q", "--filter", label], capture_output=True,
                             text=True, check=True, timeout=60).stdout.split()
        subprocess.run(["docker", "kill", "-s", "KILL", *ids], check=True, capture_output=True, timeout=60)

    def start(self, timeout: float = 240.0) -> None:
        """Start the (killed) container again and wait until Milvus answers."""
        self._compose("start", "standalone")
        _wait(self.port, timeout)


def _wait(port: int, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if _answers(port):
            return
        time.sleep(2)
    raise TimeoutError(f"Milvus in Docker did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def docker_daemon(request: pytest.FixtureRequest) -> Any:
    """Return the helper module (docker/hashplug_docker.py) once a Docker daemon answers.

    The daemon is started here (host network only) when none did, and stopped at the end of the
    session.
    """
    h = _helper()
    try:
        if h.start_daemon():
            request.addfinalizer(h.stop_daemon)
    except RuntimeError as e:
        pytest.skip(str(e))
    return h


#: The user's MILVUS_PORT (milvus_docker later sets the variable for compose to the port it took).
_USER_PORT = os.environ.get("MILVUS_PORT")


def milvus_port() -> int:
    """``$MILVUS_PORT`` as given, else a free loopback port; skips when that port is already taken."""
    port = int(_USER_PORT or _free_port())
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            pytest.skip(f"MILVUS_PORT={port} is already taken on 127.0.0.1 ({e})")
    return port


def milvus_image(h: Any) -> str:
    """``$MILVUS_IMAGE``, else the local image, built or reused (skips when it cannot be built)."""
    if "MILVUS_IMAGE" not in os.environ:
        try:
            os.environ["MILVUS_IMAGE"] = h.build("milvus")
        except RuntimeError as e:
            pytest.skip(f"the Milvus image could not be built here: {e}")
    return os.environ["MILVUS_IMAGE"]


@pytest.fixture(scope="session")
def hashplug_image(docker_daemon: Any) -> str:
    """Build or reuse ``hashplug/hashplug:<hash>`` from this checkout.

    Skips when its dependency image cannot be built (it needs the network once); fails when the
    checkout does not install.
    """
    try:
        docker_daemon.build("hashplug-deps")
    except RuntimeError as e:
        pytest.skip(f"the hashplug dependency image could not be built here: {e}")
    try:
        return str(docker_daemon.build("hashplug"))
    except RuntimeError as e:
        pytest.fail(str(e))


HASHPLUG_COMPOSE = HERE.parents[2] / "docker" / "docker-compose.hashplug.yml"


@pytest.fixture(scope="session")
def hashplug_suites(docker_daemon: Any, hashplug_image: str) -> Callable[..., tuple[int, str]]:
    """Return ``run(suites, timeout=900)``, which runs docker/docker-compose.hashplug.yml.

    Up (the hashplug image runs the named conformance suites, Milvus against a Milvus container
    on a free loopback port), then down (volumes too, also on timeout); ``run`` returns the
    hashplug container's exit code and the output.
    """

    def run(suites: str, timeout: float = 900) -> tuple[int, str]:
        env = {**os.environ, "HASHPLUG_IMAGE": hashplug_image, "HASHPLUG_SUITES": suites,
               "MILVUS_IMAGE": milvus_image(docker_daemon), "MILVUS_PORT": str(milvus_port())}
        data = default_embeddings_path()
        if "HASHPLUG_DATA_DIR" not in env and data.name == "fmnist_effnet.npz" and data.is_file():
            env["HASHPLUG_DATA_DIR"] = str(data.parent)
        compose = [*compose_cmd().split(), "-f", str(HASHPLUG_COMPOSE),
                   "-p", f"hashplug-suites-{uuid.uuid4().hex[:8]}"]
        try:
            res = subprocess.run([*compose, "--ansi", "never", "up", "--abort-on-container-exit",
                                  "--exit-code-from", "hashplug"], capture_output=True, text=True,
                                 env=env, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout)
            pytest.fail(f"the hashplug suites ran over {timeout:.0f} s: {out[-2000:]}")
        finally:
            subprocess.run([*compose, "down", "-v"], capture_output=True, env=env, timeout=300)
        return res.returncode, res.stdout + res.stderr

    return run


@pytest.fixture(scope="session")
def milvus_docker(docker_daemon: Any) -> Iterator[MilvusContainer]:
    env = os.environ
    if COMPOSE_FILE.name == "docker-compose.local.yml":
        milvus_image(docker_daemon)
    port = milvus_port()
    env["MILVUS_PORT"] = str(port)
    project = f"hashplug-milvus-{uuid.uuid4().hex[:8]}"
    compose = [*compose_cmd().split(), "-f", str(COMPOSE_FILE), "-p", project]
    from pytest_docker.plugin import get_docker_services

    with get_docker_services(compose_cmd(), str(COMPOSE_FILE), project, ["up -d"], ["down -v"]):
        _wait(port, 300)
        yield MilvusContainer(port, project, compose)


@pytest.fixture(scope="session")
def milvus_docker_uri(request: pytest.FixtureRequest) -> str:
    """Return ``milvus://127.0.0.1:PORT`` of :func:`milvus_docker`, or ``$HASHPLUG_MILVUS_URI``.

    The latter where set (the hashplug image runs the suite against a Milvus container started
    beside it).
    """
    uri = os.environ.get("HASHPLUG_MILVUS_URI")
    if uri:
        return uri
    return str(request.getfixturevalue("milvus_docker").uri)
