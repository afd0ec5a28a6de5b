"""Shared machinery of the linear hashers: logits = (x - mean_) @ projection_."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._validate import as_matrix
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
        """Return the calibration setting (``"none"`` for subclasses without one)."""
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

    def cosine_query(self, x: Any) -> NDArray[np.float32]:
        """Query side of ``scoring="cosine"``: per-bit weights v (n, n_bits), float32.

        The estimator scores a code as ``c * <v, 2b - 1> + e``; for one bit per dimension v is
        the logits.
        """
        return self.logits(x)

    def correction(self, x: Any) -> NDArray[np.float32]:
        """Per-vector factors of the nearest-neighbour (``scoring="cosine"``) estimator: (n, 2) float32.

        Column 0 is ``c = |z|^2 / <z, xhat>`` (RaBitQ's unbiased scale: z the projection, xhat its
        quantised value, the ±1 code for one bit per dimension), column 1 is
        ``e = <mean_, x - mean_>``. The estimate of ``<q, x>`` is ``c * <v_q, 2b - 1> + e +
        <q, mean_>`` (v_q = :meth:`cosine_query`; the last term is the same for every item of a
        query). Store them with the codes (float16: 4 bytes per vector).
        """
        dim = self._check_fitted()
        a = as_matrix(x, dim=dim)
        z, xhat = self._cosine_parts(a)
        assert self.mean_ is not None
        mu = self.mean_.astype(np.float64)
        den = (z * xhat).sum(axis=1)
        c = np.divide((z * z).sum(axis=1), den, out=np.zeros_like(den), where=den > 0)
        e = a.astype(np.float64) @ mu - mu @ mu
        return np.stack([c, e], axis=1).astype(np.float32)

    def _cosine_parts(
        self, a: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(z, xhat) float64 (n, n_dims): the projection and its quantised value (here: sign)."""
        u = self.logits(a).astype(np.float64)
        return u, np.where(u > 0, 1.0, -1.0)

    def _pca_width(self, d: int, n: int | None) -> int:
        """PCA components kept: ``min(n_bits, d)``; the fit needs at least that many rows.

        The rule for ``n_bits > d`` (README "Hashers"): the PCA hashers pad the ``d``
        components with zeros to ``n_bits`` before their (n_bits, n_bits) rotation, so every bit
        mixes all components; codes with ``n_bits <= d`` are unchanged by the rule.
        """
        k = min(int(self.n_bits), d)
        if n is not None and k > n:
            raise ValueError(
                f"{k} PCA components (n_bits={self.n_bits}, dimension {d}) need at least {k} "
                f"training samples, got {n}"
            )
        return k
