"""Stores: where packed codes live (LocalStore here; databases through plugins)."""

from ..errors import StoreUnavailableError
from .base import (
    HAMMING_PAD,
    CollectionMeta,
    HasherMismatchError,
    Store,
    StoreError,
    as_ids,
    check_ids,
    check_payloads,
    sort_hits,
)
from .local import LocalStore
from .registry import available_schemes, open_store
from .retry import RetryPolicy

__all__ = [
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "RetryPolicy",
    "HasherMismatchError",
    "CollectionMeta",
    "LocalStore",
    "open_store",
    "available_schemes",
    "HAMMING_PAD",
    "as_ids",
    "check_ids",
    "check_payloads",
    "sort_hits",
]
