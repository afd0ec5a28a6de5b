"""Hashing-Baseline (arXiv 2509.14427): PCA, a random orthogonal rotation, a threshold at 0."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._validate import as_matrix
from . import _multibit as mb
from .base import check_bool, check_nonneg_int
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

    ``allocation`` (default None: one bit per principal direction, the paper's codes) spends the
    bits unevenly for ``scoring="cosine"``: ``[[n_dims, bits], ...]`` in principal-component
    order, e.g. ``[[32, 3], [144, 1]]`` (240 bits): the top 32 directions get 3-bit scalar
    quantisation, the next 144 one bit each; each group has its own random rotation, and
    ``scale_`` (D,) keeps each direction's training standard deviation. Then ``projection_`` is
    (d, D) with D = sum of n_dims (n_bits may exceed d), and :meth:`cosine_query` gives per-bit
    weights (see :mod:`hashplug.hashers._multibit`).
    """

    _arrays: ClassVar[tuple[str, ...]] = (
        "mean_",
        "projection_",
        "components_",
        "explained_variance_",
        "rotation_",
        "scale_",
    )

    components_: NDArray[np.float32] | None = None
    explained_variance_: NDArray[np.float32] | None = None
    rotation_: NDArray[np.float32] | None = None
    scale_: NDArray[np.float32] | None = None
    n_samples_: int | None = None
    _bpd: NDArray[np.int64] | None = None

    def __init__(
        self,
        n_bits: int,
        *,
        seed: int = 0,
        pca: bool = True,
        rotate: bool = True,
        allocation: list[list[int]] | None = None,
    ):
        self.n_bits = n_bits
        self.seed = seed
        self.pca = pca
        self.rotate = rotate
        self.allocation = allocation

    def _check_params(self) -> dict[str, Any]:
        prm = {
            **super()._check_params(),
            "seed": check_nonneg_int(self.seed, "seed"),
            "pca": check_bool(self.pca, "pca"),
            "rotate": check_bool(self.rotate, "rotate"),
        }
        prm["allocation"] = mb.check_allocation(self.allocation, prm["n_bits"])
        if prm["allocation"] is not None and not (prm["pca"] and prm["rotate"]):
            raise ValueError("allocation needs pca=True and rotate=True")
        return prm

    def get_spec(self) -> dict[str, Any]:
        """As :meth:`Hasher.get_spec`; ``allocation`` only when set (older files stay valid)."""
        spec = super().get_spec()
        if spec.get("allocation") is None:
            spec.pop("allocation", None)
        return spec

    def fit(self, x: Any) -> HashingBaseline:
        """Streamed mean and covariance of ``x``, PCA, random rotation; returns self."""
        prm = self._check_params()
        n_bits, seed = prm["n_bits"], prm["seed"]
        acc = streamed_moments(x, with_cov=prm["pca"])
        d = int(acc.dim or 0)
        if prm["allocation"] is not None:
            return self._fit_allocation(acc, prm["allocation"], seed)
        self._check_dims(d, acc.n, needs_pca=True)
        self.scale_ = None
        if prm["pca"]:
            comps, var = top_components(acc.cov, n_bits)
            self.components_ = comps.astype(np.float32)
            self.explained_variance_ = var.astype(np.float32)
            proj = comps.T
        else:
            self.components_ = None
            self.explained_variance_ = None
            proj = random_orthogonal(d, n_bits, seed=seed)
        if prm["rotate"] and prm["pca"]:
            rot = random_orthogonal(n_bits, seed=seed)
            self.rotation_ = rot.astype(np.float32)
            proj = proj @ rot
        else:
            self.rotation_ = None
        self.n_samples_ = acc.n
        self._set_linear(acc.mean, proj)
        return self

    def _fit_allocation(self, acc: Any, groups: list[list[int]], seed: int) -> HashingBaseline:
        n_dims = sum(g[0] for g in groups)
        d = int(acc.dim or 0)
        if n_dims > min(d, acc.n):
            raise ValueError(
                f"allocation uses {n_dims} principal directions, more than the embedding "
                f"dimension {d} or the {acc.n} training samples"
            )
        comps, var = top_components(acc.cov, n_dims)
        rot = np.zeros((n_dims, n_dims))
        lo = 0
        for g, (dims, _) in enumerate(groups):
            rot[lo : lo + dims, lo : lo + dims] = random_orthogonal(dims, seed=seed + g)
            lo += dims
        proj = comps.T @ rot
        self.components_ = comps.astype(np.float32)
        self.explained_variance_ = var.astype(np.float32)
        self.rotation_ = rot.astype(np.float32)
        self.scale_ = np.sqrt(np.maximum(np.einsum("ij,ik,kj->j", proj, acc.cov, proj), 1e-30))
        self.scale_ = self.scale_.astype(np.float32)
        self.n_samples_ = acc.n
        self._set_linear(acc.mean, proj)
        return self

    def _after_fit(self) -> None:
        super()._after_fit()
        groups = mb.check_allocation(self.allocation, int(self.n_bits))
        self._bpd = mb.bits_per_dim(groups) if groups is not None else None

    def _logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        z = super()._logits(x)
        if self._bpd is None:
            return z
        assert self.scale_ is not None
        return mb.bit_logits(z, self.scale_, self._bpd)

    def cosine_query(self, x: Any) -> NDArray[np.float32]:
        """Per-bit weights of ``scoring="cosine"`` (the logits unless ``allocation`` is set)."""
        if self._bpd is None:
            return self.logits(x)
        assert self.scale_ is not None
        z = super()._logits(as_matrix(x, dim=self._check_fitted()))
        return (mb.expand(z, self._bpd) * mb.bit_weights(self.scale_, self._bpd)).astype(np.float32)

    def _cosine_parts(
        self, a: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if self._bpd is None:
            return super()._cosine_parts(a)
        assert self.scale_ is not None
        z = super()._logits(a).astype(np.float64)
        s = np.where(self.logits(a) > 0, 1.0, -1.0)
        ws = s * mb.bit_weights(self.scale_, self._bpd)[None, :]
        starts = np.concatenate([[0], np.cumsum(self._bpd)[:-1]])
        return z, np.add.reduceat(ws, starts, axis=1)

    def _extra_meta(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples_}

    def _restore(self, arrays: dict[str, NDArray[Any]], dim: int, extra: dict[str, Any]) -> None:
        super()._restore(arrays, dim, extra)
        self.n_samples_ = extra.get("n_samples")
