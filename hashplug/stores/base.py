"""The store contract every database adapter fulfils.

A ``Store`` is one collection of packed binary codes keyed by int64 ids, with an optional JSON-able
payload per id. It does the coarse, symmetric part of search (Hamming top-C); ``HashIndex`` does the
hashing and the asymmetric rerank on top of it.

Adapters subclass :class:`Store`, implement the abstract methods, and register the class under the
entry-point group ``hashplug.stores`` with the URI scheme as the name (see ``hashplug.open_store``).
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validate import check_positive_int
from ..codes import HAMMING_PAD, as_packed, check_n_bits
from ..errors import HasherMismatchError, StoreError
from ..results import CodeHits, Hits, ScoredHits

__all__ = [
    "CAPABILITY_METHODS",
    "CollectionMeta",
    "CodeHits",
    "Hits",
    "ScoredHits",
    "Store",
    "HitsStore",
    "StoreError",
    "HasherMismatchError",
    "Payload",
    "Filter",
    "HAMMING_PAD",
    "as_ids",
    "normalize_filter",
    "dict_filter_matches",
    "scalar_equal",
    "MATCH_NOTHING",
    "MatchNothing",
    "check_ids",
    "check_payloads",
    "check_store_corrections",
    "pack_corrections",
    "unpack_corrections",
    "check_positive_int",
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
        """Bytes per packed code (``n_bits // 8``)."""
        return self.n_bits // 8

    def to_json(self) -> str:
        """Return the metadata as the JSON text stores keep."""
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
        """Parse the JSON text of :meth:`to_json`; raise ValueError when it is malformed."""
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


_INT64_MAX = 2**63 - 1


def as_ids(ids: ArrayLike, what: str = "ids") -> NDArray[np.int64]:
    """Return ``ids`` as a 1-D int64 array, or raise ValueError.

    Integers only (``1.7`` or ``True`` is refused, never truncated), each in [0, 2**63 - 1]. Used by
    every store's ``upsert`` and ``delete``.
    """
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype == object:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a):
            bad = next(v for v in a if not isinstance(v, (int, np.integer)) or isinstance(v, bool))
            raise ValueError(f"{what} must be integers, got {type(bad).__name__} {bad!r:.40}")
        big = [int(v) for v in a if not -(2**63) <= int(v) <= _INT64_MAX]
        if big:
            raise ValueError(f"{what} must fit in int64 (at most 2**63 - 1), got {big[0]}")
        a = a.astype(np.int64)
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be integers (int64), got dtype {a.dtype}")
    elif a.dtype == np.uint64 and (a > _INT64_MAX).any():
        raise ValueError(
            f"{what} must fit in int64 (at most 2**63 - 1), got {int(a[a > _INT64_MAX][0])}"
        )
    a = a.astype(np.int64, copy=False)
    if (a < 0).any():
        raise ValueError(f"{what} must be >= 0 (-1 marks padding in results), got {int(a.min())}")
    return a


def check_ids(ids: ArrayLike, n: int | None = None) -> NDArray[np.int64]:
    """Validate ids for a write: :func:`as_ids`, ``n`` of them if given, no duplicates."""
    a = as_ids(ids)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"got {a.shape[0]} ids for {n} vectors")
    if a.size > 1 and not (a[1:] > a[:-1]).all() and a.size != np.unique(a).size:
        raise ValueError("ids contain duplicates within one call")
    return a


def check_payloads(payloads: Sequence[Payload | None] | None, n: int) -> list[Payload | None]:
    """Validate payloads: None, or one dict (or None) per id, that every store keeps as given.

    Refused everywhere alike (so that a round trip gives the same dict on every store): keys that
    are not non-empty strings, NaN and infinities, integers outside int64, and values that JSON
    cannot hold (sets, bytes, objects). Tuples come back as lists.
    """
    if payloads is None:
        return [None] * n
    if isinstance(payloads, Mapping):
        raise ValueError("payloads must be a list with one dict (or None) per id, got one dict")
    out = list(payloads)
    if len(out) != n:
        raise ValueError(f"got {len(out)} payloads for {n} ids")
    for i, p in enumerate(out):
        if p is None:
            continue
        if not isinstance(p, Mapping):
            raise ValueError(f"payload {i} must be a dict or None, got {type(p).__name__}")
        problem = _payload_problem(p)
        if problem:
            raise ValueError(f"payload {i}: {problem}")
    return out


def _payload_problem(v: Any, depth: int = 0) -> str | None:
    """Why ``v`` cannot be stored the same on every store, or None."""
    if depth > 32:
        return "nested more than 32 levels deep"
    if v is None or isinstance(v, (bool, str)):
        return None
    if isinstance(v, int):
        return None if -(2**63) <= v <= _INT64_MAX else f"integer {v} is outside int64"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{v} is not a finite number (JSON cannot hold it)"
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str) or not k:
                return f"key {k!r} is not a non-empty string"
            why = _payload_problem(x, depth + 1)
            if why:
                return f"{k!r}: {why}"
        return None
    if isinstance(v, (list, tuple)):
        for x in v:
            why = _payload_problem(x, depth + 1)
            if why:
                return why
        return None
    return (
        f"a {type(v).__name__} value is not JSON-serialisable "
        "(str, int, float, bool, None, lists and dicts)"
    )


def check_store_corrections(corr: ArrayLike | None, n: int) -> NDArray[np.float16]:
    """Validate the ``corrections=`` of an upsert: (n, 2) floats -> float16.

    As every store keeps them. None or a row of NaN: that item has no factors (NaN). ValueError for
    another shape or dtype, inf, NaN in part of a row, or values beyond float16.
    """
    if corr is None:
        return np.full((n, 2), np.nan, np.float16)
    a = np.asarray(corr)
    if not np.issubdtype(a.dtype, np.floating) or a.shape != (n, 2):
        raise ValueError(
            f"corrections must be a float array of shape ({n}, 2), got {a.dtype} {a.shape}"
        )
    none = np.isnan(a).all(axis=1)  # a row of NaN: this item has no factors
    if not np.isfinite(a[~none]).all():
        raise ValueError("corrections contain inf, or NaN in part of a row")
    with np.errstate(over="ignore"):
        out = a.astype(np.float16)
    if not np.isfinite(out[~none]).all():
        raise ValueError("corrections overflow float16 (|value| > 65504)")
    return out


def pack_corrections(corr: NDArray[np.float16]) -> NDArray[np.int32]:
    """Pack (n, 2) float16 factors into (n,) int32 holding both halves' bits (c low, e high).

    One 4-byte scalar per item for engines without a float16 pair type. NaN rows stay NaN.
    """
    return np.ascontiguousarray(corr, dtype="<f2").view("<i4").reshape(-1).astype(np.int32)


def unpack_corrections(packed: ArrayLike) -> NDArray[np.float32]:
    """Inverse of :func:`pack_corrections`: (n,) int32 -> (n, 2) float32."""
    a = np.ascontiguousarray(np.asarray(packed, dtype=np.int64).astype("<i4"))
    return a.view("<f2").reshape(-1, 2).astype(np.float32)


Scalar = str | int | float | bool
#: A dict filter after :func:`normalize_filter`: key -> None (missing or null) or the values it may
#: equal (at least one).
DictFilter = dict[str, "list[Scalar] | None"]


class MatchNothing:
    """What :func:`normalize_filter` returns for a dict filter that no row can match (``[]``)."""


MATCH_NOTHING = MatchNothing()


def normalize_filter(flt: Filter | None) -> Filter | DictFilter | MatchNothing | None:
    """DESIGN.md's dict-filter contract, checked once for every store.

    ``None`` or ``{}`` -> None (every row); a dict -> ``{key: None | [values]}`` with scalar values
    (numpy scalars unwrapped), or :data:`MATCH_NOTHING` when some key asks for ``[]``; anything
    else (a store's native filter) is returned untouched. Raises ValueError naming a bad key or
    value (keys are non-empty str; values str, int in int64, finite float, bool, None, or a list
    of those scalars).
    """
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        return flt
    out: DictFilter = {}
    nothing = False
    for key, value in flt.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter keys must be non-empty strings, got {key!r}")
        if value is None:
            out[key] = None
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        checked = [_filter_scalar(key, v) for v in values]
        nothing = nothing or not checked
        out[key] = checked
    if nothing:
        return MATCH_NOTHING
    return out or None


def _filter_scalar(key: str, v: Any) -> Scalar:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        if not -(2**63) <= v <= _INT64_MAX:
            raise ValueError(f"filter value for {key!r} is outside int64: {v}")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"filter value for {key!r} is not a finite number: {v}")
        return v
    raise ValueError(
        f"filter value for {key!r} must be a str, int, float, bool, None or a list of scalars, "
        f"got {type(v).__name__}; use the store's native filter for anything else"
    )


def scalar_equal(stored: Any, wanted: Scalar) -> bool:
    """Return whether ``stored`` equals ``wanted`` under the dict-filter contract.

    Types kept (True is not 1, 1 is not "1"), ints and floats compared as numbers (1 == 1.0), lists
    and dicts never equal a scalar.
    """
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(wanted, str) or isinstance(stored, str):
        return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted
    return isinstance(stored, (int, float)) and stored == wanted


def dict_filter_matches(payload: Payload | None, flt: DictFilter) -> bool:
    """Return whether ``payload`` matches a normalised dict filter.

    The reference meaning of the contract; LocalStore uses it.
    """
    for key, values in flt.items():
        stored = None if payload is None else payload.get(key)
        if values is None:
            if stored is not None:
                return False
        elif stored is None or not any(scalar_equal(stored, v) for v in values):
            return False
    return True


def sort_hits(ids: NDArray[np.int64], dist: NDArray[np.int32], limit: int) -> Hits:
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
    return Hits(out_i, out_d)


#: Capability flag -> the methods a store declaring it must implement (beyond the base class).
CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "supports_rescoring": ("search_rescored",),
    "supports_native_index": ("create_index", "index_info"),
    "supports_corrections": ("lookup_corrections",),
    "supports_cosine_rescoring": ("search_rescored_cosine",),
}


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
    #: True when ``search`` itself returns the exact top-``limit`` by (distance, id), ties at the
    #: cut-off included. Otherwise HashIndex asks for a margin beyond the cut-off and cuts by
    #: (distance, id) itself (see ``HashIndex.search``).
    ordered_ties: ClassVar[bool] = False
    # Capability flags: core code and the conformance suite read these, never ``hasattr``.
    # A subclass that sets one to True without the methods it names fails at class definition.
    #: True when the store has ``search_rescored(query_logits, k, oversample, filter)``:
    #: server-side asymmetric rescoring (``HashIndex.search(rescore="store")``).
    supports_rescoring: ClassVar[bool] = False
    #: True when the store builds an engine index on demand: ``create_index()`` and
    #: ``index_info()`` (LanceDB's IVF_FLAT); benchmarks build it after ingest.
    supports_native_index: ClassVar[bool] = False
    #: True when the collection outlives the object (reopening the same name finds the data).
    persistent: ClassVar[bool] = True
    #: True when ``upsert`` takes ``corrections=`` (per-vector factors of ``scoring="cosine"``)
    #: and :meth:`lookup_corrections` returns them.
    supports_corrections: ClassVar[bool] = False
    #: Bytes the engine keeps per item for those factors (0 without ``supports_corrections``);
    #: :meth:`bytes_per_vector` counts them.
    correction_bytes: ClassVar[int] = 0
    #: True when the store has ``search_rescored_cosine(query_weights, k, oversample, filter)``:
    #: the ``scoring="cosine"`` rerank server-side (``HashIndex.search(rescore="store",
    #: scoring="cosine")``).
    supports_cosine_rescoring: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for flag, methods in CAPABILITY_METHODS.items():
            if not getattr(cls, flag, False):
                continue
            for m in methods:
                impl = getattr(cls, m, None)
                if not callable(impl) or impl is getattr(Store, m, None):
                    raise TypeError(
                        f"{cls.__name__} declares {flag} = True but does not implement {m}()"
                    )

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
        """Return the stored metadata, or None if the collection does not exist yet."""

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
    def search(self, query_codes: ArrayLike, limit: int, filter: Filter | None = None) -> Hits:
        """Coarse symmetric search: per query the ``limit`` nearest codes by Hamming distance.

        Returns :class:`Hits` ``(ids int64 (Q, limit), distances int32 (Q, limit))``, Hamming,
        ascending by (distance, id) (a named tuple: ``ids, dist = store.search(...)`` works); slots
        beyond the number of matching items hold id -1 and distance :data:`HAMMING_PAD`.
        """

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> CodeHits:
        """Search like :meth:`search`, also returning the hits' codes.

        The codes are ``(Q, limit, n_bytes)`` (zeros for padding), in a :class:`CodeHits` ``(ids,
        distances, codes)``.

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
        return CodeHits(ids, dist, codes)

    @abstractmethod
    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Codes of ``ids`` in order, and a mask of which ids exist (missing rows are zeros)."""

    def lookup_corrections(self, ids: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the per-vector factors (n, 2) float32 of ``ids`` and whether each id has them.

        Only stores with :attr:`supports_corrections`; the others raise ValueError.
        """
        why = self.corrections_unavailable()
        raise ValueError(why or f"{type(self).__name__} does not implement lookup_corrections")

    def search_with_corrections(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[CodeHits, NDArray[np.float32]]:
        """Search like :meth:`search_with_codes`, also returning the hits' factors.

        The ``scoring="cosine"`` factors ``(Q, limit, 2)`` float32, NaN where an item has none and
        for padding.

        The default runs one batched :meth:`lookup_corrections` after the search; adapters whose
        engine returns the factors with the hits override it (one round trip).
        """
        hits = self.search_with_codes(query_codes, limit, filter)
        corr = np.full(hits.ids.shape + (2,), np.nan, np.float32)
        valid = hits.ids >= 0
        if valid.any():
            uniq, inv = np.unique(hits.ids[valid], return_inverse=True)
            got, found = self.lookup_corrections(uniq)
            got[~found] = np.nan
            corr[valid] = got[inv.reshape(-1)]
        return hits, corr

    def corrections_unavailable(self) -> str | None:
        """Return None when this collection keeps the ``scoring="cosine"`` factors, else why not.

        Why not and what to do, as a sentence. A store with :attr:`supports_corrections` may still
        say no for a collection that an older hashplug created without the fields for them.
        """
        if self.supports_corrections:
            return None
        return (
            f"{type(self).__name__} ({self.name}) cannot store the per-vector corrections that "
            "scoring='cosine' needs; use a store that keeps them or scoring='asymmetric'"
        )

    def bytes_per_vector(self) -> int:
        """Return the bytes each stored item costs in codes plus ``scoring="cosine"`` factors.

        Ids, payloads and engine overhead are excluded: what bytes-per-vector figures report.
        """
        meta = self._require_open()
        keeps = self.corrections_unavailable() is None
        return meta.n_bytes + (self.correction_bytes if keeps else 0)

    def search_rescored(
        self,
        query_logits: ArrayLike,
        k: int,
        oversample: int = 10,
        filter: Filter | None = None,
    ) -> ScoredHits:
        """Run a server-side asymmetric search.

        The engine takes the Hamming top ``k * oversample`` and reranks it by Σ|b - p|, p =
        sigmoid(``query_logits``) (Q, n_bits); padding (-1, +inf).

        Only stores with :attr:`supports_rescoring`; the others raise ValueError.
        """
        raise ValueError(
            f"{type(self).__name__} ({self.name}) cannot rescore server-side; use rescore='local'"
        )

    def search_rescored_cosine(
        self,
        query_weights: ArrayLike,
        k: int,
        oversample: int = 10,
        filter: Filter | None = None,
    ) -> ScoredHits:
        """Search with ``scoring="cosine"`` server-side.

        The engine takes the Hamming top ``k * oversample`` (query codes: the signs of
        ``query_weights``) and reranks it by
        ``c * <v, 2b - 1> + e`` with each item's stored factors; distances are its negative,
        ascending (padding -1, +inf), as :func:`hashplug.rerank.rerank` with ``scoring="cosine"``.

        Only stores with :attr:`supports_cosine_rescoring`; the others raise ValueError.
        """
        raise ValueError(
            f"{type(self).__name__} ({self.name}) cannot rerank scoring='cosine' server-side; "
            "use rescore='local'"
        )

    def get_codes(self, ids: ArrayLike) -> NDArray[np.uint8]:
        """Codes of ``ids`` in order; KeyError naming the ids that are not stored."""
        ids_a = as_ids(ids)
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
        """Return the number of stored items (0 when the collection does not exist)."""

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Every stored id once, in int64 batches of at most ``batch_size`` (order unspecified).

        Attach's ``sync`` uses it to find codes whose source rows are gone.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its ids")

    def finish_writes(self) -> None:  # noqa: B027 - optional hook
        """Run one maintenance pass after bulk writes by other processes (parallel ingest).

        An engine index build or compaction where the store has one; nothing by default.
        """

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
    def validate_upsert(
        self, ids: ArrayLike, codes: ArrayLike, payloads: Sequence[Payload | None] | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.uint8], list[Payload | None]]:
        """Everything :meth:`upsert` would check, engine limits included, without writing.

        ``HashIndex.add`` runs it over the whole input before its first batch, so that input the
        engine would refuse in a later batch fails before anything is written. ValueError names
        the problem.
        """
        meta = self._require_open()
        c = as_packed(codes, meta.n_bits)
        i = check_ids(ids, c.shape[0])
        pl = check_payloads(payloads, c.shape[0])
        self._check_engine_limits(i, c, pl)
        return i, c, pl

    def _check_engine_limits(  # noqa: B027 - optional hook
        self, ids: NDArray[np.int64], codes: NDArray[np.uint8], payloads: list[Payload | None]
    ) -> None:
        """Refuse input the engine would refuse (column types, payload sizes ...) with ValueError.

        Adapters override it; it is called with the whole input of an upsert (or of
        ``HashIndex.add``).
        """

    def _check_upsert(
        self, ids: ArrayLike, codes: ArrayLike, payloads: Sequence[Payload | None] | None
    ) -> tuple[NDArray[np.int64], NDArray[np.uint8], list[Payload | None]]:
        return self.validate_upsert(ids, codes, payloads)

    def _padding(self, q: int, limit: int) -> CodeHits:
        """Return an all-padding result (no item matched)."""
        meta = self._require_open()
        return CodeHits(
            np.full((q, limit), -1, np.int64),
            np.full((q, limit), HAMMING_PAD, np.int32),
            np.zeros((q, limit, meta.n_bytes), np.uint8),
        )

    def _check_query(self, query_codes: ArrayLike, limit: int) -> NDArray[np.uint8]:
        meta = self._require_open()
        check_positive_int(limit, "limit")
        return as_packed(query_codes, meta.n_bits)


def _no_empty(flt: Filter | None) -> Filter | None:
    """``{}`` means no filter on every store."""
    return None if isinstance(flt, Mapping) and not flt else flt


class HitsStore(Store):
    """A :class:`Store` whose engine can return the stored codes with the hits.

    Subclasses implement :meth:`_hits` once; :meth:`search` and :meth:`search_with_codes` (one
    engine query, no second lookup) both come from it.
    """

    @abstractmethod
    def _hits(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None, with_codes: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        """Return (ids, hamming, codes or None): :meth:`search`'s result, plus the hits' codes.

        The codes are ``(Q, limit, n_bytes)`` (zeros for padding), when ``with_codes``.
        """

    def search(self, query_codes: ArrayLike, limit: int, filter: Filter | None = None) -> Hits:
        """Return the Hamming top-``limit`` per query (see :meth:`Store.search`)."""
        if isinstance(normalize_filter(filter), MatchNothing):
            q = self._check_query(query_codes, limit)
            ids, dist, _ = self._padding(q.shape[0], limit)
        else:
            ids, dist, _ = self._hits(query_codes, limit, _no_empty(filter), False)
        return Hits(ids, dist)

    def search_with_codes(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> CodeHits:
        """Search like :meth:`search`, also returning the hits' codes."""
        if isinstance(normalize_filter(filter), MatchNothing):
            q = self._check_query(query_codes, limit)
            return self._padding(q.shape[0], limit)
        ids, dist, codes = self._hits(query_codes, limit, _no_empty(filter), True)
        if codes is None:
            raise StoreError(f"{type(self).__name__}._hits returned no codes for with_codes=True")
        return CodeHits(ids, dist, codes)
