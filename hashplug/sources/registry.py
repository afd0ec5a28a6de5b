"""Finding the source reader for a URI: a table of the known engines, then entry points.

Like fsspec's ``known_implementations``: each scheme names the class that reads it and the package
that provides it; third-party sources register under the entry-point group ``hashplug.sources``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from ..stores.uri import split_uri
from .source import Source, SourceError

__all__ = ["KNOWN_SOURCES", "open_source", "source_schemes"]

GROUP = "hashplug.sources"

#: scheme -> ("module:Class", distribution that provides it)
KNOWN_SOURCES: dict[str, tuple[str, str]] = {
    "lancedb": ("hashplug_lancedb.source:LanceDBSource", "hashplug-lancedb"),
    "qdrant": ("hashplug_qdrant.source:QdrantSource", "hashplug-qdrant"),
    "qdrant+local": ("hashplug_qdrant.source:QdrantSource", "hashplug-qdrant"),
    "qdrant-edge": ("hashplug_qdrant.source:QdrantEdgeSource", "hashplug-qdrant"),
    "milvus": ("hashplug_milvus.source:MilvusSource", "hashplug-milvus"),
    "milvus+lite": ("hashplug_milvus.source:MilvusSource", "hashplug-milvus"),
}


def source_schemes() -> list[str]:
    """Every scheme a source is known for (installed or not)."""
    return sorted(set(KNOWN_SOURCES) | {ep.name for ep in entry_points(group=GROUP)})


def _load_class(scheme: str) -> type[Source]:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if scheme in KNOWN_SOURCES:
        target, dist = KNOWN_SOURCES[scheme]
    elif scheme in eps:
        target, dist = eps[scheme].value, eps[scheme].value.split(".")[0]
    else:
        raise ValueError(
            f"cannot attach to {scheme}:// collections; known schemes: {', '.join(source_schemes())}"
        )
    mod_name, _, cls_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except ImportError as e:
        raise ValueError(
            f"reading {scheme}:// collections needs {dist} and its database client "
            f"(pip install {dist}): {e}"
        ) from e
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise TypeError(f"{target} is not a hashplug Source")
    return cls


def open_source(
    uri: str, *, vector_field: str | None = None, id_field: str | None = None, **options: Any
) -> Source:
    """Open the user's collection at ``uri`` read-only and discover its vector field and ids."""
    scheme, rest = split_uri(uri)
    if not rest:
        raise ValueError(f"{uri!r} names no collection")
    cls = _load_class(scheme)
    src = cls.from_uri(uri, vector_field=vector_field, id_field=id_field, **options)
    if not isinstance(src, Source):
        raise SourceError(f"{cls.__name__}.from_uri returned {type(src).__name__}, not a Source")
    return src
