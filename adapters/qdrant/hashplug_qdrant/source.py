"""Qdrant collections someone else wrote, read for attach: Qdrant Edge shards and qdrant-client.

Vector field: the unnamed dense vector or a named one (sparse vectors and multivectors are not
float vector fields). Metric: the vector's distance (Cosine, Dot, Euclid; Manhattan is refused).
Ids: Qdrant's unsigned ints, or UUIDs (then every id is handled as a string). The reference search
is Qdrant's exact search (``SearchParams(exact=True)``).

Qdrant Edge rewrites two bookkeeping files of a shard whenever the shard is loaded, even only to
read it (``edge_config.json`` gains its defaults; the payload tracker journal is compacted): points,
vectors and payloads are untouched, and that is what attach guarantees there.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from hashplug.sources.source import (
    Metric,
    ShortlistHits,
    Source,
    SourceError,
    SourceHits,
    SourceInfo,
    as_source_ids,
    choose_vector_field,
)
from hashplug.stores.uri import parse_uri, split_uri

__all__ = ["QdrantEdgeSource", "QdrantSource"]

_METRICS: dict[str, Metric] = {"cosine": "cosine", "dot": "dot", "euclid": "l2"}
_PAGE = 1_000


def _metric(distance: Any, where: str) -> Metric:
    name = str(getattr(distance, "value", distance)).split(".")[-1].lower()
    if name not in _METRICS:
        raise SourceError(
            f"{where} uses the {name} distance; hashplug attaches cosine, dot or euclid"
        )
    return _METRICS[name]


def _kind_of(ids: list[Any]) -> str:
    return "str" if any(isinstance(i, str) for i in ids) else "int"


def _point_id(v: Any, kind: str) -> Any:
    """Convert a source id (int, or str for UUID collections) to the id Qdrant takes."""
    if kind == "int":
        return int(v)
    s = str(v)
    return int(s) if s.isdigit() else str(uuid.UUID(s))


class _QdrantBase(Source):
    """What the Edge and the client sources share: paging, vector extraction, ids."""

    _name: str  # the vector's name ("" = unnamed)

    def _vector(self, rec: Any) -> list[float] | None:
        v = rec.vector
        if isinstance(v, Mapping):
            v = v.get(self._name) if self._name else v.get("", None)
        if v is None or (isinstance(v, list) and v and isinstance(v[0], list)):
            return None
        return v

    def _records_to_arrays(self, recs: list[Any]) -> tuple[NDArray[Any], NDArray[np.float32], int]:
        ids, vecs, skipped = [], [], 0
        for r in recs:
            v = self._vector(r)
            if v is None or len(v) != self.info.dim:
                skipped += 1
                continue
            ids.append(r.id)
            vecs.append(v)
        if self.info.id_kind == "int" and _kind_of(ids) == "str":
            raise SourceError(
                f"{self.info.uri} mixes integer and UUID point ids; attach it with id_kind='str'"
            )
        arr = np.asarray(vecs, np.float32).reshape(len(vecs), self.info.dim)
        return as_source_ids(ids, self.info.id_kind), arr, skipped

    def _discover(
        self,
        uri: str,
        where: str,
        vectors: dict[str, tuple[int, str, Any]],
        others: dict[str, str],
        vector_field: str | None,
        first_ids: list[Any],
        id_kind: str | None,
        count: int,
    ) -> None:
        def disp(n: str) -> str:
            return n or "(unnamed)"

        cands = {disp(n): (size, dt) for n, (size, dt, _) in vectors.items()}
        wanted = None if vector_field is None else disp(vector_field)
        name = choose_vector_field(cands, wanted, where, others)
        self._name = "" if name == "(unnamed)" else name
        size, dtype, distance = vectors[self._name]
        if id_kind not in (None, "int", "str"):
            raise ValueError(f"id_kind must be 'int' or 'str', got {id_kind!r}")
        self.info = SourceInfo(
            uri=uri,
            vector_field=self._name or "(unnamed)",
            dim=int(size),
            metric=_metric(distance, where),
            id_field="id",
            id_kind=id_kind or _kind_of(first_ids),  # type: ignore[arg-type]
            dtype=dtype,
            count=count,
        )

    def _page(self, offset: Any, limit: int, with_vector: bool) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def scan(self, batch_size: int) -> Iterator[tuple[NDArray[Any], NDArray[np.float32]]]:
        self.skipped = 0
        offset = None
        while True:
            recs, offset = self._page(offset, max(1, batch_size), with_vector=True)
            if recs:
                ids, vecs, skipped = self._records_to_arrays(recs)
                self.skipped += skipped
                yield ids, vecs
            if offset is None or not recs:
                return

    def _retrieve(self, pids: list[Any]) -> list[Any]:
        """Return records of ``pids`` with this source's vector."""
        raise NotImplementedError

    def fetch(self, ids: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        out = np.zeros((len(ids), self.info.dim), np.float32)
        found = np.zeros(len(ids), bool)
        pos = {str(v): i for i, v in enumerate(ids.tolist())}
        for s in range(0, len(ids), 4096):
            pids = [_point_id(v, self.info.id_kind) for v in ids[s : s + 4096].tolist()]
            for r in self._retrieve(pids):
                v = self._vector(r)
                i = pos.get(str(r.id))
                if v is not None and i is not None:
                    out[i], found[i] = v, True
        return out, found

    scores_in_engine = True

    def _nearest(self, q: NDArray[np.float32], k: int, pids: list[Any] | None) -> list[Any]:
        """Return the engine's exact top-``k`` points of one query (among ``pids`` when given)."""
        raise NotImplementedError

    def search(self, queries: NDArray[np.float32], k: int) -> SourceHits:
        ids: list[NDArray[Any]] = []
        scores = np.full((len(queries), k), np.nan, np.float32)
        for r, q in enumerate(np.asarray(queries, np.float32)):
            ids_r, scores[r] = self._scores(self._nearest(q, k, None), k)
            ids.append(ids_r)
        return SourceHits(ids, scores)

    def search_among(self, query: NDArray[np.float32], ids: NDArray[Any], k: int) -> ShortlistHits:
        pids = [_point_id(v, self.info.id_kind) for v in np.asarray(ids).tolist()]
        got, sc = self._scores(self._nearest(np.asarray(query, np.float32), k, pids), k)
        return ShortlistHits(got, sc[: len(got)])

    def _scores(self, points: list[Any], k: int) -> tuple[NDArray[Any], NDArray[np.float32]]:
        ids = as_source_ids([p.id for p in points], self.info.id_kind)
        sc = np.full(k, np.nan, np.float32)
        sc[: len(points)] = [float(p.score) for p in points]
        return ids, sc


# -- Qdrant Edge ------------------------------------------------------------------------------------
class QdrantEdgeSource(_QdrantBase):
    """A Qdrant Edge shard directory (``qdrant-edge://DIR``) written by ``qdrant_edge``, read-only."""

    schemes: ClassVar[tuple[str, ...]] = ("qdrant-edge",)

    def __init__(
        self, path: str, *, vector_field: str | None = None, id_kind: str | None = None
    ) -> None:
        import qdrant_edge as qe

        from .edge import _acquire

        self._qe = qe
        self.path = Path(path)
        cfg_file = self.path / "edge_config.json"
        if not cfg_file.exists():
            raise SourceError(f"{path} is not a Qdrant Edge shard (no edge_config.json)")
        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError as e:
            raise SourceError(f"{cfg_file} is unreadable: {e}") from e
        if (self.path / "hashplug_meta.json").exists():
            raise SourceError(f"{path} holds hashplug codes, not a float collection")
        raw = cfg.get("vectors") or {}
        if "size" in raw:  # one unnamed vector
            raw = {"": raw}
        vectors: dict[str, tuple[int, str, Any]] = {}
        others: dict[str, str] = {}
        for name, p in raw.items():
            if p.get("multivector_config"):
                others[name or "(unnamed)"] = "a multivector"
                continue
            dt = str(p.get("datatype") or "float32").lower()
            if dt not in ("float32", "float16"):
                others[name or "(unnamed)"] = f"a {dt} vector"
                continue
            vectors[name] = (int(p["size"]), dt, p.get("distance", "Cosine"))
        for name in cfg.get("sparse_vectors") or {}:
            others[name] = "a sparse vector"
        self._handle = _acquire(self.path)
        self.uri = f"qdrant-edge://{path}"
        first, _ = self._page(None, 64, with_vector=False)
        self._discover(
            self.uri,
            f"Qdrant Edge shard {path}",
            vectors,
            others,
            vector_field,
            [r.id for r in first],
            id_kind,
            self.count(),
        )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        **options: Any,
    ) -> QdrantEdgeSource:
        """Open a Qdrant Edge shard as a source (see :meth:`Source.from_uri`)."""
        parsed = parse_uri(uri, {"id_kind": str})
        if id_field not in (None, "id"):
            raise SourceError("Qdrant points are keyed by their point id; id_field does not apply")
        if not parsed.location:
            raise ValueError(
                "qdrant-edge:// needs a shard directory, e.g. qdrant-edge://./data/shard"
            )
        return cls(parsed.location, vector_field=vector_field, **{**parsed.options, **options})

    def _shard(self) -> Any:
        h = self._handle
        with h.lock:
            if h.shard is None:
                try:
                    h.shard = self._qe.EdgeShard.load(str(self.path))
                except Exception as e:  # noqa: BLE001 - qdrant_edge raises plain Exception
                    raise SourceError(f"cannot open Qdrant Edge shard {self.path}: {e}") from e
            return h.shard

    def _page(self, offset: Any, limit: int, with_vector: bool) -> tuple[list[Any], Any]:
        sel = ([self._name] if getattr(self, "_name", "") else True) if with_vector else False
        with self._handle.lock:
            recs, nxt = self._shard().scroll(
                self._qe.ScrollRequest(
                    offset=offset, limit=limit, with_payload=False, with_vector=sel
                )
            )
        return list(recs), nxt

    def _retrieve(self, pids: list[Any]) -> list[Any]:
        sel = [self._name] if self._name else True
        with self._handle.lock:
            return list(self._shard().retrieve(pids, with_payload=False, with_vector=sel))

    def _nearest(self, q: NDArray[np.float32], k: int, pids: list[Any] | None) -> list[Any]:
        qe = self._qe
        req = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(q.tolist(), using=self._name or None),
            filter=None if pids is None else qe.Filter(must=[qe.HasIdCondition(set(pids))]),
            with_payload=False,
            with_vector=False,
            params=qe.SearchParams(exact=True),
        )
        with self._handle.lock:
            return list(self._shard().query(req))

    def count(self) -> int:
        """Return the number of points in the shard now."""
        with self._handle.lock:
            return int(self._shard().count(self._qe.CountRequest(exact=True)))

    def codes_uri(self, suffix: str) -> str:
        """Return the URI of the sibling code store (see :meth:`Source.codes_uri`)."""
        return f"qdrant-edge://{str(self.path).rstrip('/')}{suffix}"

    def state_dir(self) -> Path | None:
        """Return the shard's parent folder (the hasher file goes beside the shard)."""
        return self.path.parent

    def close(self) -> None:
        """Release the shard; it is untouched."""
        from .edge import _release

        h = getattr(self, "_handle", None)
        self._handle = None  # type: ignore[assignment]  # closed: no handle
        if h is None:
            return
        if _release(h):
            with h.lock:
                shard, h.shard = h.shard, None
                if shard is not None:
                    shard.close()


# -- qdrant-client (local mode and servers) -----------------------------------------------------------
_CLIENT_OPTIONS: dict[str, Callable[[str], Any]] = {
    "https": lambda v: v.lower() in ("1", "true", "yes"),
    "prefix": str,
    "id_kind": str,
}


class QdrantSource(_QdrantBase):
    """A collection read through qdrant-client.

    ``qdrant+local://DIR/COLL`` (local mode) or ``qdrant://host:port/COLL`` (a server; ``api_key=``
    or ``$QDRANT_API_KEY``).
    """

    schemes: ClassVar[tuple[str, ...]] = ("qdrant", "qdrant+local")

    def __init__(
        self,
        collection: str,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 6333,
        https: bool | None = None,
        api_key: str | None = None,
        prefix: str | None = None,
        timeout: int = 10,
        vector_field: str | None = None,
        id_kind: str | None = None,
    ) -> None:
        from qdrant_client import QdrantClient

        self.collection = collection
        self._local = None
        self._conn: dict[str, Any] = {}
        if path is not None:
            from .client import _acquire_local

            self._local = _acquire_local(path)
            self._client = self._local.client
            self.uri = f"qdrant+local://{path}/{collection}"
            self._codes_base = f"qdrant+local://{path}"
        else:
            api_key = api_key or os.environ.get("QDRANT_API_KEY") or None
            self._client = QdrantClient(
                host=host,
                port=port,
                https=https,
                api_key=api_key,
                prefix=prefix,
                timeout=timeout,
                check_compatibility=False,
            )
            self._conn = {
                k: v for k, v in {"api_key": api_key, "https": https, "prefix": prefix}.items() if v
            }
            self.uri = f"qdrant://{host}:{port}/{collection}"
            self._codes_base = f"qdrant://{host}:{port}"
        where = f"Qdrant collection {collection!r} ({self.uri})"
        try:
            exists = self._call(lambda c: c.collection_exists(collection))
        except Exception as e:  # noqa: BLE001 - connection errors of every transport
            self.close()
            raise SourceError(f"cannot reach Qdrant for {self.uri}: {e}") from e
        if not exists:
            self.close()
            raise SourceError(f"{where} does not exist")
        info = self._call(lambda c: c.get_collection(collection))
        params = info.config.params
        raw = params.vectors
        raw = {"": raw} if raw is not None and not isinstance(raw, Mapping) else dict(raw or {})
        vectors: dict[str, tuple[int, str, Any]] = {}
        others: dict[str, str] = {}
        for name, vp in raw.items():
            dt = str(getattr(getattr(vp, "datatype", None), "value", None) or "float32").lower()
            if getattr(vp, "multivector_config", None) is not None:
                others[name or "(unnamed)"] = "a multivector"
            elif dt not in ("float32", "float16"):
                others[name or "(unnamed)"] = f"a {dt} vector"
            else:
                vectors[name] = (int(vp.size), dt, vp.distance)
        for name in params.sparse_vectors or {}:
            others[name] = "a sparse vector"
        first, _ = self._page(None, 64, with_vector=False)
        self._discover(
            self.uri,
            where,
            vectors,
            others,
            vector_field,
            [p.id for p in first],
            id_kind,
            self.count(),
        )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        **options: Any,
    ) -> QdrantSource:
        """Open a collection through qdrant-client as a source (see :meth:`Source.from_uri`)."""
        scheme, _ = split_uri(uri)
        parsed = parse_uri(uri, _CLIENT_OPTIONS)
        if id_field not in (None, "id"):
            raise SourceError("Qdrant points are keyed by their point id; id_field does not apply")
        opts = {**parsed.options, **options}
        if scheme == "qdrant+local":
            head, _, coll = parsed.location.rstrip("/").rpartition("/")
            if not head or not coll:
                raise ValueError(
                    "qdrant+local:// needs a folder and a collection, e.g. qdrant+local://./qdrant/docs"
                )
            return cls(coll, path=head, vector_field=vector_field, **opts)
        parts = urlsplit("//" + parsed.location)
        coll = parts.path.strip("/")
        if not parts.hostname or not coll or "/" in coll:
            raise ValueError(f"qdrant:// URIs look like qdrant://host:6333/collection, got {uri!r}")
        return cls(
            coll, host=parts.hostname, port=parts.port or 6333, vector_field=vector_field, **opts
        )

    def _call(self, fn: Any) -> Any:
        if self._local is not None:
            with self._local.lock:
                return fn(self._client)
        return fn(self._client)

    def _page(self, offset: Any, limit: int, with_vector: bool) -> tuple[list[Any], Any]:
        sel: Any = ([self._name] if getattr(self, "_name", "") else True) if with_vector else False
        recs, nxt = self._call(
            lambda c: c.scroll(
                self.collection, offset=offset, limit=limit, with_payload=False, with_vectors=sel
            )
        )
        return list(recs), nxt

    def _retrieve(self, pids: list[Any]) -> list[Any]:
        sel: Any = [self._name] if self._name else True
        return list(
            self._call(
                lambda c: c.retrieve(self.collection, pids, with_payload=False, with_vectors=sel)
            )
        )

    def _nearest(self, q: NDArray[np.float32], k: int, pids: list[Any] | None) -> list[Any]:
        from qdrant_client import models

        flt = None if pids is None else models.Filter(must=[models.HasIdCondition(has_id=pids)])
        res = self._call(
            lambda c: c.query_points(
                self.collection,
                query=q.tolist(),
                using=self._name or None,
                query_filter=flt,
                limit=k,
                with_payload=False,
                search_params=None if self._local else models.SearchParams(exact=True),
            )
        )
        return list(res.points)

    def count(self) -> int:
        """Return the number of points in the collection now."""
        return int(self._call(lambda c: c.count(self.collection, exact=True).count))

    def codes_uri(self, suffix: str) -> str:
        """Return the URI of the sibling code collection (see :meth:`Source.codes_uri`)."""
        return f"{self._codes_base}/{self.collection}{suffix}"

    def store_options(self) -> dict[str, Any]:
        """Return the connection options the code store needs (a copy)."""
        return dict(self._conn)

    def state_dir(self) -> Path | None:
        """Return the local-mode folder, or None for a server."""
        return Path(self._local.key) if self._local is not None else None

    def close(self) -> None:
        """Close the client; the collection is untouched."""
        loc, self._local = getattr(self, "_local", None), None
        if loc is not None:
            from .client import _release_local

            _release_local(loc)
        elif getattr(self, "_client", None) is not None:
            self._client.close()
