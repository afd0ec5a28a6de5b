"""LocalStore's in-memory state and how segments (upserted rows, deleted ids) change it.

A state is a dict: ``meta`` (JSON or None), ``ids`` (N,), ``codes`` (N, n_bytes), ``payloads``
(list of N), ``corr`` (N, 2) float16 (NaN: no factors), ``index`` (an :class:`IdIndex` of ids),
``gen``, ``segments`` (the manifest entries it reflects; None when it must be rewritten whole),
and optionally ``lists`` (an inverted file and the list of each row, -1: not assigned yet; a
cache that searches fill and segments carry over).
States are replaced, never changed in place: a snapshot stays valid while writers go on. Rows
keep insertion order (ties in search are broken by it); a replaced id moves to the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["IdIndex", "empty_state", "apply_segment", "merge_segments", "corr_of", "whole"]


class IdIndex:
    """Row lookup by id: a sorted copy of the ids, built on first use."""

    def __init__(self, ids: NDArray[np.int64]) -> None:
        self.ids = ids
        self._order: NDArray[np.intp] | None = None
        self._sorted: NDArray[np.int64] | None = None

    def _build(self) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
        if self._order is None or self._sorted is None:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]
        return self._order, self._sorted

    def rows(self, q: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """(row of each id, found); rows of ids not found are meaningless."""
        order, srt = self._build()
        if not srt.size:
            return np.zeros(q.size, np.intp), np.zeros(q.size, bool)
        pos = np.minimum(np.searchsorted(srt, q), srt.size - 1)
        return order[pos], srt[pos] == q

    def appended(self, all_ids: NDArray[np.int64]) -> IdIndex:
        """Return the index of ``all_ids`` = these ids + new ones (none of them present).

        Merged in O(N) when this one is built.
        """
        out = IdIndex(all_ids)
        new_ids = all_ids[self.ids.size :]
        if self._order is not None and self._sorted is not None:
            o = np.argsort(new_ids, kind="stable")
            s = new_ids[o]
            pos = np.searchsorted(self._sorted, s)
            out._sorted = np.insert(self._sorted, pos, s)
            out._order = np.insert(self._order, pos, o + self.ids.size)
        return out


def empty_state(meta: str | None = None, n_bytes: int = 0) -> dict[str, Any]:
    ids = np.zeros(0, np.int64)
    return {
        "meta": meta,
        "ids": ids,
        "codes": np.zeros((0, n_bytes), np.uint8) if meta is not None else None,
        "payloads": [],
        "corr": np.zeros((0, 2), np.float16),
        "index": IdIndex(ids),
        "gen": 0,
        "segments": [],
    }


def corr_of(st: dict[str, Any]) -> NDArray[np.float16]:
    """Return the state's corrections (N, 2) float16, NaN where an item has none."""
    c = st.get("corr")
    n = st["ids"].size
    return c if c is not None and c.shape == (n, 2) else np.full((n, 2), np.nan, np.float16)


def _seg_corr(seg: dict[str, Any], n: int) -> NDArray[np.float16]:
    c = seg.get("corr")
    return c.astype(np.float16) if c is not None else np.full((n, 2), np.nan, np.float16)


def apply_segment(st: dict[str, Any], seg: dict[str, Any]) -> dict[str, Any]:
    """Return the state after one segment: its ``deleted`` ids removed, its rows upserted."""
    ids, codes, pl, corr = st["ids"], st["codes"], st["payloads"], corr_of(st)
    new_ids = seg.get("ids", np.zeros(0, np.int64))
    drop = np.concatenate([seg.get("deleted", np.zeros(0, np.int64)), new_ids])
    index: IdIndex = st["index"]
    rows, found = index.rows(drop) if drop.size and ids.size else (None, np.zeros(0, bool))
    lists = st.get("lists")
    if found.any():
        assert rows is not None
        keep = np.ones(ids.size, bool)
        keep[rows[found]] = False
        ids, codes, corr = ids[keep], codes[keep], corr[keep]
        pl = [p for p, k in zip(pl, keep.tolist(), strict=True) if k]
        index = IdIndex(ids)
        lists = (lists[0], lists[1][keep]) if lists is not None else None
    if not new_ids.size:
        return {
            **st, "ids": ids, "codes": codes, "payloads": pl, "corr": corr, "index": index,
            "lists": lists,
        }  # fmt: skip
    all_ids = np.concatenate([ids, new_ids])
    if lists is not None:  # new rows: not assigned yet
        lists = (lists[0], np.concatenate([lists[1], np.full(new_ids.size, -1, np.int32)]))
    return {
        **st,
        "ids": all_ids,
        "codes": np.concatenate([codes, seg["codes"]]),
        "payloads": pl + list(seg["payloads"]),
        "corr": np.concatenate([corr, _seg_corr(seg, new_ids.size)]),
        "index": index.appended(all_ids),
        "lists": lists,
    }


def merge_segments(meta: str, n_bytes: int, segs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the state of a whole segment list, in one pass.

    The same result as applying them in order.
    """
    st = empty_state(meta, n_bytes)
    if len(segs) <= 1:
        return apply_segment(st, segs[0]) if segs else st
    z = np.zeros(0, np.int64)
    ids = np.concatenate([s.get("ids", z) for s in segs])
    seq = np.concatenate([np.full(s.get("ids", z).size, i) for i, s in enumerate(segs)])
    dels = np.concatenate([s.get("deleted", z) for s in segs])
    dseq = np.concatenate([np.full(s.get("deleted", z).size, i) for i, s in enumerate(segs)])
    codes = np.concatenate([s["codes"] for s in segs if "codes" in s] or [st["codes"]])
    corr = np.concatenate([_seg_corr(s, s.get("ids", z).size) for s in segs])
    pl_all = [p for s in segs for p in s["payloads"]]
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    if not dels.size and not (srt[1:] == srt[:-1]).any():  # a plain bulk ingest: keep every row
        index = IdIndex(ids)
        index._order, index._sorted = order, srt
        return {**st, "ids": ids, "codes": codes, "payloads": pl_all, "corr": corr, "index": index}
    # The last row of each id, unless a later segment deletes it (a segment's deletes come first).
    rev = ids[::-1]
    _, first_rev = np.unique(rev, return_index=True)
    last = np.sort(ids.size - 1 - first_rev)
    if dels.size:
        o = np.lexsort((dseq, dels))
        d_ids, d_seq = dels[o], dseq[o]
        ends = np.r_[np.flatnonzero(d_ids[1:] != d_ids[:-1]), d_ids.size - 1]
        u_ids, u_seq = d_ids[ends], d_seq[ends]  # each deleted id's last delete
        pos = np.minimum(np.searchsorted(u_ids, ids[last]), u_ids.size - 1)
        gone = (u_ids[pos] == ids[last]) & (u_seq[pos] > seq[last])
        last = last[~gone]
    kept = ids[last]
    return {
        **st,
        "ids": kept,
        "codes": codes[last],
        "payloads": [pl_all[i] for i in last.tolist()],
        "corr": corr[last],
        "index": IdIndex(kept),
    }


def whole(st: dict[str, Any]) -> dict[str, Any]:
    """Return the state's rows as one segment (for a compaction)."""
    seg: dict[str, Any] = {"ids": st["ids"], "codes": st["codes"], "payloads": st["payloads"]}
    corr = corr_of(st)
    if not np.isnan(corr).all():  # absent: no item has corrections
        seg["corr"] = corr
    return seg
