"""Finding a store by URI: ``hashplug.open_store("lancedb://./data/docs")``.

Adapters register their Store class under the entry-point group ``hashplug.stores`` with the URI
scheme as the name, e.g. in their pyproject.toml::

    [project.entry-points."hashplug.stores"]
    lancedb = "hashplug_lancedb:LanceDBStore"
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .base import Store

__all__ = ["open_store", "available_schemes", "split_uri", "KNOWN_PLUGINS"]

GROUP = "hashplug.stores"

#: Which distribution provides which scheme, for the error message when one is missing.
KNOWN_PLUGINS: dict[str, str] = {
    "lancedb": "hashplug-lancedb",
    "milvus": "hashplug-milvus",
    "milvus+lite": "hashplug-milvus",
    "qdrant": "hashplug-qdrant",
    "qdrant+local": "hashplug-qdrant",
    "qdrant-edge": "hashplug-qdrant",
    "memory": "hashplug",
    "file": "hashplug",
}


def split_uri(uri: str) -> tuple[str, str]:
    """``"lancedb://./data/docs"`` -> ``("lancedb", "./data/docs")``."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(
            f"store URI must look like 'scheme://location' (e.g. 'memory://', "
            f"'lancedb://./data/docs'), got {uri!r}"
        )
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_schemes() -> list[str]:
    """URI schemes of the installed store plugins."""
    return sorted(set(_entry_points()) | {"memory", "file"})


def open_store(uri: str, **options: Any) -> Store:
    """Build the store for ``uri`` from the plugin registered for its scheme.

    ``options`` go to the store (e.g. ``token=...`` for Milvus, ``api_key=...`` for Qdrant).
    The collection itself is created or checked by ``Store.open`` (``HashIndex`` calls it).
    """
    scheme, _ = split_uri(uri)
    if scheme in ("memory", "file"):
        from .local import LocalStore

        return LocalStore.from_uri(uri, **options)
    eps = _entry_points()
    if scheme not in eps:
        pkg = KNOWN_PLUGINS.get(scheme)
        hint = f"install the plugin: pip install {pkg}" if pkg else "no known plugin provides it"
        raise ValueError(
            f"no hashplug store is installed for scheme {scheme!r} ({hint}); "
            f"installed schemes: {', '.join(available_schemes())}"
        )
    try:
        cls = eps[scheme].load()
    except ImportError as e:
        raise ValueError(
            f"the store plugin for {scheme!r} failed to import ({e}); is its database client "
            f"installed? pip install {KNOWN_PLUGINS.get(scheme, eps[scheme].value)}"
        ) from e
    store = cls.from_uri(uri, **options)
    if not isinstance(store, Store):
        raise TypeError(f"plugin {eps[scheme].value} returned {type(store).__name__}, not a Store")
    return store
