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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import qdrant_edge as qe
from numpy.typing import ArrayLike, NDArray

from hashplug.stores.base import (
    CollectionMeta,
    Filter,
    HitsStore,
    Payload,
    ScoredHits,
    StoreError,
    as_ids,
)
from hashplug.stores.registry import split_uri

from ._common import (
    DATATYPES,
    META_FILE,
    check_rescore_args,
    codes_to_vectors,
    decode_payload,
    encode_payload,
    hits_from_points,
    parse_query_options,
    query_tanh,
    rescored_from_points,
    vectors_to_codes,
)
from .filters import to_edge_filter

__all__ = ["QdrantEdgeStore", "edge_config"]

_UPSERT_BATCH = 4096
_RETRIEVE_BATCH = 8192
_URI_OPTIONS: dict[str, type] = {
    "datatype": str,
    "optimize_on_close": bool,
    "max_search_threads": int,
}
_DTYPES = {
    "float16": qe.VectorStorageDatatype.Float16,
    "float32": qe.VectorStorageDatatype.Float32,
}


def edge_config(
    n_bits: int, datatype: str = "float16", max_search_threads: int | None = None
) -> qe.EdgeConfig:
    """The shard configuration for ``n_bits`` codes: ±1 vectors, Dot, 1-bit BQ in RAM, no HNSW."""
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


def _edge_error(what: str, path: str, e: BaseException) -> StoreError:
    msg = str(e)
    if "WouldBlock" in msg or "lock" in msg.lower():
        return StoreError(
            f"Qdrant Edge shard {path} is open in another process ({what}: {msg}); "
            "a shard can be opened by one process at a time"
        )
    return StoreError(f"Qdrant Edge shard {path}: {what} failed: {msg}")


class QdrantEdgeStore(HitsStore):
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
        scheme, rest = split_uri(uri)
        if scheme not in cls.schemes:
            raise ValueError(f"QdrantEdgeStore handles qdrant-edge://, not {scheme}://")
        location, _, query = rest.partition("?")
        if not location:
            raise ValueError(
                "qdrant-edge:// needs a shard directory, e.g. qdrant-edge://./data/docs"
            )
        opts = parse_query_options(query, _URI_OPTIONS)
        opts.update(options)
        return cls(location, **opts)

    @property
    def name(self) -> str:
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
    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
    ) -> None:
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        meta = self._require_open()
        if new_ids.size == 0:
            return
        vectors = codes_to_vectors(new_codes, meta.n_bits)
        shard = self._shard()
        h = self._h
        with h.lock:
            for s in range(0, new_ids.size, _UPSERT_BATCH):
                e = min(s + _UPSERT_BATCH, new_ids.size)
                points = [
                    qe.Point(int(i), v, encode_payload(p, bool_shadow=True))
                    for i, v, p in zip(
                        new_ids[s:e].tolist(), vectors[s:e].tolist(), new_pl[s:e], strict=True
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

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        meta = self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((q.size, meta.n_bytes), np.uint8)
        found = np.zeros(q.size, bool)
        valid = q >= 0
        if not valid.any():
            return out, found
        got = self._retrieve(np.unique(q[valid]), with_vector=True, with_payload=False)
        rows = [i for i, v in enumerate(q.tolist()) if v in got]
        if rows:
            out[rows] = vectors_to_codes([got[int(q[i])].vector for i in rows], meta.n_bits)
            found[rows] = True
        return out, found

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        valid = q[q >= 0]
        got = (
            self._retrieve(np.unique(valid), with_vector=False, with_payload=True)
            if valid.size
            else {}
        )
        return [decode_payload(got[i].payload) if i in got else None for i in q.tolist()]

    def delete(self, ids: ArrayLike) -> None:
        self._require_open()
        q = np.unique(as_ids(ids))
        if q.size == 0:
            return
        shard = self._shard()
        h = self._h
        with h.lock:
            try:
                shard.update(qe.UpdateOperation.delete_points(q.tolist()))
            except Exception as e:  # noqa: BLE001
                raise _edge_error("delete", str(self.path), e) from e
            h.dirty = True

    def count(self) -> int:
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

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        self._require_open()
        offset = None
        while True:
            with self._h.lock:
                try:
                    recs, offset = self._shard().scroll(
                        qe.ScrollRequest(
                            offset=offset,
                            limit=max(1, int(batch_size)),
                            with_payload=False,
                            with_vector=False,
                        )
                    )
                except Exception as e:  # noqa: BLE001
                    raise _edge_error("scroll", str(self.path), e) from e
            if recs:
                yield np.array([int(r.id) for r in recs], np.int64)
            if offset is None or not recs:
                return

    # -- search ----------------------------------------------------------------------------------
    def _query(
        self,
        vectors: NDArray[np.float32],
        limit: int,
        params: qe.SearchParams,
        filter: Filter | None,
        with_vector: bool,
    ) -> list[list[Any]]:
        flt = to_edge_filter(filter)
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
        shard = self._shard()
        try:
            if len(reqs) == 1:
                return [shard.query(reqs[0])]
            return shard.query_batch(qe.QueryBatchRequest(reqs))
        except Exception as e:  # noqa: BLE001
            raise _edge_error("query", str(self.path), e) from e

    def _hits(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None, with_vector: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        q = self._check_query(query_codes, limit)
        meta = self._require_open()
        n_q = q.shape[0]
        if n_q == 0:
            empty = np.zeros((0, limit), np.int64)
            codes = np.zeros((0, limit, meta.n_bytes), np.uint8) if with_vector else None
            return empty, empty.astype(np.int32), codes
        # Quantized scores only (no rescoring, no oversampling): 1-bit BQ Dot = n - 2 * Hamming.
        params = qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=False, oversampling=1.0)
        )
        res = self._query(codes_to_vectors(q, meta.n_bits), int(limit), params, filter, with_vector)
        return hits_from_points(res, meta.n_bits, int(limit), with_vector)

    def search_rescored(
        self,
        query_logits: ArrayLike,
        k: int,
        oversample: int = 10,
        filter: Filter | None = None,
        *,
        exact_ties: bool = True,
    ) -> ScoredHits:
        """Native asymmetric search: Qdrant picks the Hamming top ``k * oversample`` on the
        quantized vectors and rescores them against the stored ±1 vectors with t = tanh(u / 2).

        ``query_logits``: the hasher's calibrated query logits u (``hasher.query_logits``, whose
        sigmoid is ``hasher.query``), (Q, n_bits) or (n_bits,). Returns ``(ids int64
        (Q, k), asym float32 (Q, k))`` ascending by (distance, id), asym = Σ|b - p| =
        (n_bits - s·t) / 2; padding is id -1 and distance +inf. ``exact_ties=True`` asks Qdrant
        for all ``k * oversample`` rescored candidates (limit k·O, oversampling 1) so that ties at
        the k-th place break by smaller id; ``False`` uses Qdrant's own oversampling (limit k,
        oversampling O), which picks the same candidates but breaks a tie at the cut arbitrarily.
        With ``datatype="float16"`` Qdrant rounds t to float16 before the dot product.
        """
        k, oversample = check_rescore_args(k, oversample)
        meta = self._require_open()
        t = query_tanh(query_logits, meta.n_bits)
        if exact_ties:
            limit, factor = k * oversample, 1.0
        else:
            limit, factor = k, float(oversample)
        params = qe.SearchParams(
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=factor)
        )
        if t.shape[0] == 0:
            return ScoredHits(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
        res = self._query(t, limit, params, filter, with_vector=False)
        return rescored_from_points(res, meta.n_bits, k)

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
        if self._h.shard is not None:
            with self._h.lock:
                self._h.shard.flush()

    def close(self) -> None:
        h, self._handle = self._handle, None
        if h is None:
            return
        with _HANDLES_LOCK:
            h.refs -= 1
            last = h.refs <= 0
            if last:
                _HANDLES.pop(h.path, None)
        if not last:
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
