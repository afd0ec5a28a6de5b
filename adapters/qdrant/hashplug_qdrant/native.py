"""Qdrant's own quantization in a Qdrant Edge shard, for ``hashplug compare``.

The shard is the real engine, in-process.

Float32 vectors (Cosine), ids = row numbers, originals on disk (``Memory.Cold``), the quantized
vectors pinned in RAM, no HNSW graph (a full scan of the quantized vectors, as the hashplug store
does), so the numbers measure the quantization alone. Options:

- ``qdrant:bq-1bit``, ``qdrant:bq-1.5bit``, ``qdrant:bq-2bit``: binary quantization with 1, 1.5 or
  2 bits per dimension, queries encoded asymmetrically (``Scalar8Bits``), rescoring with the
  originals of ``oversampling * k`` candidates;
- ``qdrant:sq-int8``: scalar int8 quantization with rescoring;
- ``qdrant:float``: no quantization (float32 scan), the engine's own exact reference.

RAM: the shard's quantization files (pinned) plus its id tracker; the original vectors are read
from disk at rescoring. Disk: the whole shard (WAL included), as allocated blocks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from hashplug.bench.native import CompareData, MethodRun, dir_bytes, time_queries

__all__ = ["ENGINES", "engine_version", "native_methods", "run_native"]

ENGINES = ("qdrant-edge",)
OVERSAMPLING = 3.0
_BQ = {"bq-1bit": "OneBit", "bq-1.5bit": "OneAndHalfBits", "bq-2bit": "TwoBits"}
_BATCH = 2048


def engine_version(engine: str = "qdrant-edge") -> str:
    """Return the engine name and version shown in the comparison report."""
    from importlib.metadata import version

    return f"Qdrant Edge (qdrant-edge-py {version('qdrant-edge-py')})"


def native_methods(engine: str = "qdrant-edge") -> dict[str, str | None]:
    """``qdrant:<option>`` -> None when this qdrant-edge has it, else why not."""
    out: dict[str, str | None] = {"qdrant:float": None}
    enc = getattr(qe, "BinaryQuantizationEncoding", None)
    qenc = getattr(qe, "BinaryQuantizationQueryEncoding", None)
    for name, member in _BQ.items():
        ok = enc is not None and hasattr(enc, member) and hasattr(qenc, "Scalar8Bits")
        out[f"qdrant:{name}"] = None if ok else f"not in this version ({engine_version()})"
    ok = hasattr(qe, "ScalarQuantizationConfig") and hasattr(qe.ScalarType, "Int8")
    out["qdrant:sq-int8"] = None if ok else f"not in this version ({engine_version()})"
    return out


def _quantization(option: str) -> Any:
    if option in _BQ:
        return qe.BinaryQuantizationConfig(
            encoding=getattr(qe.BinaryQuantizationEncoding, _BQ[option]),
            query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits,
            memory=qe.Memory.Pinned,
        )
    if option == "sq-int8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, memory=qe.Memory.Pinned)
    return None


def run_native(engine: str, method: str, data: CompareData, workdir: Path) -> MethodRun:
    """Build a shard with ``method``'s quantization in ``workdir`` and search it one query at a time."""
    option = method.split(":", 1)[1]
    quant = _quantization(option)
    vectors = qe.EdgeVectorParams(
        size=data.dim,
        distance=qe.Distance.Cosine,
        datatype=qe.VectorStorageDatatype.Float32,
        memory=qe.Memory.Cold if quant is not None else qe.Memory.Pinned,
        quantization_config=quant,
    )
    config = qe.EdgeConfig(
        vectors=vectors,
        hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),  # 1 kB: optimise into sealed,
        # quantized segments (0 would keep one appendable segment, unquantized for int8)
    )
    path = Path(workdir) / "shard"
    t = time.perf_counter()
    shard = qe.EdgeShard.create(str(path), config)
    for s in range(0, data.n, _BATCH):
        rows = data.db_x[s : s + _BATCH].tolist()
        pts = [qe.Point(s + i, v, None) for i, v in enumerate(rows)]
        shard.update(qe.UpdateOperation.upsert_points(pts))
    shard.optimize()  # builds the quantized vectors of the sealed segment
    shard.flush()
    build_s = time.perf_counter() - t
    params = qe.SearchParams(
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
        if quant is not None
        else None
    )
    k = data.k

    def search(q: np.ndarray) -> np.ndarray:
        req = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(q[0].tolist()),
            params=params,
            with_vector=False,
            with_payload=False,
        )
        return np.array([p.id for p in shard.query(req)], np.int64)

    try:
        ids, ms = time_queries(search, data.q_x, k)
    finally:
        shard.close()
    disk = dir_bytes(path)
    if quant is None:
        ram, how = disk, "whole shard (float vectors pinned)"
    else:
        ram = dir_bytes(
            path,
            lambda f: (
                "quantized" in f.name or "quantized" in str(f.parent) or "id_tracker" in f.name
            ),
        )
        how = "quantized vectors + id tracker; originals on disk (Cold)"
    params_out: dict[str, object] = {"hnsw": "off (full scan)"}
    if quant is not None:
        params_out.update(rescore=True, oversampling=OVERSAMPLING)
    return MethodRun(method, engine, ids, ms, build_s, ram, disk, how, params_out)
