"""LocalStore's inverted file (``ivf=``): the sub-linear coarse stage of issue 17."""

import numpy as np
import pytest

import hashplug
from hashplug.rerank import hamming_distances_fast
from hashplug.stores import LocalStore, open_store
from hashplug.stores._ivf import MIN_PER_LIST, CodeIVF, Lists, auto_nlist
from hashplug.testing import make_meta


@pytest.fixture(scope="module")
def hashed(fmnist):
    """64-bit codes of the real image embeddings, and hasher + queries."""
    h = hashplug.HashingBaseline(64, seed=0).fit(fmnist["db_x"])
    return h, fmnist["db_x"], fmnist["q_x"][:100]


def _store(codes, **opts):
    s = LocalStore(**opts)
    s.open(make_meta(codes.shape[1] * 8))
    s.upsert(np.arange(codes.shape[0]), codes)
    return s


def _recall(a, b):
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)]))


def test_all_lists_probed_gives_the_exhaustive_result(hashed):
    h, x, q = hashed
    codes = h.encode(x)
    qc = h.encode(q)
    ivf = _store(codes, ivf=16, nprobe=16)
    flat = _store(codes)
    a, b = ivf.search(qc, 50), flat.search(qc, 50)
    np.testing.assert_array_equal(a.distances, b.distances)
    for i in range(len(qc)):  # ties may come in another order: compare below the last distance
        below = b.distances[i] < b.distances[i, -1]
        assert set(a.ids[i][below]) == set(b.ids[i][below])
    assert ivf._lists is not None and ivf._ivf.nlist == 16


def test_default_probe_keeps_recall_and_scans_a_fraction(hashed):
    h, x, q = hashed
    idx_flat = hashplug.HashIndex(LocalStore(), h)
    idx_ivf = hashplug.HashIndex(LocalStore(ivf="auto"), h)
    for idx in (idx_flat, idx_ivf):
        idx.add(x, np.arange(len(x)))
    r_ivf = idx_ivf.search(q, 10)
    lists = idx_ivf.store._lists
    assert lists is not None and lists.ivf.nlist == auto_nlist(len(x))
    exact = idx_flat.search(q, 10)
    assert _recall(r_ivf.ids, exact.ids) >= 0.95  # nprobe="auto" aims at 0.95
    # the default probes scan a fraction of the rows
    sizes = np.diff(lists.offsets)
    nprobe = idx_ivf.store._probes(lists)
    assert idx_ivf.store.nprobe == "auto" and 8 <= nprobe < lists.ivf.nlist
    probes = lists.ivf.probe(h.encode(q), nprobe)
    assert sizes[probes].sum(axis=1).mean() < 0.5 * len(x)


def test_writes_after_training_join_and_leave_the_lists(hashed):
    h, x, q = hashed
    codes = h.encode(x)
    s = _store(codes[:20000], ivf=32, nprobe=4)
    s.search(codes[:1], 5)  # trains
    ivf = s._ivf
    s.delete(np.arange(100))
    s.upsert(np.arange(10**6, 10**6 + 100), codes[:100])  # the deleted codes, under new ids
    got = s.search(codes[:100], 1)
    assert s._ivf is ivf  # not retrained
    np.testing.assert_array_equal(got.distances[:, 0], 0)
    assert got.ids.min() >= 100  # deleted ids never come back
    assert s._lists.order.size == s.count() == 20000
    # an id upserted again with another code moves to that code's list
    s.upsert([10**6], codes[5000:5001])
    got = s.search(codes[5000:5001], 2)
    assert 10**6 in got.ids[0] and 5000 in got.ids[0]


def test_probes_widen_when_the_lists_hold_fewer_rows_than_the_limit(hashed):
    h, x, _ = hashed
    codes = h.encode(x[:5000])
    s = _store(codes, ivf=64, nprobe=1)
    got = s.search(codes[:3], 1000)
    assert (got.ids >= 0).all()  # a full limit, not one list's rows
    assert len(set(got.ids[0])) == 1000
    d = hamming_distances_fast(codes[:1], codes[got.ids[0]])[0]
    np.testing.assert_array_equal(d, got.distances[0])


def test_filters_and_small_collections_scan_exhaustively(hashed):
    h, x, _ = hashed
    codes = h.encode(x[:3000])
    pl = [{"even": i % 2 == 0} for i in range(3000)]
    s, flat = LocalStore(ivf=128), LocalStore()
    for st in (s, flat):
        st.open(make_meta(64))
        st.upsert(np.arange(3000), codes, pl)
    assert 3000 < MIN_PER_LIST * 128
    np.testing.assert_array_equal(s.search(codes[:5], 20).ids, flat.search(codes[:5], 20).ids)
    assert s._lists is None  # too few codes for 128 lists
    s.build_ivf(16)
    got = s.search(codes[:5], 20, filter={"even": True})
    np.testing.assert_array_equal(got.ids, flat.search(codes[:5], 20, filter={"even": True}).ids)


def test_corrections_follow_the_rows(hashed):
    h, x, _ = hashed
    codes = h.encode(x[:4000])
    corr = np.random.default_rng(0).standard_normal((4000, 2)).astype(np.float32)
    s = LocalStore(ivf=8, nprobe=2)
    s.open(make_meta(64))
    s.upsert(np.arange(4000), codes, corrections=corr)
    hits, got = s.search_with_corrections(codes[:4], 30)
    want, found = s.lookup_corrections(hits.ids.ravel())
    assert found.all()
    np.testing.assert_array_equal(got.reshape(-1, 2), want)
    np.testing.assert_array_equal(hits.codes.reshape(-1, 8), codes[hits.ids.ravel()])


def test_file_store_reuses_its_lists_after_reopen(hashed, tmp_path, monkeypatch):
    """A reopen loads the centroids and row lists: only rows written since are assigned."""
    h, x, _ = hashed
    codes = h.encode(x[:10500])
    uri = f"file://{tmp_path / 'c'}?ivf=32&nprobe=3"
    s = open_store(uri)
    s.open(make_meta(64))
    s.upsert(np.arange(10000), codes[:10000])
    before = s.search(codes[:10], 20)
    assert (tmp_path / "c" / "ivf.safetensors").exists()
    assigned: list[int] = []
    real_assign = CodeIVF.assign

    def counting(self, c):
        assigned.append(len(c))
        return real_assign(self, c)

    def no_fit(*a, **k):
        raise AssertionError("retrained")

    monkeypatch.setattr(CodeIVF, "assign", counting)
    monkeypatch.setattr(CodeIVF, "fit", no_fit)
    again = open_store(uri)
    again.open(make_meta(64))
    after = again.search(codes[:10], 20)
    assert again._ivf is not None and again.nprobe == 3
    np.testing.assert_array_equal(before.ids, after.ids)
    assert assigned == []  # nothing: the lists were loaded
    again.upsert(np.arange(10000, 10500), codes[10000:])
    assigned.clear()
    third = open_store(uri)
    third.search(codes[:10], 20)
    assert assigned == [500]  # the rows written since
    third.delete([3])
    assigned.clear()
    open_store(uri).search(codes[:10], 20)
    assert assigned == [10499]  # rows removed: all assigned again
    (tmp_path / "c" / "ivf.safetensors").write_bytes(b"damaged")
    monkeypatch.undo()
    got = open_store(uri).search(codes[10000:10001], 1)  # a damaged cache is retrained
    assert got.ids[0, 0] == 10000 and got.distances[0, 0] == 0


def test_bad_options_name_the_problem(hashed):
    with pytest.raises(ValueError, match="ivf must be"):
        LocalStore(ivf="many")
    with pytest.raises(ValueError, match="ivf must be"):
        LocalStore(ivf=0)
    with pytest.raises(ValueError, match="nprobe"):
        LocalStore(ivf=8, nprobe=0)
    with pytest.raises(ValueError, match="nprobe"):
        open_store("memory://?ivf=auto&nprobe=-1")
    h, x, _ = hashed
    s = _store(h.encode(x[:100]), ivf="auto")
    with pytest.raises(ValueError, match="at least 390 codes"):
        s.build_ivf(10)
    assert s.count() == 100  # nothing lost
    with pytest.raises(ValueError, match="at least"):
        CodeIVF.fit(h.encode(x[:100]), 10)


def test_auto_nlist_grows_with_the_collection():
    assert auto_nlist(10) == 0
    assert auto_nlist(1_000_000) == 16384
    assert auto_nlist(3_000_000) == 32768
    assert auto_nlist(10_000_000) == 65536
    assert auto_nlist(100_000_000) == 65536  # the cap
    assert auto_nlist(1000) <= 1000 // MIN_PER_LIST


def test_two_level_lists_above_1024(hashed):
    h, x, q = hashed
    base = h.encode(x)
    rng = np.random.default_rng(1)
    flips = np.packbits(rng.random((3 * len(base), 64)) < 0.05, axis=1)
    codes = np.tile(base, (3, 1)) ^ flips  # 60k distinct noisy copies
    ivf = CodeIVF.fit(codes, 1100)
    assert ivf.top.shape[0] == 33 and ivf.nlist == 33 * 34
    a = ivf.assign(codes[:2000])
    d_fine = hamming_distances_fast(codes[:2000], ivf.centroids)
    got = d_fine[np.arange(2000), a]
    top = np.argmin(hamming_distances_fast(codes[:2000], ivf.top), axis=1)
    in_top = d_fine.reshape(2000, ivf.top.shape[0], ivf.per_top)[np.arange(2000), top].min(axis=1)
    assert (got <= in_top).all()  # never worse than the nearest top's fine centroids
    assert np.mean(got == d_fine.min(axis=1)) > 0.9  # mostly the nearest of all
    # a probe starts with the query's own list (computed inside the probe kernel)
    np.testing.assert_array_equal(ivf.probe(codes[:2000], 4)[:, 0], a)
    s = _store(codes, ivf=1100, nprobe=ivf.nlist)
    flat = _store(codes)
    qc = h.encode(q)
    np.testing.assert_array_equal(s.search(qc, 20).distances, flat.search(qc, 20).distances)
    s.nprobe = 64
    got = s.search(qc, 20)
    assert _recall(got.ids, flat.search(qc, 20).ids) > 0.5


def test_concurrent_first_searches_train_once(hashed, monkeypatch):
    import threading

    h, x, _ = hashed
    codes = h.encode(x)
    s = _store(codes, ivf=64, nprobe=8)
    fits = []
    real_fit = CodeIVF.fit.__func__

    def counting_fit(cls, *a, **kw):
        fits.append(1)
        return real_fit(cls, *a, **kw)

    monkeypatch.setattr(CodeIVF, "fit", classmethod(counting_fit))
    out = [None] * 4

    def run(i):
        out[i] = s.search(codes[:20], 10).ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fits) == 1
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])


def test_appended_rows_join_a_tail_not_a_regrouping(hashed):
    """Writes between searches keep the grouped rows and search the new ones as a tail."""
    h, x, q = hashed
    codes, qc = h.encode(x), h.encode(q[:20])
    s = _store(codes[:12000], ivf=32, nprobe=4)
    s.search(qc, 5)  # trains and groups
    grouped = s._lists
    for lo in (12000, 12500, 13000):
        s.upsert(np.arange(lo, lo + 500), codes[lo : lo + 500])
        got = s.search(qc, 50)
    lists = s._lists
    assert lists.ids is grouped.ids and lists.tail_rows == 1500
    st = s._snapshot()  # the same distances as all rows grouped anew under these centroids
    fresh = Lists.make(s._ivf, st["ids"], st["codes"], s._ivf.assign(st["codes"]))
    np.testing.assert_array_equal(got.distances, fresh.select(qc, 50, 4)[1])
    got = s.search(codes[12000:13500], 1)  # written rows are found at distance 0
    np.testing.assert_array_equal(got.distances[:, 0], 0)
    s.upsert(np.arange(13500, 17000), codes[13500:17000])  # a tail past its limit is grouped in
    s.search(qc, 5)
    assert s._lists.tail is None and s._lists.order.size == 17000


def test_tune_nprobe_with_real_queries(hashed):
    """Real query codes choose the probes; bad calls name the problem."""
    h, x, q = hashed
    codes, qc = h.encode(x), h.encode(q)
    s = _store(codes, ivf=64, nprobe=2)
    p = s.tune_nprobe(qc[:50])
    assert s.nprobe == "auto" and s._probes(s._lists) == p and 8 <= p <= 64
    flat = _store(codes)
    assert _recall(s.search(qc[50:], 10).ids, flat.search(qc[50:], 10).ids) >= 0.9
    assert s.tune_nprobe(qc[:50], target=0.5) <= p
    with pytest.raises(ValueError, match="target"):
        s.tune_nprobe(qc, target=0)
    with pytest.raises(ValueError, match="ivf="):
        flat.tune_nprobe(qc)


@pytest.mark.parametrize("n_bytes", [12, 40])  # padded words; distances past 255 bits
def test_hits_carry_the_ids_and_codes_of_their_rows(n_bytes):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (50, n_bytes), dtype=np.uint8)
    flips = (rng.random((20000, n_bytes)) < 0.1) * rng.integers(0, 256, (20000, n_bytes))
    codes = base[rng.integers(0, 50, 20000)] ^ flips.astype(np.uint8)
    ivf = CodeIVF.fit(codes, 256)
    ids = 3 * np.arange(20000, dtype=np.int64)
    lists = Lists.make(ivf, ids, codes, ivf.assign(codes))
    q = codes[:20]
    pos, dist, hit_ids, hit_codes = lists.hits(q, 500, 256)  # every list: the exact top-500
    ref = np.sort(hamming_distances_fast(q, codes), axis=1)[:, :500]
    np.testing.assert_array_equal(dist, ref)
    rows = lists.rows(pos)
    np.testing.assert_array_equal(hit_ids, ids[rows])
    np.testing.assert_array_equal(hit_codes, codes[rows])
    np.testing.assert_array_equal(hamming_distances_fast(q[:1], hit_codes[0])[0], dist[0])
