"""QdrantBase: what QdrantStore and QdrantEdgeStore share, written once over their primitives.

A backend implements ``_retrieve``, ``_query``, ``_upsert_points``, ``_delete_points`` and
``_scroll`` (plus ``count``, ``read_meta``, ``_create``, ``drop``, ``close``); validation, the ±1
vector encoding, payload conversion and result assembly live here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashplug.stores.base import (
    Filter,
    HitsStore,
    Payload,
    ScoredHits,
    as_ids,
    check_store_corrections,
)

from ._common import (
    check_rescore_args,
    codes_to_vectors,
    corr_from_payload,
    cosine_from_points,
    decode_payload,
    hits_from_points,
    query_rows,
    query_tanh,
    rescored_from_points,
    vectors_to_codes,
)

__all__ = ["QdrantBase"]


class QdrantBase(HitsStore):
    """Base of the Qdrant stores: the public data and search methods over five primitives.

    The ``scoring="cosine"`` factors c, e of an item live in its payload as two numbers
    (:data:`CORR_C_KEY`, :data:`CORR_E_KEY`: float16 values; hidden from ``get_payloads``), where
    a Qdrant formula reads them for the native cosine rescoring.
    """

    supports_corrections: ClassVar[bool] = True
    supports_cosine_rescoring: ClassVar[bool] = True
    #: Two float16 values (Qdrant's payload storage adds its own overhead).
    correction_bytes: ClassVar[int] = 4

    # -- primitives ------------------------------------------------------------------------------
    def _retrieve(
        self, ids: NDArray[np.int64], with_vector: bool, with_payload: bool
    ) -> dict[int, Any]:
        """Return records by id (absent ids missing); each has ``.vector`` and ``.payload``."""
        raise NotImplementedError

    def _query(
        self,
        vectors: NDArray[np.float32],
        limit: int,
        rescore: bool,
        oversampling: float,
        filter: Filter | None,
        with_vector: bool,
        formula_limit: int | None = None,
    ) -> list[list[Any]]:
        """One scored point list per query vector (quantized scores unless ``rescore``).

        ``formula_limit``: those ``limit`` points (a prefetch) are scored again by the formula
        ``c * score + e`` over their payload factors, and the best ``formula_limit`` returned.
        """
        raise NotImplementedError

    def _upsert_points(
        self,
        ids: NDArray[np.int64],
        vectors: NDArray[np.float32],
        payloads: Sequence[Payload | None],
        corr: Sequence[tuple[float, float] | None],
    ) -> None:
        """Write points (non-empty; ids unique, already checked).

        ``corr``: each item's factors (c, e), or None.
        """
        raise NotImplementedError

    def _delete_points(self, ids: NDArray[np.int64]) -> None:
        """Delete points by id (non-empty, unique)."""
        raise NotImplementedError

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        """One page of ids: ``(records, next offset or None)``."""
        raise NotImplementedError

    # -- data ------------------------------------------------------------------------------------
    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        corrections: ArrayLike | None = None,
    ) -> None:
        """Insert or replace points.

        ``corrections`` (n, 2): the items' ``scoring="cosine"`` factors, kept as float16 (a row of
        NaN, or None: none).
        """
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        corr16 = check_store_corrections(corrections, new_ids.size)
        meta = self._require_open()
        if new_ids.size == 0:
            return
        absent = np.isnan(corr16).all(axis=1).tolist()
        values = corr16.astype(np.float64).tolist()
        pairs = [None if a else (v[0], v[1]) for a, v in zip(absent, values, strict=True)]
        vectors = codes_to_vectors(new_codes, meta.n_bits)
        self._upsert_points(new_ids, vectors, new_pl, pairs)

    def lookup_corrections(self, ids: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the factors of ``ids`` (NaN and not found for points written without them)."""
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.full((q.size, 2), np.nan, np.float32)
        valid = q[q >= 0]
        got = (
            self._retrieve(np.unique(valid), with_vector=False, with_payload=True)
            if valid.size
            else {}
        )
        found = np.zeros(q.size, bool)
        for r, i in enumerate(q.tolist()):
            v = corr_from_payload(got[i].payload) if i in got else None
            if v is not None:
                out[r], found[r] = v, True
        return out, found & ~np.isnan(out).any(axis=1)

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Return the codes of ``ids`` in order and a mask of which ids exist."""
        meta = self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((q.size, meta.n_bytes), np.uint8)
        found = np.zeros(q.size, bool)
        valid = q[q >= 0]
        if valid.size == 0:
            return out, found
        got = self._retrieve(np.unique(valid), with_vector=True, with_payload=False)
        rows = [i for i, v in enumerate(q.tolist()) if v in got]
        if rows:
            out[rows] = vectors_to_codes([got[int(q[i])].vector for i in rows], meta.n_bits)
            found[rows] = True
        return out, found

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        """Return the payloads of ``ids`` in order (None where absent)."""
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        valid = q[q >= 0]
        got = (
            self._retrieve(np.unique(valid), with_vector=False, with_payload=True)
            if valid.size
            else {}
        )
        return [decode_payload(got[i].payload) if i in got else None for i in q.tolist()]

    def delete(self, ids: ArrayLike) -> None:
        """Delete items; ids that are not stored are ignored."""
        self._require_open()
        q = np.unique(as_ids(ids))
        if q.size:
            self._delete_points(q)

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Yield every stored id once, in int64 batches of at most ``batch_size``."""
        self._require_open()
        offset = None
        while True:
            recs, offset = self._scroll(offset, max(1, int(batch_size)))
            if recs:
                yield np.array([int(r.id) for r in recs], np.int64)
            if offset is None or not recs:
                return

    # -- search ----------------------------------------------------------------------------------
    def _hits(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None, with_vector: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        q = self._check_query(query_codes, limit)
        meta = self._require_open()
        if q.shape[0] == 0:
            empty = np.zeros((0, limit), np.int64)
            codes = np.zeros((0, limit, meta.n_bytes), np.uint8) if with_vector else None
            return empty, empty.astype(np.int32), codes
        # Quantized scores only (no rescoring, no oversampling): 1-bit BQ Dot = n - 2 * Hamming.
        vectors = codes_to_vectors(q, meta.n_bits)
        res = self._query(vectors, int(limit), False, 1.0, filter, with_vector)
        return hits_from_points(res, meta.n_bits, int(limit), with_vector)

    def search_rescored(
        self,
        query_logits: ArrayLike,
        k: int,
        oversample: int = 10,
        filter: Filter | None = None,
        *,
        exact_ties: bool = True,
    ) -> ScoredHits:
        """Run the native asymmetric search.

        Qdrant picks the Hamming top ``k * oversample`` on the quantized vectors and rescores them
        against the stored ±1 vectors with t = tanh(u / 2).

        ``query_logits``: the hasher's calibrated query logits u (``hasher.query_logits``, whose
        sigmoid is ``hasher.query``), (Q, n_bits) or (n_bits,). Returns ``(ids int64
        (Q, k), asym float32 (Q, k))`` ascending by (distance, id), asym = Σ|b - p| =
        (n_bits - s·t) / 2; padding is id -1 and distance +inf. ``exact_ties=True`` asks Qdrant
        for all ``k * oversample`` rescored candidates (limit k·O, oversampling 1) so that ties at
        the k-th place break by smaller id; ``False`` uses Qdrant's own oversampling (limit k,
        oversampling O), which picks the same candidates but breaks a tie at the cut arbitrarily.
        With ``datatype="float16"`` Qdrant rounds t to float16 before the dot product. In
        qdrant-client's local mode the search is exact (no quantization), so it equals the
        exhaustive asymmetric search.
        """
        k, oversample = check_rescore_args(k, oversample)
        meta = self._require_open()
        t = query_tanh(query_logits, meta.n_bits)
        limit, factor = (k * oversample, 1.0) if exact_ties else (k, float(oversample))
        if t.shape[0] == 0:
            return ScoredHits(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
        res = self._query(t, limit, True, factor, filter, with_vector=False)
        return rescored_from_points(res, meta.n_bits, k)

    def search_rescored_cosine(
        self,
        query_weights: ArrayLike,
        k: int,
        oversample: int = 10,
        filter: Filter | None = None,
    ) -> ScoredHits:
        """Search with ``scoring="cosine"`` inside Qdrant.

        Qdrant takes the Hamming top ``k * oversample`` on the quantized vectors, rescores them to
        ``v·s`` against the stored ±1 vectors, and a formula adds each item's factors from its
        payload: ``c * v·s + e``.

        ``query_weights``: the hasher's ``cosine_query(q)`` (Q, n_bits) or (n_bits,); their signs
        pick the coarse candidates. Returns ``(ids int64 (Q, k), distances float32 (Q, k))``,
        distance = ``-(c * v·s + e)`` as in the local cosine rerank, ascending by (distance, id);
        padding (-1, +inf). Qdrant rounds v to float16 with ``datatype="float16"``. Candidates
        without factors: ValueError naming them (written before the store kept them).
        """
        k, oversample = check_rescore_args(k, oversample)
        meta = self._require_open()
        v = query_rows(query_weights, meta.n_bits, "query weights").astype(np.float32)
        if v.shape[0] == 0:
            return ScoredHits(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
        limit = k * oversample
        res = self._query(v, limit, True, 1.0, filter, False, formula_limit=limit)
        return cosine_from_points(res, k)
