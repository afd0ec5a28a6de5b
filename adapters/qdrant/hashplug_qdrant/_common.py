"""What both Qdrant stores share: the ±1 vector encoding, score conversions, payloads, URIs.

Why ±1 vectors: Qdrant has no bit-packed vector type. A code b in {0,1}^n is stored as s = 2b - 1
(Float16 by default: ±1 is exact and it is the smallest Qdrant datatype that holds -1), with Dot
distance and binary quantization (1 bit per dimension, XOR + popcount, kept in RAM).

* Coarse search: the query is the ±1 vector of the query code, scored on the quantized vectors
  without rescoring. For ±1 vectors ``s·q = n - 2 H`` (H = Hamming distance), and Qdrant's 1-bit
  binary-quantized Dot score is exactly that integer, so ``H = (n - score) / 2``.
* Native asymmetric rescoring: the query is ``t = tanh(u / 2) = 2p - 1`` and Qdrant rescores the
  quantized candidates against the original ±1 vectors. With s = 2b - 1,
  ``s·t = Σ (2b - 1)(2p - 1)`` and ``Σ |b - p| = Σ (1 - (2b - 1)(2p - 1)) / 2``, so the asymmetric
  distance is exactly ``asym = (n - s·t) / 2``.
* Native cosine rescoring (``scoring="cosine"``): the query is the hasher's per-bit weights v
  (``cosine_query``), Qdrant rescores the quantized candidates to ``v·s`` and a formula over them
  adds the item's factors from its payload: ``c * v·s + e``, the estimator of the local rerank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hashplug.stores.base import (
    HAMMING_PAD,
    Payload,
    ScoredHits,
    StoreError,
    check_positive_int,
    unpack_corrections,
)

__all__ = [
    "META_KEY",
    "META_FILE",
    "EMPTY_PAYLOAD_KEY",
    "DATATYPES",
    "codes_to_vectors",
    "vectors_to_codes",
    "hamming_from_scores",
    "asym_from_scores",
    "query_tanh",
    "query_rows",
    "encode_payload",
    "BOOL_SHADOW_KEY",
    "CORR_KEY",
    "CORR_C_KEY",
    "CORR_E_KEY",
    "MISSING_E",
    "corr_from_payload",
    "cosine_from_points",
    "decode_payload",
    "order_rows",
    "hits_from_points",
    "rescored_from_points",
    "check_rescore_args",
]

#: Collection-metadata key (qdrant-client) that holds ``CollectionMeta.to_json()``.
META_KEY = "hashplug"
#: File inside a Qdrant Edge shard directory that holds ``CollectionMeta.to_json()``.
META_FILE = "hashplug_meta.json"
#: Qdrant reads an absent payload back as ``{}``; a caller's explicit ``{}`` is stored as
#: ``{EMPTY_PAYLOAD_KEY: True}`` so that ``None`` and ``{}`` both round-trip exactly.
EMPTY_PAYLOAD_KEY = "__hashplug_empty__"
#: Storage datatypes of the original ±1 vectors. float16 halves the disk of float32; Qdrant then
#: also rounds the rescoring query to float16 (see ``search_rescored``).
DATATYPES = ("float16", "float32")


def codes_to_vectors(codes: NDArray[np.uint8], n_bits: int) -> NDArray[np.float32]:
    """Packed codes (n, n_bits/8) -> ±1 float32 vectors (n, n_bits) (= ``unpack_signs``)."""
    bits = np.unpackbits(codes, axis=1, count=n_bits).astype(np.float32)
    return bits * 2.0 - 1.0


def vectors_to_codes(vectors: Sequence[Sequence[float]], n_bits: int) -> NDArray[np.uint8]:
    """Convert stored vectors (lists of ±1 floats, as Qdrant returns them) to packed codes.

    A bit is set where the sign is > 0.
    """
    n = len(vectors)
    try:
        flat = np.fromiter(chain.from_iterable(vectors), dtype=np.float32, count=n * n_bits)
    except (TypeError, ValueError) as e:
        shapes = {len(v) if hasattr(v, "__len__") else None for v in vectors}
        raise StoreError(
            f"Qdrant returned vectors of lengths {sorted(map(str, shapes))}, expected {n_bits}; "
            "is this collection a hashplug collection?"
        ) from e
    if any(len(v) != n_bits for v in vectors[:1]):
        raise StoreError(f"Qdrant returned vectors of length {len(vectors[0])}, expected {n_bits}")
    return np.packbits(flat.reshape(n, n_bits) > 0, axis=1)


def hamming_from_scores(scores: NDArray[np.float64], n_bits: int) -> NDArray[np.int32]:
    """Qdrant Dot scores of ±1 vectors (``n - 2H``) -> Hamming distances H.

    Raises StoreError when a score is not of that form (a collection holding other vectors).
    """
    h = (n_bits - np.asarray(scores, dtype=np.float64)) * 0.5
    r = np.rint(h)
    if h.size and not (np.abs(h - r).max() <= 1e-3 and 0 <= r.min() and r.max() <= n_bits):
        raise StoreError(
            "Qdrant returned Dot scores that are not n_bits - 2*Hamming for ±1 vectors "
            f"(e.g. {float(np.asarray(scores).reshape(-1)[0])}); the collection does not hold "
            "hashplug ±1 codes"
        )
    return r.astype(np.int32)


def asym_from_scores(scores: NDArray[np.float64], n_bits: int) -> NDArray[np.float32]:
    """Rescored Dot scores ``s·tanh(u/2)`` -> asymmetric distances ``Σ|b - p| = (n - s·t) / 2``."""
    return ((n_bits - np.asarray(scores, dtype=np.float64)) / 2.0).astype(np.float32)


def query_rows(x: ArrayLike, n_bits: int, what: str = "query logits") -> NDArray[np.float64]:
    """Validate per-bit query values (Q, n_bits) or (n_bits,) -> float64 (Q, n_bits)."""
    u = np.asarray(x)
    if u.ndim == 1:
        u = u[None, :]
    if u.ndim != 2 or u.shape[1] != n_bits:
        raise ValueError(f"{what} must have shape (Q, {n_bits}), got {np.shape(x)}")
    if u.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {u.dtype}")
    u = u.astype(np.float64)
    if not np.isfinite(u).all():
        raise ValueError(f"{what} contain NaN or inf")
    return u


def query_tanh(query_logits: ArrayLike, n_bits: int) -> NDArray[np.float32]:
    """Validate query logits u (Q, n_bits) or (n_bits,) and return t = tanh(u / 2) = 2p - 1."""
    u = query_rows(query_logits, n_bits)
    return np.tanh(u / 2.0).astype(np.float32)


def check_rescore_args(k: Any, oversample: Any) -> tuple[int, int]:
    return check_positive_int(k, "k"), check_positive_int(oversample, "oversample")


#: Qdrant Edge only: top-level boolean payload values are also stored as "true"/"false" strings
#: under this object, because qdrant-edge-py 0.9's MatchValue turns True into 1 (which never
#: matches a boolean). The dict filter matches booleans there; ``get_payloads`` hides it.
BOOL_SHADOW_KEY = "__hashplug_bools__"


#: Payload keys of the ``scoring="cosine"`` factors c and e (float16 values, stored as numbers so
#: that a Qdrant formula can read them: native cosine rescoring); absent where an item has none.
#: A payload key needs no schema, so collections of older versions take them as they are.
CORR_C_KEY = "__hashplug_c__"
CORR_E_KEY = "__hashplug_e__"
#: Where hashplug 0.1 kept both factors, as float16 halves in one int32
#: (``hashplug.stores.base.pack_corrections``): still read.
CORR_KEY = "__hashplug_corr__"
#: The formula's value of e for an item without factors: its score becomes about -1e30, which
#: ``cosine_from_points`` reports (Qdrant would otherwise fail the whole query, untyped).
MISSING_E = -1e30


def corr_from_payload(p: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """Return the stored factors (c, e) of a payload, or None when it has none."""
    if not p:
        return None
    c, e = p.get(CORR_C_KEY), p.get(CORR_E_KEY)
    if isinstance(c, int | float) and isinstance(e, int | float):
        return float(c), float(e)
    old = p.get(CORR_KEY)
    if isinstance(old, int) and not isinstance(old, bool):
        c16, e16 = unpack_corrections(np.array([old]))[0]
        return float(c16), float(e16)
    return None


def encode_payload(
    p: Payload | None, bool_shadow: bool = False, corr: tuple[float, float] | None = None
) -> dict[str, Any] | None:
    """Return the stored payload of ``p`` (plus the factors ``corr`` = (c, e) when given)."""
    extra = {} if corr is None else {CORR_C_KEY: corr[0], CORR_E_KEY: corr[1]}
    if p is None:
        return extra or None
    if len(p) == 0:
        return {EMPTY_PAYLOAD_KEY: True, **extra}
    out = dict(p)
    if bool_shadow:
        bools = {k: "true" if v else "false" for k, v in p.items() if isinstance(v, bool)}
        if bools:
            out[BOOL_SHADOW_KEY] = bools
    out.update(extra)
    return out


def decode_payload(p: Mapping[str, Any] | None) -> Payload | None:
    """Return the caller's payload from a stored one (hashplug's own keys removed)."""
    if not p:
        return None
    out = dict(p)
    for key in (CORR_KEY, CORR_C_KEY, CORR_E_KEY):
        out.pop(key, None)
    if not out:
        return None
    if len(out) == 1 and out.get(EMPTY_PAYLOAD_KEY) is True:
        return {}
    out.pop(BOOL_SHADOW_KEY, None)
    return out


def order_rows(
    rows: Sequence[tuple[NDArray[np.int64], NDArray[Any], NDArray[np.uint8] | None]],
    limit: int,
    pad: float | int,
    dtype: Any,
    n_bytes: int | None = None,
) -> tuple[NDArray[np.int64], NDArray[Any], NDArray[np.uint8] | None]:
    """Order each row's hits by (distance, id) — ties by smaller id — and pad to ``limit``.

    The same order as ``hashplug.stores.base.sort_hits`` (Qdrant never returns an id twice per
    query), for float distances too, and carrying each hit's code along.
    """
    q = len(rows)
    out_i = np.full((q, limit), -1, dtype=np.int64)
    out_d = np.full((q, limit), pad, dtype=dtype)
    out_c = np.zeros((q, limit, n_bytes), np.uint8) if n_bytes is not None else None
    for r, (ids, dist, codes) in enumerate(rows):
        if ids.size == 0:
            continue
        order = np.lexsort((ids, dist))[:limit]
        m = order.size
        out_i[r, :m] = ids[order]
        out_d[r, :m] = dist[order]
        if out_c is not None and codes is not None:
            out_c[r, :m] = codes[order]
    return out_i, out_d, out_c


def hits_from_points(
    res: list[list[Any]], n_bits: int, limit: int, with_vector: bool
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
    """Coarse hits (Qdrant scored points, one list per query) -> the Store.search arrays.

    Ordered exactly as ``sort_hits`` orders them (Qdrant returns each id at most once per query).
    """
    rows = []
    for hits in res:
        ids = np.fromiter((p.id for p in hits), dtype=np.int64, count=len(hits))
        ham = hamming_from_scores(
            np.fromiter((p.score for p in hits), dtype=np.float64, count=len(hits)), n_bits
        )
        codes = vectors_to_codes([p.vector for p in hits], n_bits) if with_vector and hits else None
        rows.append((ids, ham, codes))
    return order_rows(rows, limit, HAMMING_PAD, np.int32, n_bits // 8 if with_vector else None)


def rescored_from_points(res: list[list[Any]], n_bits: int, k: int) -> ScoredHits:
    """Rescored hits -> (ids (Q, k), asym (Q, k)), ties by smaller id, padding (-1, +inf)."""
    rows = []
    for hits in res:
        ids = np.fromiter((p.id for p in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((p.score for p in hits), dtype=np.float64, count=len(hits))
        rows.append((ids, asym_from_scores(scores, n_bits), None))
    ids_o, dist_o, _ = order_rows(rows, k, np.inf, np.float32)
    return ScoredHits(ids_o, dist_o)


def cosine_from_points(res: list[list[Any]], k: int) -> ScoredHits:
    """Convert formula-scored hits (``c * v·s + e``) to ``ScoredHits``.

    Ids (Q, k) and distances -(c * v·s + e) (Q, k), ascending, ties by smaller id, padding
    (-1, +inf): the local cosine rerank's convention.
    """
    rows = []
    for hits in res:
        ids = np.fromiter((p.id for p in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((p.score for p in hits), dtype=np.float64, count=len(hits))
        missing = ids[scores < MISSING_E / 2]
        if missing.size:
            raise ValueError(
                f"{missing.size} candidates (ids {missing[:5].tolist()}) have no stored "
                "corrections for scoring='cosine': they were written without them (before this "
                "store kept them, or not through HashIndex.add); add them again"
            )
        rows.append((ids, -scores, None))
    ids_o, dist_o, _ = order_rows(rows, k, np.inf, np.float32)
    return ScoredHits(ids_o, dist_o)
