"""Random-hyperplane LSH (SimHash): the data-independent baseline."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .linear import LinearHasher
from .pca import streamed_moments

__all__ = ["LSH"]


class LSH(LinearHasher):
    """Random-hyperplane codes: bit j = [(x - mean) . r_j > 0] with r_j ~ N(0, I), seeded.

    The hyperplanes ignore the data; ``fit`` only learns the input dimension and, with
    ``center=True`` (default), the training mean, without which uncentred embeddings (all
    positive, as after a ReLU) would give nearly constant codes. ``center=False`` is pure SimHash.
    """

    _params: ClassVar[tuple[str, ...]] = ("n_bits", "seed", "center")

    def __init__(self, n_bits: int, *, seed: int = 0, center: bool = True):
        super().__init__(n_bits)
        self.seed = int(seed)
        self.center = bool(center)

    def fit(self, x: Any) -> LSH:
        acc = streamed_moments(x, with_cov=False)
        d = int(acc.dim or 0)
        rng = np.random.default_rng(self.seed)
        proj = rng.standard_normal((d, self.n_bits))
        mean = acc.mean if self.center else np.zeros(d)
        self._set_linear(mean, proj)
        return self
