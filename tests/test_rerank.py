"""hashplug.rerank: exactness against plain numpy, ordering/padding conventions, threads, errors."""

from __future__ import annotations

import importlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashplug.codes import hamming_distances

R = importlib.import_module("hashplug.rerank")  # the module; hashplug.rerank is the function

N_BITS = [8, 16, 24, 64, 72, 128, 192, 256]


# ------------------------------------------------------------------------------------------------
# plain numpy references
# ------------------------------------------------------------------------------------------------
def ref_asym(p: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """float64 sum_j |b_j - p_j| via np.unpackbits: (Q, N)."""
    bits = np.unpackbits(codes, axis=1).astype(np.float64)
    return np.abs(bits[None, :, :] - p.astype(np.float64)[:, None, :]).sum(axis=2)


def ref_order(dist: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best by (distance, id, position)."""
    return np.lexsort((np.arange(dist.size), ids, dist))[:k]


def ref_search(p, codes, k, ids=None):
    """Reference top-k (ids, float32 distances), padded with -1 / inf."""
    n = codes.shape[0]
    ids = np.arange(n) if ids is None else ids
    out_i = np.full((p.shape[0], k), -1, np.int64)
    out_d = np.full((p.shape[0], k), np.inf, np.float32)
    for q in range(p.shape[0]):  # one query at a time: (N, bits) float64, not (Q, N, bits)
        d32 = ref_asym(p[q : q + 1], codes)[0].astype(np.float32)
        o = ref_order(d32, ids, k)
        out_i[q, : o.size] = ids[o]
        out_d[q, : o.size] = d32[o]
    return out_i, out_d


def dyadic_probs(rng, q, n_bits):
    """Probabilities that are multiples of 1/8: every sum is exact, so ties are exact ties."""
    return (rng.integers(0, 9, (q, n_bits)) / 8).astype(np.float32)


def tie_codes(rng, n, n_bits, distinct=7):
    """Codes drawn from a few distinct values, so that many distances tie."""
    pool = rng.integers(0, 256, (distinct, n_bits // 8), dtype=np.uint8)
    return pool[rng.integers(0, distinct, n)]


@st.composite
def problems(draw):
    n_bits = draw(st.sampled_from(N_BITS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = draw(st.integers(0, 4))
    n = draw(st.integers(0, 300))
    k = draw(st.integers(1, 25))
    if draw(st.booleans()):
        codes = tie_codes(rng, n, n_bits, distinct=draw(st.integers(1, 9)))
    else:
        codes = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
    ids = None
    if draw(st.booleans()):
        ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    return dyadic_probs(rng, q, n_bits), codes, k, ids, rng


# ------------------------------------------------------------------------------------------------
# exactness
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", N_BITS)
def test_asymmetric_distances_match_numpy(n_bits, rng):
    p = rng.random((5, n_bits)).astype(np.float32)
    p[0, :4] = [0.0, 1.0, 0.5, 0.5]
    codes = rng.integers(0, 256, (257, n_bits // 8), dtype=np.uint8)
    d = R.asymmetric_distances(p, codes)
    assert d.dtype == np.float32 and d.shape == (5, 257)
    np.testing.assert_allclose(d, ref_asym(p, codes), rtol=1e-6, atol=1e-6)
    # float64 probabilities are accepted and give the same result
    np.testing.assert_array_equal(R.asymmetric_distances(p.astype(np.float64), codes), d)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_search_codes_exact_equals_reference(prob):
    p, codes, k, ids, _ = prob
    got_i, got_d = R.search_codes(p, codes, k, ids=ids)
    ref_i, ref_d = ref_search(p, codes, k, ids)
    assert got_i.shape == got_d.shape == (p.shape[0], k)
    assert got_i.dtype == np.int64 and got_d.dtype == np.float32
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_d, ref_d)


@pytest.mark.parametrize("n_bits", [128, 192, 256])
def test_search_exact_multiword_prefilter_keeps_every_neighbour(n_bits, rng):
    """Codes of 2, 3, 4 words are filtered by a one-popcount bound (bits of weight >= 4) before the full bound.

    Clustered codes (the cut-off falls fast, most rows filtered) and uniform ones with continuous
    probabilities (the cut-off close to the bulk: a bound too high drops true neighbours).
    """
    centres = rng.integers(0, 256, (20, n_bits // 8), dtype=np.uint8)
    flips = np.packbits(rng.random((6000, n_bits)) < 0.08, axis=1)
    clustered = centres[rng.integers(0, 20, 6000)] ^ flips
    p_near = np.clip(np.unpackbits(centres[:4], axis=1) + rng.normal(0, 0.3, (4, n_bits)), 0, 1)
    uniform = rng.integers(0, 256, (20_000, n_bits // 8), dtype=np.uint8)
    for codes, p in ((clustered, p_near), (uniform, rng.random((10, n_bits)))):
        p = p.astype(np.float32)
        got_i, got_d = R.search_codes(p, codes, 10)
        ref_i, ref_d = ref_search(p, codes, 10, None)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_d, ref_d)


@pytest.mark.parametrize("n_bits", [128, 256])
def test_search_exact_tuned_step_keeps_every_neighbour(n_bits, rng):
    """Multi-word queries quantise their weights with a tuned step that clamps the largest ones.

    One or a few weights far above the rest (clamped to 15 steps) and weights spread over the
    range, near the cut-off: a bound that overstated a clamped weight would drop a neighbour.
    """
    codes = rng.integers(0, 256, (20_000, n_bits // 8), dtype=np.uint8)
    codes[7000:7005] = codes[3]  # ties broken by id
    p = rng.uniform(0.2, 0.8, (6, n_bits))
    p[0, 5] = 0.0  # one outlier weight
    p[1, : n_bits // 8] = 1.0  # a block of large weights
    p[2] = np.unpackbits(codes[3])  # the duplicated code at distance 0, weights all 1
    p[2, ::3] = 0.5
    p = p.astype(np.float32)
    for k in (1, 10):
        got_i, got_d = R.search_codes(p, codes, k)
        ref_i, ref_d = ref_search(p, codes, k, None)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_d, ref_d)


@pytest.mark.parametrize("n_bits", [24, 64, 128])
def test_search_codes_random_probs_large(n_bits, rng):
    """Non-dyadic probabilities, enough codes for the pruned scan to matter."""
    n = 20000
    codes = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
    codes[5000:5010] = codes[17]  # duplicated codes with different ids
    p = rng.random((4, n_bits)).astype(np.float32)
    p[1] = np.where(rng.random(n_bits) < 0.5, 0.01, 0.99)  # a confident query
    own = R.asymmetric_distances(p, codes)
    np.testing.assert_allclose(own, ref_asym(p, codes), rtol=1e-6)
    for k in (1, 10, 100):
        got_i, got_d = R.search_codes(p, codes, k)
        for q in range(p.shape[0]):
            o = ref_order(own[q], np.arange(n), k)
            np.testing.assert_array_equal(got_i[q], o)
            np.testing.assert_array_equal(got_d[q], own[q, o])


def test_duplicate_codes_tie_to_smaller_id(rng):
    codes = np.repeat(rng.integers(0, 256, (1, 8), dtype=np.uint8), 6, axis=0)
    ids = np.array([50, 7, 30, 7, 2, 99])
    p = rng.random((1, 64)).astype(np.float32)
    got_i, got_d = R.search_codes(p, codes, 4, ids=ids)
    np.testing.assert_array_equal(got_i[0], [2, 7, 7, 30])
    assert np.all(got_d[0] == got_d[0, 0])
    got_i, _ = R.search_codes(p, codes, 3, ids=ids, candidates=4)
    np.testing.assert_array_equal(got_i[0], [2, 7, 7])


@pytest.mark.parametrize("n_bits", N_BITS)
def test_k_larger_than_n_pads_like_faiss(n_bits, rng):
    codes = rng.integers(0, 256, (3, n_bits // 8), dtype=np.uint8)
    p = rng.random((2, n_bits)).astype(np.float32)
    for kw in ({}, {"candidates": 2}, {"candidates": 50}):
        i, d = R.search_codes(p, codes, 5, **kw)
        nvalid = 2 if kw.get("candidates") == 2 else 3
        assert (i[:, :nvalid] >= 0).all() and (i[:, nvalid:] == -1).all()
        assert np.isfinite(d[:, :nvalid]).all() and np.isinf(d[:, nvalid:]).all()
        assert (np.diff(d[:, :nvalid], axis=1) >= 0).all()


def test_empty_inputs(rng):
    codes = rng.integers(0, 256, (10, 8), dtype=np.uint8)
    i, d = R.search_codes(np.zeros((0, 64), np.float32), codes, 3)
    assert i.shape == d.shape == (0, 3)
    i, d = R.search_codes(rng.random((2, 64)), np.zeros((0, 8), np.uint8), 3)
    assert (i == -1).all() and np.isinf(d).all() and i.shape == (2, 3)
    i, d = R.search_codes(rng.random((2, 64)), np.zeros((0, 8), np.uint8), 3, candidates=5)
    assert (i == -1).all() and np.isinf(d).all()
    assert R.asymmetric_distances(np.zeros((0, 64)), codes).shape == (0, 10)
    i, d = R.rerank(np.zeros((0, 64)), np.zeros((0, 4), np.int64), np.zeros((0, 4, 8), np.uint8), 2)
    assert i.shape == (0, 2)
    i, d = R.rerank(
        rng.random((2, 64)), np.zeros((2, 0), np.int64), np.zeros((2, 0, 8), np.uint8), 2
    )
    assert (i == -1).all() and np.isinf(d).all()
    r, h = R.hamming_topk(np.zeros((2, 8), np.uint8), np.zeros((0, 8), np.uint8), 3)
    assert (r == -1).all() and (h == R.HAMMING_PAD).all()


# ------------------------------------------------------------------------------------------------
# rerank of given candidates
# ------------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(problems(), st.integers(1, 300), st.booleans())
def test_rerank_equals_reference(prob, c, with_dups):
    p, codes, k, ids, rng = prob
    n = codes.shape[0]
    if n == 0:
        return
    ids = np.arange(n) if ids is None else ids
    if with_dups:
        rows = rng.integers(0, n, (p.shape[0], c))
    else:
        rows = np.argsort(rng.random((p.shape[0], n)), axis=1)[:, :c]  # distinct rows (c <= n)
    rows = np.where(rng.random(rows.shape) < 0.2, -1, rows)  # padding
    cand_ids = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    cand_codes = codes[np.maximum(rows, 0)]
    got_i, got_d = R.rerank(p, cand_ids, cand_codes, k)
    got_ri, got_rd = R.rerank_rows(p, rows, codes, k, ids=ids)
    d32 = ref_asym(p, codes).astype(np.float32)
    for q in range(p.shape[0]):
        valid = np.unique(rows[q][rows[q] >= 0])  # each row (hence each id) once
        o = valid[np.lexsort((valid, ids[valid], d32[q, valid]))][:k]
        m = o.size
        np.testing.assert_array_equal(got_i[q, :m], ids[o])
        np.testing.assert_array_equal(got_d[q, :m], d32[q, o])
        assert (got_i[q, m:] == -1).all() and np.isinf(got_d[q, m:]).all()
        np.testing.assert_array_equal(got_ri[q], got_i[q])
        np.testing.assert_array_equal(got_rd[q], got_d[q])


def test_rerank_duplicate_id_keeps_best_code(rng):
    p = np.full((1, 16), 0.9, np.float32)
    good = np.array([[255, 255]], np.uint8)  # distance 1.6
    bad = np.array([[0, 0]], np.uint8)  # distance 14.4
    cand_ids = np.array([[5, 5, 3, -1]])
    cand_codes = np.stack([bad, good, bad, good], axis=1)
    i, d = R.rerank(p, cand_ids, cand_codes, 3)
    np.testing.assert_array_equal(i[0], [5, 3, -1])
    np.testing.assert_allclose(d[0, :2], [1.6, 14.4], rtol=1e-6)
    assert np.isinf(d[0, 2])


def test_rerank_large_k(rng):
    """With k = C = 700, every candidate is scored in the first phase; distances bit-identical."""
    codes = rng.integers(0, 256, (3000, 9), dtype=np.uint8)
    p = rng.random((3, 72)).astype(np.float32)
    rows = np.stack([rng.permutation(3000)[:700] for _ in range(3)])
    i, d = R.rerank(p, rows, codes[rows], 700)
    own = R.asymmetric_distances(p, codes)
    for q in range(3):
        o = ref_order(own[q, rows[q]], rows[q], 700)
        np.testing.assert_array_equal(i[q], rows[q, o])
        np.testing.assert_array_equal(d[q], own[q, rows[q, o]])


@pytest.mark.parametrize("n_bits", [64, 128, 200])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_rerank_hamming_ordered_candidates_with_padding(n_bits, k, rng):
    """The realistic case the pruning is built for: each query's Hamming top-1000.

    Best first, with padding scattered through the lists; continuous probabilities (few ties).
    """
    codes = rng.integers(0, 256, (20_000, n_bits // 8), dtype=np.uint8)
    p = rng.random((20, n_bits)).astype(np.float32)
    rows, _ = R.hamming_topk(np.packbits(p > 0.5, axis=1), codes, 1000)
    rows[rng.random(rows.shape) < 0.05] = -1
    ids = rng.permutation(10**6)[:20_000]
    cand = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    got_i, got_d = R.rerank(p, cand, codes[np.maximum(rows, 0)], k)
    got_ri, got_rd = R.rerank_rows(p, rows, codes, k, ids=ids)
    got_ni, got_nd = R.rerank_rows(p, rows, codes, k)  # ids = row numbers
    own = R.asymmetric_distances(p, codes)
    for q in range(20):
        valid = rows[q][rows[q] >= 0]
        o = valid[ref_order(own[q, valid], ids[valid], k)]
        np.testing.assert_array_equal(got_i[q], ids[o])
        np.testing.assert_array_equal(got_d[q], own[q, o])
        np.testing.assert_array_equal(got_ri[q], ids[o])
        np.testing.assert_array_equal(got_rd[q], own[q, o])
        o2 = valid[ref_order(own[q, valid], valid, k)]
        np.testing.assert_array_equal(got_ni[q], o2)
        np.testing.assert_array_equal(got_nd[q], own[q, o2])
    row_of = np.zeros(10**6, np.int64)
    row_of[ids] = np.arange(20_000)
    ref = np.take_along_axis(ref_asym(p, codes), row_of[got_i], axis=1)  # float64 sums
    np.testing.assert_allclose(got_d, ref, rtol=1e-6)  # within about one float32 rounding


# ------------------------------------------------------------------------------------------------
# Hamming kernels and the two-stage search
# ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(1, 400))
def test_hamming_topk_and_two_stage_equal_reference(prob, c):
    p, codes, k, ids, _ = prob
    n = codes.shape[0]
    idv = np.arange(n) if ids is None else ids
    qc = np.packbits(p > 0.5, axis=1)
    h = hamming_distances(qc, codes)
    np.testing.assert_array_equal(R.hamming_distances_fast(qc, codes), h)
    rows, hd = R.hamming_topk(qc, codes, c, ids=ids)
    two_i, two_d = R.search_codes(p, codes, k, candidates=c, ids=ids)
    d32 = ref_asym(p, codes).astype(np.float32)
    for q in range(p.shape[0]):
        o = ref_order(h[q], idv, c)
        np.testing.assert_array_equal(rows[q, : o.size], o)
        np.testing.assert_array_equal(hd[q, : o.size], h[q, o])
        assert (rows[q, o.size :] == -1).all() and (hd[q, o.size :] == R.HAMMING_PAD).all()
        o2 = o[ref_order(d32[q, o], idv[o], k)]
        np.testing.assert_array_equal(two_i[q, : o2.size], idv[o2])
        np.testing.assert_array_equal(two_d[q, : o2.size], d32[q, o2])
        assert (two_i[q, o2.size :] == -1).all()


@pytest.mark.parametrize("n_bits", [64, 128])
@pytest.mark.parametrize("c", [10, 300, 5000])
def test_hamming_selection_paths_on_many_ties(n_bits, c, rng):
    """Both selection algorithms (one pass / histogram), sorted and shuffled ids, heavy ties."""
    codes = tie_codes(rng, 40000, n_bits, distinct=40)
    qc = rng.integers(0, 256, (2, n_bits // 8), dtype=np.uint8)
    h = hamming_distances(qc, codes)
    for ids in (None, rng.permutation(40000) * 7):
        idv = np.arange(40000) if ids is None else ids
        rows, hd = R.hamming_topk(qc, codes, c, ids=ids)
        for q in range(2):
            o = ref_order(h[q], idv, c)
            np.testing.assert_array_equal(rows[q], o)
            np.testing.assert_array_equal(hd[q], h[q, o])


def test_sharded_paths_match(monkeypatch, rng):
    """Fewer queries than threads: the codes are split into shards and merged; same results."""
    codes = tie_codes(rng, 5000, 64, distinct=300)
    ids = rng.permutation(5000) * 3
    p = dyadic_probs(rng, 2, 64)
    qc = np.packbits(p > 0.5, axis=1)
    plain = [
        R.search_codes(p, codes, 7, ids=ids),
        R.search_codes(p, codes, 7, ids=ids, candidates=600),
        R.hamming_topk(qc, codes, 600, ids=ids),
    ]
    monkeypatch.setattr(R, "_n_shards", lambda nq, n: 3)
    sharded = [
        R.search_codes(p, codes, 7, ids=ids),
        R.search_codes(p, codes, 7, ids=ids, candidates=600),
        R.hamming_topk(qc, codes, 600, ids=ids),
    ]
    for a, b in zip(plain, sharded, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("n_bits", [64, 128, 192, 256])
def test_query_groups_over_several_tiles_match_reference(monkeypatch, n_bits, rng):
    """The exact scan runs a group of queries over each tile of codes: same results for any group.

    Large groups over 2- or 4-word codes read a word-major copy of each tile.
    """
    from hashplug._kernels.asymmetric import _TILE_BYTES

    n = _TILE_BYTES // (n_bits // 8) * 3 // 2 + 37  # one and a half tiles, a ragged end
    codes = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
    p = rng.random((17, n_bits)).astype(np.float32)
    ref_i, ref_d = ref_search(p, codes, 10)
    for group in (1, 3, 7, 17):
        monkeypatch.setattr(R, "_query_group", lambda nq, n_shards, g=group: g)
        got_i, got_d = R.search_codes(p, codes, 10)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_d, ref_d)


@pytest.mark.parametrize("n_bits", [128, 256])
def test_word_major_scan_on_clustered_codes_matches_reference(monkeypatch, n_bits, rng):
    """Groups of 6 and 16 queries near clustered codes: the cut-off falls fast, most rows filtered."""
    centres = rng.integers(0, 256, (20, n_bits // 8), dtype=np.uint8)
    flips = np.packbits(rng.random((20_000, n_bits)) < 0.08, axis=1)
    codes = centres[rng.integers(0, 20, 20_000)] ^ flips
    near = centres[rng.integers(0, 20, 16)]
    p = np.clip(np.unpackbits(near, axis=1) + rng.normal(0, 0.3, (16, n_bits)), 0, 1)
    p = p.astype(np.float32)
    ref_i, ref_d = ref_search(p, codes, 10)
    for group in (6, 16):
        monkeypatch.setattr(R, "_query_group", lambda nq, n_shards, g=group: g)
        got_i, got_d = R.search_codes(p, codes, 10)
        np.testing.assert_array_equal(got_i, ref_i)
        np.testing.assert_array_equal(got_d, ref_d)


def test_transpose_tile_is_word_major(rng):
    from hashplug._kernels.tables import _transpose_tile

    cw = rng.integers(0, 2**62, (200, 4)).astype(np.uint64)
    tt = np.zeros((3, 4, 64), np.uint64)
    _transpose_tile(cw, 5, 2, tt)
    np.testing.assert_array_equal(tt[:2], cw[5:133].reshape(2, 64, 4).transpose(0, 2, 1))
    assert not tt[2].any()


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------
def test_deterministic_across_calls_and_thread_counts(monkeypatch, rng):
    monkeypatch.setattr(R, "_SERIAL_WORK", 0)  # small calls would otherwise run on one thread
    codes = tie_codes(rng, 70000, 64, distinct=5000)  # >= 2 shards for one query
    p = np.concatenate([dyadic_probs(rng, 3, 64), rng.random((3, 64)).astype(np.float32)])
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
            numba.set_num_threads(threads)
            for qs in (slice(None), slice(0, 1)):
                results.append(
                    (
                        R.search_codes(p[qs], codes, 10),
                        R.search_codes(p[qs], codes, 10, candidates=1000),
                        R.hamming_topk(np.packbits(p[qs] > 0.5, axis=1), codes, 50),
                    )
                )
    finally:
        numba.set_num_threads(before)
    for other in results[2:]:
        ref = results[0] if other[0][0].shape[0] == p.shape[0] else results[1]
        for a, b in zip(ref, other, strict=True):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
def test_input_errors(rng):
    codes = rng.integers(0, 256, (5, 8), dtype=np.uint8)
    p = rng.random((2, 64)).astype(np.float32)
    cases = [
        (lambda: R.search_codes(p, codes.astype(np.int64), 3), "uint8"),
        (lambda: R.search_codes(p[:, :56], codes, 3), "bits"),
        (lambda: R.search_codes(p[:, :60], codes, 3), "multiple of 8"),
        (lambda: R.search_codes(p[0], codes, 3), "2-D"),
        (lambda: R.search_codes(p.astype(np.int32), codes, 3), "float"),
        (lambda: R.search_codes(p, codes, 0), "positive int"),
        (lambda: R.search_codes(p, codes, -2), "positive int"),
        (lambda: R.search_codes(p, codes, True), "positive int"),
        (lambda: R.search_codes(p, codes, 2, candidates=0), "candidates"),
        (lambda: R.search_codes(np.where(p > 0.5, np.nan, p), codes, 2), "NaN"),
        (lambda: R.search_codes(p + 1.0, codes, 2), r"\[0, 1\]"),
        (lambda: R.search_codes(p - 1.0, codes, 2), r"\[0, 1\]"),
        (lambda: R.search_codes(p, codes, 2, ids=np.arange(4)), "ids"),
        (lambda: R.search_codes(p, codes, 2, ids=np.arange(5) - 1), "non-negative"),
        (lambda: R.search_codes(p, codes, 2, ids=np.arange(5.0)), "integer"),
        (lambda: R.asymmetric_distances(p, codes[:, :4]), "bits"),
        (lambda: R.rerank(p, np.zeros((2, 3), np.int64), np.zeros((2, 3, 4), np.uint8), 2), "bits"),
        (lambda: R.rerank(p, np.zeros((3, 3), np.int64), np.zeros((3, 3, 8), np.uint8), 2), "Q=2"),
        (
            lambda: R.rerank(p, np.zeros((2, 3), np.int64), np.zeros((2, 4, 8), np.uint8), 2),
            "match",
        ),
        (lambda: R.rerank(p, np.zeros((2, 3)), np.zeros((2, 3, 8), np.uint8), 2), "integer"),
        (lambda: R.rerank(p, np.zeros((2, 3), np.int64), np.zeros((2, 3, 8), np.int8), 2), "uint8"),
        (lambda: R.rerank_rows(p, np.full((2, 3), 5), codes, 2), "only 5 rows"),
        (lambda: R.rerank_rows(p, np.array([[0, 1, -1], [0, 99, 1]]), codes, 2), "row 99, but"),
        (lambda: R.rerank_rows(p, np.zeros((2, 1), np.int64), codes[:0], 2), "only 0 rows"),
        (lambda: R.hamming_topk(codes.astype(np.int8), codes, 2), "uint8"),
        (lambda: R.hamming_topk(codes[:, :4], codes, 2), "bytes"),
        (lambda: R.hamming_distances_fast(codes[:, :4], codes), "widths"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


def test_probs_from_logits():
    u = np.array([[-1e4, -3.0, 0.0, 3.0, 1e4, 20.0, -20.0, 0.1]], np.float64)
    p = R.probs_from_logits(u)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, 0.5 * (1 + np.tanh(u / 2)), atol=1e-7)
    assert (p >= 0).all() and (p <= 1).all()
    with pytest.raises(ValueError, match="numeric"):
        R.probs_from_logits(np.array([["a"]]))


def test_public_names_reexported():
    import hashplug

    assert hashplug.search_codes is R.search_codes
    assert hashplug.asymmetric_distances is R.asymmetric_distances
    assert hashplug.rerank_rows is R.rerank_rows


# ------------------------------------------------------------------------------------------------
# real codes: the two-stage search finds the exact top-10
# ------------------------------------------------------------------------------------------------
def test_two_stage_recall_on_real_codes(fmnist):
    x, qx = fmnist["db_x"], fmnist["q_x"][:300]
    mu = x.mean(axis=0)
    xc = x - mu
    cov = (xc.T @ xc).astype(np.float64) / len(x)
    _, vecs = np.linalg.eigh(cov)
    proj = vecs[:, ::-1][:, :64]
    rot, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))
    w = (proj @ rot).astype(np.float32)
    codes = np.packbits(xc @ w > 0, axis=1)
    probs = R.probs_from_logits((qx - mu) @ w)
    exact_i, exact_d = R.search_codes(probs, codes, 10)
    ref = ref_asym(probs, codes)
    np.testing.assert_allclose(exact_d, np.take_along_axis(ref, exact_i, 1), rtol=1e-6)
    np.testing.assert_allclose(exact_d[:, -1], np.sort(ref, axis=1)[:, 9], rtol=1e-6)
    two_i, _ = R.search_codes(probs, codes, 10, candidates=10000)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_i, two_i, strict=True)])
    assert recall >= 0.99, recall


def test_small_calls_run_serially_and_restore_the_thread_count(monkeypatch, rng):
    """Below _SERIAL_WORK comparisons a call runs on one thread (a busy pool can cost ms).

    The answers are the same and the caller's thread setting is left as it was.
    """
    codes = tie_codes(rng, 3000, 64, distinct=200)
    p = dyadic_probs(rng, 2, 64)
    seen = []
    real = R._n_shards
    monkeypatch.setattr(
        R, "_n_shards", lambda nq, n: seen.append(numba.get_num_threads()) or real(nq, n)
    )
    before = numba.get_num_threads()
    small = R.search_codes(p, codes, 5)
    assert seen[-1] == 1 and numba.get_num_threads() == before
    monkeypatch.setattr(R, "_SERIAL_WORK", 0)
    big = R.search_codes(p, codes, 5)
    assert seen[-1] == before
    np.testing.assert_array_equal(small[0], big[0])
    np.testing.assert_array_equal(small[1], big[1])


def test_default_row_ids_are_one_cached_read_only_array():
    """Searches without ids use a cached arange (no N ids written per call), same results."""
    a, b = R._row_ids(1000), R._row_ids(10)
    assert not a.flags.writeable and np.shares_memory(a, b)
    np.testing.assert_array_equal(b, np.arange(10))
    rng = np.random.default_rng(1)
    c = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    p = rng.random((4, 64), dtype=np.float32)
    for cand in (None, 300):
        got = R.search_codes(p, c, 10, candidates=cand)
        want = R.search_codes(p, c, 10, candidates=cand, ids=np.arange(3000))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_kernel_results_are_named_tuples(rng):
    from hashplug.results import RowHits, ScoredHits

    codes = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    p = rng.random((3, 64)).astype(np.float32)
    res = R.search_codes(p, codes, 4)
    assert isinstance(res, ScoredHits) and res.ids is res[0] and res.distances.dtype == np.float32
    ids, dist = R.search_codes(p, codes, 4, candidates=20)
    cand = np.tile(np.arange(50), (3, 1))
    again = R.rerank(p, cand, codes[cand], 4)
    assert isinstance(again, ScoredHits)
    np.testing.assert_array_equal(again.ids, res.ids)
    rows = R.rerank_rows(p, cand, codes, 4)
    assert isinstance(rows, ScoredHits) and rows.ids.shape == ids.shape == (3, 4)
    ham = R.hamming_topk(codes[:3], codes, 4)
    assert isinstance(ham, RowHits) and ham.rows is ham[0] and ham.distances.dtype == np.int32
    r, d = ham  # plain unpacking keeps working
    assert (r[:, 0] == np.arange(3)).all() and (d[:, 0] == 0).all()  # each code finds itself


def test_read_only_ids_are_checked_once_and_writable_ones_every_time():
    """A frozen id array is validated on first use only; writable arrays are always checked."""
    rng = np.random.default_rng(2)
    c = rng.integers(0, 256, (500, 8), dtype=np.uint8)
    p = rng.random((2, 64), dtype=np.float32)
    ids = np.arange(500, dtype=np.int64)[::-1].copy()
    ids.flags.writeable = False
    first = R.search_codes(p, c, 5, ids=ids)
    assert id(ids) in R._CHECKED_IDS and R._CHECKED_IDS[id(ids)][1] is False  # not sorted
    again = R.search_codes(p, c, 5, ids=ids)
    np.testing.assert_array_equal(first[0], again[0])
    bad = ids.copy()
    bad[3] = -5
    with pytest.raises(ValueError, match="non-negative"):
        R.search_codes(p, c, 5, ids=bad)  # writable: checked on every call
    key = id(ids)
    del ids, first, again
    import gc

    gc.collect()
    assert key not in R._CHECKED_IDS or R._CHECKED_IDS[key][0]() is None


def test_thread_pool_start_leaves_the_environment_as_it_was():
    """The kernels start Numba's pool with OMP_WAIT_POLICY=PASSIVE only around its start.

    They never override a policy the user set.
    """
    import os
    import subprocess
    import sys

    code = (
        "import os, numba, hashplug.rerank\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), numba.threading_layer())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    policy, layer = out.stdout.split()
    assert policy == "None" and layer in ("omp", "tbb", "workqueue")  # the pool is started
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    code = "import os, hashplug.rerank; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
