"""Exact asymmetric top-k scans: the exhaustive search and the (Q, N) distance matrix.

A code is scored exactly only when its quantised lower bound (:mod:`.tables`) can still beat the
heap's root (:mod:`.heap`). The same scan reranks the two-stage search's selected codes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .heap import _beats, _heap_add, _heap_drain
from .intrinsics import _BL, _NO_REFCOUNT, _leaf, _split, ctz64
from .tables import (
    _BIG,
    _bound_block,
    _bounds,
    _byte_tables,
    _exact,
    _exact_nib,
    _hi_t2,
    _hi_t4,
    _prep_query,
    _qrow,
    _qrow_t,
    _qsum,
    _query_tables,
    _smax,
    _transpose_tile,
    _tune_planes,
)

_ONE_MAX = 8  # rows of a block passing the one-popcount filter before the two-plane one takes over
_CHUNK = 8  # blocks of a word-major tile pre-filtered before their rows are scored (at most _BL)


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _key_id(row, ids, rowmap, use_map):
    """Return (tie key, id) of scanned row ``row``.

    The key is ``rowmap[row]`` if use_map else ``row``; the id ``ids[key]``, or the key itself when
    ids is empty (row numbers as ids, no random read); a negative id marks padding.
    """
    rr = rowmap[row] if use_map else row
    return rr, (ids[rr] if ids.shape[0] else rr)


@_leaf
def _offer(cw, row, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax):
    """Score row ``row`` of cw exactly and offer it to the heap; return (size, smax).

    Key and id: _key_id; padding is skipped.
    """
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


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _offer_passed(
    msk, sblk, r, cw, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
):
    """Offer the rows r + j of a block whose bit j is set in msk; return (size, smax).

    Their bound sblk[j] passed; those the falling smax has since excluded are skipped.
    """
    while msk:
        j = ctz64(msk)
        msk &= msk - np.uint64(1)
        if sblk[j] <= smax:  # smax may have dropped meanwhile
            size, smax = _offer(
                cw, r + j, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
            )
    return size, smax


@_leaf
def _asym_scan1(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
):
    """Run _asym_scan for one-word codes.

    The bound is computed for blocks of 64 codes (vectorised, by _bound_block inlined here).
    """
    smax = _BIG if size < hd.shape[0] else _smax(hd[0], m, delta)
    flat = cw.reshape(cw.shape[0])
    q = qwords[0]
    p0 = planes[0, 0]
    p1 = planes[0, 1]
    p2 = planes[0, 2]
    p3 = planes[0, 3]
    r = r0
    while r + _BL <= r1:
        msk = _bound_block(flat, r, _BL, q, p0, p1, p2, p3, smax, sblk)
        size, smax = _offer_passed(
            msk, sblk, r, cw, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
        )
        r += _BL
    for row in range(r, r1):
        if _qsum(q ^ flat[row], p0, p1, p2, p3) <= smax:
            size, smax = _offer(
                cw, row, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
            )
    return size


@_leaf
def _asym_scan(
    cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
):
    """Exact top-k scan of rows [r0, r1) into the heap (hd, hi, hr) holding `size`; returns size.

    Ids and tie keys as in :func:`_offer`. A code is scored exactly only when its quantised lower
    bound S can still beat the heap's root. Codes of 2 or 4 words are pre-filtered by one popcount
    per word (:func:`_bounds`) until a block passes more than _ONE_MAX of its 64 rows with the
    heap full; the rest of the rows by the two top planes.
    """
    if cw.shape[1] == 1:
        return _asym_scan1(
            cw, ids, rowmap, use_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
        )
    smax = _BIG if size < hd.shape[0] else _smax(hd[0], m, delta)
    flat = cw.reshape(cw.size)
    one = True
    r = r0
    while r < r1:
        n = min(_BL, r1 - r)
        msk, npre = _bounds(cw, flat, r, n, qwords, planes, smax, sblk, one)
        if npre > _ONE_MAX and size == hd.shape[0]:
            one = False  # the one-popcount filter keeps too many rows for this query
        size, smax = _offer_passed(
            msk, sblk, r, cw, ids, rowmap, use_map, nib, qwords, m, delta, hd, hi, hr, size, smax
        )
        r += n
    return size


@_leaf
def _asym_scan_t(
    cw, tt, ids, no_map, r0, r1, nib, qwords, planes, m, delta, hd, hi, hr, size, sblk
):
    """_asym_scan of rows [r0, r1) of two- or four-word codes, their full blocks read from tt.

    tt: the blocks of 64 rows from r0, word-major (:func:`_transpose_tile`); no_map: an empty
    int64 array. The blocks are pre-filtered by the two top planes _CHUNK at a time, against the
    cut-off at the chunk's start (the vectorised loop runs without calls in between); the rows
    that pass get the full bound, one by one against the falling cut-off, and the exact score if
    it passes; the rows after the last full block get the full bound alone. Same rows scored in
    the same order as _asym_scan, so the same results.
    """
    smax = _BIG if size < hd.shape[0] else _smax(hd[0], m, delta)
    nb = (r1 - r0) // _BL
    for c0 in range(0, nb, _CHUNK):
        c1 = min(nb, c0 + _CHUNK)
        for b in range(c0, c1):
            if cw.shape[1] == 2:
                sblk[b - c0] = np.int64(_hi_t2(tt, b, qwords, planes, smax))
            else:
                sblk[b - c0] = np.int64(_hi_t4(tt, b, qwords, planes, smax))
        for b in range(c0, c1):
            size, smax = _offer_passed_t(
                np.uint64(sblk[b - c0]),
                tt,
                b,
                r0 + b * _BL,
                cw,
                ids,
                no_map,
                nib,
                qwords,
                planes,
                m,
                delta,
                hd,
                hi,
                hr,
                size,
                smax,
            )
    for row in range(r0 + nb * _BL, r1):  # a ragged end: no pre-filter
        if _qrow(cw, row, qwords, planes) <= smax:
            size, smax = _offer(
                cw, row, ids, no_map, False, nib, qwords, m, delta, hd, hi, hr, size, smax
            )
    return size


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _offer_passed_t(
    hmsk, tt, b, r, cw, ids, no_map, nib, qwords, planes, m, delta, hd, hi, hr, size, smax
):
    """Offer the rows r + j of block b of tt (bit j of hmsk) whose full bound is <= smax.

    Returns (size, smax); smax falls as rows enter the heap.
    """
    while hmsk:
        j = ctz64(hmsk)
        hmsk &= hmsk - np.uint64(1)
        if _qrow_t(tt, b, j, qwords, planes) <= smax:
            size, smax = _offer(
                cw, r + j, ids, no_map, False, nib, qwords, m, delta, hd, hi, hr, size, smax
            )
    return size, smax


# ------------------------------------------------------------------------------------------------
# the parallel kernels
# ------------------------------------------------------------------------------------------------


_TILE_BYTES = 1 << 18  # codes scanned by every query of a group in turn: about half an L2 cache


@njit(cache=True, nogil=True)
def _word_major(nw, gq):
    """Whether a group of gq queries over nw-word codes scans word-major copies of its tiles.

    The copy (from memory, about 3 ns a row) pays when enough queries share it: 6 at 4 words
    (0.9x the row-major scan's time; 1.02x with 4), 16 at 2 words (0.8-0.9x; 0.9-1.06x with 8),
    measured on 1M text and fmnist codes, 50 queries, one thread.
    """
    return (nw == 4 and gq >= 6) or (nw == 2 and gq >= 16)


@_leaf
def _scan_rows(cw, ids, no_map, r0, r1, tile, nib, qwords, planes, md, hd, hi, hr, size, sblk):
    """Run the queries of a group over rows [r0, r1) of cw, tile by tile, with _asym_scan.

    Query j: row j of the per-query tables and heaps; size[j], its heap's size, is updated. A
    function of its own: with both paths inline in the kernel, this one ran 4% slower.
    """
    for t0 in range(r0, r1, tile):
        t1 = min(r1, t0 + tile)
        for j in range(size.shape[0]):
            size[j] = _asym_scan(
                cw,
                ids,
                no_map,
                False,
                t0,
                t1,
                nib[j],
                qwords[j],
                planes[j],
                md[j, 0],
                md[j, 1],
                hd[j],
                hi[j],
                hr[j],
                size[j],
                sblk,
            )


@_leaf
def _scan_words(cw, tt, ids, no_map, r0, r1, tile, nib, qwords, planes, md, hd, hi, hr, size, sblk):
    """_scan_rows through word-major copies of the tiles (tt: tile // 64 blocks), _asym_scan_t."""
    for t0 in range(r0, r1, tile):
        t1 = min(r1, t0 + tile)
        _transpose_tile(cw, t0, (t1 - t0) // _BL, tt)
        for j in range(size.shape[0]):
            size[j] = _asym_scan_t(
                cw,
                tt,
                ids,
                no_map,
                t0,
                t1,
                nib[j],
                qwords[j],
                planes[j],
                md[j, 0],
                md[j, 1],
                hd[j],
                hi[j],
                hr[j],
                size[j],
                sblk,
            )


@njit(cache=True, nogil=True, parallel=True)
def _search_exact_kernel(probs, cw, ids, nbytes, k, n_shards, group, out_d, out_i, out_r):
    """Exact asymmetric top-k of each (query, shard): out_*[shard, q, :k] sorted, padded.

    A work item is (`group` consecutive queries, shard); it scans its rows in tiles of _TILE_BYTES
    and runs every query of the group over a tile while it is in cache, as FAISS's flat search
    does: the codes are read from memory once per group, not once per query. Large enough groups
    over 2- or 4-word codes copy each tile word-major first (:func:`_word_major`,
    :func:`_asym_scan_t`). Each query sees its rows in the same order as a scan of its own, so
    the results do not depend on `group`.
    """
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    n_groups = (nq + group - 1) // group
    tile = max(_BL, _TILE_BYTES // (8 * nw) // _BL * _BL)
    for u in prange(n_groups * n_shards):
        g, r0, r1 = _split(u, n_shards, n)
        sh = u % n_shards
        q0 = g * group
        gq = min(group, nq - q0)
        nib = np.empty((gq, 16 * nw, 16), np.float64)
        qwords = np.empty((gq, nw), np.uint64)
        planes = np.empty((gq, nw, 4), np.uint64)
        md = np.empty((gq, 2), np.float64)
        hd = np.empty((gq, k), np.float32)
        hi = np.empty((gq, k), np.int64)
        hr = np.empty((gq, k), np.int64)
        size = np.zeros(gq, np.int64)
        for j in range(gq):
            md[j, 0], md[j, 1] = _prep_query(probs[q0 + j], nbytes, nib[j], qwords[j], planes[j])
            md[j, 1] = _tune_planes(nib[j], nbytes, md[j, 1], planes[j])
        no_map = np.empty(0, np.int64)
        sblk = np.empty(_BL, np.int64)
        if _word_major(nw, gq):
            tt = np.empty((tile // _BL, nw, _BL), np.uint64)
            _scan_words(
                cw, tt, ids, no_map, r0, r1, tile, nib, qwords, planes, md, hd, hi, hr, size, sblk
            )
        else:
            _scan_rows(
                cw, ids, no_map, r0, r1, tile, nib, qwords, planes, md, hd, hi, hr, size, sblk
            )
        for j in range(gq):
            qi = q0 + j
            _heap_drain(hd[j], hi[j], hr[j], size[j], out_d[sh, qi], out_i[sh, qi], out_r[sh, qi])


@njit(cache=True, nogil=True, parallel=True)
def _asym_matrix_kernel(probs, cw, nbytes, n_blocks, out):
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    for u in prange(nq * n_blocks):
        qi, r0, r1 = _split(u, n_blocks, n)
        nib, qwords, planes = _query_tables(nw)
        m, _ = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        tab = np.empty((8 * nw, 256), np.float64)
        _byte_tables(nib, tab)
        for row in range(r0, r1):
            out[qi, row] = _exact(tab, qwords, cw, row, m)
