"""Named results of the search paths below ``HashIndex``: stores, kernels and attach sources.

Each is a ``NamedTuple``, so ``ids, distances = store.search(...)`` keeps working and
``res.ids`` / ``res.distances`` read as in :class:`hashplug.index.SearchResult` (``res.rows`` for
:class:`RowHits`, ``res.scores`` for a source's results).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["CodeHits", "Hits", "RowHits", "ScoredHits", "ShortlistHits", "SourceHits"]


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


class RowHits(NamedTuple):
    """A Hamming top-k by row number (:func:`hashplug.rerank.hamming_topk`).

    ``rows`` int64 (Q, k) into the searched code matrix, -1 for padding, and Hamming
    ``distances`` int32 (Q, k), ``HAMMING_PAD`` for padding; ascending by (distance, id, row).
    """

    rows: NDArray[np.int64]
    distances: NDArray[np.int32]


class SourceHits(NamedTuple):
    """A source engine's own exact float search (:meth:`hashplug.sources.Source.search`).

    ``ids``: per query its best ids (a list of Q arrays of the source's ids, shorter when the
    collection has fewer rows); ``scores`` float32 (Q, k) in the source metric, nan padding.
    """

    ids: list[NDArray[Any]]
    scores: NDArray[np.float32]


class ShortlistHits(NamedTuple):
    """One query's best of a shortlist (:meth:`hashplug.sources.Source.search_among`).

    ``ids``: the source's ids (k or fewer), best first; ``scores`` float32 of the same length,
    in the source metric.
    """

    ids: NDArray[Any]
    scores: NDArray[np.float32]
