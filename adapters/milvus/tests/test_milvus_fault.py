"""Fault tolerance on a real Milvus server: the server dies in the middle of an ingest.

A dedicated Milvus 2.3.5 standalone server (not the session one) is killed (SIGKILL) from another
thread while batches are being written. The ingest must fail with a clear StoreError after its
retries; after a restart, re-running the same ingest must leave every id exactly once with its
code and payload; and everything must still be there after a further server restart.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hashplug_milvus import MilvusStore

from hashplug.stores.base import StoreError
from hashplug.testing import make_meta, random_codes

N = 12_000  # below Milvus' 16384 topk cap, so one raw search can list every stored row


@pytest.fixture
def server(tmp_path: Path):
    pytest.importorskip("milvus", reason="pip install 'milvus==2.3.5' 'setuptools<81'")
    from hashplug_milvus.server import EmbeddedMilvus

    srv = EmbeddedMilvus(tmp_path / "milvus")
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def _raw_ids(uri: str, collection: str, query: bytes) -> list[int]:
    """Every row's id as Milvus itself returns it (no hashplug de-duplication on the way)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri, alias=f"raw-{time.monotonic_ns()}")
    try:
        res = client.search(
            collection,
            data=[query],
            limit=16384,
            search_params={"metric_type": "HAMMING"},
            consistency_level="Strong",
        )
        return [int(i) for i in res[0].ids]
    finally:
        client.close()


def _check_complete(store: MilvusStore, ids: np.ndarray, codes: np.ndarray, uri: str) -> None:
    assert store.count() == ids.size
    np.testing.assert_array_equal(store.get_codes(ids), codes)
    pl = store.get_payloads(ids[[0, 1234, -1]])
    assert pl == [{"n": int(i), "tag": f"t{i % 7}"} for i in ids[[0, 1234, -1]]]
    raw = _raw_ids(uri, store.collection, codes[0].tobytes())
    assert len(raw) == ids.size and len(set(raw)) == ids.size and set(raw) == set(ids.tolist())


def test_server_killed_mid_ingest_then_rerun_and_restart(server) -> None:
    codes = random_codes(N, 64, seed=11)
    ids = np.arange(N, dtype=np.int64) * 3 + 7
    payloads = [{"n": int(i), "tag": f"t{i % 7}"} for i in ids]
    store = MilvusStore.from_uri(
        server.store_uri("ingest") + "?batch_size=500&retries=2&backoff=0.2&connect_timeout=1"
    )
    store.open(make_meta(64))

    # A killer thread stops the server once a third of the batches are in; the ingest goes on.
    third = threading.Event()
    store.on_batch = lambda done, total: third.set() if done >= N // 3 else None

    def killer() -> None:
        third.wait(60)
        server.kill()

    t = threading.Thread(target=killer)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.upsert(ids, codes, payloads)
    elapsed = time.monotonic() - t0
    t.join(30)
    msg = str(err.value)
    assert f"127.0.0.1:{server.port}" in msg and "re-running" in msg and "running" in msg
    assert elapsed < 30, f"the failure took {elapsed:.1f} s to surface"

    # Restart on the same port and re-run the same ingest with the same store object.
    server.start()
    store.on_batch = None
    store.upsert(ids, codes, payloads)
    _check_complete(store, ids, codes, server.uri)

    # And once more, as a fresh client (another process would do the same), after a restart.
    store.close()
    server.restart(stop_timeout=2)  # SIGTERM (coordinators flush and stop), then SIGKILL
    again = MilvusStore.from_uri(server.store_uri("ingest"))
    meta = again.open(make_meta(64))
    assert meta.fingerprint == make_meta(64).fingerprint
    _check_complete(again, ids, codes, server.uri)
    again.close()


def test_unreachable_server_is_a_clear_error_in_seconds(tmp_path: Path) -> None:
    from hashplug_milvus.server import free_port

    port = free_port()  # nothing listens there
    store = MilvusStore.from_uri(f"milvus://127.0.0.1:{port}/docs?retries=3&backoff=0.1")
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.open(make_meta(64))
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "4 attempt" in msg and "running" in msg
    assert "refused" in msg.lower()
    with pytest.raises(StoreError):
        store.count()
