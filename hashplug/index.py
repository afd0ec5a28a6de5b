"""HashIndex: hasher + store (+ optional encoder): add, then search with coarse Hamming -> rerank."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from ._validate import sigmoid
from .hashers.base import Hasher
from .stores.base import CollectionMeta, Filter, Payload, Store, check_ids, check_payloads
from .stores.registry import open_store

__all__ = ["HashIndex", "SearchResult"]


@dataclass
class SearchResult:
    """Top-k per query: ``ids`` int64 (Q, k) (-1 = no result), ``distances`` float32 (Q, k)
    (asymmetric distance when reranked, Hamming otherwise; +inf for padding), and ``payloads``
    (Q lists of k dicts or None) when asked for."""

    ids: NDArray[np.int64]
    distances: NDArray[np.float32]
    payloads: list[list[Payload | None]] | None = None

    def __iter__(self) -> Any:  # ids, distances = index.search(...)
        return iter((self.ids, self.distances))


class HashIndex:
    """A binary-hashing index over a store.

    ``store`` is a Store or a URI (``"memory://"``, ``"lancedb://./data/docs"``, ...). Opening an
    existing collection checks that it was written by this hasher (same fingerprint), else
    ``HasherMismatchError`` names both. ``encoder`` (optional) lets ``add``/``search`` take raw
    items (anything that is not a numeric array) through ``encoder.encode(items)``.
    """

    def __init__(
        self,
        store: Store | str,
        hasher: Hasher,
        encoder: Any | None = None,
        **store_options: Any,
    ) -> None:
        if not hasher.is_fitted:
            raise ValueError("the hasher is not fitted; call hasher.fit(embeddings) first")
        self.store = open_store(store, **store_options) if isinstance(store, str) else store
        self.hasher = hasher
        self.encoder = encoder
        enc_name = getattr(encoder, "name", None) if encoder is not None else None
        self.meta = self.store.open(
            CollectionMeta(
                n_bits=hasher.n_bits,
                fingerprint=hasher.fingerprint,
                hasher_spec=hasher.get_spec(),
                encoder=enc_name,
            )
        )

    # -- input ------------------------------------------------------------------------------------
    def _embeddings(self, data: Any) -> NDArray[np.float32] | Any:
        is_numeric = isinstance(data, np.ndarray) and data.dtype.kind in "fiu"
        if not is_numeric and self.encoder is not None:
            return self.encoder.encode(data)
        return data

    # -- writing ----------------------------------------------------------------------------------
    def add(
        self,
        data: Any,
        ids: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        batch_size: int = 50_000,
        progress: bool = True,
    ) -> int:
        """Hash ``data`` (embeddings (n, d), or raw items with an encoder) and upsert by ``ids``.

        Everything is validated before the first write; returns the number of items written.
        """
        x = self._embeddings(data)
        n = len(x)
        id_arr = check_ids(ids, n)
        pl = check_payloads(payloads, n) if payloads is not None else None
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Hash everything first (codes are small): bad input anywhere fails before any write.
        codes = np.empty((n, self.hasher.n_bits // 8), np.uint8)
        for s in range(0, n, batch_size):
            codes[s : s + batch_size] = self.hasher.encode(x[s : s + batch_size])
        bar = tqdm(total=n, desc="hashplug add", unit="vec", disable=not progress or n <= batch_size)
        for s in range(0, n, batch_size):
            part = slice(s, s + batch_size)
            self.store.upsert(id_arr[part], codes[part], pl[part] if pl else None)
            bar.update(min(batch_size, n - s))
        bar.close()
        return n

    def delete(self, ids: ArrayLike) -> None:
        self.store.delete(ids)

    def __len__(self) -> int:
        return self.store.count()

    # -- searching --------------------------------------------------------------------------------
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        oversample: int = 10,
        rerank: bool = True,
        filter: Filter | None = None,
        with_payloads: bool = False,
        rescore: str = "local",
    ) -> SearchResult:
        """Coarse Hamming top-(oversample * k) in the store, then the asymmetric rerank to top-k.

        ``queries``: embeddings (Q, d) or one (d,), or raw items with an encoder.
        ``rerank=False`` returns the store's Hamming order (distances = Hamming as float).
        ``rescore="local"`` reranks here with the Numba kernel (every store);
        ``rescore="store"`` (alias ``"qdrant"``) asks the store to rerank server-side (stores
        with ``search_rescored``: Qdrant's binary quantization with rescoring): same distances up
        to the store's float rounding, no codes shipped back.
        """
        from .rerank import rerank as rerank_codes

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        if rescore not in ("local", "store", "qdrant"):
            raise ValueError(f"rescore must be 'local', 'store' or 'qdrant', got {rescore!r}")
        native = rerank and rescore != "local"
        if native and not hasattr(self.store, "search_rescored"):
            raise ValueError(
                f"{type(self.store).__name__} cannot rescore server-side; use rescore='local'"
            )
        q = self._embeddings(queries)
        q = np.asarray(q)
        if q.ndim == 1:
            q = q[None, :]
        u = self.hasher.logits(q)
        qcodes = np.packbits(u > 0, axis=1)
        limit = int(k) * (int(oversample) if rerank else 1)
        if native:
            ids, dist = self.store.search_rescored(u, int(k), int(oversample), filter)  # type: ignore[attr-defined]
        elif rerank:
            c_ids, _, c_codes = self.store.search_with_codes(qcodes, limit, filter)
            ids, dist = rerank_codes(sigmoid(u), c_ids, c_codes, int(k))
        else:
            ids, ham = self.store.search(qcodes, limit, filter)
            dist = np.where(ids >= 0, ham, np.inf).astype(np.float32)
        res = SearchResult(ids=ids, distances=dist)
        if with_payloads:
            res.payloads = self._payloads(ids)
        return res

    def _payloads(self, ids: NDArray[np.int64]) -> list[list[Payload | None]]:
        uniq = np.unique(ids[ids >= 0])
        got = dict(zip(uniq.tolist(), self.store.get_payloads(uniq), strict=True))
        return [[got.get(int(i)) if i >= 0 else None for i in row] for row in ids]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> HashIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
