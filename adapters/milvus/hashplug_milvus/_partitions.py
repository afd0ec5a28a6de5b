"""Milvus partitions for MilvusStore.

Named partitions (``partition=``) and a partition key (``partition_key=``), their checks, and the
dict-filter pruning on the key field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType

from hashplug.stores.base import Filter, MatchNothing, Payload, normalize_filter

__all__ = ["PartitionKey", "KEY_TYPES", "names_option", "check_names", "key_of_desc"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
#: ``partition_key_type`` values: VARCHAR (payload str) or INT64 (payload int)
KEY_TYPES = ("varchar", "int64")
KEY_MAX_LENGTH = 512  # bytes of a VARCHAR partition key value


def names_option(value: str) -> list[str]:
    """URI option converter: ``a,b`` -> ``["a", "b"]`` (names checked by :func:`check_names`)."""
    return [v.strip() for v in value.split(",")]


def check_names(partition: str | Sequence[str] | None) -> tuple[str, ...]:
    """``partition`` as a tuple of distinct valid Milvus partition names (``()`` for none)."""
    if partition is None:
        return ()
    names = [partition] if isinstance(partition, str) else list(partition)
    if not names:
        raise ValueError("partition: give at least one partition name, or None")
    for n in names:
        if not isinstance(n, str) or not _NAME.match(n):
            raise ValueError(
                f"invalid Milvus partition name {n!r}: use letters, digits and underscores, "
                "starting with a letter or underscore (at most 255 characters)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"partition names repeat: {names}")
    return tuple(names)


@dataclass(frozen=True)
class PartitionKey:
    """The payload field that is the collection's Milvus partition key."""

    field: str
    kind: str  # "varchar" or "int64"
    max_length: int = KEY_MAX_LENGTH

    @property
    def dtype(self) -> DataType:
        return DataType.INT64 if self.kind == "int64" else DataType.VARCHAR

    def schema_args(self) -> dict[str, Any]:
        """Keyword arguments of ``CollectionSchema.add_field`` for the key field."""
        if self.kind == "int64":
            return {"datatype": DataType.INT64, "is_partition_key": True}
        return {
            "datatype": DataType.VARCHAR,
            "max_length": self.max_length,
            "is_partition_key": True,
        }

    def accepts(self, value: Any) -> bool:
        if self.kind == "int64":
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, str)

    def check_payloads(self, ids: Sequence[int], payloads: Sequence[Payload | None]) -> None:
        """ValueError naming the first row whose payload lacks a valid key value."""
        what = "a str" if self.kind == "varchar" else "an int"
        for i, p in zip(ids, payloads, strict=True):
            v = None if p is None else p.get(self.field)
            if v is None:
                raise ValueError(
                    f"id {int(i)}: the payload has no {self.field!r}, this collection's Milvus "
                    f"partition key; every row needs {what} value for it (nothing was written)"
                )
            if not self.accepts(v):
                raise ValueError(
                    f"id {int(i)}: payload {self.field!r} is {v!r}; the partition key holds "
                    f"{what} (nothing was written)"
                )
            if self.kind == "int64" and not -(2**63) <= v < 2**63:
                raise ValueError(f"id {int(i)}: payload {self.field!r} = {v} is outside int64")
            if self.kind == "varchar" and len(v.encode("utf-8")) > self.max_length:
                raise ValueError(
                    f"id {int(i)}: payload {self.field!r} is longer than the partition key's "
                    f"{self.max_length} bytes (nothing was written)"
                )

    def values(self, payloads: Sequence[Payload | None]) -> list[Any]:
        """Return the key column of checked payloads."""
        return [p[self.field] for p in payloads if p is not None]

    def prune_filter(self, flt: Filter | None) -> Filter | None:
        """Drop the values for the key that can never match (another type) from a dict filter.

        So the expression on the key field stays one Milvus accepts and can prune by.
        """
        if not isinstance(flt, Mapping):
            return flt
        norm = normalize_filter(flt)
        if not isinstance(norm, Mapping) or isinstance(norm, MatchNothing):
            return flt
        values = norm.get(self.field)
        if values is None:
            return flt
        out = dict(norm)
        out[self.field] = [v for v in values if self.accepts(v)]
        return out


def key_of_desc(desc: Mapping[str, Any]) -> PartitionKey | None:
    """Return the partition key of a ``describe_collection`` result, if it has one."""
    for f in desc.get("fields", []):
        if not f.get("is_partition_key"):
            continue
        t = f.get("type")
        if t in (DataType.INT64, "INT64", 5):
            return PartitionKey(str(f["name"]), "int64")
        max_len = int(f.get("params", {}).get("max_length", KEY_MAX_LENGTH))
        return PartitionKey(str(f["name"]), "varchar", max_len)
    return None
