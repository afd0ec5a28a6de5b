"""LanceDBSource: a LanceDB table someone else wrote, read for attach (never written).

Vector field: a ``fixed_size_list<float32 | float16>`` column. Primary key: an int or string column
(``id_field``, else a column named ``id``). Metric: the vector index's distance type when the column
has one, else LanceDB's default ``l2`` (override with ``metric=`` or ``?metric=cosine``). The exact
float search used as the reference bypasses any vector index (a flat scan).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import lancedb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from hashplug.sources.source import (
    Metric,
    Source,
    SourceError,
    SourceHits,
    SourceInfo,
    as_source_ids,
    choose_vector_field,
)
from hashplug.stores.uri import parse_uri

__all__ = ["LanceDBSource"]

_ID_NAMES = ("id", "_id", "pk", "key", "uuid", "doc_id")
_METRICS: dict[str, Metric] = {"cosine": "cosine", "dot": "dot", "l2": "l2", "euclidean": "l2"}


def _float_dtype(t: pa.DataType) -> str | None:
    if pa.types.is_fixed_size_list(t):
        v = t.value_type
        if pa.types.is_float32(v):
            return "float32"
        if pa.types.is_float16(v):
            return "float16"
    return None


def _vectors(
    arr: pa.Array | pa.ChunkedArray, dim: int
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Convert a fixed-size-list column to float32 (n, dim) and a mask of non-null rows."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool)
    flat = arr.values.slice(arr.offset * dim, len(arr) * dim)
    vals = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return vals.reshape(len(arr), dim), valid


class LanceDBSource(Source):
    """A user's LanceDB table (``lancedb://DIR/TABLE``), read-only."""

    schemes: ClassVar[tuple[str, ...]] = ("lancedb",)

    def __init__(
        self,
        db_path: str,
        table: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        metric: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.db_path, self.table_name = db_path, table
        self.uri = f"lancedb://{db_path}/{table}"
        try:
            self._db = lancedb.connect(
                db_path, read_consistency_interval=timedelta(0), storage_options=storage_options
            )
            names = set(self._db.list_tables().tables)
        except Exception as e:
            raise SourceError(f"cannot open LanceDB database {db_path!r}: {e}") from e
        if table not in names:
            raise SourceError(
                f"LanceDB database {db_path!r} has no table {table!r} (tables: {sorted(names) or 'none'})"
            )
        self._tbl = self._db.open_table(table)
        schema = self._tbl.schema
        vecs = {f.name: (f.type.list_size, d) for f in schema if (d := _float_dtype(f.type))}
        others = {f.name: str(f.type) for f in schema if f.name not in vecs}
        where = f"LanceDB table {table!r}"
        vf = choose_vector_field(vecs, vector_field, where, others)
        self._id = self._id_field(schema, id_field, where)
        id_type = schema.field(self._id).type
        kind: Literal["int", "str"] = (
            "str" if (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)) else "int"
        )
        self._vf = vf
        self._map: tuple[NDArray[Any], NDArray[np.uint64]] | None = None
        self._map_version: int | None = None
        self.info = SourceInfo(
            uri=self.uri,
            vector_field=vf,
            dim=int(vecs[vf][0]),
            metric=self._metric(vf, metric),
            id_field=self._id,
            id_kind=kind,
            dtype=vecs[vf][1],
            count=self._tbl.count_rows(),
        )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        vector_field: str | None = None,
        id_field: str | None = None,
        **options: Any,
    ) -> LanceDBSource:
        """Open a LanceDB table as a source (see :meth:`Source.from_uri`)."""
        parsed = parse_uri(uri, {"metric": str})
        db_path, sep, table = parsed.location.rstrip("/").rpartition("/")
        if not sep or not table:
            raise ValueError(
                f"lancedb URI needs a directory and a table, e.g. lancedb://./data/docs; got {uri!r}"
            )
        opts: dict[str, Any] = {**parsed.options, **options}
        return cls(db_path or "/", table, vector_field=vector_field, id_field=id_field, **opts)

    @staticmethod
    def _id_field(schema: pa.Schema, wanted: str | None, where: str) -> str:
        ok = {
            f.name
            for f in schema
            if pa.types.is_integer(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
        }
        if wanted is not None:
            if wanted not in schema.names:
                raise SourceError(f"{where} has no field {wanted!r} (fields: {schema.names})")
            if wanted not in ok:
                raise SourceError(
                    f"id field {wanted!r} of {where} must be an integer or string column"
                )
            return wanted
        for name in _ID_NAMES:
            if name in ok:
                return name
        raise SourceError(
            f"{where} has no obvious primary key column; name one with id_field= (CLI: --id-field); "
            f"integer/string columns: {sorted(ok) or 'none'}"
        )

    def _metric(self, vf: str, given: str | None) -> Metric:
        if given is not None:
            if given.lower() not in _METRICS:
                raise ValueError(f"metric must be one of cosine, dot, l2; got {given!r}")
            return _METRICS[given.lower()]
        for idx in self._tbl.list_indices():
            if vf in idx.columns:
                stats = self._tbl.index_stats(idx.name)
                dt = str(getattr(stats, "distance_type", "") or "").lower()
                if dt in _METRICS:
                    return _METRICS[dt]
        return "l2"

    # -- reading ----------------------------------------------------------------------------------
    def scan(self, batch_size: int) -> Iterator[tuple[NDArray[Any], NDArray[np.float32]]]:
        """Yield every row once as ``(ids, vectors)`` batches (see :meth:`Source.scan`)."""
        self.skipped = 0
        reader = self._tbl.search().select([self._id, self._vf]).limit(None).to_batches(batch_size)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            vecs, valid = _vectors(batch.column(self._vf), self.info.dim)
            ids = as_source_ids(batch.column(self._id).to_pylist(), self.info.id_kind)
            if not valid.all():
                self.skipped += int((~valid).sum())
                ids, vecs = ids[valid], vecs[valid]
            yield ids, vecs

    def _row_ids(
        self, ids: NDArray[Any], refresh: bool
    ) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
        """Return the LanceDB row ids of ``ids`` and which of them are known.

        They come from an id -> row id map built by one scan of the id column. Row ids survive
        appends and deletes; compaction changes them, which :meth:`fetch` notices (the rows it gets
        back carry other ids) and rebuilds the map once per table version.
        """
        version = self._tbl.version
        if self._map is None or (refresh and self._map_version != version):
            got = self._tbl.search().select([self._id]).with_row_id(True).limit(None).to_arrow()
            keys = as_source_ids(got.column(self._id).to_pylist(), self.info.id_kind)
            order = np.argsort(keys, kind="stable")
            self._map = (keys[order], got.column("_rowid").to_numpy()[order])
            self._map_version = version
        keys, rows = self._map
        if len(keys) == 0:
            return np.zeros(len(ids), np.uint64), np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return rows[pos], keys[pos] == ids

    def fetch(self, ids: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the vectors of ``ids`` and a found mask.

        A take by row id (no filter over the table), checked against the ids the rows carry; ids the
        map misses trigger one rebuild of the map.
        """
        out = np.zeros((len(ids), self.info.dim), np.float32)
        found = np.zeros(len(ids), bool)
        pos = {v: i for i, v in enumerate(ids.tolist())}
        for refresh in (False, True):
            todo = np.flatnonzero(~found)
            if todo.size == 0:
                break
            rows, known = self._row_ids(ids[todo], refresh)
            if not known.any():
                continue
            got = self._tbl.take_row_ids(rows[known].tolist()).select([self._id, self._vf])
            tbl = got.to_arrow()
            if tbl.num_rows == 0:
                continue
            vecs, valid = _vectors(tbl.column(self._vf), self.info.dim)
            for r, v in enumerate(tbl.column(self._id).to_pylist()):
                i = pos.get(v)
                if i is not None and valid[r]:
                    out[i], found[i] = vecs[r], True
        return out, found

    def search(self, queries: NDArray[np.float32], k: int) -> SourceHits:
        """Run LanceDB's exact float search (see :meth:`Source.search`)."""
        q = np.asarray(queries, np.float32)
        ids: list[NDArray[Any]] = []
        scores = np.full((q.shape[0], k), np.nan, np.float32)
        for r in range(q.shape[0]):
            builder: Any = self._tbl.search(q[r], vector_column_name=self._vf)
            res = (
                builder.distance_type(self.info.metric)
                .bypass_vector_index()
                .limit(k)
                .select([self._id, "_distance"])
                .to_arrow()
            )
            ids.append(as_source_ids(res.column(self._id).to_pylist(), self.info.id_kind))
            d = res.column("_distance").to_numpy().astype(np.float32)
            scores[r, : d.size] = self._similarity(d)
        return SourceHits(ids, scores)

    def _similarity(self, d: NDArray[np.float32]) -> NDArray[np.float32]:
        """LanceDB's distance -> the metric score hashplug reports."""
        if self.info.metric == "l2":
            return np.sqrt(np.maximum(d, 0))  # LanceDB reports squared L2
        return (1.0 - d).astype(np.float32)  # cosine and dot distances are 1 - similarity

    def count(self) -> int:
        """Return the number of rows in the table now."""
        return int(self._tbl.count_rows())

    def version(self) -> Any:
        """Return the table version (it changes with every commit)."""
        return self._tbl.version

    def codes_uri(self, suffix: str) -> str:
        """Return the URI of the sibling code table (see :meth:`Source.codes_uri`)."""
        return f"lancedb://{self.db_path}/{self.table_name}{suffix}"

    def state_dir(self) -> Path | None:
        """Return the database folder when it is local, else None."""
        p = Path(self.db_path)
        return p if "://" not in self.db_path and p.is_dir() else None
