"""The store conformance suite, as capability mixins that each adapter's tests compose.

Usage in an adapter's test module (the pattern of haystack's ``DocumentStoreBaseTests``)::

    from hashplug.testing import CoreConformance, PayloadConformance, ConcurrencyConformance

    class TestMyStore(CoreConformance, PayloadConformance, ConcurrencyConformance,
                      PersistenceConformance):  # + RescoringConformance if it rescores,
                                                # CorrectionsConformance if it keeps factors
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda name: MyStore(tmp_path / "db", name)

``make_store(name)`` returns a new, un-opened Store for collection ``name``; calling it again with
the same name must reach the same stored collection. Core, payload and concurrency mixins are the
contract of every store; the others go with a capability flag of the Store (``persistent``,
``supports_rescoring``, ``supports_corrections``), and ``CoreConformance`` checks that the flags
and the mixins agree, so a store cannot skip a capability silently. :class:`StoreConformance` composes every mixin (a
capability the store does not declare is skipped there). The suite runs against the adapter's real
engine, never a mock of it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import pytest

from ..codes import hamming_distances
from ..stores.base import HAMMING_PAD, CodeHits, HasherMismatchError, Hits, Store
from ._conformance_base import (
    ConformanceBase,
    MakeStore,
    _ref_sorted,
    make_meta,
    random_codes,
    run_filter_cases,
    tie_data,
)
from .corrections import CorrectionsConformance
from .filter_cases import FILTER_CASES
from .rescoring import CosineRescoringConformance, RescoringConformance

__all__ = [
    "CAPABILITY_MIXINS",
    "REQUIRED_MIXINS",
    "ConcurrencyConformance",
    "CoreConformance",
    "CorrectionsConformance",
    "PayloadConformance",
    "PersistenceConformance",
    "CosineRescoringConformance",
    "RescoringConformance",
    "StoreConformance",
    "make_meta",
    "random_codes",
    "run_filter_cases",
    "tie_data",
]


class CoreConformance(ConformanceBase):
    """Every store: metadata, bit order, Hamming search, upsert / delete / count and more.

    Also argument checks, all-or-nothing add, determinism; and that the test class runs the mixins
    of the capabilities its store declares.
    """

    def test_declared_capabilities_match_the_mixins_run(self, store: Store) -> None:
        for mixin in REQUIRED_MIXINS:
            assert isinstance(self, mixin), (
                f"{type(self).__name__} must compose {mixin.__name__} (every store's contract)"
            )
        for mixin in CAPABILITY_MIXINS:
            flag = mixin.capability
            assert flag is not None and hasattr(Store, flag), (mixin, flag)
            declared, runs = bool(getattr(store, flag)), isinstance(self, mixin)
            assert runs or not declared, (
                f"{type(store).__name__} declares {flag} but {type(self).__name__} does not "
                f"compose {mixin.__name__}"
            )
            assert declared or not runs or self.compose_all, (
                f"{type(self).__name__} composes {mixin.__name__} but "
                f"{type(store).__name__}.{flag} is False"
            )

    def test_results_are_named_tuples(self, store: Store) -> None:
        ids, codes = self._fill(store, 20)
        res = store.search(codes[:2], 5)
        assert isinstance(res, Hits) and res.ids is res[0] and res.distances is res[1]
        got_i, got_d = res  # plain unpacking keeps working
        assert got_i.shape == got_d.shape == (2, 5)
        full = store.search_with_codes(codes[:2], 5, filter={"color": []})  # matches nothing
        assert isinstance(full, CodeHits) and (full.ids == -1).all()
        assert full.codes.shape == (2, 5, self.n_bits // 8)
        np.testing.assert_array_equal(store.search_with_codes(codes[:2], 5).ids, got_i)

    # -- metadata -----------------------------------------------------------------------------
    def test_open_creates_then_remembers_meta(self, make_store: MakeStore) -> None:
        s = make_store("conf_meta")
        assert s.read_meta() is None
        assert s.count() == 0
        meta = make_meta(self.n_bits)
        s.open(meta)
        got = s.read_meta()
        assert got is not None and got.fingerprint == meta.fingerprint
        assert got.n_bits == self.n_bits and dict(got.hasher_spec) == dict(meta.hasher_spec)
        s.close()
        again = make_store("conf_meta")
        assert again.open(meta).fingerprint == meta.fingerprint
        again.close()

    def test_hasher_mismatch_is_an_error_and_keeps_data(
        self, store: Store, make_store: MakeStore
    ) -> None:
        self._fill(store, 20)
        other = make_store("conf_main")
        with pytest.raises(HasherMismatchError) as err:
            other.open(make_meta(self.n_bits, fingerprint="0123456789abcdef"))
        assert "f00dfeedcafe0001" in str(err.value) and "0123456789abcdef" in str(err.value)
        assert store.count() == 20

    # -- codes --------------------------------------------------------------------------------
    def test_bit_order_round_trip(self, store: Store) -> None:
        ids, codes = self._fill(store)
        np.testing.assert_array_equal(store.get_codes(ids), codes)
        rev = ids[::-1]
        np.testing.assert_array_equal(store.get_codes(rev), codes[::-1])
        got, found = store.lookup_codes(np.array([ids[3], 999_999, ids[0]]))
        assert found.tolist() == [True, False, True]
        np.testing.assert_array_equal(got[[0, 2]], codes[[3, 0]])
        with pytest.raises(KeyError, match="999999"):
            store.get_codes([ids[0], 999_999])

    def test_hamming_distances_match_reference(self, store: Store) -> None:
        ids, codes = self._fill(store)
        q = np.concatenate([codes[:4], random_codes(4, self.n_bits, seed=9)])
        got_i, got_d = store.search(q, self.n_items)
        ref_i, ref_d = _ref_sorted(q, ids, codes)
        assert got_i.dtype == np.int64 and got_d.dtype == np.int32
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_i, ref_i)
        # A one-hot query finds its own item first, at distance 0.
        assert got_i[0, 0] == ids[0] and got_d[0, 0] == 0

    def test_partial_limit_gives_nearest(self, store: Store) -> None:
        ids, codes = self._fill(store)
        q = random_codes(5, self.n_bits, seed=3)
        got_i, got_d = store.search(q, 10)
        assert got_i.shape == (5, 10)
        ref = hamming_distances(q, codes)
        row_of = {int(v): r for r, v in enumerate(ids)}
        for r in range(5):
            np.testing.assert_array_equal(got_d[r], np.sort(ref[r])[:10])
            np.testing.assert_array_equal(got_d[r], [ref[r, row_of[int(i)]] for i in got_i[r]])
            assert np.all(np.diff(got_d[r]) >= 0)

    def test_search_with_codes_returns_the_hits_codes(self, store: Store) -> None:
        ids, codes = self._fill(store)
        q = random_codes(3, self.n_bits, seed=4)
        hit_i, hit_d, hit_c = store.search_with_codes(q, 15)
        assert hit_c.shape == (3, 15, self.n_bits // 8) and hit_c.dtype == np.uint8
        for r in range(3):
            np.testing.assert_array_equal(hit_c[r], store.get_codes(hit_i[r]))
            np.testing.assert_array_equal(hamming_distances(q[r : r + 1], hit_c[r])[0], hit_d[r])

    # -- upsert / delete / count / drop -------------------------------------------------------
    def test_upsert_replaces_and_never_duplicates(self, store: Store) -> None:
        ids, codes = self._fill(store, 50)
        new_codes = random_codes(30, self.n_bits, seed=5)
        new_ids = ids[20:] if ids.size >= 50 else ids
        store.upsert(new_ids[:30], new_codes, [{"color": "new", "rank": -1}] * 30)
        assert store.count() == 50
        np.testing.assert_array_equal(store.get_codes(new_ids[:30]), new_codes)
        np.testing.assert_array_equal(store.get_codes(ids[:20]), codes[:20])
        assert store.get_payloads(new_ids[:1]) == [{"color": "new", "rank": -1}]
        store.upsert(new_ids[:30], new_codes)  # the same again: still no duplicate
        assert store.count() == 50
        got_i, _ = store.search(new_codes[:3], 50)
        for row in got_i:
            valid = row[row >= 0]
            assert valid.size == np.unique(valid).size == 50

    def test_delete_and_count(self, store: Store) -> None:
        ids, codes = self._fill(store, 40)
        store.delete(ids[:10])
        store.delete([123_456_789])  # not stored: ignored
        assert store.count() == 30
        _, found = store.lookup_codes(ids[:12])
        assert found.tolist() == [False] * 10 + [True] * 2
        got_i, _ = store.search(codes[:10], 40)
        assert not np.isin(got_i, ids[:10]).any()
        assert (got_i[:, 30:] == -1).all() and (got_i[:, :30] >= 0).all()

    def test_empty_collection_and_k_beyond_count(self, store: Store) -> None:
        q = random_codes(2, self.n_bits, seed=6)
        got_i, got_d = store.search(q, 5)
        assert got_i.shape == (2, 5) and (got_i == -1).all() and (got_d == HAMMING_PAD).all()
        ids, _ = self._fill(store, 7)
        got_i, got_d = store.search(q, 20)
        assert got_i.shape == (2, 20)
        assert sorted(got_i[0, :7].tolist()) == sorted(ids.tolist())
        assert (got_i[:, 7:] == -1).all() and (got_d[:, 7:] == HAMMING_PAD).all()

    def test_bad_input_is_refused_and_loses_nothing(self, store: Store) -> None:
        ids, codes = self._fill(store, 10)
        with pytest.raises(ValueError, match="bytes"):
            store.upsert([1, 2], np.zeros((2, self.n_bits // 8 + 1), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            store.upsert([1, 2], np.zeros((2, self.n_bits // 8), np.int64))
        with pytest.raises(ValueError, match="duplicates"):
            store.upsert([5, 5], np.zeros((2, self.n_bits // 8), np.uint8))
        with pytest.raises(ValueError, match="ids"):
            store.upsert([1], np.zeros((2, self.n_bits // 8), np.uint8))
        with pytest.raises(ValueError, match="payload"):
            store.upsert([1], np.zeros((1, self.n_bits // 8), np.uint8), [{"x": object()}])
        with pytest.raises(ValueError, match="limit"):
            store.search(codes[:1], 0)
        assert store.count() == 10
        np.testing.assert_array_equal(store.get_codes(ids), codes)

    def test_drop(self, make_store: MakeStore) -> None:
        s = make_store("conf_drop")
        s.open(make_meta(self.n_bits))
        self._fill(s, 5)
        s.drop()
        assert s.count() == 0 and s.read_meta() is None
        s.close()
        t = make_store("conf_drop")
        assert t.read_meta() is None
        t.close()

    # -- the contract of issue 19: argument checks, all-or-nothing add, determinism -----------
    def test_ids_are_int64_everywhere(self, store: Store) -> None:
        ids, codes = self._fill(store, 10)
        for bad, msg in (
            ([1.7], "integer"),
            ([True], "integer"),
            ([2**63], "int64"),
            ([-1], ">= 0"),
        ):
            with pytest.raises(ValueError, match=msg):
                store.delete(bad)
            with pytest.raises(ValueError, match=msg):
                store.upsert(bad, codes[:1])
        with pytest.raises(ValueError, match="int64"):
            store.upsert([2**64 - 1], codes[:1])
        assert store.count() == 10
        np.testing.assert_array_equal(store.get_codes(ids), codes)

    def test_add_is_all_or_nothing(self, make_store: MakeStore) -> None:
        x, ids, _ = tie_data(30, 10)
        idx = self._index(make_store, "conf_atomic", x)
        good = [{"t": i} for i in range(len(ids))]
        lates = [{"t": float("nan")}] + ([self.late_refusal] if self.late_refusal else [])
        for late in lates:
            with pytest.raises(ValueError, match="nothing was written"):
                idx.add(x, ids, good[:-1] + [late], batch_size=100, progress=False)
            assert idx.store.count() == 0
        with pytest.raises(ValueError, match="integer"):
            idx.add(x[:2], [1.7, 2.0])
        assert idx.add(x, ids, good, batch_size=100, progress=False) == len(ids)
        assert idx.store.count() == len(ids)
        idx.close()

    def test_search_is_deterministic_and_equal_to_the_reference(
        self, make_store: MakeStore
    ) -> None:
        from ..index import HashIndex
        from ..stores.local import LocalStore

        x, ids, queries = tie_data()
        idx = self._index(make_store, "conf_ties", x)
        idx.add(x, ids, progress=False)
        ref = HashIndex(LocalStore(), idx.hasher)
        ref.add(x, ids, progress=False)
        for k, over, rerank in ((5, 3, True), (7, 1, False), (12, 2, True)):
            want = ref.search(queries, k, oversample=over, rerank=rerank).ids
            for _ in range(self.determinism_repeats):
                got = idx.search(queries, k, oversample=over, rerank=rerank).ids
                np.testing.assert_array_equal(got, want)
        idx.close()

    def test_search_arguments_are_checked_alike(self, make_store: MakeStore) -> None:
        x, ids, queries = tie_data(5, 4)
        idx = self._index(make_store, "conf_args", x)
        idx.add(x, ids, progress=False)
        for kw, msg in (
            ({"k": 0}, "k must be"),
            ({"k": 2.0}, "k must be"),
            ({"k": True}, "k must be"),
            ({"oversample": 2.5}, "oversample must be"),
            ({"oversample": 0}, "oversample must be"),
            ({"oversample": 10**9}, "at most"),
        ):
            with pytest.raises(ValueError, match=msg):
                idx.search(queries, **kw)
        res = idx.search(queries[:2], k=10**9)  # bounded by the collection, no MemoryError
        assert res.ids.shape == (2, len(ids)) and sorted(res.ids[0].tolist()) == sorted(ids)
        with pytest.raises(ValueError, match="integer"):
            idx.delete([1.7])
        assert len(idx) == len(ids)
        idx.close()


class PayloadConformance(ConformanceBase):
    """Every store: payload round trips and DESIGN.md's dict filters, hostile values included."""

    def test_payload_round_trip(self, store: Store) -> None:
        codes = random_codes(4, self.n_bits, seed=7)
        payloads = [
            {"color": "red", "rank": 3, "score": 0.25, "ok": True, "tags": ["a", "b"]},
            None,
            {"color": "blue", "rank": 0, "score": -1.5, "ok": False, "tags": []},
            {"color": "green", "rank": 9, "score": 2.0, "ok": True, "tags": ["z"]},
        ]
        store.upsert([1, 2, 3, 4], codes, payloads)
        assert store.get_payloads([4, 1, 2, 3]) == [payloads[3], payloads[0], None, payloads[2]]
        assert store.get_payloads([77]) == [None]

    def test_dict_filter(self, store: Store) -> None:
        ids, codes = self._fill(store, 60)
        got_i, got_d = store.search(codes[:3], 60, filter={"color": "red"})
        red = set(ids[::3].tolist())
        for row in got_i:
            valid = row[row >= 0]
            assert set(valid.tolist()) == red
            assert (row[len(red) :] == -1).all()
        got_i, _ = store.search(codes[:2], 5, filter={"color": "green", "rank": 4})
        assert got_i[:, 0].tolist() == [ids[4], ids[4]] and (got_i[:, 1:] == -1).all()

    def test_dict_filter_contract(self, make_store: MakeStore) -> None:
        s = make_store("conf_filters")
        s.open(make_meta(self.n_bits))
        failed = run_filter_cases(s)
        s.close()
        unexpected = {k: v for k, v in failed.items() if k not in self.known_filter_failures}
        fixed = set(self.known_filter_failures) - set(failed)
        assert not unexpected, f"{len(unexpected)} of {len(FILTER_CASES)} cases: {unexpected}"
        assert not fixed, f"cases listed as known failures now pass: {sorted(fixed)}"

    def test_hostile_filter_keys_never_escape(self, store: Store) -> None:
        ids, codes = self._fill(store, 12)
        for key in ("color OR 1=1", "color' OR '1'='1", 'color") or ("1', "a\nb", "$meta"):
            try:
                got, _ = store.search(codes[:1], 12, filter={key: "red"})
            except ValueError:
                continue  # refused with a clear error: fine
            assert (got == -1).all(), f"filter key {key!r} matched rows"

    def test_payload_round_trip_is_the_same_on_every_store(self, store: Store) -> None:
        payloads = [
            {"nested": {"a": [1, 2.5, "x", None, True], "b": {}}, "big": 2**62, "neg": -(2**62)},
            {"u": "ünï\n\t\x00 🙂", "f": 0.1, "empty": [], "zero": 0.0, "t": (1, 2)},
        ]
        codes = random_codes(2, self.n_bits, seed=8)
        store.upsert([1, 2], codes, payloads)
        want = [dict(payloads[0]), {**payloads[1], "t": [1, 2]}]
        assert store.get_payloads([1, 2]) == want
        bads: list[tuple[Any, str]] = [
            ({"x": float("nan")}, "finite"),
            ({"x": float("inf")}, "finite"),
            ({1: "a"}, "key"),
            ({"x": 2**64}, "int64"),
            ({"x": {1, 2}}, "JSON"),
            ({"x": b"bytes"}, "JSON"),
        ]
        for bad, msg in bads:
            with pytest.raises(ValueError, match=msg):
                store.upsert([3], codes[:1], [bad])
        assert store.count() == 2


class PersistenceConformance(ConformanceBase):
    """Stores with ``persistent``: a collection outlives the object that wrote it."""

    capability: ClassVar[str | None] = "persistent"

    def test_persists_across_close_and_reopen(self, make_store: MakeStore) -> None:
        s = make_store("conf_persist")
        self._require(s, "persistent", "PersistenceConformance")
        meta = make_meta(self.n_bits)
        s.open(meta)
        ids, codes = self._fill(s, 25)
        s.delete(ids[:5])
        s.close()
        t = make_store("conf_persist")
        t.open(meta)
        assert t.count() == 20
        np.testing.assert_array_equal(t.get_codes(ids[5:]), codes[5:])
        payload = t.get_payloads(ids[5:6])[0]
        assert payload is not None and payload["rank"] == 5
        t.close()


class ConcurrencyConformance(ConformanceBase):
    """Every store: searches from several threads at once give the serial results."""

    def test_concurrent_searches_match_serial(self, store: Store) -> None:
        ids, codes = self._fill(store)
        queries = [random_codes(4, self.n_bits, seed=s) for s in range(8)]
        serial = [store.search(q, 20) for q in queries]
        results: list[Any] = [None] * (len(queries) * 3)
        errors: list[BaseException] = []

        def work(slot: int) -> None:
            try:
                results[slot] = store.search(queries[slot % len(queries)], 20)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        for i, got in enumerate(results):
            want = serial[i % len(queries)]
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])


#: The mixins every store's tests compose.
REQUIRED_MIXINS: tuple[type[ConformanceBase], ...] = (
    CoreConformance,
    PayloadConformance,
    ConcurrencyConformance,
)
#: The mixins that go with a Store capability flag (their ``capability``).
CAPABILITY_MIXINS: tuple[type[ConformanceBase], ...] = (
    PersistenceConformance,
    RescoringConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
)


class StoreConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    RescoringConformance,
    CorrectionsConformance,
    CosineRescoringConformance,
):
    """Every mixin (kept for existing adapters).

    Tests of a capability the store does not declare are skipped.
    """

    compose_all: ClassVar[bool] = True
