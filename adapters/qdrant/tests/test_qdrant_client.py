"""QdrantStore through qdrant-client.

What runs here: qdrant-client's *local mode* (``QdrantClient(path=...)``), a pure-Python
re-implementation of Qdrant's API. It stores and returns the same collection (vectors, payloads,
collection metadata, filters) but ignores quantization and HNSW: its searches are exact dot
products over the ±1 vectors, which equal the binary-quantized scores for ±1 queries. The HTTP /
gRPC transport, retries and error handling run against a port where nothing listens, and
against a real local-mode client wrapped to fail the way a flaky network does. The same
conformance suite runs against a real Qdrant server in test_qdrant_server.py when Docker is there.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hashplug_qdrant import QdrantStore
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from hashplug.stores.base import StoreError
from hashplug.stores.registry import open_store
from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
    PayloadConformance,
    PersistenceConformance,
    RescoringConformance,
    make_meta,
    random_codes,
)
from hashplug.testing.faults import WriterKillConformance


class TestQdrantLocalModeConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
):
    """The shared Store contract on qdrant-client's local mode (persisted to a folder)."""

    @pytest.fixture
    def make_store(self, tmp_path: Path):
        return lambda name: QdrantStore(name, path=tmp_path / "qdrant")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "from-env")
    s = open_store(
        "qdrant://db.example.com:7333/docs?https=true&timeout=3&retries=1&datatype=float32"
    )
    assert isinstance(s, QdrantStore)
    assert (s.collection, s.location, s.retries, s.datatype) == (
        "docs",
        "https://db.example.com:7333",
        1,
        "float32",
    )
    s.close()
    s = QdrantStore.from_uri("qdrant://localhost/docs?grpc=true&grpc_port=7334", api_key="k")
    assert s.location == "http://localhost:7334"
    s.close()
    s = open_store(f"qdrant+local://{tmp_path}/q/docs")
    assert s.collection == "docs" and s.location == f"local mode {tmp_path}/q"
    s.close()
    s = open_store("qdrant+local://:memory:/docs")
    assert s.location == "local mode :memory:"
    s.close()
    bad = [
        "qdrant://localhost:6333",
        "qdrant://localhost:6333/a/b",
        "qdrant://h/c?nope=1",
        "qdrant://h/c?https=maybe",
        "qdrant+local://docs",
        "qdrant+local://./x/docs?https=true",
        "qdrant-edge://x",
    ]
    for uri in bad:
        with pytest.raises(ValueError):
            QdrantStore.from_uri(uri)
    with pytest.raises(ValueError, match="datatype"):
        QdrantStore("c", path=":memory:", datatype="uint8")


def test_memory_mode_is_shared_by_name_within_the_process() -> None:
    a = QdrantStore("mem_shared", path=":memory:")
    a.open(make_meta())
    a.upsert([1, 2], random_codes(2, 64))
    b = QdrantStore.from_uri("qdrant+local://:memory:/mem_shared")
    b.open(make_meta())
    assert b.count() == 2
    a.drop()
    assert b.count() == 0
    a.close()
    b.close()


def test_store_left_open_at_exit_closes_cleanly(tmp_path: Path) -> None:
    """A process that never calls close(): no traceback at exit.

    The next process opens the folder (not locked) and finds the points.
    """
    path = tmp_path / "qdrant"
    code = textwrap.dedent(
        f"""
        import numpy as np
        from hashplug_qdrant import QdrantStore
        from hashplug.testing import make_meta, random_codes
        s = QdrantStore("left_open", path={str(path)!r})
        s.open(make_meta(64))
        s.upsert(np.arange(20), random_codes(20))
        a = QdrantStore("mem", path=":memory:")
        a.open(make_meta(64))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    s = QdrantStore("left_open", path=path)
    try:
        assert s.count() == 20
    finally:
        s.close()


def test_unreachable_server_is_a_clear_error_within_seconds() -> None:
    port = _free_port()  # nothing listens there
    s = QdrantStore("docs", host="127.0.0.1", port=port, retries=3, backoff=0.05, timeout=2)
    start = time.monotonic()
    with pytest.raises(StoreError) as err:
        s.open(make_meta())
    elapsed = time.monotonic() - start
    assert elapsed < 5
    msg = str(err.value)
    assert "unreachable" in msg and f"127.0.0.1:{port}" in msg and "4 times" in msg
    assert isinstance(err.value.__cause__, ResponseHandlingException)
    with pytest.raises(StoreError, match="unreachable"):
        open_store(f"qdrant://127.0.0.1:{port}/docs?retries=0").count()


class _Flaky:
    """A real QdrantClient whose first ``fail`` calls of each listed method raise ``error``."""

    def __init__(self, inner: QdrantClient, error: Exception, fail: int, methods: set[str]):
        self.inner, self.error, self.fail, self.methods = inner, error, fail, methods
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.methods:
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] <= self.fail:
                raise self.error
            return attr(*a, **kw)

        return call


def test_transient_failures_are_retried_and_reingest_is_idempotent(tmp_path: Path) -> None:
    inner = QdrantClient(path=str(tmp_path / "q"))
    boom = ResponseHandlingException(httpx.ConnectError("connection reset"))
    flaky = _Flaky(
        inner, boom, fail=2, methods={"upsert", "query_batch_points", "collection_exists"}
    )
    s = QdrantStore("docs", client=flaky, retries=3, backoff=0.01)  # type: ignore[arg-type]
    s.open(make_meta())
    codes = random_codes(40, 64, seed=1)
    s.upsert(np.arange(40), codes)
    s.upsert(np.arange(40), codes)  # the same batch again: replaced, not duplicated
    assert s.count() == 40 and flaky.calls["upsert"] == 4
    got_i, got_d = s.search(codes[:1], 1)
    assert got_i[0, 0] == 0 and got_d[0, 0] == 0 and flaky.calls["query_batch_points"] == 3
    s.close()
    inner.close()


def test_refusals_are_not_retried(tmp_path: Path) -> None:
    inner = QdrantClient(path=str(tmp_path / "q"))
    denied = UnexpectedResponse(403, "Forbidden", b'{"status":"forbidden"}', httpx.Headers())
    flaky = _Flaky(inner, denied, fail=10, methods={"collection_exists"})
    s = QdrantStore("docs", client=flaky, retries=3, backoff=0.5)  # type: ignore[arg-type]
    start = time.monotonic()
    with pytest.raises(StoreError, match="403.*api_key"):
        s.open(make_meta())
    assert flaky.calls["collection_exists"] == 1 and time.monotonic() - start < 0.5
    inner.close()


def test_collection_layout_and_metadata(tmp_path: Path) -> None:
    s = QdrantStore("docs", path=tmp_path / "q")
    meta = make_meta(128)
    s.open(meta)
    info = s._client.get_collection("docs")
    params = info.config.params.vectors
    assert params.size == 128 and params.distance == m.Distance.DOT
    assert params.datatype == m.Datatype.FLOAT16 and params.on_disk is True
    assert info.config.metadata["hashplug"] == meta.to_json()
    # Local mode keeps no quantization (nor HNSW) config: it always searches exactly. The
    # server-side layout (BQ always_ram, m=0) is checked in test_qdrant_server.py.
    assert s.is_local_mode and info.config.quantization_config is None
    s.close()


def test_foreign_collection_is_refused(tmp_path: Path) -> None:
    c = QdrantClient(path=str(tmp_path / "q"))
    c.create_collection(
        "theirs", vectors_config=m.VectorParams(size=64, distance=m.Distance.COSINE)
    )
    s = QdrantStore("theirs", client=c)
    with pytest.raises(StoreError, match="no hashplug metadata"):
        s.open(make_meta())
    c.close()


def test_payloads_filters_and_native_filter_pass_through(tmp_path: Path) -> None:
    s = QdrantStore("docs", path=tmp_path / "q")
    s.open(make_meta())
    n = 12
    codes = random_codes(n, 64, seed=2)
    pl: list[dict[str, Any] | None] = [
        {"c": "ab"[i % 2], "i": i, "w": i / 2, "t": [i, [i]]} for i in range(n)
    ]
    pl[3] = {}
    pl[5] = None
    s.upsert(np.arange(n), codes, pl)
    assert s.get_payloads([3, 5, 4]) == [{}, None, pl[4]]
    got, _ = s.search(codes[:1], n, filter={"w": 2.0})
    assert got[0, 0] == 4 and (got[0, 1:] == -1).all()
    native = m.Filter(must=[m.FieldCondition(key="i", range=m.Range(gte=8))])
    got, _ = s.search(codes[:1], n, filter=native)
    assert set(got[0][got[0] >= 0].tolist()) == {8, 9, 10, 11}
    with pytest.raises(ValueError):
        s.search(codes[:1], 3, filter={"t": [1, [1]]})
    s.close()


class TestQdrantLocalModeFaults(WriterKillConformance):
    """A qdrant-client local-mode writer killed mid-ingest (kill -9), reopened and re-run."""

    @pytest.fixture
    def store_uri(self, tmp_path: Path):
        return lambda name: f"qdrant+local://{tmp_path / 'qdrant'}/{name}"
