"""QdrantEdgeStore: hashplug codes in a Qdrant Edge shard — the real Qdrant engine, in-process.

``qdrant-edge://PATH`` (or ``QdrantEdgeStore(path)``): one shard directory is one collection.

Layout: each code b is a point whose id is the caller's int64 id and whose vector is s = 2b - 1
(Float16 by default, Dot distance). The shard keeps a 1-bit binary quantization of the vectors
pinned in RAM and the original vectors on disk (``Memory.Cold``). HNSW is off (``m=0``,
``indexing_threshold=0``): every search is a full scan of the quantized vectors, so the coarse
Hamming top-C is exact. The hasher's ``CollectionMeta`` lives in ``PATH/hashplug_meta.json``,
inside the shard directory, written atomically before the shard itself.

Qdrant Edge lets one process open a shard at a time (its WAL is locked); stores of this process
that name the same directory share one open shard.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from hashplug.stores.base import (
    CollectionMeta,
    Filter,
    Payload,
    StoreError,
)
from hashplug.stores.uri import parse_uri, to_bool

from ._common import (
    CORR_C_KEY,
    CORR_E_KEY,
    DATATYPES,
    META_FILE,
    MISSING_E,
    encode_payload,
)
from .base import QdrantBase
from .filters import to_edge_filter

__all__ = ["QdrantEdgeStore", "edge_config"]

_UPSERT_BATCH = 4096
_RETRIEVE_BATCH = 8192
_URI_OPTIONS: dict[str, Callable[[str], Any]] = {
    "datatype": str,
    "optimize_on_close": to_bool,
    "max_search_threads": int,
}
_DTYPES = {
    "float16": qe.VectorStorageDatatype.Float16,
    "float32": qe.VectorStorageDatatype.Float32,
}


def edge_config(
    n_bits: int, datatype: str = "float16", max_search_threads: int | None = None
) -> qe.EdgeConfig:
    """Return the shard configuration for ``n_bits`` codes.

    ±1 vectors, Dot, 1-bit BQ in RAM, no HNSW.
    """
    vectors = qe.EdgeVectorParams(
        size=n_bits,
        distance=qe.Distance.Dot,
        datatype=_DTYPES[datatype],
        memory=qe.Memory.Cold,  # originals on disk (read at rescoring / with_vector)
        quantization_config=qe.BinaryQuantizationConfig(
            encoding=qe.BinaryQuantizationEncoding.OneBit,
            memory=qe.Memory.Pinned,  # the 1-bit codes stay in RAM
        ),
    )
    return qe.EdgeConfig(
        vectors=vectors,
        # No HNSW graph: full scans of the quantized vectors give the exact Hamming top-C.
        hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0),
        max_search_threads=max_search_threads,
    )


class _Handle:
    """One open shard per directory per process, shared by the stores that name it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.shard: qe.EdgeShard | None = None
        self.lock = threading.RLock()
        self.refs = 0
        self.dirty = False


_HANDLES: dict[str, _Handle] = {}
_HANDLES_LOCK = threading.Lock()


def _acquire(path: Path) -> _Handle:
    key = os.path.realpath(path)
    with _HANDLES_LOCK:
        h = _HANDLES.get(key)
        if h is None:
            h = _HANDLES[key] = _Handle(key)
        h.refs += 1
        return h


def _release(h: _Handle) -> bool:
    """Drop one reference to ``h``; True when it was the last (the caller closes the shard)."""
    with _HANDLES_LOCK:
        h.refs -= 1
        last = h.refs <= 0
        if last:
            _HANDLES.pop(h.path, None)
    return last


def _edge_error(what: str, path: str, e: BaseException) -> StoreError:
    msg = str(e)
    if "WouldBlock" in msg or "lock" in msg.lower():
        return StoreError(
            f"Qdrant Edge shard {path} is open in another process ({what}: {msg}); "
            "a shard can be opened by one process at a time"
        )
    return StoreError(f"Qdrant Edge shard {path}: {what} failed: {msg}")


class QdrantEdgeStore(QdrantBase):
    """A Qdrant Edge shard directory holding one collection of hashplug codes.

    Parameters
    ----------
    path:
        The shard directory (created on ``open`` if absent).
    datatype:
        ``"float16"`` (default: ±1 is exact, 2 bytes per bit on disk) or ``"float32"``. It only
        changes the native rescoring path: Qdrant rounds the rescoring query to the storage
        datatype, so float16 asymmetric distances carry a float16 rounding of tanh(u/2).
    optimize_on_close:
        Run Qdrant's segment optimizer (merge, vacuum deleted points) when the last store of this
        process that uses the shard closes after writing. ``optimize()`` runs it on demand.
    max_search_threads:
        Size of the shard's search thread pool (None: derived from the CPU count).
    """

    schemes: ClassVar[tuple[str, ...]] = ("qdrant-edge",)
    returns_codes: ClassVar[bool] = True
    supports_rescoring: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        datatype: str = "float16",
        optimize_on_close: bool = True,
        max_search_threads: int | None = None,
    ) -> None:
        super().__init__()
        if datatype not in DATATYPES:
            raise ValueError(f"datatype must be one of {DATATYPES}, got {datatype!r}")
        self.path = Path(path)
        self.datatype = datatype
        self.optimize_on_close = bool(optimize_on_close)
        self.max_search_threads = max_search_threads
        self._handle: _Handle | None = _acquire(self.path)

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> QdrantEdgeStore:
        """``qdrant-edge://./data/shard``, ``qdrant-edge:///abs/shard?datatype=float32``."""
        parsed = parse_uri(uri, _URI_OPTIONS)
        if parsed.scheme not in cls.schemes:
            raise ValueError(f"QdrantEdgeStore handles qdrant-edge://, not {parsed.scheme}://")
        location, opts = parsed.location, parsed.options
        if not location:
            raise ValueError(
                "qdrant-edge:// needs a shard directory, e.g. qdrant-edge://./data/docs"
            )
        opts.update(options)
        return cls(location, **opts)

    @property
    def name(self) -> str:
        """The shard's ``qdrant-edge://`` URI, for errors."""
        return f"qdrant-edge://{self.path}"

    # -- handle and shard ------------------------------------------------------------------------
    @property
    def _h(self) -> _Handle:
        if self._handle is None:  # used again after close(): take the shared handle again
            self._handle = _acquire(self.path)
        return self._handle

    @property
    def _meta_file(self) -> Path:
        return self.path / META_FILE

    def _shard(self) -> qe.EdgeShard:
        h = self._h
        shard = h.shard
        if shard is not None:
            return shard
        with h.lock:
            if h.shard is None:
                meta = self._require_open()
                try:
                    if (self.path / "edge_config.json").exists():
                        h.shard = qe.EdgeShard.load(str(self.path))
                    else:  # meta written, shard not yet (creation was interrupted): finish it
                        h.shard = qe.EdgeShard.create(
                            str(self.path),
                            edge_config(meta.n_bits, self.datatype, self.max_search_threads),
                        )
                except Exception as e:  # noqa: BLE001 - qdrant_edge raises plain Exception
                    raise _edge_error("opening the shard", str(self.path), e) from e
            return h.shard

    # -- metadata --------------------------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        """Return the stored metadata, or None if the shard does not exist yet."""
        f = self._meta_file
        if not f.exists():
            if (self.path / "edge_config.json").exists():
                raise StoreError(
                    f"{self.path} is a Qdrant Edge shard without hashplug metadata ({META_FILE}); "
                    "it was not written by hashplug, use another directory"
                )
            return None
        try:
            return CollectionMeta.from_json(f.read_text())
        except OSError as e:
            raise StoreError(f"cannot read {f}: {e}") from e

    def _create(self, meta: CollectionMeta) -> None:
        h = self._h
        with h.lock:
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(
                    f"cannot create a Qdrant Edge shard at {self.path}: not a directory"
                )
            if (self.path / "segments").exists():
                raise StoreError(
                    f"{self.path} already holds a Qdrant shard without hashplug metadata"
                )
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".meta.", dir=self.path)
                with os.fdopen(fd, "w") as fh:
                    fh.write(meta.to_json())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._meta_file)
            except OSError as e:
                raise StoreError(f"cannot create a Qdrant Edge shard at {self.path}: {e}") from e
            self.meta = meta
            self._shard()

    # -- data ------------------------------------------------------------------------------------
    def _upsert_points(
        self,
        ids: NDArray[np.int64],
        vectors: NDArray[np.float32],
        payloads: Sequence[Payload | None],
        corr: Sequence[tuple[float, float] | None],
    ) -> None:
        shard = self._shard()
        h = self._h
        with h.lock:
            for s in range(0, ids.size, _UPSERT_BATCH):
                e = min(s + _UPSERT_BATCH, ids.size)
                points = [
                    qe.Point(int(i), v, encode_payload(p, bool_shadow=True, corr=c))
                    for i, v, p, c in zip(
                        ids[s:e].tolist(),
                        vectors[s:e].tolist(),
                        payloads[s:e],
                        corr[s:e],
                        strict=True,
                    )
                ]
                try:
                    shard.update(qe.UpdateOperation.upsert_points(points))
                except Exception as ex:  # noqa: BLE001
                    raise _edge_error("upsert", str(self.path), ex) from ex
            h.dirty = True

    def _retrieve(
        self, ids: NDArray[np.int64], with_vector: bool, with_payload: bool
    ) -> dict[int, Any]:
        shard = self._shard()
        got: dict[int, Any] = {}
        for s in range(0, ids.size, _RETRIEVE_BATCH):
            chunk = ids[s : s + _RETRIEVE_BATCH].tolist()
            try:
                recs = shard.retrieve(chunk, with_payload=with_payload, with_vector=with_vector)
            except Exception as e:  # noqa: BLE001
                raise _edge_error("retrieve", str(self.path), e) from e
            for r in recs:
                got[int(r.id)] = r
        return got

    def _delete_points(self, ids: NDArray[np.int64]) -> None:
        shard = self._shard()
        h = self._h
        with h.lock:
            try:
                shard.update(qe.UpdateOperation.delete_points(ids.tolist()))
            except Exception as e:  # noqa: BLE001
                raise _edge_error("delete", str(self.path), e) from e
            h.dirty = True

    def count(self) -> int:
        """Return the number of stored points (0 when the shard does not exist)."""
        if self._h.shard is None and not self._meta_file.exists():
            return 0
        if self.read_meta() is None:
            return 0
        try:
            return int(self._shard().count(qe.CountRequest(exact=True)))
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _edge_error("count", str(self.path), e) from e

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        with self._h.lock:
            try:
                recs, nxt = self._shard().scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=limit, with_payload=False, with_vector=False
                    )
                )
            except Exception as e:  # noqa: BLE001
                raise _edge_error("scroll", str(self.path), e) from e
        return recs, nxt

    # -- search ----------------------------------------------------------------------------------
    def _query(
        self,
        vectors: NDArray[np.float32],
        limit: int,
        rescore: bool,
        oversampling: float,
        filter: Filter | None,
        with_vector: bool,
        formula_limit: int | None = None,
    ) -> list[list[Any]]:
        flt = to_edge_filter(filter)
        params = qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=rescore, oversampling=oversampling)
        )
        if formula_limit is None:
            reqs = [
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(v),
                    filter=flt,
                    params=params,
                    with_vector=with_vector,
                    with_payload=False,
                )
                for v in vectors.tolist()
            ]
        else:
            ex = qe.Expression
            formula = qe.Formula(
                ex.Sum(
                    [
                        ex.Mult([ex.Variable(CORR_C_KEY), ex.Variable("$score")]),
                        ex.Variable(CORR_E_KEY),
                    ]
                ),
                defaults={CORR_C_KEY: 0.0, CORR_E_KEY: MISSING_E},
            )
            reqs = [
                qe.QueryRequest(
                    limit=formula_limit,
                    query=formula,
                    prefetches=[qe.Prefetch(limit, qe.Query.Nearest(v), params=params, filter=flt)],
                    with_vector=False,
                    with_payload=False,
                )
                for v in vectors.tolist()
            ]
        shard = self._shard()
        try:
            if len(reqs) == 1:
                return [shard.query(reqs[0])]
            return shard.query_batch(qe.QueryBatchRequest(reqs))
        except Exception as e:  # noqa: BLE001
            raise _edge_error("query", str(self.path), e) from e

    # -- maintenance -----------------------------------------------------------------------------
    def optimize(self) -> bool:
        """Merge segments and vacuum deleted points (Qdrant's optimizers). True if it did work."""
        self._require_open()
        shard = self._shard()
        h = self._h
        with h.lock:
            try:
                did = bool(shard.optimize())
                shard.flush()
            except Exception as e:  # noqa: BLE001
                raise _edge_error("optimize", str(self.path), e) from e
            h.dirty = False
            return did

    def flush(self) -> None:
        """Flush the shard's pending writes to disk."""
        if self._h.shard is not None:
            with self._h.lock:
                self._h.shard.flush()

    def close(self) -> None:
        """Release this handle; the last one optimizes (if asked), flushes and closes the shard."""
        h, self._handle = self._handle, None
        if h is None:
            return
        if not _release(h):
            return
        with h.lock:
            shard, h.shard = h.shard, None
            if shard is None:
                return
            try:
                if h.dirty and self.optimize_on_close:
                    shard.optimize()
                shard.flush()
            except Exception as e:  # noqa: BLE001
                raise _edge_error("closing", h.path, e) from e
            finally:
                shard.close()

    def drop(self) -> None:
        """Delete the shard folder and its metadata."""
        h = self._h
        with h.lock:
            shard, h.shard = h.shard, None
            if shard is not None:
                try:
                    shard.close()
                except Exception:  # noqa: BLE001, S110 - the directory goes anyway
                    pass
            h.dirty = False
            self.meta = None
            if self.path.is_dir():
                looks_like_ours = (self.path / META_FILE).exists() or (
                    self.path / "edge_config.json"
                ).exists()
                if not looks_like_ours and any(self.path.iterdir()):
                    raise StoreError(f"refusing to delete {self.path}: not a Qdrant Edge shard")
                shutil.rmtree(self.path)
