"""QdrantEdgeStore on Qdrant Edge (qdrant-edge-py): the real Qdrant engine, in-process.

What this exercises for real: Qdrant's segment storage and WAL, Float16 vector storage, 1-bit
binary quantization with XOR + popcount scoring (the coarse search runs on it, rescore off),
rescoring against the original vectors, payload storage and Qdrant's filter engine, the
optimizer (merge / vacuum), persistence across close and across processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from hashplug_qdrant import QdrantEdgeStore, edge_config
from hashplug_qdrant._common import EMPTY_PAYLOAD_KEY, META_FILE
from qdrant_client import models as m

from hashplug.codes import hamming_distances, unpack_signs
from hashplug.stores.base import HAMMING_PAD, StoreError
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


class TestQdrantEdgeConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
):
    """The shared Store contract on a real Qdrant Edge shard (Float16 ±1 vectors + 1-bit BQ)."""

    @pytest.fixture
    def make_store(self, tmp_path: Path):
        return lambda name: QdrantEdgeStore(tmp_path / name)


class TestQdrantEdgeConformanceFloat32(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
):
    """The same contract with Float32 storage (what native rescoring needs for exact float32)."""

    n_bits = 128
    rescoring_float16 = False  # float32 storage: distances within 1e-4
    n_items = 120

    @pytest.fixture
    def make_store(self, tmp_path: Path):
        return lambda name: QdrantEdgeStore(
            tmp_path / name, datatype="float32", optimize_on_close=False
        )


def _store(path: Path, n_bits: int = 64, **kw) -> QdrantEdgeStore:
    s = QdrantEdgeStore(path, **kw)
    s.open(make_meta(n_bits))
    return s


def test_uri_forms(tmp_path: Path) -> None:
    s = open_store(f"qdrant-edge://{tmp_path}/shard?datatype=float32&optimize_on_close=false")
    assert isinstance(s, QdrantEdgeStore)
    assert (s.path, s.datatype, s.optimize_on_close) == (tmp_path / "shard", "float32", False)
    s.close()
    s = QdrantEdgeStore.from_uri("qdrant-edge://./rel/dir", max_search_threads=1)
    assert s.path == Path("rel/dir") and s.max_search_threads == 1
    s.close()
    for bad in (
        "qdrant-edge://",
        "qdrant-edge://x?bogus=1",
        "qdrant-edge://x?datatype=int8",
        "qdrant://h/c",
    ):
        with pytest.raises(ValueError):
            QdrantEdgeStore.from_uri(bad)


def test_coarse_search_runs_on_the_binary_quantization(tmp_path: Path) -> None:
    """The store's coarse path scores 1-bit quantized vectors.

    A non-±1 query gets integer scores n - 2 * Hamming(sign(query)), while exact scoring of the same
    query is not integer.
    """
    s = _store(tmp_path / "s")
    codes = random_codes(200, 64, seed=1)
    s.upsert(np.arange(200), codes)
    shard = s._shard()
    rng = np.random.default_rng(0)
    t = np.tanh(rng.normal(size=64) / 2).astype(np.float32)
    quant = qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=False))
    hits = shard.query(qe.QueryRequest(limit=200, query=qe.Query.Nearest(t.tolist()), params=quant))
    ham = hamming_distances(np.packbits(t > 0)[None, :], codes)[0]
    assert len(hits) == 200
    for h in hits:
        assert h.score == 64 - 2 * ham[h.id]
    exact = shard.query(
        qe.QueryRequest(
            limit=5, query=qe.Query.Nearest(t.tolist()), params=qe.SearchParams(exact=True)
        )
    )
    assert any(abs(h.score - round(h.score)) > 1e-3 for h in exact)
    # Stored vectors are the ±1 codes, datatype Float16, and hashplug's config has no HNSW.
    rec = shard.retrieve([3], with_payload=False, with_vector=True)[0]
    np.testing.assert_array_equal(np.asarray(rec.vector), unpack_signs(codes[3:4])[0])
    cfg = edge_config(64)
    assert cfg.vectors[""].datatype == qe.VectorStorageDatatype.Float16
    assert cfg.hnsw_config.m == 0 and cfg.optimizers.indexing_threshold == 0
    s.close()


def test_payloads_round_trip_exactly(tmp_path: Path) -> None:
    s = _store(tmp_path / "s")
    payloads = [
        None,
        {},
        {"nested": {"a": [1, [2, 3], {"b": None}]}, "big": 2**62, "f": 0.1 + 0.2, "s": "é"},
        {EMPTY_PAYLOAD_KEY: False, "x": 1},
    ]
    s.upsert([0, 1, 2, 2**63 - 1], random_codes(4, 64, seed=2), payloads)
    assert s.get_payloads([2**63 - 1, 2, 1, 0, 5]) == [payloads[3], payloads[2], {}, None, None]
    np.testing.assert_array_equal(s.get_codes([2**63 - 1]), random_codes(4, 64, seed=2)[3:4])
    s.close()


def test_factors_of_hashplug_0_1_are_still_read(tmp_path: Path) -> None:
    # hashplug 0.1 kept both factors as float16 halves of one int32 under __hashplug_corr__.
    from hashplug.stores.base import pack_corrections

    store = QdrantEdgeStore(tmp_path / "old")
    store.open(make_meta(64))
    f = np.array([[1.25, -0.5], [0.75, 0.125]], np.float16)
    packed = pack_corrections(f).tolist()
    store.upsert([1, 2], random_codes(2, 64), payloads=[{"__hashplug_corr__": p} for p in packed])
    store.upsert([3], random_codes(1, 64, seed=1), corrections=np.array([[2.0, 0.25]]))
    got, found = store.lookup_corrections([1, 2, 3, 4])
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(got[:3], [[1.25, -0.5], [0.75, 0.125], [2.0, 0.25]])
    assert store.get_payloads([1, 3]) == [None, None]  # hashplug's keys stay hidden
    store.close()


def test_filters_native_and_translated(tmp_path: Path) -> None:
    s = _store(tmp_path / "s")
    n = 30
    codes = random_codes(n, 64, seed=3)
    pl = [
        {"c": ["red", "green", "blue"][i % 3], "i": i, "w": i / 4, "t": ["x", f"y{i}"]}
        for i in range(n)
    ]
    pl[4]["z"] = None
    s.upsert(np.arange(n), codes, pl)

    def ids(flt) -> set[int]:
        got, _ = s.search(codes[:1], n, filter=flt)
        return set(got[0][got[0] >= 0].tolist())

    assert ids({"w": 2.5}) == {10}  # floats: an inclusive range
    assert ids({"c": "red", "i": 9}) == {9}
    assert ids(qe.Filter(must=[qe.FieldCondition("i", range=qe.RangeFloat(lt=3))])) == {0, 1, 2}
    client_filter = m.Filter(
        must=[m.FieldCondition(key="c", match=m.MatchAny(any=["red", "blue"]))],
        must_not=[m.FieldCondition(key="i", range=m.Range(gte=6))],
    )
    assert ids(client_filter) == {0, 2, 3, 5}
    assert ids(m.Filter(should=[m.HasIdCondition(has_id=[4, 7])])) == {4, 7}
    assert ids(m.Filter(must=[m.FieldCondition(key="t", match=m.MatchValue(value="y5"))])) == {5}
    assert ids({"z": None}) == set(range(n))  # missing or null (DESIGN.md)
    # qdrant-edge-py 0.9 turns MatchValue(True) into 1, which matches no boolean: the store keeps
    # a string copy of booleans for dict filters, hidden from get_payloads.
    s.upsert([100, 101], codes[:2], [{"ok": True}, {"ok": False, "n": 1}])
    assert ids({"ok": True}) == {100} and ids({"ok": [False]}) == {101}
    assert s.get_payloads([100, 101]) == [{"ok": True}, {"ok": False, "n": 1}]
    with pytest.raises(ValueError, match="booleans"):
        s.search(
            codes[:1],
            5,
            filter=m.Filter(must=[m.FieldCondition(key="ok", match=m.MatchValue(value=True))]),
        )
    for bad in ({"t": [["x"]]}, {"a.b": 1}, "c = 'red'", lambda p: True):
        with pytest.raises(ValueError):
            s.search(codes[:1], 5, filter=bad)
    s.close()


def test_persists_and_meta_readable_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s"
    s = _store(path)
    codes = random_codes(50, 64, seed=4)
    s.upsert(np.arange(50), codes, [{"i": i} for i in range(50)])
    s.delete(np.arange(10))
    s.close()  # optimizes (vacuums the deleted points) and releases the shard
    assert (path / META_FILE).is_file()
    code = textwrap.dedent(
        f"""
        import numpy as np
        from hashplug_qdrant import QdrantEdgeStore
        s = QdrantEdgeStore({str(path)!r})
        meta = s.read_meta()
        print(meta.fingerprint, meta.n_bits, s.count(), s.get_codes([10])[0].tolist())
        s.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["f00dfeedcafe0001", "64", "40"]
    assert out.stdout.strip().endswith(str(codes[10].tolist()).replace(" ", "").replace(",", ", "))


def test_shard_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    s = _store(path)
    s.upsert([1], random_codes(1, 64))
    s.close()
    ready = tmp_path / "ready"
    code = textwrap.dedent(
        f"""
        import time, pathlib
        from hashplug_qdrant import QdrantEdgeStore
        s = QdrantEdgeStore({str(path)!r}); s.count()
        pathlib.Path({str(ready)!r}).write_text("1"); time.sleep(300)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        t = QdrantEdgeStore(path)
        with pytest.raises(StoreError, match="another process"):
            t.count()
        t.close()
    finally:
        proc.kill()
        proc.wait()


def test_foreign_directories_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    qe.EdgeShard.create(str(raw), edge_config(64)).close()
    with pytest.raises(StoreError, match="without hashplug metadata"):
        QdrantEdgeStore(raw).open(make_meta())
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    s = QdrantEdgeStore(other)
    with pytest.raises(StoreError, match="refusing"):
        s.drop()
    assert (other / "keep.txt").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="afile"):
        QdrantEdgeStore(tmp_path / "afile").open(make_meta())


def test_interrupted_creation_is_finished_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    (path / META_FILE).write_text(make_meta().to_json())  # meta written, shard never created
    s = QdrantEdgeStore(path)
    s.open(make_meta())
    s.upsert([7], random_codes(1, 64))
    assert s.count() == 1
    s.close()


def test_optimize_and_reingest_are_idempotent(tmp_path: Path) -> None:
    s = _store(tmp_path / "s", optimize_on_close=False)
    codes = random_codes(500, 64, seed=5)
    ids = np.arange(500) * 3
    for _ in range(2):  # re-ingesting the same batch changes nothing
        s.upsert(ids, codes, [{"k": int(i)} for i in ids])
        assert s.count() == 500
    s.delete(ids[:100])
    s.optimize()
    assert s.count() == 400
    got_i, got_d = s.search(codes[100:101], 3)
    assert got_i[0, 0] == ids[100] and got_d[0, 0] == 0
    np.testing.assert_array_equal(s.get_codes(ids[100:]), codes[100:])
    s.close()


def test_search_rescored_validates_and_pads(tmp_path: Path) -> None:
    s = _store(tmp_path / "s")
    u = np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)
    ids, dist = s.search_rescored(u, 5, 2)  # empty collection
    assert ids.shape == (2, 5) and (ids == -1).all() and np.isinf(dist).all()
    s.upsert([1, 2, 3], random_codes(3, 64, seed=6))
    ids, dist = s.search_rescored(u[0], 5, 10)  # one query as (n_bits,)
    assert ids.shape == (1, 5) and sorted(ids[0, :3].tolist()) == [1, 2, 3]
    assert (ids[0, 3:] == -1).all() and np.isinf(dist[0, 3:]).all() and dist.dtype == np.float32
    for bad in [dict(k=0), dict(k=True), dict(k=2, oversample=0), dict(k=2, oversample=1.5)]:
        with pytest.raises(ValueError):
            s.search_rescored(u, **bad)
    with pytest.raises(ValueError, match="shape"):
        s.search_rescored(u[:, :32], 3)
    with pytest.raises(ValueError, match="NaN"):
        s.search_rescored(np.full((1, 64), np.nan), 3)
    s.close()


def test_unopened_store_is_a_clear_error(tmp_path: Path) -> None:
    s = QdrantEdgeStore(tmp_path / "nothing")
    assert s.count() == 0 and s.read_meta() is None
    with pytest.raises(StoreError, match="open"):
        s.search(random_codes(1, 64), 3)
    s.close()
    assert not (tmp_path / "nothing").exists()


def test_empty_query_batch_and_padding(tmp_path: Path) -> None:
    s = _store(tmp_path / "s")
    ids, dist, codes = s.search_with_codes(np.zeros((0, 8), np.uint8), 4)
    assert ids.shape == (0, 4) and codes.shape == (0, 4, 8)
    s.upsert([5], random_codes(1, 64, seed=8))
    ids, dist = s.search(random_codes(3, 64, seed=9), 3)
    assert (
        (ids[:, 0] == 5).all() and (ids[:, 1:] == -1).all() and (dist[:, 1:] == HAMMING_PAD).all()
    )
    s.close()


def test_env_free_of_leaked_handles(tmp_path: Path) -> None:
    """Two stores of one process on one directory share the shard; closing both releases it."""
    from hashplug_qdrant import edge as edge_mod

    path = tmp_path / "s"
    a = _store(path)
    b = QdrantEdgeStore(path)
    b.open(make_meta())
    a.upsert([1], random_codes(1, 64))
    assert b.count() == 1
    a.close()
    assert b.count() == 1
    b.close()
    assert os.path.realpath(path) not in edge_mod._HANDLES


class TestQdrantEdgeFaults(WriterKillConformance):
    """A Qdrant Edge writer killed mid-ingest (kill -9), reopened and re-run."""

    @pytest.fixture
    def store_uri(self, tmp_path: Path):
        return lambda name: f"qdrant-edge://{tmp_path / name}"
