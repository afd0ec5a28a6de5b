"""Streamed mean/covariance (float64) and PCA for the PCA-based hashers."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from .._validate import as_matrix, check_finite, iter_batches

__all__ = ["CovarianceAccumulator", "streamed_moments", "top_components", "random_orthogonal"]


class CovarianceAccumulator:
    """Accumulates mean and covariance over batches in float64.

    Sums are taken around a fixed shift (the first row seen), which keeps float64 accurate for
    uncentred data and makes the result independent of how the rows are split into batches.
    """

    def __init__(self, with_cov: bool = True) -> None:
        self.with_cov = with_cov
        self.n = 0
        self.dim: int | None = None
        self._shift: NDArray[np.float64] | None = None
        self._sum: NDArray[np.float64] | None = None
        self._sq: NDArray[np.float64] | None = None

    def update(self, batch: Any) -> None:
        """Add one batch of training embeddings to the running sums."""
        x = as_matrix(batch, dim=self.dim, what="training batch")
        check_finite(x, "training embeddings")
        if self._shift is None:
            self.dim = x.shape[1]
            self._shift = x[0].astype(np.float64)
            self._sum = np.zeros(self.dim)
            self._sq = np.zeros((self.dim, self.dim)) if self.with_cov else None
        z = x.astype(np.float64) - self._shift
        assert self._sum is not None
        self._sum += z.sum(axis=0)
        if self._sq is not None:
            self._sq += z.T @ z
        self.n += x.shape[0]

    @property
    def mean(self) -> NDArray[np.float64]:
        """The mean of the rows seen; ValueError before any."""
        if self._shift is None or self._sum is None:
            raise ValueError("no training data: fit needs at least one non-empty batch")
        return self._shift + self._sum / self.n

    @property
    def cov(self) -> NDArray[np.float64]:
        """The covariance of the rows seen; ValueError before any."""
        if self._sq is None or self._sum is None:
            raise ValueError("no training data: fit needs at least one non-empty batch")
        if self.n < 2:
            raise ValueError(f"need at least 2 training samples for a covariance, got {self.n}")
        m = self._sum / self.n
        return (self._sq - self.n * np.outer(m, m)) / (self.n - 1)


def streamed_moments(x: Any, with_cov: bool = True) -> CovarianceAccumulator:
    """Run one pass over ``x`` (an array or an iterable of (n_i, d) batches)."""
    acc = CovarianceAccumulator(with_cov=with_cov)
    batches = iter_batches(x)
    if not isinstance(x, np.ndarray):
        batches = tqdm(batches, desc="fit: covariance", unit="batch", leave=False)
    for b in batches:
        acc.update(b)
    if acc.n == 0:
        raise ValueError("no training data: fit needs at least one non-empty batch")
    return acc


def top_components(
    cov: NDArray[np.float64], k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Top-``k`` eigenvectors (k, d) and eigenvalues (k,) of a covariance, largest first.

    Signs are fixed (largest-magnitude entry positive) so results are reproducible.
    """
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:k]
    comps = vecs[:, order].T.copy()
    idx = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(k), idx])
    signs[signs == 0] = 1.0
    return comps * signs[:, None], vals[order]


def random_orthogonal(n: int, m: int | None = None, *, seed: int = 0) -> NDArray[np.float64]:
    """Draw a Haar-random (n, m) matrix with orthonormal columns.

    QR of a seeded Gaussian, sign-fixed.
    """
    m = n if m is None else m
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, m)))
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    return q * d[None, :]
