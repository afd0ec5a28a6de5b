"""HashIndex on LocalStore: the user's path from embeddings to reranked results."""

import numpy as np
import pytest

import hashplug
from hashplug import HasherMismatchError, HashIndex, HashingBaseline
from hashplug.bench.metrics import map_at_k


@pytest.fixture
def small(rng):
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    return x, HashingBaseline(16).fit(x)


def test_five_line_flow_and_quality_on_real_data(fmnist):
    x, q = fmnist["db_x"], fmnist["q_x"][:300]
    hasher = hashplug.HashingBaseline(64).fit(x)
    index = hashplug.HashIndex("memory://", hasher)
    index.add(x, ids=np.arange(len(x)))
    res = index.search(q, k=1000, oversample=10)
    assert res.ids.shape == (300, 1000) and res.distances.dtype == np.float32
    exact_ids, _ = hashplug.search_codes(hasher.query(q), hasher.encode(x), 1000)
    got = map_at_k(res.ids, fmnist["db_y"], fmnist["q_y"][:300])
    ref = map_at_k(exact_ids, fmnist["db_y"], fmnist["q_y"][:300])
    assert abs(got - ref) < 0.5, (got, ref)
    top10 = index.search(q, k=10)
    recall = np.mean(
        [np.intersect1d(a, b).size / 10 for a, b in zip(top10.ids, exact_ids[:, :10], strict=True)]
    )
    assert recall >= 0.97, recall  # misses are Hamming ties at the coarse cut-off


def test_rerank_orders_by_asymmetric_distance(small):
    x, h = small
    index = HashIndex("memory://", h)
    index.add(x, np.arange(len(x)) * 10)
    q = x[:7] + 0.1
    res = index.search(q, k=5, oversample=4)
    p = h.query(q)
    bits = np.unpackbits(h.encode(x), axis=1).astype(np.float64)
    for r in range(7):
        rows = res.ids[r] // 10
        ref = np.abs(bits[rows] - p[r]).sum(axis=1)
        np.testing.assert_allclose(res.distances[r], ref, rtol=1e-5)
        assert np.all(np.diff(res.distances[r]) >= 0)
    plain = index.search(q, k=5, rerank=False)
    ham = hashplug.codes.hamming_distances(np.packbits(h.logits(q) > 0, axis=1), h.encode(x))
    np.testing.assert_array_equal(plain.distances[:, 0], ham.min(axis=1))


def test_single_query_payloads_and_filter(small):
    x, h = small
    index = HashIndex("memory://", h)
    payloads = [{"half": int(i >= 1000), "i": int(i)} for i in range(len(x))]
    index.add(x, np.arange(len(x)), payloads)
    res = index.search(x[1500], k=3, with_payloads=True)
    assert res.ids.shape == (1, 3) and res.ids[0, 0] == 1500
    assert res.payloads[0][0] == {"half": 1, "i": 1500}
    res = index.search(x[:5], k=10, filter={"half": 1}, with_payloads=True)
    assert (res.ids >= 1000).all()
    assert all(p["half"] == 1 for row in res.payloads for p in row)
    ids, dist = index.search(x[:2], k=3)
    assert ids.shape == dist.shape == (2, 3)


def test_opening_with_another_hasher_names_both(small):
    x, h = small
    HashIndex("memory://mismatch-test", h).add(x[:10], np.arange(10))
    other = HashingBaseline(16, seed=1).fit(x)
    with pytest.raises(HasherMismatchError) as err:
        HashIndex("memory://mismatch-test", other)
    assert h.fingerprint in str(err.value) and other.fingerprint in str(err.value)
    assert len(HashIndex("memory://mismatch-test", h)) == 10


def test_bad_batch_writes_nothing(small):
    x, h = small
    index = HashIndex("memory://", h)
    bad = x.copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.add(bad, np.arange(len(x)), batch_size=100)
    assert len(index) == 0
    with pytest.raises(ValueError, match="dimension"):
        index.add(x[:, :10], np.arange(len(x)))
    with pytest.raises(ValueError, match="ids"):
        index.add(x, np.arange(5))
    with pytest.raises(ValueError, match="k must"):
        index.search(x[:1], k=0)
    with pytest.raises(ValueError, match="not fitted"):
        HashIndex("memory://", HashingBaseline(16))


def test_store_side_rescoring_is_refused_where_the_store_cannot(small):
    x, h = small
    index = HashIndex("memory://", h)
    index.add(x[:100], np.arange(100))
    with pytest.raises(ValueError, match="cannot rescore server-side"):
        index.search(x[:2], k=3, rescore="store")
    with pytest.raises(ValueError, match="cannot rescore server-side"):
        with pytest.warns(DeprecationWarning, match="rescore='store'"):
            index.search(x[:2], k=3, rescore="qdrant")
    with pytest.raises(ValueError, match="rescore must be"):
        index.search(x[:2], k=3, rescore="milvus")
    assert index.search(x[:2], k=3, rescore="local").ids.shape == (2, 3)
    with pytest.raises(ValueError, match="cannot rerank scoring='cosine' server-side"):
        index.search(x[:2], k=3, rescore="store", scoring="cosine")


def test_cli_search_never_creates_a_collection(tmp_path, capsys):
    import numpy as np

    from hashplug.cli import main
    from hashplug.hashers import HashingBaseline

    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    HashingBaseline(8).fit(x).save(tmp_path / "h.safetensors")
    np.save(tmp_path / "q.npy", x[:2])
    missing = tmp_path / "typo"
    rc = main(
        [
            "search",
            "--hasher",
            str(tmp_path / "h.safetensors"),
            "--store",
            f"file://{missing}",
            "--queries",
            str(tmp_path / "q.npy"),
        ]
    )
    assert rc == 2 and "no hashplug collection" in capsys.readouterr().err
    assert not missing.exists()


def test_default_oversample_grows_with_the_collection():
    from hashplug import default_oversample

    assert default_oversample(0, 10) == 10 and default_oversample(2_000, 10) == 10
    grows = [default_oversample(n, 10) for n in (10**5, 10**6, 10**7, 10**8)]
    assert grows == sorted(grows) and grows[0] > 10, grows
    assert default_oversample(10**8, 10) * 10 <= 16_384  # every engine's most candidates
    assert default_oversample(10**8, 5000) == 10  # never below the old fixed 10


def test_search_default_uses_the_rule_and_sees_new_rows(rng):
    x = rng.normal(size=(20_000, 32)).astype(np.float32)
    index = HashIndex("memory://", HashingBaseline(16).fit(x))
    index.add(x[:100], ids=np.arange(100))
    index.search(x[:2], k=5)  # caches the size (100)
    index.add(x[100:], ids=np.arange(100, 20_000))
    over = hashplug.default_oversample(20_000, 5)
    assert over > 10
    got = index.search(x[:20], k=5)
    want = index.search(x[:20], k=5, oversample=over)
    assert np.array_equal(got.ids, want.ids)
    narrow = index.search(x[:20], k=5, oversample=10)
    assert not np.array_equal(got.ids, narrow.ids)  # 50 vs 150 candidates
