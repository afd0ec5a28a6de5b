"""LocalStore: the database-free reference store (``memory://`` and ``file://``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._columns import PayloadColumns
from ._ivf import DEFAULT_NPROBE, MIN_PER_LIST, CodeIVF, Lists, auto_nlist, tune_nprobe
from ._localfiles import MAX_SEGMENTS, StoreFiles
from ._segments import (
    Rows,
    apply_segment,
    corr_of,
    dead_of,
    empty_state,
    live_rows,
    merge_run,
    merge_segments,
    take_rows,
    whole,
)
from .base import (
    HAMMING_PAD,
    CodeHits,
    CollectionMeta,
    Filter,
    Hits,
    MatchNothing,
    Payload,
    Store,
    as_ids,
    check_store_corrections,
    dict_filter_matches,
    normalize_filter,
)
from .uri import parse_uri

__all__ = ["LocalStore"]

#: Segments of one size level that ``file://`` rewrites as one.
TIER = 8
#: Rows appended since the lists were grouped join a tail until it holds 1/16 of them.
TAIL_FRACTION = 16

_MEMORY: dict[str, dict[str, Any]] = {}
_MEMORY_LOCKS: dict[str, threading.RLock] = {}


class LocalStore(Store):
    """Codes in numpy arrays, searched with hashplug's own Hamming kernel.

    ``LocalStore()`` or ``memory://`` is private to the object; ``memory://NAME`` is shared by every
    store of this process opened with that name. ``LocalStore(path)`` or ``file://PATH`` persists
    to a directory: each change commits a new generation of files and then a manifest naming them
    (crash-safe), under a lock file; writers reload the newest generation under the lock, and
    readers reload when another writer committed (see ``hashplug.stores._localfiles``).
    Filters: a dict (DESIGN.md's contract) or a callable ``payload -> bool``.

    ``ivf``: the sub-linear coarse stage, opt-in (``"auto"`` or a number of lists; URI option
    ``?ivf=auto``; see ``hashplug.stores._ivf``). Centroids are trained on the first search with
    at least 39 codes per list (or by :meth:`build_ivf`); ``file://`` keeps them and the rows'
    lists in ``ivf.safetensors`` whenever it groups all rows, so a reopen reuses them (rows
    appended since are assigned; after a delete or replacement all rows are). Written codes
    join their lists on the next search (appended rows as a tail, grouped in once it holds 1/16
    of the rows), deleted ones leave them; ``"auto"`` retrains when the collection has grown
    4x. ``nprobe`` (``?nprobe=``): lists scanned per query (more when those hold fewer rows
    than the limit); ``"auto"`` (default) picks them after training, the fewest of 8, 16, ...
    with which stored codes used as queries keep 0.95 recall (``_ivf.tune_nprobe``).
    A search then returns the Hamming top-limit of the probed lists (equal distances in probe
    order), an approximation of the exhaustive one; filtered searches and smaller collections scan
    exhaustively. The lists keep a copy of the codes and ids in list order (8 + n_bytes bytes
    per vector in RAM).
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory", "file")
    returns_codes: ClassVar[bool] = True
    ordered_ties: ClassVar[bool] = True
    supports_corrections: ClassVar[bool] = True
    correction_bytes: ClassVar[int] = 4  # float16 (c, e)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        lock_timeout: float = 60.0,
        ivf: int | str | None = None,
        nprobe: int | str = "auto",
    ):
        super().__init__()
        self._ivf_opt = _check_ivf(ivf)
        self.nprobe: int | str = _check_nprobe(nprobe)
        self._tuned: tuple[CodeIVF, int] | None = None  # nprobe="auto": the probes for an ivf
        self._ivf: CodeIVF | None = None
        self._lists: Lists | None = None
        self._ivf_lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        self._shared = name
        self._files = StoreFiles(self.path, lock_timeout) if self.path is not None else None
        self._token: Any = None
        self._columns: PayloadColumns | None = None
        if path is None and name is None:  # private memory: gone with the object
            self.persistent = False  # type: ignore[misc]
        if name is not None:  # every object on one shared name takes the same lock
            self._lock = _MEMORY_LOCKS.setdefault(name, self._lock)
        if name is not None and name in _MEMORY:
            self._state = _MEMORY[name]
        else:
            self._state = empty_state()
            if name is not None:
                _MEMORY[name] = self._state
        if self._files is not None:
            self._refresh()

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> LocalStore:
        """Open ``memory://NAME`` or ``file://PATH`` (see :meth:`Store.from_uri`)."""
        parsed = parse_uri(uri, {"ivf": str, "nprobe": str})
        scheme, rest = parsed.scheme, parsed.location
        options = {**parsed.options, **options}
        if scheme == "memory":
            return cls(name=rest or None, **options)
        if scheme == "file":
            if not rest:
                raise ValueError("file:// needs a directory, e.g. file://./codes/docs")
            return cls(rest, **options)
        raise ValueError(f"LocalStore handles memory:// and file://, not {scheme}://")

    @property
    def name(self) -> str:
        """The collection path, or its ``memory://`` name, for errors."""
        return str(self.path) if self.path else f"memory://{self._shared or ''}"

    # -- state -----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Catch up with the files when another writer committed since we last looked.

        Apply only the new segments when ours are a prefix of the manifest's, else reload.
        """
        if self._files is None:
            return
        for attempt in range(5):
            token = self._files.token()
            if token is not None and token == self._token:
                return
            try:
                self._state = self._load(self._files, self._state)
            except FileNotFoundError:  # a compaction removed a segment: read the new manifest
                if attempt == 4:
                    raise
                continue
            self._token = token
            return

    @staticmethod
    def _load(files: StoreFiles, st: dict[str, Any]) -> dict[str, Any]:
        man = files.manifest()
        if man is None:
            legacy = files.load_legacy()
            if legacy is None:
                return empty_state()
            nb = CollectionMeta.from_json(legacy["meta"]).n_bytes
            return {**merge_segments(legacy["meta"], nb, [legacy["segment"]]), "segments": None}
        meta, segs = man["meta"], man["segments"]
        known = st.get("segments")
        names = [e["file"] for e in segs]
        if (
            st["meta"] == meta
            and known is not None
            and names[: len(known)] == [e["file"] for e in known]
        ):
            for e in segs[len(known) :]:
                st = apply_segment(st, files.read_segment(e))
        else:
            nb = CollectionMeta.from_json(meta).n_bytes
            st = merge_segments(meta, nb, [files.read_segment(e) for e in segs])
        return {**st, "gen": man["gen"], "segments": None if man.get("old") else segs}

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._sync_shared()
            self._refresh()
            return self._state

    def _sync_shared(self) -> None:
        """``memory://NAME``: pick up what another object on the name committed."""
        if self._shared is not None:
            self._state = _MEMORY.setdefault(self._shared, self._state)

    def _change(self, seg: dict[str, Any] | None, meta: str | None = None) -> None:
        """Apply one segment (``meta``: create the collection instead).

        On disk first, so a failed save changes nothing.
        """
        with self._lock:
            self._sync_shared()
            if self._files is None:
                self._set_state(self._next(self._state, seg, meta))
                return
            with self._files.locked():
                self._refresh()
                st = self._state
                new = self._next(st, seg, meta)
                if new is st:
                    return
                gen = int(st.get("gen", 0)) + 1
                segs = st.get("segments")
                on_disk = sum(e["rows"] + e.get("deleted", 0) for e in segs or [])
                if meta is not None and segs is not None:
                    segs = list(segs)
                elif segs is None or len(segs) >= MAX_SEGMENTS or on_disk > 2 * new["ids"].size:
                    segs = [self._files.write_segment(whole(new), gen)]  # compaction
                else:
                    nb = CollectionMeta.from_json(new["meta"]).n_bytes
                    segs = self._append_segment(segs, seg or {}, gen, nb)
                assert new["meta"] is not None
                self._files.commit(new["meta"], gen, segs)
                self._set_state({**new, "gen": gen, "segments": segs})
                self._token = self._files.token()

    def _append_segment(
        self, segs: list[dict[str, Any]], seg: dict[str, Any], gen: int, n_bytes: int
    ) -> list[dict[str, Any]]:
        """Write ``seg`` after ``segs``; return the new segment list.

        Size-tiered: when the last segments make ``TIER`` of one size level (sizes within a
        factor ``TIER``), they are rewritten as one, so each row is rewritten about
        ``log_TIER(N / batch)`` times and the list stays short (not O(N) per compaction).
        """
        assert self._files is not None
        run, size = [seg], _seg_size(seg)
        segs = list(segs)
        while True:
            lvl = _level(size)
            k = 0
            while k < len(segs) and _level(_seg_size(segs[-1 - k])) == lvl:
                k += 1
            if k + 1 < TIER:
                break
            run = [self._files.read_segment(e) for e in segs[-k:]] + run
            size += sum(_seg_size(e) for e in segs[-k:])
            del segs[-k:]
        one = run[0] if len(run) == 1 else merge_run(n_bytes, run)
        return [*segs, self._files.write_segment(one, gen)]

    def _set_state(self, st: dict[str, Any]) -> None:
        self._state = st
        if self._shared is not None:
            _MEMORY[self._shared] = st

    @staticmethod
    def _next(st: dict[str, Any], seg: dict[str, Any] | None, meta: str | None) -> dict[str, Any]:
        if meta is not None:  # create; another writer may have created it meanwhile
            if st["meta"] is not None:
                return st
            return {**empty_state(meta, CollectionMeta.from_json(meta).n_bytes), "segments": []}
        return apply_segment(st, seg or {})

    # -- metadata --------------------------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        """Return the stored metadata, or None if the collection does not exist yet."""
        m = self._snapshot()["meta"]
        return CollectionMeta.from_json(m) if m is not None else None

    def _create(self, meta: CollectionMeta) -> None:
        self._change(None, meta=meta.to_json())

    # -- data ------------------------------------------------------------------------------------
    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        corrections: ArrayLike | None = None,
    ) -> None:
        """Insert or replace items.

        ``corrections`` (n, 2): their ``scoring="cosine"`` factors, kept as float16 (4 bytes per
        vector). Items written without them, or with a row of NaN, have none.
        """
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        seg: dict[str, Any] = {
            "ids": new_ids,
            "codes": new_codes,
            "payloads": [None] * len(new_pl)
            if payloads is None
            else list(map(_copy_payload, new_pl)),
        }
        if corrections is not None:
            seg["corr"] = check_store_corrections(corrections, new_ids.size)
        self._change(seg)

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Return the codes of ``ids`` in order and a mask of which ids exist."""
        meta = self._require_open()
        q = as_ids(ids)
        st = self._snapshot()
        rows, found = live_rows(st, q)
        out = np.zeros((q.size, meta.n_bytes), np.uint8)
        if found.any():
            out[found] = st["codes"][rows[found]]
        return out, found

    def lookup_corrections(self, ids: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the factors (n, 2) float32 of ``ids`` and whether each id has them."""
        self._require_open()
        q = as_ids(ids)
        st = self._snapshot()
        rows, found = live_rows(st, q)
        out = np.full((q.size, 2), np.nan, np.float32)
        if found.any():
            out[found] = corr_of(st)[rows[found]]
        return out, found & ~np.isnan(out).any(axis=1)

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        """Return the payloads of ``ids`` in order (None where absent)."""
        self._require_open()
        q = as_ids(ids)
        st = self._snapshot()
        rows, found = live_rows(st, q)
        pl = st["payloads"]
        return [
            _copy_payload(pl[r]) if f else None
            for r, f in zip(rows.tolist(), found.tolist(), strict=True)
        ]

    def search(self, query_codes: ArrayLike, limit: int, filter: Filter | None = None) -> Hits:
        """Return the Hamming top-``limit`` per query (see :meth:`Store.search`)."""
        ids, dist, _ = self.search_with_codes(query_codes, limit, filter)
        return Hits(ids, dist)

    def _columns_of(self, payloads: Sequence[Payload | None]) -> PayloadColumns:
        """Return the payload columns of this state.

        Payload rows are replaced or extended, never changed, on write: after appends only the
        new rows are read.
        """
        cols = self._columns
        if cols is None or cols.payloads is not payloads:
            old = cols.payloads if cols is not None else None
            if isinstance(old, Rows) and isinstance(payloads, Rows) and old.items is payloads.items:
                assert cols is not None and len(old) <= len(payloads)  # rows were appended
                cols = self._columns = cols.extended(payloads)
            else:
                cols = self._columns = PayloadColumns(payloads)
        return cols

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> CodeHits:
        """Search like :meth:`search`, also returning the hits' codes."""
        return self._search(query_codes, limit, filter, False)[0]

    def search_with_corrections(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[CodeHits, NDArray[np.float32]]:
        """Search like :meth:`search_with_codes`, also returning the hits' factors."""
        hits, corr = self._search(query_codes, limit, filter, True)
        assert corr is not None
        return hits, corr

    def _search(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None, with_corr: bool
    ) -> tuple[CodeHits, NDArray[np.float32] | None]:
        """Hamming top-``limit`` with the hits' codes (and factors, NaN for none) in one pass."""
        from ..rerank import _vouch_ids, hamming_topk

        q = self._check_query(query_codes, limit)
        mask_of = _filter_test(filter)
        out_i, out_d, out_c = self._padding(q.shape[0], limit)
        out_f = np.full(out_i.shape + (2,), np.nan, np.float32) if with_corr else None
        st = self._snapshot()
        st_ids, st_codes = st["ids"], st["codes"]
        st_corr = corr_of(st) if with_corr else None
        st_ids.flags.writeable = False  # states are copied on write: the kernel checks ids once
        dead = dead_of(st)
        if mask_of is not None:
            norm = normalize_filter(filter)
            if isinstance(norm, Mapping):
                mask = self._columns_of(st["payloads"]).mask(norm)  # type: ignore[arg-type]
            else:
                mask = np.array([bool(mask_of(p)) for p in st["payloads"]], dtype=bool)
            mask[dead] = False
            dead = dead[:0]
            st_ids, st_codes = st_ids[mask], st_codes[mask]
            st_corr = st_corr[mask] if st_corr is not None else None
        lists = self._lists_of(st) if mask_of is None and q.shape[0] else None
        n = st_ids.size
        if n and q.shape[0]:
            want = min(limit + dead.size, n)  # dead rows are skipped below
            if lists is not None:  # hits read from the lists' copies (a few blocks)
                rows, dist, hit_ids, hit_codes = lists.hits(q, want, self._probes(lists))
                if want == limit and not dead.size and out_f is None:  # padded as the result
                    return CodeHits(hit_ids, dist, np.ascontiguousarray(hit_codes)), None
                valid = rows >= 0
                hit_rows = rows  # state rows: read below only where needed
                if dead.size or out_f is not None:
                    hit_rows = lists.rows(np.maximum(rows, 0))
            else:
                if mask_of is None and "ids_sorted" in st:  # the state's ids: checked once
                    _vouch_ids(st_ids, st["ids_sorted"])
                rows, dist = hamming_topk(q, st_codes, want, ids=st_ids)
                valid = rows >= 0
                hit_rows = np.maximum(rows, 0)
                hit_ids, hit_codes = st_ids[hit_rows], take_rows(st_codes, hit_rows)
            if dead.size:  # the first limit live hits, in order
                valid &= ~np.isin(hit_rows, dead)
                keep = np.argsort(~valid, axis=1, kind="stable")[:, : min(limit, want)]
                valid = np.take_along_axis(valid, keep, 1)
                dist, hit_ids = (
                    np.take_along_axis(dist, keep, 1),
                    np.take_along_axis(hit_ids, keep, 1),
                )
                hit_rows = np.take_along_axis(hit_rows, keep, 1)
                hit_codes = np.take_along_axis(hit_codes, keep[..., None], 1)
            kk = valid.shape[1]
            out_i[:, :kk] = np.where(valid, hit_ids, -1)
            out_d[:, :kk] = np.where(valid, dist, HAMMING_PAD)
            hit_codes[~valid] = 0
            out_c[:, :kk] = hit_codes
            if out_f is not None and st_corr is not None:
                out_f[:, :kk] = np.where(valid[..., None], st_corr[hit_rows], np.nan)
        return CodeHits(out_i, out_d, out_c), out_f

    # -- inverted file ---------------------------------------------------------------------------
    def build_ivf(self, nlist: int | str | None = None, *, seed: int = 0) -> CodeIVF:
        """Train (or retrain) the inverted file on the stored codes now, and turn it on.

        ``nlist``: lists or ``"auto"`` (default: the store's ``ivf`` option, else ``"auto"``).
        Raises ``ValueError`` when the collection has fewer than 39 codes per list.
        """
        self._require_open()
        opt = _check_ivf(nlist) or self._ivf_opt or "auto"
        st = self._snapshot()
        n = int(st["ids"].size)
        k = auto_nlist(n) if opt == "auto" else int(opt)
        if k == 0:
            raise ValueError(
                f"ivf='auto' needs at least {2 * MIN_PER_LIST} codes, the collection has {n}"
            )
        ivf = CodeIVF.fit(st["codes"], k, seed=seed)
        with self._ivf_lock:
            self._ivf_opt = self._ivf_opt or opt
            self._ivf, self._lists = ivf, None
        self._lists_of(st)
        return ivf

    def tune_nprobe(self, query_codes: ArrayLike, *, target: float = 0.95) -> int:
        """Choose the probes with real query codes; returns them and keeps them (``nprobe="auto"``).

        The fewest of 8, 16, ... lists with which the queries' top-C (C of ``HashIndex.search``
        at k=10) holds ``target`` of their exact Hamming top-C/5. Use it where the stored codes
        make poor stand-ins for queries (many near-copies). Trains the inverted file if needed.
        """
        q = self._check_query(query_codes, 1)
        if not 0 < target <= 1:
            raise ValueError(f"target must be in (0, 1], got {target!r}")
        if self._ivf_opt is None:
            raise ValueError("tune_nprobe needs the inverted file: open the store with ivf=")
        st = self._snapshot()
        lists = self._lists_of(st)
        if lists is None or not q.shape[0]:
            raise ValueError("tune_nprobe needs query codes and a trained inverted file")
        n = int(st["ids"].size)
        p = tune_nprobe(lists, st["codes"], _tune_limit(n), target=target, queries=q)
        with self._ivf_lock:
            self._tuned, self.nprobe = (lists.ivf, p), "auto"
        return p

    def _lists_of(self, st: dict[str, Any]) -> Lists | None:
        """Return the inverted file's lists of this state; None: scan exhaustively."""
        if self._ivf_opt is None or st["meta"] is None:
            return None
        lists = self._lists
        if lists is not None and lists.state_ids is st["ids"] and lists.ivf is self._ivf:
            return lists
        with self._ivf_lock:  # one thread trains and groups; the others wait for its lists
            lists = self._lists
            if lists is not None and lists.state_ids is st["ids"] and lists.ivf is self._ivf:
                return lists
            return self._make_lists(st)

    def _make_lists(self, st: dict[str, Any]) -> Lists | None:
        ids, codes, opt = st["ids"], st["codes"], self._ivf_opt
        assert opt is not None
        n = int(ids.size)
        saved = self._saved_lists(st) if self._ivf is None else None
        if saved is not None:
            self._ivf = saved[0]
            if saved[2] is not None:
                self._tuned = (saved[0], saved[2])
        ivf = self._ivf
        if ivf is None or (opt == "auto" and n > 4 * ivf.trained_on):
            k = auto_nlist(n) if opt == "auto" else int(opt)
            if k == 0 or n < MIN_PER_LIST * k:
                return None  # too few codes for these lists: exhaustive
            ivf = self._ivf = CodeIVF.fit(codes, k)
        cached = st.get("lists")
        if cached is not None and cached[0] is ivf and cached[1].size == n:
            assign = cached[1]  # filled below where -1: a cache of these rows, shared with
        else:  # the states this one grew from or into (their rows are the same)
            assign = np.full(n, -1, np.int32)
            if saved is not None and saved[0] is ivf:
                assign[: saved[1].size] = saved[1]
            st["lists"] = (ivf, assign)  # later segments carry it over
        old = self._lists
        n0 = old.order.size if old is not None else 0
        grown = (
            old is not None
            and old.ivf is ivf
            and ids.base is not None
            and old.state_ids.base is ids.base  # a prefix of one growing buffer: rows appended
            and old.state_ids.size <= n
            and n - n0 <= max(n0 // TAIL_FRACTION, 4096)
        )
        todo = np.flatnonzero(assign[n0:] < 0) + n0 if grown else np.flatnonzero(assign < 0)
        if todo.size:
            assign[todo] = ivf.assign(codes[todo])
        if grown:
            assert old is not None
            lists = old.extended(ids, codes, assign)
        else:
            lists = Lists.make(ivf, ids, codes, assign)
            if self.nprobe == "auto" and (self._tuned is None or self._tuned[0] is not ivf):
                self._tuned = (ivf, tune_nprobe(lists, codes, _tune_limit(n)))
            if self._files is not None and (todo.size or saved is not None and saved[2] is None):
                self._save_lists(ivf, ids, codes, assign)
        self._lists = lists
        return lists

    def _save_lists(self, ivf: CodeIVF, ids: NDArray[np.int64], codes: NDArray[np.uint8],
                    assign: NDArray[np.int32]) -> None:  # fmt: skip
        """``file://``: keep the centroids and the rows' lists, so a reopen need not redo them."""
        assert self._files is not None
        rows = np.array([ids.size, _crc(ids), _crc(codes)], np.int64)
        arrays = {**ivf.to_arrays(), "rows": rows, "assign": assign}
        if self._tuned is not None and self._tuned[0] is ivf:
            arrays["nprobe"] = np.array([self._tuned[1]], np.int64)
        with contextlib.suppress(OSError):  # only a cache: a read-only directory skips it
            self._files.save_ivf(arrays)

    def _probes(self, lists: Lists) -> int:
        """Return the lists a query probes: ``nprobe``, or the ones tuned for these lists."""
        if isinstance(self.nprobe, int):
            return self.nprobe
        t = self._tuned
        return t[1] if t is not None and t[0] is lists.ivf else DEFAULT_NPROBE

    def _saved_lists(
        self, st: dict[str, Any]
    ) -> tuple[CodeIVF, NDArray[np.int32], int | None] | None:
        """Return the saved centroids and rows' lists (None: none, damaged or another nlist).

        The lists of the first rows are kept when those rows are the saved ones (same ids and
        codes, by CRC-32): rows appended since are assigned, a delete or replacement redoes all.
        """
        a = self._files.load_ivf() if self._files is not None else None
        if a is None or "rows" not in a or "assign" not in a:
            return None
        try:
            ivf = CodeIVF.from_arrays(a, st["codes"].shape[1])
        except (KeyError, ValueError):
            return None
        if self._ivf_opt != "auto" and ivf.nlist != self._ivf_opt:
            return None
        m, crc_ids, crc_codes = (int(v) for v in a["rows"])
        assign = a["assign"]
        same = (
            assign.shape == (m,)
            and m <= st["ids"].size
            and _crc(st["ids"][:m]) == crc_ids
            and _crc(st["codes"][:m]) == crc_codes
        )
        tuned = int(a["nprobe"][0]) if "nprobe" in a and a["nprobe"].shape == (1,) else None
        return ivf, assign.astype(np.int32) if same else np.zeros(0, np.int32), tuned

    def delete(self, ids: ArrayLike) -> None:
        """Delete items; ids that are not stored are ignored."""
        self._require_open()
        q = as_ids(ids)

        if q.size:
            self._change({"deleted": np.unique(q)})

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Yield every stored id once, in int64 batches of at most ``batch_size``."""
        self._require_open()
        st = self._snapshot()
        ids = np.delete(st["ids"], dead_of(st))
        for s in range(0, ids.size, max(1, int(batch_size))):
            yield ids[s : s + batch_size]

    def count(self) -> int:
        """Return the number of stored items (0 when the collection does not exist)."""
        st = self._snapshot()
        return int(st["ids"].size - dead_of(st).size) if st["meta"] is not None else 0

    def drop(self) -> None:
        """Drop the collection and its metadata."""
        with self._lock:
            self._set_state(empty_state())
            self.meta = None
            self._token = None
            if self.path is not None and self.path.exists():
                shutil.rmtree(self.path)


def _check_ivf(ivf: int | str | None) -> int | str | None:
    """Validate the ``ivf`` option: None, ``"auto"`` or a positive number of lists."""
    if ivf is None or ivf == "auto":
        return ivf
    if isinstance(ivf, str) and ivf.isdigit():
        ivf = int(ivf)
    if isinstance(ivf, bool) or not isinstance(ivf, int | np.integer) or ivf < 1:
        raise ValueError(f"ivf must be 'auto' or a positive number of lists, got {ivf!r}")
    return int(ivf)


def _tune_limit(n: int) -> int:
    """Return the candidates nprobe is tuned for: ``HashIndex.search``'s C at k=10 over n codes."""
    from ..index import default_oversample

    return 10 * default_oversample(n, 10)


def _seg_size(seg: dict[str, Any]) -> int:
    """Rows plus deleted ids of a segment or of its manifest entry."""
    if "file" in seg:
        return int(seg["rows"]) + int(seg.get("deleted", 0))
    return len(seg.get("ids", ())) + len(seg.get("deleted", ()))


def _level(size: int) -> int:
    """Return the size level of a segment: ``floor(log_TIER(size))``."""
    lvl = 0
    while size >= TIER:
        size //= TIER
        lvl += 1
    return lvl


def _crc(a: NDArray[Any]) -> int:
    """Return the CRC-32 of an array's bytes."""
    return zlib.crc32(np.ascontiguousarray(a).data)


def _check_nprobe(nprobe: int | str) -> int | str:
    """Validate the ``nprobe`` option: ``"auto"`` or a positive number of lists."""
    if isinstance(nprobe, str) and nprobe.strip().isdigit():
        nprobe = int(nprobe)
    if nprobe == "auto":
        return nprobe
    if isinstance(nprobe, bool) or not isinstance(nprobe, int | np.integer) or nprobe < 1:
        raise ValueError(f"nprobe must be 'auto' or a positive integer, got {nprobe!r}")
    return int(nprobe)


def _copy_payload(p: Payload | None) -> Payload | None:
    """Return a deep copy as every store returns it.

    Tuples become lists, as after a JSON round trip.
    """
    return None if p is None else json.loads(json.dumps(p))


def _filter_test(flt: Filter | None) -> Callable[[Payload | None], bool] | None:
    """None (no filter) or a predicate on one payload."""
    norm = normalize_filter(flt)
    if norm is None:
        return None
    if isinstance(norm, MatchNothing):
        return lambda p: False
    if isinstance(norm, Mapping):
        return lambda p: dict_filter_matches(p, norm)  # type: ignore[arg-type]
    if callable(norm):
        return lambda p: p is not None and bool(norm(p))
    raise ValueError(
        "LocalStore filters are a dict {field: value} or a callable payload -> bool, "
        f"got {type(flt).__name__}"
    )
