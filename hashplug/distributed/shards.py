"""Shards of a dataset too large for one machine: discovery, validation, chunks, duplicate ids.

A dataset is a directory of Parquet files (a vector column and an int id column, or a column of
raw items for an encoder) or of ``.npy`` files (2-D arrays without ids: consecutive ids from
``id_start`` across the files in file-name order). Only metadata is read here (Parquet footers,
``.npy`` headers), plus the id columns of shards whose id ranges overlap. The directory may be a
URI (``s3://bucket/prefix``, ``file:///dir`` ...): see :mod:`hashplug.distributed.files`.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from .._npfiles import read_npy_header
from . import files

__all__ = ["Shard", "Chunk", "Dataset", "scan_shards", "read_chunk"]

Kind = Literal["parquet", "npy"]
_FLOATS = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Shard:
    """One file of the dataset (metadata only)."""

    index: int  # position in file-name order
    path: str
    kind: Kind
    rows: int
    dim: int | None  # None for raw items
    dtype: str  # vector element type, or the item column's Arrow type
    size: int  # bytes on disk
    mtime_ns: int
    id_start: int | None = None  # .npy: first id; Parquet: None (ids are a column)
    row_groups: tuple[int, ...] = ()  # Parquet: rows per row group

    @property
    def name(self) -> str:
        """The file name of the shard."""
        return _basename(self.path)

    @property
    def signature(self) -> dict[str, Any]:
        """What a done-marker must match for the shard to count as unchanged."""
        return {"path": self.path, "rows": self.rows, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of one shard: the unit of work a worker reads, hashes and writes."""

    shard: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        """The number of rows in the shard."""
        return self.stop - self.start


@dataclass
class Dataset:
    """The shards of a directory, their columns, and the rows to skip so that the last write wins."""

    directory: str
    kind: Kind
    shards: list[Shard]
    vector_column: str | None
    id_column: str | None
    item_column: str | None = None
    #: shard index -> sorted row positions superseded by a later row with the same id
    skip_rows: dict[int, NDArray[np.int64]] = field(default_factory=dict)
    duplicate_ids: int = 0  # ids that occur more than once in the dataset
    duplicate_examples: list[int] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """The number of rows in all shards."""
        return sum(s.rows for s in self.shards)

    @property
    def dim(self) -> int | None:
        """The vector dimension of the first shard (None for raw items)."""
        return self.shards[0].dim

    @property
    def key(self) -> str:
        """Identifies the dataset and its id rule (for the resume state)."""
        h = hashlib.sha256()
        h.update(
            repr((self.directory, self.vector_column, self.id_column, self.item_column)).encode()
        )
        if self.kind == "npy":
            h.update(str(self.shards[0].id_start).encode())
        return h.hexdigest()[:12]

    def chunks(self, rows_per_chunk: int, shards: list[int] | None = None) -> list[Chunk]:
        """Work units of at most ``rows_per_chunk`` rows (whole Parquet row groups when larger)."""
        if rows_per_chunk <= 0:
            raise ValueError(f"rows_per_chunk must be positive, got {rows_per_chunk}")
        out: list[Chunk] = []
        wanted = None if shards is None else set(shards)
        for s in self.shards:
            if wanted is not None and s.index not in wanted:
                continue
            if s.kind == "parquet":  # chunk borders on row groups: a worker reads whole groups
                start, acc = 0, 0
                for n in s.row_groups:
                    if acc and acc + n > rows_per_chunk:
                        out.append(Chunk(s.index, start, start + acc))
                        start, acc = start + acc, 0
                    acc += n
                if acc:
                    out.append(Chunk(s.index, start, start + acc))
            else:
                out.extend(
                    Chunk(s.index, a, min(a + rows_per_chunk, s.rows))
                    for a in range(0, s.rows, rows_per_chunk)
                )
        return out


def _basename(path: str) -> str:
    """Return the file name of a local path or of a URI (without its query string)."""
    return (urlsplit(path).path if files.is_uri(path) else path).rstrip("/").rsplit("/", 1)[-1]


def _stat(path: str) -> tuple[int, int]:
    if files.is_uri(path):
        return files.stat(path)
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@contextmanager
def _opened(path: str) -> Any:
    """Open a URI as a file object; return a local path as it is.

    pyarrow and numpy open local paths themselves.
    """
    if not files.is_uri(path):
        yield path
        return
    f = files.open_file(path)
    try:
        yield f
    finally:
        f.close()


def _list_files(directory: str) -> tuple[Kind, list[str]]:
    if files.is_uri(directory):
        found = files.list_dir(directory)
    else:
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"embeddings directory {directory} does not exist")
        found = [str(p) for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")]
    parquet = [p for p in found if _basename(p).endswith(".parquet")]
    npy = [p for p in found if _basename(p).endswith(".npy")]
    if parquet and npy:
        raise ValueError(
            f"{directory} holds both .parquet and .npy shards; put one kind per directory"
        )
    if not parquet and not npy:
        raise ValueError(f"{directory} holds no .parquet or .npy shards")
    return ("parquet", parquet) if parquet else ("npy", npy)


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, fortran order, dtype, data offset) from an open .npy file."""
    shape, fortran, dtype = read_npy_header(f)
    return shape, fortran, dtype, f.tell()


def _npy_shard(i: int, p: str, id_start: int) -> Shard:
    name = _basename(p)
    try:
        if files.is_uri(p):
            with _opened(p) as f:
                shape, fortran, dtype, _ = _npy_header(f)
            if fortran:
                raise ValueError("Fortran-ordered arrays are not read from remote storage")
        else:
            a = np.load(p, mmap_mode="r")
            shape, dtype = a.shape, a.dtype
    except Exception as e:  # numpy raises several types for bad headers
        raise ValueError(f"shard {name} is not a readable .npy file: {e}") from e
    if len(shape) != 2:
        raise ValueError(f"shard {name} must hold a 2-D (n, d) array, got shape {shape}")
    if dtype.name not in _FLOATS:
        raise ValueError(f"shard {name} has dtype {dtype}; use float16/float32/float64")
    size, mtime = _stat(p)
    return Shard(
        i, p, "npy", int(shape[0]), int(shape[1]), dtype.name, size, mtime, id_start=id_start,
    )  # fmt: skip


def _vector_type(field: Any, name: str, column: str) -> tuple[int | None, str]:
    import pyarrow as pa

    t = field.type
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = str(t.value_type)
        inner = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(inner, inner)
        if inner not in _FLOATS:
            raise ValueError(f"shard {name}: column {column!r} holds {t}, not float vectors")
        return (t.list_size if pa.types.is_fixed_size_list(t) else None), inner
    raise ValueError(
        f"shard {name}: column {column!r} has type {t}, not a list of floats "
        "(write vectors as fixed_size_list<float32>)"
    )


def _parquet_shard(
    i: int, p: str, vector_column: str | None, id_column: str, item_column: str | None
) -> tuple[Shard, tuple[int, int] | None]:
    with _opened(p) as src:
        return _parquet_shard_from(i, p, src, vector_column, id_column, item_column)


def _parquet_shard_from(
    i: int, p: str, src: Any, vector_column: str | None, id_column: str, item_column: str | None
) -> tuple[Shard, tuple[int, int] | None]:
    import pyarrow.parquet as pq

    name = _basename(p)
    try:
        pf = pq.ParquetFile(src)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise ValueError(f"shard {name} is not a readable Parquet file: {e}") from e
    schema = pf.schema_arrow
    cols = schema.names
    if id_column not in cols:
        raise ValueError(
            f"shard {name} has no id column {id_column!r} (columns: {', '.join(cols)}); "
            "name it with id_column= / --id-column"
        )
    import pyarrow as pa

    if not pa.types.is_integer(schema.field(id_column).type):
        raise ValueError(
            f"shard {name}: id column {id_column!r} has type {schema.field(id_column).type}, "
            "not an integer type"
        )
    data_col = item_column or vector_column
    assert data_col is not None
    if data_col not in cols:
        what = "item" if item_column else "vector"
        raise ValueError(
            f"shard {name} has no {what} column {data_col!r} (columns: {', '.join(cols)}); "
            f"name it with {what}_column= / --{what}-column"
        )
    md = pf.metadata
    if item_column:
        dim, dtype = None, str(schema.field(item_column).type)
    else:
        dim, dtype = _vector_type(schema.field(data_col), name, data_col)
        if dim is None and md.num_rows:  # variable-size lists: look at the first row
            first = pf.read_row_group(0, columns=[data_col]).column(0)[0].as_py()
            dim = len(first) if first is not None else None
    groups = tuple(md.row_group(g).num_rows for g in range(md.num_row_groups))
    size, mtime = _stat(p)
    shard = Shard(
        i, p, "parquet", int(md.num_rows), dim, dtype, size, mtime, row_groups=groups,
    )  # fmt: skip
    return shard, _id_range(pf, cols.index(id_column))


def _id_range(pf: Any, col: int) -> tuple[int, int] | None:
    """(min, max) of the id column from the row-group statistics, or None when not recorded."""
    lo: Any = None
    hi: Any = None
    md = pf.metadata
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return (int(lo), int(hi)) if lo is not None and hi is not None else None


def scan_shards(
    directory: str | os.PathLike[str],
    *,
    vector_column: str = "vector",
    id_column: str = "id",
    item_column: str | None = None,
    id_start: int = 0,
) -> Dataset:
    """Find and check the shards of ``directory``; plan the skips that make the last write win.

    Raises ValueError naming the shard for: mixed kinds, unreadable files, a missing id / vector
    column, shards whose dimensions or dtypes differ. Duplicate ids are not an error: the row
    written last (in file-name order, then row order) wins, and :attr:`Dataset.duplicate_ids`
    counts them.
    """
    d = (
        str(directory).rstrip("/")
        if files.is_uri(str(directory))
        else str(Path(directory).resolve())
    )
    kind, found = _list_files(d)
    ranges: list[tuple[int, int] | None] = []
    shards: list[Shard] = []
    if kind == "npy":
        if item_column:
            raise ValueError(".npy shards hold vectors; raw items need Parquet shards")
        if id_start < 0:
            raise ValueError(f"id_start must be >= 0, got {id_start}")
        nxt = id_start
        for i, p in enumerate(found):
            s = _npy_shard(i, p, nxt)
            shards.append(s)
            nxt += s.rows
    else:
        for i, p in enumerate(found):
            s, r = _parquet_shard(i, p, vector_column, id_column, item_column)
            shards.append(s)
            ranges.append(r)
    first = shards[0]
    for s in shards[1:]:
        if s.dtype != first.dtype or s.dim != first.dim:
            what = "dtype" if s.dtype != first.dtype else "dimension"
            raise ValueError(
                f"shards differ in {what}: {first.name} has {first.dim}-d {first.dtype}, "
                f"{s.name} has {s.dim}-d {s.dtype}"
            )
    ds = Dataset(
        d, kind, shards,
        vector_column=None if kind == "npy" or item_column else vector_column,
        id_column=id_column if kind == "parquet" else None,
        item_column=item_column,
    )  # fmt: skip
    if kind == "parquet":
        _plan_duplicates(ds, ranges)
    return ds


def _suspects(shards: list[Shard], ranges: list[tuple[int, int] | None]) -> list[int]:
    """Shards that may share ids: overlapping id ranges, a range too small for the rows, no stats."""
    out: set[int] = set()
    spans = sorted(
        (r[0], r[1], s.index) for s, r in zip(shards, ranges, strict=True) if r is not None
    )
    hi_so_far, hi_owner = None, -1
    for lo, hi, i in spans:
        if hi_so_far is not None and lo <= hi_so_far:
            out.update((i, hi_owner))
        if hi_so_far is None or hi > hi_so_far:
            hi_so_far, hi_owner = hi, i
    for s, r in zip(shards, ranges, strict=True):
        if r is None or r[1] - r[0] + 1 < s.rows:
            out.add(s.index)
    # a shard overlapping several others: include every shard whose range meets a suspect's
    for s, r in zip(shards, ranges, strict=True):
        if r is None or s.index in out:
            continue
        for j in list(out):
            rj = ranges[j]
            if rj is None or (r[0] <= rj[1] and rj[0] <= r[1]):
                out.add(s.index)
                break
    return sorted(out)


def _plan_duplicates(ds: Dataset, ranges: list[tuple[int, int] | None]) -> None:
    import pyarrow.parquet as pq

    sus = _suspects(ds.shards, ranges)
    if not sus:
        return
    id_parts, shard_of, row_of = [], [], []
    for i in sus:
        with _opened(ds.shards[i].path) as src:
            col = pq.read_table(src, columns=[ds.id_column]).column(0)
        if col.null_count:
            raise ValueError(f"shard {ds.shards[i].name}: id column has {col.null_count} nulls")
        a = col.to_numpy().astype(np.int64)
        id_parts.append(a)
        shard_of.append(np.full(a.size, i, np.int64))
        row_of.append(np.arange(a.size, dtype=np.int64))
    ids = np.concatenate(id_parts)
    sh, rows = np.concatenate(shard_of), np.concatenate(row_of)
    # stable sort by id keeps (shard, row) order within an id: the last occurrence wins
    order = np.lexsort((rows, sh, ids))
    ids_s = ids[order]
    loser = np.zeros(ids_s.size, bool)
    loser[:-1] = ids_s[:-1] == ids_s[1:]
    if not loser.any():
        return
    dup_ids = np.unique(ids_s[loser])
    ds.duplicate_ids = int(dup_ids.size)
    ds.duplicate_examples = dup_ids[:10].tolist()
    lost = order[loser]
    for i in np.unique(sh[lost]).tolist():
        ds.skip_rows[int(i)] = np.sort(rows[lost][sh[lost] == i])


def read_chunk(
    ds: Dataset, chunk: Chunk, *, apply_skip: bool = True
) -> tuple[NDArray[np.int64], Any]:
    """Read one chunk: ids and vectors (float, (n, d)) or raw items (list).

    Rows superseded by a later row with the same id are dropped unless ``apply_skip`` is False.
    """
    s = ds.shards[chunk.shard]
    if s.kind == "npy":
        x: Any = _read_npy_rows(s, chunk)
        assert s.id_start is not None
        ids = np.arange(s.id_start + chunk.start, s.id_start + chunk.stop, dtype=np.int64)
    else:
        x, ids = _read_parquet_rows(ds, s, chunk)
    skip = ds.skip_rows.get(chunk.shard) if apply_skip else None
    if skip is not None and skip.size:
        lo, hi = np.searchsorted(skip, [chunk.start, chunk.stop])
        if hi > lo:
            keep = np.ones(chunk.rows, bool)
            keep[skip[lo:hi] - chunk.start] = False
            ids = ids[keep]
            x = (
                x[keep]
                if isinstance(x, np.ndarray)
                else [v for v, k in zip(x, keep, strict=True) if k]
            )
    return ids, x


def _read_npy_rows(s: Shard, chunk: Chunk) -> NDArray[Any]:
    """Rows of a .npy shard: memory-mapped locally, one byte-range read from a URI."""
    if not files.is_uri(s.path):
        a = np.load(s.path, mmap_mode="r")
        if a.shape != (s.rows, s.dim):
            raise ValueError(f"shard {s.name} changed while the job ran (now shape {a.shape})")
        return np.asarray(a[chunk.start : chunk.stop])
    with _opened(s.path) as f:
        shape, _, dtype, offset = _npy_header(f)
        if shape != (s.rows, s.dim):
            raise ValueError(f"shard {s.name} changed while the job ran (now shape {shape})")
        row = int(s.dim or 0) * dtype.itemsize
        f.seek(offset + chunk.start * row)
        buf = f.read(chunk.rows * row)
    if len(buf) != chunk.rows * row:
        raise ValueError(f"shard {s.name} is shorter than its header says (truncated?)")
    return np.frombuffer(buf, dtype=dtype).reshape(chunk.rows, int(s.dim or 0))


def _read_parquet_rows(ds: Dataset, s: Shard, chunk: Chunk) -> tuple[Any, NDArray[np.int64]]:
    import pyarrow.parquet as pq

    starts = np.concatenate([[0], np.cumsum(s.row_groups)])
    groups = [g for g in range(len(s.row_groups)) if chunk.start <= starts[g] < chunk.stop]
    data_col = ds.item_column or ds.vector_column
    assert data_col is not None and ds.id_column is not None
    with _opened(s.path) as src:
        t = pq.ParquetFile(src).read_row_groups(groups, columns=[ds.id_column, data_col])
    if t.num_rows != chunk.rows:
        raise ValueError(f"shard {s.name} changed while the job ran (row groups differ)")
    idc = t.column(ds.id_column)
    if idc.null_count:
        raise ValueError(f"shard {s.name}: id column {ds.id_column!r} has nulls")
    ids = idc.to_numpy().astype(np.int64)
    col = t.column(data_col).combine_chunks()
    if ds.item_column:
        return col.to_pylist(), ids
    if col.null_count:
        bad = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(
            f"shard {s.name}: {bad.size} rows have no vector (first rows {(bad[:5] + chunk.start).tolist()})"
        )
    flat = col.flatten().to_numpy()
    if flat.size != chunk.rows * (s.dim or 0):
        raise ValueError(f"shard {s.name}: vectors of column {data_col!r} differ in length")
    return flat.reshape(chunk.rows, s.dim), ids
