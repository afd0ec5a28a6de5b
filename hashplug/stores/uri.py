"""One URI parser for stores and sources: ``scheme://location?key=value``, options typed by a table."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["ParsedURI", "split_uri", "parse_uri", "to_bool", "to_finite_float"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def split_uri(uri: str) -> tuple[str, str]:
    """``"lancedb://./data/docs"`` -> ``("lancedb", "./data/docs")`` (scheme lower-cased)."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(
            f"store URI must look like 'scheme://location' (e.g. 'memory://', "
            f"'lancedb://./data/docs'), got {uri!r}"
        )
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def to_bool(value: str) -> bool:
    """URI option converter: ``1/true/yes/on`` -> True, ``0/false/no/off`` -> False."""
    v = value.strip().lower()
    if v not in _TRUE | _FALSE:
        raise ValueError(f"{value!r} is not a bool (true/false)")
    return v in _TRUE


def to_finite_float(value: str) -> float:
    """URI option converter: a finite float."""
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{value!r} is not a finite number")
    return x


@dataclass(frozen=True)
class ParsedURI:
    """``scheme://location?options``: options converted by the caller's type table."""

    scheme: str
    location: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_uri(uri: str, types: Mapping[str, Callable[[str], Any]] | None = None) -> ParsedURI:
    """Split ``uri`` and convert its query options with ``types`` (name -> converter).

    An option not in ``types``, or one its converter rejects, is a ``ValueError`` naming it.
    """
    scheme, rest = split_uri(uri)
    location, _, query = rest.partition("?")
    opts: dict[str, Any] = {}
    table = types or {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            raise ValueError(f"unknown option {key!r} in {uri!r}; known: {known}")
        try:
            opts[key] = table[key](value)
        except ValueError as e:
            raise ValueError(f"option {key}={value!r} in {uri!r} is not valid: {e}") from e
    return ParsedURI(scheme, location, opts)
