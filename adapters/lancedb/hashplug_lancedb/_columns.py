"""Payload columns, SQL for filters and id lists, and codes read back from Arrow.

Which payload fields get typed LanceDB columns, and their values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from hashplug.stores.base import MatchNothing, Payload, normalize_filter

#: Payload keys that never become columns (they stay in the JSON ``payload`` column only).
RESERVED_COLUMNS = frozenset({"id", "code", "payload", "query_index"})
#: The ``scoring="cosine"`` factors: int32, both float16 halves (``pack_corrections``), null
#: where an item has none. Not an identifier a payload column can take (leading underscore).
CORR_COLUMN = "_hashplug_corr"

PayloadColumns = Literal["auto", "none"] | Mapping[str, "str | pa.DataType"]

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
}
_PY_TYPES: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CHUNK = 8192  # ids per ``id IN (...)`` statement


def _check_payload_columns(spec: Any) -> PayloadColumns:
    if isinstance(spec, str):
        if spec not in ("auto", "none"):
            raise ValueError(f"payload_columns must be 'auto', 'none' or a mapping, got {spec!r}")
        return spec  # type: ignore[return-value]
    if not isinstance(spec, Mapping):
        raise ValueError(f"payload_columns must be 'auto', 'none' or a mapping, got {spec!r}")
    out: dict[str, pa.DataType] = {}
    for k, t in spec.items():
        if not isinstance(k, str) or not _IDENT.match(k) or k in RESERVED_COLUMNS:
            raise ValueError(f"payload column name {k!r} is reserved or not an identifier")
        typ = _TYPES.get(t) if isinstance(t, str) else t
        if typ not in _TYPES.values():
            raise ValueError(
                f"payload column {k!r}: type must be one of {sorted(_TYPES)}, got {t!r}"
            )
        out[k] = typ
    return out


def _payload_fields(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in schema if f.name not in ("id", "code", "payload", CORR_COLUMN)}


def _fits(v: Any, typ: pa.DataType) -> bool:
    if v is None:
        return True
    if typ == pa.bool_():
        return isinstance(v, bool)
    if typ == pa.int64():
        return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v <= _INT64_MAX
    if typ == pa.float64():
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if typ == pa.string():
        return isinstance(v, str)
    return False


def _payload_column_values(
    payloads: list[Payload | None],
    existing: dict[str, pa.DataType],
    mode: PayloadColumns,
) -> tuple[dict[str, list[Any]], dict[str, pa.DataType]]:
    """Per-column values for a batch (only columns that get a value), and the new columns to add.

    Raises ValueError on type clashes. Nothing is written here, so a refused batch leaves the
    table as it was.
    """
    declared = mode if isinstance(mode, Mapping) else {}
    present = [(i, p) for i, p in enumerate(payloads) if p]
    seen: dict[str, set[type]] = {}
    for _, p in present:
        for k, v in p.items():
            if isinstance(k, str) and v is not None:
                seen.setdefault(k, set()).add(type(v))
    to_add: dict[str, pa.DataType] = {}
    for k, types in seen.items():
        if k in existing:
            continue
        if k in declared:
            to_add[k] = declared[k]
        elif mode == "auto" and _IDENT.match(k) and k not in RESERVED_COLUMNS:
            scalar = types & _PY_TYPES.keys()
            if not scalar:
                continue  # lists / dicts only: a JSON-only field
            if scalar != types or (len(scalar) > 1 and not scalar <= {int, float}):
                raise ValueError(
                    f"payload field {k!r} mixes value types {sorted(t.__name__ for t in types)} "
                    "in one batch; it would become a typed column. Give it one type, declare "
                    "it with payload_columns={...}, or use payload_columns='none'"
                )
            to_add[k] = pa.float64() if float in scalar else _PY_TYPES[next(iter(scalar))]
    columns = {**existing, **to_add}
    values: dict[str, list[Any]] = {}
    for i, p in present:
        for k, v in p.items():
            typ = columns.get(k) if isinstance(k, str) else None
            if typ is None or v is None:
                continue
            if not _fits(v, typ):
                raise ValueError(
                    f"payload {i}: field {k!r} is {type(v).__name__} {v!r:.40}, but the table's "
                    f"column {k!r} is {typ}; nothing was written"
                )
            if k not in values:
                values[k] = [None] * len(payloads)
            values[k][i] = v
    return values, to_add


def _dumps(p: Payload) -> str:
    return json.dumps(p, ensure_ascii=False, separators=(",", ":"))


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            raise ValueError(f"cannot filter on a non-finite float {v!r}")
        return repr(float(v))
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise ValueError(
        f"dict filters compare str, int, float or bool values, got {type(v).__name__}; "
        "use a SQL where string for anything else"
    )


def _filter_literal(v: Any, typ: pa.DataType) -> str | None:
    """Return ``v`` as a SQL literal for a column of type ``typ``, or None.

    None when no value of that column can equal it (DESIGN.md: types kept, True is not 1, 1 is not
    "1"; 1 equals 1.0).
    """
    if typ == pa.bool_():
        return _sql_literal(v) if isinstance(v, bool) else None
    if typ == pa.string():
        return _sql_literal(v) if isinstance(v, str) else None
    if isinstance(v, bool) or isinstance(v, str):
        return None
    if typ == pa.int64():
        if isinstance(v, float):
            if not v.is_integer() or not _INT64_MIN <= v <= _INT64_MAX:
                return None
            v = int(v)
        return _sql_literal(v)
    return _sql_literal(float(v))  # float64 column: ints compare as numbers


def _dict_to_sql(
    flt: Mapping[str, Any], schema: pa.Schema, mode: PayloadColumns, name: str
) -> str | None:
    """DESIGN.md's dict filter as SQL over the typed payload columns."""
    norm = normalize_filter(flt)
    if norm is None:
        return None
    if isinstance(norm, MatchNothing):
        return "FALSE"
    fields = _payload_fields(schema)
    terms: list[str] = []
    for k, values in norm.items():
        typ = fields.get(k)
        if typ is None:
            if mode == "auto" and _IDENT.match(k) and k not in RESERVED_COLUMNS:
                # A field never stored with a scalar value: missing (or null) in every row.
                if values is not None:
                    return "FALSE"
                continue
            raise ValueError(
                f"payload field {k!r} is not a column of LanceDB table {name!r}, so a dict "
                f"filter cannot test it (columns: {sorted(fields)}); filter with a SQL where string"
            )
        col = f"`{k}`"
        if values is None:
            terms.append(f"{col} IS NULL")
            continue
        lits = [lit for v in values if (lit := _filter_literal(v, typ)) is not None]
        if not lits:
            return "FALSE"
        terms.append(f"{col} = {lits[0]}" if len(lits) == 1 else f"{col} IN ({', '.join(lits)})")
    return " AND ".join(terms) or None


def _vector_index(indices: Any) -> Any:
    for ix in indices:
        if "code" in ix.columns:
            return ix
    return None


def _chunks(a: NDArray[np.int64]) -> Iterator[NDArray[np.int64]]:
    for s in range(0, a.size, _CHUNK):
        yield a[s : s + _CHUNK]


def _in_sql(ids: NDArray[np.int64]) -> str:
    return f"id IN ({','.join(map(str, ids.tolist()))})"


def _match(
    stored: NDArray[np.int64], wanted: NDArray[np.int64]
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Row of each wanted id in ``stored`` and whether it is there."""
    if stored.size == 0:
        return np.zeros(wanted.size, np.intp), np.zeros(wanted.size, bool)
    order = np.argsort(stored, kind="stable")
    pos = np.minimum(np.searchsorted(stored[order], wanted), stored.size - 1)
    rows = order[pos]
    return rows, stored[rows] == wanted


def _codes_np(col: pa.ChunkedArray | pa.Array, n_bytes: int) -> NDArray[np.uint8]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.uint8).reshape(-1, n_bytes)
