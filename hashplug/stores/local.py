"""LocalStore: the database-free reference store (``memory://`` and ``file://``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import (
    HAMMING_PAD,
    CollectionMeta,
    Filter,
    Payload,
    Store,
    StoreError,
)
from .uri import split_uri

__all__ = ["LocalStore"]

_MEMORY: dict[str, dict[str, Any]] = {}


class LocalStore(Store):
    """Codes in numpy arrays, searched with hashplug's own Hamming kernel.

    ``LocalStore()`` or ``memory://`` is private to the object; ``memory://NAME`` is shared by every
    store of this process opened with that name. ``LocalStore(path)`` or ``file://PATH`` persists
    to a directory (``meta.json``, ``codes.safetensors``, ``payloads.json``), rewritten atomically
    after each change. Filters: a dict ``{field: value}`` or a callable ``payload -> bool``.
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory", "file")
    returns_codes: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] | None = None, *, name: str | None = None):
        super().__init__()
        self.path = Path(path) if path is not None else None
        self._shared = name
        if name is not None and name in _MEMORY:
            self._state = _MEMORY[name]
        else:
            self._state = {
                "meta": None,
                "ids": np.zeros(0, np.int64),
                "codes": None,
                "payloads": [],
            }
            if name is not None:
                _MEMORY[name] = self._state
        if self.path is not None:
            self._load()

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> LocalStore:
        scheme, rest = split_uri(uri)
        if scheme == "memory":
            return cls(name=rest or None, **options)
        if scheme == "file":
            if not rest:
                raise ValueError("file:// needs a directory, e.g. file://./codes/docs")
            return cls(rest, **options)
        raise ValueError(f"LocalStore handles memory:// and file://, not {scheme}://")

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"memory://{self._shared or ''}"

    # -- metadata --------------------------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        m = self._state["meta"]
        return CollectionMeta.from_json(m) if m is not None else None

    def _create(self, meta: CollectionMeta) -> None:
        with self._lock:
            self._state.update(
                meta=meta.to_json(),
                ids=np.zeros(0, np.int64),
                codes=np.zeros((0, meta.n_bytes), np.uint8),
                payloads=[],
            )
            self._save()

    # -- data ------------------------------------------------------------------------------------
    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
    ) -> None:
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        with self._lock:
            st = self._state
            keep = ~np.isin(st["ids"], new_ids)
            old_pl = [p for p, k in zip(st["payloads"], keep, strict=True) if k]
            st["ids"] = np.concatenate([st["ids"][keep], new_ids])
            st["codes"] = np.concatenate([st["codes"][keep], new_codes])
            st["payloads"] = old_pl + [dict(p) if p is not None else None for p in new_pl]
            self._save()

    def _rows(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        st = self._state
        order = np.argsort(st["ids"], kind="stable")
        sorted_ids = st["ids"][order]
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.minimum(pos, max(sorted_ids.size - 1, 0))
        found = sorted_ids[pos] == ids if sorted_ids.size else np.zeros(ids.size, bool)
        return order[pos] if sorted_ids.size else pos, found

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        meta = self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            rows, found = self._rows(q)
            out = np.zeros((q.size, meta.n_bytes), np.uint8)
            if found.any():
                out[found] = self._state["codes"][rows[found]]
        return out, found

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            rows, found = self._rows(q)
            pl = self._state["payloads"]
            return [
                (dict(pl[r]) if pl[r] is not None else None) if f else None
                for r, f in zip(rows.tolist(), found.tolist(), strict=True)
            ]

    def search(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        ids, dist, _ = self.search_with_codes(query_codes, limit, filter)
        return ids, dist

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8]]:
        from ..rerank import hamming_topk

        q = self._check_query(query_codes, limit)
        meta = self._require_open()
        with self._lock:
            st_ids, st_codes, st_pl = (
                self._state["ids"],
                self._state["codes"],
                self._state["payloads"],
            )
        if filter is not None:
            mask = _filter_mask(st_pl, filter)
            st_ids, st_codes = st_ids[mask], st_codes[mask]
        n = st_ids.size
        out_i = np.full((q.shape[0], limit), -1, np.int64)
        out_d = np.full((q.shape[0], limit), HAMMING_PAD, np.int32)
        out_c = np.zeros((q.shape[0], limit, meta.n_bytes), np.uint8)
        if n and q.shape[0]:
            rows, dist = hamming_topk(q, st_codes, min(limit, n), ids=st_ids)
            valid = rows >= 0
            kk = rows.shape[1]
            out_i[:, :kk] = np.where(valid, st_ids[np.maximum(rows, 0)], -1)
            out_d[:, :kk] = np.where(valid, dist, HAMMING_PAD)
            out_c[:, :kk] = np.where(valid[..., None], st_codes[np.maximum(rows, 0)], 0)
        return out_i, out_d, out_c

    def delete(self, ids: ArrayLike) -> None:
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            st = self._state
            keep = ~np.isin(st["ids"], q)
            st["ids"] = st["ids"][keep]
            st["codes"] = st["codes"][keep]
            st["payloads"] = [p for p, k in zip(st["payloads"], keep, strict=True) if k]
            self._save()

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        self._require_open()
        ids = self._state["ids"].copy()
        for s in range(0, ids.size, max(1, int(batch_size))):
            yield ids[s : s + batch_size]

    def count(self) -> int:
        return int(self._state["ids"].size) if self._state["meta"] is not None else 0

    def drop(self) -> None:
        with self._lock:
            self._state.update(meta=None, ids=np.zeros(0, np.int64), codes=None, payloads=[])
            self.meta = None
            if self.path is not None and self.path.exists():
                shutil.rmtree(self.path)
            if self._shared is not None:
                _MEMORY.pop(self._shared, None)

    # -- persistence -----------------------------------------------------------------------------
    def _save(self) -> None:
        if self.path is None:
            return
        from safetensors.numpy import save_file

        st = self._state
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / ".tmp"
        tmp.mkdir(exist_ok=True)
        (tmp / "meta.json").write_text(st["meta"])
        save_file({"ids": st["ids"], "codes": st["codes"]}, str(tmp / "codes.safetensors"))
        (tmp / "payloads.json").write_text(json.dumps(st["payloads"]))
        for f in ("codes.safetensors", "payloads.json", "meta.json"):
            os.replace(tmp / f, self.path / f)

    def _load(self) -> None:
        assert self.path is not None
        mfile = self.path / "meta.json"
        if not mfile.exists():
            return
        from safetensors.numpy import load_file

        try:
            meta = CollectionMeta.from_json(mfile.read_text())
            arrays = load_file(str(self.path / "codes.safetensors"))
            payloads = json.loads((self.path / "payloads.json").read_text())
        except Exception as e:  # safetensors raises its own error type for damaged files
            raise StoreError(f"local store at {self.path} is damaged: {e}") from e
        ids, codes = arrays["ids"], arrays["codes"]
        if codes.shape != (ids.size, meta.n_bytes) or len(payloads) != ids.size:
            raise StoreError(f"local store at {self.path} is inconsistent (sizes differ)")
        self._state.update(meta=meta.to_json(), ids=ids, codes=codes, payloads=payloads)


def _filter_mask(payloads: list[Payload | None], flt: Filter) -> NDArray[np.bool_]:
    test: Callable[[Payload], bool]
    if isinstance(flt, Mapping):
        items = list(flt.items())

        def test(p: Payload) -> bool:
            return all(k in p and p[k] == v for k, v in items)

    elif callable(flt):
        test = flt
    else:
        raise ValueError(
            "LocalStore filters are a dict {field: value} or a callable payload -> bool, "
            f"got {type(flt).__name__}"
        )
    return np.array([p is not None and bool(test(p)) for p in payloads], dtype=bool)
