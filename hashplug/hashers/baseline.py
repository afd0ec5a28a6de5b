"""Hashing-Baseline (arXiv 2509.14427): PCA, a random orthogonal rotation, a threshold at 0."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .linear import LinearHasher
from .pca import random_orthogonal, streamed_moments, top_components

__all__ = ["HashingBaseline"]


class HashingBaseline(LinearHasher):
    """The training-free Hashing-Baseline.

    ``fit`` centres with the training mean, keeps the top ``n_bits`` principal directions (no
    whitening) from a streamed float64 covariance, and multiplies by a random orthogonal matrix
    (QR of a Gaussian seeded by ``seed``). Database codes are ``logits > 0``; queries are
    ``sigmoid(logits)`` scored by the asymmetric distance.

    Ablations of the paper: ``rotate=False`` keeps the PCA projection; ``pca=False`` rotates the
    centred raw embedding with a random orthogonal (d, d) matrix and keeps its first ``n_bits``
    coordinates (equivalently, a random (d, n_bits) matrix with orthonormal columns).

    ``fit`` accepts one array or an iterable of (n_i, d) batches (larger than memory).
    Fitted attributes: ``mean_``, ``components_`` (n_bits, d), ``explained_variance_``,
    ``rotation_`` (n_bits, n_bits), ``projection_`` (d, n_bits), ``n_samples_``, ``dim_``.
    """

    _params: ClassVar[tuple[str, ...]] = ("n_bits", "seed", "pca", "rotate")
    _arrays: ClassVar[tuple[str, ...]] = (
        "mean_",
        "projection_",
        "components_",
        "explained_variance_",
        "rotation_",
    )

    def __init__(self, n_bits: int, *, seed: int = 0, pca: bool = True, rotate: bool = True):
        super().__init__(n_bits)
        self.seed = int(seed)
        self.pca = bool(pca)
        self.rotate = bool(rotate)
        self.components_: NDArray[np.float32] | None = None
        self.explained_variance_: NDArray[np.float32] | None = None
        self.rotation_: NDArray[np.float32] | None = None
        self.n_samples_: int | None = None

    def fit(self, x: Any) -> HashingBaseline:
        acc = streamed_moments(x, with_cov=self.pca)
        d = int(acc.dim or 0)
        self._check_dims(d, acc.n, needs_pca=True)
        if self.pca:
            comps, var = top_components(acc.cov, self.n_bits)
            self.components_ = comps.astype(np.float32)
            self.explained_variance_ = var.astype(np.float32)
            proj = comps.T
        else:
            self.components_ = None
            self.explained_variance_ = None
            proj = random_orthogonal(d, self.n_bits, seed=self.seed)
        if self.rotate and self.pca:
            rot = random_orthogonal(self.n_bits, seed=self.seed)
            self.rotation_ = rot.astype(np.float32)
            proj = proj @ rot
        else:
            self.rotation_ = None
        self.n_samples_ = acc.n
        self._set_linear(acc.mean, proj)
        return self

    def _extra_meta(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples_}

    def _restore(self, arrays: dict[str, NDArray[Any]], dim: int, extra: dict[str, Any]) -> None:
        super()._restore(arrays, dim, extra)
        self.n_samples_ = extra.get("n_samples")
