"""MilvusSource: a Milvus collection someone else wrote, read for attach (never written).

``milvus+lite://FILE.db/COLL`` (Milvus Lite) or ``milvus://[user:password@]host:port/[db/]COLL``
(a server; options ``token=``, ``user=``, ``password=``, ``db_name=``, ``secure=``, ``timeout=``,
``connect_timeout=``, ``retries=``, ... as for :class:`~hashplug_milvus.MilvusStore`).

Discovery (``describe_collection``): the vector field is the one ``FLOAT_VECTOR`` or
``FLOAT16_VECTOR`` field (name it with ``vector_field=`` when there are several; binary, bfloat16
and sparse vectors are not float vector fields), the ids are the primary key (``INT64`` -> int,
``VARCHAR`` -> str). The metric is the one of the vector field's index (``COSINE`` -> cosine,
``IP`` -> dot, ``L2`` -> l2). A field without an index cannot be searched by Milvus at all (and a
server cannot even load it); its metric is then ``metric=`` or, when not given, cosine: what
pymilvus >= 2.4 creates when no metric is named. A collection that is not loaded is loaded
(its data is untouched).

Reading: :meth:`scan` pages through the rows in primary-key order (``pk > last`` with a limit, the
way pymilvus' ``query_iterator`` does, but with the last key quoted safely: pymilvus pastes a
VARCHAR key into the expression unescaped). :meth:`fetch` queries ``pk in [...]`` with every key
quoted as a literal. :meth:`search` is Milvus' own float search in the index's metric, set to the
most exact setting the index has: FLAT is exact; IVF searches every list (``nprobe = nlist``: exact
for IVF_FLAT, the quantised distances for IVF_SQ8 / IVF_PQ); HNSW uses ``ef = max(k, 512)``
(approximate). :attr:`MilvusSource.exact` says which.

Change detection for ``sync``: rows added and deleted are found by the full scan each sync does;
:meth:`version` is None (Milvus has no collection version: within one sync only a change of the
row count is noticed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType, MilvusClient

from hashplug.sources.source import (
    Metric,
    ShortlistHits,
    Source,
    SourceError,
    SourceHits,
    SourceInfo,
    as_source_ids,
    better_first,
    choose_vector_field,
    metric_scores,
)
from hashplug.stores.base import StoreError, check_positive_int
from hashplug.stores.uri import parse_uri

from ._filters import literal
from ._retry import short_error
from .store import _URI_OPTIONS, MAX_TOPK, MilvusStore, _is_loaded

__all__ = ["MilvusSource", "SOURCE_OPTIONS"]

_METRICS: dict[str, Metric] = {"COSINE": "cosine", "IP": "dot", "L2": "l2"}
_GIVEN_METRICS: dict[str, Metric] = {
    "cosine": "cosine",
    "dot": "dot",
    "ip": "dot",
    "l2": "l2",
    "euclidean": "l2",
}
_FLOAT_TYPES = {DataType.FLOAT_VECTOR: "float32", DataType.FLOAT16_VECTOR: "float16"}
#: Connection options (URI query or keywords), passed on to the sibling code store too.
CONN_OPTIONS = (
    "token",
    "user",
    "password",
    "db_name",
    "timeout",
    "connect_timeout",
    "retries",
    "backoff",
    "max_backoff",
    "retry_deadline",
)
#: Every option a source accepts.
SOURCE_OPTIONS = (*CONN_OPTIONS, "db", "secure", "metric")
_PAGE_BYTES = 32 * 1024 * 1024  # per scan page / fetch RPC from a server
# Milvus Lite 2.5 hangs (until the RPC's deadline, and stays wedged) on query results of ~6 MB
# and more (1200 rows of 1280-d float32); 900 rows (4.6 MB) worked.
_LITE_PAGE_BYTES = 3 * 1024 * 1024
_FETCH_IDS = 1_000  # keys per ``pk in [...]`` query
_HNSW_EF = 512


_LINE_BREAKS = ("\n", "\r")


def _lite_literal(value: Any) -> str | None:
    r"""Return a key as a Milvus Lite 2.5 expression literal, or None where none exists.

    Lite's parser unescapes only ``\\`` and ``\"`` (``"\t"`` stays a backslash and a t), takes
    other control characters raw, and cannot read a line break inside a string at all.
    """
    if not isinstance(value, str):
        return literal(value)
    if any(b in value for b in _LINE_BREAKS):
        return None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusSource(Source):
    """A user's Milvus collection, read-only (Milvus Lite or a server)."""

    schemes: ClassVar[tuple[str, ...]] = ("milvus", "milvus+lite")

    #: True when :meth:`search` is exact (a FLAT index, or IVF_FLAT with every list probed).
    exact: bool
    #: The vector field's index type ("" when it has none).
    index_type: str

    def __init__(
        self,
        conn: MilvusStore,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        metric: str | None = None,
    ) -> None:
        # ``conn`` is used only for its connection, retries and error messages; none of its
        # collection methods (which would write) is ever called on the user's collection.
        self._conn = conn
        self.collection = conn.collection
        self.uri = (
            f"milvus+lite://{quote(conn.uri)}/{self.collection}"
            if conn.is_lite
            else f"milvus://{urlsplit(conn.uri).netloc}/{self._db_prefix()}{self.collection}"
        )
        if conn.is_lite and not Path(conn.uri).is_file():
            raise SourceError(f"there is no Milvus Lite file {conn.uri}")
        if not conn.is_lite:
            try:
                conn._probe()
            except OSError as e:
                raise SourceError(
                    f"cannot reach Milvus at {conn.uri} ({short_error(e)}): is the server "
                    "running, and are host and port right?"
                ) from e
        desc = self._call("describe_collection", self._describe)
        where = f"Milvus collection {self.collection!r} in {conn.location}"
        fields = list(desc["fields"])
        vecs = {
            f["name"]: (int(f["params"]["dim"]), _FLOAT_TYPES[f["type"]])
            for f in fields
            if f["type"] in _FLOAT_TYPES
        }
        others = {f["name"]: _type_name(f) for f in fields if f["name"] not in vecs}
        vf = choose_vector_field(vecs, vector_field, where, others)
        pk = next(f for f in fields if f.get("is_primary"))
        if id_field is not None and id_field != pk["name"]:
            raise SourceError(
                f"id field {id_field!r} is not the primary key of {where}; attach reads the "
                f"primary key {pk['name']!r} (leave id_field out or name it)"
            )
        if pk["type"] not in (DataType.INT64, DataType.VARCHAR):
            raise SourceError(f"primary key {pk['name']!r} of {where} is {_type_name(pk)}")
        self._vf, self._pk = vf, str(pk["name"])
        self._dtype = vecs[vf][1]
        index = self._call("describe_index", self._index_of)
        self.index_type = str(index.get("index_type", "")).upper() if index else ""
        self._search_params = self._most_exact(index)
        # Milvus Lite searches every index as FLAT; IVF_FLAT probing every list is exact too.
        self.exact = bool(self.index_type) and (
            conn.is_lite or self.index_type in ("FLAT", "IVF_FLAT")
        )
        # A filtered search over an approximate index may miss listed ids: exact ones only.
        self.scores_in_engine = self.exact
        self._ensure_loaded(where)
        self.info = SourceInfo(
            uri=self.uri,
            vector_field=vf,
            dim=vecs[vf][0],
            metric=self._metric(index, metric, where),
            id_field=self._pk,
            id_kind="int" if pk["type"] == DataType.INT64 else "str",
            dtype=self._dtype,
            count=self.count(),
        )
        self._warned = False

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        **options: Any,
    ) -> MilvusSource:
        """Open a Milvus collection as a source.

        ``milvus+lite://path/to/file.db/COLL`` or ``milvus://host:port/[db/]COLL``; connection
        options (:data:`SOURCE_OPTIONS`) in the URI query or as keywords; ``metric=`` only for a
        vector field without an index.
        """
        base = uri.partition("?")[0]
        types = {k: _URI_OPTIONS.get(k, str) for k in SOURCE_OPTIONS}
        opts: dict[str, Any] = {**parse_uri(uri, types).options, **options}
        unknown = sorted(set(opts) - set(SOURCE_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for a Milvus source {base!r}; known: "
                f"{', '.join(SOURCE_OPTIONS)}"
            )
        metric = opts.pop("metric", None)
        # The URI-only options stay in the URI (MilvusStore.from_uri parses and checks them).
        in_uri: dict[str, str] = {k: str(opts.pop(k)) for k in ("db", "secure") if k in opts}
        conn = MilvusStore.from_uri(base + ("?" + urlencode(in_uri) if in_uri else ""), **opts)
        return cls(conn, vector_field=vector_field, id_field=id_field, metric=metric)

    def _db_prefix(self) -> str:
        return f"{self._conn.db_name}/" if self._conn.db_name else ""

    # -- engine calls -----------------------------------------------------------------------------
    def _call(self, op: str, fn: Callable[[MilvusClient], Any]) -> Any:
        """``fn(client)`` with the store's retries; every failure becomes a SourceError."""
        try:
            return self._conn._call(op, fn, ready=False)
        except SourceError:
            raise
        except StoreError as e:
            raise SourceError(
                str(e).replace("re-running the same ingest", "attaching again")
            ) from e

    def _rpc(self) -> dict[str, Any]:
        return self._conn._rpc()

    def _describe(self, c: MilvusClient) -> dict[str, Any]:
        if not c.has_collection(self.collection, **self._rpc()):
            names = sorted(c.list_collections(**self._rpc()))
            raise SourceError(
                f"{self._conn.location} has no collection {self.collection!r} "
                f"(collections: {', '.join(names) or 'none'})"
            )
        return dict(c.describe_collection(self.collection, **self._rpc()))

    def _index_of(self, c: MilvusClient) -> dict[str, Any] | None:
        names = c.list_indexes(self.collection, field_name=self._vf, **self._rpc())
        if not names:
            return None
        return dict(c.describe_index(self.collection, names[0], **self._rpc()))

    def _ensure_loaded(self, where: str) -> None:
        def go(c: MilvusClient) -> None:
            if _is_loaded(c.get_load_state(self.collection, **self._rpc())):
                return
            try:
                self._conn._load(c)  # reads the data into memory; the collection is unchanged
            except Exception as e:
                if "index" in str(e).lower() or not self.index_type:
                    raise SourceError(
                        f"{where} is not loaded and Milvus cannot load it: a server loads a "
                        f"collection only when each vector field has an index ({short_error(e)}). "
                        f"Create one, e.g. FLAT on {self._vf!r} in your metric"
                    ) from e
                raise

        self._call("load_collection", go)

    def _metric(self, index: dict[str, Any] | None, given: str | None, where: str) -> Metric:
        if given is not None and str(given).lower() not in _GIVEN_METRICS:
            raise ValueError(f"metric must be one of cosine, dot, l2; got {given!r}")
        chosen = _GIVEN_METRICS[str(given).lower()] if given is not None else None
        if index is None:
            return chosen or "cosine"
        name = str(index.get("metric_type", "")).upper()
        if name not in _METRICS:
            raise SourceError(
                f"the index on {self._vf!r} of {where} uses metric {name!r}; attach supports "
                "COSINE, IP and L2"
            )
        if chosen is not None and chosen != _METRICS[name]:
            raise ValueError(
                f"metric={given!r} differs from the {name} metric of the index on {self._vf!r} "
                f"of {where}: Milvus searches a field only in its index's metric"
            )
        return _METRICS[name]

    def _most_exact(self, index: dict[str, Any] | None) -> dict[str, Any]:
        if index is None:
            return {}
        kind = str(index.get("index_type", "")).upper()
        if kind.startswith("IVF") and index.get("nlist"):
            return {"nprobe": int(index["nlist"])}
        if kind == "HNSW":
            return {"ef": _HNSW_EF}
        return {}

    # -- reading ----------------------------------------------------------------------------------
    def count(self) -> int:
        """Return the number of rows in the collection now."""

        def go(c: MilvusClient) -> int:
            res = c.query(
                self.collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
                **self._rpc(),
            )
            return int(res[0]["count(*)"])

        return int(self._call("count", go))

    def _literal(self, value: Any) -> str | None:
        """``value`` quoted for this engine's expression parser (None: it cannot be written)."""
        return _lite_literal(value) if self._conn.is_lite else literal(value)

    def _rows_per_rpc(self, wanted: int) -> int:
        """Rows per query RPC: ``wanted``, capped by Milvus' query window and the reply size."""
        row = self.info.dim * (2 if self._dtype == "float16" else 4) + 64
        budget = _LITE_PAGE_BYTES if self._conn.is_lite else _PAGE_BYTES
        return max(1, min(int(wanted), MAX_TOPK, budget // row))

    def _vectors(self, rows: list[dict[str, Any]]) -> tuple[list[Any], NDArray[np.float32]]:
        """Rows of a query -> their keys and float32 vectors (rows without a vector dropped)."""
        keys: list[Any] = []
        vecs: list[NDArray[Any]] = []
        for row in rows:
            v = row.get(self._vf)
            if v is None:
                self.skipped += 1
                continue
            if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (bytes, bytearray)):
                v = v[0]  # float16 vectors come back as [bytes]
            if isinstance(v, (bytes, bytearray)):
                v = np.frombuffer(v, np.float16)
            keys.append(row[self._pk])
            vecs.append(np.asarray(v, np.float32))
        out = np.stack(vecs) if vecs else np.zeros((0, self.info.dim), np.float32)
        if out.shape[1] != self.info.dim:
            raise SourceError(
                f"Milvus returned {out.shape[1]}-d vectors for the {self.info.dim}-d field "
                f"{self._vf!r}"
            )
        return keys, out

    def scan(self, batch_size: int) -> Iterator[tuple[NDArray[Any], NDArray[np.float32]]]:
        """Yield batches of ``batch_size`` rows in primary-key order.

        They are read in pages that Milvus can return at Strong consistency (so other clients'
        writes are seen).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        self.skipped = 0
        keys: list[Any] = []
        vecs: list[NDArray[np.float32]] = []
        for page_keys, page_vecs in self._pages(self._rows_per_rpc(batch_size)):
            keys += page_keys
            vecs.append(page_vecs)
            if len(keys) >= batch_size:
                yield as_source_ids(keys, self.info.id_kind), np.concatenate(vecs)
                keys, vecs = [], []
        if keys:
            yield as_source_ids(keys, self.info.id_kind), np.concatenate(vecs)

    def _pages(self, page: int) -> Iterator[tuple[list[Any], NDArray[np.float32]]]:
        last: Any = None  # the last key yielded
        cursor: str | None = None  # the expression literal the next page starts after
        size = page
        while True:
            expr = "" if cursor is None else f"{self._pk} > {cursor}"

            def go(c: MilvusClient, expr: str = expr, size: int = size) -> list[dict[str, Any]]:
                return list(
                    c.query(
                        self.collection,
                        filter=expr,
                        limit=size,
                        output_fields=[self._pk, self._vf],
                        consistency_level="Strong",
                        iterator="True",  # pk-ordered pages, as query_iterator asks for
                        **self._rpc(),
                    )
                )

            rows = self._call("query", go)
            full = len(rows) >= size
            if last is not None:  # rows re-read after a cursor short of the last key
                rows = [r for r in rows if r[self._pk] > last]
            if not rows and not full:
                return
            if rows:
                last = rows[-1][self._pk]
                # the next page starts after the last key that can be written as a literal
                lits = (self._literal(r[self._pk]) for r in reversed(rows))
                moved = next((lit for lit in lits if lit is not None), cursor)
                stuck, cursor = moved == cursor, moved
            else:
                stuck = True
            if stuck and full:  # keys that no literal can name fill the page: read more
                if size >= MAX_TOPK:
                    raise SourceError(
                        f"cannot page past key {last!r} of {self.uri}: more than {MAX_TOPK} keys "
                        "in a row contain line breaks, which Milvus Lite cannot parse"
                    )
                size = min(2 * size, MAX_TOPK)
            else:
                size = page
            if rows:
                keys, vecs = self._vectors(rows)
                if keys:
                    yield keys, vecs

    def fetch(self, ids: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the vectors of ``ids`` in order and a found mask (see :meth:`Source.fetch`)."""
        n = len(ids)
        out = np.zeros((n, self.info.dim), np.float32)
        found = np.zeros(n, bool)
        wanted = ids.tolist()
        pos: dict[Any, list[int]] = {}
        for i, v in enumerate(wanted):
            pos.setdefault(v, []).append(i)
        lits = {v: self._literal(v) for v in pos}
        plain = [lit for lit in lits.values() if lit is not None]
        step = self._rows_per_rpc(_FETCH_IDS)
        exprs = [
            f"{self._pk} in [{', '.join(plain[s : s + step])}]" for s in range(0, len(plain), step)
        ]
        for v in (v for v, lit in lits.items() if lit is None):
            # A key with a line break (Milvus Lite): every key that starts like it up to the break
            # and continues with a character below 0x0e, then the wanted ones are kept.
            head = v[: min(v.index(b) for b in _LINE_BREAKS if b in v)]
            lo, hi = self._literal(head), self._literal(head + "\x0e")
            exprs.append(f"{self._pk} >= {lo} and {self._pk} < {hi}")
        for expr in exprs:

            def go(c: MilvusClient, expr: str = expr) -> list[dict[str, Any]]:
                return list(
                    c.query(
                        self.collection,
                        filter=expr,
                        output_fields=[self._pk, self._vf],
                        **self._rpc(),
                    )
                )

            keys, vecs = self._vectors(self._call("query", go))
            for key, vec in zip(keys, vecs, strict=True):
                for i in pos.get(key, ()):
                    out[i], found[i] = vec, True
        return out, found

    def search(self, queries: NDArray[np.float32], k: int) -> SourceHits:
        """Run Milvus' exact float search (see :meth:`Source.search`)."""
        if not self.index_type:
            raise SourceError(
                f"{self._vf!r} of Milvus collection {self.collection!r} has no index, so Milvus "
                "cannot search it; create one (FLAT is exact) to compare against its own search"
            )
        if not self.exact and not self._warned:
            self._warned = True
            warnings.warn(
                f"the reference search of {self.uri} is its own {self.index_type} index, which is "
                f"approximate (search params {self._search_params})",
                stacklevel=2,
            )
        q = np.asarray(queries, np.float32)
        top = min(int(k), MAX_TOPK)
        data = self._cast(q)
        ids: list[NDArray[Any]] = []
        scores = np.full((q.shape[0], k), np.nan, np.float32)
        per_call = max(1, min(1024, 16_384 // top))
        for s in range(0, q.shape[0], per_call):
            for r, hits in enumerate(self._search_rpc(list(data[s : s + per_call]), top)):
                keys = [h["id"] for h in hits]
                d = np.asarray([h["distance"] for h in hits], np.float32)
                ids.append(as_source_ids(keys, self.info.id_kind))
                if self.info.metric == "l2":
                    d = np.sqrt(np.maximum(d, 0))  # Milvus reports squared L2
                scores[s + r, : d.size] = d
        return SourceHits(ids, scores)

    def search_among(self, query: NDArray[np.float32], ids: NDArray[Any], k: int) -> ShortlistHits:
        """Run filtered exact searches (``pk in [...]``) and merge them by score.

        :data:`_FETCH_IDS` keys each; keys Milvus cannot spell in a filter are fetched and scored
        here.
        """
        lits = {v: self._literal(v) for v in np.asarray(ids).tolist()}
        plain = [lit for lit in lits.values() if lit is not None]
        odd = [v for v, lit in lits.items() if lit is None]
        q = np.asarray(query, np.float32)
        data = [self._cast(q)]
        top = min(int(k), MAX_TOPK)
        keys: list[Any] = []
        scores: list[float] = []
        step = self._rows_per_rpc(_FETCH_IDS)
        for s in range(0, len(plain), step):
            expr = f"{self._pk} in [{', '.join(plain[s : s + step])}]"
            for h in self._search_rpc(data, top, filter=expr)[0]:
                keys.append(h["id"])
                d = float(h["distance"])
                scores.append(float(np.sqrt(max(d, 0.0))) if self.info.metric == "l2" else d)
        if odd:
            vecs, found = self.fetch(np.array(odd, dtype=object))
            sc = metric_scores(q[None, :], vecs[found], self.info.metric)
            keys += [v for v, f in zip(odd, found.tolist(), strict=True) if f]
            scores += sc.tolist()
        sc_arr = np.asarray(scores, np.float32)
        order = np.argsort(-better_first(self.info.metric) * sc_arr, kind="stable")[:top]
        return ShortlistHits(
            as_source_ids([keys[i] for i in order], self.info.id_kind), sc_arr[order]
        )

    def _index_metric(self) -> str:
        return {"cosine": "COSINE", "dot": "IP", "l2": "L2"}[self.info.metric]

    def _cast(self, q: NDArray[np.float32]) -> NDArray[Any]:
        """Return queries in the vector field's dtype (float16 fields take float16)."""
        return q.astype(np.float16) if self._dtype == "float16" else q

    def _search_rpc(self, data: list[Any], limit: int, **where: Any) -> Any:
        """Run one retried search of ``data`` on the vector field (``filter=`` in ``where``)."""
        params = {"metric_type": self._index_metric(), "params": self._search_params}

        def go(c: MilvusClient) -> Any:
            return c.search(
                self.collection,
                data=data,
                anns_field=self._vf,
                limit=limit,
                search_params=params,
                **where,
                **self._rpc(),
            )

        return self._call("search", go)

    # -- placement --------------------------------------------------------------------------------
    def codes_uri(self, suffix: str) -> str:
        """Return the URI of the sibling code collection (see :meth:`Source.codes_uri`)."""
        name = f"{self.collection}{suffix}"
        if len(name) > 255:
            raise SourceError(
                f"the codes collection name {name!r} is longer than Milvus allows (255); pass "
                "codes_uri= with a shorter collection name"
            )
        if self._conn.is_lite:
            return f"milvus+lite://{quote(self._conn.uri)}/{name}"
        parts = urlsplit(self._conn.uri)
        secure = "?secure=true" if parts.scheme == "https" else ""
        return f"milvus://{parts.netloc}/{self._db_prefix()}{name}{secure}"

    def store_options(self) -> dict[str, Any]:
        """Return the connection options (token, user, database ...) the code store needs."""
        c = self._conn
        opts: dict[str, Any] = {
            k: getattr(c, k) for k in ("token", "user", "password", "db_name") if getattr(c, k)
        }
        opts.update(
            timeout=c.timeout,
            connect_timeout=c.connect_timeout,
            retries=c.retry.retries,
            backoff=c.retry.backoff,
            max_backoff=c.retry.max_backoff,
            retry_deadline=c.retry.deadline,
        )
        return opts

    def state_dir(self) -> Path | None:
        """Return the Milvus Lite file's folder, or None for a server."""
        return Path(self._conn.uri).parent if self._conn.is_lite else None

    def close(self) -> None:
        """Close the client; the collection is untouched."""
        self._conn.close()


def _type_name(field: dict[str, Any]) -> str:
    t = field["type"]
    name = t.name if isinstance(t, DataType) else str(t)
    dim = (field.get("params") or {}).get("dim")
    return f"{name}({dim})" if dim else name
