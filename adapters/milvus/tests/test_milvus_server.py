"""MilvusStore specifics on the real Milvus 2.3.5 standalone server and on Milvus Lite 2.5.1."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hashplug_milvus import META_PREFIX, MilvusStore

from hashplug.codes import hamming_distances
from hashplug.stores.base import HAMMING_PAD, HasherMismatchError, StoreError
from hashplug.stores.registry import open_store
from hashplug.testing import make_meta, random_codes


def _ref(q: np.ndarray, codes: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    d = hamming_distances(q, codes)
    out_i, out_d = [], []
    for row in d:
        o = np.lexsort((ids, row))[:k]
        out_i.append(ids[o])
        out_d.append(row[o])
    return np.array(out_i), np.array(out_d)


@pytest.fixture
def server_store(milvus_server: Any, fresh_name: Any, cleanup: list[Any]):
    def make(name: str = "s", **kw: Any) -> MilvusStore:
        s = MilvusStore(milvus_server.uri, fresh_name(name), **kw)
        cleanup.append(s)
        return s

    return make


# -- codes: the BINARY_VECTOR output path, other widths, Strong consistency --------------------------
def test_vector_output_field_returns_codes_at_128_bits(server_store: Any) -> None:
    s = server_store(code_words=False, consistency_level="Strong")
    s.open(make_meta(128))
    assert s.returns_codes  # the server returns BINARY_VECTOR output fields with the hits
    codes = random_codes(500, 128, seed=1)
    ids = np.arange(500, dtype=np.int64) * 7
    s.upsert(ids, codes)
    q = random_codes(6, 128, seed=2)
    got_i, got_d, got_c = s.search_with_codes(q, 40)
    ref_i, ref_d = _ref(q, codes, ids, 40)
    np.testing.assert_array_equal(got_d, ref_d)
    pos = {int(v): r for r, v in enumerate(ids)}
    for r in range(6):
        np.testing.assert_array_equal(got_c[r], codes[[pos[int(i)] for i in got_i[r]]])


def test_num_shards_from_the_uri(server_store: Any, milvus_server: Any, fresh_name: Any) -> None:
    """``num_shards`` creates the collection with that many DML channels; searches stay exact."""
    from pymilvus import MilvusClient

    name = fresh_name("sh")
    s = MilvusStore.from_uri(milvus_server.store_uri(name) + "?num_shards=2")
    try:
        s.open(make_meta(64))
        codes = random_codes(400, 64, seed=5)
        ids = np.arange(400, dtype=np.int64)
        s.upsert(ids, codes)
        client = MilvusClient(milvus_server.uri, alias="inspect-shards")
        try:
            assert client.describe_collection(name)["num_shards"] == 2
        finally:
            client.close()
        q = random_codes(5, 64, seed=6)
        got_i, got_d = s.search(q, 20)
        np.testing.assert_array_equal(got_d, _ref(q, codes, ids, 20)[1])
    finally:
        s.drop()
        s.close()
    with pytest.raises(ValueError, match="num_shards"):
        MilvusStore.from_uri(milvus_server.store_uri(name) + "?num_shards=0")
    with pytest.raises(ValueError, match="Milvus Lite has one shard"):
        MilvusStore("/tmp/x.db", "c", num_shards=2)


def test_words_layout_and_meta_in_description(server_store: Any, milvus_server: Any) -> None:
    from pymilvus import MilvusClient

    s = server_store()
    meta = make_meta(72)  # 9 bytes: two int64 words, the second one padded
    s.open(meta)
    codes = random_codes(100, 72, seed=3)
    s.upsert(np.arange(100), codes)
    client = MilvusClient(milvus_server.uri, alias="inspect-layout")
    try:
        desc = client.describe_collection(s.collection)
        assert desc["description"] == META_PREFIX + meta.to_json()
        names = [f["name"] for f in desc["fields"]]
        assert names[:4] == ["id", "code", "code_w0", "code_w1"] and desc["enable_dynamic_field"]
        row = client.get(s.collection, ids=[5], output_fields=["code", "code_w0", "code_w1"])[0]
        code = row["code"][0] if isinstance(row["code"], list) else row["code"]
        assert bytes(code) == codes[5].tobytes()  # the BINARY_VECTOR holds np.packbits bytes
        words = np.array([row["code_w0"], row["code_w1"]], "<i8").view(np.uint8)
        assert words[:9].tobytes() == codes[5].tobytes() and not words[9:].any()
    finally:
        client.close()


def test_meta_is_checked_by_another_process(server_store: Any, milvus_server: Any) -> None:
    s = server_store("xproc")
    s.open(make_meta(64))
    s.upsert([1, 2], random_codes(2, 64))
    script = textwrap.dedent(
        f"""
        import json
        from hashplug.stores.registry import open_store
        from hashplug.stores.base import HasherMismatchError
        from hashplug.testing import make_meta
        st = open_store({milvus_server.store_uri(s.collection)!r}, consistency_level="Strong")
        meta = st.read_meta()
        try:
            st.open(make_meta(64, fingerprint="0123456789abcdef"))
            mismatch = None
        except HasherMismatchError as e:
            mismatch = str(e)
        print(json.dumps({{"fp": meta.fingerprint, "spec": meta.hasher_spec,
                          "count": st.count(), "mismatch": mismatch}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["fp"] == "f00dfeedcafe0001" and got["spec"]["class"] == "HashingBaseline"
    assert got["count"] == 2 and "0123456789abcdef" in got["mismatch"]


def test_foreign_collection_is_refused(server_store: Any, milvus_server: Any) -> None:
    from pymilvus import MilvusClient

    s = server_store("foreign")
    client = MilvusClient(milvus_server.uri, alias="foreign-maker")
    try:
        client.create_collection(s.collection, dimension=8)  # a plain float collection
    finally:
        client.close()
    with pytest.raises(StoreError, match="not created by hashplug"):
        s.open(make_meta(64))


# -- index ------------------------------------------------------------------------------------------
def test_ivf_index_exact_at_full_nprobe_and_rebuild(server_store: Any, milvus_server: Any) -> None:
    s = server_store("ivf", index="BIN_IVF_FLAT", nlist=8, nprobe=8)
    s.open(make_meta(64))
    n = 6000
    codes = random_codes(n, 64, seed=4)
    ids = np.arange(n, dtype=np.int64)
    s.upsert(ids, codes)
    s.wait_for_index(timeout=120)  # sealed and indexed: the IVF index is what answers now
    done, total = s.index_progress()
    assert done == total == n
    q = random_codes(5, 64, seed=5)
    ref_i, ref_d = _ref(q, codes, ids, 20)
    got_i, got_d = s.search(q, 20)
    np.testing.assert_array_equal(got_d, ref_d)  # nprobe = nlist: every list is scanned
    s.nprobe = 1
    few_i, few_d = s.search(q, 20)  # one list: valid hits with true distances, maybe not nearest
    assert (few_i >= 0).all()
    d_all = hamming_distances(q, codes)
    np.testing.assert_array_equal(few_d, np.take_along_axis(d_all, few_i, axis=1))
    # Another client opening the collection learns its index type from the server.
    t = MilvusStore.from_uri(milvus_server.store_uri(s.collection))
    t.open(make_meta(64))
    t.search(q[:1], 1)
    assert (t.index, t.nlist) == ("BIN_IVF_FLAT", 8)
    t.close()
    s.set_index("BIN_FLAT")
    got_i, got_d = s.search(q, 20)
    np.testing.assert_array_equal(got_d, ref_d)
    np.testing.assert_array_equal(got_i, ref_i)


def test_limit_is_clamped_to_milvus_topk(server_store: Any) -> None:
    s = server_store()
    s.open(make_meta(64))
    s.upsert(np.arange(30), random_codes(30, 64))
    ids, dist = s.search(random_codes(2, 64, seed=8), 20_000)
    assert ids.shape == (2, 20_000) and (ids[:, :30] >= 0).all() and (ids[:, 30:] == -1).all()
    assert (dist[:, 30:] == HAMMING_PAD).all()


# -- payloads and filters --------------------------------------------------------------------------
PAYLOADS = [
    {"color": "red", "rank": 3, "ok": True, "tags": ["a", "b"], "name": 'say "hi" \\ ok'},
    {"color": "blue", "rank": 7, "ok": False, "tags": ["b"], "weird key": 1, "nested": {"x": [1]}},
    {"color": "red", "rank": 9, "ok": True, "tags": [], "id": "mine", "code": 5, "score": 2.0},
    None,
    {"color": "grün", "rank": 11, "ok": False, "tags": ["a"]},
]


@pytest.fixture(scope="module", params=["server", "lite"])
def any_store(request: Any) -> Any:
    """One collection per engine for the payload and filter tests (loading one costs seconds)."""
    if request.param == "server":
        uri = request.getfixturevalue("milvus_server").uri
    else:
        uri = str(request.getfixturevalue("lite_db"))
    s = MilvusStore(uri, f"t{uuid.uuid4().hex[:8]}_flt")
    s.open(make_meta(64))
    s.upsert(np.arange(1, 6), random_codes(5, 64, seed=9), PAYLOADS)
    yield s
    s.drop()
    s.close()


def test_payloads_round_trip_exactly(any_store: MilvusStore) -> None:
    got = any_store.get_payloads([1, 2, 3, 4, 5, 99])
    assert got[:5] == PAYLOADS and got[5] is None
    # NaN is refused on every store alike (JSON cannot hold it; engines disagreed).
    with pytest.raises(ValueError, match="finite"):
        any_store.upsert([50], random_codes(1, 64), [{"nan": float("nan")}])


@pytest.mark.parametrize(
    ("flt", "want"),
    [
        ({"color": "red"}, {1, 3}),
        ({"color": "red", "rank": 9}, {3}),
        ({"ok": False}, {2, 5}),
        ({"name": 'say "hi" \\ ok'}, {1}),
        ({"weird key": 1}, {2}),
        ({"color": "grün"}, {5}),
        ({"score": 2}, {3}),
        ('rank > 5 and color == "red"', {3}),
        ('json_contains(tags, "a")', {1, 5}),
        ("id in [2, 4]", {2, 4}),
        ('nested["x"][0] == 1', {2}),
    ],
)
def test_filters(any_store: MilvusStore, flt: Any, want: set[int]) -> None:
    ids, _ = any_store.search(random_codes(1, 64, seed=10), 5, filter=flt)
    assert set(ids[0][ids[0] >= 0].tolist()) == want


def test_bad_filters_are_value_errors(any_store: MilvusStore) -> None:
    q = random_codes(1, 64)
    with pytest.raises(ValueError, match="reserved"):
        any_store.search(q, 3, filter={"id": "mine"})
    with pytest.raises(ValueError, match="scalars"):
        any_store.search(q, 3, filter={"tags": [["a"]]})
    with pytest.raises(ValueError, match="finite"):
        any_store.search(q, 3, filter={"score": float("nan")})
    with pytest.raises(ValueError, match="refused the filter"):
        any_store.search(q, 3, filter="color === ")
    with pytest.raises(ValueError, match="filters are"):
        any_store.search(q, 3, filter=42)


def test_too_large_payload_is_refused_before_any_write(any_store: MilvusStore) -> None:
    with pytest.raises(ValueError, match="payload_max_length"):
        any_store.upsert([10, 11], random_codes(2, 64), [{"a": 1}, {"blob": "x" * 70_000}])
    assert any_store.count() == 5


# -- batching --------------------------------------------------------------------------------------
def test_batched_upsert_reports_progress_and_never_duplicates(server_store: Any) -> None:
    s = server_store(batch_size=300)
    s.open(make_meta(64))
    seen: list[tuple[int, int]] = []
    s.on_batch = lambda done, total: seen.append((done, total))
    codes = random_codes(1000, 64, seed=12)
    s.upsert(np.arange(1000), codes, [{"i": i} for i in range(1000)])
    assert seen == [(300, 1000), (600, 1000), (900, 1000), (1000, 1000)]
    s.upsert(np.arange(500, 1000), codes[:500])  # half of them again, other codes
    assert s.count() == 1000
    np.testing.assert_array_equal(s.get_codes(np.arange(500, 1000)), codes[:500])
    assert s.get_payloads([499, 500]) == [{"i": 499}, None]


# -- Lite specifics --------------------------------------------------------------------------------
def test_lite_uri_forms_and_limits(lite_db: Path, fresh_name: Any, cleanup: list[Any]) -> None:
    name = fresh_name("lite")
    s = open_store(f"milvus+lite://{lite_db}/{name}")
    cleanup.append(s)
    assert isinstance(s, MilvusStore) and s.is_lite and s.uri == str(lite_db)
    s.open(make_meta(64))
    assert s.returns_codes  # via the int64 words; Lite crashes on BINARY_VECTOR outputs
    with pytest.raises(ValueError, match="BIN_FLAT"):
        MilvusStore(str(lite_db), "x", index="BIN_IVF_FLAT")
    with pytest.raises(ValueError, match="BIN_FLAT"):
        s.set_index("BIN_IVF_FLAT")
    t = MilvusStore(str(lite_db), name)
    with pytest.raises(HasherMismatchError):
        t.open(make_meta(64, fingerprint="0123456789abcdef"))
    t.close()


def test_lite_store_opens_without_warnings(tmp_path: Path) -> None:
    """A user's first Lite store, in a fresh process with warnings shown: nothing on stderr."""
    pytest.importorskip("milvus_lite", reason="pip install 'milvus-lite==2.5.1' 'setuptools<81'")
    code = textwrap.dedent(
        f"""
        from hashplug_milvus import MilvusStore
        from hashplug.testing import make_meta, random_codes
        s = MilvusStore({str(tmp_path / "w.db")!r}, "quiet")
        s.open(make_meta(64))
        s.upsert([1, 2], random_codes(2))
        print(s.count())
        s.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert "Warning" not in out.stderr, out.stderr


# -- end to end with HashIndex ---------------------------------------------------------------------
def test_hash_index_on_milvus_matches_local_store(
    milvus_server: Any, fresh_name: Any, cleanup: list[Any]
) -> None:
    import hashplug
    from hashplug import HashIndex, HashingBaseline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 48)).astype(np.float32)
    hasher = HashingBaseline(32).fit(x)
    payloads = [{"group": i % 4} for i in range(3000)]
    name = fresh_name("idx")
    idx = HashIndex(milvus_server.store_uri(name), hasher)
    cleanup.append(idx.store)
    ref = HashIndex(hashplug.LocalStore(), hasher)
    for index in (idx, ref):
        index.add(x, np.arange(3000) + 10, payloads, progress=False)
    q = x[:20] + 0.01
    got = idx.search(q, 10, oversample=10, with_payloads=True)
    want = ref.search(q, 10, oversample=10)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-6)
    assert got.payloads is not None and got.payloads[0][0] == payloads[int(got.ids[0, 0]) - 10]
    fl = idx.search(q, 5, filter={"group": 2})
    assert all(payloads[int(i) - 10]["group"] == 2 for i in fl.ids.ravel() if i >= 0)
    with pytest.raises(HasherMismatchError):
        HashIndex(milvus_server.store_uri(name), HashingBaseline(32, seed=1).fit(x))


def test_a_collection_of_an_older_version_serves_asymmetric_and_says_what_to_do(
    lite_db: Any, fresh_name: Any, cleanup: list[Any]
) -> None:
    """A collection without the ``code_corr`` field (older hashplug; Milvus adds no field).

    Asymmetric works, scoring='cosine' is a ValueError naming the way out, nothing written.
    """
    from pymilvus import DataType, MilvusClient

    from hashplug import HashIndex, HashingBaseline

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    h = HashingBaseline(16).fit(x)
    name = fresh_name("old")
    meta = HashIndex("memory://", h).meta
    client = MilvusClient(str(lite_db))  # the layout that hashplug 0.x wrote
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=True, description=META_PREFIX + meta.to_json()
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=16)
    schema.add_field("code_w0", DataType.INT64)
    schema.add_field("payload", DataType.VARCHAR, max_length=65_535)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection(name, schema=schema, index_params=params)
    client.close()
    store = MilvusStore(str(lite_db), name)
    cleanup.append(store)
    idx = HashIndex(store, h)
    assert idx.add(x, np.arange(200), progress=False) == 200  # asymmetric: no factors sent
    assert idx.search(x[:3], k=5).ids[:, 0].tolist() == [0, 1, 2]
    assert store.bytes_per_vector() == 2  # codes only
    why = r"older hashplug.*code_corr.*new collection.*scoring='cosine'"
    with pytest.raises(ValueError, match=why):
        idx.search(x[:3], k=5, scoring="cosine")
    with pytest.raises(ValueError, match=why):
        idx.add(x[:5], np.arange(1000, 1005), progress=False, scoring="cosine")
    with pytest.raises(ValueError, match=why):
        store.upsert([7], h.encode(x[:1]), corrections=h.correction(x[:1]))
    with pytest.raises(ValueError, match=why):
        store.lookup_corrections([0])
    assert store.count() == 200
