"""Checks for sources that score the attach shortlist inside their engine."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..results import ShortlistHits, SourceHits

__all__ = ["assert_engine_scoring_matches_fetching", "assert_source_results_are_named"]


def assert_source_results_are_named(source: Any, queries: Any, k: int) -> None:
    """Assert that a source's searches return named tuples that still unpack as pairs.

    ``source.search`` must give a :class:`~hashplug.results.SourceHits` (Q id arrays of at most
    ``k`` ids, float32 scores (Q, k)); a source with ``scores_in_engine`` must give a
    :class:`~hashplug.results.ShortlistHits` from ``search_among`` over the first query's ids.
    """
    q = np.asarray(queries, np.float32)
    res = source.search(q, k)
    assert isinstance(res, SourceHits), type(res)
    assert res.ids is res[0] and res.scores is res[1]
    ids, scores = res  # plain unpacking keeps working
    assert len(ids) == q.shape[0] and all(len(i) <= k for i in ids)
    assert scores.shape == (q.shape[0], k) and scores.dtype == np.float32
    if source.scores_in_engine and len(ids[0]):
        got = source.search_among(q[0], ids[0], k)
        assert isinstance(got, ShortlistHits), type(got)
        assert got.ids is got[0] and len(got.ids) == len(got.scores) <= k
        assert set(got.ids.tolist()) == set(ids[0].tolist())


def assert_engine_scoring_matches_fetching(index: Any, queries: Any, k: int) -> None:
    """Assert that engine scoring gives the same ids and scores as fetching the originals.

    ``index`` (an :class:`~hashplug.AttachedIndex` whose source has ``scores_in_engine``) must
    return the same ids and scores when the engine scores the shortlist as when hashplug fetches the
    originals and scores them itself.
    """
    assert index.source.scores_in_engine, f"{type(index.source).__name__} scores nothing itself"
    assert_source_results_are_named(index.source, queries, k)
    got = index.search(queries, k)
    index.source.scores_in_engine = False
    try:
        ref = index.search(queries, k)
    finally:
        index.source.scores_in_engine = True
    assert got.ids.tolist() == ref.ids.tolist()
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-5, atol=1e-5)
