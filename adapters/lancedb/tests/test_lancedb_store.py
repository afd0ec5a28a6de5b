"""LanceDBStore against a real embedded LanceDB: the shared conformance suite plus LanceDB specifics."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hashplug_lancedb import LanceDBStore

from hashplug.codes import hamming_distances, pack_bits
from hashplug.stores.base import HAMMING_PAD, CollectionMeta, HasherMismatchError, StoreError
from hashplug.stores.registry import open_store
from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    PayloadConformance,
    PersistenceConformance,
    make_meta,
    random_codes,
)
from hashplug.testing.faults import WriterKillConformance


class TestLanceDBConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    late_refusal = {"t": "a str where the column is int64"}

    @pytest.fixture
    def make_store(self, tmp_path: Path):
        return lambda name: LanceDBStore(tmp_path / "db", name)


class TestLanceDBConformanceIndexed(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """The same contract with an IVF_FLAT index (nprobes covers every partition: exact)."""

    late_refusal = {"t": "a str where the column is int64"}

    @pytest.fixture
    def make_store(self, tmp_path: Path):
        return lambda name: LanceDBStore(
            tmp_path / "db", name, index="ivf_flat", num_partitions=4, nprobes=4
        )


def _store(tmp_path: Path, name: str = "t", n_bits: int = 64, **kw) -> LanceDBStore:
    s = LanceDBStore(tmp_path / "db", name, **kw)
    s.open(make_meta(n_bits))
    return s


# -- URIs and construction -------------------------------------------------------------------------
def test_uri_forms(tmp_path: Path) -> None:
    s = open_store(f"lancedb://{tmp_path}/sub/docs", index="none")
    assert isinstance(s, LanceDBStore)
    assert (s.db_path, s.table_name, s.index) == (f"{tmp_path}/sub", "docs", "none")
    s = LanceDBStore.from_uri("lancedb://./data/docs/?nprobes=8&index_min_rows=10")
    assert (s.db_path, s.table_name, s.nprobes, s.index_min_rows) == ("./data", "docs", 8, 10)
    assert LanceDBStore.from_uri("lancedb:///abs/x/t").db_path == "/abs/x"
    for bad in ("lancedb://docs", "lancedb://./d/t?bogus=1", "milvus://x/y"):
        with pytest.raises(ValueError):
            LanceDBStore.from_uri(bad)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        LanceDBStore.from_uri("lancedb://./d/t?colour=red")
    with pytest.raises(ValueError, match="option nprobes='many'"):
        LanceDBStore.from_uri("lancedb://./d/t?nprobes=many")
    with pytest.raises(ValueError, match="index"):
        LanceDBStore(tmp_path, "t", index="hnsw")  # type: ignore[arg-type]


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    s = LanceDBStore(tmp_path / "afile" / "db", "t")
    with pytest.raises(StoreError, match="afile"):
        s.open(make_meta())
    with pytest.raises(ValueError, match="table name"):
        LanceDBStore(tmp_path / "db", "bad name!")


# -- codes and distances ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", [8, 16, 128])
def test_bit_order_and_exact_hamming(tmp_path: Path, n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    bits = rng.integers(0, 2, size=(200, n_bits), dtype=np.uint8)
    codes = pack_bits(bits)
    s = _store(tmp_path, n_bits=n_bits)
    s.upsert(np.arange(200), codes)
    np.testing.assert_array_equal(s.get_codes(np.arange(200)), np.packbits(bits, axis=1))
    tbl = s.table.to_arrow()  # bytes as stored in the table's FixedSizeList<uint8> column
    assert tbl.schema.field("code").type == pa.list_(pa.uint8(), n_bits // 8)
    q = pack_bits(rng.integers(0, 2, size=(5, n_bits), dtype=np.uint8))
    ids, dist = s.search(q, 200)
    assert dist.dtype == np.int32
    ref = hamming_distances(q, codes)
    np.testing.assert_array_equal(dist, np.take_along_axis(ref, ids, axis=1))
    np.testing.assert_array_equal(dist, np.sort(ref, axis=1))


def test_wrong_width_and_missing_table(tmp_path: Path) -> None:
    s = _store(tmp_path)
    with pytest.raises(ValueError, match="bytes"):
        s.search(np.zeros((1, 4), np.uint8), 3)
    fresh = LanceDBStore(tmp_path / "db", "other")
    with pytest.raises(StoreError, match="does not exist"):
        fresh.search(np.zeros((1, 8), np.uint8), 3)


def test_mismatch_keeps_data_and_corrupt_meta_is_store_error(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.upsert([1, 2], random_codes(2))
    with pytest.raises(HasherMismatchError):
        LanceDBStore(tmp_path / "db", "t").open(make_meta(64, fingerprint="another"))
    with pytest.raises(HasherMismatchError):
        LanceDBStore(tmp_path / "db", "t").open(CollectionMeta(32, "f00dfeedcafe0001"))
    assert s.count() == 2
    import lancedb

    db = lancedb.connect(tmp_path / "db")
    schema = pa.schema([pa.field("id", pa.int64())], metadata={b"hashplug": b"{not json"})
    db.create_table("broken", schema=schema)
    db.create_table("foreign", schema=pa.schema([pa.field("id", pa.int64())]))
    with pytest.raises(StoreError, match="unreadable"):
        LanceDBStore(tmp_path / "db", "broken").read_meta()
    with pytest.raises(StoreError, match="not created by hashplug"):
        LanceDBStore(tmp_path / "db", "foreign").open(make_meta())


# -- upsert ----------------------------------------------------------------------------------------
def test_upsert_replaces_codes_payloads_and_columns(tmp_path: Path) -> None:
    s = _store(tmp_path)
    c = random_codes(100)
    s.upsert(np.arange(100), c, [{"cat": "a", "price": i} for i in range(100)])
    c2 = random_codes(60, seed=1)
    s.upsert(np.arange(50, 110), c2, [{"cat": "b"}] * 60)
    assert s.count() == 110
    np.testing.assert_array_equal(s.get_codes(np.arange(50, 110)), c2)
    assert s.get_payloads([49, 50]) == [{"cat": "a", "price": 49}, {"cat": "b"}]
    # The replaced rows lost their old price column value too (whole-row replace).
    assert s.table.count_rows("price IS NOT NULL") == 50
    got = s.table.to_arrow()["id"].to_numpy()
    assert got.size == np.unique(got).size == 110


def test_bad_payload_types_refused_before_writing(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.upsert([1], random_codes(1), [{"price": 3}])
    before = s.table.version
    with pytest.raises(ValueError, match="'price'.*int64"):
        s.upsert([2, 3], random_codes(2), [{"price": 2}, {"price": "cheap"}])
    with pytest.raises(ValueError, match="mixes value types"):
        s.upsert([2, 3], random_codes(2), [{"size": 2}, {"size": "L"}])
    with pytest.raises(ValueError, match="'price'"):
        s.upsert([2], random_codes(1), [{"price": 2**70}])
    assert s.table.version == before and s.count() == 1


def test_empty_upsert_and_delete_are_noops(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.upsert(np.zeros(0, np.int64), np.zeros((0, 8), np.uint8))
    s.delete([])
    assert s.count() == 0


# -- payloads and filters --------------------------------------------------------------------------
def test_payload_columns_and_filters(tmp_path: Path) -> None:
    s = _store(tmp_path)
    n = 90
    codes = random_codes(n)
    payloads = [
        {
            "category": ["shoes", "hats", "o'neil"][i % 3],
            "price": float(i),
            "stock": i,
            "sale": i % 2 == 0,
            "tags": ["x"] * (i % 2),
            "nested": {"a": i},
            "odd key": i,
            "id": f"external-{i}",
        }
        for i in range(n)
    ]
    s.upsert(np.arange(n), codes, payloads)
    schema = s.table.schema
    assert schema.field("category").type == pa.string()
    assert schema.field("price").type == pa.float64()
    assert schema.field("stock").type == pa.int64() and schema.field("sale").type == pa.bool_()
    for json_only in ("tags", "nested", "odd key"):
        assert json_only not in schema.names
    assert s.get_payloads([7, 8]) == payloads[7:9]

    def hits(flt) -> set[int]:
        ids, _ = s.search(codes[:1], n, filter=flt)
        return set(ids[0][ids[0] >= 0].tolist())

    assert hits({"category": "shoes"}) == set(range(0, n, 3))
    assert hits({"category": "o'neil", "sale": True}) == {i for i in range(2, n, 3) if i % 2 == 0}
    assert hits({"stock": 10}) == {10}
    assert hits("category = 'shoes' AND price < 10") == {0, 3, 6, 9}
    assert hits({"never_seen": 1}) == set()
    with pytest.raises(ValueError, match="not a column"):
        hits({"odd key": 3})
    with pytest.raises(ValueError, match="not a column"):
        hits({"id": "external-3"})  # a reserved name: kept in the JSON payload only
    assert hits({"tags": ["x"]}) == set()  # any of ["x"]; tags holds lists (JSON only)
    with pytest.raises(ValueError, match="str, int, float, bool"):
        hits({"tags": [["x"]]})
    with pytest.raises(ValueError, match="LanceDB rejected"):
        hits("nosuch_column = 1")
    with pytest.raises(ValueError, match="filters are"):
        hits(42)


def test_declared_and_disabled_payload_columns(tmp_path: Path) -> None:
    s = _store(tmp_path, "decl", payload_columns={"price": "float64"})
    s.upsert([1, 2], random_codes(2), [{"price": 1, "cat": "a"}, {"price": 2.5, "cat": "b"}])
    assert "price" in s.table.schema.names and "cat" not in s.table.schema.names
    ids, _ = s.search(random_codes(1), 5, filter="price > 2")
    assert ids[0, 0] == 2 and ids[0, 1] == -1
    n = _store(tmp_path, "none", payload_columns="none")
    n.upsert([1], random_codes(1), [{"cat": "a"}])
    assert n.table.schema.names == ["id", "code", "payload", "_hashplug_corr"]
    assert n.get_payloads([1]) == [{"cat": "a"}]


# -- index -----------------------------------------------------------------------------------------
def test_index_built_above_threshold_and_search_stays_correct(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.integers(0, 2, size=(8, 64), dtype=np.uint8)
    bits = centers[rng.integers(0, 8, 3000)] ^ (rng.random((3000, 64)) < 0.05)
    codes = pack_bits(bits.astype(np.uint8))
    s = _store(tmp_path, index_min_rows=2000, num_partitions=8, nprobes=8)
    s.upsert(np.arange(1500), codes[:1500])
    assert s.index_info() is None
    s.upsert(np.arange(1500, 3000), codes[1500:])
    info = s.index_info()
    assert info is not None and info["index_type"] == "IVF_FLAT"
    plan = s.explain_plan(codes[:1], 10, filter="id > 5")
    assert "ANNIvfPartition" in plan and "metric=Hamming" in plan  # the index is used
    assert info["distance_type"] == "hamming" and info["num_indexed_rows"] == 3000
    q = codes[:20]
    ids, dist = s.search(q, 10)
    np.testing.assert_array_equal(dist, np.sort(hamming_distances(q, codes), axis=1)[:, :10])
    # New rows after the build are found (scanned, then merged into the index by optimize()).
    s.upsert([10_000], codes[:1] ^ np.uint8(0))
    ids, dist = s.search(codes[:1], 5)
    assert 10_000 in ids[0] and dist[0, 0] == 0
    s.optimize()
    assert s.index_info()["num_unindexed_rows"] == 0


def test_index_none_never_builds(tmp_path: Path) -> None:
    s = _store(tmp_path, index="none", index_min_rows=1)
    s.upsert(np.arange(300), random_codes(300))
    assert s.index_info() is None
    assert "KNNVectorDistance: metric=hamming" in s.explain_plan(random_codes(1))
    s.create_index(num_partitions=2)
    assert s.index_info()["num_indexed_rows"] == 300


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_old_versions_are_cleaned_up(tmp_path: Path) -> None:
    codes = random_codes(4000)
    s = _store(tmp_path, index="none", optimize_every=2, cleanup_older_than=timedelta(0))
    for i in range(10):  # every second write compacts and deletes the versions before it
        s.upsert(np.arange(400 * i, 400 * (i + 1)), codes[400 * i : 400 * (i + 1)])
    assert len(s.table.list_versions()) <= 3
    keep = _store(tmp_path, name="keep", index="none", optimize_every=2)  # default: 60 s
    for i in range(10):
        keep.upsert(np.arange(400 * i, 400 * (i + 1)), codes[400 * i : 400 * (i + 1)])
    n_versions, before = len(keep.table.list_versions()), _du(tmp_path / "db" / "keep.lance")
    assert before > 0
    assert n_versions >= 10  # written within the last minute: kept
    keep.finish_writes()  # the writers are done: every old version goes
    assert len(keep.table.list_versions()) == 1
    assert _du(tmp_path / "db" / "keep.lance") < before / 2
    ids, dist = keep.search(codes[:3], 1)
    np.testing.assert_array_equal(ids[:, 0], [0, 1, 2])
    assert keep.count() == 4000


def test_cleanup_option_from_uri(tmp_path: Path) -> None:
    s = open_store(f"lancedb://{tmp_path}/t?cleanup_older_than=0")
    assert s.cleanup_older_than == timedelta(0)
    assert open_store(f"lancedb://{tmp_path}/t?cleanup_older_than=none").cleanup_older_than is None
    with pytest.raises(ValueError, match="cleanup_older_than"):
        open_store(f"lancedb://{tmp_path}/t?cleanup_older_than=-5")
    with pytest.raises(ValueError, match="cleanup_older_than"):
        LanceDBStore(tmp_path, "t", cleanup_older_than=5)  # type: ignore[arg-type]


# -- misc ------------------------------------------------------------------------------------------
def test_many_small_writes_then_reopen(tmp_path: Path) -> None:
    s = _store(tmp_path, optimize_every=5)
    codes = random_codes(200)
    for k in range(0, 200, 10):
        s.upsert(np.arange(k, k + 10), codes[k : k + 10], [{"k": k}] * 10)
    s.delete(np.arange(0, 200, 2))
    s.close()
    t = LanceDBStore(tmp_path / "db", "t")
    assert t.read_meta() == make_meta()
    assert t.count() == 100
    np.testing.assert_array_equal(t.get_codes([1, 199]), codes[[1, 199]])
    got, found = t.lookup_codes(np.arange(200))
    assert found.tolist() == [i % 2 == 1 for i in range(200)]


def test_concurrent_searches_during_writes(tmp_path: Path) -> None:
    s = _store(tmp_path)
    codes = random_codes(500)
    s.upsert(np.arange(500), codes)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(10):
                ids, dist = s.search(codes[:8], 5)
                assert (dist[:, 0] == 0).all()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for k in range(500, 600, 20):
        s.upsert(np.arange(k, k + 20), random_codes(20, seed=k))
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert s.count() == 600


def test_search_batches_many_queries(tmp_path: Path) -> None:
    s = _store(tmp_path)
    codes = random_codes(400)
    s.upsert(np.arange(400), codes)
    q = random_codes(600, seed=3)  # more than one LanceDB batch
    ids, dist = s.search(q, 3)
    np.testing.assert_array_equal(dist, np.sort(hamming_distances(q, codes), axis=1)[:, :3])
    ids, dist, got = s.search_with_codes(q[:1], 500)
    assert (ids[0, 400:] == -1).all() and (dist[0, 400:] == HAMMING_PAD).all()
    assert (got[0, 400:] == 0).all()
    np.testing.assert_array_equal(got[0, :400], codes[ids[0, :400]])


class TestLanceDBFaults(WriterKillConformance):
    """A LanceDB writer killed mid-ingest (kill -9), reopened and re-run."""

    @pytest.fixture
    def store_uri(self, tmp_path: Path):
        return lambda name: f"lancedb://{tmp_path / 'db'}/{name}"


def test_two_writer_processes_create_one_table_and_its_payload_columns(tmp_path: Path) -> None:
    """Two real processes create one table and add the same new payload columns at once.

    LanceDB answered with "already exists" and commit conflicts: every row lands exactly once, each
    payload column matches the JSON payload, and neither writer fails.
    """
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).with_name("concurrent_writers.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "db"), "6", "20"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {
        "errors": [], "rows": 240, "distinct": 240, "ids_ok": True, "columns_ok": True,
        "exit": [0, 0],
    }  # fmt: skip


def test_a_table_of_an_older_version_gets_the_factor_column_at_a_cosine_add(tmp_path: Path):
    """A table without ``_hashplug_corr`` (older hashplug) serves asymmetric search.

    Cosine says to add again with scoring='cosine', which adds the column.
    """
    from hashplug_lancedb._columns import CORR_COLUMN

    from hashplug import HashIndex, HashingBaseline

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    h = HashingBaseline(16).fit(x)
    store = LanceDBStore(tmp_path / "db", "old")
    idx = HashIndex(store, h)
    store.table.drop_columns([CORR_COLUMN])  # the layout of older versions
    store.upsert(np.arange(300), h.encode(x))
    assert CORR_COLUMN not in store.table.schema.names
    assert not store.lookup_corrections([0, 1])[1].any()
    assert idx.search(x[:3], k=5).ids[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no stored corrections.*add them again with scoring"):
        idx.search(x[:3], k=5, scoring="cosine")
    idx.add(x, np.arange(300), progress=False, scoring="cosine")
    assert CORR_COLUMN in store.table.schema.names
    assert idx.search(x[:3], k=5, scoring="cosine").ids[:, 0].tolist() == [0, 1, 2]
