"""Inverted-file kernels over packed codes: k-majority training, list assignment, probed top-C.

Centroids are binary codes; a code belongs to the list of its nearest centroid in Hamming
distance (ties: the lower list), found in two levels (top centroid, then its fine ones). The probed selection scans the rows of a query's lists (stored
contiguously, list by list) once, counts distances, and keeps the best C by distance.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .hamming import _ham_row
from .intrinsics import _leaf, popcount64


@_leaf
def _nearest(cent, c0, c1, row, nw):
    """Return (distance, index) of the centroid of [c0, c1) nearest to ``row`` (lowest on ties)."""
    best = np.int64(1 << 30)
    bl = c0
    for c in range(c0, c1):
        d = _ham_row(cent, c, row, nw)
        if d < best:
            best = d
            bl = c
    return best, bl


@njit(cache=True, nogil=True, parallel=True)
def _assign_kernel(cw, centw, out):
    """out[r] = the centroid nearest to code r (lowest index on ties)."""
    nw = cw.shape[1]
    for r in prange(cw.shape[0]):
        out[r] = _nearest(centw, 0, centw.shape[0], cw[r], nw)[1]


@njit(cache=True, nogil=True, inline="always")
def _dists(rows, qrow, out):
    """out[j] = Hamming distance of ``qrow`` to ``rows[j]`` (one word: a vectorised loop)."""
    nw = rows.shape[1]
    if nw == 1:
        q0 = qrow[0]
        for j in range(rows.shape[0]):
            out[j] = popcount64(q0 ^ rows[j, 0])
    else:
        for j in range(rows.shape[0]):
            out[j] = _ham_row(rows, j, qrow, nw)


@_leaf
def _near_tops(topw, row, nw, near_d, near_t):
    """Fill near_d, near_t with the m = near_d.size nearest tops to ``row``, by (distance, top)."""
    m = near_d.size
    k = 0
    for t in range(topw.shape[0]):
        d = _ham_row(topw, t, row, nw)
        if k == m and d >= near_d[m - 1]:
            continue
        j = k if k < m else m - 1
        while j > 0 and near_d[j - 1] > d:
            near_d[j] = near_d[j - 1]
            near_t[j] = near_t[j - 1]
            j -= 1
        near_d[j] = d
        near_t[j] = t
        if k < m:
            k += 1


@njit(cache=True, nogil=True, parallel=True)
def _assign2_kernel(cw, topw, finew, per_top, n_near, out):
    """Two-level assignment: the nearest fine centroid among those of the n_near nearest tops.

    Fine centroids ``t * per_top .. (t + 1) * per_top - 1`` belong to top centroid t; ties go
    to the nearer top (then the lower one), then the lower fine centroid.
    """
    n = cw.shape[0]
    nw = cw.shape[1]
    m = min(n_near, topw.shape[0])
    chunk = 1024
    for u in prange((n + chunk - 1) // chunk):
        near_d = np.empty(m, np.int64)
        near_t = np.empty(m, np.int64)
        for r in range(u * chunk, min(n, (u + 1) * chunk)):
            _near_tops(topw, cw[r], nw, near_d, near_t)
            best = np.int64(1 << 30)
            bl = near_t[0] * per_top
            for j in range(m):
                t = near_t[j]
                d, c = _nearest(finew, t * per_top, (t + 1) * per_top, cw[r], nw)
                if d < best:
                    best = d
                    bl = c
            out[r] = bl


@njit(cache=True, nogil=True)
def _bit_counts(bits, assign, n_lists):
    """(n_lists, n_bits) count of set bits per list, and (n_lists,) members per list."""
    ones = np.zeros((n_lists, bits.shape[1]), np.int64)
    cnt = np.zeros(n_lists, np.int64)
    for r in range(bits.shape[0]):
        a = assign[r]
        cnt[a] += 1
        for b in range(bits.shape[1]):
            ones[a, b] += bits[r, b]
    return ones, cnt


@njit(cache=True, nogil=True)
def _list_order(assign, n_lists):
    """Sort rows by list (counting sort): (order, offsets); rows keep their order in a list."""
    offsets = np.zeros(n_lists + 1, np.int64)
    for r in range(assign.size):
        offsets[assign[r] + 1] += 1
    for c in range(n_lists):
        offsets[c + 1] += offsets[c]
    pos = offsets[:-1].copy()
    order = np.empty(assign.size, np.int64)
    for r in range(assign.size):
        a = assign[r]
        order[pos[a]] = r
        pos[a] += 1
    return order, offsets


@njit(cache=True, nogil=True, parallel=True)
def _probed_select_kernel(
    qw, cw, ids, offsets, probes, c_keep, n_bits, like, out_r, out_d, out_i, out_w
):
    """Per query: the c_keep rows of its probed lists nearest in Hamming distance, sorted.

    probes (nq, p): list numbers, nearest first, -1 for none. Rows are positions in the
    list-ordered arrays; equal distances keep the scan order (probe order, then position).
    Writes each hit's position, distance, id (``ids[row]``) and code words (``cw[row]``); the
    rest of a row of the outputs is left as it was (the caller's padding). ``like``: an empty
    array of the type to keep distances in (uint8 below 256 bits: less to read back).
    """
    nq = qw.shape[0]
    for qi in prange(nq):
        ds = _probed_dists(qw[qi], cw, offsets, probes[qi], like)
        keep = min(c_keep, ds.size)
        if keep == 0:
            continue
        pos, t = _slots(ds, keep, n_bits)
        hit_r, hit_d = _within(ds, offsets, probes[qi], t, pos[t + 1])
        hit_i = ids[hit_r]  # read in scan order (ascending within a list): fewer cache misses
        for j in range(hit_r.size):  # counting sort by distance; ties keep the scan order
            d = hit_d[j]
            e = pos[d]
            if e < keep:
                r = hit_r[j]
                out_r[qi, e] = r
                out_d[qi, e] = d
                out_i[qi, e] = hit_i[j]
                for w in range(cw.shape[1]):
                    out_w[qi, e, w] = cw[r, w]
                pos[d] = e + 1


@njit(cache=True, nogil=True)
def _probed_dists(qrow, cw, offsets, probes, like):
    """Return the distances of ``qrow`` to the rows of the probed lists, in scan order."""
    tot = 0
    for c in probes:
        if c >= 0:
            tot += offsets[c + 1] - offsets[c]
    ds = np.empty(tot, like.dtype)
    z = 0
    for c in probes:
        if c >= 0:
            a = offsets[c]
            m = offsets[c + 1] - a
            _dists(cw[a : a + m], qrow, ds[z : z + m])
            z += m
    return ds


@njit(cache=True, nogil=True)
def _slots(ds, keep, n_bits):
    """Return (first output slot per distance, t): the keep nearest are at distances <= t.

    ``pos[t + 1]`` is the number of rows at distances <= t.
    """
    cnt4 = np.zeros((4, n_bits + 2), np.int32)  # four histograms: no store-to-load chain
    z = ds.size
    e = 0
    while e + 4 <= z:
        cnt4[0, ds[e]] += 1
        cnt4[1, ds[e + 1]] += 1
        cnt4[2, ds[e + 2]] += 1
        cnt4[3, ds[e + 3]] += 1
        e += 4
    while e < z:
        cnt4[0, ds[e]] += 1
        e += 1
    pos = np.zeros(n_bits + 2, np.int64)
    acc = 0
    t = n_bits
    for d in range(n_bits + 1):
        pos[d] = acc
        acc += cnt4[0, d] + cnt4[1, d] + cnt4[2, d] + cnt4[3, d]
        if acc >= keep:
            t = d
            break
    pos[t + 1] = acc
    return pos, t


@njit(cache=True, nogil=True)
def _within(ds, offsets, probes, t, n_hits):
    """Return (rows, distances) of the scanned rows at distance <= t, in scan order.

    A flat branch-free pass over ``ds`` finds their scan positions (twice as fast as a pass
    list by list), then a walk over the probed lists turns positions into rows.
    """
    at = np.empty(n_hits + 1, np.int64)  # +1: the slot a row not taken writes to
    n = 0
    for z in range(ds.size):
        at[n] = z
        n += ds[z] <= t
    hit_r = np.empty(n, np.int64)
    hit_d = np.empty(n, np.int16)
    p = -1
    end = 0  # scan position where list probes[p] ends
    shift = 0  # row = scan position + shift within list probes[p]
    for j in range(n):
        z = at[j]
        while z >= end:
            p += 1
            c = probes[p]
            if c >= 0:
                shift = offsets[c] - end
                end += offsets[c + 1] - offsets[c]
        hit_r[j] = z + shift
        hit_d[j] = ds[z]
    return hit_r, hit_d


@njit(cache=True, nogil=True, parallel=True)
def _probe_kernel(qw, topw, centw, per_top, n_near, means, half, n_pre, nprobe, n_bits, like, out):
    """Per query: the nprobe lists to scan, nearest first; out (nq, nprobe).

    The query's own list (its assignment: see _assign2_kernel) first, then the n_pre lists of
    centroids nearest in Hamming distance (ties: lower list) ranked by half the squared
    distance of the query's +-1 code to the list means. Reads the packed centroids and n_pre
    rows of means, not every mean. ``like``: as in _probed_select_kernel.
    """
    nq = qw.shape[0]
    nl = centw.shape[0]
    for qi in prange(nq):
        ds = np.empty(nl, like.dtype)
        _dists(centw, qw[qi], ds)
        own = _own_list(ds, topw, qw[qi], per_top, n_near)
        cand = _nearest_lists(ds, min(n_pre, nl), n_bits)
        e = cand.size
        has_own = False
        for j in range(e):
            if cand[j] == own:
                has_own = True
        if not has_own:
            cand = np.append(cand, own)
            e += 1
        signs = np.empty(n_bits, np.float32)
        for b in range(n_bits):  # np.unpackbits order: bit 7 of byte 0 first
            sh = 8 * ((b & 63) >> 3) + 7 - (b & 7)
            bit = (qw[qi, b >> 6] >> np.uint64(sh)) & np.uint64(1)
            signs[b] = 2.0 * np.float32(bit) - 1.0
        score = np.empty(e, np.float32)
        for j in range(e):
            c = cand[j]
            score[j] = -np.inf if c == own else half[c] - _dot(signs, means[c])
        keep = min(nprobe, e)
        sel = np.empty(keep, np.int64)  # the keep lowest scores; ties: candidate order
        thr = np.partition(score, keep - 1)[keep - 1]
        k = 0
        for j in range(e):
            if score[j] < thr:
                sel[k] = j
                k += 1
        for j in range(e):
            if k < keep and score[j] == thr:
                sel[k] = j
                k += 1
        order = np.argsort(score[sel], kind="mergesort")
        for j in range(keep):
            out[qi, j] = cand[sel[order[j]]]


@njit(cache=True, nogil=True, fastmath=True)
def _dot(a, b):
    """Dot product of two float32 vectors (reassociated: vectorised)."""
    s = np.float32(0.0)
    for i in range(a.size):
        s += a[i] * b[i]
    return s


@njit(cache=True, nogil=True)
def _own_list(ds, topw, qrow, per_top, n_near):
    """Return the list of a code with distances ``ds`` to the fine centroids (_assign2_kernel)."""
    m = min(n_near, topw.shape[0])
    near_d = np.empty(m, np.int64)
    near_t = np.empty(m, np.int64)
    _near_tops(topw, qrow, topw.shape[1], near_d, near_t)
    own = near_t[0] * per_top
    for j in range(m):
        for c in range(near_t[j] * per_top, (near_t[j] + 1) * per_top):
            if ds[c] < ds[own]:
                own = c
    return own


@njit(cache=True, nogil=True)
def _nearest_lists(ds, keep, n_bits):
    """Return the keep lists of smallest ``ds`` in list order (ties at t: the lower lists)."""
    pos, t = _slots(ds, keep, n_bits)
    at = np.empty(pos[t + 1] + 1, np.int64)  # lists at distance <= t (+1: the slot not taken)
    n = 0
    for c in range(ds.size):  # flat and branch-free (as _within)
        at[n] = c
        n += ds[c] <= t
    quota = keep - pos[t]  # all lists nearer than t, then the first ones at t
    cand = np.empty(keep, np.int64)
    e = 0
    for j in range(n):
        c = at[j]
        if ds[c] < t or quota > 0:
            quota -= ds[c] == t
            cand[e] = c
            e += 1
    return cand[:e]
