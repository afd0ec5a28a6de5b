"""One URI parser for stores and sources: ``scheme://location?key=value``, options typed by a table."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "ParsedURI",
    "split_uri",
    "parse_uri",
    "convert_options",
    "to_bool",
    "to_finite_float",
    "to_int_at_least",
]

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


def to_int_at_least(lo: int) -> Callable[[str], int]:
    """URI option converter factory: an integer ``>= lo``."""

    def conv(value: str) -> int:
        v = value.strip()
        if not v.lstrip("-").isdigit() or int(v) < lo:
            raise ValueError(f"{value!r} is not an integer >= {lo}")
        return int(v)

    return conv


def convert_options(
    pairs: Iterable[tuple[str, str]], types: Mapping[str, Callable[[str], Any]], where: str
) -> dict[str, Any]:
    """Convert ``key=value`` pairs with ``types`` (name -> converter); ``where`` names the source.

    An option not in ``types``, or one its converter rejects, is a ``ValueError`` naming it.
    """
    opts: dict[str, Any] = {}
    for key, value in pairs:
        if key not in types:
            known = ", ".join(sorted(types)) or "none"
            raise ValueError(f"unknown option {key!r} in {where}; known: {known}")
        try:
            opts[key] = types[key](value)
        except ValueError as e:
            raise ValueError(f"option {key}={value!r} in {where} is not valid: {e}") from e
    return opts


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
    pairs = parse_qsl(query, keep_blank_values=True)
    return ParsedURI(scheme, location, convert_options(pairs, types or {}, repr(uri)))
