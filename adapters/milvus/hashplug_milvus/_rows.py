"""How hashplug rows map onto Milvus fields.

Codes as a BINARY_VECTOR plus optional int64 words, payloads as a VARCHAR and dynamic fields, the
raw upsert request, and codes read back from hits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pymilvus import DataType

from hashplug.stores.base import CollectionMeta, StoreError

from ._filters import PCT_FIELD, SET_FIELD, has_control, pct_encode

_WORD = re.compile(r"^code_w(\d+)$")
#: INT32 field of the ``scoring="cosine"`` factors: both float16 halves in one int32
#: (``hashplug.stores.base.pack_corrections``), NaN where an item has none.
CORR_FIELD = "code_corr"


def _n_words(n_bytes: int) -> int:
    return (n_bytes + 7) // 8


def codes_to_words(codes: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Packed codes ``(n, n_bytes)`` -> little-endian int64 words ``(n, ceil(n_bytes / 8))``."""
    n, nb = codes.shape
    w = _n_words(nb)
    buf = np.zeros((n, w * 8), np.uint8)
    buf[:, :nb] = codes
    return buf.view("<i8").reshape(n, w)


def words_to_codes(words: NDArray[np.int64], n_bytes: int) -> NDArray[np.uint8]:
    """Inverse of :func:`codes_to_words`."""
    w = np.ascontiguousarray(words, dtype="<i8")
    return w.view(np.uint8).reshape(w.shape[0], -1)[:, :n_bytes].copy()


def _layout_of(desc: Mapping[str, Any], meta: CollectionMeta, name: str) -> dict[str, Any]:
    fields = {f["name"]: f for f in desc.get("fields", [])}
    code = fields.get("code")
    pk = fields.get("id")
    payload = fields.get("payload")
    bad = (
        code is None
        or int(code.get("params", {}).get("dim", -1)) != meta.n_bits
        or pk is None
        or not pk.get("is_primary")
        or payload is None
    )
    if bad:
        raise StoreError(
            f"collection {name!r} has hashplug metadata but not the hashplug layout "
            f"(id INT64 primary key, code BINARY_VECTOR dim {meta.n_bits}, payload VARCHAR)"
        )
    assert payload is not None  # checked above
    words = sorted(int(m.group(1)) for f in fields if (m := _WORD.match(f)))
    n_words = len(words) if words == list(range(_n_words(meta.n_bytes))) else 0
    max_len = int(payload.get("params", {}).get("max_length", 65_535))
    corr = fields.get(CORR_FIELD)
    has_corr = corr is not None and corr.get("type") in (DataType.INT32, "INT32", 4)
    return {"words": n_words, "payload_max_length": max_len, "index": None, "corr": has_corr}


def _dynamic_json(
    payload: Mapping[str, Any] | None,
    reserved: frozenset[str],
    static: frozenset[str] = frozenset(),
) -> bytes:
    r"""Return the payload's top-level keys as Milvus dynamic fields (null values left out).

    Plus what the dict filter needs where Milvus' expressions fall short: :data:`SET_FIELD` marks
    the keys that hold a value (``{k: None}`` is ``SET_FIELD[k] != 1``: Milvus Lite has no ``not``
    or null test), :data:`PCT_FIELD` holds strings with control characters percent-encoded (Lite's
    parser neither unescapes ``\n`` nor takes a raw newline). ``static`` keys (a partition key: a
    schema field of its own) get the marks but no dynamic field.
    """
    fields = {
        k: v
        for k, v in (payload or {}).items()
        if isinstance(k, str) and k and k not in reserved and v is not None
    }
    marks = {k: 1 for k in fields}
    pct = {k: pct_encode(v) for k, v in fields.items() if isinstance(v, str) and has_control(v)}
    for k in static & fields.keys():
        del fields[k]
    fields[SET_FIELD] = marks
    if pct:
        fields[PCT_FIELD] = pct
    return json.dumps(fields, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _upsert_request(
    collection: str,
    ids: NDArray[np.int64],
    codes: NDArray[np.uint8],
    words: NDArray[np.int64] | None,
    texts: list[str],
    dyn: list[bytes],
    corr: NDArray[np.int32] | None = None,
    *,
    partition: str = "",
    key: tuple[str, DataType, list[Any]] | None = None,
    insert: bool = False,
) -> Any:
    """Build an UpsertRequest (or with ``insert`` an InsertRequest) of the rows.

    Into ``partition`` ("" = the default, or the partition key's choice); ``key`` = (field, type,
    values) of a partition key column.
    """
    from pymilvus.grpc_gen import milvus_pb2, schema_pb2

    fields = []
    fd = schema_pb2.FieldData(field_name="id", type=DataType.INT64)
    fd.scalars.long_data.data.extend(ids.tolist())
    fields.append(fd)
    fd = schema_pb2.FieldData(field_name="code", type=DataType.BINARY_VECTOR)
    fd.vectors.dim = codes.shape[1] * 8
    fd.vectors.binary_vector = np.ascontiguousarray(codes).tobytes()
    fields.append(fd)
    if words is not None:
        for j in range(words.shape[1]):
            fd = schema_pb2.FieldData(field_name=f"code_w{j}", type=DataType.INT64)
            fd.scalars.long_data.data.extend(words[:, j].tolist())
            fields.append(fd)
    if corr is not None:
        fd = schema_pb2.FieldData(field_name=CORR_FIELD, type=DataType.INT32)
        fd.scalars.int_data.data.extend(corr.tolist())
        fields.append(fd)
    fd = schema_pb2.FieldData(field_name="payload", type=DataType.VARCHAR)
    fd.scalars.string_data.data.extend(texts)
    fields.append(fd)
    if key is not None:
        fd = schema_pb2.FieldData(field_name=key[0], type=key[1])
        col = fd.scalars.long_data if key[1] == DataType.INT64 else fd.scalars.string_data
        col.data.extend(key[2])
        fields.append(fd)
    fd = schema_pb2.FieldData(field_name="$meta", type=DataType.JSON, is_dynamic=True)
    fd.scalars.json_data.data.extend(dyn)
    fields.append(fd)
    cls = milvus_pb2.InsertRequest if insert else milvus_pb2.UpsertRequest
    return cls(
        collection_name=collection,
        partition_name=partition,
        num_rows=int(ids.size),
        fields_data=fields,
    )


def _hit_codes(hits: Any, m: int, n_bytes: int, words: int) -> NDArray[np.uint8]:
    """Return the codes of one query's hits, from int64 words or the binary vector output field."""
    if words:
        # list.__iter__: the raw hits, without HybridHits' materialisation of lazy fields.
        ents = [h["entity"] for h in list.__iter__(hits)][:m]
        if words == 1:
            w = np.fromiter((e["code_w0"] for e in ents), np.int64, m).reshape(m, 1)
        else:
            names = [f"code_w{j}" for j in range(words)]
            w = np.array([[e[k] for k in names] for e in ents], np.int64).reshape(m, words)
        return words_to_codes(w, n_bytes)
    for fd in getattr(hits, "lazy_field_data", []):
        if fd.field_name == "code":
            buf = np.frombuffer(fd.vectors.binary_vector, np.uint8).reshape(-1, n_bytes)
            return buf[hits.start : hits.start + m]
    return np.stack(  # pragma: no cover - older result objects
        [np.frombuffer(bytes(h["entity"]["code"]), np.uint8) for h in hits]
    )


def _reorder_codes(
    raw_i: NDArray[np.int64], raw_c: NDArray[np.uint8], got_i: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """Codes aligned with ``got_i`` (sort_hits' order) from the engine's order ``raw_i``."""
    out = np.zeros(got_i.shape + raw_c.shape[2:], np.uint8)
    for r in range(got_i.shape[0]):
        valid = got_i[r] >= 0
        if not valid.any():
            continue
        order = np.argsort(raw_i[r], kind="stable")
        pos = np.searchsorted(raw_i[r][order], got_i[r][valid])
        out[r][valid] = raw_c[r][order[pos]]
    return out
