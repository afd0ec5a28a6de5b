"""Conformance of server-side rescoring (stores with ``supports_rescoring``).

``search_rescored(query_logits, k, oversample, filter)`` asks the engine for the Hamming top
``k * oversample`` and reranks it by the asymmetric distance Σ|b - p|, p = sigmoid(u). With
``k * oversample`` at least the collection size every item is a candidate, so the result must be
the exhaustive asymmetric top-k, which these tests compute here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray

from .._validate import sigmoid
from ..stores.base import ScoredHits, Store
from ._conformance_base import ConformanceBase, MakeStore

__all__ = ["CosineRescoringConformance", "RescoringConformance", "asymmetric_reference"]


def asymmetric_reference(logits: NDArray[Any], codes: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Exact Σ_j |b_j - p_j| (float64, (Q, n)) of every code for every query's logits."""
    p = sigmoid(np.asarray(logits, np.float64))
    bits = np.unpackbits(codes, axis=1).astype(np.float64)
    return np.asarray(p.sum(1)[:, None] + (1.0 - 2.0 * p) @ bits.T)


class RescoringConformance(ConformanceBase):
    """Stores with ``supports_rescoring``: ``search_rescored`` is the asymmetric top-k.

    ``rescoring_float16``: the engine may round the query t = tanh(u / 2) to float16 (Qdrant's
    Float16 storage), so distances are checked within Σ|t - f16(t)|; else within 1e-4.
    """

    capability: ClassVar[str | None] = "supports_rescoring"
    rescoring_float16: bool = True

    def _tolerance(self, u: NDArray[np.float32]) -> NDArray[np.float64]:
        if not self.rescoring_float16:
            return np.full(u.shape[0], 1e-4)
        t = np.tanh(u.astype(np.float64) / 2)
        return np.abs(t - t.astype(np.float16).astype(np.float64)).sum(1) + 1e-4

    def _logits(self, q: int, seed: int = 0) -> NDArray[np.float32]:
        return (2.0 * np.random.default_rng(seed).standard_normal((q, self.n_bits))).astype(
            np.float32
        )

    def test_rescored_search_is_the_exact_asymmetric_top_k(self, store: Store) -> None:
        self._require(store, "supports_rescoring", "RescoringConformance")
        ids, codes = self._fill(store)
        u, k = self._logits(6), 10
        over = -(-ids.size // k)  # every item is a candidate
        res = store.search_rescored(u, k, over)
        assert isinstance(res, ScoredHits)
        got_i, got_d = res
        assert got_i.shape == got_d.shape == (6, k)
        assert got_i.dtype == np.int64 and got_d.dtype == np.float32
        exact, tol = asymmetric_reference(u, codes), self._tolerance(u)
        row_of = {int(v): r for r, v in enumerate(ids)}
        for r in range(u.shape[0]):
            want = np.sort(exact[r])[:k]
            np.testing.assert_allclose(got_d[r], want, rtol=0, atol=tol[r])
            own = exact[r][[row_of[int(i)] for i in got_i[r]]]  # each distance is its item's
            np.testing.assert_allclose(got_d[r], own, rtol=0, atol=tol[r])
            assert np.unique(got_i[r]).size == k and (np.diff(got_d[r]) >= 0).all()

    def test_rescored_search_filters_and_pads(self, store: Store) -> None:
        self._require(store, "supports_rescoring", "RescoringConformance")
        ids, codes = self._fill(store, 30)
        u = self._logits(3, seed=1)
        got_i, got_d = store.search_rescored(u, 12, 3, filter={"color": "red"})
        red = ids[::3]
        exact, tol = asymmetric_reference(u, codes[::3]), self._tolerance(u)
        for r in range(3):
            assert sorted(got_i[r, :10].tolist()) == sorted(red.tolist())
            np.testing.assert_allclose(got_d[r, :10], np.sort(exact[r]), rtol=0, atol=tol[r])
        assert (got_i[:, 10:] == -1).all() and np.isinf(got_d[:, 10:]).all()

    def test_rescored_search_refuses_bad_arguments(self, store: Store) -> None:
        self._require(store, "supports_rescoring", "RescoringConformance")
        self._fill(store, 10)
        u = self._logits(2)
        for args, msg in (
            ((u, 0, 2), "k"),
            ((u, True, 2), "k"),
            ((u, 5, 0), "oversample"),
            ((u[:, :-8], 5, 2), "shape"),
            ((np.full_like(u, np.nan), 5, 2), "NaN"),
        ):
            with pytest.raises(ValueError, match=msg):
                store.search_rescored(*args)

    def test_index_rescore_store_equals_the_local_rerank(self, make_store: MakeStore) -> None:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((200, 32)).astype(np.float32)
        idx = self._index(make_store, "conf_rescore", x)
        self._require(idx.store, "supports_rescoring", "RescoringConformance")
        idx.add(x, np.arange(200) * 3, progress=False)
        q = x[:8] + 0.1 * rng.standard_normal((8, 32)).astype(np.float32)
        local = idx.search(q, k=5, oversample=40)  # every item is a candidate: exact
        native = idx.search(q, k=5, oversample=40, rescore="store")
        tol = self._tolerance(idx.hasher.query_logits(q))
        np.testing.assert_allclose(native.distances, local.distances, rtol=0, atol=tol.max())
        same = native.ids == local.ids
        assert same.mean() >= 0.8, same  # the others are near-ties
        idx.close()


class CosineRescoringConformance(ConformanceBase):
    """Stores with ``supports_cosine_rescoring``: the local cosine rerank, inside the engine.

    ``search_rescored_cosine`` must equal the local ``scoring="cosine"`` rerank.

    The engine may round the query weights v to float16 (Qdrant's Float16 storage); distances are
    checked within ``max|c| * Σ|v - f16(v)| / |q|`` of ``memory://``'s local rerank.
    """

    capability: ClassVar[str | None] = "supports_cosine_rescoring"

    def test_index_cosine_rescore_store_equals_the_local_rerank(
        self, make_store: MakeStore
    ) -> None:
        from .corrections import cosine_indexes

        ids = np.arange(500, dtype=np.int64) * 7 + 2
        flag, mixin = "supports_cosine_rescoring", "CosineRescoringConformance"
        idx, ref, h, x, q = cosine_indexes(self, make_store, "conf_cos_rescore", ids, flag, mixin)
        kw: dict[str, Any] = {"k": 10, "oversample": 50, "scoring": "cosine"}  # every item
        want = ref.search(q, **kw)
        got = idx.search(q, rescore="store", **kw)
        v = h.cosine_query(q).astype(np.float64)
        err = np.abs(v - v.astype(np.float16).astype(np.float64)).sum(1)
        cmax = float(np.abs(h.correction(x)[:, 0]).max()) * 1.01
        tol = cmax * err / np.linalg.norm(q, axis=1) + 1e-4
        for r in range(len(q)):
            np.testing.assert_allclose(got.distances[r], want.distances[r], rtol=0, atol=tol[r])
        assert (got.ids == want.ids).mean() >= 0.8  # the others are near-ties
        assert (got.ids >= 0).all() and (np.diff(got.distances, axis=1) >= 0).all()
        # a filter is applied before the rerank; k beyond the matches pads
        sub = idx.search(
            q[:2],
            k=10,
            oversample=3,
            scoring="cosine",
            rescore="store",
            filter={"nothing": "matches"},
        )
        assert (sub.ids == -1).all() and np.isinf(sub.distances).all()
        idx.close()

    def test_cosine_rescore_refuses_items_without_factors(self, store: Store) -> None:
        self._require(store, "supports_cosine_rescoring", "CosineRescoringConformance")
        ids, codes = self._fill(store, 20)  # written without corrections
        v = np.random.default_rng(3).standard_normal((2, self.n_bits)).astype(np.float32)
        with pytest.raises(ValueError, match="corrections"):
            store.search_rescored_cosine(v, 5, 4)
        for args, msg in (
            ((v, 0, 2), "k"),
            ((v[:, :-8], 5, 2), "shape"),
            ((np.full_like(v, np.inf), 5, 2), "NaN or inf"),
        ):
            with pytest.raises(ValueError, match=msg):
                store.search_rescored_cosine(*args)
        assert store.count() == 20
