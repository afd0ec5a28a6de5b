"""Random-hyperplane LSH (SimHash): the data-independent baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DEFAULT_CALIBRATION, check_bool, check_nonneg_int
from .linear import LinearHasher
from .pca import streamed_moments

__all__ = ["LSH"]


class LSH(LinearHasher):
    """Random-hyperplane codes: bit j = [(x - mean) . r_j > 0] with r_j ~ N(0, I), seeded.

    The hyperplanes ignore the data; ``fit`` only learns the input dimension and, with
    ``center=True`` (default), the training mean, without which uncentred embeddings (all
    positive, as after a ReLU) would give nearly constant codes. ``center=False`` is pure SimHash.
    ``calibration="per-bit"`` (see :class:`~hashplug.hashers.Hasher`) also needs the training
    covariance, an O(n d^2) pass; it divides each query logit by its training spread, which also
    undoes the length (about sqrt(d)) of the Gaussian hyperplanes.
    """

    def __init__(
        self,
        n_bits: int,
        *,
        seed: int = 0,
        center: bool = True,
        calibration: str = DEFAULT_CALIBRATION,
    ):
        self.n_bits = n_bits
        self.seed = seed
        self.center = center
        self.calibration = calibration

    def _check_params(self) -> dict[str, Any]:
        return {
            **super()._check_params(),
            "seed": check_nonneg_int(self.seed, "seed"),
            "center": check_bool(self.center, "center"),
        }

    def fit(self, x: Any) -> LSH:
        """Learn the input dimension (and the mean, with ``center``) from ``x``; returns self."""
        prm = self._check_params()
        acc = streamed_moments(x, with_cov=prm["calibration"] == "per-bit")
        d = int(acc.dim or 0)
        rng = np.random.default_rng(prm["seed"])
        proj = rng.standard_normal((d, prm["n_bits"]))
        mean = acc.mean if prm["center"] else np.zeros(d)
        self._set_linear(mean, proj)
        self._calibrate(acc)
        return self
