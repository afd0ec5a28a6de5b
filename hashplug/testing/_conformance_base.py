"""Shared pieces of the store conformance suite.

Data helpers and :class:`ConformanceBase`, the fixtures and settings every capability mixin of
:mod:`hashplug.testing.conformance` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

from ..codes import hamming_distances
from ..stores.base import CollectionMeta, Store
from .filter_cases import FILTER_CASES, FILTER_PAYLOADS

__all__ = [
    "ConformanceBase",
    "MakeStore",
    "make_meta",
    "random_codes",
    "run_filter_cases",
    "tie_data",
]

MakeStore = Callable[[str], Store]


def make_meta(n_bits: int = 64, fingerprint: str = "f00dfeedcafe0001") -> CollectionMeta:
    """Return a collection meta as HashIndex would write it."""
    spec = {"class": "HashingBaseline", "n_bits": n_bits, "seed": 0, "pca": True, "rotate": True}
    return CollectionMeta(n_bits=n_bits, fingerprint=fingerprint, hasher_spec=spec)


def random_codes(n: int, n_bits: int = 64, seed: int = 0) -> np.ndarray:
    """Random packed codes, plus one-hot codes in the first rows to pin the bit order."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, n_bits // 8), dtype=np.uint8)
    for j in range(min(n, n_bits)):
        bits = np.zeros(n_bits, np.uint8)
        bits[j] = 1
        codes[j] = np.packbits(bits)
    return codes


def _ref_sorted(q: np.ndarray, ids: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, ...]:
    d = hamming_distances(q, codes)
    out_i, out_d = [], []
    for row in d:
        o = np.lexsort((ids, row))
        out_i.append(ids[o])
        out_d.append(row[o])
    return np.array(out_i), np.array(out_d)


def run_filter_cases(store: Store) -> dict[str, str]:
    """Run every case of :data:`FILTER_CASES` on ``store``: ``{case name: what went wrong}``.

    Stores :data:`FILTER_PAYLOADS` under ids 0.. in an opened, empty ``store`` first; the result is
    empty when all pass.
    """
    n = len(FILTER_PAYLOADS)
    codes = random_codes(n, store._require_open().n_bits, seed=11)
    store.upsert(np.arange(n), codes, FILTER_PAYLOADS)
    failed: dict[str, str] = {}
    for name, flt, want in FILTER_CASES:
        try:
            ids, _ = store.search(codes[:1], n + 4, filter=flt)
        except Exception as e:  # noqa: BLE001 - every failure is reported by name
            failed[name] = f"{type(e).__name__}: {e}"[:300]
            continue
        got = sorted(int(i) for i in ids[0] if i >= 0)
        if got != sorted(want):
            failed[name] = f"filter {flt!r:.80} gave {got}, want {sorted(want)}"
    return failed


def tie_data(n_groups: int = 40, per_group: int = 12, dim: int = 32, seed: int = 0) -> Any:
    """Return embeddings in groups of ``per_group`` equal rows, and shuffled ids.

    Every group of ``per_group`` rows is the same vector (so their codes and distances tie), with
    ids shuffled so that id order is not insertion order.
    """
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_groups, dim)).astype(np.float32)
    x = np.repeat(base, per_group, axis=0)
    ids = rng.permutation(np.arange(10, 10 + x.shape[0], dtype=np.int64) * 7)
    return x, ids, base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)


class ConformanceBase:
    """Fixtures and settings of the conformance mixins.

    An adapter's test class provides ``make_store``.

    Class attributes an adapter may set: ``known_filter_failures`` (case name -> why: an engine
    limit, documented; the test fails if such a case starts passing, so the list stays true),
    ``late_refusal`` (a payload the engine refuses that hashplug's generic checks let through,
    e.g. a value of another type than its column; None when the engine refuses nothing else).
    """

    n_bits: int = 64
    n_items: int = 300
    known_filter_failures: dict[str, str] = {}  # noqa: RUF012 - read-only per class
    late_refusal: Any = None
    #: repetitions of each search in the determinism test
    determinism_repeats: int = 10
    #: The Store capability flag a mixin checks (None: the contract of every store).
    capability: ClassVar[str | None] = None
    #: True on :class:`StoreConformance` (every mixin): tests of a capability the store does not
    #: declare are skipped there; a class composing mixins one by one gets a failure instead.
    compose_all: ClassVar[bool] = False

    @pytest.fixture
    def make_store(self) -> MakeStore:  # pragma: no cover - adapters override
        raise NotImplementedError("an adapter's test class must provide a make_store fixture")

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Any:
        s = make_store("conf_main")
        s.open(make_meta(self.n_bits))
        yield s
        s.close()

    def _require(self, store: Store, flag: str, mixin: str) -> None:
        """Skip (under StoreConformance) or fail when ``store`` does not declare ``flag``."""
        if getattr(store, flag, False):
            return
        why = f"{type(store).__name__}.{flag} is False"
        if self.compose_all:
            pytest.skip(why)
        pytest.fail(
            f"{type(self).__name__} composes {mixin}, but {why}: declare it or drop the mixin"
        )

    def _fill(self, store: Store, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, ...]:
        n = self.n_items if n is None else n
        codes = random_codes(n, self.n_bits, seed)
        ids = np.arange(1000, 1000 + n, dtype=np.int64)
        payloads = [
            {"color": ["red", "green", "blue"][i % 3], "rank": int(i), "score": i / 7.0}
            for i in range(n)
        ]
        store.upsert(ids, codes, payloads)
        return ids, codes

    def _index(self, make_store: MakeStore, name: str, x: np.ndarray) -> Any:
        from ..hashers import LSH
        from ..index import HashIndex

        hasher = LSH(self.n_bits, seed=1).fit(x)
        return HashIndex(make_store(name), hasher)
