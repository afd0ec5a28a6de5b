"""Filters: hashplug's portable ``{field: value}`` dicts and Qdrant's native filters.

* A dict ``{field: value, ...}`` keeps DESIGN.md's contract (see :func:`dict_to_models`): str
  and bool values become ``MatchValue``, numbers an inclusive ``Range(gte=v, lte=v)`` (so 1
  matches 1.0, never True), ``None`` an ``IsEmpty`` condition (missing or null), a list a
  nested ``should``. As everywhere in Qdrant, a condition on a field holding an array matches
  when any element matches (filtering on list fields is not portable).
* ``qdrant_client.models.Filter`` passes through to a Qdrant server / local mode unchanged.
* On Qdrant Edge, a ``qdrant_edge.Filter`` passes through unchanged, and a
  ``qdrant_client.models.Filter`` is translated (must / should / must_not, field conditions with
  match value / any / except / text / phrase, range, values_count, is_empty, is_null, has_id,
  nested filters and nested conditions), so one filter object works on both engines.

Known limitation of qdrant-edge-py 0.9: its ``MatchValue`` turns ``True`` into ``1`` (Python's
bool is an int), and an integer never matches a boolean payload value. The Edge store therefore
keeps a string copy of top-level booleans (``BOOL_SHADOW_KEY``) that dict filters match; a
boolean ``MatchValue`` inside a native ``qdrant_client.models.Filter`` is still refused there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hashplug.stores.base import MatchNothing, normalize_filter

from ._common import BOOL_SHADOW_KEY

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

__all__ = ["dict_to_models", "to_client_filter", "to_edge_filter"]


def _value_condition(m: Any, key: str, v: Any, edge: bool) -> Any:
    """One ``key == v`` condition with the contract's equality (types kept, 1 == 1.0)."""
    if isinstance(v, bool):
        if edge:  # see BOOL_SHADOW_KEY
            shadow = f"{BOOL_SHADOW_KEY}.{key}"
            return m.FieldCondition(key=shadow, match=m.MatchValue(value="true" if v else "false"))
        return m.FieldCondition(key=key, match=m.MatchValue(value=v))
    if isinstance(v, str):
        return m.FieldCondition(key=key, match=m.MatchValue(value=v))
    if isinstance(v, int) and abs(v) > 2**53:  # beyond exact floats: integers only
        return m.FieldCondition(key=key, match=m.MatchValue(value=v))
    # A range matches integer and float payload values alike (1 == 1.0), never booleans.
    return m.FieldCondition(key=key, range=m.Range(gte=float(v), lte=float(v)))


def dict_to_models(flt: Mapping[str, Any], edge: bool = False) -> Any:
    """DESIGN.md's dict filter as a ``qdrant_client.models.Filter`` (None: no filter).

    ``{k: None}`` is ``IsEmpty`` (k missing or null), ``{k: [..]}`` a nested ``should``.
    ``edge=True`` matches booleans through the shadow strings Qdrant Edge stores beside them.
    """
    from qdrant_client import models as m

    norm = normalize_filter(flt)
    if norm is None:
        return None
    if isinstance(norm, MatchNothing):
        return m.Filter(must=[m.HasIdCondition(has_id=[])])
    must: list[Any] = []
    for key, values in norm.items():
        if not _KEY.match(key):  # Qdrant reads ".", "[]" and quotes in a key as a JSON path
            raise ValueError(
                f"dict filter key {key!r}: Qdrant takes keys of letters, digits, '_' and '-' "
                "here (others are JSON paths); write a qdrant_client.models.Filter for it"
            )
        if values is None:
            must.append(m.IsEmptyCondition(is_empty=m.PayloadField(key=key)))
            continue
        conds = [_value_condition(m, key, v, edge) for v in values]
        must.append(conds[0] if len(conds) == 1 else m.Filter(should=conds))
    return m.Filter(must=must)


def to_client_filter(flt: Any) -> Any:
    """Convert a filter for qdrant-client: dict -> ``models.Filter``.

    A ``models.Filter`` passes through.
    """
    from qdrant_client import models as m

    if flt is None or isinstance(flt, m.Filter):
        return flt
    if isinstance(flt, Mapping):
        return dict_to_models(flt)
    raise ValueError(
        "Qdrant filters are a dict {field: value} or a qdrant_client.models.Filter, "
        f"got {type(flt).__name__}"
    )


def to_edge_filter(flt: Any) -> Any:
    """Convert a filter for Qdrant Edge into a ``qdrant_edge.Filter``.

    From a dict or a ``qdrant_client.models.Filter``.
    """
    import qdrant_edge as qe

    if flt is None or isinstance(flt, qe.Filter):
        return flt
    if isinstance(flt, Mapping):
        models = dict_to_models(flt, edge=True)
        return None if models is None else _edge_from_client(models)
    m: Any
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
        return qe.MatchAny(list[Any](x.any))
    if isinstance(x, m.MatchExcept):
        return qe.MatchExcept(list[Any](x.except_))
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
