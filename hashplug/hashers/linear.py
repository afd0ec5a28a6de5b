"""Shared machinery of the linear hashers: logits = (x - mean_) @ projection_."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from .base import Hasher
from .pca import CovarianceAccumulator

__all__ = ["LinearHasher"]


class LinearHasher(Hasher):
    """A hasher whose logits are an affine map of the input.

    Fitted attributes: ``mean_`` (d,), ``projection_`` (d, n_bits) and ``offset_`` =
    ``mean_ @ projection_`` (derived, not saved). ``logits`` computes ``x @ projection_ - offset_``:
    one float32 matrix product, the floor of hashing.
    """

    _arrays: ClassVar[tuple[str, ...]] = ("mean_", "projection_")
    mean_: NDArray[np.float32] | None = None
    projection_: NDArray[np.float32] | None = None
    offset_: NDArray[np.float32] | None = None

    def _set_linear(self, mean: NDArray[np.float64], projection: NDArray[np.float64]) -> None:
        self.mean_ = mean.astype(np.float32)
        self.projection_ = np.ascontiguousarray(projection, dtype=np.float32)
        self.dim_ = int(self.projection_.shape[0])
        self._after_fit()

    def _calibrate(self, acc: CovarianceAccumulator) -> None:
        """Per-bit query scale from the training covariance: std_j = sqrt(p_j^T C p_j).

        ``acc`` must hold the covariance when calibration is ``"per-bit"``.
        """
        if self._calibration() != "per-bit":
            self._set_query_scale(None)
            return
        assert self.projection_ is not None
        cov = acc.cov
        p = self.projection_.astype(np.float64)
        var = np.einsum("ij,ij->j", p, cov @ p)
        self._set_query_scale(np.sqrt(np.maximum(var, 0.0)))

    def _calibration(self) -> str:
        """The calibration setting (``"none"`` for subclasses without one)."""
        return str(getattr(self, "calibration", "none"))

    def _after_fit(self) -> None:
        super()._after_fit()
        if self.mean_ is not None and self.projection_ is not None:
            off = self.mean_.astype(np.float64) @ self.projection_.astype(np.float64)
            self.offset_ = off.astype(np.float32)

    def _logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.projection_ is not None and self.offset_ is not None
        u = x @ self.projection_
        u -= self.offset_
        return u

    def _check_dims(self, d: int, n: int | None, *, needs_pca: bool) -> None:
        n_bits = int(self.n_bits)
        if needs_pca and n_bits > d:
            raise ValueError(
                f"n_bits={self.n_bits} is larger than the embedding dimension {d}; "
                "PCA cannot give more components than dimensions"
            )
        if needs_pca and n is not None and n_bits > n:
            raise ValueError(
                f"n_bits={self.n_bits} is larger than the number of training samples {n}"
            )
