"""hashplug-milvus: hashplug's store plugin for Milvus (BINARY_VECTOR codes, HAMMING search).

    import hashplug
    store = hashplug.open_store("milvus://127.0.0.1:19530/docs")        # a server / cluster
    store = hashplug.open_store("milvus+lite://./data/codes.db/docs")    # Milvus Lite file
    index = hashplug.HashIndex(store, hasher)

See :class:`MilvusStore` for the options and the collection layout.
"""

from ._retry import RetryPolicy, is_transient
from ._rows import codes_to_words, words_to_codes
from .store import (
    CONSISTENCY_LEVELS,
    INDEX_TYPES,
    MAX_TOPK,
    META_PREFIX,
    MilvusStore,
)

__all__ = [
    "MilvusStore",
    "RetryPolicy",
    "is_transient",
    "codes_to_words",
    "words_to_codes",
    "CONSISTENCY_LEVELS",
    "INDEX_TYPES",
    "MAX_TOPK",
    "META_PREFIX",
]
__version__ = "0.1.0"
