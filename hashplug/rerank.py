"""Numba kernels: exact asymmetric distances, per-query rerank, exhaustive and two-stage search.

Distances
---------
For a query ``p`` (probabilities in [0, 1], one per bit) and a packed code ``b`` the asymmetric
distance is ``asym(b) = sum_j |b_j - p_j|`` (smaller is closer). With the query's own hard code
``h_j = [p_j > 0.5]``, ``|b_j - p_j| = min(p_j, 1 - p_j) + [b_j != h_j] * |1 - 2 p_j|``, so::

    asym(b) = M + sum over the bits set in (b XOR h) of a_j,   M = sum_j min(p_j, 1 - p_j),  a_j = |1 - 2 p_j|

Every kernel computes it the same way: the byte values of ``b XOR h`` (read as little-endian 64-bit
words) index float64 tables of partial sums of ``a`` — per byte ``hi-nibble sum + lo-nibble sum``,
either looked up from a 256-entry byte table or from the two 16-entry nibble tables it is built from
(same operands, same operations) — accumulated in a fixed order and rounded once to float32. So a
(query, code) pair gets the bit-identical float32 distance from :func:`asymmetric_distances`,
:func:`rerank`, :func:`rerank_rows` and :func:`search_codes`; it equals the float64 value of
``sum_j |b_j - p_j|`` to within about one float32 rounding (relative error < 1e-6).

Ordering and padding (the same everywhere)
-------------------------------------------
Results are sorted ascending by ``(distance, id)``: equal distances go to the smaller id (and, for
equal ids, to the earlier row / candidate position), so results are reproducible across calls,
thread counts and backends. Missing results are padded with id ``-1`` and distance ``+inf``
(Hamming kernels: row ``-1`` and distance ``HAMMING_PAD = int32 max``), as FAISS pads its results:
``k`` larger than the number of codes or of valid candidates is not an error.

Exhaustive search (``search_codes(..., candidates=None)``)
---------------------------------------------------------
:func:`search_codes` with ``candidates=None`` is exact: it never materialises the (Q, N) matrix.
Per query it scans the codes with a cheap integer lower bound — the weights ``a_j`` quantised down
to 4 bit-planes, ``LB = M + delta * sum_b 2^b popcount((b XOR h) & plane_b)`` (vectorised over blocks
of 64 codes) — and computes the exact distance only for codes whose bound does not exceed the
current k-th best distance (kept in a bounded max-heap). The bound is rigorous (with a safety margin
for rounding), so the result equals the brute-force top-k.

Two-stage search and Hamming top-k
----------------------------------
``search_codes(..., candidates=C)`` reproduces the database pipeline locally: the Hamming top-C of
the query's hard code (ties by smaller id), then the exact rerank of those C. The Hamming selection
is done inside the kernel (no argpartition): one pass with a falling integer threshold (C / N below
1/256), a sampled cut-off plus one collection pass (below 1/16), or a histogram pass then a
collection pass. The selected codes are copied while they are in cache, so the rerank (the same
bound-then-exact scan as above) reads them sequentially instead of gathering from the matrix.

Rerank of given candidates (``rerank``, ``rerank_rows``)
-------------------------------------------------------
Candidates usually arrive best first (a database's Hamming order). Per query the first 2k are
scored exactly and fill the heap; the rest are bounded 64 at a time (the same quantised bound) and
scored only where the bound can beat the heap's root. A block's survivors are all scored before
any is offered, so their sums do not wait on each other. ``rerank_rows`` first copies the
candidates' codes out of the matrix (scattered loads that overlap), then does the same.

Call costs: the per-code helpers are compiled without Numba's reference counting (they never
allocate); with it each call would atomically count every array argument up and down, which costs
more than the scoring itself. Scratch buffers are allocated once per chunk of queries.

Threads: kernels run over queries with ``numba.prange`` (over code shards as well when there are
fewer queries than threads) and honour ``numba.set_num_threads``; results do not depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from ._popcount import ctz64, popcount64
from ._validate import sigmoid

__all__ = [
    "HAMMING_PAD",
    "asymmetric_distances",
    "rerank",
    "rerank_rows",
    "search_codes",
    "hamming_topk",
    "hamming_distances_fast",
    "probs_from_logits",
]

#: Distance of padded slots in Hamming results (FAISS's convention: the int32 maximum).
HAMMING_PAD = int(np.iinfo(np.int32).max)

_BL = 64  # codes per vectorised block
_QMAX = 15  # 4 bit-planes of quantised weights
_BIG = np.int64(1) << np.int64(40)
_I64MIN = np.iinfo(np.int64).min
_MIN_SHARD = 32768  # do not split the codes of one query into shards smaller than this
_TAB_MIN = 256  # codes scored per query from which byte tables beat nibble tables

#: Decorator of the small helpers called per scored code: they never allocate, so they are
#: compiled without Numba's reference counting. With it, every call would increment and
#: decrement each array argument atomically, which costs ~30 ns: more than the work itself.
_NO_REFCOUNT: dict[str, Any] = {"_nrt": False}
_leaf = njit(cache=True, nogil=True, **_NO_REFCOUNT)


# ------------------------------------------------------------------------------------------------
# per-query preparation and the exact distance
# ------------------------------------------------------------------------------------------------
@_leaf
def _prep_query(p, nbytes, nib, qwords, planes):
    """Fill the tables of one query; return (M, delta).

    p (n_bits,) float32; nib (16*W, 16) float64 (rows past 2*nbytes are zero): nib[2i, v] / nib[2i+1, v] = sum of a_j over
    the bits of the high / low nibble value v of byte i (a_j = |1 - 2 p_j|, held in its
    single-bit entries); qwords (W,) uint64: the packed hard code as little-endian words, zero
    padded; planes (W, 4) uint64: bit-planes of the quantised weights floor(a_j / delta),
    delta = max(a) / 15.
    """
    n_bits = nbytes * 8
    m = 0.0
    amax = 0.0
    qwords[:] = 0
    nib[:, :] = 0.0
    for j in range(n_bits):  # branch-free: these bits are random
        pj = np.float64(p[j])
        aj = abs(1.0 - 2.0 * pj)
        m += min(pj, 1.0 - pj)
        amax = max(amax, aj)
        byte = j >> 3
        pos = (byte & 7) * 8 + (7 - (j & 7))  # bit of byte `byte` in its little-endian word
        qwords[byte >> 3] |= np.uint64(pj > 0.5) << np.uint64(pos)
        nib[j >> 2, 1 << (3 - (j & 3))] = aj
    for h in range(2 * nbytes):
        for v in range(3, 16):
            lo = v & -v
            if v != lo:  # several bits: their lowest one plus the rest
                nib[h, v] = nib[h, v ^ lo] + nib[h, lo]
    planes[:, :] = 0
    delta = amax / _QMAX
    if delta > 0.0:
        for j in range(n_bits):
            qa = int(nib[j >> 2, 1 << (3 - (j & 3))] / delta)
            if qa > _QMAX:
                qa = _QMAX
            byte = j >> 3
            pos = (byte & 7) * 8 + (7 - (j & 7))
            w = byte >> 3
            for b in range(4):
                planes[w, b] |= np.uint64((qa >> b) & 1) << np.uint64(pos)
    return m, delta


@_leaf
def _byte_tables(nib, tab):
    """tab[i, v] = nib[2i, v >> 4] + nib[2i+1, v & 15]: the byte table of the same sums."""
    for i in range(tab.shape[0]):
        lo = nib[2 * i + 1]
        for hv in range(16):
            h = nib[2 * i, hv]
            row = tab[i, 16 * hv : 16 * hv + 16]
            for lv in range(16):
                row[lv] = h + lo[lv]


@_leaf
def _exact(tab, qwords, cw, row, m):
    """float32(M + sum over bytes i of tab[i, byte i of (h XOR b)]) in a fixed order.

    Even bytes accumulate in s0, odd bytes in s1, each in ascending byte order; padding bytes add
    +0.0 (their table rows are zero), which leaves the sums unchanged.
    """
    s0 = 0.0
    s1 = 0.0
    for w in range(cw.shape[1]):
        x = qwords[w] ^ cw[row, w]
        for b in range(0, 8, 2):
            s0 += tab[8 * w + b, np.int64((x >> np.uint64(8 * b)) & np.uint64(255))]
            s1 += tab[8 * w + b + 1, np.int64((x >> np.uint64(8 * b + 8)) & np.uint64(255))]
    return np.float32((s0 + s1) + m)


@_leaf
def _exact_nib(nib, qwords, cw, row, m):
    """Bit-identical to _exact with tab = _byte_tables(nib): same operands, same order.

    Needs only the small nibble tables (cheap to build), for kernels that score few codes per query.
    """
    s0 = 0.0
    s1 = 0.0
    for w in range(cw.shape[1]):
        x = qwords[w] ^ cw[row, w]
        for b in range(0, 8, 2):
            i = 2 * (8 * w + b)
            y0 = np.int64((x >> np.uint64(8 * b)) & np.uint64(255))
            y1 = np.int64((x >> np.uint64(8 * b + 8)) & np.uint64(255))
            s0 += nib[i, y0 >> 4] + nib[i + 1, y0 & 15]
            s1 += nib[i + 2, y1 >> 4] + nib[i + 3, y1 & 15]
    return np.float32((s0 + s1) + m)


@_leaf
def _smax(tau, m, delta):
    """Largest quantised sum S whose lower bound M + delta*S may still reach float32 distance tau.

    Generous by construction (margins for float rounding): a code with S > _smax(...) has a float64
    distance > tau * (1 + 2^-22), hence a float32 distance > tau.
    """
    if delta <= 0.0 or not (tau < np.inf):
        return _BIG
    x = (np.float64(tau) * (1.0 + 2.0**-22) / (1.0 - 1e-9) - m) / delta
    if x < -2.0:
        return np.int64(-1)
    if x > 1e12:
        return _BIG
    return np.int64(math.floor(x)) + 1


# ------------------------------------------------------------------------------------------------
# bounded max-heap on (distance, id, row): the root is the worst kept entry
# ------------------------------------------------------------------------------------------------
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
    """Write the heap's entries in ascending (d, id, row) order to out_*[:size] (heap destroyed)."""
    n = size
    while n > 0:
        out_d[n - 1] = hd[0]
        out_i[n - 1] = hi[0]
        out_r[n - 1] = hr[0]
        n -= 1
        if n > 0:
            _sift_down(hd, hi, hr, n, hd[n], hi[n], hr[n])


# ------------------------------------------------------------------------------------------------
# exact asymmetric scan of one query over rows [r0, r1)
# ------------------------------------------------------------------------------------------------
@_leaf
def _offer(cw, row, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax):
    """Score row ``row`` of cw exactly and offer it to the heap; returns (size, smax).

    Its tie key is ``rr = rowmap[row]`` if use_map else ``row``; its id ``ids[rr]``, or ``rr``
    itself when ids is empty (row numbers as ids, without a random read); a negative id is padding.
    """
    rr = rowmap[row] if use_map else row
    i = ids[rr] if ids.shape[0] else rr
    if i < 0:
        return size, smax
    d = _exact_nib(nib, qwords, cw, row, m)
    k = hd.shape[0]
    if size < k or _beats(d, i, rr, hd[0], hi[0], hr[0]):
        size = _heap_add(hd, hi, hr, size, d, i, rr)
        if size == k:
            smax = _smax(hd[0], m, delta)
    return size, smax


@njit(cache=True, nogil=True, inline="always")
def _qsum(x, p0, p1, p2, p3):
    """Quantised weight of the bits set in x: sum_b 2^b popcount(x & plane_b) (scalars only)."""
    return (
        popcount64(x & p0)
        + 2 * popcount64(x & p1)
        + 4 * popcount64(x & p2)
        + 8 * popcount64(x & p3)
    )


@_leaf
def _asym_scan1(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
):
    """_asym_scan for one-word codes: the bound is computed for blocks of 64 codes (vectorised;
    the loop stays in this function: a call per block would double the exhaustive scan's time)."""
    smax = _BIG if size < hd.shape[0] else _smax(hd[0], m, delta)
    flat = cw.reshape(cw.shape[0])
    q = qwords[0]
    p0 = planes[0, 0]
    p1 = planes[0, 1]
    p2 = planes[0, 2]
    p3 = planes[0, 3]
    r = r0
    while r + _BL <= r1:
        blk = flat[r : r + _BL]
        msk = np.uint64(0)
        for j in range(_BL):
            s = _qsum(q ^ blk[j], p0, p1, p2, p3)
            sblk[j] = s
            msk |= np.uint64(s <= smax) << np.uint64(j)
        while msk:  # only the codes whose bound passed
            j = ctz64(msk)
            msk &= msk - np.uint64(1)
            if sblk[j] <= smax:  # smax may have dropped meanwhile
                size, smax = _offer(
                    cw, r + j, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
                )
        r += _BL
    for row in range(r, r1):
        if _qsum(q ^ flat[row], p0, p1, p2, p3) <= smax:
            size, smax = _offer(
                cw, row, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
            )
    return size


@_leaf
def _qsums(cw, r0, n, qwords, planes, out):
    """out[j] = quantised weight of (hard code XOR row r0+j) for j < n: the lower bounds' sums."""
    nw = cw.shape[1]
    if nw == 1:
        flat = cw.reshape(cw.shape[0])[r0 : r0 + n]
        q = qwords[0]
        p0 = planes[0, 0]
        p1 = planes[0, 1]
        p2 = planes[0, 2]
        p3 = planes[0, 3]
        for j in range(n):
            out[j] = _qsum(q ^ flat[j], p0, p1, p2, p3)
        return
    for j in range(n):
        out[j] = 0
    for w in range(nw):
        q = qwords[w]
        p0 = planes[w, 0]
        p1 = planes[w, 1]
        p2 = planes[w, 2]
        p3 = planes[w, 3]
        for j in range(n):
            out[j] += _qsum(q ^ cw[r0 + j, w], p0, p1, p2, p3)


@_leaf
def _asym_scan(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
):
    """Exact top-k scan of rows [r0, r1) into the heap (hd, hi, hr) holding `size`; returns size.

    Ids and tie keys as in :func:`_offer`. A code is scored exactly only when its quantised lower
    bound S can still beat the heap's root.
    """
    if cw.shape[1] == 1:
        return _asym_scan1(
            cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
        )
    smax = _BIG if size < hd.shape[0] else _smax(hd[0], m, delta)
    r = r0
    while r < r1:
        n = min(_BL, r1 - r)
        _qsums(cw, r, n, qwords, planes, sblk)
        for j in range(n):
            if sblk[j] <= smax:
                size, smax = _offer(
                    cw, r + j, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
                )
        r += n
    return size


#: _exact_nib inlined (at Numba IR level) into the rerank scan's batch loop.
_exact_nib_in = njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)(_exact_nib.py_func)


@_leaf
def _offer_scored(dbuf, rows, ns, ids, rowmap, use_map, hd, hi, hr, size):
    """Offer rows[:ns], already scored dbuf[:ns], to the heap (ids and tie keys as in _offer)."""
    for u in range(ns):
        rr = rowmap[rows[u]] if use_map else rows[u]
        i = ids[rr] if ids.shape[0] else rr
        if i >= 0:
            size = _heap_add(hd, hi, hr, size, dbuf[u], i, rr)
    return size


@_leaf
def _rerank_scan(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, sblk, rbuf, dbuf
):
    """Exact top-k of the candidate rows [r0, r1) (ids and tie keys as in _offer); returns the
    heap size. Scratch: sblk, rbuf and dbuf of max(64, 2k) entries.

    Candidates usually arrive best first (a database's Hamming order), so the first 2k are scored
    outright and set the heap's threshold; the rest are bounded 64 at a time and scored only where
    the bound can beat the threshold. A block's survivors are all scored before any is offered:
    their exact sums then run independently of each other (no wait on the heap between them).
    """
    k = hd.shape[0]
    k0 = min(r1 - r0, 2 * k)
    for u in range(k0):
        rbuf[u] = r0 + u
        dbuf[u] = _exact_nib_in(nib, qwords, cw, r0 + u, m)
    size = _offer_scored(dbuf, rbuf, k0, ids, rowmap, use_map, hd, hi, hr, 0)
    smax = _BIG if size < k else _smax(hd[0], m, delta)
    r = r0 + k0
    while r < r1:
        nb = min(_BL, r1 - r)
        _qsums(cw, r, nb, qwords, planes, sblk)
        msk = np.uint64(0)
        for j in range(nb):
            msk |= np.uint64(sblk[j] <= smax) << np.uint64(j)
        ns = 0
        while msk:
            j = ctz64(msk)
            msk &= msk - np.uint64(1)
            rbuf[ns] = r + j
            ns += 1
        for u in range(ns):
            dbuf[u] = _exact_nib_in(nib, qwords, cw, rbuf[u], m)
        size = _offer_scored(dbuf, rbuf, ns, ids, rowmap, use_map, hd, hi, hr, size)
        if size == k:
            smax = _smax(hd[0], m, delta)
        r += nb
    return size


@njit(cache=True, nogil=True, parallel=True)
def _search_exact_kernel(probs, cw, ids, nbytes, k, n_shards, out_d, out_i, out_r):
    """Exact asymmetric top-k of each (query, shard): out_*[shard, q, :k] sorted, padded."""
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    per = (n + n_shards - 1) // n_shards
    for u in prange(nq * n_shards):
        qi = u // n_shards
        sh = u % n_shards
        r0 = min(n, sh * per)
        r1 = min(n, r0 + per)
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        size = _asym_scan(
            cw,
            ids,
            np.empty(0, np.int64),
            False,
            r0,
            r1,
            nib,
            qwords,
            planes,
            m,
            delta,
            hd,
            hi,
            hr,
            0,
            np.empty(_BL, np.int64),
        )
        _heap_drain(hd, hi, hr, size, out_d[sh, qi], out_i[sh, qi], out_r[sh, qi])


@njit(cache=True, nogil=True, parallel=True)
def _merge_kernel(in_d, in_i, in_r, out_d, out_i, out_r):
    """Merge per-shard sorted top-k lists (S, Q, k) into (Q, k) by (d, id, row)."""
    ns = in_d.shape[0]
    nq = in_d.shape[1]
    k = out_d.shape[1]
    for qi in prange(nq):
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        size = 0
        for s in range(ns):
            for j in range(in_d.shape[2]):
                if in_r[s, qi, j] < 0:
                    break
                size = _heap_add(hd, hi, hr, size, in_d[s, qi, j], in_i[s, qi, j], in_r[s, qi, j])
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], out_r[qi])


# ------------------------------------------------------------------------------------------------
# asymmetric distance matrix and rerank of given candidates
# ------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, parallel=True)
def _asym_matrix_kernel(probs, cw, nbytes, n_blocks, out):
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    per = (n + n_blocks - 1) // n_blocks
    for u in prange(nq * n_blocks):
        qi = u // n_blocks
        r0 = min(n, (u % n_blocks) * per)
        r1 = min(n, r0 + per)
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        m, _ = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        tab = np.empty((8 * nw, 256), np.float64)
        _byte_tables(nib, tab)
        for row in range(r0, r1):
            out[qi, row] = _exact(tab, qwords, cw, row, m)


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


@njit(cache=True, nogil=True)
def _dedup_candidates(cand_ids, ccw, qi, tab, nib, use_tab, qwords, m, hd, hi, hr):
    """Like _topk_candidates, keeping each id once (its best (distance, position))."""
    nc = cand_ids.shape[1]
    cd = np.empty(nc, np.float32)
    ci = np.empty(nc, np.int64)
    cr = np.empty(nc, np.int64)
    nv = 0
    for c in range(nc):
        cid = cand_ids[qi, c]
        if cid >= 0:
            if use_tab:
                cd[nv] = _exact(tab, qwords, ccw, qi * nc + c, m)
            else:
                cd[nv] = _exact_nib(nib, qwords, ccw, qi * nc + c, m)
            ci[nv] = cid
            cr[nv] = c
            nv += 1
    return _rerank_dedup(cd, ci, cr, nv, hd, hi, hr)


@njit(cache=True, nogil=True)
def _dedup_rows(rows, n, cw, ids, tab, nib, use_tab, qwords, m, hd, hi, hr):
    """Like _topk_rows, scoring a row listed more than once only once."""
    s = np.sort(rows[:n])
    size = 0
    k = hd.shape[0]
    for c in range(n):
        row = s[c]
        if row < 0 or (c > 0 and row == s[c - 1]):
            continue
        if use_tab:
            d = _exact(tab, qwords, cw, row, m)
        else:
            d = _exact_nib(nib, qwords, cw, row, m)
        if size < k or d < hd[0] or (d == hd[0] and _beats(d, ids[row], row, hd[0], hi[0], hr[0])):
            size = _heap_add(hd, hi, hr, size, d, ids[row], row)
    return size


@_leaf
def _gather_rows(rows, cw, buf_w, buf_r):
    """Copy the codes of rows[:] (negative rows skipped) into buf_w, their rows into buf_r;
    returns how many. Without padding it is a plain copy loop whose scattered loads overlap
    (prefetching did not help)."""
    nc = rows.shape[0]
    nw = cw.shape[1]
    lo = 0
    for c in range(nc):
        lo = min(lo, rows[c])
    if lo == 0:
        if nw == 1:
            flat = cw.reshape(cw.shape[0])
            out = buf_w.reshape(buf_w.shape[0])
            for c in range(nc):
                out[c] = flat[rows[c]]
        else:
            for c in range(nc):
                for w in range(nw):
                    buf_w[c, w] = cw[rows[c], w]
        for c in range(nc):
            buf_r[c] = rows[c]
        return nc
    n = 0
    for c in range(nc):
        row = rows[c]
        if row >= 0:
            for w in range(nw):
                buf_w[n, w] = cw[row, w]
            buf_r[n] = row
            n += 1
    return n


@njit(cache=True, nogil=True, parallel=True)
def _rerank_kernel(probs, cand_ids, ccw, nbytes, k, n_chunks, out_d, out_i, dup):
    """Top-k of each query's candidates (rows qi*C .. qi*C+C-1 of ccw); flags in dup[qi] the
    queries whose top-k repeats an id (the caller redoes those with _rerank_dedup_kernel).
    Queries are split into n_chunks contiguous chunks, each with its own scratch buffers."""
    nq = probs.shape[0]
    nc = cand_ids.shape[1]
    nw = ccw.shape[1]
    flat_ids = cand_ids.reshape(cand_ids.size)
    per = (nq + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        tmp = np.empty(k, np.int64)
        sbuf = np.empty(_BL, np.int64)
        rbuf = np.empty(max(_BL, 2 * k), np.int64)
        dbuf = np.empty(max(_BL, 2 * k), np.float32)
        nomap = np.empty(0, np.int64)
        for qi in range(ch * per, min(nq, ch * per + per)):
            m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
            size = _rerank_scan(
                ccw, flat_ids, nomap, False, qi * nc, qi * nc + nc,
                nib, qwords, planes, m, delta, hd, hi, hr, sbuf, rbuf, dbuf,
            )  # fmt: skip
            dup[qi] = _has_dup_ids(hi, size)
            _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], tmp)


@njit(cache=True, nogil=True, parallel=True)
def _rerank_rows_kernel(probs, cand_rows, cw, ids, nbytes, k, n_chunks, out_d, out_i, dup):
    """Like _rerank_kernel, but the candidates are rows of the code matrix: each query's rows are
    gathered into a small buffer first (dup flags a row repeated in the top-k). ids: each row's
    id, or empty when the ids are the row numbers."""
    nq = probs.shape[0]
    nc = cand_rows.shape[1]
    nw = cw.shape[1]
    per = (nq + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        buf_w = np.empty((nc, nw), np.uint64)
        buf_r = np.empty(nc, np.int64)
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        tmp = np.empty(k, np.int64)
        sbuf = np.empty(_BL, np.int64)
        rbuf = np.empty(max(_BL, 2 * k), np.int64)
        dbuf = np.empty(max(_BL, 2 * k), np.float32)
        for qi in range(ch * per, min(nq, ch * per + per)):
            m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
            n = _gather_rows(cand_rows[qi], cw, buf_w, buf_r)
            size = _rerank_scan(
                buf_w, ids, buf_r, True, 0, n, nib, qwords, planes, m, delta, hd, hi, hr,
                sbuf, rbuf, dbuf,
            )  # fmt: skip
            dup[qi] = _has_dup_ids(hr, size)
            _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], tmp)


@njit(cache=True, nogil=True, parallel=True)
def _rerank_dedup_kernel(probs, cand_ids, ccw, cand_rows, cw, ids, nbytes, k, out_d, out_i):
    """Top-k keeping each id once, for the (rare) queries flagged by the kernels above.

    Candidates are rows of (cw, ids) when cand_rows has columns, else (cand_ids, ccw)."""
    nq = probs.shape[0]
    by_rows = cand_rows.shape[1] > 0
    nc = cand_rows.shape[1] if by_rows else cand_ids.shape[1]
    nw = cw.shape[1] if by_rows else ccw.shape[1]
    use_tab = nc >= _TAB_MIN  # byte tables pay off only for many codes per query
    for qi in prange(nq):
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        m, _ = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        tab = np.empty((8 * nw if use_tab else 0, 256), np.float64)
        if use_tab:
            _byte_tables(nib, tab)
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        if by_rows:
            size = _dedup_rows(cand_rows[qi], nc, cw, ids, tab, nib, use_tab, qwords, m, hd, hi, hr)
        else:
            size = _dedup_candidates(cand_ids, ccw, qi, tab, nib, use_tab, qwords, m, hd, hi, hr)
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], np.empty(k, np.int64))


# ------------------------------------------------------------------------------------------------
# symmetric Hamming: distance matrix, top-C selection (counting threshold), two-stage search
# ------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, parallel=True)
def _ham_matrix_kernel(aw, bw, n_blocks, out):
    na = aw.shape[0]
    n = bw.shape[0]
    nw = aw.shape[1]
    per = (n + n_blocks - 1) // n_blocks
    for u in prange(na * n_blocks):
        i = u // n_blocks
        r0 = min(n, (u % n_blocks) * per)
        r1 = min(n, r0 + per)
        if nw == 1:
            q = aw[i, 0]
            for r in range(r0, r1):
                out[i, r] = popcount64(q ^ bw[r, 0])
        else:
            for r in range(r0, r1):
                s = np.int64(0)
                for w in range(nw):
                    s += popcount64(aw[i, w] ^ bw[r, w])
                out[i, r] = s


@_leaf
def _tie_max(buf_r, buf_d, nb, t, ids):
    mx = _I64MIN
    for e in range(nb):
        if buf_d[e] == t:
            v = ids[buf_r[e]]
            if v > mx:
                mx = v
    return mx


@njit(cache=True, nogil=True)
def _ham_compact(buf_r, buf_d, buf_w, nb, t, cnt, le, c_keep, ids, ids_sorted):
    """Drop stale entries (d > t) and the surplus ties at d == t; keep buffer (row) order.

    Keeps every entry with d < t (fewer than c_keep of them) and the best (id, row) ties at t up to
    c_keep entries in all. Returns (nb, le).
    """
    below = le - cnt[t]
    need = c_keep - below
    o = 0
    if cnt[t] <= need:
        for e in range(nb):
            if buf_d[e] <= t:
                buf_r[o] = buf_r[e]
                for w in range(buf_w.shape[1]):
                    buf_w[o, w] = buf_w[e, w]
                buf_d[o] = buf_d[e]
                o += 1
        return o, le
    if ids_sorted:
        kept = 0
        for e in range(nb):
            de = buf_d[e]
            if de < t or (de == t and kept < need):
                if de == t:
                    kept += 1
                buf_r[o] = buf_r[e]
                for w in range(buf_w.shape[1]):
                    buf_w[o, w] = buf_w[e, w]
                buf_d[o] = de
                o += 1
    else:
        nt = cnt[t]
        tpos = np.empty(nt, np.int64)
        tids = np.empty(nt, np.int64)
        z = 0
        for e in range(nb):
            if buf_d[e] == t:
                tpos[z] = e
                tids[z] = ids[buf_r[e]]
                z += 1
        order = np.argsort(tids, kind="mergesort")
        keep = np.zeros(nb, np.bool_)
        for z in range(need):
            keep[tpos[order[z]]] = True
        for e in range(nb):
            de = buf_d[e]
            if de < t or (de == t and keep[e]):
                buf_r[o] = buf_r[e]
                for w in range(buf_w.shape[1]):
                    buf_w[o, w] = buf_w[e, w]
                buf_d[o] = de
                o += 1
    cnt[t] = need
    return o, below + need


@njit(cache=True, nogil=True)
def _ham_accept(row, d, cw, ids, ids_sorted, c_keep, buf_r, buf_d, buf_w, cnt, nb, le, t, tiemax):
    """Append (row, d) to the selection buffer and lower the threshold; returns the new state."""
    if nb == buf_r.shape[0]:
        nb, le = _ham_compact(buf_r, buf_d, buf_w, nb, t, cnt, le, c_keep, ids, ids_sorted)
        if not ids_sorted:
            tiemax = _tie_max(buf_r, buf_d, nb, t, ids)
    buf_r[nb] = row
    for w in range(cw.shape[1]):
        buf_w[nb, w] = cw[row, w]
    buf_d[nb] = d
    nb += 1
    cnt[d] += 1
    le += 1
    if le - cnt[t] >= c_keep:
        while le - cnt[t] >= c_keep:
            le -= cnt[t]
            cnt[t] = 0
            t -= 1
        if not ids_sorted:
            tiemax = _tie_max(buf_r, buf_d, nb, t, ids)
    return nb, le, t, tiemax


@njit(cache=True, nogil=True)
def _ham_select_online(
    cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
):
    """The c_keep best rows of [r0, r1) by (hamming, id, row), in row order in buf_*; returns count.

    One pass with a falling integer threshold t: a row is buffered only if it can still be in the
    result (d < t, or d == t with an id below the largest kept tie); the buffer (capacity > c_keep)
    is compacted when full. ``ids_sorted``: ids non-decreasing with the row, so ties need no sort.
    Best when c_keep is a small fraction of the rows (few rows pass the threshold).
    """
    nw = cw.shape[1]
    cnt[:] = 0
    t = np.int64(n_bits + 1)
    le = np.int64(0)
    tiemax = _I64MIN
    nb = np.int64(0)
    # rows with d < tl are examined further: tl = t when ids are sorted (a later tie never wins),
    # t + 1 otherwise (a tie wins when its id is below the largest kept tie id, tiemax)
    tie = np.int64(0) if ids_sorted else np.int64(1)
    tl = t + tie
    r = r0
    if nw == 1 and c_keep * _BL * 4 <= r1 - r0:
        flat = cw.reshape(cw.shape[0])
        q = qwords[0]
        dblk = np.empty(_BL, np.int64)
        while r + _BL <= r1:
            blk = flat[r : r + _BL]
            msk = np.uint64(0)
            for j in range(_BL):
                d = popcount64(q ^ blk[j])
                dblk[j] = d
                msk |= np.uint64(d < tl) << np.uint64(j)
            while msk:
                j = ctz64(msk)
                msk &= msk - np.uint64(1)
                d = dblk[j]
                if d < tl:
                    if d == t and ids[r + j] >= tiemax:
                        continue
                    nb, le, t, tiemax = _ham_accept(
                        r + j,
                        d,
                        cw,
                        ids,
                        ids_sorted,
                        c_keep,
                        buf_r,
                        buf_d,
                        buf_w,
                        cnt,
                        nb,
                        le,
                        t,
                        tiemax,
                    )
                    tl = t + tie
            r += _BL
    if nw == 1:
        flat = cw.reshape(cw.shape[0])
        q = qwords[0]
        sub = flat[r:r1]
        for j in range(sub.shape[0]):
            d = popcount64(q ^ sub[j])
            if d < tl:
                row = r + j
                if d == t and ids[row] >= tiemax:
                    continue
                nb, le, t, tiemax = _ham_accept(
                    row, d, cw, ids, ids_sorted, c_keep, buf_r, buf_d, buf_w, cnt, nb, le, t, tiemax
                )
                tl = t + tie
    else:
        for row in range(r, r1):
            d = np.int64(0)
            for w in range(nw):
                d += popcount64(qwords[w] ^ cw[row, w])
            if d < tl:
                if d == t and ids[row] >= tiemax:
                    continue
                nb, le, t, tiemax = _ham_accept(
                    row, d, cw, ids, ids_sorted, c_keep, buf_r, buf_d, buf_w, cnt, nb, le, t, tiemax
                )
                tl = t + tie
    if t > n_bits:
        return nb
    nb, le = _ham_compact(buf_r, buf_d, buf_w, nb, t, cnt, le, c_keep, ids, ids_sorted)
    return nb


@_leaf
def _ham_row(cw, row, qwords, nw):
    d = np.int64(0)
    for w in range(nw):
        d += popcount64(qwords[w] ^ cw[row, w])
    return d


@njit(cache=True, nogil=True)
def _ham_select_2pass(cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w):
    """Same result as _ham_select_online, by a histogram pass then a collection pass.

    Best when c_keep is a sizeable fraction of the rows. Output: the rows with d < t* in row order,
    then the kept ties at d == t* in (id, row) order.
    """
    nw = cw.shape[1]
    flat = cw.reshape(cw.shape[0] * nw)
    q = qwords[0]
    h = np.zeros((4, n_bits + 2), np.int64)
    if nw == 1:
        sub = flat[r0:r1]
        n = sub.shape[0]
        j = 0
        while j + 4 <= n:
            h[0, popcount64(q ^ sub[j])] += 1
            h[1, popcount64(q ^ sub[j + 1])] += 1
            h[2, popcount64(q ^ sub[j + 2])] += 1
            h[3, popcount64(q ^ sub[j + 3])] += 1
            j += 4
        while j < n:
            h[0, popcount64(q ^ sub[j])] += 1
            j += 1
    else:
        for row in range(r0, r1):
            h[row & 3, _ham_row(cw, row, qwords, nw)] += 1
    cnt = h[0] + h[1] + h[2] + h[3]
    tstar = np.int64(n_bits)
    below = np.int64(0)
    for d in range(n_bits + 1):
        if below + cnt[d] >= c_keep:
            tstar = d
            break
        below += cnt[d]
    need = min(cnt[tstar], c_keep - below)
    nt_all = cnt[tstar]
    trow = np.empty(0 if ids_sorted else nt_all, np.int64)
    nb = np.int64(0)
    taken = np.int64(0)
    nt = np.int64(0)
    tl = tstar + 1
    r = r0
    if nw == 1:
        dblk = np.empty(_BL, np.int64)
        while r + _BL <= r1:
            blk = flat[r : r + _BL]
            msk = np.uint64(0)
            for j in range(_BL):
                d = popcount64(q ^ blk[j])
                dblk[j] = d
                msk |= np.uint64(d < tl) << np.uint64(j)
            while msk:
                j = ctz64(msk)
                msk &= msk - np.uint64(1)
                d = dblk[j]
                if d < tstar:
                    buf_r[nb] = r + j
                    buf_w[nb, 0] = blk[j]  # one-word codes here
                    buf_d[nb] = d
                    nb += 1
                elif ids_sorted:
                    if taken < need:
                        buf_r[nb] = r + j
                        buf_w[nb, 0] = blk[j]  # one-word codes here
                        buf_d[nb] = d
                        nb += 1
                        taken += 1
                else:
                    trow[nt] = r + j
                    nt += 1
            r += _BL
    for row in range(r, r1):
        d = _ham_row(cw, row, qwords, nw)
        if d < tstar:
            buf_r[nb] = row
            for w in range(cw.shape[1]):
                buf_w[nb, w] = cw[row, w]
            buf_d[nb] = d
            nb += 1
        elif d == tstar:
            if ids_sorted:
                if taken < need:
                    buf_r[nb] = row
                    for w in range(cw.shape[1]):
                        buf_w[nb, w] = cw[row, w]
                    buf_d[nb] = d
                    nb += 1
                    taken += 1
            else:
                trow[nt] = row
                nt += 1
    if not ids_sorted and nt > 0:
        nb = _append_best_ties(trow, nt, need, cw, ids, tstar, buf_r, buf_d, buf_w, nb)
    return nb


@njit(cache=True, nogil=True)
def _append_best_ties(trow, nt, need, cw, ids, t, buf_r, buf_d, buf_w, nb):
    """Append the `need` tie rows (trow[:nt], row order) with the smallest (id, row)."""
    tids = np.empty(nt, np.int64)
    for z in range(nt):
        tids[z] = ids[trow[z]]
    order = np.argsort(tids, kind="mergesort")
    for z in range(need):
        buf_r[nb] = trow[order[z]]
        for w in range(cw.shape[1]):
            buf_w[nb, w] = cw[trow[order[z]], w]
        buf_d[nb] = t
        nb += 1
    return nb


@_leaf
def _sel_cap(c_keep):
    """Selection buffer capacity for c_keep results (room for the sampled path's surplus)."""
    return 4 * c_keep + 1024


@njit(cache=True, nogil=True)
def _ham_select_sampled(
    cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
):
    """_ham_select_2pass with the histogram pass replaced by a 1/16 sample; -1 if it must fall back.

    The sample gives a cut-off th expected to admit about 1.5 c_keep rows; one pass collects every
    row with d <= th (a vectorised bitmask per block of 64, then its set bits only), then the exact cut-off and ties
    are settled on the collected rows only. If fewer than c_keep rows qualify, or more than the
    buffer holds, returns -1 and the caller runs the exact two-pass selection.
    """
    nw = cw.shape[1]
    cap = buf_r.shape[0]
    step = 16
    cnt[:] = 0
    for row in range(r0, r1, step):
        cnt[_ham_row(cw, row, qwords, nw)] += 1
    target = (1.5 * c_keep + 64.0) / step
    acc = 0
    th = np.int64(n_bits)
    for d in range(n_bits + 1):
        acc += cnt[d]
        if acc >= target:
            th = d
            break
    nb = np.int64(0)
    r = r0
    if nw == 1:
        flat = cw.reshape(cw.shape[0])
        q = qwords[0]
        dblk = np.empty(_BL, np.int64)
        tl = th + 1
        while r + _BL <= r1:
            blk = flat[r : r + _BL]
            msk = np.uint64(0)
            for j in range(_BL):
                d = popcount64(q ^ blk[j])
                dblk[j] = d
                msk |= np.uint64(d < tl) << np.uint64(j)
            if msk:
                if nb + _BL > cap:
                    return -1
                while msk:
                    j = ctz64(msk)
                    msk &= msk - np.uint64(1)
                    buf_r[nb] = r + j
                    buf_w[nb, 0] = blk[j]  # one-word codes here
                    buf_d[nb] = dblk[j]
                    nb += 1
            r += _BL
    for row in range(r, r1):
        d = _ham_row(cw, row, qwords, nw)
        if d <= th:
            if nb == cap:
                return -1
            buf_r[nb] = row
            for w in range(cw.shape[1]):
                buf_w[nb, w] = cw[row, w]
            buf_d[nb] = d
            nb += 1
    cnt[:] = 0
    for e in range(nb):
        cnt[buf_d[e]] += 1
    if nb < c_keep:
        return nb if th >= n_bits else -1
    le = np.int64(0)
    t = np.int64(n_bits)
    for d in range(n_bits + 1):
        if le + cnt[d] >= c_keep:
            t = d
            le += cnt[d]
            break
        le += cnt[d]
    nb, le = _ham_compact(buf_r, buf_d, buf_w, nb, t, cnt, le, c_keep, ids, ids_sorted)
    return nb


@njit(cache=True, nogil=True)
def _ham_select(cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt):
    """The c_keep best rows of [r0, r1) by (hamming, id, row) into buf_* (unsorted); returns count.

    buf_* must hold _sel_cap(c_keep) entries and cnt n_bits + 2.
    """
    n = r1 - r0
    if c_keep * _BL * 4 <= n:
        return _ham_select_online(
            cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
        )
    if n >= 4096 and c_keep * 16 <= n:  # sparse enough for the sampled cut-off to pay off
        ns = _ham_select_sampled(
            cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
        )
        if ns >= 0:
            return ns
    return _ham_select_2pass(
        cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w
    )


@njit(cache=True, nogil=True, parallel=True)
def _ham_select_kernel(qw, cw, ids, ids_sorted, c_keep, n_bits, n_shards, sel_r, sel_d, sel_n):
    nq = qw.shape[0]
    n = cw.shape[0]
    per = (n + n_shards - 1) // n_shards
    cap = _sel_cap(c_keep)
    for u in prange(nq * n_shards):
        qi = u // n_shards
        sh = u % n_shards
        r0 = min(n, sh * per)
        r1 = min(n, r0 + per)
        buf_r = np.empty(cap, np.int64)
        buf_d = np.empty(cap, np.int64)
        buf_w = np.empty((cap, cw.shape[1]), np.uint64)
        cnt = np.empty(n_bits + 2, np.int64)
        ns = _ham_select(
            cw, ids, ids_sorted, r0, r1, qw[qi], c_keep, n_bits, buf_r, buf_d, buf_w, cnt
        )
        for e in range(ns):
            sel_r[sh, qi, e] = buf_r[e]
            sel_d[sh, qi, e] = buf_d[e]
        sel_n[sh, qi] = ns


@njit(cache=True, nogil=True)
def _sorted_topc(rows, ds, n, ids, ids_sorted, c_keep, n_bits, out_r, out_d):
    """Write the c_keep best of n (row, d) entries (given in row order) sorted by (d, id, row)."""
    cnt = np.zeros(n_bits + 2, np.int64)
    for e in range(n):
        cnt[ds[e]] += 1
    off = np.zeros(n_bits + 2, np.int64)
    for d in range(1, n_bits + 2):
        off[d] = off[d - 1] + cnt[d - 1]
    srt = np.empty(n, np.int64)
    pos = off.copy()
    for e in range(n):
        srt[pos[ds[e]]] = rows[e]
        pos[ds[e]] += 1
    o = 0
    for d in range(n_bits + 1):
        if o >= c_keep:
            break
        g0 = off[d]
        gn = cnt[d]
        if gn == 0:
            continue
        take = min(gn, c_keep - o)
        if ids_sorted or gn == 1:
            for z in range(take):
                out_r[o] = srt[g0 + z]
                out_d[o] = d
                o += 1
        else:
            gid = np.empty(gn, np.int64)
            for z in range(gn):
                gid[z] = ids[srt[g0 + z]]
            order = np.argsort(gid, kind="mergesort")
            for z in range(take):
                out_r[o] = srt[g0 + order[z]]
                out_d[o] = d
                o += 1
    return o


@njit(cache=True, nogil=True, parallel=True)
def _ham_merge_kernel(sel_r, sel_d, sel_n, ids, ids_sorted, c_keep, n_bits, out_r, out_d):
    ns = sel_r.shape[0]
    nq = sel_r.shape[1]
    for qi in prange(nq):
        tot = 0
        for s in range(ns):
            tot += sel_n[s, qi]
        rows = np.empty(tot, np.int64)
        ds = np.empty(tot, np.int64)
        z = 0
        for s in range(ns):
            for e in range(sel_n[s, qi]):
                rows[z] = sel_r[s, qi, e]
                ds[z] = sel_d[s, qi, e]
                z += 1
        _sorted_topc(rows, ds, tot, ids, ids_sorted, c_keep, n_bits, out_r[qi], out_d[qi])


@njit(cache=True, nogil=True, parallel=True)
def _two_stage_kernel(probs, cw, ids, scan_ids, ids_sorted, nbytes, c_keep, k, out_d, out_i):
    """Per query: Hamming top-c_keep of its hard code, then the exact asymmetric top-k of those.

    scan_ids: ids for the rerank (empty when the ids are the row numbers, see _offer)."""
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    n_bits = nbytes * 8
    cap = _sel_cap(c_keep)
    for qi in prange(nq):
        nib = np.empty((16 * nw, 16), np.float64)
        qwords = np.empty(nw, np.uint64)
        planes = np.empty((nw, 4), np.uint64)
        m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        buf_r = np.empty(cap, np.int64)
        buf_d = np.empty(cap, np.int64)
        buf_w = np.empty((cap, cw.shape[1]), np.uint64)
        cnt = np.empty(n_bits + 2, np.int64)
        ns = _ham_select(
            cw, ids, ids_sorted, 0, n, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
        )
        hd = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hr = np.empty(k, np.int64)
        # rerank the selected codes from the copies made during the scan (no random access),
        # with the same bound-then-exact scan as the exhaustive search
        size = _asym_scan(
            buf_w, scan_ids, buf_r, True, 0, ns, nib, qwords, planes, m, delta, hd, hi, hr, 0,
            np.empty(_BL, np.int64),
        )  # fmt: skip
        dummy = np.empty(k, np.int64)
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], dummy)


# ------------------------------------------------------------------------------------------------
# input checks and layout helpers
# ------------------------------------------------------------------------------------------------
def _check_k(k: Any, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"{what} must be a positive int, got {k!r}")
    return int(k)


def _check_probs(query_probs: ArrayLike) -> NDArray[np.float32]:
    p = np.asarray(query_probs)
    if p.dtype == object or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(
            f"query_probs must be a float32 or float64 array of probabilities, got dtype {p.dtype}"
        )
    if p.ndim != 2:
        hint = "; for one query use p.reshape(1, -1)" if p.ndim == 1 else ""
        raise ValueError(f"query_probs must be 2-D (Q, n_bits), got shape {p.shape}{hint}")
    if p.shape[1] == 0 or p.shape[1] % 8:
        raise ValueError(
            f"query_probs must have n_bits columns, a positive multiple of 8; got {p.shape[1]}"
        )
    p = np.ascontiguousarray(p, dtype=np.float32)
    if p.size:
        if np.isnan(p).any():
            rows = np.flatnonzero(np.isnan(p).any(axis=1))
            raise ValueError(
                f"query_probs contains NaN ({rows.size} rows, first: {rows[:5].tolist()})"
            )
        lo, hi = float(p.min()), float(p.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"query_probs must lie in [0, 1] (use probs_from_logits(logits)); got values in "
                f"[{lo:g}, {hi:g}]"
            )
    return p


def _check_codes(codes: ArrayLike, nbytes: int, what: str, ndim: int = 2) -> NDArray[np.uint8]:
    c = np.asarray(codes)
    if c.dtype != np.uint8:
        raise ValueError(f"{what} must be packed uint8 codes, got dtype {c.dtype}")
    if c.ndim != ndim:
        shape = "(N, n_bytes)" if ndim == 2 else "(Q, C, n_bytes)"
        raise ValueError(f"{what} must be {ndim}-D {shape}, got shape {c.shape}")
    if c.shape[-1] != nbytes:
        raise ValueError(
            f"{what} have {c.shape[-1]} bytes ({c.shape[-1] * 8} bits) per code, but query_probs "
            f"has {nbytes * 8} columns (n_bits), i.e. {nbytes} bytes"
        )
    return np.ascontiguousarray(c)


def _check_ids(ids: ArrayLike | None, n: int) -> tuple[NDArray[np.int64], bool]:
    """Row ids (default arange); returns (ids int64, whether they are non-decreasing)."""
    if ids is None:
        return np.arange(n, dtype=np.int64), True
    a = np.asarray(ids)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be an integer array, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) (one per code), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if n and a.min() < 0:
        raise ValueError("ids must be non-negative (-1 marks padding in results)")
    return a, bool(n < 2 or np.all(a[1:] >= a[:-1]))


def _check_id_matrix(a: ArrayLike, nq: int, what: str) -> NDArray[np.int64]:
    x = np.asarray(a)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what} must be an integer array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] != nq:
        raise ValueError(f"{what} must be 2-D (Q={nq}, C), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.int64)


def _words(c: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """(N, n_bytes) uint8 -> (N, W) uint64 words, zero padded to 8W bytes.

    A view when n_bytes is a multiple of 8 and the array is contiguous and 8-byte aligned. Words are
    little-endian (the kernels assume a little-endian host, as every supported platform is).
    """
    n, nbytes = c.shape
    nw = -(-nbytes // 8)
    if nbytes == 8 * nw and c.flags.c_contiguous and c.ctypes.data % 8 == 0:
        cb = c
    else:
        cb = np.zeros((n, 8 * nw), np.uint8)
        cb[:, :nbytes] = c
    return cb.view(np.uint64)


#: Below this many code comparisons a call runs on one thread: waking the pool costs more than
#: the work, and on a busy machine a parallel region can wait milliseconds for a thread.
_SERIAL_WORK = 1 << 19


@contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """Run the enclosed kernels single-threaded when ``work`` is small; results are unchanged."""
    prev = numba.get_num_threads()
    if work >= _SERIAL_WORK or prev == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def _n_shards(nq: int, n: int) -> int:
    """Split each query's scan over several threads only when there are fewer queries than threads."""
    t = numba.get_num_threads()
    if nq >= t or n < 2 * _MIN_SHARD:
        return 1
    return int(max(1, min(-(-t // nq), n // _MIN_SHARD)))


def _n_chunks(nq: int) -> int:
    """Chunks of queries for the per-query kernels: a few per thread, each with its own scratch."""
    return max(1, min(nq, 4 * numba.get_num_threads()))


def _padded(nq: int, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
def probs_from_logits(logits: ArrayLike) -> NDArray[np.float32]:
    """Stable float32 sigmoid: the query-side probabilities ``p = sigmoid(u)`` of hasher logits."""
    u = np.asarray(logits)
    if u.dtype == object or not (
        np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)
    ):
        raise ValueError(f"logits must be a numeric array, got dtype {u.dtype}")
    return sigmoid(np.asarray(u, dtype=np.float32))


def asymmetric_distances(query_probs: ArrayLike, codes: ArrayLike) -> NDArray[np.float32]:
    """Exact asymmetric distances ``sum_j |b_j - p_j|``: float32 (Q, N).

    ``query_probs``: (Q, n_bits) float32/float64 in [0, 1]; ``codes``: packed uint8 (N, n_bits // 8).
    Materialises the full matrix; for top-k use :func:`search_codes`.
    """
    p = _check_probs(query_probs)
    nbytes = p.shape[1] // 8
    c = _check_codes(codes, nbytes, "codes")
    nq, n = p.shape[0], c.shape[0]
    out = np.empty((nq, n), np.float32)
    if nq == 0 or n == 0:
        return out
    with _threads_for(nq * n):
        t = numba.get_num_threads()
        n_blocks = 1 if nq >= t else int(max(1, min(-(-t // nq), n // 4096)))
        _asym_matrix_kernel(p, _words(c), nbytes, n_blocks, out)
    return out


def rerank(
    query_probs: ArrayLike, candidate_ids: ArrayLike, candidate_codes: ArrayLike, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact asymmetric top-k of each query's own candidate list.

    ``candidate_ids`` (Q, C) int, ``candidate_codes`` (Q, C, n_bytes) uint8: row q holds query q's
    candidates (e.g. a database's coarse Hamming results). Negative ids (-1) are padding and ignored.
    Returns ``(ids int64 (Q, k), distances float32 (Q, k))`` ascending by (distance, id); when fewer
    than k valid candidates exist the rest is padded with id -1 and distance +inf. An id listed more
    than once in one row is returned once, with its smallest distance (its best code).
    """
    k = _check_k(k)
    p = _check_probs(query_probs)
    nq, nbytes = p.shape[0], p.shape[1] // 8
    ci = _check_id_matrix(candidate_ids, nq, "candidate_ids")
    cc = _check_codes(candidate_codes, nbytes, "candidate_codes", ndim=3)
    if cc.shape[:2] != ci.shape:
        raise ValueError(
            f"candidate_codes shape {cc.shape} does not match candidate_ids shape {ci.shape}"
        )
    out_i, out_d = _padded(nq, k)
    nc = ci.shape[1]
    if nq == 0 or nc == 0:
        return out_i, out_d
    kk = min(k, nc)
    d = np.full((nq, kk), np.inf, np.float32)
    i = np.full((nq, kk), -1, np.int64)
    ccw = _words(cc.reshape(nq * nc, nbytes))
    dup = np.zeros(nq, np.bool_)
    with _threads_for(nq * nc):
        _rerank_kernel(p, ci, ccw, nbytes, kk, _n_chunks(nq), d, i, dup)
        if dup.any():  # an id listed twice made it into the top-k: redo those with dedup
            q = np.flatnonzero(dup)
            ccw_q = ccw.reshape(nq, nc, -1)[q].reshape(q.size * nc, -1)
            no_rows = np.empty((q.size, 0), np.int64)
            no_ids = np.empty(0, np.int64)
            d[q], i[q] = _dedup_topk(p[q], ci[q], ccw_q, no_rows, ccw_q, no_ids, nbytes, kk)
    out_i[:, :kk] = i
    out_d[:, :kk] = d
    return out_i, out_d


def _rerank_rows_checked(
    p: NDArray[np.float32],
    rows: NDArray[np.int64],
    cw: NDArray[np.uint64],
    idv: NDArray[np.int64],
    scan_ids: NDArray[np.int64],
    nbytes: int,
    kk: int,
    d: NDArray[np.float32],
    i: NDArray[np.int64],
) -> None:
    dup = np.zeros(p.shape[0], np.bool_)
    _rerank_rows_kernel(p, rows, cw, scan_ids, nbytes, kk, _n_chunks(p.shape[0]), d, i, dup)
    if dup.any():  # a row listed twice made it into the top-k: redo those queries with dedup
        q = np.flatnonzero(dup)
        no_ids = np.empty((q.size, 0), np.int64)
        d[q], i[q] = _dedup_topk(p[q], no_ids, cw, rows[q], cw, idv, nbytes, kk)


def _dedup_topk(
    p: NDArray[np.float32],
    cand_ids: NDArray[np.int64],
    ccw: NDArray[np.uint64],
    cand_rows: NDArray[np.int64],
    cw: NDArray[np.uint64],
    ids: NDArray[np.int64],
    nbytes: int,
    kk: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    d = np.full((p.shape[0], kk), np.inf, np.float32)
    i = np.full((p.shape[0], kk), -1, np.int64)
    _rerank_dedup_kernel(p, cand_ids, ccw, cand_rows, cw, ids, nbytes, kk, d, i)
    return d, i


def rerank_rows(
    query_probs: ArrayLike,
    candidate_rows: ArrayLike,
    codes: ArrayLike,
    k: int,
    *,
    ids: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """:func:`rerank` with the gather fused: candidates are row numbers into a code matrix.

    ``candidate_rows`` (Q, C) int: rows of ``codes`` (N, n_bytes), -1 for padding; ``ids`` (N,)
    gives each row's id (default: the row number). Returns ids (not rows) and distances, ordered and
    padded as :func:`rerank`; a row listed twice for one query is returned once.
    """
    k = _check_k(k)
    p = _check_probs(query_probs)
    nq, nbytes = p.shape[0], p.shape[1] // 8
    c = _check_codes(codes, nbytes, "codes")
    rows = _check_id_matrix(candidate_rows, nq, "candidate_rows")
    n = c.shape[0]
    if rows.size and rows.max() >= n:
        raise ValueError(f"candidate_rows has row {int(rows.max())}, but codes has only {n} rows")
    idv, _ = _check_ids(ids, n)
    out_i, out_d = _padded(nq, k)
    nc = rows.shape[1]
    if nq == 0 or nc == 0 or n == 0:
        return out_i, out_d
    kk = min(k, nc)
    d = np.full((nq, kk), np.inf, np.float32)
    i = np.full((nq, kk), -1, np.int64)
    scan_ids = idv if ids is not None else np.empty(0, np.int64)
    with _threads_for(nq * nc):
        _rerank_rows_checked(p, rows, _words(c), idv, scan_ids, nbytes, kk, d, i)
    out_i[:, :kk] = i
    out_d[:, :kk] = d
    return out_i, out_d


def search_codes(
    query_probs: ArrayLike,
    codes: ArrayLike,
    k: int,
    *,
    candidates: int | None = None,
    ids: ArrayLike | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Asymmetric top-k over a code matrix, without materialising the (Q, N) distance matrix.

    ``candidates=None``: exact exhaustive top-k by ``sum_j |b_j - p_j|``.
    ``candidates=C``: two-stage search, the local reference of the database pipeline: symmetric
    Hamming top-C of the query's hard code ``p > 0.5`` (ties by smaller id), then the exact
    asymmetric rerank of those C. With C < k at most C results are valid.
    ``ids`` (N,) non-negative int: each row's id (default ``arange(N)``); returned ids are these.
    Returns ``(ids int64 (Q, k), distances float32 (Q, k))`` ascending by (distance, id); if k
    exceeds the number of codes the rest is padded with id -1 and distance +inf (as FAISS does).
    Multi-threaded over queries (and over the codes when Q < threads); honours
    ``numba.set_num_threads``.
    """
    k = _check_k(k)
    p = _check_probs(query_probs)
    n_bits = p.shape[1]
    nbytes = n_bits // 8
    c = _check_codes(codes, nbytes, "codes")
    c_keep = None if candidates is None else _check_k(candidates, "candidates")
    nq, n = p.shape[0], c.shape[0]
    idv, ids_sorted = _check_ids(ids, n)
    out_i, out_d = _padded(nq, k)
    if nq == 0 or n == 0:
        return out_i, out_d
    with _threads_for(nq * n):
        d, i = _search(p, _words(c), idv, ids is not None, ids_sorted, nbytes, n_bits, k, c_keep)
    kk = d.shape[1]
    out_i[:, :kk] = i
    out_d[:, :kk] = d
    return out_i, out_d


def _search(
    p: NDArray[np.float32],
    cw: NDArray[np.uint64],
    idv: NDArray[np.int64],
    ids_given: bool,
    ids_sorted: bool,
    nbytes: int,
    n_bits: int,
    k: int,
    c_keep: int | None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    nq, n = p.shape[0], cw.shape[0]
    n_shards = _n_shards(nq, n)
    scan_ids = idv if ids_given else np.empty(0, np.int64)
    if c_keep is None:
        kk = min(k, n)
        sd = np.full((n_shards, nq, kk), np.inf, np.float32)
        si = np.full((n_shards, nq, kk), -1, np.int64)
        sr = np.full((n_shards, nq, kk), -1, np.int64)
        _search_exact_kernel(p, cw, scan_ids, nbytes, kk, n_shards, sd, si, sr)
        if n_shards == 1:
            d, i = sd[0], si[0]
        else:
            d = np.full((nq, kk), np.inf, np.float32)
            i = np.full((nq, kk), -1, np.int64)
            _merge_kernel(sd, si, sr, d, i, np.full((nq, kk), -1, np.int64))
    else:
        c_keep = min(c_keep, n)
        kk = min(k, c_keep)
        d = np.full((nq, kk), np.inf, np.float32)
        i = np.full((nq, kk), -1, np.int64)
        if n_shards == 1:
            _two_stage_kernel(p, cw, idv, scan_ids, ids_sorted, nbytes, c_keep, kk, d, i)
        else:
            qw = _words(np.packbits(p > 0.5, axis=1))
            rows, _ = _hamming_select(qw, cw, idv, ids_sorted, c_keep, n_bits, n_shards)
            _rerank_rows_checked(p, rows, cw, idv, scan_ids, nbytes, kk, d, i)
    return d, i


def _hamming_select(
    qw: NDArray[np.uint64],
    cw: NDArray[np.uint64],
    idv: NDArray[np.int64],
    ids_sorted: bool,
    c_keep: int,
    n_bits: int,
    n_shards: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    nq = qw.shape[0]
    sel_r = np.full((n_shards, nq, c_keep), -1, np.int64)
    sel_d = np.zeros((n_shards, nq, c_keep), np.int64)
    sel_n = np.zeros((n_shards, nq), np.int64)
    _ham_select_kernel(qw, cw, idv, ids_sorted, c_keep, n_bits, n_shards, sel_r, sel_d, sel_n)
    rows = np.full((nq, c_keep), -1, np.int64)
    dist = np.full((nq, c_keep), HAMMING_PAD, np.int64)
    _ham_merge_kernel(sel_r, sel_d, sel_n, idv, ids_sorted, c_keep, n_bits, rows, dist)
    return rows, dist


def hamming_topk(
    query_codes: ArrayLike, codes: ArrayLike, k: int, *, ids: ArrayLike | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Symmetric Hamming top-k: ``(rows int64 (Q, k), distances int32 (Q, k))``.

    Returns ROW numbers into ``codes`` (not ids), ascending by (distance, id, row); ``ids`` (N,)
    only sets the tie order (default: the row number). Slots beyond N hold row -1 and distance
    ``HAMMING_PAD``. Selection is a one-pass counting threshold inside the kernel (no argpartition).
    """
    k = _check_k(k)
    q = np.asarray(query_codes)
    if q.dtype != np.uint8 or q.ndim != 2:
        raise ValueError(
            f"query_codes must be 2-D packed uint8 codes, got dtype {q.dtype} shape {q.shape}"
        )
    if q.shape[1] == 0:
        raise ValueError("query_codes must have at least one byte per code")
    nbytes = q.shape[1]
    c = _check_codes(codes, nbytes, "codes")
    nq, n = q.shape[0], c.shape[0]
    idv, ids_sorted = _check_ids(ids, n)
    out_r = np.full((nq, k), -1, np.int64)
    out_d = np.full((nq, k), HAMMING_PAD, np.int32)
    if nq == 0 or n == 0:
        return out_r, out_d
    qw = _words(np.ascontiguousarray(q))
    cw = _words(c)
    kk = min(k, n)
    with _threads_for(nq * n):
        n_shards = _n_shards(nq, n)
        step = max(1, (1 << 22) // (kk * n_shards))  # bound the per-call selection buffers
        for q0 in range(0, nq, step):
            rows, dist = _hamming_select(
                qw[q0 : q0 + step], cw, idv, ids_sorted, kk, nbytes * 8, n_shards
            )
            out_r[q0 : q0 + step, :kk] = rows
            out_d[q0 : q0 + step, :kk] = np.where(rows >= 0, dist, HAMMING_PAD)
    return out_r, out_d


def hamming_distances_fast(a: ArrayLike, b: ArrayLike) -> NDArray[np.int32]:
    """Symmetric Hamming distances between packed codes: int32 (na, nb), popcount over 64-bit words."""
    x = np.asarray(a)
    y = np.asarray(b)
    for name, arr in (("a", x), ("b", y)):
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D packed uint8 codes, got dtype {arr.dtype} shape {arr.shape}"
            )
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"code widths differ: {x.shape[1]} vs {y.shape[1]} bytes")
    out = np.zeros((x.shape[0], y.shape[0]), np.int32)
    if out.size == 0 or x.shape[1] == 0:
        return out
    aw = _words(np.ascontiguousarray(x))
    bw = _words(np.ascontiguousarray(y))
    with _threads_for(x.shape[0] * y.shape[0]):
        t = numba.get_num_threads()
        n_blocks = (
            1 if x.shape[0] >= t else int(max(1, min(-(-t // x.shape[0]), y.shape[0] // 4096)))
        )
        _ham_matrix_kernel(aw, bw, n_blocks, out)
    return out
