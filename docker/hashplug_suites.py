"""The hashplug image's command: the store conformance suites against the engines, with pytest.

``HASHPLUG_SUITES`` (space-separated, default all): ``milvus`` (the Milvus server at
``$HASHPLUG_MILVUS_URI``, e.g. the compose file's Milvus container; waits until it answers),
``lancedb`` and ``qdrant-edge`` (embedded engines, no server). Extra arguments go to pytest.
The exit code is pytest's. Numba's compiled kernels are kept in ``/numba-cache`` when mounted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = "/opt/hashplug"
SUITES = {
    "milvus": ["adapters/milvus/tests/test_milvus_conformance.py::TestDockerConformance"],
    "lancedb": [
        "adapters/lancedb/tests/test_lancedb_store.py::TestLanceDBConformance",
        "adapters/lancedb/tests/test_lancedb_store.py::TestLanceDBConformanceIndexed",
    ],
    "qdrant-edge": [
        "adapters/qdrant/tests/test_qdrant_edge.py::TestQdrantEdgeConformance",
        "adapters/qdrant/tests/test_qdrant_edge.py::TestQdrantEdgeConformanceFloat32",
    ],
}


def wait_for_milvus(uri: str, timeout: float) -> None:
    """Return once the Milvus server at ``milvus://HOST:PORT`` lists its collections."""
    from pymilvus import MilvusClient

    u = urlparse(uri)
    if u.scheme != "milvus" or not u.hostname or not u.port:
        raise SystemExit(f"HASHPLUG_MILVUS_URI must be milvus://HOST:PORT, got {uri!r}")
    t0, last = time.monotonic(), ""
    while time.monotonic() - t0 < timeout:
        try:
            client = MilvusClient(f"http://{u.hostname}:{u.port}", timeout=5)
            try:
                client.list_collections()
            finally:
                client.close()
            print(f"milvus answers at {u.hostname}:{u.port} after {time.monotonic() - t0:.0f} s", flush=True)
            return
        except Exception as e:  # noqa: BLE001 - not up yet
            last = str(e)[:200]
            time.sleep(2)
    raise SystemExit(f"Milvus at {uri} did not answer within {timeout:.0f} s ({last})")


def use_numba_cache(root: str = "/numba-cache") -> None:
    """Point Numba's cache at ``root/<hash of the kernel sources>`` when ``root`` is mounted.

    Numba checks a cached function's own file only, so a change to any kernel file starts a fresh
    folder; folders unused for a week go.
    """
    if not os.path.isdir(root):
        return
    import hashlib
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("hashplug")
    assert spec is not None and spec.origin is not None
    kernels = sorted(Path(spec.origin).parent.joinpath("_kernels").glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in kernels)).hexdigest()
    here = Path(root) / digest[:16]
    for old in Path(root).iterdir():
        if old != here and time.time() - old.stat().st_mtime > 7 * 86400:
            shutil.rmtree(old, ignore_errors=True)
    here.mkdir(exist_ok=True)
    os.utime(here)
    os.environ["NUMBA_CACHE_DIR"] = str(here)


def main(argv: list[str]) -> int:
    names = os.environ.get("HASHPLUG_SUITES", " ".join(SUITES)).split()
    unknown = sorted(set(names) - set(SUITES))
    if unknown or not names:
        print(f"HASHPLUG_SUITES: unknown {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    if "milvus" in names:
        uri = os.environ.get("HASHPLUG_MILVUS_URI")
        if not uri:
            print("the milvus suite needs HASHPLUG_MILVUS_URI=milvus://HOST:PORT", file=sys.stderr)
            return 2
        wait_for_milvus(uri, float(os.environ.get("HASHPLUG_MILVUS_WAIT", "300")))
    use_numba_cache()
    os.chdir(ROOT)
    import pytest

    ids = [i for n in names for i in SUITES[n]]
    return int(pytest.main(["-q", "-p", "no:cacheprovider", *ids, *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
