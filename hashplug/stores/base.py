"""The store contract every database adapter fulfils.

A ``Store`` is one collection of packed binary codes keyed by int64 ids, with an optional JSON-able
payload per id. It does the coarse, symmetric part of search (Hamming top-C); ``HashIndex`` does the
hashing and the asymmetric rerank on top of it.

Adapters subclass :class:`Store`, implement the abstract methods, and register the class under the
entry-point group ``hashplug.stores`` with the URI scheme as the name (see ``hashplug.open_store``).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..codes import HAMMING_PAD, as_packed, check_n_bits
from ..errors import HasherMismatchError, StoreError

__all__ = [
    "CollectionMeta",
    "Store",
    "HitsStore",
    "StoreError",
    "HasherMismatchError",
    "Payload",
    "Filter",
    "HAMMING_PAD",
    "check_ids",
    "check_payloads",
    "sort_hits",
]

Payload = dict[str, Any]
#: A portable filter is a dict ``{field: value}`` (all must be equal); each store also accepts its
#: engine's native filter (a SQL ``where`` string for LanceDB, a boolean expression for Milvus, a
#: ``qdrant_client.models.Filter`` for Qdrant, a callable ``payload -> bool`` for LocalStore).
Filter = Any


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection remembers about the hasher (and encoder) that wrote it."""

    n_bits: int
    fingerprint: str
    hasher_spec: Mapping[str, Any] = field(default_factory=dict)
    encoder: str | None = None

    def __post_init__(self) -> None:
        check_n_bits(self.n_bits)
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ValueError("fingerprint must be a non-empty string")

    @property
    def n_bytes(self) -> int:
        return self.n_bits // 8

    def to_json(self) -> str:
        return json.dumps(
            {
                "n_bits": self.n_bits,
                "fingerprint": self.fingerprint,
                "hasher_spec": dict(self.hasher_spec),
                "encoder": self.encoder,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CollectionMeta:
        try:
            d = json.loads(text)
            return cls(
                n_bits=int(d["n_bits"]),
                fingerprint=str(d["fingerprint"]),
                hasher_spec=d.get("hasher_spec") or {},
                encoder=d.get("encoder"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"collection metadata is unreadable: {e}") from e

    def check_compatible(self, other: CollectionMeta, where: str = "collection") -> None:
        """Raise HasherMismatchError unless ``other`` was made by the same hasher/encoder."""
        if other.fingerprint != self.fingerprint or other.n_bits != self.n_bits:
            raise HasherMismatchError(
                f"{where} was written by hasher {self.fingerprint} "
                f"({_describe(self)}), but hasher {other.fingerprint} ({_describe(other)}) "
                "was given; use the hasher that wrote it (hashplug.load_hasher) or a new collection"
            )
        if self.encoder and other.encoder and self.encoder != other.encoder:
            raise HasherMismatchError(
                f"{where} holds embeddings of encoder {self.encoder!r}, not {other.encoder!r}"
            )


def _describe(meta: CollectionMeta) -> str:
    kind = meta.hasher_spec.get("class", "hasher")
    return f"{kind}, {meta.n_bits} bits"


def check_ids(ids: ArrayLike, n: int | None = None) -> NDArray[np.int64]:
    """Validate ids: 1-D integers, no duplicates, ``n`` of them if given -> int64."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"got {a.shape[0]} ids for {n} vectors")
    if a.size and (a < 0).any():
        raise ValueError("ids must be >= 0 (-1 marks padding in results)")
    if a.size != np.unique(a).size:
        raise ValueError("ids contain duplicates within one call")
    return a


def check_payloads(payloads: Sequence[Payload | None] | None, n: int) -> list[Payload | None]:
    """Validate payloads: None, or one dict (or None) per id, JSON-serialisable."""
    if payloads is None:
        return [None] * n
    out = list(payloads)
    if len(out) != n:
        raise ValueError(f"got {len(out)} payloads for {n} ids")
    for i, p in enumerate(out):
        if p is not None and not isinstance(p, Mapping):
            raise ValueError(f"payload {i} must be a dict or None, got {type(p).__name__}")
        if p is not None:
            try:
                json.dumps(p)
            except TypeError as e:
                raise ValueError(f"payload {i} is not JSON-serialisable: {e}") from e
    return out


def sort_hits(
    ids: NDArray[np.int64], dist: NDArray[np.int32], limit: int
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Order each row by (distance, id), drop duplicate ids, pad to ``limit`` with (-1, HAMMING_PAD).

    Adapters call it on whatever their engine returned, so that every store orders ties the same.
    """
    q = ids.shape[0]
    out_i = np.full((q, limit), -1, dtype=np.int64)
    out_d = np.full((q, limit), HAMMING_PAD, dtype=np.int32)
    for r in range(q):
        keep = ids[r] >= 0
        i, d = ids[r][keep], dist[r][keep].astype(np.int32)
        i, first = np.unique(i, return_index=True)
        d = d[first]
        order = np.lexsort((i, d))[:limit]
        out_i[r, : order.size] = i[order]
        out_d[r, : order.size] = d[order]
    return out_i, out_d


class Store(ABC):
    """One collection of packed codes in one database.

    Lifecycle: construct (or ``hashplug.open_store(uri)``), then ``open(meta)`` creates the
    collection or checks that the existing one was written by the same hasher. All methods take and
    return codes in DESIGN.md's layout (``uint8 (n, n_bits // 8)``, ``np.packbits`` order).
    Implementations must be safe for concurrent ``search`` calls from several threads.
    """

    #: URI scheme(s) this store answers to, e.g. ``("lancedb",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when ``search_with_codes`` gets codes from the engine in the same round trip.
    returns_codes: ClassVar[bool] = False

    def __init__(self) -> None:
        self.meta: CollectionMeta | None = None
        self._lock = threading.RLock()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> Store:
        """Build a store from a URI of one of :attr:`schemes` (``scheme://location``)."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URI")

    # -- collection metadata --------------------------------------------------------------------
    @abstractmethod
    def read_meta(self) -> CollectionMeta | None:
        """The stored metadata, or None if the collection does not exist yet."""

    @abstractmethod
    def _create(self, meta: CollectionMeta) -> None:
        """Create an empty collection that remembers ``meta``."""

    def open(self, meta: CollectionMeta) -> CollectionMeta:
        """Create the collection for ``meta``, or open it and check it was written by that hasher."""
        with self._lock:
            existing = self.read_meta()
            if existing is None:
                self._create(meta)
                existing = meta
            else:
                existing.check_compatible(meta, where=f"collection {self.name!r}")
            self.meta = existing
            return existing

    @property
    def name(self) -> str:
        """A short human name for errors (the collection/table name)."""
        return type(self).__name__

    def _require_open(self) -> CollectionMeta:
        if self.meta is None:
            meta = self.read_meta()
            if meta is None:
                raise StoreError(
                    f"collection {self.name!r} does not exist yet; call open(meta) "
                    "(HashIndex does this for you)"
                )
            self.meta = meta
        return self.meta

    # -- data ------------------------------------------------------------------------------------
    @abstractmethod
    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
    ) -> None:
        """Insert or replace items: an id that exists is replaced, never duplicated."""

    @abstractmethod
    def search(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Coarse symmetric search: per query the ``limit`` nearest codes by Hamming distance.

        Returns ``(ids int64 (Q, limit), hamming int32 (Q, limit))`` ascending by (distance, id);
        slots beyond the number of matching items hold id -1 and distance :data:`HAMMING_PAD`.
        """

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8]]:
        """Like :meth:`search`, plus the hits' codes ``(Q, limit, n_bytes)`` (zeros for padding).

        The default runs :meth:`search` then one batched :meth:`lookup_codes`; adapters whose
        engine returns the stored vectors with the hits override it.
        """
        ids, dist = self.search(query_codes, limit, filter)
        meta = self._require_open()
        flat = ids.reshape(-1)
        uniq, inverse = np.unique(flat, return_inverse=True)
        valid = uniq >= 0
        codes_u = np.zeros((uniq.size, meta.n_bytes), dtype=np.uint8)
        if valid.any():
            got, found = self.lookup_codes(uniq[valid])
            codes_u[valid] = got
            # An item deleted between the two calls drops out of the result.
            gone = np.flatnonzero(valid)[~found]
            if gone.size:
                lost = np.isin(flat, uniq[gone]).reshape(ids.shape)
                ids = np.where(lost, -1, ids)
                dist = np.where(lost, HAMMING_PAD, dist).astype(np.int32)
        codes = codes_u[inverse].reshape(ids.shape + (meta.n_bytes,))
        return ids, dist, codes

    @abstractmethod
    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Codes of ``ids`` in order, and a mask of which ids exist (missing rows are zeros)."""

    def get_codes(self, ids: ArrayLike) -> NDArray[np.uint8]:
        """Codes of ``ids`` in order; KeyError naming the ids that are not stored."""
        ids_a = np.asarray(ids, dtype=np.int64).reshape(-1)
        codes, found = self.lookup_codes(ids_a)
        if not found.all():
            missing = ids_a[~found]
            raise KeyError(f"{missing.size} ids not in {self.name!r}: {missing[:10].tolist()}")
        return codes

    @abstractmethod
    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        """Payloads of ``ids`` in order (None for ids without payload or not stored)."""

    @abstractmethod
    def delete(self, ids: ArrayLike) -> None:
        """Delete items; ids that are not stored are ignored."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored items (0 when the collection does not exist)."""

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Every stored id once, in int64 batches of at most ``batch_size`` (order unspecified).

        Attach's ``sync`` uses it to find codes whose source rows are gone."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its ids")

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole collection and its metadata."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections/handles. The collection stays stored."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers for implementations ------------------------------------------------------------
    def _check_upsert(
        self, ids: ArrayLike, codes: ArrayLike, payloads: Sequence[Payload | None] | None
    ) -> tuple[NDArray[np.int64], NDArray[np.uint8], list[Payload | None]]:
        meta = self._require_open()
        c = as_packed(codes, meta.n_bits)
        i = check_ids(ids, c.shape[0])
        return i, c, check_payloads(payloads, c.shape[0])

    def _check_query(self, query_codes: ArrayLike, limit: int) -> NDArray[np.uint8]:
        meta = self._require_open()
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        return as_packed(query_codes, meta.n_bits)


class HitsStore(Store):
    """A :class:`Store` whose engine can return the stored codes with the hits.

    Subclasses implement :meth:`_hits` once; :meth:`search` and :meth:`search_with_codes` (one
    engine query, no second lookup) both come from it.
    """

    @abstractmethod
    def _hits(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None, with_codes: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        """(ids, hamming, codes or None): :meth:`search`'s result, plus the hits' codes
        ``(Q, limit, n_bytes)`` (zeros for padding) when ``with_codes``."""

    def search(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        ids, dist, _ = self._hits(query_codes, limit, filter, False)
        return ids, dist

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8]]:
        ids, dist, codes = self._hits(query_codes, limit, filter, True)
        if codes is None:
            raise StoreError(f"{type(self).__name__}._hits returned no codes for with_codes=True")
        return ids, dist, codes
