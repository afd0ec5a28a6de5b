"""The read side of attach: a user's existing float collection, seen through its own engine.

A :class:`Source` reads a collection that someone else wrote (a LanceDB table, a Qdrant collection,
a Milvus collection): it discovers the float vector field, its dimension, metric and primary key,
streams ``(ids, vectors)`` in batches, fetches vectors by id and runs the engine's own exact float
search. It never writes to the collection. Adapters implement it for their engine and register the
class under the entry-point group ``hashplug.sources`` with the URI scheme as the name.

Ids are the source's own: an int64 array, or an object array of ``str`` (Qdrant UUIDs, Milvus
VARCHAR keys).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from ..results import ShortlistHits, SourceHits
from ..stores.base import StoreError

__all__ = [
    "Metric",
    "SourceError",
    "SourceInfo",
    "Source",
    "SourceHits",
    "ShortlistHits",
    "choose_vector_field",
    "as_source_ids",
    "metric_scores",
    "better_first",
]

Metric = Literal["cosine", "dot", "l2"]
IdKind = Literal["int", "str"]


class SourceError(StoreError):
    """The source collection cannot be attached as asked (missing field, unreachable, ...)."""


@dataclass(frozen=True)
class SourceInfo:
    """What discovery found in the user's collection."""

    uri: str
    vector_field: str
    dim: int
    metric: Metric
    id_field: str
    id_kind: IdKind
    dtype: str  # "float32" | "float16"
    count: int

    def describe(self) -> str:
        """Return a one-line description for messages."""
        return (
            f"{self.uri}: {self.count} rows, vector field {self.vector_field!r} "
            f"({self.dtype}, {self.dim}-d, {self.metric}), id field {self.id_field!r} ({self.id_kind})"
        )


class Source(ABC):
    """A user's float collection, read-only. ``info`` is discovered when the source is opened."""

    #: URI scheme(s) this source answers to.
    schemes: ClassVar[tuple[str, ...]] = ()

    info: SourceInfo

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        **options: Any,
    ) -> Source:
        """Open the collection at ``uri`` and discover its vector field and primary key."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a URI")

    @abstractmethod
    def scan(self, batch_size: int) -> Iterator[tuple[NDArray[Any], NDArray[np.float32]]]:
        """Every row once: ``(ids, vectors float32 (n, dim))`` batches.

        Rows without a vector are skipped (and counted in :attr:`skipped`).
        """

    @abstractmethod
    def fetch(self, ids: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Vectors of ``ids`` in order (float32 (n, dim); zeros where missing) and a found mask."""

    @abstractmethod
    def search(self, queries: NDArray[np.float32], k: int) -> SourceHits:
        """Run the engine's own exact float search in the source metric.

        A :class:`SourceHits`: per query its ``k`` best ``ids`` (a list of Q id arrays, shorter
        when fewer rows) and ``scores`` float32 (Q, k) (nan padding).
        """

    #: True when :meth:`search_among` scores listed ids inside the engine (no vector leaves it);
    #: a source may decide per collection (Milvus: only over an exact index).
    scores_in_engine: bool = False

    def search_among(self, query: NDArray[np.float32], ids: NDArray[Any], k: int) -> ShortlistHits:
        """Run the engine's exact float search of one query (dim,) restricted to ``ids``.

        A :class:`ShortlistHits`: the ``k`` best of them and their scores, best first (sources
        with :attr:`scores_in_engine`).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot score ids in its engine")

    @abstractmethod
    def count(self) -> int:
        """Rows in the collection now."""

    @abstractmethod
    def codes_uri(self, suffix: str) -> str:
        """Return the URI of the hashplug store that keeps this source's codes beside it.

        In the same engine: a sibling table / collection named after the source plus ``suffix``.
        """

    def store_options(self) -> dict[str, Any]:
        """Return the connection options the sibling code store needs (credentials ...)."""
        return {}

    def state_dir(self) -> Path | None:
        """Return a local folder beside the collection for the hasher file.

        None: the user cache.
        """
        return None

    def version(self) -> Any:
        """Return a token that changes when the collection changes.

        None where the engine has none.
        """
        return None

    #: Rows without a vector seen by the last :meth:`scan`.
    skipped: int = 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles; the collection is untouched."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def choose_vector_field(
    candidates: dict[str, tuple[int, str]], wanted: str | None, where: str, others: dict[str, str]
) -> str:
    """Pick the float vector field.

    ``candidates`` maps name -> (dim, dtype); ``others`` maps the remaining fields to a type
    description (for the error when ``wanted`` is not a vector).
    """
    if wanted is not None:
        if wanted in candidates:
            return wanted
        if wanted in others:
            raise SourceError(
                f"field {wanted!r} of {where} is not a float vector field (it is {others[wanted]}); "
                f"float vector fields: {sorted(candidates) or 'none'}"
            )
        raise SourceError(
            f"{where} has no field {wanted!r}; float vector fields: {sorted(candidates) or 'none'}"
        )
    if not candidates:
        raise SourceError(
            f"{where} has no float32/float16 vector field (fields: "
            f"{', '.join(f'{k} ({v})' for k, v in others.items()) or 'none'})"
        )
    if len(candidates) > 1:
        raise SourceError(
            f"{where} has several float vector fields {sorted(candidates)}: name one with "
            "vector_field= (CLI: --vector-field)"
        )
    return next(iter(candidates))


def as_source_ids(values: list[Any], kind: IdKind) -> NDArray[Any]:
    """Convert a list of ids from an engine to an int64 array, or an object array of str."""
    if kind == "int":
        return np.asarray(values, dtype=np.int64).reshape(-1)
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


def metric_scores(
    q: NDArray[np.float32], x: NDArray[np.float32], metric: Metric
) -> NDArray[np.float32]:
    """Return the similarity of each query row to each ``x`` row in the source metric.

    Cosine similarity, dot product, or Euclidean distance for ``l2`` (smaller is better there).
    """
    q64, x64 = q.astype(np.float32), x.astype(np.float32)
    if metric == "cosine":
        qn = q64 / np.maximum(np.linalg.norm(q64, axis=-1, keepdims=True), 1e-30)
        xn = x64 / np.maximum(np.linalg.norm(x64, axis=-1, keepdims=True), 1e-30)
        return np.einsum("...d,...d->...", qn, xn).astype(np.float32)
    if metric == "dot":
        return np.einsum("...d,...d->...", q64, x64).astype(np.float32)
    diff = q64 - x64
    return np.sqrt(np.einsum("...d,...d->...", diff, diff)).astype(np.float32)


def better_first(metric: Metric) -> int:
    """+1 when larger scores are better (cosine, dot), -1 for distances (l2)."""
    return -1 if metric == "l2" else 1
