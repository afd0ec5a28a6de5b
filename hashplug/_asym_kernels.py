"""Asymmetric kernels: per-query tables, the exact distance, the bounded heap, the pruned scans,
and the parallel kernels of asymmetric_distances / rerank / rerank_rows / exhaustive search.

The conventions (distance identity, ordering, padding) are those of :mod:`hashplug.rerank`,
which checks inputs and calls these kernels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from ._popcount import ctz64, popcount64

_BL = 64  # codes per vectorised block
_QMAX = 15  # 4 bit-planes of quantised weights
_BIG = np.int64(1) << np.int64(40)
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
    """Write the heap's entries in ascending (d, id, row) order to out_*[:size] (heap destroyed).

    Small heaps (the usual k) are insertion-sorted: cheaper than size sift-downs. The out_*
    arrays must not be the heap's own."""
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
# exact asymmetric scan of one query over rows [r0, r1)
# ------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _key_id(row, ids, rowmap, use_map):
    """(tie key, id) of scanned row ``row``: the key is ``rowmap[row]`` if use_map else ``row``;
    the id ``ids[key]``, or the key itself when ids is empty (row numbers as ids, no random read);
    a negative id marks padding."""
    rr = rowmap[row] if use_map else row
    return rr, (ids[rr] if ids.shape[0] else rr)


@_leaf
def _offer(cw, row, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax):
    """Score row ``row`` of cw exactly and offer it to the heap (key and id: _key_id; padding is
    skipped); returns (size, smax)."""
    rr, i = _key_id(row, ids, rowmap, use_map)
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
def _bounds(cw, r0, n, qwords, planes, smax, out):
    """out[j] = quantised weight S of (hard code XOR row r0+j), for j < n <= 64; returns the mask
    of the rows whose S <= smax (bit j: row r0+j)."""
    nw = cw.shape[1]
    msk = np.uint64(0)
    if nw == 1:
        flat = cw.reshape(cw.shape[0])[r0 : r0 + n]
        q = qwords[0]
        p0 = planes[0, 0]
        p1 = planes[0, 1]
        p2 = planes[0, 2]
        p3 = planes[0, 3]
        for j in range(n):
            s = _qsum(q ^ flat[j], p0, p1, p2, p3)
            out[j] = s
            msk |= np.uint64(s <= smax) << np.uint64(j)
        return msk
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
    for j in range(n):
        msk |= np.uint64(out[j] <= smax) << np.uint64(j)
    return msk


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
        msk = _bounds(cw, r, n, qwords, planes, smax, sblk)
        while msk:
            j = ctz64(msk)
            msk &= msk - np.uint64(1)
            if sblk[j] <= smax:  # smax may have dropped meanwhile
                size, smax = _offer(
                    cw, r + j, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
                )
        r += n
    return size


#: _exact_nib inlined (at Numba IR level) into the rerank scan's batch loop.
_exact_nib_in = njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)(_exact_nib.py_func)


@_leaf
def _offer_scored(dbuf, rows, ns, ids, rowmap, use_map, hd, hi, hr, size):
    """Offer rows[:ns], already scored dbuf[:ns], to the heap (keys and ids: _key_id)."""
    k = hd.shape[0]
    for u in range(ns):
        rr, i = _key_id(rows[u], ids, rowmap, use_map)
        if i >= 0 and (size < k or _beats(dbuf[u], i, rr, hd[0], hi[0], hr[0])):
            size = _heap_add(hd, hi, hr, size, dbuf[u], i, rr)  # (most survivors stop above)
    return size


@_leaf
def _rerank_scan(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, sblk, rbuf, dbuf
):
    """Exact top-k of the candidate rows [r0, r1) (keys and ids: _key_id); returns the
    heap size. Scratch: sblk, rbuf and dbuf of max(64, 2k) entries (see _rerank_scratch).

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
        msk = _bounds(cw, r, nb, qwords, planes, smax, sblk)
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
    """Top-k of query qi's candidates (rows qi*C .. of ccw) keeping each id once (its best
    (distance, position)); returns the heap size."""
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
    """Top-k of the codes at rows[:n] (negative rows skipped), scoring a row listed more than once
    only once; returns the heap size."""
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
    returns how many, or -1 (nothing read) if a row is past the matrix. Without padding it is a
    plain copy loop whose scattered loads overlap (prefetching did not help)."""
    nc = rows.shape[0]
    nw = cw.shape[1]
    lo = 0
    hi = -1
    for c in range(nc):
        lo = min(lo, rows[c])
        hi = max(hi, rows[c])
    if hi >= cw.shape[0]:
        return -1
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


@njit(cache=True, nogil=True)
def _rerank_scratch(nw, k):
    """Per-chunk scratch of the rerank kernels: query tables (nib, qwords, planes), the heap
    (hd, hi, hr) and drain buffer (tmp), and the buffers _rerank_scan needs at these sizes."""
    return (
        np.empty((16 * nw, 16), np.float64),
        np.empty(nw, np.uint64),
        np.empty((nw, 4), np.uint64),
        np.empty(k, np.float32),
        np.empty(k, np.int64),
        np.empty(k, np.int64),
        np.empty(k, np.int64),
        np.empty(_BL, np.int64),
        np.empty(max(_BL, 2 * k), np.int64),
        np.empty(max(_BL, 2 * k), np.float32),
    )


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
        nib, qwords, planes, hd, hi, hr, tmp, sbuf, rbuf, dbuf = _rerank_scratch(nw, k)
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
def _rerank_rows_kernel(probs, cand_rows, cw, ids, nbytes, k, n_chunks, out_d, out_i, dup, bad):
    """Like _rerank_kernel, but the candidates are rows of the code matrix: each query's rows are
    gathered into a small buffer first (dup flags a row repeated in the top-k; bad a row past the
    matrix, and that query is left unscored). ids: each row's id, or empty when the ids are the
    row numbers."""
    nq = probs.shape[0]
    nc = cand_rows.shape[1]
    nw = cw.shape[1]
    per = (nq + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        nib, qwords, planes, hd, hi, hr, tmp, sbuf, rbuf, dbuf = _rerank_scratch(nw, k)
        buf_w = np.empty((nc, nw), np.uint64)
        buf_r = np.empty(nc, np.int64)
        for qi in range(ch * per, min(nq, ch * per + per)):
            m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
            n = _gather_rows(cand_rows[qi], cw, buf_w, buf_r)
            if n < 0:
                bad[qi] = True
                continue
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
