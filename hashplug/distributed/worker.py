"""The work one worker does on a chunk: read it, encode raw items, hash, write (or return codes).

The same class runs in-process (``engine="local"``) and as a Ray Data actor (``engine="ray"``),
where its constructor receives the job once: the hasher as its safetensors file's bytes, the
store URI, the shard plan.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..hashers.base import Hasher, load_hasher
from .shards import Chunk, Dataset, read_chunk

__all__ = ["Job", "ChunkWorker", "hasher_bytes", "hasher_from_bytes", "WORKER_STORE_OPTIONS"]

#: Store options for parallel writers, per URI scheme: LanceDB workers leave index builds to the
#: driver's final pass (concurrent index builds on one table conflict; appends do not).
WORKER_STORE_OPTIONS: dict[str, dict[str, Any]] = {"lancedb": {"index": "none"}}


def hasher_bytes(h: Hasher) -> bytes:
    """Return the hasher's safetensors file as bytes (what is shipped to every worker)."""
    with tempfile.TemporaryDirectory() as d:
        return h.save(os.path.join(d, "h.safetensors")).read_bytes()


def hasher_from_bytes(b: bytes) -> Hasher:
    """Load a hasher from :func:`hasher_bytes` (fingerprint checked, no pickle)."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "h.safetensors")
        with open(p, "wb") as f:
            f.write(b)
        return load_hasher(p)


@dataclass
class Job:
    """Everything a worker needs, shipped once per worker."""

    ds: Dataset
    chunks: list[Chunk]
    hasher: bytes
    store: str
    store_options: dict[str, Any] = field(default_factory=dict)
    write: bool = True  # False: return codes to the driver, which writes
    batch_size: int = 50_000
    encoder: str | None = None
    retries: int = 5
    #: sample mode (fit): chunk number -> row positions within the chunk to return as vectors
    sample: dict[int, NDArray[np.int64]] | None = None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ChunkWorker:
    """Callable on a batch of chunk numbers (``{"chunk": int array}``); returns a summary batch.

    Write mode: per chunk ``shard``, ``rows`` written, ``pid``, ``rss_mb`` (peak RSS).
    Driver-write mode: per row ``shard``, ``id``, ``code``, plus ``pid`` and ``rss_mb``.
    Sample mode: per row ``x`` (the vector) and ``pid``.
    """

    def __init__(self, job: Any) -> None:
        if not isinstance(job, Job):  # a Ray ObjectRef: fetched once, when the actor starts
            import ray

            job = ray.get(job)
        self.job: Job = job
        self.hasher = hasher_from_bytes(job.hasher) if job.hasher else None
        self.encoder = None
        if job.encoder:
            from ..encoders import load_encoder

            self.encoder = load_encoder(job.encoder)
        self.index = None
        if job.write and job.sample is None and self.hasher is not None:
            from ..index import HashIndex
            from ..stores.uri import split_uri

            opts = {**WORKER_STORE_OPTIONS.get(split_uri(job.store)[0], {}), **job.store_options}
            self.index = HashIndex(job.store, self.hasher, **opts)

    def _vectors(self, x: Any) -> NDArray[Any]:
        if self.encoder is not None:
            return np.asarray(self.encoder.encode(x), dtype=np.float32)
        return x

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Process the chunks numbered in ``batch["chunk"]`` (Ray Data's batch call)."""
        parts: list[dict[str, NDArray[Any]]] = [self.run(int(c)) for c in batch["chunk"]]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def run(self, number: int) -> dict[str, NDArray[Any]]:
        """Process chunk ``number`` of the job."""
        job, chunk = self.job, self.job.chunks[number]
        pid = os.getpid()
        if job.sample is not None:
            ids, x = read_chunk(job.ds, chunk, apply_skip=False)
            pos = job.sample[number]
            x = self._vectors([x[i] for i in pos] if isinstance(x, list) else x[pos])
            n = len(pos)
            return {"x": np.asarray(x, np.float32), "pid": np.full(n, pid, np.int64)}
        ids, x = read_chunk(job.ds, chunk)
        n = ids.size
        if self.index is not None:
            for s in range(0, n, job.batch_size):
                part = slice(s, s + job.batch_size)
                self._upsert(ids[part], self._vectors(x[part]))
            return {
                "shard": np.array([chunk.shard], np.int64),
                "rows": np.array([n], np.int64),
                "pid": np.array([pid], np.int64),
                "rss_mb": np.array([_peak_rss_mb()]),
            }
        assert self.hasher is not None
        codes = np.empty((n, self.hasher.n_bits // 8), np.uint8)
        for s in range(0, n, job.batch_size):
            part = slice(s, s + job.batch_size)
            if n:
                codes[part] = self.hasher.encode(self._vectors(x[part]))
        return {
            "shard": np.full(n, chunk.shard, np.int64),
            "id": ids,
            "code": codes,
            "pid": np.full(n, pid, np.int64),
            "rss_mb": np.full(n, _peak_rss_mb()),
        }

    def _upsert(self, ids: NDArray[np.int64], x: Any) -> None:
        """``HashIndex.add`` with retries: upserts by id are idempotent, so a retry is safe."""
        assert self.index is not None and self.hasher is not None
        if not len(ids):
            return
        codes = self.hasher.encode(x)
        for attempt in range(self.job.retries + 1):
            try:
                self.index.store.upsert(ids, codes)
                return
            except (ValueError, TypeError):
                raise  # bad input: retrying cannot help
            except Exception:  # commit conflicts, timeouts: engines raise their own types
                if attempt == self.job.retries:
                    raise
                time.sleep(min(8.0, 0.2 * 2**attempt))
