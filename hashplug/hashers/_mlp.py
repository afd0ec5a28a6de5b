"""The HashCoder forward pass in numpy (no torch): input preprocessing and the folded MLP."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["preprocess", "mlp_logits", "fold_batchnorm"]


def preprocess(x: NDArray[np.float32], mean: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centre with the training mean, L2-normalise each row, scale by sqrt(d).

    Rows then have norm sqrt(d) (about unit variance per coordinate), the scale the default
    initialisation of a Linear layer expects; cosine geometry is kept. A row equal to the mean
    stays zero.
    """
    z = x - mean
    n = np.sqrt(np.einsum("ij,ij->i", z, z, dtype=np.float32))[:, None]
    z *= np.float32(np.sqrt(x.shape[1])) / np.maximum(n, np.float32(1e-12))
    return z


def mlp_logits(
    z: NDArray[np.float32],
    w1: NDArray[np.float32],
    b1: NDArray[np.float32],
    w2: NDArray[np.float32],
    b2: NDArray[np.float32],
    block: int = 8192,
) -> NDArray[np.float32]:
    """``relu(z @ w1 + b1) @ w2 + b2`` in float32, in row blocks to bound the hidden buffer."""
    out = np.empty((z.shape[0], w2.shape[1]), np.float32)
    for s in range(0, z.shape[0], block):
        h = z[s : s + block] @ w1
        h += b1
        np.maximum(h, 0.0, out=h)
        out[s : s + block] = h @ w2
    out += b2
    return out


def fold_batchnorm(
    w: NDArray[np.float64],
    b: NDArray[np.float64],
    mean: NDArray[np.float64],
    var: NDArray[np.float64],
    gamma: NDArray[np.float64],
    beta: NDArray[np.float64],
    eps: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fold an eval-mode BatchNorm after ``h @ w + b`` (w: (hidden, n_bits)) into ``(w', b')``."""
    s = gamma / np.sqrt(var + eps)
    return w * s[None, :], (b - mean) * s + beta
