"""Iterative quantization (Gong & Lazebnik, CVPR 2011): PCA, then a learned rotation."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._validate import as_matrix, check_finite, iter_batches
from .base import DEFAULT_CALIBRATION, check_nonneg_int
from .linear import LinearHasher
from .pca import CovarianceAccumulator, random_orthogonal, top_components

__all__ = ["ITQ", "itq_rotation"]


def itq_rotation(
    v: NDArray[np.float64], r: NDArray[np.float64], n_iter: int
) -> tuple[NDArray[np.float64], list[float]]:
    """Learn the rotation R minimising ||sign(V R) - V R||_F from ``r``, ``n_iter`` times.

    Alternates ``B = sign(V R)`` and the orthogonal Procrustes update ``R = U W^T`` where
    ``V^T B = U S W^T``. Returns R and the quantisation loss per iteration (per row).
    """
    losses = []
    # Iterations work on (n, width) projections: seconds even for 1M rows, so no progress bar.
    for _ in range(n_iter):
        z = v @ r
        b = np.where(z >= 0, 1.0, -1.0)
        losses.append(float(((b - z) ** 2).sum() / v.shape[0]))
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return r, losses


class ITQ(LinearHasher):
    """PCA to ``n_bits`` dimensions, then the orthogonal rotation R minimising ||B - V R||_F.

    Alternates ``B = sign(V R)`` and the orthogonal Procrustes update ``R = U W^T`` where
    ``V^T B = U S W^T``, ``n_iter`` times from a seeded random rotation. ``fit`` keeps the training
    data in memory (an iterable of batches is concatenated). Fitted attributes: ``mean_``,
    ``components_``, ``rotation_``, ``projection_``, ``quantization_loss_`` (per iteration), and
    ``query_scale_`` with ``calibration="per-bit"``. ``n_bits`` may exceed the dimension d: the
    d components are padded with zeros to ``n_bits`` before the rotation is learned.
    """

    _arrays: ClassVar[tuple[str, ...]] = ("mean_", "projection_", "components_", "rotation_")
    components_: NDArray[np.float32] | None = None
    rotation_: NDArray[np.float32] | None = None
    quantization_loss_: list[float]

    def __init__(
        self,
        n_bits: int,
        *,
        n_iter: int = 50,
        seed: int = 0,
        calibration: str = DEFAULT_CALIBRATION,
    ):
        self.n_bits = n_bits
        self.n_iter = n_iter
        self.seed = seed
        self.calibration = calibration

    def _check_params(self) -> dict[str, Any]:
        return {
            **super()._check_params(),
            "n_iter": check_nonneg_int(self.n_iter, "n_iter"),
            "seed": check_nonneg_int(self.seed, "seed"),
        }

    def fit(self, x: Any) -> ITQ:
        """PCA of ``x``, then ``n_iter`` ITQ rotation updates; returns self."""
        prm = self._check_params()
        n_bits = prm["n_bits"]
        batches = [as_matrix(b, what="training batch") for b in iter_batches(x)]
        acc = CovarianceAccumulator()
        for b in batches:
            acc.update(b)
        if acc.n == 0:
            raise ValueError("no training data: fit needs at least one non-empty batch")
        d = int(acc.dim or 0)
        k = self._pca_width(d, acc.n)
        comps, _ = top_components(acc.cov, k)
        mean = acc.mean
        v = np.zeros((acc.n, n_bits))  # n_bits > d: the k components padded with zeros
        row = 0
        for b in batches:
            v[row : row + b.shape[0], :k] = (b.astype(np.float64) - mean) @ comps.T
            row += b.shape[0]
        check_finite(v, "projected training embeddings")
        r = random_orthogonal(n_bits, seed=prm["seed"])
        r, self.quantization_loss_ = itq_rotation(v, r, prm["n_iter"])
        self.components_ = comps.astype(np.float32)
        self.rotation_ = r.astype(np.float32)
        self._set_linear(mean, comps.T @ r[:k])
        self._calibrate(acc)
        return self
