"""Hashing-Baseline (arXiv 2509.14427): PCA, a random orthogonal rotation, a threshold at 0."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .base import DEFAULT_CALIBRATION, check_bool, check_nonneg_int
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

    ``n_bits`` may exceed the dimension d: the d components are padded with zeros to ``n_bits``
    before the (n_bits, n_bits) rotation (a random orthogonal expansion; not with
    ``rotate=False``, where each bit is one PCA direction).

    ``fit`` accepts one array or an iterable of (n_i, d) batches (larger than memory).
    Fitted attributes: ``mean_``, ``components_`` (min(n_bits, d), d), ``explained_variance_``,
    ``rotation_`` (n_bits, n_bits), ``projection_`` (d, n_bits), ``n_samples_``, ``dim_``, and
    with ``calibration="per-bit"`` (the default; ``"none"`` is the paper's) ``query_scale_``.
    """

    _arrays: ClassVar[tuple[str, ...]] = (
        "mean_",
        "projection_",
        "components_",
        "explained_variance_",
        "rotation_",
    )

    components_: NDArray[np.float32] | None = None
    explained_variance_: NDArray[np.float32] | None = None
    rotation_: NDArray[np.float32] | None = None
    n_samples_: int | None = None

    def __init__(
        self,
        n_bits: int,
        *,
        seed: int = 0,
        pca: bool = True,
        rotate: bool = True,
        calibration: str = DEFAULT_CALIBRATION,
    ):
        self.n_bits = n_bits
        self.seed = seed
        self.pca = pca
        self.rotate = rotate
        self.calibration = calibration

    def _check_params(self) -> dict[str, Any]:
        return {
            **super()._check_params(),
            "seed": check_nonneg_int(self.seed, "seed"),
            "pca": check_bool(self.pca, "pca"),
            "rotate": check_bool(self.rotate, "rotate"),
        }

    def fit(self, x: Any) -> HashingBaseline:
        """Streamed mean and covariance of ``x``, PCA, random rotation; returns self."""
        prm = self._check_params()
        n_bits, seed = prm["n_bits"], prm["seed"]
        acc = streamed_moments(x, with_cov=prm["pca"] or prm["calibration"] == "per-bit")
        d = int(acc.dim or 0)
        k = self._pca_width(d, acc.n)
        if k < n_bits and not prm["rotate"] and prm["pca"]:
            raise ValueError(
                f"n_bits={n_bits} is larger than the embedding dimension {d}: rotate=False keeps "
                "one PCA direction per bit; use rotate=True (zero-padded rotation)"
            )
        rot = random_orthogonal(n_bits, seed=seed) if prm["rotate"] or not prm["pca"] else None
        if prm["pca"]:
            comps, var = top_components(acc.cov, k)
            self.components_ = comps.astype(np.float32)
            self.explained_variance_ = var.astype(np.float32)
            proj = comps.T
        else:
            self.components_ = None
            self.explained_variance_ = None
            # n_bits <= d: a random (d, n_bits) matrix with orthonormal columns; else the
            # zero-padded embedding rotated by rot.
            proj = random_orthogonal(d, n_bits, seed=seed) if k == n_bits else rot[:d]  # type: ignore[index]
        if prm["rotate"] and prm["pca"]:
            assert rot is not None
            self.rotation_ = rot.astype(np.float32)
            proj = proj @ rot[:k]  # the first k rows: the components padded to n_bits, rotated
        else:
            self.rotation_ = None
        self.n_samples_ = acc.n
        self._set_linear(acc.mean, proj)
        self._calibrate(acc)
        return self

    def _extra_meta(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples_}

    def _restore(self, arrays: dict[str, NDArray[Any]], dim: int, extra: dict[str, Any]) -> None:
        super()._restore(arrays, dim, extra)
        self.n_samples_ = extra.get("n_samples")
