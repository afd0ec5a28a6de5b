"""Binary codes: packing, conversions and symmetric Hamming distances.

One layout everywhere (DESIGN.md): packed codes are ``uint8`` arrays of shape ``(n, n_bits // 8)``;
bit ``j`` of an item is bit ``7 - j % 8`` of byte ``j // 8``, exactly ``np.packbits(bits, axis=1)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "HAMMING_PAD",
    "check_n_bits",
    "pack_bits",
    "unpack_bits",
    "bits_to_signs",
    "signs_to_bits",
    "pack_signs",
    "unpack_signs",
    "as_packed",
    "hamming_distances",
    "POPCOUNT8",
]

#: Distance of padded slots (id or row -1) in Hamming results, on every store and kernel
#: (FAISS's convention: the int32 maximum).
HAMMING_PAD = int(np.iinfo(np.int32).max)

POPCOUNT8: NDArray[np.uint8] = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_n_bits(n_bits: int) -> int:
    """Return ``n_bits`` as int, or raise ValueError unless it is a positive multiple of 8."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise ValueError(f"n_bits must be an int, got {type(n_bits).__name__}")
    n = int(n_bits)
    if n <= 0 or n % 8:
        raise ValueError(f"n_bits must be a positive multiple of 8, got {n}")
    return n


def _as_2d(a: ArrayLike, what: str) -> NDArray:
    arr = np.asarray(a)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, d), got shape {arr.shape}")
    return arr


def pack_bits(bits: ArrayLike) -> NDArray[np.uint8]:
    """Pack {0,1} (or bool) bits of shape (n, n_bits) into uint8 codes (n, n_bits // 8)."""
    b = _as_2d(bits, "bits")
    check_n_bits(b.shape[1])
    if b.dtype != np.bool_:
        if b.size and not np.isin(b, (0, 1)).all():
            raise ValueError("bits must contain only 0 and 1")
        b = b.astype(bool)
    return np.packbits(b, axis=1)


def unpack_bits(codes: ArrayLike, n_bits: int | None = None) -> NDArray[np.uint8]:
    """Unpack uint8 codes (n, n_bytes) into {0,1} uint8 bits (n, n_bits)."""
    c = as_packed(codes, n_bits)
    return np.unpackbits(c, axis=1)


def bits_to_signs(bits: ArrayLike) -> NDArray[np.int8]:
    """{0,1} -> {-1,+1} (int8): s = 2b - 1."""
    b = np.asarray(bits)
    if b.size and not np.isin(b, (0, 1)).all():
        raise ValueError("bits must contain only 0 and 1")
    return (2 * b.astype(np.int8) - 1).astype(np.int8)


def signs_to_bits(signs: ArrayLike) -> NDArray[np.uint8]:
    """{-1,+1} -> {0,1} (uint8). Any value > 0 is 1, so float ±1 vectors from a database work too."""
    s = np.asarray(signs)
    if s.size and not np.all(np.abs(s) == 1):
        raise ValueError("signs must contain only -1 and +1")
    return (s > 0).astype(np.uint8)


def pack_signs(signs: ArrayLike) -> NDArray[np.uint8]:
    """Pack ±1 vectors (n, n_bits) into uint8 codes."""
    return pack_bits(signs_to_bits(_as_2d(signs, "signs")))


def unpack_signs(codes: ArrayLike, n_bits: int | None = None) -> NDArray[np.int8]:
    """Unpack uint8 codes into ±1 int8 vectors (n, n_bits)."""
    return bits_to_signs(unpack_bits(codes, n_bits))


def as_packed(codes: ArrayLike, n_bits: int | None = None) -> NDArray[np.uint8]:
    """Validate packed codes: uint8, 2-D, and ``n_bits // 8`` bytes wide if ``n_bits`` is given.

    Returns a C-contiguous uint8 array (a view when possible).
    """
    c = np.asarray(codes)
    if c.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8, got {c.dtype}")
    c = _as_2d(c, "codes")
    if n_bits is not None:
        nb = check_n_bits(n_bits)
        if c.shape[1] != nb // 8:
            raise ValueError(
                f"codes have {c.shape[1]} bytes ({c.shape[1] * 8} bits), expected {nb // 8} "
                f"bytes for n_bits={nb}"
            )
    return np.ascontiguousarray(c)


def hamming_distances(a: ArrayLike, b: ArrayLike) -> NDArray[np.int32]:
    """Symmetric Hamming distances between packed codes: (na, nb) int32.

    Plain numpy (a byte popcount table); the fast kernels live in ``hashplug.rerank``.
    """
    x = as_packed(a)
    y = as_packed(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"code widths differ: {x.shape[1]} vs {y.shape[1]} bytes")
    out = np.zeros((x.shape[0], y.shape[0]), dtype=np.int32)
    for j in range(x.shape[1]):
        out += POPCOUNT8[np.bitwise_xor.outer(x[:, j], y[:, j])]
    return out
