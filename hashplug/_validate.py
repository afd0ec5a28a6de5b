"""Input checks shared by hashers, the index and the benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "as_matrix",
    "check_finite",
    "check_positive_int",
    "float_array",
    "iter_batches",
    "query_matrix",
    "sigmoid",
]


def check_positive_int(value: Any, what: str, most: int | None = None) -> int:
    """Return ``value`` as int, or raise ValueError unless it is a positive int.

    An int or numpy integer > 0, and at most ``most`` when given.

    ``bool`` is refused (``True`` is not a count), and so are floats, even integral ones. The one
    check of every count argument (k, limit, oversample, batch sizes ...) in core and adapters.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0 or (most is not None and value > most):
        bound = f" and at most {most}" if most is not None else ""
        raise ValueError(f"{what} must be a positive int{bound}, got {value!r}")
    return int(value)


def as_matrix(x: Any, *, dim: int | None = None, what: str = "x") -> NDArray[np.float32]:
    """Return ``x`` as a C-contiguous float32 (n, d) matrix, or raise ValueError naming the problem.

    float16/float64/int inputs and non-contiguous views are converted. Finiteness is not checked
    here (see :func:`check_finite`).
    """
    a = np.asarray(x)
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise ValueError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        hint = "; for one vector use x.reshape(1, -1)" if a.ndim == 1 else ""
        raise ValueError(f"{what} must be 2-D (n, d), got shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 rows)")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{what} has dimension {a.shape[1]}, but the hasher was fitted on {dim}")
    return np.ascontiguousarray(a, dtype=np.float32)


def float_array(x: Any, what: str) -> NDArray[np.floating[Any]]:
    """Return ``x`` as an array, or raise ValueError unless its dtype is a float type."""
    a = np.asarray(x)
    if a.dtype == object or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be a float array, got dtype {a.dtype}")
    return a


def query_matrix(x: Any, what: str, hint: str = "") -> NDArray[np.floating[Any]]:
    """Return ``x`` as a float (Q, n_bits) array, n_bits a positive multiple of 8, or ValueError.

    ``hint`` is appended to the shape error.
    """
    a = float_array(x, what)
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[1] % 8:
        raise ValueError(
            f"{what} must be 2-D (Q, n_bits) with n_bits a positive multiple of 8, got "
            f"shape {a.shape}{hint}"
        )
    return a


def check_finite(a: NDArray[Any], what: str = "x") -> None:
    """Raise ValueError if ``a`` holds NaN or inf, naming the first bad rows."""
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(a.shape[0], -1).any(axis=1))
        kind = "NaN" if np.isnan(a).any() else "inf"
        raise ValueError(
            f"{what} contains {kind} values ({rows.size} rows, first: {rows[:5].tolist()})"
        )


def iter_batches(x: Any) -> Iterator[Any]:
    """One array -> one batch; a list/tuple of arrays, an iterator or a generator -> its items."""
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        yield x
    elif isinstance(x, (list, tuple)):
        if x and all(isinstance(b, np.ndarray) and b.ndim == 2 for b in x):
            yield from x
        else:
            yield x
    elif isinstance(x, Iterable):
        yield from x
    else:
        yield x


def sigmoid(u: NDArray[np.float32]) -> NDArray[np.float32]:
    """float32 logistic function, as 0.5 * (1 + tanh(u / 2)): stable, one temporary.

    Absolute error <= 1e-7 (relative precision is lost only where p is within 1e-7 of 0).
    """
    p = np.multiply(u, 0.5, dtype=np.float32)
    np.tanh(p, out=p)
    p += 1.0
    p *= 0.5
    return p
