"""Two-stage search in one kernel: Hamming top-C, then the exact asymmetric rerank.

The Hamming top-C of the query's hard code, then the exact asymmetric rerank of those C (the local
reference of the database pipeline).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .asymmetric import _asym_scan
from .hamming import _ham_select, _sel_cap
from .heap import _heap_drain, _new_heap
from .intrinsics import _BL
from .tables import _prep_query, _query_tables


@njit(cache=True, nogil=True, parallel=True)
def _two_stage_kernel(probs, cw, ids, scan_ids, ids_sorted, nbytes, c_keep, k, out_d, out_i):
    """Per query: Hamming top-c_keep of its hard code, then the exact asymmetric top-k of those.

    scan_ids: ids for the rerank (empty when the ids are the row numbers, see _offer).
    """
    nq = probs.shape[0]
    n = cw.shape[0]
    nw = cw.shape[1]
    n_bits = nbytes * 8
    cap = _sel_cap(c_keep)
    for qi in prange(nq):
        nib, qwords, planes = _query_tables(nw)
        m, delta = _prep_query(probs[qi], nbytes, nib, qwords, planes)
        buf_r = np.empty(cap, np.int64)
        buf_d = np.empty(cap, np.int64)
        buf_w = np.empty((cap, cw.shape[1]), np.uint64)
        cnt = np.empty(n_bits + 2, np.int64)
        ns = _ham_select(
            cw, ids, ids_sorted, 0, n, qwords, c_keep, n_bits, buf_r, buf_d, buf_w, cnt
        )
        hd, hi, hr = _new_heap(k)
        # rerank the selected codes from the copies made during the scan (no random access),
        # with the same bound-then-exact scan as the exhaustive search
        size = _asym_scan(
            buf_w, scan_ids, buf_r, True, 0, ns, nib, qwords, planes, m, delta, hd, hi, hr, 0,
            np.empty(_BL, np.int64),
        )  # fmt: skip
        dummy = np.empty(k, np.int64)
        _heap_drain(hd, hi, hr, size, out_d[qi], out_i[qi], dummy)
