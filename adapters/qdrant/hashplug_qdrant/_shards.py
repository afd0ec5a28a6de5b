"""Qdrant custom sharding for QdrantStore.

The ``shard_key`` option, its checks, and the shard keys created on demand. Qdrant routes each request to the shards of the keys in its
``shard_key_selector`` and, for several keys, searches them all and merges the hits itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as m

__all__ = ["ShardKey", "shard_keys_option", "check_shard_keys", "selector", "ensure_shard_keys"]

ShardKey = str | int


def shard_keys_option(value: str) -> list[str]:
    """URI option converter: ``a`` or ``a,b`` (URI keys are strings; pass ints as keywords)."""
    return [v.strip() for v in value.split(",")]


def check_shard_keys(shard_key: ShardKey | Sequence[ShardKey] | None) -> tuple[ShardKey, ...]:
    """``shard_key`` as a tuple of distinct keys: non-empty str or int >= 0 (``()``: none)."""
    if shard_key is None:
        return ()
    seq = isinstance(shard_key, Sequence) and not isinstance(shard_key, str)
    keys: list[Any] = list(shard_key) if seq else [shard_key]  # type: ignore[arg-type]
    if not keys:
        raise ValueError("shard_key: give at least one shard key, or None")
    for k in keys:
        ok = (isinstance(k, str) and k.strip() == k and k != "") or (
            isinstance(k, int) and not isinstance(k, bool) and k >= 0
        )
        if not ok:
            raise ValueError(
                f"invalid Qdrant shard key {k!r}: a non-empty str without surrounding spaces, "
                "or an int >= 0"
            )
    if len(set(keys)) != len(keys):
        raise ValueError(f"shard keys repeat: {keys}")
    return tuple(keys)


def selector(keys: tuple[ShardKey, ...]) -> ShardKey | list[ShardKey] | None:
    """Return the ``shard_key_selector`` of a request: a key, a list of keys, or None (all)."""
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else list(keys)


def is_custom(info: Any) -> bool:
    """Whether a ``get_collection`` result was created with ``sharding_method=custom``."""
    method = getattr(info.config.params, "sharding_method", None)
    return method == m.ShardingMethod.CUSTOM or str(method).lower().endswith("custom")


def ensure_shard_keys(
    client: QdrantClient, collection: str, keys: tuple[ShardKey, ...], where: str
) -> None:
    """Create the one shard key on demand; several keys (a read-only store) must all exist."""
    if len(keys) == 1:
        try:
            client.create_shard_key(collection, keys[0])
        except Exception as e:
            if "already exist" not in str(e).lower():
                raise
        return
    have = {d.key for d in (client.list_shard_keys(collection).shard_keys or [])}
    missing = [k for k in keys if k not in have]
    if missing:
        raise ValueError(
            f"shard keys {missing} do not exist in collection {collection!r} at {where} (it "
            f"has {sorted(have, key=str)}); a store over several shard keys only reads: write "
            "each one through a store with shard_key=KEY, which creates it"
        )
