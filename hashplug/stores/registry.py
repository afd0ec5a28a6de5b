"""Finding a store by URI: ``hashplug.open_store("lancedb://./data/docs")``.

The stores this project ships are rows of :data:`KNOWN_STORES` (``memory`` and ``file`` included).
Third-party adapters register their Store class under the entry-point group ``hashplug.stores``
with the URI scheme as the name, e.g. in their pyproject.toml::

    [project.entry-points."hashplug.stores"]
    lancedb = "hashplug_lancedb:LanceDBStore"
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from .base import Store
from .uri import split_uri

__all__ = ["open_store", "available_schemes", "split_uri", "KNOWN_STORES", "KNOWN_PLUGINS"]

GROUP = "hashplug.stores"

#: scheme -> ("module:Class", distribution). Like fsspec's ``known_implementations``: the built-in
#: stores are ordinary entries; a scheme not listed here is looked up among the entry points.
KNOWN_STORES: dict[str, tuple[str, str]] = {
    "memory": ("hashplug.stores.local:LocalStore", "hashplug"),
    "file": ("hashplug.stores.local:LocalStore", "hashplug"),
    "lancedb": ("hashplug_lancedb:LanceDBStore", "hashplug-lancedb"),
    "milvus": ("hashplug_milvus:MilvusStore", "hashplug-milvus"),
    "milvus+lite": ("hashplug_milvus:MilvusStore", "hashplug-milvus"),
    "qdrant": ("hashplug_qdrant:QdrantStore", "hashplug-qdrant"),
    "qdrant+local": ("hashplug_qdrant:QdrantStore", "hashplug-qdrant"),
    "qdrant-edge": ("hashplug_qdrant:QdrantEdgeStore", "hashplug-qdrant"),
}
#: Which distribution provides which scheme (for error messages).
KNOWN_PLUGINS: dict[str, str] = {k: v[1] for k, v in KNOWN_STORES.items()}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _importable(target: str) -> bool:
    return importlib.util.find_spec(target.partition(":")[0].split(".")[0]) is not None


def available_schemes() -> list[str]:
    """URI schemes of the installed stores."""
    known = {s for s, (t, _) in KNOWN_STORES.items() if _importable(t)}
    return sorted(known | set(_entry_points()))


def open_store(uri: str, **options: Any) -> Store:
    """Build the store for ``uri`` from the plugin registered for its scheme.

    ``options`` go to the store (e.g. ``token=...`` for Milvus, ``api_key=...`` for Qdrant).
    The collection itself is created or checked by ``Store.open`` (``HashIndex`` calls it).
    """
    scheme, _ = split_uri(uri)
    if scheme in KNOWN_STORES:
        target, dist = KNOWN_STORES[scheme]
    else:
        eps = _entry_points()
        if scheme not in eps:
            raise ValueError(
                f"no hashplug store is installed for scheme {scheme!r} (no known plugin provides "
                f"it); installed schemes: {', '.join(available_schemes())}"
            )
        target, dist = eps[scheme].value, eps[scheme].value.split(".")[0]
    mod_name, _, cls_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except ImportError as e:
        missing = getattr(e, "name", None) == mod_name.split(".")[0]
        hint = (
            f"install the plugin: pip install {dist}"
            if missing
            else f"is its database client installed? pip install {dist}"
        )
        raise ValueError(f"the store plugin for {scheme!r} failed to import ({e}); {hint}") from e
    store = cls.from_uri(uri, **options)
    if not isinstance(store, Store):
        raise TypeError(f"plugin {target} returned {type(store).__name__}, not a Store")
    return store
