"""The nearest-neighbour (``scoring="cosine"``) estimator: exhaustive top-k and candidate rerank.

For query logits u and a code b (±1 code s = 2b - 1) with per-vector factors (c, e), the score is
``c * <u, s> + e`` and the distance ``-score`` (smaller is closer). ``<u, s> = -sum_j u_j +
sum_j b_j (2 u_j)`` is affine in the bits, so one byte table per query (n_bytes x 256 partial
sums of 2u) scores a code in n_bytes additions, like the asymmetric kernels; the per-vector scale c
rules out their additive lower bound, so every code is scored.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .heap import _heap_add, _heap_drain, _new_heap
from .intrinsics import _leaf


@_leaf
def _cos_table(u, tab):
    """Fill the byte table of u; return the constant -sum_j u_j.

    tab[i, v] = sum over the bits j set in byte value v of 2 u[8i + j'] (MSB first). Sums in
    float64.
    """
    k = 0.0
    for i in range(tab.shape[0]):
        tab[i, 0] = 0.0
        for t in range(7, -1, -1):  # lowest bit first: entries [bit, 2 bit) from [0, bit)
            w = 2.0 * np.float64(u[8 * i + t])
            k -= 0.5 * w
            bit = 1 << (7 - t)
            for v in range(bit):
                tab[i, bit + v] = tab[i, v] + w
    return k


@_leaf
def _cos_score(tab, k0, cw, row, c, e):
    """Return the float32 distance -(c * <u, s> + e) of code row ``row`` of cw.

    cw holds little-endian uint64 words; padding bytes hit zero table rows. Even bytes sum in s0,
    odd in s1, in ascending order.
    """
    s0 = k0
    s1 = 0.0
    for w in range(cw.shape[1]):
        x = cw[row, w]
        for b in range(0, 8, 2):
            s0 += tab[8 * w + b, np.int64((x >> np.uint64(8 * b)) & np.uint64(255))]
            s1 += tab[8 * w + b + 1, np.int64((x >> np.uint64(8 * b + 8)) & np.uint64(255))]
    return np.float32(-(np.float64(c) * (s0 + s1) + np.float64(e)))


@njit(cache=True, nogil=True)
def _query_table(u, nbytes, nw):
    """Return the byte table (8 nw, 256) of one query (rows past nbytes zero) and its constant."""
    tab = np.zeros((8 * nw, 256), np.float64)
    k0 = _cos_table(u, tab[:nbytes])
    return tab, k0


@njit(cache=True, nogil=True, parallel=True)
def _cos_search_kernel(u, cw, nbytes, corr, ids, k, out_d, out_i):
    """Exhaustive top-k by the estimator; out_* (Q, k) sorted ascending by (distance, id, row)."""
    nq = u.shape[0]
    for q in prange(nq):
        tab, k0 = _query_table(u[q], nbytes, cw.shape[1])
        hd, hi, hr = _new_heap(k)
        size = 0
        for row in range(cw.shape[0]):
            d = _cos_score(tab, k0, cw, row, corr[row, 0], corr[row, 1])
            if size < k or d <= hd[0]:  # fast path; the heap breaks ties by (id, row)
                size = _heap_add(hd, hi, hr, size, d, ids[row], row)
        out_r = np.empty(k, np.int64)
        _heap_drain(hd, hi, hr, size, out_d[q], out_i[q], out_r)


@njit(cache=True, nogil=True, parallel=True)
def _cos_rerank_kernel(u, cand_ids, ccw, nbytes, cand_corr, k, out_d, out_i):
    """Take the top-k of each query's candidates (Q, C), codes as words ccw (Q * C, W).

    Padding (id < 0) is skipped, an id listed twice is kept once with its best distance; ties by
    (id, position).
    """
    nq, nc = cand_ids.shape
    for q in prange(nq):
        tab, k0 = _query_table(u[q], nbytes, ccw.shape[1])
        d = np.empty(nc, np.float32)
        for j in range(nc):
            d[j] = _cos_score(tab, k0, ccw, q * nc + j, cand_corr[q, j, 0], cand_corr[q, j, 1])
        o1 = np.argsort(cand_ids[q], kind="mergesort")
        o2 = o1[np.argsort(d[o1], kind="mergesort")]  # by (distance, id, position)
        n = 0
        for t in range(nc):
            j = o2[t]
            i = cand_ids[q, j]
            if i < 0:
                continue
            seen = False
            for a in range(n):
                if out_i[q, a] == i:
                    seen = True
                    break
            if seen:
                continue
            out_d[q, n] = d[j]
            out_i[q, n] = i
            n += 1
            if n == k:
                break
