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
of 64 codes; codes of several words use a per-query step ``delta`` that keeps the most of the
weights in the two top planes) — and computes the exact distance only for codes whose bound does not
exceed the current k-th best distance (kept in a bounded max-heap). The bound is rigorous (with a safety margin
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

The kernels live in :mod:`hashplug._kernels`, one module per primitive (intrinsics, tables, heap,
asymmetric, candidates, hamming, two_stage); this module checks the inputs and calls them.

Threads: kernels run over queries with ``numba.prange`` (over code shards as well when there are
fewer queries than threads) and honour ``numba.set_num_threads``; results do not depend on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._cosine import (
    check_corrections,
    check_logits,
    check_scoring,
    cosine_rerank,
    cosine_search,
)
from ._kernels.asymmetric import _asym_matrix_kernel, _search_exact_kernel
from ._kernels.candidates import _rerank_dedup_kernel, _rerank_kernel, _rerank_rows_kernel
from ._kernels.hamming import _ham_matrix_kernel, _ham_merge_kernel, _ham_select_kernel
from ._kernels.heap import _empty_topk, _merge_kernel
from ._kernels.two_stage import _two_stage_kernel
from ._validate import check_positive_int, sigmoid
from .codes import HAMMING_PAD
from .results import RowHits, ScoredHits

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

_MIN_SHARD = 32768  # do not split the codes of one query into shards smaller than this
_MAX_GROUP = 64  # queries of the exact scan sharing each tile of codes read from memory


# ------------------------------------------------------------------------------------------------
# input checks and layout helpers
# ------------------------------------------------------------------------------------------------
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


_ROW_IDS = np.zeros(0, np.int64)


def _row_ids(n: int) -> NDArray[np.int64]:
    """Return ``arange(n)`` as a read-only view of one cached array.

    So searches without ids do not write N ids on every call (80 MB at 10M codes).
    """
    global _ROW_IDS
    if _ROW_IDS.size < n:
        grown = np.arange(max(n, 2 * _ROW_IDS.size), dtype=np.int64)
        grown.flags.writeable = False
        _ROW_IDS = grown
    return _ROW_IDS[:n]


#: id(array) -> (weak reference, sorted) for read-only id arrays already checked.
_CHECKED_IDS: dict[int, tuple[weakref.ref[NDArray[np.int64]], bool]] = {}


def _forget(key: int) -> Any:
    """Return the weak reference's callback, which drops the entry when its array is freed."""
    return lambda _ref: _CHECKED_IDS.pop(key, None)


def _check_ids(ids: ArrayLike | None, n: int) -> tuple[NDArray[np.int64], bool]:
    """Row ids (default arange); returns (ids int64, whether they are non-decreasing).

    A read-only int64 array that owns its data (as a store's snapshot keeps them) is checked
    once, not on every search (two O(N) passes: 20 ms at 10M ids).
    """
    if ids is None:
        return _row_ids(n), True
    frozen = (
        isinstance(ids, np.ndarray)
        and ids.dtype == np.int64
        and ids.shape == (n,)
        and ids.flags.owndata
        and ids.flags.c_contiguous
        and not ids.flags.writeable
    )
    if isinstance(ids, np.ndarray) and not ids.flags.writeable:  # checked, or vouched for
        hit = _CHECKED_IDS.get(id(ids))
        if hit is not None and hit[0]() is ids and ids.shape == (n,):
            return ids, hit[1]
    a = np.asarray(ids)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be an integer array, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) (one per code), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if n and a.min() < 0:
        raise ValueError("ids must be non-negative (-1 marks padding in results)")
    srt = bool(n < 2 or np.all(a[1:] >= a[:-1]))
    if frozen:
        _CHECKED_IDS[id(a)] = (weakref.ref(a, _forget(id(a))), srt)
    return a, srt


def _vouch_ids(ids: NDArray[np.int64], srt: bool) -> None:
    """Mark a store's read-only int64 ids (non-negative, never changed) as checked.

    ``srt``: whether they are non-decreasing. For views that do not own their data (a store's
    growable columns), which :func:`_check_ids` would otherwise check on every search.
    """
    assert ids.dtype == np.int64 and ids.flags.c_contiguous and not ids.flags.writeable
    _CHECKED_IDS[id(ids)] = (weakref.ref(ids, _forget(id(ids))), srt)


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


def _query_group(nq: int, n_shards: int) -> int:
    """Return the queries per work item of the exact scan.

    At most _MAX_GROUP, and as many items as threads, or a multiple: each group reads the codes
    from memory once for all its queries.
    """
    t = numba.get_num_threads()
    if n_shards > 1 or nq <= t:
        return 1
    n_items = t * -(-nq // (t * _MAX_GROUP))
    return -(-nq // n_items)


def _n_chunks(nq: int) -> int:
    """Chunks of queries for the per-query kernels: a few per thread, each with its own scratch."""
    return max(1, min(nq, 4 * numba.get_num_threads()))


def _padded(nq: int, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    d, i = _empty_topk(nq, k)
    return i, d


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
    query_probs: ArrayLike,
    candidate_ids: ArrayLike,
    candidate_codes: ArrayLike,
    k: int,
    *,
    scoring: str = "asymmetric",
    candidate_corrections: ArrayLike | None = None,
) -> ScoredHits:
    """Exact asymmetric top-k of each query's own candidate list.

    ``scoring="cosine"``: the nearest-neighbour estimator instead. ``query_probs`` are then the
    query weights ``hasher.cosine_query(q)`` (the logits for one bit per dimension) and ``candidate_corrections`` (Q, C, 2) the candidates'
    factors from ``hasher.correction``; distance = ``-(c * <u, 2b - 1> + e)`` (see
    :func:`hashplug.scoring.cosine_estimates`).

    ``candidate_ids`` (Q, C) int, ``candidate_codes`` (Q, C, n_bytes) uint8: row q holds query q's
    candidates (e.g. a database's coarse Hamming results). Negative ids (-1) are padding and ignored.
    Returns ``(ids int64 (Q, k), distances float32 (Q, k))`` ascending by (distance, id); when fewer
    than k valid candidates exist the rest is padded with id -1 and distance +inf. An id listed more
    than once in one row is returned once, with its smallest distance (its best code).
    """
    k = check_positive_int(k, "k")
    cosine = check_scoring(scoring) == "cosine"
    p = check_logits(query_probs) if cosine else _check_probs(query_probs)
    nq, nbytes = p.shape[0], p.shape[1] // 8
    ci = _check_id_matrix(candidate_ids, nq, "candidate_ids")
    cc = _check_codes(candidate_codes, nbytes, "candidate_codes", ndim=3)
    if cc.shape[:2] != ci.shape:
        raise ValueError(
            f"candidate_codes shape {cc.shape} does not match candidate_ids shape {ci.shape}"
        )
    out_i, out_d = _padded(nq, k)
    nc = ci.shape[1]
    if cosine:
        corr = check_corrections(candidate_corrections, ci.shape, "candidate_corrections")
    elif candidate_corrections is not None:
        raise ValueError("candidate_corrections are used by scoring='cosine' only")
    if nq == 0 or nc == 0:
        return ScoredHits(out_i, out_d)
    if cosine:
        with _threads_for(nq * nc):
            d, i = cosine_rerank(p, ci, cc, corr, k)
        out_i[:, : d.shape[1]] = i
        out_d[:, : d.shape[1]] = d
        return ScoredHits(out_i, out_d)
    kk = min(k, nc)
    d, i = _empty_topk(nq, kk)
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
    return ScoredHits(out_i, out_d)


def _rerank_rows_checked(
    p: NDArray[np.float32],
    rows: NDArray[np.int64],
    cw: NDArray[np.uint64],
    idv: NDArray[np.int64] | None,
    nbytes: int,
    kk: int,
    d: NDArray[np.float32],
    i: NDArray[np.int64],
) -> None:
    """rerank_rows's kernels; idv None: the ids are the row numbers (no id array is read)."""
    dup = np.zeros(p.shape[0], np.bool_)
    bad = np.zeros(p.shape[0], np.bool_)
    scan_ids = np.empty(0, np.int64) if idv is None else idv
    _rerank_rows_kernel(p, rows, cw, scan_ids, nbytes, kk, _n_chunks(p.shape[0]), d, i, dup, bad)
    if bad.any():  # checked in the kernel, before any code of that query is read
        top = int(rows[bad].max())
        raise ValueError(f"candidate_rows has row {top}, but codes has only {cw.shape[0]} rows")
    if dup.any():  # a row listed twice made it into the top-k: redo those queries with dedup
        q = np.flatnonzero(dup)
        no_ids = np.empty((q.size, 0), np.int64)
        full = np.arange(cw.shape[0], dtype=np.int64) if idv is None else idv
        d[q], i[q] = _dedup_topk(p[q], no_ids, cw, rows[q], cw, full, nbytes, kk)


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
    d, i = _empty_topk(p.shape[0], kk)
    _rerank_dedup_kernel(p, cand_ids, ccw, cand_rows, cw, ids, nbytes, kk, d, i)
    return d, i


def rerank_rows(
    query_probs: ArrayLike,
    candidate_rows: ArrayLike,
    codes: ArrayLike,
    k: int,
    *,
    ids: ArrayLike | None = None,
) -> ScoredHits:
    """:func:`rerank` with the gather fused: candidates are row numbers into a code matrix.

    ``candidate_rows`` (Q, C) int: rows of ``codes`` (N, n_bytes), -1 for padding; ``ids`` (N,)
    gives each row's id (default: the row number). Returns ids (not rows) and distances, ordered and
    padded as :func:`rerank`; a row listed twice for one query is returned once.
    """
    k = check_positive_int(k, "k")
    p = _check_probs(query_probs)
    nq, nbytes = p.shape[0], p.shape[1] // 8
    c = _check_codes(codes, nbytes, "codes")
    rows = _check_id_matrix(candidate_rows, nq, "candidate_rows")
    n = c.shape[0]
    idv = None if ids is None else _check_ids(ids, n)[0]  # None: row numbers, no array built
    out_i, out_d = _padded(nq, k)
    nc = rows.shape[1]
    if nq == 0 or nc == 0:  # (an empty matrix still gets its rows checked)
        return ScoredHits(out_i, out_d)
    kk = min(k, nc)
    d, i = _empty_topk(nq, kk)
    with _threads_for(nq * nc):
        _rerank_rows_checked(p, rows, _words(c), idv, nbytes, kk, d, i)
    out_i[:, :kk] = i
    out_d[:, :kk] = d
    return ScoredHits(out_i, out_d)


def search_codes(
    query_probs: ArrayLike,
    codes: ArrayLike,
    k: int,
    *,
    candidates: int | None = None,
    ids: ArrayLike | None = None,
    scoring: str = "asymmetric",
    corrections: ArrayLike | None = None,
) -> ScoredHits:
    """Asymmetric top-k over a code matrix, without materialising the (Q, N) distance matrix.

    ``scoring="cosine"``: rank by the nearest-neighbour estimator ``c * <u, 2b - 1> + e``
    (distance: its negative); ``query_probs`` are then ``hasher.cosine_query(q)`` (the logits for one bit per dimension) and ``corrections`` (N, 2)
    the codes' factors from ``hasher.correction``. Every code is scored (no pruning bound);
    ``candidates=C`` takes the Hamming top-C of ``u > 0`` first, as with the asymmetric scoring.

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
    k = check_positive_int(k, "k")
    cosine = check_scoring(scoring) == "cosine"
    p = check_logits(query_probs) if cosine else _check_probs(query_probs)
    n_bits = p.shape[1]
    nbytes = n_bits // 8
    c = _check_codes(codes, nbytes, "codes")
    c_keep = None if candidates is None else check_positive_int(candidates, "candidates")
    nq, n = p.shape[0], c.shape[0]
    idv, ids_sorted = _check_ids(ids, n)
    out_i, out_d = _padded(nq, k)
    if cosine:
        corr = check_corrections(corrections, (n,), "corrections")
    elif corrections is not None:
        raise ValueError("corrections are used by scoring='cosine' only")
    if nq == 0 or n == 0:
        return ScoredHits(out_i, out_d)
    if cosine:
        return ScoredHits(*_cosine_codes(p, c, corr, idv, k, c_keep, out_i, out_d))
    with _threads_for(nq * n):
        d, i = _search(p, _words(c), idv, ids is not None, ids_sorted, nbytes, n_bits, k, c_keep)
    kk = d.shape[1]
    out_i[:, :kk] = i
    out_d[:, :kk] = d
    return ScoredHits(out_i, out_d)


def _cosine_codes(
    u: NDArray[np.float32],
    c: NDArray[np.uint8],
    corr: NDArray[np.float32],
    idv: NDArray[np.int64],
    k: int,
    c_keep: int | None,
    out_i: NDArray[np.int64],
    out_d: NDArray[np.float32],
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """search_codes(scoring="cosine"): exhaustive, or Hamming top-C of u > 0 then the rerank."""
    with _threads_for(u.shape[0] * c.shape[0]):
        if c_keep is None:
            d, i = cosine_search(u, c, corr, idv, k)
        else:
            rows, _ = hamming_topk(np.packbits(u > 0, axis=1), c, c_keep, ids=idv)
            valid = rows >= 0
            r = np.where(valid, rows, 0)
            cand_ids = np.where(valid, idv[r], -1)
            d, i = cosine_rerank(u, cand_ids, c[r], corr[r], k)
    out_i[:, : d.shape[1]] = i
    out_d[:, : d.shape[1]] = d
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
        group = _query_group(nq, n_shards)
        _search_exact_kernel(p, cw, scan_ids, nbytes, kk, n_shards, group, sd, si, sr)
        if n_shards == 1:
            d, i = sd[0], si[0]
        else:
            d, i = _empty_topk(nq, kk)
            _merge_kernel(sd, si, sr, d, i, np.full((nq, kk), -1, np.int64))
    else:
        c_keep = min(c_keep, n)
        kk = min(k, c_keep)
        d, i = _empty_topk(nq, kk)
        if n_shards == 1:
            _two_stage_kernel(p, cw, idv, scan_ids, ids_sorted, nbytes, c_keep, kk, d, i)
        else:
            qw = _words(np.packbits(p > 0.5, axis=1))
            rows, _ = _hamming_select(qw, cw, idv, ids_sorted, c_keep, n_bits, n_shards)
            _rerank_rows_checked(p, rows, cw, idv if ids_given else None, nbytes, kk, d, i)
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
) -> RowHits:
    """Symmetric Hamming top-k: :class:`RowHits` ``(rows int64 (Q, k), distances int32 (Q, k))``.

    Returns ROW numbers into ``codes`` (not ids), ascending by (distance, id, row); ``ids`` (N,)
    only sets the tie order (default: the row number). Slots beyond N hold row -1 and distance
    ``HAMMING_PAD``. Selection is a one-pass counting threshold inside the kernel (no argpartition).
    """
    k = check_positive_int(k, "k")
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
        return RowHits(out_r, out_d)
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
    return RowHits(out_r, out_d)


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
