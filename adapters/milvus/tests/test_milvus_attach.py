"""attach() on Milvus collections written by pymilvus itself.

Milvus Lite 2.5.1 and the real Milvus 2.3.5 standalone server. Codes go to a sibling collection
``COLL__hashplug``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hashplug_milvus import MilvusStore
from hashplug_milvus._filters import literal
from hashplug_milvus.source import MilvusSource
from pymilvus import DataType, MilvusClient

import hashplug
from hashplug.sources.source import SourceError
from hashplug.stores.base import HasherMismatchError
from hashplug.testing import make_meta, random_codes
from hashplug.testing.attach import assert_engine_scoring_matches_fetching

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "fmnist_effnet.npz"
HOSTILE = [
    'say "hi"',
    "it's",
    "back\\slash",
    "x\\",
    'q" or pk != "',
    "ünïcødé ✓",
    "日本",
    "line\nbreak",
    "tab\there",
    "\\t",
]
_METRIC = {"cosine": "COSINE", "dot": "IP", "l2": "L2"}


# -- helpers: the user's side, plain pymilvus ------------------------------------------------------
def make_collection(
    client: MilvusClient,
    name: str,
    vectors: np.ndarray,
    ids: list[Any],
    *,
    metric: str = "cosine",
    field: str = "emb",
    pk: str = "pk",
    float16: bool = False,
    extra_vector: str | None = None,
    index: bool = True,
) -> None:
    """A collection as a user's pipeline writes it: their pk, a float vector, a text field."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    str_ids = isinstance(ids[0], str)
    if str_ids:
        schema.add_field(pk, DataType.VARCHAR, is_primary=True, max_length=256)
    else:
        schema.add_field(pk, DataType.INT64, is_primary=True)
    vtype = DataType.FLOAT16_VECTOR if float16 else DataType.FLOAT_VECTOR
    schema.add_field(field, vtype, dim=vectors.shape[1])
    if extra_vector:
        schema.add_field(extra_vector, DataType.FLOAT_VECTOR, dim=4)
    schema.add_field("title", DataType.VARCHAR, max_length=64)
    schema.add_field("n", DataType.INT64)  # a row ordinal: snapshot() pages by it
    params = client.prepare_index_params()
    if index:
        params.add_index(field, index_type="FLAT", metric_type=_METRIC[metric])
        if extra_vector:
            params.add_index(extra_vector, index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=params if index else None)
    insert_rows(client, name, vectors, ids, field=field, pk=pk, float16=float16, extra=extra_vector)


def insert_rows(
    client: MilvusClient,
    name: str,
    vectors: np.ndarray,
    ids: list[Any],
    *,
    field: str = "emb",
    pk: str = "pk",
    float16: bool = False,
    extra: str | None = None,
    start: int = 0,
) -> None:
    step = max(1, 2_000_000 // (vectors.shape[1] * 4))  # small RPCs: Milvus Lite wedges on big ones
    for s in range(0, len(ids), step):
        rows = []
        for i in range(s, min(len(ids), s + step)):
            v = vectors[i].astype(np.float16) if float16 else vectors[i].astype(np.float32).tolist()
            row = {pk: ids[i], field: v, "title": f"t{i}", "n": start + i}
            if extra:
                row[extra] = [0.0, 1.0, 2.0, 3.0]
            rows.append(row)
        client.insert(name, rows)


def delete_rows(client: MilvusClient, name: str, ids: list[Any], pk: str = "pk") -> None:
    """Deletes by an escaped expression (pymilvus' delete(ids=...) does not escape strings)."""
    client.delete(name, filter=f"{pk} in [{', '.join(literal(i) for i in ids)}]")


def snapshot(client: MilvusClient, name: str) -> dict[str, Any]:
    """Everything of a collection a user could notice: schema, index, every row with its vector.

    Rows are read by ranges of the ``n`` ordinal: offsets are very slow on Milvus Lite, and it
    wedges on query replies of a few MB.
    """
    desc = client.describe_collection(name)
    pk = next(f["name"] for f in desc["fields"] if f.get("is_primary"))
    total = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[
        0
    ]["count(*)"]
    rows: dict[Any, Any] = {}
    lo = 0
    while len(rows) < total:
        page = client.query(
            name,
            filter=f"n >= {lo} and n < {lo + 200}",
            output_fields=["*"],
            consistency_level="Strong",
        )
        for r in page:
            rows[r[pk]] = {
                k: (bytes(v[0]) if isinstance(v, list) and v and isinstance(v[0], bytes) else v)
                for k, v in r.items()
            }
        lo += 200
        assert lo < 10**6, "rows without an ordinal"
    return {
        "fields": [(f["name"], f["type"], f.get("params")) for f in desc["fields"]],
        "indexes": sorted(
            (n, json.dumps(client.describe_index(name, n), sort_keys=True, default=str))
            for n in client.list_indexes(name)
        ),
        "rows": rows,
    }


def recall(truth: list[np.ndarray], got: np.ndarray) -> float:
    hits = sum(len(set(t.tolist()) & set(g.tolist())) for t, g in zip(truth, got, strict=True))
    return hits / sum(len(t) for t in truth)


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered vectors (30 centres plus noise), so that neighbours are meaningful."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim)).astype(np.float32)
    return (centres[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, dim))).astype(
        np.float32
    )


def lite_uri(path: Path, coll: str) -> str:
    return f"milvus+lite://{path}/{coll}"


@pytest.fixture
def lite(tmp_path: Path) -> tuple[MilvusClient, Path]:
    pytest.importorskip("milvus_lite", reason="pip install 'milvus-lite==2.5.1' 'setuptools<81'")
    path = tmp_path / "user.db"
    client = MilvusClient(str(path), alias=f"user-{tmp_path.name}")
    yield client, path
    client.close()


# -- real embeddings on Milvus Lite -----------------------------------------------------------------
@pytest.fixture(scope="module")
def fmnist() -> tuple[np.ndarray, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"real embeddings not found at {DATA} (see shared/data/README.md)")
    d = np.load(DATA)
    return d["db_x"][:2000].astype(np.float32), d["q_x"][:30].astype(np.float32)


def test_attach_real_embeddings_lite_recall_ids_and_source_untouched(
    lite: tuple[MilvusClient, Path], fmnist: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    client, path = lite
    x, q = fmnist
    ids = [int(i) * 7 + 3 for i in range(len(x))]  # the user's own keys, not 0..n-1
    make_collection(client, "docs", x, ids, metric="cosine")
    before = snapshot(client, "docs")

    idx = hashplug.attach(lite_uri(path, "docs"), bits=64, progress=False)
    info = idx.info
    assert (info.vector_field, info.dim, info.metric, info.id_field, info.id_kind) == (
        "emb",
        1280,
        "cosine",
        "pk",
        "int",
    )
    assert info.dtype == "float32" and info.count == len(x)
    assert idx.last_sync is not None and idx.last_sync.coded == len(x)
    assert isinstance(idx.source, MilvusSource) and idx.source.exact
    assert "docs__hashplug" in client.list_collections()
    assert len(idx) == len(x)

    res = idx.search(q, 10, rescore="originals")
    truth, eng_scores = idx.source.search(q, 10)
    assert res.ids.dtype == np.int64 and set(res.ids.ravel().tolist()) <= set(ids)
    assert recall(truth, res.ids) >= 0.95
    # the scores are the engine's cosine similarities, same rows same numbers
    for r in range(len(q)):
        same = {int(i): s for i, s in zip(truth[r], eng_scores[r], strict=True)}
        for i, s in zip(res.ids[r], res.scores[r], strict=True):
            if int(i) in same:
                assert abs(s - same[int(i)]) < 1e-4
    assert np.all(np.diff(res.scores, axis=1) <= 1e-6)  # best first
    assert_engine_scoring_matches_fetching(idx, q, 10)  # filtered search, 1000 keys a call

    report = idx.verify(5, out=tmp_path / "verify.json")
    assert json.loads((tmp_path / "verify.json").read_text()) == report
    assert report["queries"] == 5 and report["k"] == 10 and report["rows"] == len(x)
    assert report["recall_at_k"] >= 0.9
    assert report["ram_bytes_per_vector"] == {"codes": 8, "floats": 1280 * 4}
    assert report["hashplug_ms"]["p50"] > 0 and report["engine_float_ms"]["p50"] > 0

    again = hashplug.attach(lite_uri(path, "docs"), progress=False)  # resumes: nothing to code
    assert again.last_sync is not None
    assert (again.last_sync.coded, again.last_sync.unchanged) == (0, len(x))
    again.close()
    idx.close()
    assert snapshot(client, "docs") == before


# -- string keys, float16, synthetic data -----------------------------------------------------------
def test_varchar_keys_come_back_as_the_source_strings(lite: tuple[MilvusClient, Path]) -> None:
    client, path = lite
    x = synthetic(1500, 32, seed=1)
    ids = [f"doc-{i}" for i in range(len(x))]
    ids[: len(HOSTILE)] = HOSTILE
    make_collection(client, "notes", x, ids, metric="l2")
    before = snapshot(client, "notes")
    idx = hashplug.attach(lite_uri(path, "notes"), bits=32, progress=False)
    assert idx.info.id_kind == "str" and idx.info.metric == "l2"
    res = idx.search(x[: len(HOSTILE)], 5)
    assert res.ids.dtype == object
    assert res.ids[:, 0].tolist() == HOSTILE  # each hostile row finds itself first
    np.testing.assert_allclose(res.scores[:, 0], 0.0, atol=1e-3)  # Euclidean, not squared
    truth, eng = idx.source.search(x[100:120], 10)
    got = idx.search(x[100:120], 10)
    assert recall(truth, got.ids) >= 0.95
    np.testing.assert_allclose(got.scores[:, 0], eng[:, 0], rtol=1e-4, atol=1e-4)
    assert_engine_scoring_matches_fetching(idx, x[: len(HOSTILE)], 5)  # hostile keys, l2
    vecs, found = idx.source.fetch(np.array([*HOSTILE, "no such id"], dtype=object))
    assert found.tolist() == [True] * len(HOSTILE) + [False]
    np.testing.assert_allclose(vecs[: len(HOSTILE)], x[: len(HOSTILE)], rtol=1e-6)
    idx.close()
    assert snapshot(client, "notes") == before


def test_float16_vectors(lite: tuple[MilvusClient, Path]) -> None:
    client, path = lite
    x = synthetic(1200, 48, seed=2)
    make_collection(client, "half", x, list(range(len(x))), metric="dot", float16=True)
    idx = hashplug.attach(lite_uri(path, "half"), bits=32, progress=False)
    assert idx.info.dtype == "float16" and idx.info.metric == "dot"
    vecs, found = idx.source.fetch(np.arange(5))
    assert found.all()
    np.testing.assert_array_equal(vecs, x[:5].astype(np.float16).astype(np.float32))
    q = synthetic(15, 48, seed=9)
    truth, eng = idx.source.search(q, 10)
    got = idx.search(q, 10)
    assert recall(truth, got.ids) >= 0.95
    np.testing.assert_allclose(got.scores[:, 0], eng[:, 0], rtol=1e-2)  # engine: fp16 query
    idx.close()


# -- resume and sync --------------------------------------------------------------------------------
class Killed(RuntimeError):
    """What a killed process looks like to attach: the sync stops between batches."""


def test_resume_after_a_kill_codes_every_row_exactly_once(
    lite: tuple[MilvusClient, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, path = lite
    x = synthetic(2000, 32, seed=3)
    ids = [int(i) * 3 for i in range(len(x))]
    make_collection(client, "big", x, ids)
    before = snapshot(client, "big")
    real_scan = MilvusSource.scan

    def dying_scan(self: MilvusSource, batch_size: int) -> Any:
        for n, batch in enumerate(real_scan(self, batch_size)):
            if batch_size == 300 and n == 3:  # the sync's scan, not the fit sample's
                raise Killed("killed after 3 batches")
            yield batch

    monkeypatch.setattr(MilvusSource, "scan", dying_scan)
    with pytest.raises(Killed):
        hashplug.attach(lite_uri(path, "big"), bits=32, batch_size=300, progress=False)
    monkeypatch.undo()
    codes = MilvusStore(str(path), "big__hashplug")
    assert codes.read_meta() is not None and codes.count() == 900  # three batches written

    idx = hashplug.attach(lite_uri(path, "big"), batch_size=300, progress=False)
    rep = idx.last_sync
    assert rep is not None and (rep.coded, rep.unchanged, rep.updated) == (1100, 900, 0)
    stored = np.concatenate(list(idx.store.iter_ids(500)))
    assert stored.size == len(ids) and sorted(stored.tolist()) == ids  # each row once
    np.testing.assert_array_equal(
        idx.store.get_codes(np.asarray(ids)),
        idx.hasher.encode(idx._prep(x)),  # unit rows for cosine
    )  # and with the code of its vector
    codes.close()
    idx.close()
    assert snapshot(client, "big") == before


def test_sync_after_the_user_inserts_and_deletes(lite: tuple[MilvusClient, Path]) -> None:
    client, path = lite
    x = synthetic(1000, 32, seed=4)
    ids = [f"k{i:04d}" for i in range(len(x))]
    make_collection(client, "live", x, ids)
    idx = hashplug.attach(lite_uri(path, "live"), bits=32, progress=False)
    new = synthetic(40, 32, seed=5)
    new_ids = [f"new-{i}" for i in range(39)] + ['new "quoted\\"']
    insert_rows(client, "live", new, new_ids, start=len(x))
    gone = ids[:25]
    delete_rows(client, "live", gone)
    rep = idx.sync(progress=False)
    assert (rep.coded, rep.deleted, rep.unchanged) == (40, 25, 975)
    assert not rep.changed_during
    assert len(idx) == 1015
    res = idx.search(new[-3:], 1)
    assert res.ids[:, 0].tolist() == new_ids[-3:]
    res = idx.search(x[:25], 10)
    assert not set(res.ids.ravel().tolist()) & set(gone)
    rep2 = idx.sync(progress=False)
    assert (rep2.coded, rep2.deleted, rep2.unchanged) == (0, 0, 1015)
    idx.close()


# -- errors: clear, and nothing of the source changes -----------------------------------------------
def test_bad_input_is_a_clear_error_and_changes_nothing(lite: tuple[MilvusClient, Path]) -> None:
    client, path = lite
    x = synthetic(400, 16, seed=6)
    make_collection(client, "two", x, list(range(400)), extra_vector="other")
    make_collection(client, "one", x, list(range(400)))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("bits", DataType.BINARY_VECTOR, dim=16)
    schema.add_field("n", DataType.INT64)
    params = client.prepare_index_params()
    params.add_index("bits", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection("binary", schema=schema, index_params=params)
    client.insert("binary", [{"pk": i, "bits": bytes([i % 256, 1]), "n": i} for i in range(10)])
    before = {n: snapshot(client, n) for n in ("two", "one", "binary")}

    def fails(exc: type[Exception], *words: str, uri: str | None = None, **kw: Any) -> None:
        with pytest.raises(exc) as err:
            hashplug.attach(uri or lite_uri(path, "two"), progress=False, **kw)
        for w in words:
            assert w in str(err.value), (w, str(err.value))

    fails(SourceError, "no collection 'missing'", "one", "two", uri=lite_uri(path, "missing"))
    fails(SourceError, "no Milvus Lite file", uri=lite_uri(path.parent / "nope.db", "docs"))
    fails(SourceError, "several float vector fields", "emb", "other", "vector_field=")
    fails(SourceError, "no field 'nope'", vector_field="nope")
    fails(SourceError, "'title'", "not a float vector field", "VARCHAR", vector_field="title")
    fails(
        SourceError,
        "no float32/float16 vector field",
        "BINARY_VECTOR",
        uri=lite_uri(path, "binary"),
    )
    fails(SourceError, "not the primary key", vector_field="emb", id_field="title")
    fails(ValueError, "unknown option", "colour", vector_field="emb", colour="red")
    fails(ValueError, "differs from the L2 metric", vector_field="other", metric="cosine")
    h8 = hashplug.HashingBaseline(8).fit(synthetic(100, 8))
    fails(ValueError, "8-d", "16-d", uri=lite_uri(path, "one"), hasher=h8)

    first = hashplug.attach(lite_uri(path, "one"), bits=16, progress=False)
    other = hashplug.HashingBaseline(16, seed=1).fit(x)
    with pytest.raises(HasherMismatchError) as err:
        hashplug.attach(lite_uri(path, "one"), hasher=other, progress=False)
    assert first.hasher.fingerprint in str(err.value) and other.fingerprint in str(err.value)
    assert len(first) == 400  # the codes are untouched too
    first.close()
    assert {n: snapshot(client, n) for n in before} == before
    assert sorted(client.list_collections()) == ["binary", "one", "one__hashplug", "two"]


def test_collection_without_index_lite(lite: tuple[MilvusClient, Path]) -> None:
    client, path = lite
    x = synthetic(300, 16, seed=7)
    make_collection(client, "raw", x, list(range(300)), index=False)
    with MilvusSource.from_uri(lite_uri(path, "raw"), metric="l2") as src:
        assert src.info.metric == "l2" and not src.exact and src.index_type == ""
        assert sum(len(i) for i, _ in src.scan(128)) == 300
        with pytest.raises(SourceError, match="has no index"):
            src.search(x[:2], 5)
    with MilvusSource.from_uri(lite_uri(path, "raw")) as src:
        assert src.info.metric == "cosine"  # pymilvus' default metric when none is named


def test_iter_ids_lists_every_code_once(tmp_path: Path) -> None:
    pytest.importorskip("milvus_lite")
    store = MilvusStore(str(tmp_path / "codes.db"), "ids")
    store.open(make_meta(32))
    ids = np.random.default_rng(0).choice(10**12, 2500, replace=False).astype(np.int64)
    store.upsert(ids, random_codes(2500, 32, seed=0))
    pages = list(store.iter_ids(1000))
    assert [p.size for p in pages] == [1000, 1000, 500]
    got = np.concatenate(pages)
    np.testing.assert_array_equal(got, np.sort(ids))
    store.delete(ids[:10])
    assert np.concatenate(list(store.iter_ids())).size == 2490
    store.close()


# -- the real Milvus 2.3.5 server -------------------------------------------------------------------
def test_server_attach_varchar_search_sync_and_untouched(
    milvus_server: Any, fresh_name: Any
) -> None:
    client = MilvusClient(milvus_server.uri, alias=f"user-{fresh_name('c')}")
    name = fresh_name("docs")
    if DATA.exists():  # real embeddings where the shared data is, else clustered synthetic ones
        d = np.load(DATA)
        x, q = d["db_x"][:2000].astype(np.float32), d["q_x"][:20].astype(np.float32)
    else:
        x, q = synthetic(2000, 64, seed=8), synthetic(20, 64, seed=10)
    ids = [f"doc-{i:05d}" for i in range(len(x))]
    ids[: len(HOSTILE)] = HOSTILE
    make_collection(client, name, x, ids, metric="cosine")
    client.flush(name)
    before = snapshot(client, name)
    uri = f"milvus://127.0.0.1:{milvus_server.port}/{name}"
    idx = hashplug.attach(uri, bits=64, progress=False)
    try:
        assert idx.info.id_kind == "str" and idx.info.count == len(x)
        assert idx.store.name == f"{name}__hashplug"
        truth, _ = idx.source.search(q, 10)
        got = idx.search(q, 10)
        assert recall(truth, got.ids) >= 0.95
        own = idx.search(x[: len(HOSTILE)], 3).ids  # each hostile key finds its own row
        assert all(key in row.tolist() for key, row in zip(HOSTILE, own, strict=True))
        assert_engine_scoring_matches_fetching(idx, q, 10)
        assert snapshot(client, name) == before

        new = synthetic(30, x.shape[1], seed=11)
        insert_rows(client, name, new, [f"new-{i}" for i in range(30)], start=len(x))
        delete_rows(client, name, ids[:20])
        rep = idx.sync(progress=False)
        assert (rep.coded, rep.deleted, rep.unchanged) == (30, 20, len(x) - 20)
        assert len(idx) == len(x) + 10
    finally:
        idx.store.drop()
        idx.close()
        client.drop_collection(name)
        client.close()


def test_unreachable_server_fails_fast_and_clearly() -> None:
    from hashplug_milvus.server import free_port

    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        hashplug.attach(f"milvus://127.0.0.1:{port}/docs", progress=False)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "running" in msg and "refused" in msg.lower()


def test_server_reference_search_is_as_exact_as_the_index(
    milvus_server: Any, fresh_name: Any
) -> None:
    """IVF_FLAT probed on every list is exact (checked against numpy); HNSW is said to be not."""
    client = MilvusClient(milvus_server.uri, alias=f"user-{fresh_name('c')}")
    x = synthetic(1500, 24, seed=12)
    q = synthetic(10, 24, seed=13)
    names = []
    try:
        for kind, params in (("IVF_FLAT", {"nlist": 32}), ("HNSW", {"M": 8, "efConstruction": 64})):
            name = fresh_name(kind.lower())
            names.append(name)
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("pk", DataType.INT64, is_primary=True)
            schema.add_field("emb", DataType.FLOAT_VECTOR, dim=24)
            ip = client.prepare_index_params()
            ip.add_index("emb", index_type=kind, metric_type="L2", params=params)
            client.create_collection(name, schema=schema, index_params=ip)
            client.insert(name, [{"pk": i, "emb": x[i].tolist()} for i in range(len(x))])
            client.flush(name)
            src = MilvusSource.from_uri(f"milvus://127.0.0.1:{milvus_server.port}/{name}")
            assert src.index_type == kind and src.info.metric == "l2"
            if kind == "IVF_FLAT":
                assert src.exact
                ids, scores = src.search(q, 10)
                d = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
                ref = np.argsort(d, axis=1, kind="stable")[:, :10]
                assert [i.tolist() for i in ids] == ref.tolist()
                np.testing.assert_allclose(scores, np.take_along_axis(d, ref, 1), rtol=1e-4)
            else:
                assert not src.exact
                with pytest.warns(UserWarning, match="approximate"):
                    ids, _ = src.search(q, 10)
                assert all(len(i) == 10 for i in ids)
            src.close()
    finally:
        for name in names:
            client.drop_collection(name)
        client.close()
