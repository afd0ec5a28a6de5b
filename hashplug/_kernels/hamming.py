"""Symmetric Hamming kernels: the distance matrix and the top-C selection (counting threshold).

Hamming distances are integers in [0, n_bits], so the top-C is selected by counting: one pass with
a falling threshold, a sampled cut-off, or a histogram pass (see :func:`_ham_select`). Ties go to
the smaller id, then the smaller row. Used by ``hamming_topk`` and the two-stage search.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .intrinsics import _BL, _NO_REFCOUNT, _leaf, _split, ctz64, popcount64

_I64MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True, parallel=True)
def _ham_matrix_kernel(aw, bw, n_blocks, out):
    na = aw.shape[0]
    n = bw.shape[0]
    nw = aw.shape[1]
    for u in prange(na * n_blocks):
        i, r0, r1 = _split(u, n_blocks, n)
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
def _ham_row(cw, row, qwords, nw):
    d = np.int64(0)
    for w in range(nw):
        d += popcount64(qwords[w] ^ cw[row, w])
    return d


@njit(cache=True, nogil=True, inline="always", **_NO_REFCOUNT)
def _ham_block(flat, r0, q, tl, out):
    """Scan one block of 64 one-word codes; return the mask of those with distance < tl.

    out[j] = Hamming distance of one-word code flat[r0 + j] to q; bit j of the mask is row r0 + j.
    The one vectorised block scan of the selections: inlined at Numba IR level, so it compiles as
    the loop written in place.
    """
    blk = flat[r0 : r0 + _BL]
    msk = np.uint64(0)
    for j in range(_BL):
        d = popcount64(q ^ blk[j])
        out[j] = d
        msk |= np.uint64(d < tl) << np.uint64(j)
    return msk


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
    """Select the c_keep best rows of [r0, r1) by (hamming, id, row) into buf_*; return the count.

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
            msk = _ham_block(flat, r, q, tl, dblk)
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


@njit(cache=True, nogil=True)
def _ham_select_2pass(cw, ids, ids_sorted, r0, r1, qwords, c_keep, n_bits, buf_r, buf_d, buf_w):
    """Select as _ham_select_online does, by a histogram pass then a collection pass.

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
            msk = _ham_block(flat, r, q, tl, dblk)
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
    """Return the selection buffer capacity for c_keep results.

    With room for the sampled path's surplus.
    """
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
            msk = _ham_block(flat, r, q, tl, dblk)
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
    """Select the c_keep best rows of [r0, r1) by (hamming, id, row) into buf_*; return the count.

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
    cap = _sel_cap(c_keep)
    for u in prange(nq * n_shards):
        qi, r0, r1 = _split(u, n_shards, n)
        sh = u % n_shards
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
