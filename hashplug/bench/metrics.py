"""Retrieval metrics, exactly as the seed paper's protocol (DESIGN.md)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["relevance", "average_precision", "map_at_k", "precision_at_k", "recall_at_k"]


def relevance(retrieved: ArrayLike, db_labels: ArrayLike, q_labels: ArrayLike) -> NDArray[np.bool_]:
    """(Q, k) bool: same label (1-D labels) or at least one shared label (2-D 0/1 labels).

    Entries of ``retrieved`` equal to -1 (padding) are never relevant.
    """
    r = np.asarray(retrieved, dtype=np.int64)
    dbl, ql = np.asarray(db_labels), np.asarray(q_labels)
    if r.ndim != 2 or r.shape[0] != ql.shape[0]:
        raise ValueError(f"retrieved must be (Q, k) with Q = {ql.shape[0]}, got {r.shape}")
    if dbl.ndim != ql.ndim:
        raise ValueError("database and query labels must both be 1-D or both 2-D")
    pad = r < 0
    got = dbl[np.where(pad, 0, r)]
    if ql.ndim == 1:
        rel = got == ql[:, None]
    else:
        rel = (got.astype(bool) & ql.astype(bool)[:, None, :]).any(axis=2)
    return rel & ~pad


def average_precision(rel: ArrayLike) -> NDArray[np.float64]:
    """AP of each row of a (Q, k) relevance matrix; 0 where nothing is relevant."""
    r = np.asarray(rel, dtype=np.float64)
    hits = np.cumsum(r, axis=1)
    prec = hits / np.arange(1, r.shape[1] + 1)
    n_rel = r.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (prec * r).sum(axis=1) / n_rel
    return np.where(n_rel > 0, ap, 0.0)


def map_at_k(
    retrieved: ArrayLike, db_labels: ArrayLike, q_labels: ArrayLike, k: int | None = None
) -> float:
    """mAP@k x 100 over queries; ``retrieved`` (Q, >=k) holds database row indices, best first."""
    r = np.asarray(retrieved)
    if k is not None:
        if r.shape[1] < k:
            raise ValueError(f"need at least k={k} results per query, got {r.shape[1]}")
        r = r[:, :k]
    return float(100.0 * average_precision(relevance(r, db_labels, q_labels)).mean())


def precision_at_k(
    retrieved: ArrayLike, db_labels: ArrayLike, q_labels: ArrayLike, k: int
) -> float:
    """Mean fraction of relevant items among the first k, x 100."""
    r = np.asarray(retrieved)[:, :k]
    return float(100.0 * relevance(r, db_labels, q_labels).mean())


def recall_at_k(result: ArrayLike, truth: ArrayLike, k: int | None = None) -> float:
    """Mean |result_k ∩ truth_k| / k: recall of a result against an exact (e.g. float) top-k."""
    a, b = np.asarray(result), np.asarray(truth)
    k = k or b.shape[1]
    a, b = a[:, :k], b[:, :k]
    hits = [np.intersect1d(x[x >= 0], y[y >= 0]).size for x, y in zip(a, b, strict=True)]
    return float(np.mean(hits) / k)
