"""LanceDBStore: hashplug codes in an embedded LanceDB table, searched by LanceDB's Hamming distance.

Table layout (one table per collection)::

    id       int64, not null                  the caller's id (upsert key)
    code     fixed_size_list<uint8>[n_bytes]  packed code, DESIGN.md bit order (np.packbits)
    payload  string, nullable                 the whole payload as JSON (exact round trip)
    _hashplug_corr  int32, nullable           the scoring="cosine" factors (c, e) as two
                                              float16 in one int32 (4 bytes); null: none.
                                              Tables of older versions lack it: it is added
                                              at the first upsert that brings factors
    <field>  bool | int64 | float64 | string  one column per scalar top-level payload field,
                                              so that SQL ``where`` filters work on them

The hasher's :class:`~hashplug.stores.base.CollectionMeta` lives in the table's schema metadata
under the key ``hashplug``. Codes are searched with ``distance_type("hamming")``; an ``IVF_FLAT``
index with the Hamming metric is built automatically once the table is large enough.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree, IvfFlat
from numpy.typing import ArrayLike, NDArray

from hashplug.stores.base import (
    HAMMING_PAD,
    CodeHits,
    CollectionMeta,
    Filter,
    HitsStore,
    MatchNothing,
    Payload,
    StoreError,
    as_ids,
    check_store_corrections,
    normalize_filter,
    pack_corrections,
    sort_hits,
    unpack_corrections,
)
from hashplug.stores.uri import parse_uri, to_finite_float

from ._columns import (
    CORR_COLUMN,
    RESERVED_COLUMNS,
    PayloadColumns,
    _check_payload_columns,
    _chunks,
    _codes_np,
    _dict_to_sql,
    _dumps,
    _in_sql,
    _match,
    _payload_column_values,
    _payload_fields,
    _vector_index,
)

__all__ = ["LanceDBStore", "META_KEY", "RESERVED_COLUMNS", "WRITE_ATTEMPTS"]

#: Attempts of one upsert when other writers commit or add payload columns at the same time.
WRITE_ATTEMPTS = 10


def _corr_np(col: pa.ChunkedArray | pa.Array) -> NDArray[np.float32]:
    """Convert the factor column to (n, 2) float32, NaN where null."""
    out = unpack_corrections(col.fill_null(0).to_numpy(zero_copy_only=False))
    out[col.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return out


def _concurrent_write(e: BaseException) -> bool:
    """Return whether ``e`` is LanceDB's answer to another writer's concurrent commit.

    That is a commit conflict, or a payload column (or index) that another writer added meanwhile.
    """
    msg = str(e).lower()
    return "conflict" in msg or "already exists" in msg


#: Schema-metadata key that holds ``CollectionMeta.to_json()``.
META_KEY = b"hashplug"

IndexMode = Literal["auto", "none", "ivf_flat"]

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_QUERY_BATCH = 256  # query vectors per LanceDB call
_URI_OPTIONS: dict[str, Callable[[str], Any]] = {
    "index": str,
    "index_min_rows": int,
    "num_partitions": int,
    "nprobes": int,
    "payload_columns": str,
    "optimize_every": int,
    "cleanup_older_than": lambda v: _seconds("cleanup_older_than", v),
}


def _seconds(name: str, value: str) -> timedelta | None:
    """Convert a URI value in seconds (``none``: LanceDB's own default of 7 days) to a timedelta."""
    if value.strip().lower() == "none":
        return None
    secs = to_finite_float(value)
    if secs < 0:
        raise ValueError(f"{name} must be seconds >= 0 or 'none', got {value!r}")
    return timedelta(seconds=secs)


class LanceDBStore(HitsStore):
    """A hashplug collection stored as one LanceDB table.

    Args:
        db_path: LanceDB database directory (created if missing) or any URI ``lancedb.connect``
            accepts (``s3://bucket/path`` ...).
        table: table name (letters, digits, ``_``, ``-``, ``.``).
        index: ``"auto"`` builds an IVF_FLAT Hamming index once the table holds
            ``index_min_rows`` rows; ``"ivf_flat"`` builds it at the first write; ``"none"``
            never builds one by itself (call :meth:`create_index`). Without an index LanceDB
            scans every code, which is exact.
        index_min_rows: row count at which ``index="auto"`` builds the index.
        num_partitions: IVF partitions (LanceDB's default, about sqrt(rows), when None).
        nprobes: IVF partitions searched per query (LanceDB's default when None); more is
            slower and closer to exact.
        payload_columns: which payload fields get a typed column, so that SQL filters work on
            them. ``"auto"``: every top-level field whose name is an identifier (not one of
            :data:`RESERVED_COLUMNS`) and whose values are str, int, float or bool, added to the
            schema when first seen. ``"none"``: none beyond those the table already has. A
            mapping ``{field: "string" | "int64" | "float64" | "bool"}`` declares columns
            up front (other fields stay JSON-only). The full payload is always kept as JSON.
        optimize_every: writes after which ``Table.optimize()`` compacts the table and brings
            its indices up to date (also done when many rows are unindexed).
        cleanup_older_than: table versions older than this are deleted by those optimize
            passes (LanceDB keeps every version, each a copy of what changed, for time travel);
            ``None`` leaves LanceDB's own default (7 days). :meth:`finish_writes` deletes every
            old version. URI: seconds or ``none``.
        read_consistency_interval: passed to ``lancedb.connect``; the default 0 makes every
            read see writes made by other store objects or processes.
        storage_options: passed to ``lancedb.connect`` (object-store credentials ...).

    Search filters: a dict ``{field: value}`` (all equal; fields must be payload columns) or a
    SQL ``where`` string over the table's columns; applied before the top-k (prefilter).
    """

    schemes: ClassVar[tuple[str, ...]] = ("lancedb",)
    returns_codes: ClassVar[bool] = True
    supports_native_index: ClassVar[bool] = True
    supports_corrections: ClassVar[bool] = True
    correction_bytes: ClassVar[int] = 4  # one int32: two float16

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        table: str,
        *,
        index: IndexMode = "auto",
        index_min_rows: int = 100_000,
        num_partitions: int | None = None,
        nprobes: int | None = None,
        payload_columns: PayloadColumns = "auto",
        optimize_every: int = 50,
        cleanup_older_than: timedelta | None = timedelta(seconds=60),
        read_consistency_interval: timedelta | None = timedelta(0),
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if index not in ("auto", "none", "ivf_flat"):
            raise ValueError(f"index must be 'auto', 'none' or 'ivf_flat', got {index!r}")
        for nm, v, lo in (
            ("index_min_rows", index_min_rows, 0),
            ("num_partitions", num_partitions, 1),
            ("nprobes", nprobes, 1),
            ("optimize_every", optimize_every, 1),
        ):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise ValueError(f"{nm} must be an int >= {lo}, got {v!r}")
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise ValueError(
                f"invalid LanceDB table name {table!r}: use letters, digits, '_', '-' and '.'"
            )
        self.db_path = os.fspath(db_path)
        self.table_name = table
        self.index: IndexMode = index
        self.index_min_rows = index_min_rows
        self.num_partitions = num_partitions
        self.nprobes = nprobes
        self.payload_columns = _check_payload_columns(payload_columns)
        self.optimize_every = optimize_every
        if cleanup_older_than is not None and (
            not isinstance(cleanup_older_than, timedelta) or cleanup_older_than < timedelta(0)
        ):
            raise ValueError(
                f"cleanup_older_than must be a timedelta >= 0 or None, got {cleanup_older_than!r}"
            )
        self.cleanup_older_than = cleanup_older_than
        self._connect_kw: dict[str, Any] = {"read_consistency_interval": read_consistency_interval}
        if storage_options:
            self._connect_kw["storage_options"] = dict(storage_options)
        self._db: Any = None
        self._tbl: Any = None
        self._writes = 0

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> LanceDBStore:
        """``lancedb://PATH/TABLE`` (``lancedb:///abs/path/table``, ``lancedb://s3://b/p/t``).

        Options may also be given as a query string (``?index=none&nprobes=32``); keyword
        ``options`` win over those.
        """
        if not isinstance(uri, str) or not uri.lower().startswith("lancedb://"):
            raise ValueError(f"LanceDBStore handles lancedb:// URIs, got {uri!r}")
        parsed_uri = parse_uri(uri, _URI_OPTIONS)
        rest = parsed_uri.location.rstrip("/")
        db_path, sep, table = rest.rpartition("/")
        if not sep or not table:
            raise ValueError(
                f"lancedb URI needs a database directory and a table name, e.g. "
                f"'lancedb://./data/docs' or 'lancedb:///abs/dir/docs', got {uri!r}"
            )
        parsed = {**parsed_uri.options, **options}
        return cls(db_path or "/", table, **parsed)

    @property
    def name(self) -> str:
        """The table as ``DB_PATH/TABLE``, for errors."""
        return f"{self.db_path}/{self.table_name}"

    @property
    def table(self) -> Any:
        """The underlying ``lancedb.table.Table`` (None before the collection exists)."""
        return self._open_table()

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    try:
                        self._db = lancedb.connect(self.db_path, **self._connect_kw)
                    except (OSError, ValueError) as e:
                        raise StoreError(f"cannot open LanceDB at {self.db_path!r}: {e}") from e
        return self._db

    def _open_table(self) -> Any:
        """Return the table handle, or None when the table does not exist."""
        tbl = self._tbl
        if tbl is not None:
            return tbl
        with self._lock:
            if self._tbl is None:
                db = self._connect()
                try:
                    self._tbl = db.open_table(self.table_name)
                except ValueError as e:
                    if "not found" in str(e) or "does not exist" in str(e):
                        return None
                    raise StoreError(f"cannot open LanceDB table {self.name!r}: {e}") from e
                except OSError as e:
                    raise StoreError(f"cannot open LanceDB table {self.name!r}: {e}") from e
            return self._tbl

    def _require_table(self) -> Any:
        self._require_open()
        tbl = self._open_table()
        if tbl is None:
            self.meta = None
            raise StoreError(f"LanceDB table {self.name!r} no longer exists (dropped?)")
        return tbl

    # -- metadata --------------------------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        """Return the stored metadata, or None if the table does not exist yet."""
        tbl = self._open_table()
        if tbl is None:
            return None
        schema = tbl.schema
        raw = (schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise StoreError(
                f"LanceDB table {self.name!r} exists but was not created by hashplug (its schema "
                "has no 'hashplug' metadata); use another table name"
            )
        meta = CollectionMeta.from_json(raw)
        want = pa.list_(pa.uint8(), meta.n_bytes)
        if "code" not in schema.names or schema.field("code").type != want:
            got = schema.field("code").type if "code" in schema.names else "missing"
            raise StoreError(
                f"LanceDB table {self.name!r} is inconsistent: column 'code' is {got}, "
                f"expected {want} for n_bits={meta.n_bits}"
            )
        return meta

    def _create(self, meta: CollectionMeta) -> None:
        fields = [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("code", pa.list_(pa.uint8(), meta.n_bytes), nullable=False),
            pa.field("payload", pa.string()),
            pa.field(CORR_COLUMN, pa.int32()),
        ]
        if isinstance(self.payload_columns, Mapping):
            fields += [pa.field(k, t) for k, t in self.payload_columns.items()]
        schema = pa.schema(fields, metadata={META_KEY: meta.to_json().encode()})
        if "://" not in self.db_path:
            try:
                Path(self.db_path).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(
                    f"LanceDB directory {self.db_path!r} cannot be created: {e}"
                ) from e
            if not os.access(self.db_path, os.W_OK):
                raise StoreError(f"LanceDB directory {self.db_path!r} is not writable")
        with self._lock:
            db = self._connect()
            try:
                tbl = db.create_table(self.table_name, schema=schema)
            except ValueError as e:
                if "already exists" in str(e):  # another process created it first: use theirs
                    self._tbl = None
                    other = self.read_meta()
                    if other is not None:
                        other.check_compatible(meta, where=f"collection {self.name!r}")
                        return
                raise ValueError(f"cannot create LanceDB table {self.name!r}: {e}") from e
            except OSError as e:
                raise StoreError(f"cannot create LanceDB table {self.name!r}: {e}") from e
            # A BTree on id makes lookups, deletes and merge_insert's join fast; kept up to date
            # by optimize(). A writer that created the table at the same time may build it too.
            try:
                tbl.create_index("id", config=BTree())
            except (ValueError, RuntimeError, OSError) as e:
                if not _concurrent_write(e):
                    raise
            self._tbl = tbl
            self._writes = 0

    # -- writing ---------------------------------------------------------------------------------
    def _check_engine_limits(
        self, ids: NDArray[np.int64], codes: NDArray[np.uint8], payloads: list[Payload | None]
    ) -> None:
        """Check that payload values fit their typed columns, across the whole input.

        The columns are those of the table and those this input would add: LanceDB refuses a batch
        that does not fit.
        """
        existing = _payload_fields(self._require_table().schema)
        _payload_column_values(payloads, existing, self.payload_columns)

    def upsert(
        self,
        ids: ArrayLike,
        codes: ArrayLike,
        payloads: Sequence[Payload | None] | None = None,
        *,
        corrections: ArrayLike | None = None,
    ) -> None:
        """Insert or replace rows (LanceDB ``merge_insert`` on ``id``); validated before writing.

        ``corrections`` (n, 2): the items' ``scoring="cosine"`` factors, kept as float16 (a row
        of NaN, or None: none). Writers in other processes may add payload columns or commit at
        the same time: on a commit conflict or a column that appeared meanwhile, the schema is
        read again and the write repeated (upserts by id are idempotent), up to
        :data:`WRITE_ATTEMPTS` times.
        """
        new_ids, new_codes, new_pl = self._check_upsert(ids, codes, payloads)
        corr = check_store_corrections(corrections, new_ids.size)
        with self._lock:
            for attempt in range(WRITE_ATTEMPTS):
                tbl = self._require_table()
                try:
                    self._write(tbl, new_ids, new_codes, new_pl, corr, fresh=attempt > 0)
                    break
                except (ValueError, RuntimeError, OSError) as e:
                    if attempt == WRITE_ATTEMPTS - 1 or not _concurrent_write(e):
                        raise
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
            if new_ids.size:
                self._after_write(tbl)

    def _write(
        self,
        tbl: Any,
        new_ids: NDArray[np.int64],
        new_codes: NDArray[np.uint8],
        new_pl: list[Payload | None],
        corr: NDArray[np.float16],
        fresh: bool = False,
    ) -> None:
        """Run one attempt of :meth:`upsert`: add the columns it needs, then merge.

        The payload columns it needs, and the factor column (to a table of an older version) when
        ``corr`` holds factors.

        ``fresh``: read the latest table version first (a retry after another writer's commit,
        whatever ``read_consistency_interval`` says).
        """
        if fresh and hasattr(tbl, "checkout_latest"):
            tbl.checkout_latest()
        schema = tbl.schema
        existing = _payload_fields(schema)
        columns, to_add = _payload_column_values(new_pl, existing, self.payload_columns)
        if new_ids.size == 0:
            return
        absent = np.isnan(corr).all(axis=1)
        if CORR_COLUMN not in schema.names and not absent.all():
            to_add = {**to_add, CORR_COLUMN: pa.int32()}
        if to_add:
            tbl.add_columns([pa.field(k, t) for k, t in to_add.items()])
            schema = tbl.schema
        n_bytes = new_codes.shape[1]
        data: dict[str, pa.Array] = {
            "id": pa.array(new_ids, pa.int64()),
            "code": pa.FixedSizeListArray.from_arrays(
                pa.array(new_codes.reshape(-1), pa.uint8()), n_bytes
            ),
            "payload": pa.array([None if p is None else _dumps(p) for p in new_pl], pa.string()),
            CORR_COLUMN: pa.array(pack_corrections(corr), pa.int32(), mask=absent),
        }
        for f in schema:
            if f.name not in data:
                vals = columns.get(f.name)
                data[f.name] = (
                    pa.nulls(new_ids.size, f.type) if vals is None else pa.array(vals, f.type)
                )
        batch = pa.Table.from_arrays([data[f.name] for f in schema], schema=schema)
        (
            tbl.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(batch)
        )

    def delete(self, ids: ArrayLike) -> None:
        """Delete rows by id; ids that are not stored are ignored."""
        q = np.unique(as_ids(ids))
        with self._lock:
            tbl = self._require_table()
            if q.size == 0:
                return
            for chunk in _chunks(q):
                tbl.delete(_in_sql(chunk))
            self._after_write(tbl)

    def _after_write(self, tbl: Any) -> None:
        """Index policy, run after every write.

        Builds the IVF_FLAT index once due (see ``index``), and runs :meth:`optimize` every
        ``optimize_every`` writes, or sooner when many rows are outside an index: 10% of the
        vector index (those rows are scanned by every search), half of the id index.
        """
        self._writes += 1
        try:
            self._maintain(tbl)
        except (ValueError, RuntimeError, OSError) as e:
            if not _concurrent_write(e):
                raise
            # another writer is building or compacting the same index: the rows are stored,
            # and the next write looks again

    def _maintain(self, tbl: Any) -> None:
        indices = list(tbl.list_indices())
        vec = _vector_index(indices)
        if vec is None and self.index != "none":
            due = self.index_min_rows if self.index == "auto" else 1
            if tbl.count_rows() >= due:
                self.create_index()
                return
        stale = self._writes >= self.optimize_every
        for ix in indices:
            share, floor = (10, 20_000) if ix is vec else (2, 50_000)
            stale |= ix.num_unindexed_rows >= max(floor, ix.num_indexed_rows // share)
        if stale:
            self.optimize()

    def optimize(self, cleanup_older_than: timedelta | None | str = "store") -> None:
        """Compact the table's files and add new rows to its indices (``Table.optimize``).

        Table versions older than ``cleanup_older_than`` are deleted (``"store"``: the store's
        setting; ``timedelta(0)``: every old version, frees the most disk but fails a reader
        still on an older version; ``None``: LanceDB's default, 7 days).
        """
        keep = self.cleanup_older_than if isinstance(cleanup_older_than, str) else cleanup_older_than
        with self._lock:
            tbl = self._require_table()
            with warnings.catch_warnings():  # LanceDB warns at 0: what was asked for
                warnings.simplefilter("ignore")
                tbl.optimize(cleanup_older_than=keep)
            self._writes = 0

    def create_index(self, num_partitions: int | None = None, *, replace: bool = True) -> None:
        """Build (or rebuild) the IVF_FLAT index on ``code`` with the Hamming metric.

        Queries always use ``distance_type("hamming")``, the metric of this index, so LanceDB
        uses it (a query with another metric would silently scan instead).
        """
        with self._lock:
            tbl = self._require_table()
            parts = num_partitions if num_partitions is not None else self.num_partitions
            tbl.create_index(
                "code",
                config=IvfFlat(distance_type="hamming", num_partitions=parts),
                replace=replace,
            )
            id_index = [ix for ix in tbl.list_indices() if "id" in ix.columns]
            if not id_index:
                tbl.create_index("id", config=BTree())
            elif id_index[0].num_unindexed_rows:
                tbl.optimize()  # bring the id index up to date as well
            self._writes = 0

    def finish_writes(self) -> None:
        """Index, compact and clean up after bulk or parallel writes, once every writer is done.

        Build the index if it is due (see ``index``), compact, bring the indices up to date and
        delete every old table version (its disk space; a reader still on one fails, so call it when
        the writers have stopped).
        """
        due = self.index != "none" and self.index_info() is None
        if due and self.count() >= self.index_min_rows:
            self.create_index()
        self.optimize(cleanup_older_than=timedelta(0))

    def index_info(self) -> dict[str, Any] | None:
        """Return the vector index on ``code`` (type, metric, indexed/unindexed rows) or None."""
        tbl = self._require_table()
        vec = _vector_index(tbl.list_indices())
        if vec is None:
            return None
        stats = tbl.index_stats(vec.name)
        return {
            "name": vec.name,
            "index_type": stats.index_type,
            "distance_type": stats.distance_type,
            "num_indexed_rows": stats.num_indexed_rows,
            "num_unindexed_rows": stats.num_unindexed_rows,
        }

    # -- reading ---------------------------------------------------------------------------------
    def count(self) -> int:
        """Return the number of stored items (0 when the table does not exist)."""
        tbl = self._open_table()
        return 0 if tbl is None else int(tbl.count_rows())

    def iter_ids(self, batch_size: int = 50_000) -> Iterator[NDArray[np.int64]]:
        """Yield every stored id once, in int64 batches of at most ``batch_size``."""
        self._require_open()
        tbl = self._open_table()
        if tbl is None:
            return
        for batch in tbl.search().select(["id"]).limit(None).to_batches(max(1, int(batch_size))):
            if batch.num_rows:
                yield batch.column("id").to_numpy().astype(np.int64)

    def lookup_codes(self, ids: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        """Return the codes of ``ids`` in order and a mask of which ids exist."""
        meta = self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        got = self._fetch(q, ["id", "code"])
        out = np.zeros((q.size, meta.n_bytes), np.uint8)
        rows, found = _match(got["id"].to_numpy(), q)
        if found.any():
            codes = _codes_np(got["code"], meta.n_bytes)
            out[found] = codes[rows[found]]
        return out, found

    def lookup_corrections(self, ids: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """Return the factors of ``ids`` (NaN and not found for rows written without them)."""
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.full((q.size, 2), np.nan, np.float32)
        if CORR_COLUMN not in self._require_table().schema.names:  # a table of an older version
            return out, np.zeros(q.size, bool)
        got = self._fetch(q, ["id", CORR_COLUMN])
        rows, found = _match(got["id"].to_numpy(), q)
        if found.any():
            out[found] = _corr_np(got[CORR_COLUMN])[rows[found]]
        return out, found & ~np.isnan(out).any(axis=1)

    def get_payloads(self, ids: ArrayLike) -> list[Payload | None]:
        """Return the payloads of ``ids`` in order (None where absent)."""
        self._require_open()
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        got = self._fetch(q, ["id", "payload"])
        rows, found = _match(got["id"].to_numpy(), q)
        texts = got["payload"].to_pylist()
        return [
            json.loads(texts[r]) if f and texts[r] is not None else None
            for r, f in zip(rows.tolist(), found.tolist(), strict=True)
        ]

    def _fetch(self, ids: NDArray[np.int64], columns: list[str]) -> pa.Table:
        tbl = self._require_table()
        uniq = np.unique(ids[ids >= 0])
        parts = [
            tbl.search().where(_in_sql(chunk)).select(columns).limit(None).to_arrow()
            for chunk in _chunks(uniq)
        ]
        if not parts:
            return pa.Table.from_pylist([], schema=tbl.schema).select(columns)
        return pa.concat_tables(parts)

    def _hits(
        self, query_codes: ArrayLike, limit: int, flt: Filter | None, with_codes: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None]:
        ids, dist, codes, _ = self._query(query_codes, limit, flt, with_codes, False)
        return ids, dist, codes

    def search_with_corrections(
        self, query_codes: ArrayLike, limit: int, filter: Filter | None = None
    ) -> tuple[CodeHits, NDArray[np.float32]]:
        """Return the hits, their codes and their factors from one LanceDB query per 256 vectors."""
        if isinstance(normalize_filter(filter), MatchNothing):
            hits = self._padding(self._check_query(query_codes, limit).shape[0], limit)
            return hits, np.full(hits.ids.shape + (2,), np.nan, np.float32)
        flt = None if isinstance(filter, Mapping) and not filter else filter
        ids, dist, codes, corr = self._query(query_codes, limit, flt, True, True)
        assert codes is not None and corr is not None
        return CodeHits(ids, dist, codes), corr

    def _query(
        self, query_codes: ArrayLike, limit: int, flt: Filter | None, with_codes: bool,
        with_corr: bool,
    ) -> tuple[
        NDArray[np.int64], NDArray[np.int32], NDArray[np.uint8] | None, NDArray[np.float32] | None
    ]:  # fmt: skip
        """Return the Hamming top-``limit`` per query, one LanceDB query per 256 vectors.

        The codes and factors, when asked for, come from the same query. Filters as in the class
        doc.
        """
        q = self._check_query(query_codes, limit)
        meta = self._require_open()
        limit = int(limit)
        n_q = q.shape[0]
        tbl = self._require_table()
        where = self._where(flt, tbl)
        with_codes = with_codes or with_corr
        cols = ["id", "code", "_distance"] if with_codes else ["id", "_distance"]
        corr_col = with_corr and CORR_COLUMN in tbl.schema.names  # tables of older versions
        if corr_col:
            cols.append(CORR_COLUMN)
        raw_i = np.full((n_q, limit), -1, np.int64)
        raw_d = np.full((n_q, limit), HAMMING_PAD, np.int32)
        hit_ids: list[NDArray[np.int64]] = []
        hit_codes: list[NDArray[np.uint8]] = []
        hit_corr: list[NDArray[np.float32]] = []
        for start in range(0, n_q, _QUERY_BATCH):
            block = q[start : start + _QUERY_BATCH]
            builder = self._builder(tbl, block, limit, cols, where)
            try:
                res = builder.to_arrow()
            except ValueError as e:
                raise ValueError(f"LanceDB rejected the search (where={where!r}): {e}") from e
            if res.num_rows == 0:
                continue
            qi = (
                res["query_index"].to_numpy().astype(np.int64)
                if "query_index" in res.column_names
                else np.zeros(res.num_rows, np.int64)
            )
            r_ids = res["id"].to_numpy()
            r_d = np.rint(res["_distance"].to_numpy()).astype(np.int32)
            order = np.argsort(qi, kind="stable")
            qi, r_ids, r_d = qi[order], r_ids[order], r_d[order]
            first = np.searchsorted(qi, qi, side="left")
            pos = np.arange(qi.size) - first
            keep = pos < limit
            raw_i[start + qi[keep], pos[keep]] = r_ids[keep]
            raw_d[start + qi[keep], pos[keep]] = r_d[keep]
            if with_codes:
                hit_ids.append(r_ids)
                hit_codes.append(_codes_np(res["code"], meta.n_bytes)[order])
            if corr_col:
                hit_corr.append(_corr_np(res[CORR_COLUMN])[order])
        out_i, out_d = sort_hits(raw_i, raw_d, limit)
        if not with_codes:
            return out_i, out_d, None, None
        out_c = np.zeros((n_q, limit, meta.n_bytes), np.uint8)
        out_f = np.full((n_q, limit, 2), np.nan, np.float32) if with_corr else None
        if hit_ids:
            all_ids = np.concatenate(hit_ids)
            uniq, first_at = np.unique(all_ids, return_index=True)
            valid = out_i >= 0
            at = np.searchsorted(uniq, out_i[valid])
            out_c[valid] = np.concatenate(hit_codes)[first_at][at]
            if out_f is not None and hit_corr:
                out_f[valid] = np.concatenate(hit_corr)[first_at][at]
        return out_i, out_d, out_c, out_f

    def _builder(
        self, tbl: Any, block: NDArray[np.uint8], limit: int, cols: list[str], where: str | None
    ) -> Any:
        """Build the LanceDB query: Hamming metric (the index's), ``limit``, prefilter, nprobes."""
        builder = (
            tbl.search(block if block.shape[0] > 1 else block[0], vector_column_name="code")
            .distance_type("hamming")
            .limit(limit)
            .select(cols)
        )
        if self.nprobes is not None:
            builder = builder.nprobes(self.nprobes)
        if where:
            builder = builder.where(where, prefilter=True)
        return builder

    def explain_plan(
        self, query_code: ArrayLike, limit: int = 10, filter: Filter | None = None
    ) -> str:
        """LanceDB's physical plan for :meth:`search` of one query (shows whether the index is used)."""
        q = self._check_query(query_code, limit)
        tbl = self._require_table()
        where = self._where(filter, tbl)
        return str(self._builder(tbl, q[:1], int(limit), ["id", "_distance"], where).explain_plan())

    def _where(self, flt: Filter | None, tbl: Any) -> str | None:
        if flt is None:
            return None
        if isinstance(flt, str):
            return flt.strip() or None
        if isinstance(flt, Mapping):
            return _dict_to_sql(flt, tbl.schema, self.payload_columns, self.name)
        raise ValueError(
            "LanceDBStore filters are a dict {field: value} or a SQL where string, "
            f"got {type(flt).__name__}"
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def drop(self) -> None:
        """Delete the table (its data, indices and metadata)."""
        with self._lock:
            db = self._connect()
            try:
                db.drop_table(self.table_name)
            except ValueError as e:
                if "not found" not in str(e) and "does not exist" not in str(e):
                    raise StoreError(f"cannot drop LanceDB table {self.name!r}: {e}") from e
            except FileNotFoundError:
                pass
            self._tbl = None
            self.meta = None
            self._writes = 0

    def close(self) -> None:
        """Forget the connection; the table stays stored and the store can be used again."""
        with self._lock:
            self._tbl = None
            self._db = None
