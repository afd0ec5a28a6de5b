"""Checks for sources that score the attach shortlist inside their engine."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["assert_engine_scoring_matches_fetching"]


def assert_engine_scoring_matches_fetching(index: Any, queries: Any, k: int) -> None:
    """Assert that engine scoring gives the same ids and scores as fetching the originals.

    ``index`` (an :class:`~hashplug.AttachedIndex` whose source has ``scores_in_engine``) must
    return the same ids and scores when the engine scores the shortlist as when hashplug fetches the
    originals and scores them itself.
    """
    assert index.source.scores_in_engine, f"{type(index.source).__name__} scores nothing itself"
    got = index.search(queries, k)
    index.source.scores_in_engine = False
    try:
        ref = index.search(queries, k)
    finally:
        index.source.scores_in_engine = True
    assert got.ids.tolist() == ref.ids.tolist()
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-5, atol=1e-5)
