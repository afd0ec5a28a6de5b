"""An inverted file over packed codes: LocalStore's sub-linear coarse stage (issue 17).

Centroids are binary codes trained by k-majority (Lloyd's k-means in Hamming space: each centroid
bit is the majority bit of its members) on a sample; a code belongs to the list of its nearest
centroid. A query probes its own list and the ``nprobe - 1`` lists whose members' mean +-1 code
is nearest to its +-1 code (the means carry more than the majority bits); its Hamming top-C is
selected from the rows of those lists only. Rows are kept list by list in one array, so a probe
reads contiguous blocks. Why not multi-index hashing: the coarse stage returns hundreds to thousands of
candidates, i.e. radii of 10+ bits at 64 bits, where it enumerates too many buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .._kernels.ivf import _assign_kernel, _bit_counts, _list_order, _probed_select_kernel
from ..rerank import _words
from .base import HAMMING_PAD

__all__ = ["CodeIVF", "Lists", "auto_nlist", "MIN_PER_LIST", "DEFAULT_NPROBE"]

#: Fewest codes per list for training (as FAISS); smaller collections are scanned exhaustively.
MIN_PER_LIST = 39
#: Lists probed per query unless the store sets ``nprobe``.
DEFAULT_NPROBE = 32


def auto_nlist(n: int) -> int:
    """Return the lists for ``ivf="auto"`` over ``n`` codes: the power of two nearest ``sqrt(n)``.

    At most 4096 (so assigning 10M codes takes seconds, not minutes) and at most
    ``n // MIN_PER_LIST``; 0 when ``n`` is too small for 2 lists.
    """
    if n < 2 * MIN_PER_LIST:
        return 0
    want = 2 ** round(math.log2(math.sqrt(n)))
    return int(max(2, min(want, 4096, n // MIN_PER_LIST)))


@dataclass(eq=False)
class CodeIVF:
    """Trained centroids of an inverted file (see the module docstring).

    Attributes
    ----------
    centroids : (nlist, n_bytes) uint8 packed binary centroids (assignment).
    means : (nlist, n_bits) float32 mean +-1 code of each list's training members (probing).
    trained_on : number of codes in the collection when it was trained.
    """

    centroids: NDArray[np.uint8]
    means: NDArray[np.float32]
    trained_on: int

    @property
    def nlist(self) -> int:
        """Number of lists."""
        return int(self.centroids.shape[0])

    @classmethod
    def fit(
        cls, codes: NDArray[np.uint8], nlist: int, *, iters: int = 10, seed: int = 0
    ) -> CodeIVF:
        """Train ``nlist`` centroids by k-majority on at most ``64 * nlist`` sampled codes.

        Raises ``ValueError`` when there are fewer than ``MIN_PER_LIST * nlist`` codes.
        """
        n = int(codes.shape[0])
        if n < MIN_PER_LIST * nlist:
            raise ValueError(
                f"an inverted file of {nlist} lists needs at least {MIN_PER_LIST * nlist} codes, "
                f"the collection has {n}; use fewer lists or ivf='auto'"
            )
        rng = np.random.default_rng(seed)
        m = min(n, 64 * nlist)
        sample = codes[np.sort(rng.choice(n, m, replace=False))] if m < n else codes
        bits = np.unpackbits(sample, axis=1)
        cent = sample[rng.choice(m, nlist, replace=False)].copy()
        for _ in range(iters):
            assign = _assign(sample, cent)
            ones, cnt = _bit_counts(bits, assign, nlist)
            new = np.packbits(2 * ones > cnt[:, None], axis=1)
            empty = cnt == 0
            if empty.any():  # re-seed empty lists from random codes
                new[empty] = sample[rng.choice(m, int(empty.sum()), replace=False)]
            cent = new
        ones, cnt = _bit_counts(bits, _assign(sample, cent), nlist)
        means = (2.0 * ones / np.maximum(cnt, 1)[:, None] - 1.0).astype(np.float32)
        means[cnt == 0] = np.unpackbits(cent[cnt == 0], axis=1) * 2.0 - 1.0
        return cls(cent, means, n)

    def assign(self, codes: NDArray[np.uint8]) -> NDArray[np.int32]:
        """Return the list of each code (its nearest centroid)."""
        return _assign(codes, self.centroids)

    def probe(self, query_codes: NDArray[np.uint8], nprobe: int) -> NDArray[np.int64]:
        """Return (q, nprobe) the lists to scan per query, nearest first.

        First the query's own list (where an equal code is), then by distance to the means.
        """
        signs = np.unpackbits(query_codes, axis=1).astype(np.float32) * 2.0 - 1.0
        half = 0.5 * np.einsum("ij,ij->i", self.means, self.means)
        score = half - signs @ self.means.T  # smaller is nearer (half the squared L2)
        score[np.arange(score.shape[0]), self.assign(query_codes)] = -np.inf
        p = min(nprobe, self.nlist)
        if p == self.nlist:
            return np.argsort(score, axis=1, kind="stable")
        top = np.argpartition(score, p - 1, axis=1)[:, :p]
        return np.take_along_axis(top, np.argsort(np.take_along_axis(score, top, 1), 1), 1)


def _assign(codes: NDArray[np.uint8], centroids: NDArray[np.uint8]) -> NDArray[np.int32]:
    out = np.empty(codes.shape[0], np.int32)
    dist = np.empty(codes.shape[0], np.int32)
    if codes.shape[0]:
        _assign_kernel(_words(codes), _words(centroids), out, dist)
    return out


@dataclass(eq=False)
class Lists:
    """One store state's rows grouped by list: list ``l`` is ``order[offsets[l]:offsets[l+1]]``.

    ``ids`` is the state's id array it was made for (compared by identity).
    """

    ivf: CodeIVF
    ids: NDArray[np.int64]
    order: NDArray[np.int64]
    offsets: NDArray[np.int64]
    words: NDArray[np.uint64]

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
        return cls(ivf, ids, order, offsets, _words(np.ascontiguousarray(codes[order])))

    def select(
        self, query_codes: NDArray[np.uint8], limit: int, nprobe: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Return (state rows, Hamming distances) (q, limit) from each query's probed lists.

        A query probes at least ``nprobe`` lists, and more when those hold fewer than ``limit``
        rows; row -1 (distance ``HAMMING_PAD``) pads. Equal distances come in probe order.
        """
        nq = query_codes.shape[0]
        probes = self.ivf.probe(query_codes, nprobe)
        sizes = np.diff(self.offsets)
        short = sizes[probes].sum(axis=1) < limit
        if short.any() and probes.shape[1] < self.ivf.nlist:  # widen these queries' probes
            full = self.ivf.probe(query_codes[short], self.ivf.nlist)
            need = (np.cumsum(sizes[full], axis=1) < limit).sum(axis=1) + 1
            width = int(min(self.ivf.nlist, need.max()))
            wide = np.full((nq, width), -1, np.int64)
            wide[:, : probes.shape[1]] = probes
            wide[short] = np.where(np.arange(width) < need[:, None], full[:, :width], -1)
            probes = wide
        out_r = np.full((nq, limit), -1, np.int64)
        out_d = np.full((nq, limit), HAMMING_PAD, np.int64)
        n_bits = int(query_codes.shape[1]) * 8
        _probed_select_kernel(
            _words(np.ascontiguousarray(query_codes)), self.words, self.offsets,
            np.ascontiguousarray(probes, dtype=np.int64), limit, n_bits, out_r, out_d,
        )  # fmt: skip
        rows = np.where(out_r >= 0, self.order[np.maximum(out_r, 0)], -1)
        return rows, out_d
