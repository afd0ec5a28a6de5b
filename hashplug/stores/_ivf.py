"""An inverted file over packed codes: LocalStore's sub-linear coarse stage (issue 17).

Centroids are binary codes trained by k-majority (Lloyd's k-means in Hamming space: each centroid
bit is the majority bit of its members) on a sample, in two levels: about ``sqrt(nlist)`` top
centroids, then as many fine ones among each top one's members; a code belongs to the list of
the nearest fine centroid among those of its 8 nearest top ones (assignment costs about
``9 sqrt(nlist)`` distances, not ``nlist``; with only the nearest top one, codes near a border
land in poorer lists: text recall at 7% scanned fell from 0.94 to 0.88). A query probes its own list and the ``nprobe - 1`` lists whose members' mean +-1
code is nearest to its +-1 code (the means carry more than the majority bits), among the
``2 nprobe`` lists with the nearest centroids (so a probe reads the packed centroids and a few
means, not every mean); its Hamming top-C
is selected from the rows of those lists only. Rows are kept list by list in one array, so a probe
reads contiguous blocks. Why not multi-index hashing: the coarse stage returns hundreds to
thousands of candidates, i.e. radii of 10+ bits at 64 bits, where it enumerates too many buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._kernels.ivf import (
    _assign2_kernel,
    _assign_kernel,
    _bit_counts,
    _list_order,
    _probe_kernel,
    _probed_select_kernel,
)
from ..rerank import _words
from ._segments import take_rows
from .base import HAMMING_PAD

__all__ = ["CodeIVF", "Lists", "auto_nlist", "tune_nprobe", "MIN_PER_LIST", "DEFAULT_NPROBE"]

#: Fewest codes per list for training (as FAISS); smaller collections are scanned exhaustively.
MIN_PER_LIST = 39
#: Lists probed per query by an explicit ``nprobe`` default (the store's default is ``"auto"``).
DEFAULT_NPROBE = 64
#: The self-query recall ``nprobe="auto"`` asks for.
AUTO_TARGET = 0.95


def auto_nlist(n: int) -> int:
    """Return the lists for ``ivf="auto"`` over ``n`` codes: the power of two nearest ``16 sqrt(n)``.

    At most 65536 and ``n // MIN_PER_LIST``; 0 when ``n`` is too small for 2 lists. (FAISS's
    usual rule is 4 sqrt(n); finer lists scan fewer rows per recall: 10M text codes, recall@10
    0.955 from 0.65% of the rows with 65536 lists, 0.946 from 1.42% with 16384.)
    """
    if n < 2 * MIN_PER_LIST:
        return 0
    want = 2 ** round(math.log2(16 * math.sqrt(n)))
    return int(max(2, min(want, 65536, n // MIN_PER_LIST)))


@dataclass(eq=False)
class CodeIVF:
    """Trained centroids of an inverted file (see the module docstring).

    Attributes
    ----------
    top : (n_top, n_bytes) uint8 packed top-level binary centroids.
    centroids : (n_top * per_top, n_bytes) uint8 packed fine centroids, ``per_top`` per top one.
    means : (nlist, n_bits) float32 mean +-1 code of each list's training members (probing).
    trained_on : number of codes in the collection when it was trained.
    n_near : top centroids whose fine ones an assignment compares.
    """

    top: NDArray[np.uint8]
    centroids: NDArray[np.uint8]
    means: NDArray[np.float32]
    trained_on: int
    n_near: int = 8
    _half: NDArray[np.float32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._half = 0.5 * np.einsum("ij,ij->i", self.means, self.means)

    @property
    def nlist(self) -> int:
        """Number of lists."""
        return int(self.centroids.shape[0])

    @classmethod
    def fit(
        cls, codes: NDArray[np.uint8], nlist: int, *, iters: int = 10, seed: int = 0
    ) -> CodeIVF:
        """Train about ``nlist`` lists in two levels by k-majority on a sample of the codes.

        ``sqrt(nlist)`` top centroids, then as many fine ones inside each (one level up to
        1024 lists); the sample holds at most ``48 * nlist`` codes. Raises ``ValueError``
        when there are fewer than ``MIN_PER_LIST * nlist`` codes.
        """
        n = int(codes.shape[0])
        if n < MIN_PER_LIST * nlist:
            raise ValueError(
                f"an inverted file of {nlist} lists needs at least {MIN_PER_LIST * nlist} codes, "
                f"the collection has {n}; use fewer lists or ivf='auto'"
            )
        rng = np.random.default_rng(seed)
        m = min(n, 48 * nlist)
        sample = codes[np.sort(rng.choice(n, m, replace=False))] if m < n else codes
        bits = np.unpackbits(sample, axis=1)
        n_top = 1 if nlist <= 1024 else int(round(math.sqrt(nlist)))
        per_top = -(-nlist // n_top)
        top, a_top = _kmajority(sample, bits, n_top, iters, rng)
        fine = np.empty((n_top * per_top, codes.shape[1]), np.uint8)
        lists = np.empty(m, np.int64)
        for t in range(n_top):
            rows = np.flatnonzero(a_top == t)
            if rows.size >= per_top:
                c, a = _kmajority(sample[rows], bits[rows], per_top, iters, rng)
            else:  # too few members: their own codes, the rest copies (empty lists)
                c = np.repeat(top[t : t + 1], per_top, axis=0)
                c[: rows.size] = sample[rows]
                a = np.arange(rows.size)
            fine[t * per_top : (t + 1) * per_top] = c
            lists[rows] = t * per_top + a
        ones, cnt = _bit_counts(bits, lists, fine.shape[0])
        means = (2.0 * ones / np.maximum(cnt, 1)[:, None] - 1.0).astype(np.float32)
        means[cnt == 0] = np.unpackbits(fine[cnt == 0], axis=1) * 2.0 - 1.0
        return cls(top, fine, means, n)

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        """Return the centroids as named arrays (for :meth:`from_arrays`)."""
        info = np.array([self.trained_on, self.n_near], np.int64)
        return {"top": self.top, "centroids": self.centroids, "means": self.means, "info": info}

    @classmethod
    def from_arrays(cls, a: dict[str, NDArray[Any]], n_bytes: int) -> CodeIVF:
        """Rebuild from :meth:`to_arrays`; ``ValueError`` when they do not fit ``n_bytes`` codes."""
        top, cent, means, info = a["top"], a["centroids"], a["means"], a["info"]
        ok = (
            top.dtype == cent.dtype == np.uint8
            and top.ndim == cent.ndim == 2
            and top.shape[1] == cent.shape[1] == n_bytes
            and 0 < top.shape[0] <= cent.shape[0]
            and cent.shape[0] % top.shape[0] == 0
            and means.shape == (cent.shape[0], 8 * n_bytes)
            and info.shape == (2,)
        )
        if not ok:
            raise ValueError("the saved inverted file does not fit these codes")
        return cls(top, cent, means.astype(np.float32), int(info[0]), int(info[1]))

    @property
    def per_top(self) -> int:
        """Fine lists per top centroid."""
        return self.nlist // int(self.top.shape[0])

    def assign(self, codes: NDArray[np.uint8]) -> NDArray[np.int32]:
        """Return the list of each code: its nearest fine centroid under its ``n_near`` nearest tops."""
        out = np.empty(codes.shape[0], np.int32)
        if codes.shape[0]:
            _assign2_kernel(_words(codes), _words(self.top), _words(self.centroids),
                            self.per_top, self.n_near, out)  # fmt: skip
        return out

    def probe(self, query_codes: NDArray[np.uint8], nprobe: int) -> NDArray[np.int64]:
        """Return (q, nprobe) the lists to scan per query, nearest first.

        First the query's own list (where an equal code is), then by distance to the list means
        among the ``2 nprobe`` (at least 64) lists whose centroids are nearest in Hamming distance.
        """
        q = np.ascontiguousarray(query_codes)
        p = min(nprobe, self.nlist)
        out = np.full((q.shape[0], p), -1, np.int64)
        if q.shape[0]:
            _probe_kernel(
                _words(q), _words(self.top), _words(self.centroids), self.per_top, self.n_near,
                self.means, self._half, max(2 * p, 64), p, q.shape[1] * 8,
                _dist_type(q.shape[1] * 8), out,
            )  # fmt: skip
        return out


def _dist_type(n_bits: int) -> NDArray[np.generic]:
    """Return an empty array of the type the kernels keep distances in (uint8 up to 255 bits)."""
    return np.empty(0, np.uint8 if n_bits <= 255 else np.int16)


def _assign(codes: NDArray[np.uint8], centroids: NDArray[np.uint8]) -> NDArray[np.int32]:
    out = np.empty(codes.shape[0], np.int32)
    if codes.shape[0]:
        _assign_kernel(_words(codes), _words(centroids), out)
    return out


def _kmajority(
    sample: NDArray[np.uint8], bits: NDArray[np.uint8], k: int, iters: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:  # fmt: skip
    """Return k binary centroids (k-means in Hamming space, majority bits) and the assignment."""
    m = sample.shape[0]
    cent = sample[rng.choice(m, k, replace=False)].copy()
    for _ in range(iters):
        ones, cnt = _bit_counts(bits, _assign(sample, cent), k)
        new = np.packbits(2 * ones > cnt[:, None], axis=1)
        empty = cnt == 0
        if empty.any():  # re-seed empty lists from random codes
            new[empty] = sample[rng.choice(m, int(empty.sum()), replace=False)]
        cent = new
    return cent, _assign(sample, cent)


@dataclass(eq=False)
class Lists:
    """One store state's rows grouped by list: list ``l`` is ``order[offsets[l]:offsets[l+1]]``.

    ``state_ids`` is the state's id array it was made for (compared by identity); ``ids`` and
    ``codes`` are copies in list order, so the hits of a probe are read from a few blocks.
    ``tail``: rows appended after the grouping (state rows ``order.size`` on), grouped alike
    and probed with the same lists, so a write costs O(rows written), not a regrouping of all.
    """

    ivf: CodeIVF
    state_ids: NDArray[np.int64]
    order: NDArray[np.int64]
    offsets: NDArray[np.int64]
    ids: NDArray[np.int64]
    codes: NDArray[np.uint8]
    tail: Lists | None = None
    _sizes: NDArray[np.int64] | None = field(default=None, init=False, repr=False)
    _cw: NDArray[np.uint64] | None = field(default=None, init=False, repr=False)

    @classmethod
    def make(
        cls,
        ivf: CodeIVF,
        ids: NDArray[np.int64],
        codes: NDArray[np.uint8],
        assign: NDArray[np.int32],
    ) -> Lists:
        """Group the rows of ``codes`` by their lists ``assign``."""
        order, offsets = _list_order(assign, ivf.nlist)
        return cls(ivf, ids, order, offsets, ids[order], take_rows(codes, order))

    def extended(
        self, ids: NDArray[np.int64], codes: NDArray[np.uint8], assign: NDArray[np.int32]
    ) -> Lists:
        """Return the lists of a state whose first rows are this one's: the rest form the tail."""
        n0 = self.order.size
        tail = Lists.make(self.ivf, ids[n0:], codes[n0:], assign[n0:])
        tail.order += n0
        out = Lists(self.ivf, ids, self.order, self.offsets, self.ids, self.codes, tail)
        out._cw = self._cw
        return out

    @property
    def tail_rows(self) -> int:
        """Rows in the tail."""
        return 0 if self.tail is None else int(self.tail.order.size)

    def select(
        self, query_codes: NDArray[np.uint8], limit: int, nprobe: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Return (positions, Hamming distances) (q, limit) from the probed lists.

        A query probes at least ``nprobe`` lists, and more when those hold fewer than ``limit``
        rows; position -1 (distance ``HAMMING_PAD``) pads. Equal distances come in probe order
        (the tail's after the grouped rows'). :meth:`hits` also reads the hits' ids and codes.
        """
        pos, dist, _, _ = self.hits(query_codes, limit, nprobe)
        return pos, dist

    def hits(
        self, query_codes: NDArray[np.uint8], limit: int, nprobe: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64], NDArray[np.uint8]]:
        """Return :meth:`select`'s (positions, distances) with the hits' ids and codes.

        Ids are -1 and codes 0 where positions pad; :meth:`rows` maps positions to state rows.
        """
        q = np.ascontiguousarray(query_codes)
        probes = self._probes(q, limit, nprobe)
        pos, dist, ids, words = self._scan(q, probes, limit)
        if self.tail is not None and self.tail.order.size:
            t_p, t_d, t_i, t_w = self.tail._scan(q, probes, limit)
            t_p = np.where(t_p >= 0, t_p + self.order.size, -1)
            best = np.argsort(np.concatenate([dist, t_d], axis=1), axis=1, kind="stable")
            best = best[:, :limit]

            def merged(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
                both = np.concatenate([a, b], axis=1)
                return np.take_along_axis(both, best.reshape(best.shape + (1,) * (a.ndim - 2)), 1)

            pos, dist, ids, words = (merged(pos, t_p), merged(dist, t_d), merged(ids, t_i),
                                     merged(words, t_w))  # fmt: skip
        codes = words.view(np.uint8).reshape(q.shape[0], limit, -1)[:, :, : q.shape[1]]
        return pos, dist, ids, codes

    def rows(self, pos: NDArray[np.int64]) -> NDArray[np.int64]:
        """Return the state rows at :meth:`select`'s (non-negative) positions."""
        if self.tail is None:
            return self.order[pos]
        n0 = self.order.size
        t = pos >= n0
        return np.where(
            t, self.tail.order[np.where(t, pos - n0, 0)], self.order[np.where(t, 0, pos)]
        )

    def _probes(self, q: NDArray[np.uint8], limit: int, nprobe: int) -> NDArray[np.int64]:
        """Return the lists each query scans: ``nprobe``, widened (doubling) to hold ``limit`` rows."""
        nq = q.shape[0]
        probes = self.ivf.probe(q, nprobe)
        sizes = self.sizes
        short = sizes[probes].sum(axis=1) < limit
        p = probes.shape[1]
        if not short.any() or p >= self.ivf.nlist:
            return probes
        w = p
        while True:
            w = min(self.ivf.nlist, 2 * w)
            full = self.ivf.probe(q[short], w)
            if w == self.ivf.nlist or (sizes[full].sum(axis=1) >= limit).all():
                break
        need = (np.cumsum(sizes[full], axis=1) < limit).sum(axis=1) + 1
        width = int(min(w, max(need.max(), p)))
        wide = np.full((nq, width), -1, np.int64)
        wide[:, :p] = probes
        wide[short] = np.where(np.arange(width) < need[:, None], full[:, :width], -1)
        return wide

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Rows per list (the tail's included)."""
        if self._sizes is None:
            sizes = np.diff(self.offsets)
            self._sizes = sizes if self.tail is None else sizes + np.diff(self.tail.offsets)
        return self._sizes

    @property
    def words(self) -> NDArray[np.uint64]:
        """The list-ordered codes as uint64 words (kept: a copy where the rows need padding)."""
        if self._cw is None:
            self._cw = _words(self.codes)
        return self._cw

    def _scan(
        self, q: NDArray[np.uint8], probes: NDArray[np.int64], limit: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int64], NDArray[np.uint64]]:
        nq = q.shape[0]
        out_r = np.full((nq, limit), -1, np.int64)
        out_d = np.full((nq, limit), HAMMING_PAD, np.int32)
        out_i = np.full((nq, limit), -1, np.int64)
        cw = self.words
        out_w = np.zeros((nq, limit, cw.shape[1]), np.uint64)
        _probed_select_kernel(
            _words(q), cw, self.ids, self.offsets, np.ascontiguousarray(probes, np.int64),
            limit, int(q.shape[1]) * 8, _dist_type(q.shape[1] * 8), out_r, out_d, out_i, out_w,
        )  # fmt: skip
        return out_r, out_d, out_i, out_w


def tune_nprobe(
    lists: Lists, codes: NDArray[np.uint8], limit: int, *, target: float = AUTO_TARGET,
    sample: int = 100, seed: int = 0, queries: NDArray[np.uint8] | None = None,
) -> int:  # fmt: skip
    """Return the fewest probes (8, 16, ..., nlist) that keep ``target`` recall on stored codes.

    ``sample`` stored codes serve as queries: the share of each one's exact Hamming
    top-``limit / 2`` (itself left out) found among the top-``limit`` of the probed lists.
    Half of C, not less, because stored codes have near-copies that sit in their own list (in
    the 10M tiled benchmark sets, 1000 noisy copies of each item): at C/5 the proxy chose 64
    probes on 10M text codes where held-out queries then reached 0.811. At C/2 it tracked their
    two-stage recall@10 within 0.01 on 10M text codes, and erred towards more probes on 1M
    codes (text: 1024 probes, 0.977, where 512 gave 0.966). ``codes``: the rows ``lists`` groups.

    ``queries``: real query codes to measure with instead, against their exact Hamming
    top-``limit / 5`` (on 10M text codes within 0.01 of the two-stage recall@10; on 1M, below it).
    """
    from ..rerank import hamming_topk

    n, nlist = int(codes.shape[0]), lists.ivf.nlist
    depth = max(10, limit // (2 if queries is None else 5))
    if depth + 1 >= n:
        return nlist
    if queries is None:
        rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
        q = np.ascontiguousarray(codes[rows])
        ref, _ = hamming_topk(q, codes, depth + 1)
        truth = [[r for r in ref[i].tolist() if r != rows[i]][:depth] for i in range(rows.size)]
    else:
        q = np.ascontiguousarray(queries)
        truth = [r.tolist() for r in hamming_topk(q, codes, depth)[0]]
    nprobe = 8
    while nprobe < nlist:
        pos, _ = lists.select(q, limit, nprobe)
        got = np.where(pos >= 0, lists.rows(np.maximum(pos, 0)), -1)
        rec = np.mean(
            [len(set(t) & set(g.tolist())) / len(t) for t, g in zip(truth, got, strict=True)]
        )
        if rec >= target:
            return nprobe
        nprobe *= 2
    return nlist
