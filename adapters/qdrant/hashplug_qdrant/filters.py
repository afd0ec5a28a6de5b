"""Filters: hashplug's portable ``{field: value}`` dicts and Qdrant's native filters.

* A dict ``{field: value, ...}`` means "every field equals its value": str / int / bool values
  become ``MatchValue``, float values an inclusive ``Range(gte=v, lte=v)``, ``None`` an ``IsNull``
  condition. As everywhere in Qdrant, a condition on a field holding an array matches when any
  element matches. List or dict values are refused (write a native filter for those).
* ``qdrant_client.models.Filter`` passes through to a Qdrant server / local mode unchanged.
* On Qdrant Edge, a ``qdrant_edge.Filter`` passes through unchanged, and a
  ``qdrant_client.models.Filter`` is translated (must / should / must_not, field conditions with
  match value / any / except / text / phrase, range, values_count, is_empty, is_null, has_id,
  nested filters and nested conditions), so one filter object works on both engines.

Known limitation of qdrant-edge-py 0.9: its ``MatchValue`` turns ``True`` into ``1`` (Python's
bool is an int), and an integer never matches a boolean payload value, so a boolean match would
silently match nothing. Translating a boolean match for Qdrant Edge therefore raises ValueError
(store 0/1 or strings in payload fields you filter on); a Qdrant server and local mode match
booleans normally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["dict_items", "to_client_filter", "to_edge_filter"]


def dict_items(flt: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """Validate a portable filter: [(key, kind, value)] with kind in match / range / null."""
    if not flt:
        raise ValueError("an empty filter dict matches everything; pass filter=None instead")
    out: list[tuple[str, str, Any]] = []
    for key, value in flt.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if value is None:
            out.append((key, "null", None))
        elif isinstance(value, (bool, str)) or isinstance(value, int):
            out.append((key, "match", value))
        elif isinstance(value, float):
            out.append((key, "range", value))
        else:
            raise ValueError(
                f"filter value for {key!r} must be a str, int, bool, float or None, got "
                f"{type(value).__name__}; use a qdrant_client.models.Filter for anything else"
            )
    return out


def to_client_filter(flt: Any) -> Any:
    """A filter for qdrant-client: dict -> ``models.Filter``; a ``models.Filter`` passes through."""
    from qdrant_client import models as m

    if flt is None or isinstance(flt, m.Filter):
        return flt
    if isinstance(flt, Mapping):
        must: list[Any] = []
        for key, kind, value in dict_items(flt):
            if kind == "match":
                must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
            elif kind == "range":
                must.append(m.FieldCondition(key=key, range=m.Range(gte=value, lte=value)))
            else:
                must.append(m.IsNullCondition(is_null=m.PayloadField(key=key)))
        return m.Filter(must=must)
    raise ValueError(
        "Qdrant filters are a dict {field: value} or a qdrant_client.models.Filter, "
        f"got {type(flt).__name__}"
    )


def to_edge_filter(flt: Any) -> Any:
    """A filter for Qdrant Edge: dict or ``qdrant_client.models.Filter`` -> ``qdrant_edge.Filter``."""
    import qdrant_edge as qe

    if flt is None or isinstance(flt, qe.Filter):
        return flt
    if isinstance(flt, Mapping):
        must: list[Any] = []
        for key, kind, value in dict_items(flt):
            if kind == "match":
                must.append(qe.FieldCondition(key, match=_edge_match_value(value, key)))
            elif kind == "range":
                must.append(qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value)))
            else:
                must.append(qe.IsNullCondition(key))
        return qe.Filter(must=must)
    try:
        from qdrant_client import models as m
    except ImportError:  # pragma: no cover - qdrant-client is a dependency
        m = None
    if m is not None and isinstance(flt, m.Filter):
        return _edge_from_client(flt)
    raise ValueError(
        "Qdrant Edge filters are a dict {field: value}, a qdrant_edge.Filter or a "
        f"qdrant_client.models.Filter, got {type(flt).__name__}"
    )


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _edge_from_client(f: Any) -> Any:
    import qdrant_edge as qe

    if getattr(f, "min_should", None) is not None:
        raise ValueError("min_should is not translated to Qdrant Edge; pass a qdrant_edge.Filter")

    def conds(xs: Any) -> list[Any] | None:
        lst = [_edge_condition(c) for c in _as_list(xs)]
        return lst or None

    return qe.Filter(must=conds(f.must), should=conds(f.should), must_not=conds(f.must_not))


def _edge_condition(c: Any) -> Any:
    import qdrant_edge as qe
    from qdrant_client import models as m

    if isinstance(c, m.Filter):
        return _edge_from_client(c)
    if isinstance(c, m.FieldCondition):
        kw: dict[str, Any] = {}
        if c.match is not None:
            kw["match"] = _edge_match(c.match)
        if c.range is not None:
            if not isinstance(c.range, m.Range):
                raise ValueError("only numeric Range conditions are translated to Qdrant Edge")
            r = c.range
            kw["range"] = qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
        if c.values_count is not None:
            v = c.values_count
            kw["values_count"] = qe.ValuesCount(lt=v.lt, gt=v.gt, lte=v.lte, gte=v.gte)
        if c.is_empty is not None:
            kw["is_empty"] = c.is_empty
        if c.is_null is not None:
            kw["is_null"] = c.is_null
        for geo in ("geo_bounding_box", "geo_radius", "geo_polygon"):
            if getattr(c, geo, None) is not None:
                raise ValueError(f"{geo} conditions are not translated; pass a qdrant_edge.Filter")
        return qe.FieldCondition(c.key, **kw)
    if isinstance(c, m.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, m.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, m.HasIdCondition):
        return qe.HasIdCondition(set(c.has_id))
    if isinstance(c, m.NestedCondition):
        return qe.NestedCondition(c.nested.key, _edge_from_client(c.nested.filter))
    raise ValueError(
        f"{type(c).__name__} is not translated to Qdrant Edge; pass a qdrant_edge.Filter"
    )


def _edge_match(x: Any) -> Any:
    import qdrant_edge as qe
    from qdrant_client import models as m

    if isinstance(x, m.MatchValue):
        return _edge_match_value(x.value, "a field")
    if isinstance(x, m.MatchAny):
        return qe.MatchAny(list(x.any))
    if isinstance(x, m.MatchExcept):
        return qe.MatchExcept(list(x.except_))
    if isinstance(x, m.MatchText):
        return qe.MatchText(x.text)
    if isinstance(x, m.MatchPhrase):
        return qe.MatchPhrase(x.phrase)
    raise ValueError(
        f"{type(x).__name__} is not translated to Qdrant Edge; pass a qdrant_edge.Filter"
    )


def _edge_match_value(value: Any, key: str) -> Any:
    import qdrant_edge as qe

    mv = qe.MatchValue(value)
    if isinstance(value, bool) and not isinstance(mv.value, bool):
        raise ValueError(
            f"cannot filter {key!r} == {value} on Qdrant Edge: qdrant-edge-py's MatchValue turns "
            f"booleans into integers ({value} -> {mv.value}), which never match a boolean payload "
            "value; store 0/1 or strings in fields you filter on"
        )
    return mv
