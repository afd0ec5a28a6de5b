"""QdrantStore: hashplug codes in a Qdrant collection through ``qdrant-client``.

Two kinds of location, one class:

* ``qdrant://host:port/collection`` — a Qdrant server, cluster or Qdrant Cloud (``api_key=...``
  or ``$QDRANT_API_KEY``, ``?https=true``, ``?grpc=true``). Needs Qdrant >= 1.16 (collection
  metadata). Transport failures are retried with exponential backoff, a bounded number of times,
  then reported as a :class:`~hashplug.stores.base.StoreError` naming the server.
* ``qdrant+local://PATH/collection`` or ``qdrant+local://:memory:/collection`` — qdrant-client's
  local mode: a pure-Python re-implementation of Qdrant that stores the same collection layout
  but ignores quantization (its searches are exact dot products over the ±1 vectors, which give
  the same Hamming distances and asymmetric distances). Stores of one process that name the same
  PATH share one client (local mode locks its folder against a second client).

Collection layout: point id = the caller's int64 id, vector = s = 2b - 1 (Float16, Dot distance,
originals on disk), binary quantization (1 bit per dimension, ``always_ram``), HNSW off (``m=0``,
``indexing_threshold=0``) so that the coarse Hamming top-C is an exact full scan of the quantized
vectors. The hasher's ``CollectionMeta`` is the collection metadata key ``hashplug``.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient
from qdrant_client import models as m

from hashplug.stores.base import (
    CollectionMeta,
    Filter,
    Payload,
    StoreError,
)
from hashplug.stores.retry import RetryPolicy
from hashplug.stores.uri import parse_uri, to_bool, to_finite_float

from ._common import (
    CORR_C_KEY,
    CORR_E_KEY,
    DATATYPES,
    META_KEY,
    MISSING_E,
    encode_payload,
)
from ._shards import (
    ShardKey,
    check_shard_keys,
    ensure_shard_keys,
    is_custom,
    selector,
    shard_keys_option,
)
from .base import QdrantBase
from .filters import to_client_filter

__all__ = ["QdrantStore", "MEMORY"]

T = TypeVar("T")

#: ``path`` value that selects local mode in memory (shared by the stores of this process).
MEMORY = ":memory:"

_URI_OPTIONS: dict[str, Callable[[str], Any]] = {
    "https": to_bool,
    "grpc": to_bool,
    "grpc_port": int,
    "prefix": str,
    "timeout": int,
    "datatype": str,
    "retries": int,
    "backoff": to_finite_float,
    "shard_number": int,
    "replication_factor": int,
    "hnsw_m": int,
    "shard_key": shard_keys_option,
}
_DTYPES = {"float16": m.Datatype.FLOAT16, "float32": m.Datatype.FLOAT32}


class _Local:
    """One local-mode client per folder (or one for ``:memory:``) per process."""

    def __init__(self, key: str, client: QdrantClient) -> None:
        self.key = key
        self.client = client
        self.lock = threading.RLock()  # local mode is plain Python: serialise its calls
        self.refs = 0


_LOCALS: dict[str, _Local] = {}
_LOCALS_LOCK = threading.Lock()


def _acquire_local(path: str) -> _Local:
    key = MEMORY if path == MEMORY else os.path.realpath(path)
    with _LOCALS_LOCK:
        loc = _LOCALS.get(key)
        if loc is None:
            try:
                client = QdrantClient(location=MEMORY) if key == MEMORY else QdrantClient(path=key)
            except Exception as e:  # noqa: BLE001 - e.g. folder locked by another process
                raise StoreError(f"cannot open Qdrant local mode at {path}: {e}") from e
            loc = _LOCALS[key] = _Local(key, client)
        loc.refs += 1
        return loc


def _release_local(loc: _Local) -> None:
    with _LOCALS_LOCK:
        loc.refs -= 1
        if loc.refs > 0 or loc.key == MEMORY:  # :memory: lives as long as the process
            return
        _LOCALS.pop(loc.key, None)
    with loc.lock:
        loc.client.close()


@atexit.register
def _close_locals() -> None:
    """Close the local-mode clients still open at exit (stores never closed, and ``:memory:``).

    Left to garbage collection, qdrant-client closes them after the interpreter has begun tearing
    down, and prints an ImportError traceback (a folder also stays locked until then).
    """
    with _LOCALS_LOCK:
        open_locals = list(_LOCALS.values())
        _LOCALS.clear()
    for loc in open_locals:
        with loc.lock:
            try:
                loc.client.close()
            except Exception:  # noqa: BLE001, S110 - best effort at exit
                pass


def _is_local_mode(client: Any) -> bool:
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal
    except ImportError:  # pragma: no cover
        return False
    return isinstance(getattr(client, "_client", None), QdrantLocal)


def _is_transient(e: BaseException) -> bool:
    """Worth retrying: the server could not be reached, timed out, or asked us to back off."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(e, ResponseHandlingException):  # wraps httpx transport errors and timeouts
        return True
    if isinstance(e, UnexpectedResponse):
        return e.status_code in (429, 502, 503, 504)
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    try:
        import httpx

        if isinstance(e, httpx.TransportError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import grpc

        if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
            return e.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
    except ImportError:  # pragma: no cover
        pass
    return False


class QdrantStore(QdrantBase):
    """A Qdrant collection of hashplug codes, through qdrant-client.

    Parameters
    ----------
    collection:
        Collection name.
    url, host, port, grpc_port, prefer_grpc, https, api_key, prefix, timeout:
        Where the server is, as for ``qdrant_client.QdrantClient`` (``api_key`` defaults to
        ``$QDRANT_API_KEY``; ``timeout`` in seconds per request).
    path:
        Local mode instead of a server: a folder, or ``":memory:"``.
    client:
        An existing ``QdrantClient`` to use (not closed by ``close()``).
    datatype:
        Storage of the ±1 vectors: ``"float16"`` (default) or ``"float32"``; on a server the
        rescoring query is rounded to it.
    retries, backoff:
        Transient failures (unreachable, timeout, 429/502/503/504) are retried ``retries`` times,
        sleeping ``backoff * 2**i`` seconds (capped at 2 s) between attempts.
    shard_number, replication_factor:
        Passed to ``create_collection`` (clusters); with ``shard_key``, shards per shard key.
    shard_key:
        Custom sharding: a new collection is created with ``sharding_method=custom``. With one
        key (str, or int >= 0), this store reads and writes the shards of that key, creating the
        key on demand; with several (``shard_key=a,b`` in a URI) it searches, reads and deletes
        in all of them (Qdrant merges the hits) and refuses writes. Ids are unique within a
        shard key. A collection without custom sharding, or local mode (which ignores shard
        keys), is refused with a ValueError.
    hnsw_m:
        0 (default): no HNSW, the coarse search is an exact scan of the quantized vectors. A
        positive value builds Qdrant's HNSW graph over them: faster on large collections, but the
        coarse Hamming top-C becomes approximate.
    """

    schemes: ClassVar[tuple[str, ...]] = ("qdrant", "qdrant+local")
    returns_codes: ClassVar[bool] = True
    supports_rescoring: ClassVar[bool] = True

    def __init__(
        self,
        collection: str,
        *,
        url: str | None = None,
        host: str | None = None,
        port: int | None = 6333,
        grpc_port: int = 6334,
        prefer_grpc: bool = False,
        https: bool | None = None,
        api_key: str | None = None,
        prefix: str | None = None,
        timeout: int | None = 10,
        path: str | os.PathLike[str] | None = None,
        client: QdrantClient | None = None,
        datatype: str = "float16",
        retries: int = 3,
        backoff: float = 0.2,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        hnsw_m: int = 0,
        shard_key: ShardKey | Sequence[ShardKey] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(collection, str) or not collection or "/" in collection:
            raise ValueError(f"collection must be a non-empty name without '/', got {collection!r}")
        if datatype not in DATATYPES:
            raise ValueError(f"datatype must be one of {DATATYPES}, got {datatype!r}")
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        if hnsw_m < 0:
            raise ValueError(f"hnsw_m must be >= 0, got {hnsw_m}")
        self.collection = collection
        self.datatype = datatype
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._retry = RetryPolicy(self.retries, self.backoff, max_backoff=2.0, deadline=3600.0)
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self.hnsw_m = int(hnsw_m)
        self.shard_keys = check_shard_keys(shard_key)
        self._custom: bool | None = None  # the collection's sharding_method is custom
        self._keys_ready = False
        self._local: _Local | None = None
        self._owns_client = False
        if client is not None:
            self._client = client
            self.location = "a given QdrantClient"
            if _is_local_mode(client):
                self.location = "a given QdrantClient (local mode)"
        elif path is not None:
            p = str(path)
            self._local = _acquire_local(p)
            self._client = self._local.client
            self.location = f"local mode {p}"
        else:
            if url is None and host is None:
                host = "localhost"
            if api_key is None:
                api_key = os.environ.get("QDRANT_API_KEY") or None
            self._client = QdrantClient(
                url=url,
                host=host,
                port=port,
                grpc_port=grpc_port,
                prefer_grpc=prefer_grpc,
                https=https,
                api_key=api_key,
                prefix=prefix,
                timeout=timeout,
                check_compatibility=False,  # no network round trip at construction
            )
            self._owns_client = True
            if url is not None:
                self.location = url
            else:
                scheme = "https" if https else "http"
                self.location = f"{scheme}://{host}:{grpc_port if prefer_grpc else port}"
        if self.shard_keys and self.is_local_mode:
            self.close()
            raise ValueError(
                "shard_key needs a Qdrant server or cluster: qdrant-client's local mode has no "
                "shards (it ignores shard_key_selector and refuses create_shard_key)"
            )

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> QdrantStore:
        """Open a Qdrant store from a URI.

        ``qdrant://host:6333/docs?https=true``, ``qdrant+local://./qdrant/docs``,
        ``qdrant+local://:memory:/docs``; keyword options override URI options.
        """
        parsed = parse_uri(uri, _URI_OPTIONS)
        scheme, location, opts = parsed.scheme, parsed.location, parsed.options
        if scheme == "qdrant+local":
            head, _, coll = location.rstrip("/").rpartition("/")
            if not head or not coll:
                raise ValueError(
                    "qdrant+local:// needs a folder and a collection, e.g. "
                    "qdrant+local://./data/qdrant/docs or qdrant+local://:memory:/docs"
                )
            bad = set(opts) - {"datatype"}
            if bad:
                raise ValueError(f"options {sorted(bad)} do not apply to local mode")
            opts.update(options)
            return cls(coll, path=head, **opts)
        if scheme != "qdrant":
            raise ValueError(f"QdrantStore handles qdrant:// and qdrant+local://, not {scheme}://")
        if isinstance(opts.get("shard_key"), list) and len(opts["shard_key"]) == 1:
            opts["shard_key"] = opts["shard_key"][0]
        parts = urlsplit("//" + location)
        coll = parts.path.strip("/")
        if not parts.hostname or not coll or "/" in coll:
            raise ValueError(f"qdrant:// URIs look like qdrant://host:6333/collection, got {uri!r}")
        if "grpc" in opts:
            opts["prefer_grpc"] = opts.pop("grpc")
        opts.update(options)
        port = parts.port if parts.port is not None else 6333
        return cls(coll, host=parts.hostname, port=port, **opts)

    @property
    def name(self) -> str:
        """The collection and where it lives, for errors."""
        return f"{self.collection} ({self.location})"

    @property
    def is_local_mode(self) -> bool:
        """True for qdrant-client's local mode (pure Python, exact search, no quantization)."""
        return self._local is not None or _is_local_mode(self._client)

    # -- calling Qdrant --------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[QdrantClient], T]) -> T:
        if self._local is not None:
            with self._local.lock:
                try:
                    return fn(self._client)
                except Exception as e:  # noqa: BLE001 - local mode raises ValueError/RuntimeError
                    raise StoreError(f"Qdrant {self.location}: {what} failed: {e}") from e

        def message(e: BaseException, attempts: int, elapsed: float) -> str:
            return (
                f"Qdrant at {self.location} is unreachable: {what} failed {attempts} times in "
                f"{elapsed:.1f} s (last error: {_describe(e)}); is the server running and the "
                "address/port/https/api_key right?"
            )

        try:
            return self._retry.run(
                lambda: fn(self._client), is_transient=_is_transient, message=message
            )
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - not transient: one line naming it
            raise _server_error(what, self.location, self.collection, e) from e

    # -- metadata --------------------------------------------------------------------------------
    def _exists(self) -> bool:
        return bool(self._call("collection_exists", lambda c: c.collection_exists(self.collection)))

    def read_meta(self) -> CollectionMeta | None:
        """Return the stored metadata, or None if the collection does not exist yet."""
        if not self._exists():
            return None
        info = self._call("get_collection", lambda c: c.get_collection(self.collection))
        md = getattr(info.config, "metadata", None) or {}
        if META_KEY not in md:
            raise StoreError(
                f"collection {self.collection!r} at {self.location} has no hashplug metadata: it "
                "was not created by hashplug (use another collection name), or the server is "
                "older than Qdrant 1.16 and drops collection metadata"
            )
        meta = CollectionMeta.from_json(md[META_KEY])
        self._custom = is_custom(info)
        return meta

    def open(self, meta: CollectionMeta) -> CollectionMeta:
        """As :meth:`Store.open`; then, with ``shard_key``, the key is checked / created."""
        got = super().open(meta)
        self._ensure_shard_keys()
        return got

    # -- custom sharding -------------------------------------------------------------------------
    def _ensure_shard_keys(self) -> None:
        """Check the collection takes shard keys; create the one key on demand (once)."""
        if not self.shard_keys or self._keys_ready:
            return
        if not self._custom:
            raise ValueError(
                f"collection {self.collection!r} at {self.location} was not created with custom "
                "sharding (sharding_method=custom), so it takes no shard_key; Qdrant sets the "
                "sharding method at creation: use another collection name, or open this one "
                "without shard_key"
            )
        self._call(
            "create_shard_key",
            lambda c: ensure_shard_keys(c, self.collection, self.shard_keys, self.location),
        )
        self._keys_ready = True

    def _sel(self) -> dict[str, Any]:
        """Return the ``shard_key_selector`` argument of point requests (none: every shard)."""
        sel = selector(self.shard_keys)
        return {} if sel is None else {"shard_key_selector": sel}

    def _check_engine_limits(
        self, ids: NDArray[np.int64], codes: NDArray[np.uint8], payloads: list[Payload | None]
    ) -> None:
        self._ensure_shard_keys()
        if len(self.shard_keys) > 1:
            raise ValueError(
                f"this store reads the shard keys {list(self.shard_keys)}; writes go to one "
                "shard key: open a store with shard_key=KEY to write"
            )
        if self._custom and not self.shard_keys:
            raise ValueError(
                f"collection {self.collection!r} at {self.location} uses custom sharding: "
                "writes need shard_key=KEY (the shard key the points go to)"
            )

    def create_kwargs(self, meta: CollectionMeta) -> dict[str, Any]:
        """Return the ``create_collection`` arguments of a new collection for ``meta``."""
        kw: dict[str, Any] = {}
        if self.shard_number is not None:
            kw["shard_number"] = self.shard_number
        if self.replication_factor is not None:
            kw["replication_factor"] = self.replication_factor
        if self.shard_keys:
            kw["sharding_method"] = m.ShardingMethod.CUSTOM
        return dict(
            vectors_config=m.VectorParams(
                size=meta.n_bits,
                distance=m.Distance.DOT,
                datatype=_DTYPES[self.datatype],
                on_disk=True,
            ),
            quantization_config=m.BinaryQuantization(
                binary=m.BinaryQuantizationConfig(always_ram=True)
            ),
            hnsw_config=m.HnswConfigDiff(m=self.hnsw_m),
            optimizers_config=(
                m.OptimizersConfigDiff(indexing_threshold=0) if self.hnsw_m == 0 else None
            ),
            metadata={META_KEY: meta.to_json()},
            **kw,
        )

    def _create(self, meta: CollectionMeta) -> None:
        kw = self.create_kwargs(meta)
        self._call("create_collection", lambda c: c.create_collection(self.collection, **kw))
        try:
            back = self.read_meta()
        except StoreError:
            back = None
        if back is None or back.fingerprint != meta.fingerprint:
            self._call("delete_collection", lambda c: c.delete_collection(self.collection))
            raise StoreError(
                f"Qdrant at {self.location} did not keep the collection metadata; hashplug "
                "needs Qdrant >= 1.16"
            )
        self.meta = meta

    # -- data ------------------------------------------------------------------------------------
    @property
    def _batch(self) -> int:
        return 4096 if self._local is not None else 1024

    def _upsert_points(
        self,
        ids: NDArray[np.int64],
        vectors: NDArray[np.float32],
        payloads: Sequence[Payload | None],
        corr: Sequence[tuple[float, float] | None],
    ) -> None:
        b = self._batch
        for s in range(0, ids.size, b):
            e = min(s + b, ids.size)
            points = [
                m.PointStruct(id=int(i), vector=v, payload=encode_payload(p, corr=c))
                for i, v, p, c in zip(
                    ids[s:e].tolist(), vectors[s:e].tolist(), payloads[s:e], corr[s:e], strict=True
                )
            ]
            # Upsert by id is idempotent, so a retried batch never duplicates anything.
            self._call("upsert", functools.partial(self._upsert_batch, points=points))

    def _retrieve(
        self, ids: NDArray[np.int64], with_vector: bool, with_payload: bool
    ) -> dict[int, Any]:
        got: dict[int, Any] = {}
        b = self._batch * 4
        for s in range(0, ids.size, b):
            chunk = ids[s : s + b].tolist()
            get = functools.partial(
                self._retrieve_chunk, ids=chunk, payload=with_payload, vector=with_vector
            )
            recs = self._call("retrieve", get)
            for r in recs:
                got[int(r.id)] = r
        return got

    def _delete_points(self, ids: NDArray[np.int64]) -> None:
        b = self._batch * 4
        for s in range(0, ids.size, b):
            sel = m.PointIdsList(points=ids[s : s + b].tolist())
            self._call("delete", functools.partial(self._delete_selected, selector=sel))

    def _upsert_batch(self, client: QdrantClient, points: list[Any]) -> None:
        client.upsert(self.collection, points=points, wait=True, **self._sel())

    def _retrieve_chunk(
        self, client: QdrantClient, ids: list[int], payload: bool, vector: bool
    ) -> list[Any]:
        return client.retrieve(
            self.collection, ids=ids, with_payload=payload, with_vectors=vector, **self._sel()
        )

    def _delete_selected(self, client: QdrantClient, selector: Any) -> None:
        client.delete(self.collection, points_selector=selector, wait=True, **self._sel())

    def count(self) -> int:
        """Return the number of stored points (0 when the collection does not exist)."""
        if not self._exists():
            return 0
        res = self._call("count", lambda c: c.count(self.collection, exact=True, **self._sel()))
        return int(res.count)

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        return self._call(
            "scroll",
            lambda c: c.scroll(
                self.collection,
                offset=offset,
                limit=limit,
                with_payload=False,
                with_vectors=False,
                **self._sel(),
            ),
        )

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
        reqs = self.query_requests(
            vectors, limit, rescore, oversampling, filter, with_vector, formula_limit
        )
        res = self._call("query", lambda c: c.query_batch_points(self.collection, requests=reqs))
        return [r.points for r in res]

    def query_requests(
        self,
        vectors: NDArray[np.float32],
        limit: int,
        rescore: bool,
        oversampling: float,
        filter: Filter | None,
        with_vector: bool,
        formula_limit: int | None = None,
    ) -> list[m.QueryRequest]:
        """Build the batch of ``QueryRequest`` a search sends (to this store's shard keys).

        ``formula_limit``: the requests rescore a prefetch of ``limit`` points with the cosine
        formula ``c * $score + e`` and return the best ``formula_limit``.
        """
        flt = to_client_filter(filter)
        params = None  # local mode is exact; it warns on params
        if not self.is_local_mode:
            params = m.SearchParams(
                quantization=m.QuantizationSearchParams(rescore=rescore, oversampling=oversampling)
            )
        if formula_limit is None:
            return [
                m.QueryRequest(
                    query=v,
                    limit=limit,
                    filter=flt,
                    params=params,
                    with_vector=with_vector,
                    with_payload=False,
                    shard_key=selector(self.shard_keys),
                )
                for v in vectors.tolist()
            ]
        formula = m.FormulaQuery(
            formula=m.SumExpression(
                sum=[m.MultExpression(mult=[CORR_C_KEY, "$score"]), CORR_E_KEY]
            ),
            defaults={CORR_C_KEY: 0.0, CORR_E_KEY: MISSING_E},
        )
        return [
            m.QueryRequest(
                query=formula,
                prefetch=m.Prefetch(query=v, limit=limit, filter=flt, params=params),
                limit=formula_limit,
                with_vector=False,
                with_payload=False,
                shard_key=selector(self.shard_keys),
            )
            for v in vectors.tolist()
        ]

    # -- lifecycle -------------------------------------------------------------------------------
    def drop(self) -> None:
        """Drop the collection and its metadata."""
        if self._exists():
            self._call("delete_collection", lambda c: c.delete_collection(self.collection))
        self.meta = None
        self._custom, self._keys_ready = None, False

    def close(self) -> None:
        """Close the client; the collection stays stored."""
        if self._local is not None:
            loc, self._local = self._local, None
            _release_local(loc)
        elif self._owns_client:
            self._owns_client = False
            try:
                self._client.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection
                pass


def _describe(e: BaseException) -> str:
    src = getattr(e, "source", None)
    return f"{type(e).__name__}: {src if src is not None else e}"


def _server_error(what: str, location: str, collection: str, e: BaseException) -> BaseException:
    from qdrant_client.http.exceptions import UnexpectedResponse

    if isinstance(e, UnexpectedResponse):
        code = e.status_code
        hint = ""
        if code in (401, 403):
            hint = "; check api_key (or $QDRANT_API_KEY)"
        elif code == 404:
            hint = f"; does collection {collection!r} exist?"
        content = e.content.decode("utf-8", "replace")[:300] if e.content else ""
        return StoreError(
            f"Qdrant at {location}: {what} failed with HTTP {code} {e.reason_phrase}: {content}{hint}"
        )
    hint = ""
    try:
        import grpc

        if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                hint = "; check api_key (or $QDRANT_API_KEY)"
            elif e.code() == grpc.StatusCode.NOT_FOUND:
                hint = f"; does collection {collection!r} exist?"
    except ImportError:  # pragma: no cover
        pass
    return StoreError(f"Qdrant at {location}: {what} failed: {_describe(e)}{hint}")
