"""Conformance of the ``scoring="cosine"`` factors (stores with ``supports_corrections``).

``upsert(..., corrections=(n, 2))`` keeps each item's two factors as float16 (a row of NaN: none);
``lookup_corrections(ids)`` returns them with a found mask. Upserting an id again replaces them
(without ``corrections``: the item has none), deleting it removes them, bad input is refused
before anything is written, and ``HashIndex.search(scoring="cosine")`` through the store equals
the same search through ``memory://`` on real embeddings.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray

from ..stores.base import Store
from ._conformance_base import ConformanceBase, MakeStore, random_codes

__all__ = ["CorrectionsConformance", "cosine_indexes", "real_embeddings"]

#: The real image embeddings (``../shared/data`` beside the repository, or $HASHPLUG_EMBEDDINGS).
EMBEDDINGS = Path(
    os.environ.get(
        "HASHPLUG_EMBEDDINGS",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "fmnist_effnet.npz",
    )
)


@functools.lru_cache(maxsize=1)
def _load(path: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    with np.load(path) as d:
        return d["db_x"][:2000].astype(np.float32), d["q_x"][:50].astype(np.float32)


def real_embeddings(n: int, q: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Return ``n`` database and ``q`` query rows of the Fashion-MNIST EfficientNet set.

    Unit norm (n <= 2000, q <= 50); skips the test where the file is absent.
    """
    if not EMBEDDINGS.is_file():
        pytest.skip(f"real embeddings not found at {EMBEDDINGS} (../shared/data is absent)")
    x, qx = _load(EMBEDDINGS)
    x, qx = x[:n], qx[:q]
    return (
        x / np.linalg.norm(x, axis=1, keepdims=True),
        qx / np.linalg.norm(qx, axis=1, keepdims=True),
    )


def cosine_indexes(
    suite: ConformanceBase,
    make_store: MakeStore,
    name: str,
    ids: NDArray[np.int64],
    flag: str,
    mixin: str,
) -> tuple[Any, Any, Any, NDArray[np.float32], NDArray[np.float32]]:
    """Return ``(index on the store, index on memory://, hasher, x, q)``, both filled alike.

    A HashingBaseline fitted on ``ids.size`` real embeddings; the items are added with
    ``scoring="cosine"``. Skips or fails (see ``_require``) unless the store declares ``flag``
    (the capability of ``mixin``).
    """
    from ..hashers import HashingBaseline
    from ..index import HashIndex

    x, q = real_embeddings(ids.size, 8)
    h = HashingBaseline(suite.n_bits).fit(x)
    idx, ref = HashIndex(make_store(name), h), HashIndex("memory://", h)
    suite._require(idx.store, flag, mixin)
    for i in (idx, ref):
        i.add(x, ids, progress=False, scoring="cosine")
    return idx, ref, h, x, q


class CorrectionsConformance(ConformanceBase):
    """Stores with ``supports_corrections``: the per-vector factors of ``scoring="cosine"``."""

    capability: ClassVar[str | None] = "supports_corrections"

    def _factors(self, n: int, seed: int) -> NDArray[np.float32]:
        rng = np.random.default_rng(seed)
        return np.stack([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.3, n)], 1).astype(np.float32)

    def _check(self, store: Store, ids: Any, want: NDArray[Any], has: NDArray[np.bool_]) -> None:
        got, found = store.lookup_corrections(np.asarray(ids, np.int64))
        assert got.dtype == np.float32 and got.shape == (len(ids), 2)
        np.testing.assert_array_equal(found, has)
        np.testing.assert_array_equal(got[has], want[has].astype(np.float16).astype(np.float32))
        assert np.isnan(got[~has]).all()

    def test_corrections_round_trip_replace_delete_and_refusals(self, store: Any) -> None:
        self._require(store, "supports_corrections", "CorrectionsConformance")
        n = 40
        ids = np.arange(500, 500 + n, dtype=np.int64) * 3
        codes = random_codes(n, self.n_bits, seed=3)
        f = self._factors(n, 1)
        f[30:] = np.nan  # rows of NaN: no factors
        store.upsert(ids[:35], codes[:35], corrections=f[:35])
        store.upsert(ids[35:], codes[35:])  # without corrections
        has = np.arange(n) < 30
        order = np.random.default_rng(2).permutation(n)
        self._check(store, ids[order], f[order], has[order])
        self._check(store, [7, ids[0], 8], f[[0, 0, 0]], np.array([False, True, False]))
        assert store.correction_bytes > 0  # counted in the store's bytes per vector
        assert store.bytes_per_vector() == self.n_bits // 8 + store.correction_bytes

        g = self._factors(5, 9)
        store.upsert(ids[:5], codes[:5], corrections=g)  # replaced
        store.upsert(ids[5:10], codes[5:10])  # replaced without: none
        store.upsert(ids[30:32], codes[30:32], corrections=g[:2])  # now with
        store.delete(ids[10:15])
        want = f.copy()
        want[:5], want[30:32] = g, g[:2]
        has = has.copy()
        has[5:15], has[30:32] = False, True
        self._check(store, ids, want, has)
        assert store.count() == n - 5

        new = np.arange(10_000, 10_004, dtype=np.int64)
        good = self._factors(4, 4)
        partial, inf, big = good.copy(), good.copy(), good.copy()
        partial[1, 0], inf[2, 1], big[0, 0] = np.nan, np.inf, 1e6
        for bad, why in (
            (good[:3], "shape"),
            (np.ones((4, 3), np.float32), "shape"),
            (np.ones((4, 2), np.int64), "float"),
            (partial, "NaN"),
            (inf, "inf"),
            (big, "float16"),
        ):
            with pytest.raises(ValueError, match=why):
                store.upsert(new, random_codes(4, self.n_bits, seed=5), corrections=bad)
            with pytest.raises(ValueError, match=why):  # existing ids keep their factors
                store.upsert(ids[:4], codes[:4], corrections=bad)
        assert store.count() == n - 5
        assert not store.lookup_codes(new)[1].any()
        self._check(store, ids, want, has)

    def test_index_cosine_search_equals_memory(self, make_store: MakeStore) -> None:
        ids = np.arange(600, dtype=np.int64) * 5 + 1
        idx, ref, _, _, q = cosine_indexes(
            self, make_store, "conf_cosine", ids, "supports_corrections", "CorrectionsConformance"
        )
        kw: dict[str, Any] = {"k": 10, "oversample": 60, "scoring": "cosine"}  # every item
        got, want = idx.search(q, **kw), ref.search(q, **kw)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.distances, want.distances, rtol=0, atol=1e-6)
        assert (got.ids >= 0).all() and (np.diff(got.distances, axis=1) >= 0).all()
        idx.close()
