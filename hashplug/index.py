"""HashIndex: hasher + store (+ optional encoder): add, then search with coarse Hamming -> rerank."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from ._validate import check_positive_int, sigmoid
from .encoders._items import _is_audio_tuple
from .encoders.base import Encoder
from .hashers.base import Hasher
from .stores.base import (
    HAMMING_PAD,
    CollectionMeta,
    Filter,
    HasherMismatchError,
    Payload,
    Store,
    as_ids,
    check_ids,
    check_payloads,
)
from .stores.registry import open_store

__all__ = ["HashIndex", "SearchResult", "default_oversample"]


@dataclass
class SearchResult:
    """Top-k per query: ``ids``, ``distances`` and, when asked for, ``payloads``.

    ``ids`` int64 (Q, k) (-1 = no result), ``distances`` float32 (Q, k) (asymmetric distance when
    reranked, Hamming otherwise; +inf for padding), and ``payloads`` (Q lists of k dicts or None).
    """

    ids: NDArray[np.int64]
    distances: NDArray[np.float32]
    payloads: list[list[Payload | None]] | None = None

    def __iter__(self) -> Any:  # ids, distances = index.search(...)
        return iter((self.ids, self.distances))


class HashIndex:
    """A binary-hashing index over a store.

    ``store`` is a Store or a URI (``"memory://"``, ``"lancedb://./data/docs"``, ...). Opening an
    existing collection checks that it was written by this hasher (same fingerprint), else
    ``HasherMismatchError`` names both.

    ``encoder`` (optional: an Encoder, or a spec string given to ``hashplug.load_encoder``) lets
    ``add``/``search`` take raw items (texts, image/audio paths, PIL images, uint8 image batches,
    ``(waveform, sample_rate)`` tuples) through ``encoder.encode(items)``; embeddings (numeric
    arrays of at most two dimensions) are always taken as they are. The encoder's name must equal
    ``hasher.encoder_`` when both are set, and is recorded in the collection (else
    ``hasher.encoder_`` is); opening a collection recorded with another encoder is a
    ``HasherMismatchError``. A hasher's encoder is not loaded automatically (models are large):
    pass ``encoder=hashplug.load_encoder(hasher.encoder_)``.
    """

    def __init__(
        self,
        store: Store | str,
        hasher: Hasher,
        encoder: Encoder | str | None = None,
        **store_options: Any,
    ) -> None:
        if not hasher.is_fitted:
            raise ValueError("the hasher is not fitted; call hasher.fit(embeddings) first")
        if isinstance(encoder, str):
            from .encoders import load_encoder

            encoder = load_encoder(encoder)
        enc_name = getattr(encoder, "name", None) if encoder is not None else None
        _check_encoder(hasher, encoder, enc_name)
        self.store = open_store(store, **store_options) if isinstance(store, str) else store
        self.hasher = hasher
        self.encoder = encoder
        self._size: tuple[float, int] | None = None  # (monotonic time, count) for the default rule
        self.meta = self.store.open(
            CollectionMeta(
                n_bits=hasher.n_bits,
                fingerprint=hasher.fingerprint,
                hasher_spec=hasher.get_spec(),
                encoder=enc_name or hasher.encoder_,
            )
        )

    # -- input ------------------------------------------------------------------------------------
    def _embeddings(self, data: Any) -> NDArray[np.float32] | Any:
        if _looks_like_embeddings(data):
            return data
        if self.encoder is not None:
            return self.encoder.encode(data)
        what = type(data).__name__
        if self.hasher.encoder_:
            raise ValueError(
                f"got raw items ({what}) but this index has no encoder; the hasher was fitted on "
                f"{self.hasher.encoder_!r} embeddings: HashIndex(store, hasher, "
                "encoder=hashplug.load_encoder(hasher.encoder_))"
            )
        raise ValueError(
            f"got {what} that is not an embedding array, and this index has no encoder; pass "
            "embeddings (n, d) or give HashIndex an encoder (hashplug.load_encoder(spec))"
        )

    # -- writing ----------------------------------------------------------------------------------
    def add(
        self,
        data: Any,
        ids: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        batch_size: int = 50_000,
        progress: bool = True,
        scoring: str = "asymmetric",
    ) -> int:
        """Hash ``data`` (embeddings (n, d), or raw items with an encoder) and upsert by ``ids``.

        Everything is validated before the first write; returns the number of items written.
        Stores that keep the ``scoring="cosine"`` factors (all built-in ones) get them for every
        item whose factors fit float16; ``scoring="cosine"`` requires them for every item (a
        ``ValueError`` on other stores or hashers, or factors beyond float16: normalise the rows).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        cosine = _check_index_scoring(scoring, self, True, "local")
        x = self._embeddings(data)
        n = len(x)
        try:
            id_arr = check_ids(ids, n)
            pl = check_payloads(payloads, n) if payloads is not None else None
            # Hash everything first (codes are small), then let the store check the whole
            # input against its engine's limits (column types, payload sizes): bad input
            # anywhere fails before the first write.
            codes = np.empty((n, self.hasher.n_bits // 8), np.uint8)
            for s in range(0, n, batch_size):
                codes[s : s + batch_size] = self.hasher.encode(x[s : s + batch_size])
            corr = self._corrections(x, n, batch_size, required=cosine)
            self.store.validate_upsert(id_arr, codes, pl)
        except ValueError as e:
            raise ValueError(f"{e} (nothing was written)") from e
        bar = tqdm(
            total=n, desc="hashplug add", unit="vec", disable=not progress or n <= batch_size
        )
        written = 0
        try:
            for s in range(0, n, batch_size):
                part = slice(s, s + batch_size)
                if corr is None:
                    self.store.upsert(id_arr[part], codes[part], pl[part] if pl else None)
                else:
                    self.store.upsert(  # type: ignore[call-arg]
                        id_arr[part], codes[part], pl[part] if pl else None, corrections=corr[part]
                    )
                written += min(batch_size, n - s)
                bar.update(min(batch_size, n - s))
                self._size = None
        except Exception as e:
            if written and hasattr(e, "add_note"):  # engine failure after validation (3.11+)
                e.add_note(
                    f"hashplug: the first {written} of {n} items were written; re-running the "
                    "same add completes it (ids are upserted, never duplicated)"
                )
            raise
        finally:
            bar.close()
        return n

    def _corrections(
        self, x: Any, n: int, batch_size: int, required: bool = False
    ) -> NDArray[np.float32] | None:
        """Return the ``scoring="cosine"`` factors of ``x`` when the store keeps them, else None.

        Rows whose factors overflow float16 (large embedding norms) become NaN (no factors),
        or a ``ValueError`` when ``required``.
        """
        if not self.store.supports_corrections or not hasattr(self.hasher, "correction"):
            return None
        why = self.store.corrections_unavailable()  # e.g. a collection of an older hashplug
        if why is not None:
            if required:
                raise ValueError(why)
            return None
        out = np.empty((n, 2), np.float32)
        for s in range(0, n, batch_size):
            out[s : s + batch_size] = self.hasher.correction(x[s : s + batch_size])
        big = ~(np.abs(out) <= np.finfo(np.float16).max).all(axis=1)
        if big.any() and required:
            raise ValueError(
                f"{int(big.sum())} of {n} vectors (first row {int(np.argmax(big))}) have "
                "scoring='cosine' factors beyond float16: normalise the rows (cosine needs "
                "unit-norm embeddings)"
            )
        out[big] = np.nan
        return out

    def bytes_per_vector(self) -> int:
        """Return the bytes each item costs in the store.

        Its code, plus the ``scoring="cosine"`` factors where the store keeps them and the hasher
        computes them (``add`` writes them then).
        """
        factors = hasattr(self.hasher, "correction") and self.store.supports_corrections
        if factors and self.store.corrections_unavailable() is None:
            return self.store.bytes_per_vector()
        return self.hasher.n_bits // 8

    def delete(self, ids: ArrayLike) -> None:
        """Delete items by id (int64 only; ids that are not stored are ignored)."""
        self.store.delete(as_ids(ids))
        self._size = None

    def __len__(self) -> int:
        return self.store.count()

    # -- searching --------------------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        oversample: int | None = None,
        rerank: bool = True,
        filter: Filter | None = None,
        with_payloads: bool = False,
        rescore: str = "local",
        scoring: str = "asymmetric",
    ) -> SearchResult:
        """Coarse Hamming top-(oversample * k) in the store, then the asymmetric rerank to top-k.

        ``oversample=None`` (default) follows :func:`default_oversample`: ``max(10, sqrt(N) / 5)``
        for a collection of N codes, so that recall@10 against the exact asymmetric search stays
        about 0.95 or better as N grows (README "Scale"); an int fixes it.

        ``queries``: embeddings (Q, d) or one (d,), or raw items with an encoder.
        ``rerank=False`` returns the store's Hamming order (distances = Hamming as float).
        ``rescore="local"`` reranks here with the Numba kernel (every store);
        ``rescore="store"`` asks the store to rerank server-side (stores with
        ``supports_rescoring``: Qdrant's binary quantization with rescoring): same distances up
        to the store's float rounding, no codes shipped back; with ``scoring="cosine"`` stores
        with ``supports_cosine_rescoring`` (Qdrant: a formula over the stored factors).
        ``scoring="cosine"``: rerank by the nearest-neighbour estimator (README "Nearest-neighbour
        scoring") with the per-vector factors the store keeps (stores with
        ``supports_corrections``: all built-in ones); distances are then estimated cosine distances
        ``1 - <q, x> / |q|`` (for unit-norm database rows). The default ``"asymmetric"`` is the
        seed paper's scoring (best for class-level mAP).
        """
        from .rerank import rerank as rerank_codes

        k = check_positive_int(k, "k")
        if oversample is not None:
            oversample = check_positive_int(oversample, "oversample", MAX_OVERSAMPLE)
        if rescore == "qdrant":  # the old vendor alias
            warnings.warn(
                "rescore='qdrant' is deprecated; use rescore='store'", DeprecationWarning, 2
            )
            rescore = "store"
        if rescore not in ("local", "store"):
            raise ValueError(f"rescore must be 'local' or 'store', got {rescore!r}")
        cosine = _check_index_scoring(scoring, self, rerank, rescore)
        native = rerank and rescore != "local"
        if native and not cosine and not self.store.supports_rescoring:
            raise ValueError(
                f"{type(self.store).__name__} cannot rescore server-side; use rescore='local'"
            )
        q = self._embeddings(queries)
        q = np.asarray(q)
        if q.ndim == 1:
            q = q[None, :]
        u = self.hasher.query_logits(q)  # calibrated; scales are positive, so signs are the codes'
        qcodes = np.packbits(u > 0, axis=1)
        if oversample is None:
            oversample = default_oversample(self._count(), k) if rerank else 1
        limit = k * (oversample if rerank else 1)
        if limit > _COUNT_CHECK:  # a huge k is cut to the collection size (no MemoryError)
            n_items = self._count()  # the size the default rule just read: no second round trip
            if limit > n_items:  # the collection may have grown since: read it again to cut
                self._size = None
                n_items = self._count()
            n_items = max(1, n_items)
            k, limit = min(k, n_items), min(limit, n_items)
        if native and cosine:
            v = self.hasher.cosine_query(q)  # type: ignore[attr-defined]
            ids, dist = self.store.search_rescored_cosine(v, k, oversample, filter)
            dist = self._cosine_distances(q, ids, dist)
        elif native:
            ids, dist = self.store.search_rescored(u, k, oversample, filter)
        elif rerank and cosine:
            c_ids, _, c_codes, c_corr = self._coarse(qcodes, limit, filter, with_corr=True)
            v = self.hasher.cosine_query(q)  # type: ignore[attr-defined]
            ids, dist = self._rerank_cosine(q, v, c_ids, c_codes, c_corr, k)  # type: ignore[arg-type]
        elif rerank:
            c_ids, _, c_codes, _ = self._coarse(qcodes, limit, filter)
            ids, dist = rerank_codes(sigmoid(u), c_ids, c_codes, k)  # type: ignore[arg-type]
        else:
            ids, ham, _, _ = self._coarse(qcodes, limit, filter, with_codes=False)
            dist = np.where(ids >= 0, ham, np.inf).astype(np.float32)
        res = SearchResult(ids=ids, distances=dist)
        if with_payloads:
            res.payloads = self._payloads(ids)
        return res

    def _count(self) -> int:
        """Return the collection size, read at most every ``_SIZE_TTL`` seconds.

        Reading it is a server round trip.
        """
        now = time.monotonic()
        if self._size is None or now - self._size[0] > _SIZE_TTL:
            self._size = (now, self.store.count())
        return self._size[1]

    def _rerank_cosine(
        self,
        q: NDArray[Any],
        u: NDArray[np.float32],
        c_ids: NDArray[np.int64],
        c_codes: NDArray[np.uint8],
        c_corr: NDArray[np.float32],
        k: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Rerank the coarse candidates with the estimator and their factors (NaN: none).

        Distances are 1 - estimated <q, x> / |q|.
        """
        from .rerank import rerank as rerank_codes

        valid = c_ids >= 0
        corr = np.where(valid[..., None], c_corr, 0.0).astype(np.float32)
        if valid.any():
            missing = valid & np.isnan(corr).any(axis=-1)
            if missing.any():
                miss = np.unique(c_ids[missing])
                raise ValueError(
                    f"{miss.size} candidates (ids {miss[:5].tolist()}) have no stored corrections "
                    "for scoring='cosine': they were written without them (before this store "
                    "kept them, not through HashIndex.add, or with factors beyond float16 from "
                    "unnormalised rows); add them again with scoring='cosine'"
                )
        ids, d = rerank_codes(u, c_ids, c_codes, k, scoring="cosine", candidate_corrections=corr)
        return ids, self._cosine_distances(q, ids, d)

    def _cosine_distances(
        self, q: NDArray[Any], ids: NDArray[np.int64], d: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """Convert estimator distances -(c <v, 2b - 1> + e) to 1 - estimated <q, x> / |q|.

        Padding (id -1) gets +inf.
        """
        mean = getattr(self.hasher, "mean_", None)
        qf = np.asarray(q, dtype=np.float64)
        shift = qf @ mean.astype(np.float64) if mean is not None else np.zeros(len(qf))
        norm = np.linalg.norm(qf, axis=1)
        norm = np.where(norm > 0, norm, 1.0)
        est = (-d.astype(np.float64) + shift[:, None]) / norm[:, None]
        return np.where(ids >= 0, 1.0 - est, np.inf).astype(np.float32)

    def _coarse(
        self,
        qcodes: NDArray[np.uint8],
        limit: int,
        filter: Filter | None,
        with_codes: bool = True,
        with_corr: bool = False,
    ) -> tuple[
        NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None, NDArray[np.float32] | None
    ]:
        """Return the exact top-``limit`` by (Hamming, id), the same on every call and store.

        With the hits' codes (``with_codes``) and ``scoring="cosine"`` factors (``with_corr``).

        Engines keep an arbitrary subset of the items tied at their cut-off. Unless the store
        orders ties itself (``ordered_ties``), ask for a margin beyond ``limit``: when the
        margin's last distance is larger than the distance at ``limit`` (or the engine returned
        fewer items than asked), every item up to that distance is present, and cutting by
        (distance, id) here is deterministic. Otherwise the margin grows (x4, up to
        ``MAX_MARGIN_LIMIT`` candidates). This holds for exact (flat) engine indexes; an
        approximate index (IVF, HNSW) promises no fixed candidate set.
        """
        store = self.store

        def ask_store(n: int) -> tuple[Any, ...]:
            if with_corr:
                hits, corr = store.search_with_corrections(qcodes, n, filter)
                return (*hits, corr)
            if with_codes:
                return (*store.search_with_codes(qcodes, n, filter), None)
            return (*store.search(qcodes, n, filter), None, None)

        if store.ordered_ties:
            return ask_store(limit)
        ask = max(limit, min(MAX_MARGIN_LIMIT, limit + max(16, limit // 4)))
        while True:
            ids, ham, codes, corr = ask_store(ask)
            full = ids[:, -1] >= 0
            cut = ham[:, limit - 1]
            if ask >= MAX_MARGIN_LIMIT or not (full & (ham[:, -1] <= cut)).any():
                break  # every row is complete up to its cut-off distance
            ask = max(limit, min(MAX_MARGIN_LIMIT, ask * 4))
        return _cut(ids, ham, codes, corr, limit)

    def _payloads(self, ids: NDArray[np.int64]) -> list[list[Payload | None]]:
        uniq = np.unique(ids[ids >= 0])
        got = dict(zip(uniq.tolist(), self.store.get_payloads(uniq), strict=True))
        return [[got.get(int(i)) if i >= 0 else None for i in row] for row in ids]

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> HashIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Upper bound of ``oversample``.
MAX_OVERSAMPLE = 10_000
#: Above this many candidates, ``search`` reads the collection size to bound k.
_COUNT_CHECK = 4096
#: Most candidates ``HashIndex`` asks an engine for when it widens the margin for ties (Milvus
#: caps a search at 16384).
MAX_MARGIN_LIMIT = 16_384


#: Seconds the collection size read for the default oversample is reused.
_SIZE_TTL = 30.0


def default_oversample(n: int, k: int) -> int:
    """Return the oversample ``HashIndex.search`` uses by default for ``n`` codes and top-``k``.

    ``max(10, ceil(sqrt(n) / 5))``; the growth above 10 stops where ``k * oversample`` reaches
    :data:`MAX_MARGIN_LIMIT` (the most candidates every engine returns). Two-stage recall@10 against the exact asymmetric
    search stays at or above about 0.97 from 100k to 10M codes (64 bits; image and text embeddings,
    ``benchmarks/bench_oversample.py``), where a fixed 10 falls to 0.72 (image) and 0.55 (text) at 10M.
    """
    grow = min(math.ceil(math.sqrt(max(0, n)) / 5), MAX_MARGIN_LIMIT // max(1, k))
    return min(max(10, grow), MAX_OVERSAMPLE)


def _check_index_scoring(scoring: str, index: HashIndex, rerank: bool, rescore: str) -> bool:
    """Return True for scoring="cosine" (after checking the store and hasher can serve it)."""
    if scoring == "asymmetric":
        return False
    if scoring != "cosine":
        raise ValueError(f"scoring must be 'asymmetric' or 'cosine', got {scoring!r}")
    store = index.store
    if rerank and rescore != "local" and not store.supports_cosine_rescoring:
        raise ValueError(
            f"{type(store).__name__} cannot rerank scoring='cosine' server-side; "
            "use rescore='local'"
        )
    why = store.corrections_unavailable()  # the store, or this collection of it, has no factors
    if why is not None:
        raise ValueError(why)
    if not hasattr(index.hasher, "correction"):
        raise ValueError(
            f"{type(index.hasher).__name__} has no correction(); scoring='cosine' needs a linear "
            "hasher (HashingBaseline, ITQ, LSH)"
        )
    return True


def _cut(
    ids: NDArray[np.int64],
    ham: NDArray[np.int32],
    codes: NDArray[np.uint8] | None,
    corr: NDArray[np.float32] | None,
    limit: int,
) -> tuple[
    NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None, NDArray[np.float32] | None
]:
    """Each row's first ``limit`` hits by (distance, id), padding (-1) last."""
    key_d = np.where(ids >= 0, ham.astype(np.int64), np.iinfo(np.int64).max)
    key_i = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    order = np.lexsort((key_i, key_d), axis=1)[:, :limit]
    ids = np.take_along_axis(ids, order, axis=1)
    ham = np.take_along_axis(ham, order, axis=1)
    ham = np.where(ids >= 0, ham, HAMMING_PAD).astype(np.int32)
    if codes is not None:
        codes = np.take_along_axis(codes, order[..., None], axis=1)
    if corr is not None:
        corr = np.take_along_axis(corr, order[..., None], axis=1)
    if ids.shape[1] < limit:  # the engine was asked for fewer (never: ask >= limit)
        raise AssertionError("coarse search returned fewer columns than asked")
    return ids, ham, codes, corr


def _check_encoder(hasher: Hasher, encoder: Any, name: str | None) -> None:
    if encoder is None:
        return
    if not name or not callable(getattr(encoder, "encode", None)):
        raise TypeError(f"encoder must be an Encoder (with .name and .encode), got {encoder!r}")
    if hasher.encoder_ and name != hasher.encoder_:
        raise HasherMismatchError(
            f"the hasher was fitted on embeddings of encoder {hasher.encoder_!r}, "
            f"but encoder {name!r} was given"
        )
    dim = getattr(encoder, "dim", None)
    if dim is not None and hasher.dim_ is not None and int(dim) != hasher.dim_:
        raise ValueError(
            f"encoder {name!r} gives {dim}-d embeddings; the hasher expects {hasher.dim_}-d"
        )


def _looks_like_embeddings(data: Any) -> bool:
    """Numeric arrays of <= 2 dims (and lists of numbers / number rows) are embeddings."""
    if isinstance(data, np.ndarray):
        return data.dtype.kind in "fiu" and data.ndim <= 2
    if isinstance(data, (str, bytes)) or _is_audio_tuple(data):
        return False
    if not isinstance(data, Sequence) or len(data) == 0:
        return True  # the hasher validates (and names the problem)
    first = data[0]
    if isinstance(first, (int, float, np.number)) and not isinstance(first, bool):
        return True
    if isinstance(first, np.ndarray):
        return first.dtype.kind in "fiu" and first.ndim == 1
    return isinstance(first, list) and all(isinstance(v, (int, float, np.number)) for v in first)
