"""What an engine's native-option runner hands back, and the helpers every runner shares.

Each adapter package ships ``<package>.native`` (e.g. ``hashplug_lancedb.native``) with:

- ``ENGINES``: the engine names it runs (``("lancedb",)``, ``("milvus-lite", "milvus-server")``);
- ``engine_version(engine) -> str``: the installed version, e.g. ``"LanceDB 0.40.0"``;
- ``native_methods(engine) -> dict[str, str | None]``: every option name it knows, mapped to
  ``None`` when the installed version has it and to a one-line reason when it does not (checked at
  run time against the installed engine, never assumed);
- ``run_native(engine, method, data, workdir) -> MethodRun``: build, search, measure.

This module imports no database client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["CompareData", "MethodRun", "time_queries", "dir_bytes"]


@dataclass
class CompareData:
    """The vectors every method sees: database ``db_x`` (ids = row numbers), queries ``q_x``.

    ``k``: results per query; ``train_x``: what trainable methods may fit on.
    """

    db_x: NDArray[np.float32]
    q_x: NDArray[np.float32]
    train_x: NDArray[np.float32]
    k: int = 10

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self.db_x.shape[1])

    @property
    def n(self) -> int:
        """The number of database vectors."""
        return int(self.db_x.shape[0])


@dataclass
class MethodRun:
    """One method measured on one engine.

    ``ids`` (Q, k) database rows (-1 = none); ``lat_ms`` (Q,) one query per call; ``ram_bytes`` /
    ``disk_bytes``: totals for the whole database as measured from the engine; ``ram_how``: how
    RAM was counted (one phrase, shown in the report).
    """

    method: str
    engine: str
    ids: NDArray[np.int64]
    lat_ms: NDArray[np.float64]
    build_s: float
    ram_bytes: float
    disk_bytes: float
    ram_how: str = ""
    params: dict[str, object] = field(default_factory=dict)


def time_queries(
    search: Callable[[NDArray[np.float32]], NDArray[np.int64]],
    q: NDArray[np.float32],
    k: int,
    warmup: int = 3,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Run ``search`` on one query (shape (1, d)) at a time: ids (Q, k) and latency ms (Q,).

    ``search`` returns up to k ids for its query; shorter answers are padded with -1.
    """
    for i in range(min(warmup, q.shape[0])):
        search(q[i : i + 1])
    ids = np.full((q.shape[0], k), -1, np.int64)
    ms = np.empty(q.shape[0])
    for i in range(q.shape[0]):
        t = time.perf_counter()
        got = np.asarray(search(q[i : i + 1]), np.int64).ravel()[:k]
        ms[i] = (time.perf_counter() - t) * 1e3
        ids[i, : got.size] = got
    return ids, ms


def dir_bytes(path: Path, predicate: Callable[[Path], bool] | None = None) -> int:
    """Bytes allocated on disk to the files under ``path`` (those for which ``predicate`` holds).

    Allocated blocks, not apparent sizes: engines preallocate sparse files (Qdrant's 32 MiB mmap
    chunks and WAL segments) whose apparent size says nothing about the data they hold.
    """
    total = 0
    for f in Path(path).rglob("*"):
        if f.is_file() and (predicate is None or predicate(f)):
            st = f.stat()
            total += min(st.st_size, st.st_blocks * 512)
    return total
