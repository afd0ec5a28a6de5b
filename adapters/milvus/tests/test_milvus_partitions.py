"""Milvus partitions through MilvusStore options.

Named partitions (``partition=``, created on demand; ``partitions=a,b`` to read several) and a partition key (``partition_key=FIELD``), on the
real Milvus 2.3.5 standalone server. Milvus Lite 2.5 has no partitions (its CreatePartition and
ShowPartitions RPCs answer UNIMPLEMENTED): the options are refused there, tested below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hashplug_milvus import MilvusStore

from hashplug.codes import hamming_distances
from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    PayloadConformance,
    PersistenceConformance,
    make_meta,
    random_codes,
)


def _ref(q: np.ndarray, codes: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    d = hamming_distances(q, codes)
    order = [np.lexsort((ids, row))[:k] for row in d]
    return np.array([ids[o] for o in order]), np.array([d[r][o] for r, o in enumerate(order)])


# -- options (no server) ----------------------------------------------------------------------------
def test_partition_options_from_the_uri() -> None:
    s = MilvusStore.from_uri("milvus://h:1/c?partition=a")
    assert s.partitions == ("a",) and s.partition_key is None
    s = MilvusStore.from_uri("milvus://h:1/c?partitions=a,b")
    assert s.partitions == ("a", "b")
    s = MilvusStore.from_uri("milvus://h:1/c?partition_key=tenant&num_partitions=16")
    assert s.partition_key is not None and s.partition_key.field == "tenant"
    assert s.partition_key.kind == "varchar" and s.num_partitions == 16
    s = MilvusStore.from_uri("milvus://h:1/c?partition_key=shop&partition_key_type=int64")
    assert s.partition_key is not None and s.partition_key.kind == "int64"
    assert MilvusStore("http://h:1", "c", partition=["x", "y"]).partitions == ("x", "y")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("milvus://h:1/c?partition=a-b", "invalid Milvus partition name"),
        ("milvus://h:1/c?partitions=a,,b", "invalid Milvus partition name"),
        ("milvus://h:1/c?partitions=a,a", "repeat"),
        ("milvus://h:1/c?partition=a&partitions=b", "not both"),
        ("milvus://h:1/c?num_partitions=4", "applies with partition_key"),
        ("milvus://h:1/c?partition_key=t&num_partitions=0", "num_partitions"),
        ("milvus://h:1/c?partition_key=t&partition_key_type=float", "partition_key_type"),
        ("milvus://h:1/c?partition_key=payload", "layout"),
        ("milvus://h:1/c?partition_key=code_w0", "layout"),
        ("milvus://h:1/c?partition_key=my%20key", "field name"),
        ("milvus://h:1/c?partition_key=t&partition=a", "exclude each other"),
        ("milvus+lite://./x.db/c?partition=a", "Milvus Lite has no partitions"),
        ("milvus+lite://./x.db/c?partition_key=t", "Milvus Lite has no partitions"),
    ],
)
def test_bad_partition_options(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MilvusStore.from_uri(uri)


# -- the server -------------------------------------------------------------------------------------
@pytest.fixture
def part_store(milvus_server: Any, fresh_name: Any, cleanup: list[Any]):
    """``make(suffix_options, name)``: stores on one fresh collection name per test."""
    name = fresh_name("p")

    def make(options: str = "", coll: str | None = None) -> MilvusStore:
        s = MilvusStore.from_uri(
            f"{milvus_server.store_uri(coll or name)}?consistency=Strong{options}"
        )
        cleanup.append(s)
        return s

    return make


def test_named_partitions_write_search_and_delete_apart(part_store: Any) -> None:
    meta = make_meta(64)
    a, b = part_store("&partition=a"), part_store("&partition=b")
    a.open(meta)
    b.open(meta)  # both partitions created on demand
    codes_a, codes_b = random_codes(300, 64, seed=1), random_codes(120, 64, seed=2)
    ids_a, ids_b = np.arange(300, dtype=np.int64), np.arange(200, 320, dtype=np.int64)
    a.upsert(ids_a, codes_a, [{"side": "a"}] * 300)
    b.upsert(ids_b, codes_b, [{"side": "b"}] * 120)  # ids 200..299 are in both partitions
    assert (a.count(), b.count()) == (300, 120)
    q = random_codes(4, 64, seed=3)
    for s, codes, ids in ((a, codes_a, ids_a), (b, codes_b, ids_b)):
        got_i, got_d = s.search(q, 30)
        np.testing.assert_array_equal(got_d, _ref(q, codes, ids, 30)[1])
        assert np.isin(got_i, ids).all()
    assert a.get_payloads([250]) == [{"side": "a"}] and b.get_payloads([250]) == [{"side": "b"}]

    both = part_store("&partitions=a,b")
    both.open(meta)
    # Milvus searches both partitions and merges; an id in both comes back once.
    got_i, got_d = both.search(q, 400)
    assert all(np.unique(r[r >= 0]).size == (r >= 0).sum() == 320 for r in got_i)
    # count(*) adds the partitions' rows up; iter_ids lists each id once
    assert both.count() == 420 and sum(x.size for x in both.iter_ids()) == 320
    with pytest.raises(ValueError, match="writes go to one partition"):
        both.upsert([1], random_codes(1, 64))

    b.delete(ids_b[:60])  # ids 200..259 leave b only
    assert (a.count(), b.count()) == (300, 60)
    assert a.lookup_codes([200])[1].all() and not b.lookup_codes([200])[1].any()

    unknown = part_store("&partitions=a,zz")
    with pytest.raises(ValueError, match=r"partitions \['zz'\] do not exist"):
        unknown.open(meta)
        unknown.search(q, 3)
    assert a.count() == 300  # nothing lost


def test_partition_key_prunes_by_payload_field(part_store: Any) -> None:
    meta = make_meta(64)
    s = part_store("&partition_key=tenant&num_partitions=8")
    s.open(meta)
    n = 600
    codes, ids = random_codes(n, 64, seed=4), np.arange(n, dtype=np.int64) * 3
    tenants = np.array(["acme", "globex", "initech"])[np.arange(n) % 3]
    s.upsert(ids, codes, [{"tenant": t, "i": int(i)} for t, i in zip(tenants, ids, strict=True)])
    s.upsert(ids[:50], codes[:50], [{"tenant": t} for t in tenants[:50]])  # replaced, not added
    assert s.count() == n
    q = random_codes(5, 64, seed=5)
    for flt, rows in (
        ({"tenant": "acme"}, tenants == "acme"),
        ({"tenant": ["globex", "initech", 7]}, tenants != "acme"),
        ('tenant == "initech"', tenants == "initech"),
    ):
        got_i, got_d = s.search(q, 40, filter=flt)
        np.testing.assert_array_equal(got_d, _ref(q, codes[rows], ids[rows], 40)[1])
        assert np.isin(got_i, ids[rows]).all()  # (which of several ties at the cut: Milvus')
    assert (s.search(q, 5, filter={"tenant": None})[0] == -1).all()
    assert (s.search(q, 5, filter={"tenant": 1})[0] == -1).all()  # a str key never equals 1
    assert s.get_payloads([3, 300]) == [{"tenant": "globex"}, {"tenant": "globex", "i": 300}]

    with pytest.raises(ValueError, match="has no 'tenant'"):
        s.upsert([10_000, 10_001], random_codes(2, 64), [{"tenant": "acme"}, {"x": 1}])
    with pytest.raises(ValueError, match="holds a str"):
        s.upsert([10_000], random_codes(1, 64), [{"tenant": 5}])
    assert s.count() == n  # nothing written by the refused batches

    again = part_store()  # no options: the key is read from the collection
    again.open(meta)
    again.upsert([9_999], random_codes(1, 64), [{"tenant": "acme"}])
    assert again.count() == n + 1
    with pytest.raises(ValueError, match="partition key 'tenant'"):
        part_store("&partition_key=region").open(meta)
    with pytest.raises(ValueError, match="partition= does not apply"):
        part_store("&partition=a").open(meta)
    with pytest.raises(ValueError, match="no partition key"):
        other = part_store("", coll=s.collection + "_plain")
        other.open(meta)
        part_store("&partition_key=tenant", coll=other.collection).open(meta)


def test_int64_partition_key(part_store: Any) -> None:
    s = part_store("&partition_key=shop&partition_key_type=int64&num_partitions=4")
    s.open(make_meta(64))
    codes, ids = random_codes(200, 64, seed=6), np.arange(200, dtype=np.int64)
    shop = ids % 5
    s.upsert(ids, codes, [{"shop": int(v)} for v in shop])
    q = random_codes(3, 64, seed=7)
    got_i, got_d = s.search(q, 20, filter={"shop": [2, "2", True]})
    np.testing.assert_array_equal(got_d, _ref(q, codes[shop == 2], ids[shop == 2], 20)[1])
    assert np.isin(got_i, ids[shop == 2]).all()
    with pytest.raises(ValueError, match="holds an int"):
        s.upsert([500], random_codes(1, 64), [{"shop": True}])


# -- the shared conformance suite, through one named partition -------------------------------------
def _factory(
    make: Callable[[str], MilvusStore], cleanup: list[Any]
) -> Iterator[Callable[[str], MilvusStore]]:
    def make_store(name: str) -> MilvusStore:
        s = make(name)
        cleanup.append(s)
        return s

    yield make_store


class TestServerPartitionConformance(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    """Every read and write of the store through ``?partition=part_1`` on the server."""

    late_refusal = {"t": "x" * 70_000}
    determinism_repeats = 2  # test_milvus_conformance repeats 10 times on the same server

    @pytest.fixture
    def make_store(self, milvus_server: Any, fresh_name: Any, cleanup: list[Any]):
        yield from _factory(
            lambda n: MilvusStore.from_uri(
                f"{milvus_server.store_uri(fresh_name(n))}?partition=part_1"
            ),
            cleanup,
        )
