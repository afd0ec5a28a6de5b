"""MilvusStore: hashplug codes in a Milvus collection, searched by Milvus' HAMMING metric.

Collection layout (one collection per hashplug collection)::

    id          INT64, primary key           the caller's id (upsert key)
    code        BINARY_VECTOR(dim=n_bits)    packed code, DESIGN.md bit order (np.packbits)
    code_w<j>   INT64, j < ceil(n_bytes/8)   the same code bytes as little-endian int64 words
                                             (only with code_words=True, the default): Milvus
                                             returns scalars with the search in one pass, while a
                                             vector output field costs a second internal pass
    payload     VARCHAR(max 65535)           the whole payload as JSON ("" = no payload), so that
                                             get_payloads returns exactly the dict given
    code_corr   INT32                        the scoring="cosine" factors (c, e): two float16 in
                                             one int32 (4 bytes), NaN for none. Collections of
                                             older versions lack it (Milvus adds no field to a
                                             collection): they serve scoring="asymmetric" only
    $meta       dynamic fields               every other top-level payload key, so that Milvus
                                             boolean expressions filter on it: color == "red"

The hasher's :class:`~hashplug.stores.base.CollectionMeta` is the collection's description
(``hashplug-meta:`` + JSON), written atomically with the collection, readable by any client.
Index on ``code``: ``BIN_FLAT`` (exact) or ``BIN_IVF_FLAT`` (``nlist`` at creation, ``nprobe`` per
search); metric ``HAMMING``. Milvus Lite (a local ``.db`` file) supports ``BIN_FLAT`` only.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pymilvus import DataType, MilvusClient

from hashplug.stores.base import (
    HAMMING_PAD,
    CodeHits,
    CollectionMeta,
    Filter,
    HasherMismatchError,
    HitsStore,
    MatchNothing,
    Payload,
    Store,
    StoreError,
    as_ids,
    check_positive_int,
    check_store_corrections,
    normalize_filter,
    pack_corrections,
    sort_hits,
    unpack_corrections,
)
from hashplug.stores.uri import parse_uri, to_bool, to_finite_float

from ._filters import RESERVED as FILTER_FIELDS
from ._filters import to_expression
from ._partitions import KEY_TYPES, PartitionKey, check_names, key_of_desc, names_option
from ._retry import RetryPolicy, error_chain, is_transient, short_error
from ._rows import (
    CORR_FIELD,
    _dynamic_json,
    _hit_codes,
    _layout_of,
    _n_words,
    _reorder_codes,
    _upsert_request,
    codes_to_words,
)

__all__ = [
    "MilvusStore",
    "META_PREFIX",
    "MAX_TOPK",
    "INDEX_TYPES",
    "CONSISTENCY_LEVELS",
]

#: Prefix of the collection description that holds ``CollectionMeta.to_json()``.
META_PREFIX = "hashplug-meta:"
#: Milvus' largest ``limit`` (topk) per search; larger limits are clamped and padded with -1.
MAX_TOPK = 16384
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
DEFAULT_PORT = 19530

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_BASE_RESERVED = frozenset({"id", "code", "payload"}) | FILTER_FIELDS
_MAX_NQ = 1024  # query vectors per search RPC
_MAX_HITS_PER_CALL = 262_144  # nq * topk per search RPC
_GET_CHUNK = 4096  # ids per get / delete RPC
_MAX_MESSAGE = 32 * 1024 * 1024  # bytes per upsert RPC (Milvus' gRPC default limit is 64 MiB)
_UNSET: Any = object()

_URI_OPTIONS: dict[str, Callable[[str], Any]] = {
    "token": str,
    "user": str,
    "password": str,
    "db_name": str,
    "db": str,
    "secure": to_bool,
    "index": str,
    "nlist": int,
    "nprobe": int,
    "consistency_level": str,
    "consistency": str,
    "num_shards": int,
    "partition": names_option,
    "partitions": names_option,
    "partition_key": str,
    "partition_key_type": str,
    "num_partitions": int,
    "code_words": to_bool,
    "batch_size": int,
    "payload_max_length": int,
    "timeout": to_finite_float,
    "connect_timeout": to_finite_float,
    "retries": int,
    "backoff": to_finite_float,
    "max_backoff": to_finite_float,
    "retry_deadline": to_finite_float,
}


def _import_lite_quietly() -> None:
    """Import milvus_lite without the deprecation warning its pkg_resources import prints.

    pymilvus would import it on the first Lite client, and the warning would reach every Lite user
    (pinned setuptools<81 keeps it working); a missing package is left for pymilvus to report.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            pass


def _payload_text(p: Payload) -> str:
    return json.dumps(p, ensure_ascii=False, separators=(",", ":"))


class MilvusStore(HitsStore):
    """One hashplug collection in Milvus (a server, a cluster, a managed Milvus, or Milvus Lite).

    ``uri``: ``http(s)://host:port`` of a server, or the path of a Milvus Lite file ending in
    ``.db``. ``collection``: the collection name (letters, digits, underscores).

    Options (also accepted as URI query options by :meth:`from_uri`):

    - ``token`` / ``user`` + ``password`` / ``db_name``: authentication and database.
    - ``index``: ``"BIN_FLAT"`` (exact, default) or ``"BIN_IVF_FLAT"`` with ``nlist`` (at creation)
      and ``nprobe`` (per search, settable at any time as ``store.nprobe``). Opening an existing
      collection uses the index it has; :meth:`set_index` rebuilds it.
    - ``consistency_level``: ``"Session"`` (default: this process reads its own writes at once;
      Milvus 2.3 makes every ``"Strong"`` read wait for the next time tick, ~200 ms), ``"Strong"``
      (also see other processes' writes at once), ``"Bounded"``, ``"Eventually"``.
    - ``num_shards``: DML channels (shards) of a new collection, spread over a cluster's data
      nodes (None: the server's default, 1 on 2.3); searches fan out over them inside Milvus.
      Milvus Lite has one.
    - ``partition``: a partition name (or several: ``partitions=a,b`` in a URI). With one name,
      this store reads and writes that partition only, creating it on demand; with several it
      searches, reads and deletes in those (Milvus searches them and merges the hits) and
      refuses writes. Ids are unique within a partition (a Milvus upsert replaces within the
      partition it writes). Not with ``partition_key``; not on Milvus Lite.
    - ``partition_key``: at creation, this payload field becomes a schema field (``VARCHAR`` or
      with ``partition_key_type="int64"`` ``INT64``) and Milvus' partition key, hashed over
      ``num_partitions`` partitions (server default 64): every row's payload must hold it, and
      filters on it (``{"tenant": "a"}``) search only the partitions it hashes to. A collection
      with a key is written by delete + insert (Milvus 2.3.5's upsert misroutes such rows).
    - ``code_words``: keep the int64 copy of the codes that lets searches return the hits' codes
      in the same pass (default True; only read at creation).
    - ``batch_size``: rows per upsert RPC (also capped at ~32 MiB per RPC).
    - ``timeout``: seconds per RPC; ``connect_timeout``: seconds to reach the server;
      ``retries``, ``backoff``, ``max_backoff``, ``retry_deadline``: transient errors (server
      unreachable, restarting, overloaded) are retried ``retries`` times with exponential backoff,
      then raised as :class:`~hashplug.stores.base.StoreError`.

    ``on_batch(done, total)``, if set, is called after each upsert batch has been written.

    Search filters: a dict ``{field: value}`` or a Milvus boolean expression over payload fields,
    e.g. ``'color == "red" and rank > 3'``.
    """

    schemes: ClassVar[tuple[str, ...]] = ("milvus", "milvus+lite")
    supports_corrections: ClassVar[bool] = True
    correction_bytes: ClassVar[int] = 4  # one INT32: two float16

    def __init__(
        self,
        uri: str = f"http://127.0.0.1:{DEFAULT_PORT}",
        collection: str = "hashplug",
        *,
        token: str = "",
        user: str = "",
        password: str = "",
        db_name: str = "",
        index: str = "BIN_FLAT",
        nlist: int = 128,
        nprobe: int = 16,
        consistency_level: str = "Session",
        num_shards: int | None = None,
        partition: str | Sequence[str] | None = None,
        partition_key: str | None = None,
        partition_key_type: str = "varchar",
        num_partitions: int | None = None,
        code_words: bool = True,
        batch_size: int = 10_000,
        payload_max_length: int = 65_535,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
        retry_deadline: float = 60.0,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise ValueError(
                f"invalid Milvus collection name {collection!r}: use letters, digits and "
                "underscores, starting with a letter or underscore (at most 255 characters)"
            )
        uri = os.fspath(uri)
        self.is_lite = _is_lite(uri)
        if self.is_lite:
            uri = str(Path(uri).expanduser().absolute())
        elif not re.match(r"^(https?|tcp|grpc)://", uri):
            raise ValueError(
                f"MilvusStore uri must be http(s)://host:port (a server) or a path ending in "
                f".db (Milvus Lite), got {uri!r}"
            )
        index = str(index).upper()
        if index not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {index!r}")
        if self.is_lite and index != "BIN_FLAT":
            raise ValueError("Milvus Lite supports only the BIN_FLAT index for binary vectors")
        levels = {c.lower(): c for c in CONSISTENCY_LEVELS}
        if str(consistency_level).lower() not in levels:
            raise ValueError(f"consistency_level must be one of {CONSISTENCY_LEVELS}")
        for nm, v in (("nlist", nlist), ("nprobe", nprobe), ("batch_size", batch_size)):
            check_positive_int(v, nm)
        if num_shards is not None:
            check_positive_int(num_shards, "num_shards", 64)
            if self.is_lite:
                raise ValueError("num_shards applies to Milvus servers; Milvus Lite has one shard")
        self.partitions = check_names(partition)
        self.partition_key = _check_key(partition_key, partition_key_type, num_partitions)
        if self.partition_key is not None and self.partitions:
            raise ValueError(
                "partition and partition_key exclude each other: Milvus creates no named "
                "partitions in a collection with a partition key"
            )
        if self.is_lite and (self.partitions or self.partition_key is not None):
            raise ValueError(
                "Milvus Lite has no partitions (partition / partition_key): its partition RPCs "
                "are unimplemented in 2.5; use a Milvus server, or filter on a payload field"
            )
        self.num_partitions = None if num_partitions is None else int(num_partitions)
        if not 1 <= payload_max_length <= 65_535:
            raise ValueError("payload_max_length must be in [1, 65535] (Milvus' VARCHAR limit)")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        self.uri = uri
        self.collection = collection
        self.token, self.user, self.password, self.db_name = token, user, password, db_name
        self.index = index
        self.nlist = int(nlist)
        self.nprobe = int(nprobe)
        self.consistency_level = levels[str(consistency_level).lower()]
        self.num_shards = None if num_shards is None else int(num_shards)
        self._deleted = False  # see _read_level
        self._synced = False  # see _read_level
        self.code_words = bool(code_words)
        self.batch_size = int(batch_size)
        self.payload_max_length = int(payload_max_length)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retry = RetryPolicy(int(retries), float(backoff), float(max_backoff), retry_deadline)
        self.on_batch = on_batch
        self.returns_codes = self.code_words or not self.is_lite  # type: ignore[misc]
        self._conn_lock = threading.Lock()
        self._client: MilvusClient | None = None
        self._stale = False
        self._ready = False
        self._layout: dict[str, Any] | None = None
        self._fast_upsert = True

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> MilvusStore:
        """Open a Milvus store from a URI.

        ``milvus://[user:password@]host[:port]/[db/]collection[?option=value&...]`` (a server;
        ``secure=true`` for TLS) or ``milvus+lite://path/to/file.db/collection`` (Milvus Lite;
        ``milvus+lite:///abs/path/file.db/collection`` for an absolute path). Keyword ``options``
        override the URI's.
        """
        if not isinstance(uri, str) or "://" not in uri:
            raise ValueError(f"not a milvus URI: {uri!r}")
        parsed = parse_uri(uri, _URI_OPTIONS)
        scheme, rest, opts = parsed.scheme, parsed.location, dict(parsed.options)
        if "db" in opts:
            opts["db_name"] = opts.pop("db")
        if "consistency" in opts:
            opts["consistency_level"] = opts.pop("consistency")
        if "partitions" in opts:
            if "partition" in opts:
                raise ValueError(f"give partition= or partitions=, not both, in {uri!r}")
            opts["partition"] = opts.pop("partitions")
        if isinstance(opts.get("partition"), list) and len(opts["partition"]) == 1:
            opts["partition"] = opts["partition"][0]
        secure = opts.pop("secure", False)
        opts.update(options)
        if scheme == "milvus+lite":
            path, _, name = rest.rstrip("/").rpartition("/")
            if not path or not name or not path.endswith(".db"):
                raise ValueError(
                    "milvus+lite URIs look like milvus+lite://path/to/file.db/collection "
                    f"(the file must end in .db), got {uri!r}"
                )
            return cls(unquote(path), unquote(name), **opts)
        if scheme != "milvus":
            raise ValueError(f"MilvusStore handles milvus:// and milvus+lite://, not {scheme}://")
        parts = urlsplit("//" + rest)
        if not parts.hostname:
            raise ValueError(f"milvus URI needs a host: milvus://host:port/collection, got {uri!r}")
        segs = [unquote(s) for s in parts.path.split("/") if s]
        if len(segs) == 1:
            name = segs[0]
        elif len(segs) == 2:
            opts.setdefault("db_name", segs[0])
            name = segs[1]
        else:
            raise ValueError(
                f"milvus URIs look like milvus://host:port/collection or "
                f"milvus://host:port/database/collection, got {uri!r}"
            )
        if parts.username:
            opts.setdefault("user", unquote(parts.username))
        if parts.password:
            opts.setdefault("password", unquote(parts.password))
        host = parts.hostname
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = parts.port or DEFAULT_PORT
        proto = "https" if secure else "http"
        return cls(f"{proto}://{host}:{port}", name, **opts)

    @property
    def name(self) -> str:
        """The collection name, for errors."""
        return self.collection

    @property
    def location(self) -> str:
        """Where the collection lives, without credentials (for messages)."""
        where = f"Milvus Lite file {self.uri}" if self.is_lite else f"Milvus at {self.uri}"
        db = f", database {self.db_name!r}" if self.db_name else ""
        return f"{where}{db}"

    def __repr__(self) -> str:
        return f"MilvusStore({self.uri!r}, {self.collection!r}, index={self.index!r})"

    # -- connection and retries -------------------------------------------------------------------
    def _probe(self) -> None:
        """Fail fast (ConnectionRefusedError, timeout) when nothing listens at the address."""
        parts = urlsplit(self.uri)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else DEFAULT_PORT)
        with socket.create_connection((host, port), timeout=self.connect_timeout):
            pass

    def _connect(self) -> MilvusClient:
        with self._conn_lock:
            if self._client is not None and not self._stale:
                return self._client
            old, self._client = self._client, None
            if old is not None:
                _close_quietly(old)
            if self.is_lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                _import_lite_quietly()
            else:
                self._probe()
            # A private alias: pymilvus shares connections by alias, and one store's close()
            # must not cut another store's connection.
            alias = f"hashplug-milvus-{uuid.uuid4().hex}"
            kwargs: dict[str, Any] = {"timeout": self.connect_timeout, "alias": alias}
            for key in ("token", "user", "password", "db_name"):
                if getattr(self, key):
                    kwargs[key] = getattr(self, key)
            self._client = MilvusClient(self.uri, **kwargs)
            self._stale = False
            return self._client

    def _mark_stale(self, client: MilvusClient) -> None:
        with self._conn_lock:
            if self._client is client:
                self._stale = True
                self._synced = False  # a new client starts a new session

    def _rpc(self) -> dict[str, Any]:
        # A float timeout and retry_times=0 switch pymilvus' own retry loop off (it would
        # otherwise retry for minutes); our RetryPolicy retries instead, reconnecting between.
        return {"timeout": self.timeout, "retry_times": 0}

    def _call(self, op: str, fn: Callable[[MilvusClient], Any], *, ready: bool = True) -> Any:
        """Run ``fn(client)`` with retries; errors become StoreError (or ValueError)."""

        def attempt() -> Any:
            client = self._connect()
            if ready:
                self._ensure_ready(client)
            try:
                return fn(client)
            except Exception as e:
                if _not_loaded(e):
                    self._ready = False  # e.g. a server restarted and still loading: load again
                    raise _Transient(short_error(e)) from e
                if is_transient(e):
                    self._mark_stale(client)
                raise

        def message(e: BaseException, attempts: int, elapsed: float) -> str:
            return (
                f"{self.location} did not complete {op} on collection {self.collection!r} "
                f"after {attempts} attempt(s) over {elapsed:.1f} s ({short_error(e)}). "
                "Check that the server is running and reachable (host, port, TLS, "
                "token/user/password); writes are upserts by id, so re-running the same "
                "ingest afterwards completes it without duplicates."
            )

        try:
            return self.retry.run(attempt, is_transient=is_transient, message=message)
        except (StoreError, ValueError, KeyError, HasherMismatchError):
            raise
        except Exception as e:
            raise StoreError(
                f"{self.location}: {op} on collection {self.collection!r} failed: {short_error(e)}"
            ) from e

    # -- metadata and layout ----------------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        """Return the stored metadata, or None if the collection does not exist yet."""

        def go(c: MilvusClient) -> dict[str, Any] | None:
            if not c.has_collection(self.collection, **self._rpc()):
                return None
            return dict(c.describe_collection(self.collection, **self._rpc()))

        desc = self._call("describe_collection", go, ready=False)
        if desc is None:
            self._layout = None
            return None
        text = str(desc.get("description") or "")
        if not text.startswith(META_PREFIX):
            raise StoreError(
                f"collection {self.collection!r} in {self.location} exists but was not created "
                "by hashplug (its description holds no hashplug metadata); use another "
                "collection name"
            )
        meta = CollectionMeta.from_json(text[len(META_PREFIX) :])
        layout = _layout_of(desc, meta, self.collection)
        layout["key"] = self._check_partitioning(key_of_desc(desc))
        self._layout = layout
        self.returns_codes = bool(self._layout["words"]) or not self.is_lite  # type: ignore[misc]
        return meta

    def _create(self, meta: CollectionMeta) -> None:
        n_words = _n_words(meta.n_bytes) if self.code_words else 0
        schema = MilvusClient.create_schema(
            auto_id=False,
            enable_dynamic_field=True,
            description=META_PREFIX + meta.to_json(),
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=meta.n_bits)
        for j in range(n_words):
            schema.add_field(f"code_w{j}", DataType.INT64)
        schema.add_field("payload", DataType.VARCHAR, max_length=self.payload_max_length)
        schema.add_field(CORR_FIELD, DataType.INT32)
        key = self.partition_key
        extra: dict[str, Any] = {}
        if key is not None:
            schema.add_field(key.field, **key.schema_args())
            if self.num_partitions is not None:
                extra["num_partitions"] = self.num_partitions
        if self.num_shards is not None:
            extra["num_shards"] = self.num_shards

        def go(c: MilvusClient) -> None:
            c.create_collection(
                self.collection,
                schema=schema,
                consistency_level=self._read_level(),
                **extra,
                **self._rpc(),
            )
            params = c.prepare_index_params()
            params.add_index(**self._index_spec(self.index, self.nlist))
            # sync=False: the collection is empty, nothing to wait for (pymilvus polls at 0.5 s).
            c.create_index(self.collection, params, sync=False, **self._rpc())
            self._load(c)
            self._ensure_partitions(c)

        try:
            self._call("create_collection", go, ready=False)
        except StoreError:
            # Another client may have created it a moment ago: then it must be the same hasher.
            existing = self.read_meta()
            if existing is None:
                raise
            existing.check_compatible(meta, where=f"collection {self.collection!r}")
            return
        self._layout = {
            "words": n_words,
            "payload_max_length": self.payload_max_length,
            "index": self.index,
            "corr": True,
            "key": key,
        }
        self.returns_codes = bool(n_words) or not self.is_lite  # type: ignore[misc]
        self._ready = True  # created, indexed and loaded just now

    @staticmethod
    def _index_spec(index: str, nlist: int) -> dict[str, Any]:
        params = {"nlist": int(nlist)} if index == "BIN_IVF_FLAT" else {}
        return {
            "field_name": "code",
            "index_type": index,
            "metric_type": "HAMMING",
            "params": params,
        }

    def _ensure_ready(self, client: MilvusClient) -> None:
        """Load the collection (once per connection state) and learn its index type."""
        if self._ready:
            return
        if self._layout is None:
            return  # not created yet; the calls that need it fail with a clear error
        if not _is_loaded(client.get_load_state(self.collection, **self._rpc())):
            self._load(client)
        self._ensure_partitions(client)
        if not self.is_lite:
            try:
                names = client.list_indexes(self.collection, field_name="code", **self._rpc())
                if names:
                    info = client.describe_index(self.collection, names[0], **self._rpc())
                    kind = str(info.get("index_type", "")).upper()
                    if kind in INDEX_TYPES:
                        self._layout["index"] = kind
                        self.index = kind
                        if kind == "BIN_IVF_FLAT" and info.get("nlist"):
                            self.nlist = int(info["nlist"])
            except Exception as e:  # noqa: BLE001 - only informative; keep the configured index
                if is_transient(e):
                    raise
        self._ready = True

    def _load(self, client: MilvusClient) -> None:
        """Load the collection into memory and wait (polling every 50 ms) until it is loaded."""
        client.load_collection(self.collection, _async=True, **self._rpc())
        deadline = time.monotonic() + self.timeout
        while not _is_loaded(client.get_load_state(self.collection, **self._rpc())):
            if time.monotonic() > deadline:
                raise StoreError(
                    f"collection {self.collection!r} in {self.location} did not load in "
                    f"{self.timeout:.0f} s"
                )
            time.sleep(0.05)

    # -- partitions -------------------------------------------------------------------------------
    def _check_partitioning(self, key: PartitionKey | None) -> PartitionKey | None:
        """Return the collection's partition key; ValueError when the options ask for another."""
        want = self.partition_key
        if want is not None and want != key:
            has = "no partition key" if key is None else f"partition key {key.field!r} ({key.kind})"
            raise ValueError(
                f"collection {self.collection!r} in {self.location} has {has}, not "
                f"{want.field!r} ({want.kind}); Milvus sets the key at creation only: use "
                "another collection name, or open this one without partition_key"
            )
        if key is not None and self.partitions:
            raise ValueError(
                f"collection {self.collection!r} has the partition key {key.field!r}: Milvus "
                "picks its partitions by the key, so partition= does not apply; filter on "
                f"{key.field!r} instead"
            )
        return key

    def _key(self) -> PartitionKey | None:
        return self._layout.get("key") if self._layout else self.partition_key

    def _ensure_partitions(self, client: MilvusClient) -> None:
        """Create the one named partition on demand, or check that several exist.

        Milvus loads a new partition of a loaded collection; missing ones of several are a
        ValueError naming them.
        """
        if not self.partitions:
            return
        rpc = self._rpc()
        missing = [
            p for p in self.partitions if not client.has_partition(self.collection, p, **rpc)
        ]
        if not missing:
            return
        if len(self.partitions) == 1:
            client.create_partition(self.collection, missing[0], **rpc)
            state = client.get_load_state(self.collection, partition_name=missing[0], **rpc)
            if not _is_loaded(state):
                client.load_partitions(self.collection, [missing[0]], **rpc)
            return
        have = client.list_partitions(self.collection, **rpc)
        raise ValueError(
            f"partitions {missing} do not exist in collection {self.collection!r} in "
            f"{self.location} (it has {have}); a store over several partitions only reads: "
            "write each one through a store with partition=NAME, which creates it"
        )

    def _parts(self) -> dict[str, Any]:
        """Return the ``partition_names`` argument of reads."""
        return {"partition_names": list(self.partitions)} if self.partitions else {}

    def _require_layout(self) -> dict[str, Any]:
        self._require_open()
        if self._layout is None:
            self.read_meta()
        if self._layout is None:
            raise StoreError(f"collection {self.collection!r} no longer exists in {self.location}")
        return self._layout

    def _reserved(self) -> frozenset[str]:
        words = self._layout["words"] if self._layout else 0
        corr = {CORR_FIELD} if self._layout and self._layout.get("corr") else set()
        return _BASE_RESERVED | {f"code_w{j}" for j in range(words)} | corr

    def corrections_unavailable(self) -> str | None:
        """Return None when the collection has the factor field, else why not and what to do."""
        if self._require_layout().get("corr"):
            return None
        return (
            f"Milvus collection {self.collection!r} in {self.location} was created by an older "
            f"hashplug, without the {CORR_FIELD!r} field that keeps the scoring='cosine' factors "
            "(Milvus cannot add a field to a collection): ingest into a new collection "
            "(HashIndex.add(x, ids, scoring='cosine')) to use scoring='cosine', or keep "
            "scoring='asymmetric' here"
        )

    # -- data -------------------------------------------------------------------------------------
    def _check_engine_limits(
        self, ids: NDArray[np.int64], codes: NDArray[np.uint8], payloads: list[Payload | None]
    ) -> None:
        """Each payload's JSON must fit the collection's VARCHAR (``payload_max_length``)."""
        layout = self._require_layout()
        if len(self.partitions) > 1:
            raise ValueError(
                f"this store reads the partitions {list(self.partitions)}; writes go to one "
                "partition: open a store with partition=NAME to write"
            )
        key = layout.get("key")
        if key is not None:
            key.check_payloads(ids.tolist(), payloads)
        max_len = int(layout["payload_max_length"])
        for i, p in enumerate(payloads):
            if p is None:
                continue
            size = len(_payload_text(p).encode("utf-8"))
            if size > max_len:
                raise ValueError(
                    f"payload of id {int(ids[i])} is {size} bytes of JSON; this collection keeps "
                    f"at most {max_len} (payload_max_length)"
                )

    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        corrections: ArrayLike | None = None,
    ) -> None:
        """Insert or replace items, in batches of at most ``batch_size`` rows per RPC.

        ``corrections`` (n, 2): the items' ``scoring="cosine"`` factors, kept as float16 (a row
        of NaN, or None: none). Everything is validated before the first write. Each batch is
        retried on transient errors; when the retries are spent a StoreError says so, and the
        batches before it are stored. Re-running the same upsert completes it (an id is
        replaced, never duplicated).
        """
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        layout = self._require_layout()
        meta = self._require_open()
        corr16 = check_store_corrections(corrections, new_ids.size)
        corr = pack_corrections(corr16) if layout.get("corr") else None
        if corr is None and not np.isnan(corr16).all():
            raise ValueError(self.corrections_unavailable())
        n = new_ids.size
        if n == 0:
            return
        reserved = self._reserved()
        key = layout.get("key")
        static = frozenset() if key is None else frozenset({key.field})
        keys = None if key is None else key.values(new_pl)  # checked by _check_engine_limits
        texts: list[str] = []
        dyn: list[bytes] = []
        for p in new_pl:  # sizes were checked by _check_engine_limits
            texts.append("" if p is None else _payload_text(p))
            dyn.append(_dynamic_json(p, reserved, static))
        words = codes_to_words(new_codes) if layout["words"] else None
        row_bytes = meta.n_bytes + 8 * int(layout["words"]) + 32
        row_bytes += (sum(len(t) for t in texts) * 2) // max(n, 1)
        step = max(1, min(self.batch_size, _MAX_MESSAGE // row_bytes))
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            batch = (
                new_ids[sl],
                new_codes[sl],
                None if words is None else words[sl],
                texts[sl],
                dyn[sl],
                None if corr is None else corr[sl],
                None if keys is None else keys[sl],
            )
            self._call("upsert", functools.partial(self._send_upsert_batch, batch=batch))
            if self.on_batch is not None:
                self.on_batch(sl.stop, n)

    def _send_upsert_batch(self, client: MilvusClient, batch: tuple[Any, ...]) -> None:
        self._send_upsert(client, *batch)

    def _send_upsert(
        self,
        client: MilvusClient,
        ids: NDArray[np.int64],
        codes: NDArray[np.uint8],
        words: NDArray[np.int64] | None,
        texts: list[str],
        dyn: list[bytes],
        corr: NDArray[np.int32] | None,
        keys: list[Any] | None = None,
    ) -> None:
        key = self._key()
        part = self.partitions[0] if self.partitions else ""
        if key is not None:
            # Milvus 2.3.5's upsert puts rows in the wrong partition of a partition-key
            # collection (filters on the key then miss them): delete, then insert. A retry of
            # the batch repeats both, so every id stays once.
            client.delete(self.collection, ids=ids.tolist(), **self._rpc())
        if self._fast_upsert:
            try:
                kcol = None if key is None or keys is None else (key.field, key.dtype, keys)
                request = _upsert_request(
                    self.collection,
                    ids,
                    codes,
                    words,
                    texts,
                    dyn,
                    corr,
                    partition=part,
                    key=kcol,
                    insert=key is not None,
                )
                conn = client._get_connection()
            except (AttributeError, ImportError, TypeError):  # pragma: no cover - pymilvus drift
                self._fast_upsert = False
            else:
                # The prepared request skips pymilvus' per-row conversion (~50 us a row).
                send = conn.batch_insert if key is not None else conn.upsert
                param = "insert_param" if key is not None else "upsert_param"
                send(
                    self.collection,
                    [],
                    schema={"fields": ["prepared"]},
                    **{param: request},
                    **self._rpc(),
                )
                return
        rows: list[dict[str, Any]] = []
        for r in range(ids.size):
            row: dict[str, Any] = json.loads(dyn[r])
            row.update(id=int(ids[r]), code=codes[r].tobytes(), payload=texts[r])
            if words is not None:
                row.update({f"code_w{j}": int(words[r, j]) for j in range(words.shape[1])})
            if corr is not None:
                row[CORR_FIELD] = int(corr[r])
            if key is not None and keys is not None:
                row[key.field] = keys[r]
            rows.append(row)
        write = client.insert if key is not None else client.upsert
        write(self.collection, rows, partition_name=part, **self._rpc())

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> CodeHits:
        """Search like :meth:`search`, also returning the hits' codes."""
        layout = self._require_layout()
        if not layout["words"] and self.is_lite:
            # Milvus Lite 2.5 crashes when a search outputs a binary vector: one batched get.
            return Store.search_with_codes(self, query_codes, limit, filter)
        return super().search_with_codes(query_codes, limit, filter)

    def search_with_corrections(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[CodeHits, NDArray[np.float32]]:
        """With the int64 code words, the factors come with the hits (one search call)."""
        layout = self._require_layout()
        flt = None if isinstance(filter, Mapping) and not filter else filter
        if not (layout["words"] and layout.get("corr")) or isinstance(
            normalize_filter(flt), MatchNothing
        ):
            return super().search_with_corrections(query_codes, limit, filter)
        ids, dist, wide = self._hits(query_codes, limit, flt, True, with_corr=True)
        assert wide is not None
        nb = wide.shape[-1] - 4
        packed = np.ascontiguousarray(wide[..., nb:]).view("<i4")[..., 0]
        corr = unpack_corrections(packed.reshape(-1)).reshape(ids.shape + (2,))
        corr[ids < 0] = np.nan
        return CodeHits(ids, dist, np.ascontiguousarray(wide[..., :nb])), corr

    def _hits(
        self,
        query_codes: ArrayLike,
        limit: int,
        filter: Filter | None,
        with_codes: bool,
        with_corr: bool = False,
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        """Return the Hamming top-``limit`` per query.

        Milvus caps one search at 16384 hits: beyond that the rows are padded with -1. Filters as in
        the class doc. ``with_corr`` (with the code words): each code gets 4 more bytes, the packed
        factors of ``code_corr``.
        """
        q = self._check_query(query_codes, limit)
        meta = self._require_open()
        layout = self._require_layout()
        key = layout.get("key")
        expr = to_expression(filter if key is None else key.prune_filter(filter), self._reserved())
        nq, nb = q.shape[0], meta.n_bytes
        topk = min(int(limit), MAX_TOPK)
        words = int(layout["words"])
        out_fields: list[str] = []
        if with_codes:
            out_fields = [f"code_w{j}" for j in range(words)] if words else ["code"]
        if with_corr:
            out_fields.append(CORR_FIELD)
        width = nb + 4 if with_corr else nb
        params: dict[str, Any] = {"metric_type": "HAMMING", "params": {}}
        if self.index == "BIN_IVF_FLAT":
            params["params"] = {"nprobe": int(self.nprobe)}
        out_i = np.full((nq, limit), -1, np.int64)
        out_d = np.full((nq, limit), HAMMING_PAD, np.int32)
        out_c = np.zeros((nq, limit, width), np.uint8) if with_codes else None
        per_call = max(1, min(_MAX_NQ, _MAX_HITS_PER_CALL // topk))
        for s in range(0, nq, per_call):
            data = [row.tobytes() for row in q[s : s + per_call]]

            def go(c: MilvusClient, data: list[bytes] = data) -> Any:
                return c.search(
                    self.collection,
                    data=data,
                    filter=expr,
                    limit=topk,
                    output_fields=out_fields or None,
                    search_params=params,
                    anns_field="code",
                    consistency_level=self._read_level(),
                    **self._parts(),
                    **self._rpc(),
                )

            try:
                res = self._call("search", go)
            except StoreError as e:
                if expr and _is_bad_expression(e):
                    raise ValueError(
                        f"Milvus refused the filter {expr!r}: {short_error(e.__cause__ or e)}"
                    ) from e
                raise
            raw_i = np.full((len(data), topk), -1, np.int64)
            raw_d = np.full((len(data), topk), HAMMING_PAD, np.int32)
            raw_c = np.zeros((len(data), topk, width), np.uint8) if with_codes else None
            for r, hits in enumerate(res):
                m = len(hits.ids)
                if m == 0:
                    continue
                raw_i[r, :m] = np.asarray(hits.ids, dtype=np.int64)
                raw_d[r, :m] = np.rint(np.asarray(hits.distances, dtype=np.float64))
                if raw_c is not None:
                    raw_c[r, :m, :nb] = _hit_codes(hits, m, nb, words)
                if raw_c is not None and with_corr:
                    ents = [h["entity"] for h in list.__iter__(hits)][:m]
                    packed = np.fromiter((e[CORR_FIELD] for e in ents), np.int64, m)
                    raw_c[r, :m, nb:] = packed.astype("<i4").view(np.uint8).reshape(m, 4)
            got_i, got_d = sort_hits(raw_i, raw_d, limit)
            rows = slice(s, s + len(data))
            out_i[rows], out_d[rows] = got_i, got_d
            if out_c is not None and raw_c is not None:
                out_c[rows] = _reorder_codes(raw_i, raw_c, got_i)
        return out_i, out_d, out_c

    def _get(self, ids: NDArray[np.int64], field: list[str], op: str) -> dict[int, dict[str, Any]]:
        """Rows of ``ids`` (unique, existing ones only) with ``field`` columns, keyed by id."""
        self._require_layout()
        out: dict[int, dict[str, Any]] = {}
        uniq = np.unique(ids)
        for s in range(0, uniq.size, _GET_CHUNK):
            chunk = uniq[s : s + _GET_CHUNK].tolist()

            def go(c: MilvusClient, chunk: list[int] = chunk) -> Any:
                return c.get(
                    self.collection,
                    ids=chunk,
                    output_fields=field,
                    consistency_level=self._read_level(),
                    **self._parts(),
                    **self._rpc(),
                )

            for row in self._call(op, go):
                out[int(row["id"])] = row
        return out

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Return the codes of ``ids`` in order and a mask of which ids exist."""
        meta = self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((q.size, meta.n_bytes), np.uint8)
        found = np.zeros(q.size, bool)
        if q.size == 0:
            return out, found
        rows = self._get(q, ["code"], "get codes")
        for r, i in enumerate(q.tolist()):
            row = rows.get(i)
            if row is not None:
                code = row["code"]
                if isinstance(code, (list, tuple)):  # pymilvus returns [bytes] from queries
                    code = code[0]
                out[r] = np.frombuffer(bytes(code), np.uint8)[: meta.n_bytes]
                found[r] = True
        return out, found

    def lookup_corrections(self, ids: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the factors of ``ids`` (NaN and not found for rows written without them).

        One get per 4096 ids. ValueError on a collection of an older version (no factor field).
        """
        self._require_open()
        why = self.corrections_unavailable()
        if why is not None:
            raise ValueError(why)
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.full((q.size, 2), np.nan, np.float32)
        if q.size == 0:
            return out, np.zeros(0, bool)
        rows = self._get(q, [CORR_FIELD], "get corrections")
        packed = np.zeros(q.size, np.int64)
        found = np.zeros(q.size, bool)
        for r, i in enumerate(q.tolist()):
            row = rows.get(i)
            if row is not None:
                packed[r], found[r] = int(row[CORR_FIELD]), True
        if found.any():
            out[found] = unpack_corrections(packed[found])
        return out, found & ~np.isnan(out).any(axis=1)

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        """Return the payloads of ``ids`` in order (None where absent)."""
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        if q.size == 0:
            return []
        rows = self._get(q, ["payload"], "get payloads")
        out: list[Payload | None] = []
        for i in q.tolist():
            row = rows.get(i)
            text = row.get("payload") if row is not None else None
            out.append(json.loads(text) if text else None)
        return out

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Yield every id once, in id order.

        Pages of ``id > last`` (at most 16384 ids each, Milvus' query window), as pymilvus'
        ``query_iterator`` reads them.
        """
        self._require_open()
        if self._layout is None and self.read_meta() is None:
            return
        page = max(1, min(int(batch_size), MAX_TOPK))
        last: int | None = None
        while True:
            expr = "" if last is None else f"id > {last}"

            def go(c: MilvusClient, expr: str = expr) -> list[dict[str, Any]]:
                return list(
                    c.query(
                        self.collection,
                        filter=expr,
                        limit=page,
                        output_fields=["id"],
                        consistency_level=self._read_level(),
                        iterator="True",  # id-ordered pages
                        **self._parts(),
                        **self._rpc(),
                    )
                )

            rows = self._call("list ids", go)
            if not rows:
                return
            ids = np.fromiter((int(r["id"]) for r in rows), np.int64, len(rows))
            last = int(ids[-1])
            yield ids

    def delete(self, ids: ArrayLike) -> None:
        """Delete items; ids that are not stored are ignored."""
        self._require_layout()
        q = np.unique(as_ids(ids))
        self._deleted = True
        for s in range(0, q.size, _GET_CHUNK):
            chunk = q[s : s + _GET_CHUNK].tolist()
            self._call("delete", functools.partial(self._delete_chunk, chunk=chunk))

    def _delete_chunk(self, client: MilvusClient, chunk: list[int]) -> None:
        for part in self.partitions or ("",):  # "": every partition
            client.delete(self.collection, ids=chunk, partition_name=part or None, **self._rpc())

    def _read_level(self) -> str:
        """Return the consistency level of reads.

        After a delete by this store, Strong: Milvus 2.3's Session guarantee does not always cover
        deletes (count(*) was seen counting a row deleted by the same client), and reads must never
        show deleted ids.

        Under Session, the first read of a store object is Strong too: a new client's session
        has no write timestamp yet, so its reads would be Eventually and miss rows that another
        process (an ingest that just finished) had already written. One Strong read brings the
        query node up to date; later Session reads see at least that (one query node; a
        cluster with several replicas needs ``consistency_level="Strong"`` for this).
        """
        if self._deleted:
            return "Strong"
        if self.consistency_level == "Session" and not self._synced:
            self._synced = True
            return "Strong"
        return self.consistency_level

    def count(self) -> int:
        """Return the number of stored items (0 when the collection does not exist)."""
        if self._layout is None and self.read_meta() is None:
            return 0

        def go(c: MilvusClient) -> int:
            res = c.query(
                self.collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level=self._read_level(),
                **self._parts(),
                **self._rpc(),
            )
            return int(res[0]["count(*)"])

        return int(self._call("count", go))

    def drop(self) -> None:
        """Drop the collection and its metadata."""

        def go(c: MilvusClient) -> None:
            if c.has_collection(self.collection, **self._rpc()):
                c.drop_collection(self.collection, **self._rpc())

        with self._lock:
            self._call("drop_collection", go, ready=False)
            self.meta = None
            self._layout = None
            self._ready = False

    def close(self) -> None:
        """Close the client; the collection stays stored."""
        with self._conn_lock:
            if self._client is not None:
                _close_quietly(self._client)
            self._client = None
            self._ready = False

    # -- Milvus specifics -------------------------------------------------------------------------
    def flush(self) -> None:
        """Seal the growing segments (they get indexed and persisted to object storage)."""
        self._require_layout()
        self._call("flush", lambda c: c.flush(self.collection, **self._rpc()))

    def index_progress(self) -> tuple[int, int]:
        """``(indexed rows, total rows)`` of the ``code`` index (sealed segments only)."""
        self._require_layout()

        def go(c: MilvusClient) -> tuple[int, int]:
            names = c.list_indexes(self.collection, field_name="code", **self._rpc())
            info = c.describe_index(self.collection, names[0], **self._rpc())
            return int(info.get("indexed_rows", 0)), int(info.get("total_rows", 0))

        return tuple(self._call("describe_index", go))

    def wait_for_index(
        self, timeout: float = 300.0, poll: float = 0.5, serving: bool = True
    ) -> None:
        """Flush, then wait until every row is in an indexed sealed segment.

        With ``serving``, also wait until the query nodes serve those segments with their index
        (Milvus swaps indexed segments in some seconds after building them; until then they are
        scanned brute force). Use it before measuring an IVF index. A no-op on Milvus Lite.
        """
        if self.is_lite:
            return
        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            done, total = self.index_progress()
            if done >= total and (not serving or self._served_indexed_rows() >= total):
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"the index of {self.collection!r} covers {done}/{total} rows after "
                    f"{timeout:.0f} s"
                )
            time.sleep(poll)

    def _served_indexed_rows(self) -> int:
        """Rows in sealed segments that the query nodes serve (with the IVF index if any)."""
        flat = self.index == "BIN_FLAT"  # served from the raw data: no index to swap in

        def go(c: MilvusClient) -> int:
            infos = c._get_connection().get_query_segment_info(self.collection, **self._rpc())
            sealed = [i for i in infos if int(i.state) in (3, 4)]  # Sealed, Flushed
            return sum(int(i.num_rows) for i in sealed if flat or i.index_name or i.indexID)

        return int(self._call("get_query_segment_info", go))

    def set_index(self, index: str, nlist: int | None = None) -> None:
        """Rebuild the ``code`` index as ``index`` (``BIN_FLAT`` / ``BIN_IVF_FLAT``)."""
        index = str(index).upper()
        if index not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {index!r}")
        if self.is_lite and index != "BIN_FLAT":
            raise ValueError("Milvus Lite supports only the BIN_FLAT index for binary vectors")
        nlist = self.nlist if nlist is None else int(nlist)
        self._require_layout()

        def go(c: MilvusClient) -> None:
            c.release_collection(self.collection, **self._rpc())
            for name in c.list_indexes(self.collection, field_name="code", **self._rpc()):
                c.drop_index(self.collection, name, **self._rpc())
            params = c.prepare_index_params()
            params.add_index(**self._index_spec(index, nlist))
            c.create_index(self.collection, params, **self._rpc())
            self._load(c)

        with self._lock:
            self._call("set_index", go, ready=False)
            self.index, self.nlist = index, nlist
            self._ready = False


# -- helpers ----------------------------------------------------------------------------------------
class _Transient(ConnectionError):
    """Marks an error as worth another attempt (e.g. a collection that is still loading)."""


def _check_key(field: str | None, kind: str, num_partitions: int | None) -> PartitionKey | None:
    """Check the ``partition_key`` options and return them."""
    if num_partitions is not None:
        check_positive_int(num_partitions, "num_partitions", 4096)
        if field is None:
            raise ValueError("num_partitions applies with partition_key=FIELD")
    if field is None:
        return None
    kind = str(kind).lower()
    if kind not in KEY_TYPES:
        raise ValueError(f"partition_key_type must be one of {KEY_TYPES}, got {kind!r}")
    if not isinstance(field, str) or not _NAME.match(field):
        raise ValueError(
            f"partition_key must be a payload key usable as a Milvus field name (letters, "
            f"digits, underscores), got {field!r}"
        )
    if field in _BASE_RESERVED or field == CORR_FIELD or re.match(r"^code_w\d+$", field):
        raise ValueError(f"partition_key {field!r} is a field of hashplug's collection layout")
    return PartitionKey(field, kind)


def _is_lite(uri: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*://", uri) and uri.endswith(".db")


def _close_quietly(client: MilvusClient) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        pass


def _is_loaded(state: Mapping[str, Any]) -> bool:
    text = str(state.get("state", ""))
    return text.endswith("Loaded") and "NotLoad" not in text


def _not_loaded(exc: BaseException) -> bool:
    for e in error_chain(exc):
        msg = str(e).lower()
        if "not loaded" in msg or "not fully loaded" in msg or "collection not load" in msg:
            return True
    return False


def _is_bad_expression(exc: BaseException) -> bool:
    msg = " ".join(str(e).lower() for e in error_chain(exc))
    return any(w in msg for w in ("expr", "parse", "syntax", "invalid", "cannot"))
