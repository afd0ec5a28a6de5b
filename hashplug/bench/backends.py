"""Production figures per backend: ingest, build, bytes, latency, recall against exact search, cost."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from ..hashers import Hasher
from ..index import HashIndex
from ..stores.registry import available_schemes
from .datasets import EmbeddingSet
from .experiments import float_topk
from .metrics import map_at_k, recall_at_k

__all__ = [
    "BACKENDS",
    "BackendConfig",
    "available_backends",
    "run_backend",
    "float_baseline",
    "ram_cost",
]

#: Backend name -> (URI scheme, URI template with {dir}). Milvus runs through Milvus Lite here.
BACKENDS: dict[str, tuple[str, str]] = {
    "local": ("memory", "memory://"),
    "lancedb": ("lancedb", "lancedb://{dir}/bench"),
    "milvus-lite": ("milvus+lite", "milvus+lite://{dir}/milvus.db/bench"),
    "qdrant-edge": ("qdrant-edge", "qdrant-edge://{dir}/bench"),
}

#: Default RAM price: USD per GiB-month, about what cloud memory-optimised instances charge
#: on demand (e.g. 2025 list prices of r-class instances: ~$0.0066/GiB-hour). Override it.
DEFAULT_RAM_PRICE = 5.0


def available_backends() -> list[str]:
    """Return the backends whose store plugin is installed."""
    schemes = set(available_schemes())
    return [name for name, (scheme, _) in BACKENDS.items() if scheme in schemes]


def ram_cost(bytes_per_vector: float, price_per_gib_month: float = DEFAULT_RAM_PRICE) -> float:
    """USD per month to keep one million vectors of this size in RAM."""
    return bytes_per_vector * 1e6 / 2**30 * price_per_gib_month


@dataclass
class BackendConfig:
    """Settings of the per-backend benchmark (top-k, oversample sweep, query counts)."""

    k: int = 10
    oversamples: Sequence[int] = (1, 2, 5, 10, 20)
    latency_queries: int = 200
    sweep_latency_queries: int = 50
    map_queries: int = 500
    map_k: int = 1000
    map_oversample: int = 10
    ram_price: float = DEFAULT_RAM_PRICE
    progress: bool = True


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _percentiles(ms: NDArray[np.float64]) -> dict[str, float]:
    return {f"p{p}": float(np.percentile(ms, p)) for p in (50, 95, 99)}


def run_backend(
    name: str,
    ds: EmbeddingSet,
    hasher: Hasher,
    cfg: BackendConfig,
    exact_asym: NDArray[np.int64],
    exact_float: NDArray[np.int64],
) -> dict[str, Any]:
    """Ingest ``ds.db_x`` into a fresh collection of backend ``name`` and measure it.

    ``exact_asym`` / ``exact_float``: the exhaustive asymmetric / float-cosine top-k of the
    queries, the references for recall.
    """
    scheme, template = BACKENDS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"hashplug-bench-{name}-"))
    res: dict[str, Any] = {"backend": name, "n_bits": hasher.n_bits, "n": int(ds.db_x.shape[0])}
    try:
        index = HashIndex(template.format(dir=tmp), hasher)
        ids = np.arange(ds.db_x.shape[0], dtype=np.int64)
        t = time.perf_counter()
        index.add(ds.db_x, ids, progress=False)
        res["ingest_s"] = time.perf_counter() - t
        res["ingest_vps"] = ds.db_x.shape[0] / res["ingest_s"]
        t = time.perf_counter()
        if index.store.supports_native_index:
            index.store.create_index()  # type: ignore[attr-defined]
        res["build_s"] = time.perf_counter() - t
        n = index.store.count()
        res["bytes_codes_per_vector"] = index.bytes_per_vector()  # + cosine factors if kept
        res["bytes_float32_per_vector"] = ds.db_x.shape[1] * 4
        disk = _dir_bytes(tmp)
        res["bytes_on_disk_per_vector"] = disk / n if disk else None

        q = ds.q_x
        sweep: dict[str, Any] = {}
        for ov in tqdm(cfg.oversamples, desc=f"{name}: oversample", disable=not cfg.progress):
            got = index.search(q, k=cfg.k, oversample=ov).ids
            lat = _single_query_ms(index, q[: cfg.sweep_latency_queries], cfg.k, ov)
            sweep[str(ov)] = {
                "recall_vs_asym": recall_at_k(got, exact_asym, cfg.k),
                "recall_vs_float": recall_at_k(got, exact_float, cfg.k),
                "p50_ms": float(np.percentile(lat, 50)),
            }
        res["oversample"] = sweep

        nq = min(cfg.latency_queries, q.shape[0])
        ms = _single_query_ms(index, q[:nq], cfg.k, 10)
        res["latency_ms"] = _percentiles(ms)
        res["qps_single_client"] = 1e3 / float(ms.mean())
        t = time.perf_counter()
        index.search(q[:nq], k=cfg.k, oversample=10)
        res["qps_batched"] = nq / (time.perf_counter() - t)

        mq = min(cfg.map_queries, q.shape[0])
        got = index.search(q[:mq], k=cfg.map_k, oversample=cfg.map_oversample).ids
        res["map"] = _map_block(ds, hasher, cfg, got)
        res["ram_usd_per_million_month"] = ram_cost(res["bytes_codes_per_vector"], cfg.ram_price)
        res["ram_usd_per_million_month_float32"] = ram_cost(
            res["bytes_float32_per_vector"], cfg.ram_price
        )
        index.store.drop()
        index.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _single_query_ms(
    index: HashIndex, q: NDArray[np.float32], k: int, oversample: int
) -> NDArray[np.float64]:
    """Latency of one query at a time, in ms, after a warm-up (JIT, caches)."""
    index.search(q[:2], k=k, oversample=oversample)
    ms = np.empty(q.shape[0])
    for i in range(q.shape[0]):
        t = time.perf_counter()
        index.search(q[i], k=k, oversample=oversample)
        ms[i] = (time.perf_counter() - t) * 1e3
    return ms


def _map_block(
    ds: EmbeddingSet, hasher: Hasher, cfg: BackendConfig, got: NDArray[np.int64]
) -> dict[str, Any]:
    """Return the mAP of the two-stage result, exhaustive asymmetric and float cosine search.

    All on the same first ``len(got)`` queries (ids are database rows).
    """
    from ..rerank import search_codes

    mq = got.shape[0]
    y_q = ds.q_y[:mq]
    exhaustive, _ = search_codes(hasher.query(ds.q_x[:mq]), hasher.encode(ds.db_x), cfg.map_k)
    return {
        "k": cfg.map_k,
        "queries": mq,
        "oversample": cfg.map_oversample,
        "two_stage": map_at_k(got, ds.db_y, y_q),
        "exhaustive_asymmetric": map_at_k(exhaustive, ds.db_y, y_q),
        "float_cosine": map_at_k(float_topk(ds.q_x[:mq], ds.db_x, cfg.map_k), ds.db_y, y_q),
    }


def float_baseline(ds: EmbeddingSet, cfg: BackendConfig) -> dict[str, Any]:
    """Return the float32 reference: exact cosine search with numpy in RAM.

    Over the raw embeddings (what the codes replace): bytes, latency, QPS, mAP; recall is 1 by
    definition.
    """
    db = ds.db_x / np.maximum(np.linalg.norm(ds.db_x, axis=1, keepdims=True), 1e-12)
    q = ds.q_x / np.maximum(np.linalg.norm(ds.q_x, axis=1, keepdims=True), 1e-12)
    k = cfg.k

    def top(qs: NDArray[np.float32]) -> NDArray[np.int64]:
        sim = qs @ db.T
        return np.argpartition(-sim, k - 1, axis=1)[:, :k]

    nq = min(cfg.latency_queries, q.shape[0])
    top(q[:2])
    ms = np.empty(nq)
    for i in range(nq):
        t = time.perf_counter()
        top(q[i : i + 1])
        ms[i] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    top(q[:nq])
    batched = nq / (time.perf_counter() - t)
    mq = min(cfg.map_queries, q.shape[0])
    b = ds.db_x.shape[1] * 4
    return {
        "backend": "float32 exact (numpy)",
        "n": int(ds.db_x.shape[0]),
        "bytes_codes_per_vector": b,
        "bytes_float32_per_vector": b,
        "latency_ms": _percentiles(ms),
        "qps_single_client": 1e3 / float(ms.mean()),
        "qps_batched": batched,
        "map": {
            "k": cfg.map_k,
            "queries": mq,
            "float_cosine": map_at_k(
                float_topk(ds.q_x[:mq], ds.db_x, cfg.map_k), ds.db_y, ds.q_y[:mq]
            ),
        },
        "ram_usd_per_million_month": ram_cost(b, cfg.ram_price),
        "ram_usd_per_million_month_float32": ram_cost(b, cfg.ram_price),
    }


def exact_references(
    ds: EmbeddingSet, hasher: Hasher, k: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Exhaustive asymmetric and float-cosine top-k of the queries (database indices = ids)."""
    from ..rerank import search_codes

    asym, _ = search_codes(hasher.query(ds.q_x), hasher.encode(ds.db_x), k)
    return asym, float_topk(ds.q_x, ds.db_x, k)
