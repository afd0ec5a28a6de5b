"""hashplug: compact binary hashing for vector databases.

Fitted hashers turn embeddings into short binary codes; stores keep them in a database's binary
field for coarse Hamming search; a Numba kernel re-ranks the candidates asymmetrically.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import codes, errors
from .errors import HashplugError
from .hashers import (
    ITQ,
    LSH,
    HashCoder,
    Hasher,
    HasherFileError,
    HashingBaseline,
    MultiBitBaseline,
    NotFittedError,
    check_hasher,
    load_hasher,
)
from .rerank import asymmetric_distances, rerank, rerank_rows, search_codes

__version__ = "0.1.0"

# Names loaded on first use, so that `import hashplug` stays light (no Numba compile, no stores).
_LAZY = {
    "HashIndex": "hashplug.index",
    "SearchResult": "hashplug.index",
    "default_oversample": "hashplug.index",
    "Hits": "hashplug.results",
    "CodeHits": "hashplug.results",
    "ScoredHits": "hashplug.results",
    "RowHits": "hashplug.results",
    "SourceHits": "hashplug.results",
    "ShortlistHits": "hashplug.results",
    "Store": "hashplug.stores",
    "LocalStore": "hashplug.stores",
    "CollectionMeta": "hashplug.stores",
    "HasherMismatchError": "hashplug.stores",
    "StoreError": "hashplug.stores",
    "StoreUnavailableError": "hashplug.stores",
    "open_store": "hashplug.stores",
    "Encoder": "hashplug.encoders",
    "load_encoder": "hashplug.encoders",
    "attach": "hashplug.sources",
    "AttachedIndex": "hashplug.sources",
    "open_source": "hashplug.sources",
}

__all__ = [
    "codes",
    "errors",
    "HashplugError",
    "Hasher",
    "HashingBaseline",
    "HashCoder",
    "ITQ",
    "LSH",
    "MultiBitBaseline",
    "load_hasher",
    "check_hasher",
    "HasherFileError",
    "NotFittedError",
    "__version__",
    "asymmetric_distances",
    "rerank",
    "rerank_rows",
    "search_codes",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    raise AttributeError(f"module 'hashplug' has no attribute {name!r}")
