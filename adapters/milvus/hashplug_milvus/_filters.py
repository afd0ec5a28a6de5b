"""Portable filters (``{field: value}``) as Milvus boolean expressions over dynamic fields."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["to_expression", "literal", "field_ref", "IDENT"]

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def literal(value: Any) -> str:
    """A Python scalar as a Milvus expression literal (strings double-quoted and escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"filter value {value} is outside int64")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"filter value {value} is not finite; Milvus cannot compare to it")
        return repr(value)
    if isinstance(value, str):
        # JSON escaping (\" \\ \n \t \uXXXX) is what Milvus' expression parser unquotes.
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        raise ValueError(
            "a filter value of None cannot be expressed for Milvus 2.3 (no null test on dynamic "
            "fields); pass a Milvus expression string instead"
        )
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(
            f"the portable filter compares scalars; for {type(value).__name__} values write a "
            'Milvus expression, e.g. json_contains(tags, "a")'
        )
    import numpy as np

    if isinstance(value, np.generic):
        return literal(value.item())
    raise ValueError(f"cannot use a {type(value).__name__} as a Milvus filter value")


def field_ref(key: str, reserved: frozenset[str]) -> str:
    """The expression for a payload key stored as a dynamic field."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"filter keys are non-empty strings, got {key!r}")
    if key in reserved:
        raise ValueError(
            f"payload key {key!r} is reserved by the Milvus collection layout "
            f"({', '.join(sorted(reserved))}) and cannot be filtered on; rename it"
        )
    if IDENT.match(key):
        return key
    return f"$meta[{json.dumps(key, ensure_ascii=False)}]"


def to_expression(flt: Any, reserved: frozenset[str]) -> str:
    """``None`` -> ``""``; a Milvus expression string passes through; a dict means all-equal."""
    if flt is None:
        return ""
    if isinstance(flt, str):
        return flt.strip()
    if isinstance(flt, Mapping):
        parts = [f"({field_ref(k, reserved)} == {literal(v)})" for k, v in flt.items()]
        return " and ".join(parts)
    raise ValueError(
        "Milvus filters are a dict {field: value} (all equal) or a Milvus boolean expression "
        f"string such as 'color == \"red\" and rank > 3', got {type(flt).__name__}"
    )
