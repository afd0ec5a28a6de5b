"""attach() on Qdrant collections written by qdrant_edge / qdrant_client themselves (never hashplug)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

import hashplug
from hashplug.sources import SourceError
from hashplug.stores import HasherMismatchError
from hashplug.testing.attach import assert_engine_scoring_matches_fetching

REPO = Path(__file__).resolve().parents[3]
NPZ = REPO.parent / "shared" / "data" / "fmnist_effnet.npz"
N = 2000


def _real() -> tuple[np.ndarray, np.ndarray]:
    if not NPZ.exists():
        pytest.skip(f"real embeddings not found at {NPZ} (../shared/data is absent)")
    d = np.load(NPZ)
    return d["db_x"][:N].astype(np.float32), d["q_x"][:30].astype(np.float32)


def _edge_shard(path: Path, ids: list[int], x: np.ndarray, distance=None) -> None:
    """The user's own pipeline: qdrant_edge, one unnamed vector, a payload per point."""
    cfg = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=x.shape[1], distance=distance or qe.Distance.Cosine)
    )
    shard = qe.EdgeShard.create(str(path), cfg)
    for s in range(0, len(ids), 500):
        pts = [
            qe.Point(i, v, {"n": i})
            for i, v in zip(ids[s : s + 500], x[s : s + 500].tolist(), strict=True)
        ]
        shard.update(qe.UpdateOperation.upsert_points(pts))
    shard.flush()
    shard.close()


def _edge_points(path: Path) -> list:
    shard = qe.EdgeShard.load(str(path))
    try:
        recs, _ = shard.scroll(qe.ScrollRequest(limit=100_000, with_payload=True, with_vector=True))
        return sorted(
            (
                r.id,
                tuple(np.round(r.vector, 6)) if isinstance(r.vector, list) else str(r.vector),
                str(r.payload),
            )
            for r in recs
        )
    finally:
        shard.close()


def _recall(truth, got) -> float:
    return float(
        np.mean(
            [
                len(set(t.tolist()) & set(g.tolist())) / len(t)
                for t, g in zip(truth, got, strict=True)
            ]
        )
    )


def test_edge_attach_search_resume_sync(tmp_path):
    x, q = _real()
    path = tmp_path / "shard"
    ids = [i * 5 + 1 for i in range(N)]
    _edge_shard(path, ids, x)
    before = _edge_points(path)
    from hashplug_qdrant.source import QdrantEdgeSource

    real_scan = QdrantEdgeSource.scan

    def dying_scan(self, batch_size):
        for n, batch in enumerate(real_scan(self, batch_size)):
            if n == 2:  # killed in the middle of the coding pass
                raise KeyboardInterrupt
            yield batch

    QdrantEdgeSource.scan = dying_scan
    try:
        with pytest.raises(KeyboardInterrupt):
            hashplug.attach(f"qdrant-edge://{path}", batch_size=300, fit_sample=500, progress=False)
    finally:
        QdrantEdgeSource.scan = real_scan
    idx = hashplug.attach(f"qdrant-edge://{path}", batch_size=300, progress=False)
    assert (
        idx.info.metric == "cosine"
        and idx.info.id_kind == "int"
        and idx.info.vector_field == "(unnamed)"
    )
    assert idx.last_sync.unchanged == 600 and idx.last_sync.coded == N - 600
    stored = np.sort(np.concatenate(list(idx.store.iter_ids(700))))
    np.testing.assert_array_equal(stored, ids)  # every point coded exactly once
    res = idx.search(q, 10)
    truth, scores = idx.source.search(q, 10)
    assert _recall(truth, res.ids) >= 0.95
    same = res.ids[:, 0] == np.array([t[0] for t in truth])
    np.testing.assert_allclose(res.scores[same, 0], scores[same, 0], atol=1e-4)
    assert_engine_scoring_matches_fetching(idx, q, 10)
    idx.close()
    assert _edge_points(path) == before  # points, vectors and payloads untouched

    shard = qe.EdgeShard.load(str(path))  # the user writes and deletes, then syncs
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(10**6, x[0].tolist(), None)]))
    shard.update(qe.UpdateOperation.delete_points([1, 6, 11]))
    shard.flush()
    shard.close()
    idx = hashplug.attach(f"qdrant-edge://{path}", progress=False)
    assert (idx.last_sync.coded, idx.last_sync.deleted) == (1, 3) and len(idx) == N - 2
    assert 10**6 in idx.search(x[:1], 3).ids[0]
    idx.close()


def test_local_mode_uuids_named_vectors_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    folder = tmp_path / "q"
    c = QdrantClient(path=str(folder))
    c.create_collection(
        "docs",
        vectors_config={
            "img": models.VectorParams(size=24, distance=models.Distance.DOT),
            "txt": models.VectorParams(size=8, distance=models.Distance.EUCLID),
        },
    )
    c.create_collection(
        "manhattan", vectors_config=models.VectorParams(size=4, distance=models.Distance.MANHATTAN)
    )
    uids = [str(uuid.UUID(int=i * 7919 + 3)) for i in range(300)]
    c.upsert(
        "docs",
        [
            models.PointStruct(
                id=u, vector={"img": v.tolist(), "txt": v[:8].tolist()}, payload={"i": i}
            )
            for i, (u, v) in enumerate(zip(uids, x, strict=True))
        ],
    )
    c.close()
    uri = f"qdrant+local://{folder}/docs"
    with pytest.raises(SourceError, match="several float vector fields"):
        hashplug.attach(uri)
    with pytest.raises(SourceError, match="no field 'nope'"):
        hashplug.attach(uri, vector_field="nope")
    with pytest.raises(SourceError, match="does not exist"):
        hashplug.attach(f"qdrant+local://{folder}/missing")
    with pytest.raises(SourceError, match="manhattan distance"):
        hashplug.attach(f"qdrant+local://{folder}/manhattan")
    idx = hashplug.attach(uri, vector_field="img", bits=16, progress=False)
    assert idx.info.metric == "dot" and idx.info.id_kind == "str"
    res = idx.search(x[:5], 3)
    truth, scores = idx.source.search(x[:5], 3)
    assert [r[0] for r in res.ids] == [t[0] for t in truth]
    assert set(res.ids.reshape(-1).tolist()) <= set(uids)  # the collection's own UUIDs come back
    np.testing.assert_allclose(res.scores[:, 0], scores[:, 0], rtol=1e-5)
    other = hashplug.HashingBaseline(16, seed=9).fit(x)
    idx.close()
    with pytest.raises(HasherMismatchError) as e:
        hashplug.attach(uri, vector_field="img", hasher=other)
    assert other.fingerprint in str(e.value)
    small = hashplug.HashingBaseline(8).fit(x[:, :8])
    with pytest.raises(ValueError, match="expects 8-d"):
        hashplug.attach(
            uri, vector_field="img", hasher=small, codes_uri=f"qdrant+local://{folder}/other"
        )
    assert_engine_scoring_matches_fetching(idx, x[:5], 3)
    l2 = hashplug.attach(
        uri,
        vector_field="txt",
        bits=8,
        codes_uri=f"qdrant+local://{folder}/txt_codes",
        progress=False,
    )
    assert l2.info.metric == "l2"
    got = l2.search(x[:3, :8], 1)
    np.testing.assert_allclose(got.scores[:, 0], 0, atol=1e-4)  # Euclidean distance to itself
    assert_engine_scoring_matches_fetching(l2, x[:3, :8], 3)
    l2.close()


def test_edge_bad_paths(tmp_path):
    with pytest.raises(SourceError, match="not a Qdrant Edge shard"):
        hashplug.attach(f"qdrant-edge://{tmp_path}/nothing-here")
    store = hashplug.open_store(f"qdrant-edge://{tmp_path}/codes")
    hashplug.HashIndex(
        store,
        hashplug.HashingBaseline(8).fit(
            np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
        ),
    )
    store.close()
    with pytest.raises(SourceError, match="holds hashplug codes"):
        hashplug.attach(f"qdrant-edge://{tmp_path}/codes")
