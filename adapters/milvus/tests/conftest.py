"""Real Milvus engines for the tests: a standalone server (PyPI ``milvus``), Milvus Lite, Docker.

- ``milvus_server``: one Milvus 2.3.5 standalone server for the session, started from the ``milvus``
  package in a temporary directory on free loopback ports, stopped at the end of the session.
- ``lite_db``: one Milvus Lite 2.5 file for the session.
- ``milvus_docker_uri``: Milvus standalone from ``adapters/milvus/docker/docker-compose.yml`` through
  pytest-docker, skipped (saying why) where no Docker engine answers.
Each test gets fresh collection names (``fresh_name``) and drops what it created.
"""

from __future__ import annotations

import importlib.util
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DOCKER_FIXTURES = Path(__file__).resolve().parents[1] / "docker" / "pytest_milvus.py"

# milvus 2.3.5 and milvus-lite 2.5.1 import pkg_resources, which warns on import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def _load_docker_fixtures() -> None:
    """Expose adapters/milvus/docker's pytest-docker fixtures here (that folder is not a package)."""
    if not DOCKER_FIXTURES.exists():
        return
    spec = importlib.util.spec_from_file_location(
        "hashplug_milvus_docker_fixtures", DOCKER_FIXTURES
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in mod.__all__:
        globals()[name] = getattr(mod, name)


_load_docker_fixtures()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Milvus standalone server on 127.0.0.1, for the whole session."""
    try:
        from hashplug_milvus.server import EmbeddedMilvus
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"the Milvus server package is not installed: {e}")
    try:
        import milvus  # noqa: F401
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"pip install 'milvus==2.3.5' 'setuptools<81' to run the server tests ({e})")
    srv = EmbeddedMilvus(tmp_path_factory.mktemp("milvus-server"))
    try:
        srv.start()
    except BaseException:
        srv.kill()
        raise
    try:
        yield srv
    finally:
        srv.stop(timeout=2)


@pytest.fixture(scope="session")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("milvus_lite", reason="pip install 'milvus-lite==2.5.1' 'setuptools<81'")
    return tmp_path_factory.mktemp("milvus-lite") / "codes.db"


@pytest.fixture
def fresh_name() -> Callable[[str], str]:
    """Collection names unique to this test (``t<hex>_<name>``)."""
    tag = uuid.uuid4().hex[:8]
    return lambda name: f"t{tag}_{name}"


@pytest.fixture
def cleanup() -> Iterator[list[object]]:
    """Stores appended here are dropped and closed after the test."""
    stores: list[object] = []
    yield stores
    for s in stores:
        try:
            s.drop()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - best effort; the server is session-scoped
            pass
        s.close()  # type: ignore[attr-defined]
