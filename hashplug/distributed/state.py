"""Resume state of an ingest job: one done-marker per shard, beside the target or in a state dir."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..stores.uri import split_uri
from .shards import Dataset, Shard

__all__ = ["default_state_dir", "JobState"]


def default_state_dir(store_uri: str) -> Path:
    """Beside the target for stores on a local path, else ``~/.cache/hashplug/ingest/<hash>``.

    ``lancedb://DIR/TABLE`` -> ``DIR/TABLE.hashplug-ingest``; ``file://DIR`` ->
    ``DIR.hashplug-ingest``; servers, object stores and ``memory://`` -> the cache
    (``$HASHPLUG_CACHE/ingest`` when set).
    """
    scheme, rest = split_uri(store_uri)
    loc = rest.partition("?")[0].rstrip("/")
    if scheme in ("lancedb", "file") and loc and "://" not in loc:
        return Path(loc + ".hashplug-ingest")
    root = Path(os.environ.get("HASHPLUG_CACHE", Path.home() / ".cache" / "hashplug"))
    return root / "ingest" / hashlib.sha256(store_uri.encode()).hexdigest()[:16]


class JobState:
    """Done-markers of one (dataset, hasher) job: ``<state_dir>/<job key>/<shard name>.done``.

    A marker holds the shard's path, row count, size and mtime; a shard whose file changed since
    is not done. Markers are written atomically after every row of the shard is stored.
    """

    def __init__(self, state_dir: str | os.PathLike[str], ds: Dataset, fingerprint: str) -> None:
        key = hashlib.sha256(f"{ds.key}|{fingerprint}".encode()).hexdigest()[:16]
        self.dir = Path(state_dir) / key
        self.fingerprint = fingerprint

    def _marker(self, shard: Shard) -> Path:
        return self.dir / f"{shard.index:06d}-{shard.name}.done"

    def is_done(self, shard: Shard) -> bool:
        """Return whether ``shard``, as it is now, was marked done."""
        p = self._marker(shard)
        try:
            rec: dict[str, Any] = json.loads(p.read_text())
        except (OSError, ValueError):
            return False
        return all(rec.get(k) == v for k, v in shard.signature.items())

    def mark_done(self, shard: Shard, written: int) -> None:
        """Record that ``shard`` is written (``written`` rows), with its signature."""
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self._marker(shard)
        rec = {**shard.signature, "written": written, "fingerprint": self.fingerprint,
               "at": time.time()}  # fmt: skip
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, p)

    def claimed_rows(self, shards: list[Shard]) -> int:
        """Rows the markers of the still-unchanged ``shards`` say were stored."""
        total = 0
        for s in shards:
            try:
                rec: dict[str, Any] = json.loads(self._marker(s).read_text())
            except (OSError, ValueError):
                continue
            if all(rec.get(k) == v for k, v in s.signature.items()):
                total += int(rec.get("written", 0))
        return total

    def clear(self) -> None:
        """Forget every marker (the next run writes every shard again)."""
        if self.dir.is_dir():
            for p in self.dir.glob("*.done"):
                p.unlink()
