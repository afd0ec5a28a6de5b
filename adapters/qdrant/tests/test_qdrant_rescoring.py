"""Native asymmetric rescoring inside Qdrant vs the local rerank, on real hashplug codes.

Qdrant Edge runs the real thing: coarse candidates from the 1-bit quantized vectors, then
rescoring of those candidates against the stored ±1 vectors with the query t = tanh(u / 2);
asym = (n_bits - s·t) / 2. The local path takes the same store's coarse Hamming top-C
(``search_with_codes``) and reranks by Σ|b - p| on this side.

"Identical up to ties": per query, the k distances agree (within the scoring precision), and any
id in one top-k but not the other sits at the k-th distance. With float32 storage the precision is
float32; with float16 storage Qdrant rounds t to float16 first, so two candidates whose distances
differ by less than that rounding (|Δ| <= Σ|t - f16(t)|) may swap: those are ties too, and the
test bounds how many rows they touch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hashplug_qdrant import QdrantEdgeStore, QdrantStore

K, OVERSAMPLE = 10, 10


def _probs(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-u.astype(np.float64)))


def _local_rerank(store, u: np.ndarray, k: int, oversample: int) -> tuple[np.ndarray, np.ndarray]:
    """The local path: coarse Hamming top-(k*oversample) from the store, asymmetric rerank here.

    hashplug.rerank.rerank when it is available, else the same formula in float64 numpy.
    """
    ids, _, codes = store.search_with_codes(np.packbits(u > 0, axis=1), k * oversample)
    p = _probs(u)
    try:
        from hashplug.rerank import rerank

        return rerank(p.astype(np.float32), ids, codes, k)
    except (ImportError, AttributeError):
        pass
    bits = np.unpackbits(codes, axis=2).astype(np.float64)
    d = p.sum(1)[:, None] + np.einsum("qj,qcj->qc", 1.0 - 2.0 * p, bits)
    d = np.where(ids >= 0, d, np.inf)
    out_i = np.full((len(u), k), -1, np.int64)
    out_d = np.full((len(u), k), np.inf, np.float32)
    for r in range(len(u)):
        o = np.lexsort((ids[r], d[r]))[:k]
        out_i[r], out_d[r] = ids[r][o], d[r][o]
    return out_i, out_d


def _exact_of(real, u_rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Exact Σ|b - p| of the given ids (float64)."""
    p = _probs(u_rows)
    row_of = {int(v): r for r, v in enumerate(real.ids)}
    bits = np.unpackbits(real.codes, axis=1).astype(np.float64)
    out = np.full(ids.shape, np.inf)
    for q in range(ids.shape[0]):
        b = bits[[row_of[int(i)] for i in ids[q]]]
        out[q] = p[q].sum() + b @ (1.0 - 2.0 * p[q])
    return out


def _assert_same_up_to_ties(
    a_ids: np.ndarray, a_d: np.ndarray, b_ids: np.ndarray, b_d: np.ndarray, tol: np.ndarray
) -> float:
    """Per-row check; returns the fraction of rows whose id lists are identical."""
    identical = 0
    for r in range(a_ids.shape[0]):
        np.testing.assert_allclose(a_d[r], b_d[r], rtol=0, atol=tol[r])
        if np.array_equal(a_ids[r], b_ids[r]):
            identical += 1
            continue
        kth = max(a_d[r, -1], b_d[r, -1])
        for i, d in zip(a_ids[r], a_d[r], strict=True):  # an id missing from b ties at the cut
            if i not in b_ids[r]:
                assert d >= b_d[r, -1] - tol[r], (r, i, d, b_d[r])
        for i, d in zip(b_ids[r], b_d[r], strict=True):
            if i not in a_ids[r]:
                assert d >= a_d[r, -1] - tol[r], (r, i, d, a_d[r])
        assert kth < np.inf
    return identical / a_ids.shape[0]


@pytest.mark.parametrize("datatype", ["float32", "float16"])
def test_edge_native_rescoring_equals_local_rerank(
    real_codes, tmp_path: Path, datatype: str
) -> None:
    real = real_codes
    s = QdrantEdgeStore(tmp_path / "s", datatype=datatype, optimize_on_close=False)
    s.open(real.meta)
    s.upsert(real.ids, real.codes)
    s.optimize()
    u = real.logits
    n_ids, n_d = s.search_rescored(u, K, OVERSAMPLE)
    l_ids, l_d = _local_rerank(s, u, K, OVERSAMPLE)
    assert n_ids.shape == (len(u), K) and n_d.dtype == np.float32 and (n_ids >= 0).all()

    t = np.tanh(u.astype(np.float64) / 2)
    if datatype == "float32":
        tol = np.full(len(u), 1e-4)
    else:  # Qdrant rounds the query to float16: |Δ s·t| <= Σ|t - f16(t)|, Δasym is half that
        tol = np.abs(t - t.astype(np.float16).astype(np.float64)).sum(1) + 1e-4
    # The returned distance is the asymmetric distance of the returned code: (n - s·t) / 2.
    assert (np.abs(n_d - _exact_of(real, u, n_ids)) < tol[:, None]).all()
    same = _assert_same_up_to_ties(n_ids, n_d, l_ids, l_d, tol)
    assert same >= (0.99 if datatype == "float32" else 0.9), same
    # Qdrant's own oversampling (limit k, oversampling O) picks the same k*O candidates.
    o_ids, o_d = s.search_rescored(u, K, OVERSAMPLE, exact_ties=False)
    _assert_same_up_to_ties(o_ids, o_d, n_ids, n_d, tol)
    s.close()


def test_edge_native_rescoring_with_a_filter(real_codes, tmp_path: Path) -> None:
    real = real_codes
    s = QdrantEdgeStore(tmp_path / "s", datatype="float32", optimize_on_close=False)
    s.open(real.meta)
    s.upsert(real.ids, real.codes, [{"even": int(i % 2 == 0)} for i in real.ids])
    n_ids, n_d = s.search_rescored(real.logits[:20], 5, 20, filter={"even": 1})
    assert (n_ids % 2 == 0).all()
    np.testing.assert_allclose(n_d, _exact_of(real, real.logits[:20], n_ids), atol=1e-4)
    s.close()


def test_local_mode_rescoring_is_exhaustive(real_codes, tmp_path: Path) -> None:
    """qdrant-client local mode has no quantization: its "rescored" search is exhaustive.

    It is the exact asymmetric search over everything, i.e. the exhaustive top-k (ties by smaller
    id).
    """
    real = real_codes
    s = QdrantStore("codes", path=tmp_path / "q")
    s.open(real.meta)
    s.upsert(real.ids[:3000], real.codes[:3000])
    u = real.logits[:40]
    n_ids, n_d = s.search_rescored(u, K, OVERSAMPLE)
    exact = real.exact_asym(slice(0, 40))[:, :3000]
    ids = real.ids[:3000]
    e_ids = np.array([ids[np.lexsort((ids, row))[:K]] for row in exact])
    e_d = np.sort(exact, axis=1)[:, :K]
    same = _assert_same_up_to_ties(n_ids, n_d, e_ids, e_d, np.full(len(u), 1e-4))
    assert same >= 0.95
    s.close()


def test_hash_index_on_qdrant_edge(real_codes, tmp_path: Path) -> None:
    """End to end through HashIndex: local rerank and Qdrant's native rescoring agree."""
    from hashplug import HashIndex

    real = real_codes
    with np.load(_npz()) as d:
        x = d["db_x"][:2000].astype(np.float32)
        q = d["q_x"][:20].astype(np.float32)
    idx = HashIndex(f"qdrant-edge://{tmp_path}/shard", real.hasher)
    idx.add(x, np.arange(2000), progress=False)
    idx.add(x, np.arange(2000), progress=False)  # idempotent re-ingest
    assert len(idx) == 2000
    res = idx.search(q, k=10, oversample=10)
    assert res.ids.shape == (20, 10) and (res.ids >= 0).all()
    nat = idx.search(q, k=10, oversample=10, rescore="store")
    assert nat.ids.shape == (20, 10)
    # Each native distance is the asymmetric distance of its own item (float16 storage rounds
    # t); the two candidate sets may differ at near-ties, so ids agree mostly, not always.
    from hashplug._validate import sigmoid

    p = sigmoid(real.hasher.query_logits(q)).astype(np.float64)
    bits = np.unpackbits(real.hasher.encode(x), axis=1).astype(np.float64)
    for r in range(len(q)):
        want = np.abs(bits[nat.ids[r]] - p[r]).sum(axis=1)
        np.testing.assert_allclose(nat.distances[r], want, atol=0.05)
    same = nat.ids == res.ids
    np.testing.assert_allclose(nat.distances[same], res.distances[same], atol=0.05)
    assert same.mean() >= 0.9
    idx.close()


def _npz() -> Path:
    from hashplug.bench.datasets import default_embeddings_path

    return default_embeddings_path()
