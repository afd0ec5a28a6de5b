"""Rerank of given candidates: ``rerank`` and ``rerank_rows``.

``rerank`` gets the candidates' codes, ``rerank_rows`` row numbers into a code matrix (gathered
here); both with the duplicate-id fallback.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .asymmetric import _key_id
from .heap import _beats, _has_dup_ids, _heap_add, _heap_drain, _new_heap, _rerank_dedup
from .intrinsics import _BL, _leaf, ctz64
from .tables import (
    _BIG,
    _bounds,
    _byte_tables,
    _exact,
    _exact_nib,
    _exact_nib_in,
    _prep_query,
    _query_tables,
    _smax,
)

_TAB_MIN = 256  # codes scored per query from which byte tables beat nibble tables


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
    """Take the exact top-k of the candidate rows [r0, r1); return the heap size.

    Keys and ids: _key_id. Scratch: sblk, rbuf and dbuf of max(64, 2k) entries (see
    _rerank_scratch).

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
    flat = cw.reshape(cw.size)
    while r < r1:
        nb = min(_BL, r1 - r)
        msk, _ = _bounds(cw, flat, r, nb, qwords, planes, smax, sblk, False)
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


@_leaf
def _gather_rows(rows, cw, buf_w, buf_r):
    """Copy the codes of rows[:] into buf_w, their rows into buf_r; return how many.

    Negative rows are skipped; -1 (nothing read) if a row is past the matrix. Without padding it is
    a plain copy loop whose scattered loads overlap (prefetching did not help).
    """
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
    """Allocate the per-chunk scratch of the rerank kernels.

    Query tables (nib, qwords, planes), the heap (hd, hi, hr) and drain buffer (tmp), and the
    buffers _rerank_scan needs at these sizes.
    """
    nib, qwords, planes = _query_tables(nw)
    hd, hi, hr = _new_heap(k)
    return (
        nib,
        qwords,
        planes,
        hd,
        hi,
        hr,
        np.empty(k, np.int64),
        np.empty(_BL, np.int64),
        np.empty(max(_BL, 2 * k), np.int64),
        np.empty(max(_BL, 2 * k), np.float32),
    )


@njit(cache=True, nogil=True, parallel=True)
def _rerank_kernel(probs, cand_ids, ccw, nbytes, k, n_chunks, out_d, out_i, dup):
    """Take the top-k of each query's candidates (rows qi*C .. qi*C+C-1 of ccw).

    Flags in dup[qi] the queries whose top-k repeats an id (the caller redoes those with
    _rerank_dedup_kernel). Queries are split into n_chunks contiguous chunks, each with its own
    scratch buffers.
    """
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
    """Run _rerank_kernel where the candidates are rows of the code matrix.

    Each query's rows are gathered into a small buffer first (dup flags a row repeated in the top-k;
    bad a row past the matrix, and that query is left unscored). ids: each row's id, or empty when
    the ids are the row numbers.
    """
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


# ------------------------------------------------------------------------------------------------
# queries whose top-k repeats an id or a row
# ------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _dedup_candidates(cand_ids, ccw, qi, tab, nib, use_tab, qwords, m, hd, hi, hr):
    """Take the top-k of query qi's candidates keeping each id once; return the heap size.

    Rows qi*C .. of ccw; each id keeps its best (distance, position).
    """
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
    """Take the top-k of the codes at rows[:n]; return the heap size.

    Negative rows are skipped; a row listed more than once is scored only once.
    """
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


@njit(cache=True, nogil=True, parallel=True)
def _rerank_dedup_kernel(probs, cand_ids, ccw, cand_rows, cw, ids, nbytes, k, out_d, out_i):
    """Top-k keeping each id once, for the (rare) queries flagged by the kernels above.

    Candidates are rows of (cw, ids) when cand_rows has columns, else (cand_ids, ccw).
    """
    nq = probs.shape[0]
    by_rows = cand_rows.shape[1] > 0
    nc = cand_rows.shape[1] if by_rows else cand_ids.shape[1]
    nw = cw.shape[1] if by_rows else ccw.shape[1]
    use_tab = nc >= _TAB_MIN  # byte tables pay off only for many codes per query
    for qi in prange(nq):
        nib, qwords, planes = _query_tables(nw)
        m, _ = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        tab = np.empty((8 * nw if use_tab else 0, 256), np.float64)
        if use_tab:
            _byte_tables(nib, tab)
        hd, hi, hr = _new_heap(k)
        if by_rows:
            size = _dedup_rows(cand_rows[qi], nc, cw, ids, tab, nib, use_tab, qwords, m, hd, hi, hr)
        else:
            size = _dedup_candidates(cand_ids, ccw, qi, tab, nib, use_tab, qwords, m, hd, hi, hr)
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], np.empty(k, np.int64))
