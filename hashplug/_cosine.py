"""Checks and drivers of the nearest-neighbour estimator kernels (``scoring="cosine"``).

:func:`hashplug.rerank.search_codes` and :func:`hashplug.rerank.rerank` call these when given
``scoring="cosine"``: the queries are then logits (not probabilities) and every code comes with its
per-vector factors ``(c, e)`` from ``hasher.correction``; distance = ``-(c * <u, 2b - 1> + e)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels.cosine import _cos_rerank_kernel, _cos_search_kernel
from ._kernels.heap import _empty_topk
from ._validate import float_array, query_matrix


def _words(c: NDArray[np.uint8]) -> NDArray[np.uint64]:
    from .rerank import _words as words  # (rerank imports this module)

    return words(c)


#: The scorings that search_codes / rerank run natively.
KERNEL_SCORINGS = ("asymmetric", "cosine")


def check_scoring(scoring: str) -> str:
    """``scoring`` if it is one of KERNEL_SCORINGS, else a ValueError naming the choices."""
    if scoring not in KERNEL_SCORINGS:
        raise ValueError(
            f"scoring must be 'asymmetric' or 'cosine', got {scoring!r} (for 'bce' / 'sym-bce' "
            "pass hashplug.scoring.ranking_probs(p, scoring) with scoring='asymmetric')"
        )
    return scoring


def check_logits(u: ArrayLike) -> NDArray[np.float32]:
    """Query logits (Q, n_bits) float32, n_bits a positive multiple of 8, finite."""
    hint = " (scoring='cosine' takes hasher.cosine_query(q), not probabilities)"
    a = np.ascontiguousarray(query_matrix(u, "query logits", hint), dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError("query logits contain NaN or inf")
    return a


def check_corrections(
    corr: ArrayLike | None, lead: tuple[int, ...], what: str
) -> NDArray[np.float32]:
    """Per-vector factors of shape lead + (2,), float, finite; float32 contiguous."""
    if corr is None:
        raise ValueError(
            f"scoring='cosine' needs {what}: the per-vector factors from hasher.correction(x), "
            f"shape {lead + (2,)}"
        )
    a = float_array(corr, what)
    if a.shape != lead + (2,):
        raise ValueError(
            f"{what} must have shape {lead + (2,)} (one (c, e) per code), got {a.shape}"
        )
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN or inf")
    return a


def cosine_search(
    u: NDArray[np.float32],
    codes: NDArray[np.uint8],
    corr: NDArray[np.float32],
    ids: NDArray[np.int64],
    k: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exhaustive estimator top-min(k, N): (distances, ids), checked inputs."""
    kk = min(k, codes.shape[0])
    d, i = _empty_topk(u.shape[0], kk)
    _cos_search_kernel(u, _words(codes), codes.shape[1], corr, ids, kk, d, i)
    return d, i


def cosine_rerank(
    u: NDArray[np.float32],
    cand_ids: NDArray[np.int64],
    cand_codes: NDArray[np.uint8],
    cand_corr: NDArray[np.float32],
    k: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Estimator top-min(k, C) of each query's candidates: (distances, ids), checked inputs."""
    kk = min(k, cand_ids.shape[1])
    d, i = _empty_topk(u.shape[0], kk)
    nq, nc, nbytes = cand_codes.shape
    ccw = _words(np.ascontiguousarray(cand_codes).reshape(nq * nc, nbytes))
    _cos_rerank_kernel(u, cand_ids, ccw, nbytes, cand_corr, kk, d, i)
    return d, i
