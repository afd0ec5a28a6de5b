"""Per-query tables, the exact asymmetric distance and its quantised lower bound.

For a query p and its hard code h = [p > 0.5], asym(b) = M + the sum of a_j = |1 - 2 p_j| over the
bits set in b XOR h (see :mod:`hashplug.rerank`). ``_prep_query`` builds the nibble tables of those
sums, the hard code as little-endian words and four bit-planes of the weights quantised to
0..15; ``_exact``/``_exact_nib`` add the table entries in a fixed order (bit-identical results);
``_qsum``/``_bounds`` give the integer lower bound the scans prune with, ``_smax`` its cut-off.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .intrinsics import _BL, _NO_REFCOUNT, _leaf, ctz64, popcount64

_QMAX = 15  # 4 bit-planes of quantised weights
_BIG = np.int64(1) << np.int64(40)


@_leaf
def _prep_query(p, nbytes, nib, qwords, planes):
    """Fill the tables of one query; return (M, delta).

    p (n_bits,) float32; nib (16*W, 16) float64 (rows past 2*nbytes are zero): nib[2i, v] / nib[2i+1, v] = sum of a_j over
    the bits of the high / low nibble value v of byte i (a_j = |1 - 2 p_j|, held in its
    single-bit entries); qwords (W,) uint64: the packed hard code as little-endian words, zero
    padded; planes (W, 4) uint64: bit-planes of the quantised weights floor(a_j / delta),
    delta = max(a) / 15 (the exhaustive scan may refine it: :func:`_tune_planes`).
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
    delta = amax / _QMAX
    _fill_planes(nib, nbytes, delta, planes)
    return m, delta


@_leaf
def _fill_planes(nib, nbytes, delta, planes):
    """Fill planes (W, 4) uint64 with the bit-planes of min(15, floor(a_j / delta)), a_j from nib.

    Any delta > 0 gives a lower bound (the quantised weight times delta is at most a_j); zero
    planes if delta <= 0.
    """
    planes[:, :] = 0
    if delta <= 0.0:
        return
    for j in range(nbytes * 8):
        qa = int(nib[j >> 2, 1 << (3 - (j & 3))] / delta)
        if qa > _QMAX:
            qa = _QMAX
        byte = j >> 3
        pos = (byte & 7) * 8 + (7 - (j & 7))
        w = byte >> 3
        for b in range(4):
            planes[w, b] |= np.uint64((qa >> b) & 1) << np.uint64(pos)


_STEPS = 11  # quantisation steps tried by _tune_planes: max(a)/15 times 0.5, 0.55, ..., 1


@_leaf
def _tune_planes(nib, nbytes, delta, planes):
    """Refill the planes of a multi-word query with the step that tightens the two-plane bound.

    The two-plane bound keeps weights to a multiple of 4 steps (``qa & 12``); with the step
    max(a)/15 and weights spread out (MiniLM text codes) it drops most of each. Of the steps
    max(a)/15 * (0.5 .. 1), take the one that keeps the most of sum_j a_j (the few largest weights
    clamp to 15): at the final cut-off 40-50% as many rows pass as with max(a)/15 (MiniLM text
    and EfficientNet image codes, 128 and 256 bits).
    Returns the chosen delta (the same if one-word codes or delta <= 0).
    """
    if nbytes <= 8 or delta <= 0.0:
        return delta
    best = delta
    kept = -1.0
    for t in range(_STEPS):
        d = delta * (0.5 + 0.05 * t)
        s = 0
        for j in range(nbytes * 8):
            qa = min(_QMAX, int(nib[j >> 2, 1 << (3 - (j & 3))] / d))
            s += qa & 12
        if s * d > kept:
            kept = s * d
            best = d
    _fill_planes(nib, nbytes, best, planes)
    return best


@njit(cache=True, nogil=True)
def _query_tables(nw):
    """Empty tables of one query for codes of nw words: (nib, qwords, planes), see _prep_query."""
    return (
        np.empty((16 * nw, 16), np.float64),
        np.empty(nw, np.uint64),
        np.empty((nw, 4), np.uint64),
    )


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


#: _exact_nib inlined (at Numba IR level) into the rerank scan's batch loop.
_exact_nib_in = njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)(_exact_nib.py_func)


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


@njit(cache=True, nogil=True, inline="always")
def _qsum(x, p0, p1, p2, p3):
    """Quantised weight of the bits set in x: sum_b 2^b popcount(x & plane_b) (scalars only)."""
    return (
        popcount64(x & p0)
        + 2 * popcount64(x & p1)
        + 4 * popcount64(x & p2)
        + 8 * popcount64(x & p3)
    )


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _bound_block(flat, r0, n, q, p0, p1, p2, p3, smax, out):
    """Scan one block of one-word codes; return the mask of those with S <= smax.

    out[j] = quantised weight S of (q XOR one-word code flat[r0 + j]), for j < n <= 64; bit j of the
    mask is row r0 + j. The one vectorised block scan of the asymmetric kernels: inlined at Numba IR
    level, so with n = 64 it compiles as the loop written in place did (a call per block, not
    inlined, doubled the exhaustive scan's time).
    """
    blk = flat[r0 : r0 + n]
    msk = np.uint64(0)
    for j in range(n):
        s = _qsum(q ^ blk[j], p0, p1, p2, p3)
        out[j] = s
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always")
def _top(planes, w):
    """Mask of the bits of word w whose quantised weight is >= 4 (its top two planes): see _bounds."""
    return planes[w, 2] | planes[w, 3]


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _one_block2(flat, r0, n, q, planes, lim):
    """Mask of the two-word rows r0 + j (j < n) with pc(x & top) <= lim (see _bounds)."""
    q0 = q[0]
    q1 = q[1]
    a = _top(planes, 0)
    b = _top(planes, 1)
    blk = flat[2 * r0 : 2 * (r0 + n)]
    msk = np.uint64(0)
    for j in range(n):
        s = popcount64((q0 ^ blk[2 * j]) & a) + popcount64((q1 ^ blk[2 * j + 1]) & b)
        msk |= np.uint64(s <= lim) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _one_block4(flat, r0, n, q, planes, lim):
    """_one_block2 for four-word rows."""
    q0 = q[0]
    q1 = q[1]
    q2 = q[2]
    q3 = q[3]
    a = _top(planes, 0)
    b = _top(planes, 1)
    c = _top(planes, 2)
    d = _top(planes, 3)
    blk = flat[4 * r0 : 4 * (r0 + n)]
    msk = np.uint64(0)
    for j in range(n):
        i = 4 * j
        s = (
            popcount64((q0 ^ blk[i]) & a)
            + popcount64((q1 ^ blk[i + 1]) & b)
            + popcount64((q2 ^ blk[i + 2]) & c)
            + popcount64((q3 ^ blk[i + 3]) & d)
        )
        msk |= np.uint64(s <= lim) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always")
def _hi(x, p2, p3):
    """Return the top two bit-planes' part of _qsum: a lower bound of it."""
    return 4 * popcount64(x & p2) + 8 * popcount64(x & p3)


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _hi_block2(flat, r0, n, q, planes, smax):
    """Mask of the two-word rows r0 + j (j < n) whose top-two-plane bound is <= smax."""
    q0 = q[0]
    q1 = q[1]
    a2 = planes[0, 2]
    a3 = planes[0, 3]
    b2 = planes[1, 2]
    b3 = planes[1, 3]
    blk = flat[2 * r0 : 2 * (r0 + n)]
    msk = np.uint64(0)
    for j in range(n):
        s = _hi(q0 ^ blk[2 * j], a2, a3) + _hi(q1 ^ blk[2 * j + 1], b2, b3)
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _hi_block4(flat, r0, n, q, planes, smax):
    """_hi_block2 for four-word rows."""
    q0 = q[0]
    q1 = q[1]
    q2 = q[2]
    q3 = q[3]
    a2 = planes[0, 2]
    a3 = planes[0, 3]
    b2 = planes[1, 2]
    b3 = planes[1, 3]
    c2 = planes[2, 2]
    c3 = planes[2, 3]
    d2 = planes[3, 2]
    d3 = planes[3, 3]
    blk = flat[4 * r0 : 4 * (r0 + n)]
    msk = np.uint64(0)
    for j in range(n):
        i = 4 * j
        s = (
            _hi(q0 ^ blk[i], a2, a3)
            + _hi(q1 ^ blk[i + 1], b2, b3)
            + _hi(q2 ^ blk[i + 2], c2, c3)
            + _hi(q3 ^ blk[i + 3], d2, d3)
        )
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _bounds(cw, flat, r0, n, qwords, planes, smax, out, one):
    """Scan a block against the hard code; return (mask of the rows whose S <= smax, pre-count).

    flat: cw.reshape(cw.size), made once by the caller (a reshape per block calls into Numba's
    C helper: a tenth of the scan's time).

    out[j] = quantised weight S of (hard code XOR row r0+j), for j < n <= 64; bit j of the mask is
    row r0+j; out[j] is set only for those rows.

    Codes of several words are filtered first, vectorised for 2 and 4 words, by the top two
    bit-planes (``8 pc(x & p3) + 4 pc(x & p2) <= S``) or, if `one`, by one popcount per word: the
    bits of weight >= 4 (mask p2 | p3) weigh at least 4 each, so ``4 pc(x & (p2 | p3)) <= S``.
    That one keeps 3x the rows (0.5-0.8% of fmnist codes at 128-256 bits, against 0.2%) at half
    the popcounts, but half the rows where the weights are spread (MiniLM text codes): the
    pre-count (rows passing the first filter) lets the caller choose. The rows that pass get the
    full sum.
    """
    nw = cw.shape[1]
    if nw == 1:
        p = planes[0]
        return _bound_block(flat, r0, n, qwords[0], p[0], p[1], p[2], p[3], smax, out), 0
    if one and nw == 2:
        hmsk = _one_block2(flat, r0, n, qwords, planes, smax >> 2)
    elif one and nw == 4:
        hmsk = _one_block4(flat, r0, n, qwords, planes, smax >> 2)
    elif nw == 2:
        hmsk = _hi_block2(flat, r0, n, qwords, planes, smax)
    elif nw == 4:
        hmsk = _hi_block4(flat, r0, n, qwords, planes, smax)
    else:
        hmsk = np.uint64(0)
        for j in range(n):
            s = 0
            for w in range(nw):
                s += _hi(qwords[w] ^ cw[r0 + j, w], planes[w, 2], planes[w, 3])
            hmsk |= np.uint64(s <= smax) << np.uint64(j)
    npre = popcount64(hmsk)
    msk = np.uint64(0)
    while hmsk:
        j = ctz64(hmsk)
        hmsk &= hmsk - np.uint64(1)
        s = 0
        for w in range(nw):
            p = planes[w]
            s += _qsum(qwords[w] ^ cw[r0 + j, w], p[0], p[1], p[2], p[3])
        out[j] = s
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk, npre


# ------------------------------------------------------------------------------------------------
# word-major tiles: tt[b, w, j] = word w of row 64 b + j of the tile
# ------------------------------------------------------------------------------------------------


@_leaf
def _transpose_tile(cw, r0, nb, tt):
    """Copy the nb blocks of 64 rows from row r0 into tt: tt[b, w, j] = cw[r0 + 64 b + j, w].

    Word w of a block's rows is then contiguous: the two-plane filter reads it without the
    shuffles a row-major block needs (0.6 instead of 1.0 ns a row at 4 words, L2-resident; the
    copy, from memory, costs about 3 ns a row once for all the queries of a group).
    """
    nw = cw.shape[1]
    for b in range(nb):
        for j in range(_BL):
            for w in range(nw):
                tt[b, w, j] = cw[r0 + _BL * b + j, w]


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _qrow(cw, row, qwords, planes):
    """Quantised weight S of (hard code XOR row `row` of cw)."""
    s = 0
    for w in range(qwords.shape[0]):
        s += _qsum(qwords[w] ^ cw[row, w], planes[w, 0], planes[w, 1], planes[w, 2], planes[w, 3])
    return s


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _qrow_t(tt, b, j, qwords, planes):
    """Quantised weight S of (hard code XOR row j of block b of a word-major tile)."""
    s = 0
    for w in range(qwords.shape[0]):
        s += _qsum(qwords[w] ^ tt[b, w, j], planes[w, 0], planes[w, 1], planes[w, 2], planes[w, 3])
    return s


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _hi_t2(tt, b, q, planes, smax):
    """Mask of the two-word rows of block b of a word-major tile whose top-two-plane bound <= smax.

    Bit j is row j of the block; the bound is _hi_block2's.
    """
    q0 = q[0]
    q1 = q[1]
    a2 = planes[0, 2]
    a3 = planes[0, 3]
    b2 = planes[1, 2]
    b3 = planes[1, 3]
    w0 = tt[b, 0]
    w1 = tt[b, 1]
    msk = np.uint64(0)
    for j in range(_BL):
        s = _hi(q0 ^ w0[j], a2, a3) + _hi(q1 ^ w1[j], b2, b3)
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _hi_t4(tt, b, q, planes, smax):
    """_hi_t2 for four-word rows."""
    q0 = q[0]
    q1 = q[1]
    q2 = q[2]
    q3 = q[3]
    a2 = planes[0, 2]
    a3 = planes[0, 3]
    b2 = planes[1, 2]
    b3 = planes[1, 3]
    c2 = planes[2, 2]
    c3 = planes[2, 3]
    d2 = planes[3, 2]
    d3 = planes[3, 3]
    w0 = tt[b, 0]
    w1 = tt[b, 1]
    w2 = tt[b, 2]
    w3 = tt[b, 3]
    msk = np.uint64(0)
    for j in range(_BL):
        s = (
            _hi(q0 ^ w0[j], a2, a3)
            + _hi(q1 ^ w1[j], b2, b3)
            + _hi(q2 ^ w2[j], c2, c3)
            + _hi(q3 ^ w3[j], d2, d3)
        )
        msk |= np.uint64(s <= smax) << np.uint64(j)
    return msk
