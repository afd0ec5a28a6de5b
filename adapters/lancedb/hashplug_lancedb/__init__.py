"""hashplug-lancedb: a hashplug store backed by an embedded LanceDB table.

    >>> import hashplug
    >>> store = hashplug.open_store("lancedb://./data/docs")   # or LanceDBStore("./data", "docs")

Registered under the entry-point group ``hashplug.stores`` as the ``lancedb`` scheme.
"""

from .store import META_KEY, RESERVED_COLUMNS, LanceDBStore

__all__ = ["LanceDBStore", "META_KEY", "RESERVED_COLUMNS", "__version__"]
__version__ = "0.1.0"
