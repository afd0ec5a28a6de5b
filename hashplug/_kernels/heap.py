"""Bounded max-heap on (distance, id, row), FAISS's Heap layer: the root is the worst kept entry.

Ties go to the smaller id, then the smaller row (candidate position), on every kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from .intrinsics import _leaf


def _empty_topk(nq: int, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Return the (distances inf float32, ids -1 int64) (nq, k) arrays a top-k kernel fills."""
    return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)


@njit(cache=True, nogil=True)
def _new_heap(k):
    """Return an empty heap of capacity k: (distances, ids, rows)."""
    return np.empty(k, np.float32), np.empty(k, np.int64), np.empty(k, np.int64)


@_leaf
def _worse(d1, i1, r1, d2, i2, r2):
    if d1 != d2:
        return d1 > d2
    if i1 != i2:
        return i1 > i2
    return r1 > r2


@_leaf
def _beats(d, i, r, d0, i0, r0):
    """(d, i, r) < (d0, i0, r0) lexicographically: scalars only, inlined into the hot loops."""
    return d < d0 or (d == d0 and (i < i0 or (i == i0 and r < r0)))


@_leaf
def _heap_add(hd, hi, hr, size, d, i, r):
    """Offer (d, i, r) to a heap of capacity len(hd) holding `size` entries; return the new size."""
    k = hd.shape[0]
    if size < k:
        pos = size
        while pos > 0:
            par = (pos - 1) >> 1
            if _worse(d, i, r, hd[par], hi[par], hr[par]):
                hd[pos] = hd[par]
                hi[pos] = hi[par]
                hr[pos] = hr[par]
                pos = par
            else:
                break
        hd[pos] = d
        hi[pos] = i
        hr[pos] = r
        return size + 1
    if not _beats(d, i, r, hd[0], hi[0], hr[0]):
        return size
    _sift_down(hd, hi, hr, k, d, i, r)
    return size


@_leaf
def _sift_down(hd, hi, hr, n, d, i, r):
    """Put (d, i, r) at the root of the heap hd[:n] and restore the heap property."""
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _worse(hd[c + 1], hi[c + 1], hr[c + 1], hd[c], hi[c], hr[c]):
            c += 1
        if _worse(hd[c], hi[c], hr[c], d, i, r):
            hd[pos] = hd[c]
            hi[pos] = hi[c]
            hr[pos] = hr[c]
            pos = c
        else:
            break
    hd[pos] = d
    hi[pos] = i
    hr[pos] = r


@_leaf
def _heap_drain(hd, hi, hr, size, out_d, out_i, out_r):
    """Write the heap's entries in ascending (d, id, row) order to out_*[:size] (heap destroyed).

    Small heaps (the usual k) are insertion-sorted: cheaper than size sift-downs. The out_*
    arrays must not be the heap's own.
    """
    if size <= 32:
        for a in range(size):
            d, i, r = hd[a], hi[a], hr[a]
            b = a
            while b > 0 and _worse(out_d[b - 1], out_i[b - 1], out_r[b - 1], d, i, r):
                out_d[b] = out_d[b - 1]
                out_i[b] = out_i[b - 1]
                out_r[b] = out_r[b - 1]
                b -= 1
            out_d[b] = d
            out_i[b] = i
            out_r[b] = r
        return
    n = size
    while n > 0:
        out_d[n - 1] = hd[0]
        out_i[n - 1] = hi[0]
        out_r[n - 1] = hr[0]
        n -= 1
        if n > 0:
            _sift_down(hd, hi, hr, n, hd[n], hi[n], hr[n])


# ------------------------------------------------------------------------------------------------
# merging per-shard lists, and the duplicate-id fallback
# ------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, parallel=True)
def _merge_kernel(in_d, in_i, in_r, out_d, out_i, out_r):
    """Merge per-shard sorted top-k lists (S, Q, k) into (Q, k) by (d, id, row)."""
    ns = in_d.shape[0]
    nq = in_d.shape[1]
    k = out_d.shape[1]
    for qi in prange(nq):
        hd, hi, hr = _new_heap(k)
        size = 0
        for s in range(ns):
            for j in range(in_d.shape[2]):
                if in_r[s, qi, j] < 0:
                    break
                size = _heap_add(hd, hi, hr, size, in_d[s, qi, j], in_i[s, qi, j], in_r[s, qi, j])
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], out_r[qi])


@njit(cache=True, nogil=True)
def _has_dup_ids(ids, n):
    if n < 2:
        return False
    if n <= 32:
        for a in range(n):
            for b in range(a + 1, n):
                if ids[a] == ids[b]:
                    return True
        return False
    s = np.sort(ids[:n])
    for a in range(1, n):
        if s[a] == s[a - 1]:
            return True
    return False


@njit(cache=True, nogil=True)
def _rerank_dedup(cand_d, cand_i, cand_r, n, hd, hi, hr):
    """Top-k of n candidates keeping each id once (its best (d, row)); returns the heap size."""
    order = np.argsort(cand_i[:n], kind="mergesort")
    size = 0
    a = 0
    while a < n:
        ia = cand_i[order[a]]
        best = order[a]
        b = a + 1
        while b < n and cand_i[order[b]] == ia:
            o = order[b]
            if _worse(cand_d[best], ia, cand_r[best], cand_d[o], ia, cand_r[o]):
                best = o
            b += 1
        size = _heap_add(hd, hi, hr, size, cand_d[best], ia, cand_r[best])
        a = b
    return size
