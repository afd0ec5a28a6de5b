"""LanceDB's own vector indexes, run by ``hashplug compare`` on the same vectors as hashplug.

Float vectors (unit length; cosine) in a ``vector`` column, ids = row numbers. Options:
``lancedb:flat`` (no index, brute force), ``lancedb:ivf_flat``, ``lancedb:ivf_pq``, ``lancedb:ivf_sq``,
``lancedb:ivf_rq`` (RaBitQ, 1 bit per dimension), and ``+refine`` variants that rerank
``refine_factor * k`` candidates with the original vectors read from the table.

RAM is counted as what LanceDB keeps in memory to answer at full speed: the index files
(``_indices``, cached by LanceDB's index cache) for indexed options, the vector data files for
``flat`` (a brute-force scan reads them all). ``+refine`` reads only ``refine_factor * k`` rows per
query from the data files, which stay on disk. Disk: every file of the dataset.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from hashplug.bench.native import CompareData, MethodRun, dir_bytes, time_queries

__all__ = ["ENGINES", "engine_version", "native_methods", "run_native"]

ENGINES = ("lancedb",)
REFINE_FACTOR = 10
_INDEX_CLASSES = {"ivf_flat": "IvfFlat", "ivf_pq": "IvfPq", "ivf_sq": "IvfSq", "ivf_rq": "IvfRq"}
_METHODS = ("flat", "ivf_flat", "ivf_pq", "ivf_pq+refine", "ivf_sq", "ivf_rq", "ivf_rq+refine")


def engine_version(engine: str = "lancedb") -> str:
    """Return the engine name and version shown in the comparison report."""
    return f"LanceDB {lancedb.__version__}"


def native_methods(engine: str = "lancedb") -> dict[str, str | None]:
    """``lancedb:<option>`` -> None when this LanceDB has the index class, else why not."""
    import lancedb.index as li

    out: dict[str, str | None] = {}
    for m in _METHODS:
        base = m.split("+")[0]
        cls = _INDEX_CLASSES.get(base)
        ok = cls is None or hasattr(li, cls)
        out[f"lancedb:{m}"] = None if ok else f"not in this version ({engine_version()})"
    return out


def _index_config(base: str, n: int, dim: int) -> Any:
    import lancedb.index as li

    parts = max(1, int(math.sqrt(n)))
    cls = getattr(li, _INDEX_CLASSES[base])
    if base == "ivf_pq":  # LanceDB's default sub-vector rule: dim / 16 (8 bits each)
        return cls(distance_type="cosine", num_partitions=parts, num_sub_vectors=max(1, dim // 16))
    return cls(distance_type="cosine", num_partitions=parts)


def run_native(engine: str, method: str, data: CompareData, workdir: Path) -> MethodRun:
    """Build ``method`` (``lancedb:ivf_pq`` ...) over ``data.db_x`` in ``workdir`` and search it."""
    option = method.split(":", 1)[1]
    base, refine = option.split("+")[0], option.endswith("+refine")
    db = lancedb.connect(str(workdir))
    vec = pa.FixedSizeListArray.from_arrays(pa.array(data.db_x.ravel(), pa.float32()), data.dim)
    table = pa.table({"id": pa.array(np.arange(data.n), pa.int64()), "vector": vec})
    t = time.perf_counter()
    tbl = db.create_table("native", table, mode="overwrite")
    parts = max(1, int(math.sqrt(data.n)))
    nprobes = max(1, parts // 5)
    if base != "flat":
        tbl.create_index("vector", config=_index_config(base, data.n, data.dim))
    build_s = time.perf_counter() - t
    k = data.k

    def search(q: np.ndarray) -> np.ndarray:
        b: Any = tbl.search(q[0], vector_column_name="vector")
        b = b.distance_type("cosine").limit(k)
        if base != "flat":
            b = b.nprobes(nprobes)
        if refine:
            b = b.refine_factor(REFINE_FACTOR)
        return b.select(["id", "_distance"]).to_arrow()["id"].to_numpy()

    ids, ms = time_queries(search, data.q_x, k)
    root = Path(workdir) / "native.lance"
    disk = dir_bytes(root)
    index_bytes = dir_bytes(root / "_indices") if (root / "_indices").exists() else 0
    if base == "flat":
        ram, how = dir_bytes(root / "data"), "vector data files (brute-force scan)"
    else:
        ram, how = index_bytes, "index files (_indices); originals on disk"
    params: dict[str, object] = {"num_partitions": parts}
    if base != "flat":
        params["nprobes"] = nprobes
    if refine:
        params["refine_factor"] = REFINE_FACTOR
    db.drop_table("native")
    return MethodRun(method, engine, ids, ms, build_s, ram, disk, how, params)
