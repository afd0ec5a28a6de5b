"""LocalStore's in-memory state and how segments (upserted rows, deleted ids) change it.

A state is a dict: ``meta`` (JSON or None), ``ids`` (N,), ``codes`` (N, n_bytes), ``payloads``
(a :class:`Rows` of N), ``corr`` (N, 2) float16 (NaN: no factors), ``index`` (an
:class:`IdIndex` of ids), ``gen``, ``segments`` (the manifest entries it reflects; None when it
must be rewritten whole), ``ids_sorted`` (ids non-decreasing: search ties need no sort),
``spare`` (the growable buffers behind the columns), ``dead`` (sorted rows of deleted or
replaced ids, which reads skip) and optionally ``lists`` (an inverted file and the list of each
row, -1: not assigned yet; a cache that searches fill and segments carry over).
States are never changed where another state can see it: a snapshot stays valid while writers
go on. Appends write past the end of the buffers a state's columns are prefixes of, so a bulk
ingest costs O(rows written), not O(N) per batch; a delete or a replaced id adds dead rows,
and the columns are copied without them once there are ``dead_limit(N)`` of them.
Rows keep insertion order (ties in search are broken by it); a replaced id moves to the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "IdIndex", "Rows", "empty_state", "apply_segment", "merge_segments", "merge_run", "corr_of",
    "whole", "dead_of", "live_rows", "dead_limit", "take_rows", "MAX_DEAD",
]  # fmt: skip

#: Most dead rows a state keeps (searches ask for this many more candidates, then skip them).
MAX_DEAD = 4096
_NO_ROWS = np.zeros(0, np.intp)


#: A sorted run of ids and the row of each: an array, or an int r0 for rows r0, r0 + 1, ...
_Run = tuple[NDArray[np.int64], "NDArray[np.int64] | int"]


def _order(run: _Run) -> NDArray[np.int64]:
    srt, order = run
    return np.arange(order, order + srt.size) if isinstance(order, int) else order


class IdIndex:
    """Row lookup by id: sorted runs of the ids (built on first use), merged as they grow.

    An append adds a run of the new ids; runs of similar size are merged (the logarithmic
    method), so N appended ids cost O(N log N) in all and a lookup searches O(log N) runs. Ids
    that are already in order (an ingest of increasing ids) make runs without a sort or a row
    array.
    """

    def __init__(self, ids: NDArray[np.int64]) -> None:
        self.ids = ids
        self._runs: list[_Run] | None = None

    def _built(self) -> list[_Run]:
        if self._runs is None:
            ids = self.ids
            if np.all(ids[1:] >= ids[:-1]):
                self._runs = [(ids, 0)]
            else:
                order = np.argsort(ids, kind="stable")
                self._runs = [(ids[order], order)]
        return self._runs

    def rows(self, q: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """(newest row of each id, found); rows of ids not found are meaningless.

        An id has several rows when older ones are dead (see :func:`apply_segment`).
        """
        rows = np.zeros(q.size, np.intp)
        found = np.zeros(q.size, bool)
        for srt, order in self._built():  # oldest run first: later runs overwrite
            if not srt.size:
                continue
            pos = np.maximum(np.searchsorted(srt, q, side="right") - 1, 0)
            hit = srt[pos] == q
            rows[hit] = pos[hit] + order if isinstance(order, int) else order[pos[hit]]
            found |= hit
        return rows, found

    def appended(self, all_ids: NDArray[np.int64]) -> IdIndex:
        """Return the index of ``all_ids`` = these ids + new ones (none of them present)."""
        out = IdIndex(all_ids)
        if self._runs is not None:
            n0 = self.ids.size
            new = all_ids[n0:]
            if np.all(new[1:] >= new[:-1]):
                run: _Run = (new, n0)
            else:
                o = np.argsort(new, kind="stable")
                run = (new[o], o + n0)
            runs = [*self._runs, run]
            while len(runs) > 1 and runs[-2][0].size <= 2 * runs[-1][0].size:
                (s1, o1), (s2, o2) = runs[-2], runs[-1]
                s = np.concatenate([s1, s2])
                if s1.size and s2.size and s1[-1] > s2[0]:  # overlapping: a linear merge
                    m = np.argsort(s, kind="stable")
                    runs[-2:] = [(s[m], np.concatenate([_order(runs[-2]), _order(runs[-1])])[m])]
                elif isinstance(o1, int) and isinstance(o2, int) and o1 + s1.size == o2:
                    runs[-2:] = [(s, o1)]  # consecutive rows in order: still no row array
                else:
                    runs[-2:] = [(s, np.concatenate([_order(runs[-2]), _order(runs[-1])]))]
            out._runs = runs
        return out


class Rows(Sequence[Any]):
    """The first ``n`` items of a list that later states may extend (payloads)."""

    def __init__(self, items: list[Any], n: int | None = None) -> None:
        self.items = items
        self.n = len(items) if n is None else n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self.items[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.items[i % self.n]

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.items, self.n)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rows | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def plus(self, new: Sequence[Any]) -> Rows:
        """Return these rows followed by ``new``, extending the shared list when it ends here."""
        if len(self.items) == self.n:
            self.items.extend(new)
            return Rows(self.items, self.n + len(new))
        return Rows([*self, *new])


class _Buffer:
    """A column's storage: ``data[:used]`` is written, states hold prefixes of it."""

    __slots__ = ("data", "used")

    def __init__(self, data: NDArray[Any], used: int) -> None:
        self.data, self.used = data, used


def _grow(
    view: NDArray[Any], new: NDArray[Any], buf: _Buffer | None
) -> tuple[NDArray[Any], _Buffer]:
    """Return ``view`` followed by ``new``, written into ``buf`` when ``view`` is its written end."""
    n, m = view.shape[0], new.shape[0]
    if buf is None or buf.used != n or buf.data.shape[0] < n + m or view.base is not buf.data:
        data = np.empty((max(n + m, (n + m) * 3 // 2, 1024), *view.shape[1:]), view.dtype)
        data[:n] = view
        buf = _Buffer(data, n)
    buf.data[n : n + m] = new
    buf.used = n + m
    return buf.data[: n + m], buf


def _drop(a: NDArray[Any], rows: NDArray[np.intp]) -> NDArray[Any]:
    """Return a copy of ``a`` without the (sorted, unique) ``rows``: whole blocks for few rows."""
    if rows.size > 256:
        keep = np.ones(a.shape[0], bool)
        keep[rows] = False
        return np.take(a, np.flatnonzero(keep), axis=0)  # faster than a[keep] on 2-D rows
    bounds = np.r_[-1, rows, a.shape[0]]
    return np.concatenate([a[b + 1 : e] for b, e in zip(bounds[:-1], bounds[1:], strict=True)])


def _drop_items(items: Sequence[Any], rows: NDArray[np.intp]) -> list[Any]:
    """Return a list of ``items`` without the ``rows``."""
    keep = np.ones(len(items), bool)
    keep[rows] = False
    return list(itertools.compress(items, keep.tolist()))


def take_rows(codes: NDArray[np.uint8], rows: NDArray[np.intp]) -> NDArray[np.uint8]:
    """Return ``codes[rows]`` (rows of any shape), gathering whole rows at once (5x a 2-D index)."""
    c = np.ascontiguousarray(codes)
    whole_rows = c.view(np.dtype((np.void, c.shape[1]))).reshape(-1)
    return whole_rows[rows].view(np.uint8).reshape(*np.shape(rows), c.shape[1])


def empty_state(meta: str | None = None, n_bytes: int = 0) -> dict[str, Any]:
    ids = np.zeros(0, np.int64)
    return {
        "meta": meta,
        "ids": ids,
        "codes": np.zeros((0, n_bytes), np.uint8) if meta is not None else None,
        "payloads": Rows([]),
        "corr": np.zeros((0, 2), np.float16),
        "index": IdIndex(ids),
        "gen": 0,
        "segments": [],
        "ids_sorted": True,
    }


def corr_of(st: dict[str, Any]) -> NDArray[np.float16]:
    """Return the state's corrections (N, 2) float16, NaN where an item has none."""
    c = st.get("corr")
    n = st["ids"].size
    return c if c is not None and c.shape == (n, 2) else np.full((n, 2), np.nan, np.float16)


def _seg_corr(seg: dict[str, Any], n: int) -> NDArray[np.float16]:
    c = seg.get("corr")
    return c.astype(np.float16) if c is not None else np.full((n, 2), np.nan, np.float16)


def dead_of(st: dict[str, Any]) -> NDArray[np.intp]:
    """Return the state's dead rows (sorted): rows deleted or replaced, not yet removed."""
    d = st.get("dead")
    return d if d is not None else _NO_ROWS


def live_rows(
    st: dict[str, Any], q: NDArray[np.int64]
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Return (row of each id, found) among the live rows of the state."""
    rows, found = st["index"].rows(q)
    dead = dead_of(st)
    if dead.size and found.any():
        found &= ~np.isin(rows, dead)
    return rows, found


def _all_new(st: dict[str, Any], seg: dict[str, Any], new_ids: NDArray[np.int64]) -> bool:
    """Tell whether ``seg`` deletes nothing and only appends ids above every stored one."""
    ids = st["ids"]
    return (
        "deleted" not in seg
        and bool(st.get("ids_sorted"))
        and new_ids.size > 0
        and int(new_ids.min()) > int(ids[-1])
    )


def dead_limit(n: int) -> int:
    """Return the most dead rows a state of ``n`` rows keeps before removing them (a copy)."""
    return min(MAX_DEAD, max(64, n // 16))


def apply_segment(st: dict[str, Any], seg: dict[str, Any]) -> dict[str, Any]:
    """Return the state after one segment: its ``deleted`` ids removed, its rows upserted.

    The rows of deleted or replaced ids become dead rows (a sorted list of row numbers) that
    searches and lookups skip; past :func:`dead_limit` of them, the columns are copied without
    them. So a delete or a replacement costs O(rows changed), plus an O(N) copy now and then.
    """
    ids, codes, pl, corr = st["ids"], st["codes"], st["payloads"], corr_of(st)
    spare: dict[str, _Buffer] = st.get("spare", {})
    new_ids = seg.get("ids", np.zeros(0, np.int64))
    drop = np.concatenate([seg.get("deleted", np.zeros(0, np.int64)), new_ids])
    index: IdIndex = st["index"]
    rows, found = None, np.zeros(0, bool)
    if drop.size and ids.size and not _all_new(st, seg, new_ids):
        rows, found = live_rows(st, drop)
    lists = st.get("lists")
    dead = dead_of(st)
    if found.any():
        assert rows is not None
        dead = np.union1d(dead, rows[found])
    if dead.size > dead_limit(ids.size):  # remove the dead rows: copy the columns
        ids, codes, corr = _drop(ids, dead), _drop(codes, dead), _drop(corr, dead)
        pl = Rows(_drop_items(pl, dead))
        index = IdIndex(ids)
        lists = (lists[0], _drop(lists[1], dead)) if lists is not None else None
        spare, dead = {}, _NO_ROWS
    if not new_ids.size:
        return {
            **st, "ids": ids, "codes": codes, "payloads": pl, "corr": corr, "index": index,
            "lists": lists, "spare": spare, "dead": dead,
        }  # fmt: skip
    m = new_ids.size
    srt = bool(st.get("ids_sorted")) and bool(np.all(new_ids[1:] >= new_ids[:-1]))
    srt = srt and (not ids.size or int(new_ids[0]) >= int(ids[-1]))
    grown: dict[str, _Buffer] = {}
    cols = {
        "ids": (ids, new_ids),
        "codes": (codes, seg["codes"]),
        "corr": (corr, _seg_corr(seg, m)),
    }
    if lists is not None:  # new rows: not assigned yet
        cols["assign"] = (lists[1], np.full(m, -1, np.int32))
    out = {}
    for key, (old, new) in cols.items():
        out[key], grown[key] = _grow(old, new, spare.get(key))
    return {
        **st,
        "ids": out["ids"],
        "codes": out["codes"],
        "payloads": pl.plus(seg["payloads"]),
        "corr": out["corr"],
        "index": index.appended(out["ids"]),
        "lists": (lists[0], out["assign"]) if lists is not None else None,
        "spare": grown,
        "ids_sorted": srt,
        "dead": dead,
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
    pl_all = [p for s in segs for p in s.get("payloads", [])]
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    if not dels.size and not (srt[1:] == srt[:-1]).any():  # a plain bulk ingest: keep every row
        index = IdIndex(ids)
        index._runs = [(srt, order)]
        return {**st, "ids": ids, "codes": codes, "payloads": Rows(pl_all), "corr": corr,
                "index": index, "ids_sorted": bool(np.all(ids[1:] >= ids[:-1]))}  # fmt: skip
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
        "payloads": Rows([pl_all[i] for i in last.tolist()]),
        "corr": corr[last],
        "index": IdIndex(kept),
        "ids_sorted": bool(np.all(kept[1:] >= kept[:-1])),
    }


def whole(st: dict[str, Any]) -> dict[str, Any]:
    """Return the state's live rows as one segment (for a compaction)."""
    dead = dead_of(st)
    if dead.size:
        st = {
            **st, "ids": _drop(st["ids"], dead), "codes": _drop(st["codes"], dead),
            "corr": _drop(corr_of(st), dead),
            "payloads": _drop_items(st["payloads"], dead),
        }  # fmt: skip
    seg: dict[str, Any] = {"ids": st["ids"], "codes": st["codes"], "payloads": list(st["payloads"])}
    corr = corr_of(st)
    if not np.isnan(corr).all():  # absent: no item has corrections
        seg["corr"] = corr
    return seg


def merge_run(n_bytes: int, segs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one segment that does what applying ``segs`` in order does to any state.

    Its rows are the run's last rows of each id it does not delete later; its deletes are every
    id the run deletes (they may name rows of earlier segments).
    """
    seg = whole(merge_segments("{}", n_bytes, segs))
    dels = [s["deleted"] for s in segs if "deleted" in s]
    if dels:
        seg["deleted"] = np.unique(np.concatenate(dels))
    return seg
