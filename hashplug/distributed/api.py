"""``ingest`` and ``fit`` over a directory of shards, in this process or on Ray."""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..hashers.base import Hasher, load_hasher
from ..stores.base import StoreError
from ..stores.uri import split_uri
from .engines import run_chunks
from .shards import Chunk, Dataset, scan_shards
from .state import JobState, default_state_dir
from .worker import Job, hasher_bytes

__all__ = ["ingest", "fit", "IngestReport", "PARALLEL_WRITERS", "DuplicateIdsWarning"]

#: Schemes whose engine takes writes from many processes at once; the others (one file or one
#: process owns the collection: file://, memory://, milvus+lite, qdrant+local, qdrant-edge) get
#: their codes from the workers and are written by the driver.
PARALLEL_WRITERS = frozenset({"lancedb", "milvus", "qdrant"})


class DuplicateIdsWarning(UserWarning):
    """Ids occur more than once across (or within) shards; the row written last wins."""


class StaleStateWarning(UserWarning):
    """The resume state claims more stored rows than the target holds: it is ignored."""


@dataclass
class IngestReport:
    """What an ingest run did (``to_dict`` for JSON)."""

    rows: int  # rows of the dataset (all shards)
    written: int  # rows written by this run
    shards: int
    shards_skipped: int  # already done by an earlier run
    shards_written: int
    duplicate_ids: int
    duplicate_examples: list[int]
    seconds: float
    vectors_per_s: float
    engine: str
    workers: int
    writers: str  # "workers" or "driver"
    stored: int | None  # count() of the store after the run
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # per worker pid
    finish_s: float = 0.0  # of ``seconds``: the store's final pass (LanceDB index build)
    state_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        d = asdict(self)
        d["peak_rss_mb"] = {str(k): v for k, v in self.peak_rss_mb.items()}
        return d


def _hasher(h: Hasher | str | os.PathLike[str]) -> Hasher:
    if isinstance(h, Hasher):
        if not h.is_fitted:
            raise ValueError(
                "the hasher is not fitted; call hasher.fit(...) or hashplug.distributed.fit"
            )
        return h
    return load_hasher(h)


def _open_index(store: str, hasher: Hasher, encoder: str | None, options: dict[str, Any]) -> Any:
    """Create or check the collection once, on the driver; name the store when it cannot open."""
    from ..index import HashIndex

    try:
        return HashIndex(store, hasher, **options)
    except (ValueError, StoreError):
        raise
    except Exception as e:  # connection refused, DNS, timeouts: each client raises its own type
        raise StoreError(f"cannot open store {store!r}: {type(e).__name__}: {e}") from e


def _finish(index: Any) -> None:
    """One maintenance pass after parallel writers (LanceDB: index build / compaction)."""
    index.store.finish_writes()


def ingest(
    embeddings: str | os.PathLike[str],
    hasher: Hasher | str | os.PathLike[str],
    store: str,
    *,
    engine: str = "ray",
    workers: int = 2,
    address: str | None = None,
    vector_column: str = "vector",
    id_column: str = "id",
    item_column: str | None = None,
    encoder: str | None = None,
    id_start: int = 0,
    batch_size: int = 50_000,
    writers: str = "auto",
    state_dir: str | os.PathLike[str] | None = None,
    store_options: dict[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Hash every vector of a directory of shards and upsert the codes into ``store``.

    Args:
        embeddings: a directory of Parquet shards (``vector_column`` + ``id_column``, or
            ``item_column`` of raw items with ``encoder``) or of ``.npy`` shards (ids
            consecutive from ``id_start`` across the files in name order).
        hasher: a fitted Hasher or its file; shipped once to every worker as the file's bytes.
        store: any store URI (``hashplug.open_store``); created on first use.
        engine: ``"ray"`` (Ray Data actors; ``address`` of a cluster, else a local one with
            ``workers`` CPUs) or ``"local"`` (this process, no Ray).
        workers: actors hashing (and writing) in parallel.
        writers: ``"workers"`` (each worker upserts its chunks), ``"driver"`` (workers return
            codes, this process writes them) or ``"auto"`` (workers where the engine takes
            parallel writers, see :data:`PARALLEL_WRITERS`).
        batch_size: rows per hashed and written batch (bounds each write and each worker's RAM).
        state_dir: where the per-shard done-markers live (default :func:`default_state_dir`).
            A rerun skips the shards marked done; a shard interrupted half-way is written
            again, which is harmless (upserts by id).
        restart: forget the markers and write every shard.

    Duplicate ids (within or across shards): the last row in file-name, then row order wins;
    counted in the report and warned about (:class:`DuplicateIdsWarning`).
    """
    t0 = time.perf_counter()
    if writers not in ("auto", "workers", "driver"):
        raise ValueError(f"writers must be 'auto', 'workers' or 'driver', got {writers!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if item_column and not encoder:
        raise ValueError(f"item_column={item_column!r} holds raw items: give an encoder spec")
    h = _hasher(hasher)
    ds = scan_shards(
        embeddings, vector_column=vector_column, id_column=id_column,
        item_column=item_column, id_start=id_start,
    )  # fmt: skip
    if not item_column and ds.dim != h.dim_:
        raise ValueError(f"the shards hold {ds.dim}-d vectors; the hasher expects {h.dim_}-d")
    if ds.duplicate_ids:
        warnings.warn(
            f"{ds.duplicate_ids} ids occur more than once in {ds.directory} (e.g. "
            f"{ds.duplicate_examples[:5]}); the last row in file-name order is kept",
            DuplicateIdsWarning,
            stacklevel=2,
        )
    opts = dict(store_options or {})
    index = _open_index(store, h, encoder, opts)
    scheme = split_uri(store)[0]
    mode = writers if writers != "auto" else ("workers" if scheme in PARALLEL_WRITERS else "driver")
    if mode == "workers" and scheme in ("memory", "file"):
        raise ValueError(f"{scheme}:// is owned by one process: use writers='driver'")
    state = JobState(state_dir or default_state_dir(store), ds, h.fingerprint)
    if restart:
        state.clear()
    claimed = state.claimed_rows(ds.shards)
    if claimed and index.store.count() < claimed:  # the target was dropped or replaced since
        warnings.warn(
            f"the resume state in {state.dir} says {claimed} rows were stored, but {store} holds "
            f"{index.store.count()}: the target was dropped or replaced; every shard is written "
            "again",
            StaleStateWarning,
            stacklevel=2,
        )
        state.clear()
    todo = [s.index for s in ds.shards if not state.is_done(s)]
    expected = {
        i: ds.shards[i].rows - (ds.skip_rows[i].size if i in ds.skip_rows else 0) for i in todo
    }
    job = Job(
        ds=ds, chunks=ds.chunks(batch_size, todo), hasher=hasher_bytes(h), store=store,
        store_options=opts, write=mode == "workers", batch_size=batch_size, encoder=encoder,
    )  # fmt: skip
    done_rows: dict[int, int] = defaultdict(int)
    rss: dict[int, float] = {}
    written = 0
    for i in [i for i in todo if expected[i] == 0]:
        state.mark_done(ds.shards[i], 0)
    bar = tqdm(
        total=sum(expected.values()), desc="hashplug ingest", unit="vec", disable=not progress
    )
    try:
        for b in run_chunks(job, engine=engine, workers=workers, address=address):
            for pid, mb in zip(b["pid"].tolist(), b["rss_mb"].tolist(), strict=True):
                rss[pid] = max(rss.get(pid, 0.0), mb)
            if mode == "driver":
                for s in range(0, b["id"].size, batch_size):
                    index.store.upsert(b["id"][s : s + batch_size], b["code"][s : s + batch_size])
                counts = np.bincount(b["shard"], minlength=len(ds.shards))
                got = {int(i): int(counts[i]) for i in np.flatnonzero(counts)}
            else:
                got = defaultdict(int)
                for sh, n in zip(b["shard"].tolist(), b["rows"].tolist(), strict=True):
                    got[sh] += n
            for sh, n in got.items():
                done_rows[sh] += n
                written += n
                bar.update(n)
                if done_rows[sh] == expected[sh]:
                    state.mark_done(ds.shards[sh], done_rows[sh])
    finally:
        bar.close()
    t_finish = time.perf_counter()
    if mode == "workers" and written:
        _finish(index)
    finish_s = time.perf_counter() - t_finish
    stored = index.store.count()
    index.close()
    dt = time.perf_counter() - t0
    return IngestReport(
        rows=ds.rows, written=written, shards=len(ds.shards),
        shards_skipped=len(ds.shards) - len(todo), shards_written=len(todo),
        duplicate_ids=ds.duplicate_ids, duplicate_examples=ds.duplicate_examples,
        seconds=dt, vectors_per_s=written / dt if dt > 0 else 0.0, engine=engine,
        workers=workers if engine == "ray" else 1, writers=mode, stored=stored,
        peak_rss_mb=rss, state_dir=str(state.dir), finish_s=finish_s,
    )  # fmt: skip


def fit(
    embeddings: str | os.PathLike[str],
    *,
    method: str = "hashing-baseline",
    bits: int = 64,
    sample: int = 100_000,
    seed: int = 0,
    engine: str = "ray",
    workers: int = 2,
    address: str | None = None,
    vector_column: str = "vector",
    id_column: str = "id",
    item_column: str | None = None,
    encoder: str | None = None,
    progress: bool = True,
    out: str | os.PathLike[str] | None = None,
) -> Hasher:
    """Fit a hasher on ``sample`` rows drawn uniformly (seeded) from every shard of a directory.

    Only the sampled rows travel to this process (``sample x dim`` floats): the dataset itself
    may be far larger than one machine. The sample is the same for both engines. ``method`` is
    one of ``hashplug.bench.experiments.LIBRARY_HASHERS`` (not the supervised ``hashcoder-labels``),
    built with the library's defaults.
    Saved to ``out`` when given; the encoder spec, if any, is recorded in the hasher.
    """
    from ..bench.experiments import LIBRARY_HASHERS as HASHERS

    if method not in HASHERS or method == "hashcoder-labels":
        names = [m for m in HASHERS if m != "hashcoder-labels"]
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(names)}")
    if sample <= 0:
        raise ValueError(f"sample must be positive, got {sample}")
    if item_column and not encoder:
        raise ValueError(f"item_column={item_column!r} holds raw items: give an encoder spec")
    ds = scan_shards(
        embeddings, vector_column=vector_column, id_column=id_column, item_column=item_column
    )
    job = _sample_job(ds, sample, seed, encoder)
    parts: list[np.ndarray] = []
    bar = tqdm(
        total=min(sample, ds.rows), desc="hashplug fit sample", unit="row", disable=not progress
    )
    for b in run_chunks(job, engine=engine, workers=workers, address=address):
        parts.append(np.asarray(b["x"], np.float32))
        bar.update(len(b["x"]))
    bar.close()
    x = np.concatenate(parts)
    h = HASHERS[method](bits, seed).fit(x)
    if encoder:
        h.set_encoder(encoder)
    if out is not None:
        h.save(Path(out))
    return h


def _sample_job(ds: Dataset, sample: int, seed: int, encoder: str | None) -> Job:
    """Chunks that hold sampled rows, each with the row positions to return."""
    n = min(sample, ds.rows)
    pos = np.sort(np.random.default_rng(seed).choice(ds.rows, n, replace=False))
    chunks: list[Chunk] = []
    picks: dict[int, np.ndarray] = {}
    offset = 0
    for c in ds.chunks(50_000):
        lo, hi = np.searchsorted(pos, [offset, offset + c.rows])
        if hi > lo:
            picks[len(chunks)] = pos[lo:hi] - offset
            chunks.append(c)
        offset += c.rows
    return Job(
        ds=ds, chunks=chunks, hasher=b"", store="", write=False, encoder=encoder, sample=picks
    )
