"""Portable filters (``{field: value}``) as Milvus boolean expressions over dynamic fields."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from hashplug.stores.base import MatchNothing, normalize_filter

__all__ = ["to_expression", "literal", "field_ref", "IDENT", "SET_FIELD", "PCT_FIELD", "RESERVED"]

#: Dynamic field ``{key: 1}`` for each payload key holding a (non-null) value.
SET_FIELD = "_hashplug_set"
#: Dynamic field ``{key: percent-encoded value}`` for string values with control characters.
PCT_FIELD = "_hashplug_pct"
RESERVED = frozenset({SET_FIELD, PCT_FIELD})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(v: str) -> bool:
    return _CONTROL.search(v) is not None


def pct_encode(v: str) -> str:
    """Percent-encoding (UTF-8): only letters, digits and ``%-._~`` remain, nothing to escape."""
    return quote(v, safe="")


IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def literal(value: Any) -> str:
    """Return a Python scalar as a Milvus expression literal (strings double-quoted and escaped)."""
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
    """Return the expression for a payload key stored as a dynamic field."""
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


def _equals(ref: str, key: str, v: Any) -> str:
    if isinstance(v, str) and has_control(v):  # see PCT_FIELD
        return f"({PCT_FIELD}[{literal(key)}] == {literal(pct_encode(v))})"
    return f"({ref} == {literal(v)})"


def to_expression(flt: Any, reserved: frozenset[str]) -> str:
    """Translate a filter into a Milvus expression.

    ``None`` or ``{}`` -> ``""``; a Milvus expression string passes through; a dict keeps
    DESIGN.md's contract (``{k: None}``: k missing or null; ``{k: [..]}``: any of).
    """
    if isinstance(flt, str):
        return flt.strip()
    if flt is not None and not isinstance(flt, Mapping):
        raise ValueError(
            "Milvus filters are a dict {field: value} (all equal) or a Milvus boolean expression "
            f"string such as 'color == \"red\" and rank > 3', got {type(flt).__name__}"
        )
    norm = normalize_filter(flt)
    if norm is None:
        return ""
    if isinstance(norm, MatchNothing):
        return "id < 0"  # ids are >= 0
    parts = []
    for k, values in norm.items():
        ref = field_ref(k, reserved | RESERVED)
        if values is None:  # missing or null (Lite has no `not`; `!=` holds for missing keys)
            parts.append(f"({SET_FIELD}[{literal(k)}] != 1)")
        else:  # an or-chain: Lite 2.5 refuses `in` over mixed int / float values
            terms = [_equals(ref, k, v) for v in values]
            parts.append(terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")")
    return " and ".join(parts)
