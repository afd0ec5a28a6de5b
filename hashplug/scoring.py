"""Query-side scorers of binary codes: asymmetric Hamming, BCE and symmetric BCE.

A query keeps its probabilities ``p`` (n_bits,), a database item its bits ``b``. Three distances
(smaller is closer), all of the form ``c(p) + sum_j b_j w_j(p)``, i.e. affine in the bits:

* ``asymmetric``: ``sum_j |b_j - p_j|``                        -> ``w = 1 - 2p``
* ``bce``: ``-sum_j [b_j log p_j + (1 - b_j) log(1 - p_j)]``    -> ``w = log(1 - p) - log p = -logit(p)``
  (the code's negative log-likelihood under the query's Bernoulli bits; CroVCA's appendix)
* ``sym-bce``: ``(bce + reverse) / 2`` where ``reverse = -sum_j [p_j log b_j + (1 - p_j) log(1 - b_j)]``
  is the cross-entropy of the code, read as probabilities, against the query: it equals
  ``logit(1 - eps) * sum_j |b_j - p_j|`` plus a constant, so ``sym-bce`` mixes the two above.

Probabilities (and, for ``reverse``, the bits) are clipped to ``[eps, 1 - eps]`` (default 1e-6),
so ``p`` of exactly 0 or 1 gives finite distances.

Because every scorer is affine in ``b`` with per-query weights, any kernel that ranks by the
asymmetric distance ranks by the other two when given :func:`ranking_probs` instead of ``p``
(``1 - 2p' = w / max|w|``): the Numba search, the rerank and the stores need no new kernel.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validate import query_matrix

__all__ = [
    "SCORINGS",
    "scoring_weights",
    "score_distances",
    "bce_distances",
    "sym_bce_distances",
    "ranking_probs",
    "cosine_estimates",
]

#: The scorer names accepted by :func:`score_distances` and :func:`ranking_probs`.
SCORINGS = ("asymmetric", "bce", "sym-bce")
_EPS = 1e-6


def _probs(p: ArrayLike) -> NDArray[np.float64]:
    a = query_matrix(p, "query probabilities").astype(np.float64)
    if a.size and (np.isnan(a).any() or a.min() < 0.0 or a.max() > 1.0):
        raise ValueError("query probabilities must lie in [0, 1] (and not be NaN)")
    return a


def _bits(codes: ArrayLike, n_bits: int) -> NDArray[np.float64]:
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] * 8 != n_bits:
        raise ValueError(
            f"codes must be packed uint8 (N, {n_bits // 8}) for {n_bits}-bit queries, "
            f"got {c.dtype} {c.shape}"
        )
    return np.unpackbits(c, axis=1).astype(np.float64)


def scoring_weights(
    p: ArrayLike, scoring: str = "asymmetric", *, eps: float = _EPS
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(c, w)``, float64 (Q,) and (Q, n_bits): the distance of bits ``b`` is ``c + b @ w``."""
    q = _probs(p)
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    if scoring == "asymmetric":
        return q.sum(axis=1), 1.0 - 2.0 * q
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose from {', '.join(SCORINGS)}")
    pc = np.clip(q, eps, 1.0 - eps)
    log_p, log_1p = np.log(pc), np.log1p(-pc)
    c, w = -log_1p.sum(axis=1), log_1p - log_p
    if scoring == "bce":
        return c, w
    hi, lo = -np.log(eps), -np.log1p(-eps)  # -log(eps), -log(1 - eps)
    c_rev = (q * hi + (1.0 - q) * lo).sum(axis=1)  # all bits 0
    w_rev = (1.0 - 2.0 * q) * (hi - lo)
    return 0.5 * (c + c_rev), 0.5 * (w + w_rev)


def score_distances(
    p: ArrayLike, codes: ArrayLike, scoring: str = "asymmetric", *, eps: float = _EPS
) -> NDArray[np.float32]:
    """Distances float32 (Q, N) of packed codes (N, n_bits // 8) from query probabilities."""
    c, w = scoring_weights(p, scoring, eps=eps)
    b = _bits(codes, w.shape[1])
    return (c[:, None] + w @ b.T).astype(np.float32)


def bce_distances(p: ArrayLike, codes: ArrayLike, *, eps: float = _EPS) -> NDArray[np.float32]:
    """BCE distances (Q, N): ``-sum_j [b log p + (1 - b) log(1 - p)]``, ``p`` clipped to ``eps``."""
    return score_distances(p, codes, "bce", eps=eps)


def sym_bce_distances(p: ArrayLike, codes: ArrayLike, *, eps: float = _EPS) -> NDArray[np.float32]:
    """Symmetric BCE distances (Q, N): the mean of BCE(code | p) and BCE(p | clipped code)."""
    return score_distances(p, codes, "sym-bce", eps=eps)


def ranking_probs(
    p: ArrayLike, scoring: str = "asymmetric", *, eps: float = _EPS
) -> NDArray[np.float32]:
    """Probabilities ``p'`` (Q, n_bits) float32 whose asymmetric distance ranks codes as ``scoring``.

    ``1 - 2p' = w / max|w|`` per query, so ``asym(p', b) = const + (b @ w) / max|w|``: a positive
    rescaling of the scorer's distance. ``"asymmetric"`` returns ``p`` unchanged (as float32).
    """
    if scoring == "asymmetric":
        return np.ascontiguousarray(_probs(p), dtype=np.float32)
    _, w = scoring_weights(p, scoring, eps=eps)
    scale = np.abs(w).max(axis=1, keepdims=True)
    out = 0.5 - 0.5 * w / np.where(scale > 0, scale, 1.0)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def cosine_estimates(
    query_logits: ArrayLike, codes: ArrayLike, corrections: ArrayLike
) -> NDArray[np.float64]:
    """Return the reference (numpy) of the nearest-neighbour estimator.

    Float64 (Q, N) scores, larger is closer: ``c_x * <u_q, 2 b_x - 1> + e_x`` with
    ``(c_x, e_x) = corrections[x]`` from
    ``hasher.correction``: an estimate of ``<q, x> - <q, mean_>`` (RaBitQ's unbiased factor on
    the centred, projected vectors). The kernels' distance is its negative.
    """
    u = np.asarray(query_logits, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"query_logits must be 2-D (Q, n_bits), got shape {u.shape}")
    s = 2.0 * _bits(codes, u.shape[1]) - 1.0
    f = np.asarray(corrections, dtype=np.float64)
    if f.shape != (s.shape[0], 2):
        raise ValueError(f"corrections must have shape ({s.shape[0]}, 2), got {f.shape}")
    return f[:, 0][None, :] * (u @ s.T) + f[:, 1][None, :]
