"""Named results of the search paths below ``HashIndex`` (stores and kernels).

Each is a ``NamedTuple``, so ``ids, distances = store.search(...)`` keeps working and
``res.ids`` / ``res.distances`` read as in :class:`hashplug.index.SearchResult`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["CodeHits", "Hits", "ScoredHits"]


class Hits(NamedTuple):
    """A store's coarse top-``limit``, ascending by (distance, id).

    ``ids`` int64 (Q, limit), -1 for padding, and Hamming ``distances`` int32 (Q, limit),
    ``HAMMING_PAD`` for padding.
    """

    ids: NDArray[np.int64]
    distances: NDArray[np.int32]


class CodeHits(NamedTuple):
    """:class:`Hits` plus the hits' packed ``codes`` uint8 (Q, limit, n_bytes), zeros for padding."""

    ids: NDArray[np.int64]
    distances: NDArray[np.int32]
    codes: NDArray[np.uint8]


class ScoredHits(NamedTuple):
    """A reranked top-k, ascending by (distance, id).

    ``ids`` int64 (Q, k), -1 for padding, and float32 ``distances`` (asymmetric or estimated cosine
    distance; +inf for padding).
    """

    ids: NDArray[np.int64]
    distances: NDArray[np.float32]
